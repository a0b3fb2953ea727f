"""The paper's ordering of the variants against a study's: the confirmation of search_spaces/synth_paper.yaml.

Reads a finished study (results only: `study.results`, `study.decide`) and prints, for one experiment,
each variant's target mIoU at the checkpoint its label-free objective picks (mean ± sd over seeds), its
paired change against source_only with the p-value of a paired t-test, and the smallest change that test
could detect at its seeds (t at p = 0.05, two-sided, times the paired standard deviation over the square root
of the number of seeds); then the variants ranked by the paper (study/paper_results.yaml) and by the study.

Usage: python benchmarks/paper_ordering.py STUDY [--experiment confirm] [--benchmark gta5_to_cityscapes]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
from scipy import stats

from study.decide import select
from study.report import BASELINE, paper_results
from study.results import load_study
from study.tables import markdown_table


def detectable(differences: pd.Series) -> float:
    """The smallest mean paired difference a two-sided paired t-test at p = 0.05 detects at this spread."""
    n = len(differences)
    return stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--experiment", default="confirm")
    parser.add_argument("--benchmark", default="gta5_to_cityscapes")
    args = parser.parse_args()
    exp = load_study(args.study).experiment(args.experiment)
    selection = select(exp)
    paper = paper_results()[args.benchmark]["miou"]
    baseline = selection.values(BASELINE)
    rows = []
    for variant in exp.plan.variants:
        values = selection.values(variant)
        row = {"variant": variant, "configuration": selection.configs.get(variant), "seeds": len(values)}
        row["mIoU"] = f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}"
        if variant != BASELINE:
            differences = (values - baseline).dropna()
            row["change vs source_only"] = f"{100 * differences.mean():+.1f}"
            row["p (paired t)"] = (
                f"{stats.ttest_rel(values[differences.index], baseline[differences.index]).pvalue:.3f}"
            )
            row["detectable change"] = f"{100 * detectable(differences):.1f}"
        row["paper mIoU"] = paper.get(variant, math.nan)
        row["mean"] = values.mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    table["rank here"] = table["mean"].rank(ascending=False, method="min").astype(int)
    paper_rank = table["paper mIoU"].rank(ascending=False, method="min")
    table["rank in the paper"] = [str(int(r)) if r == r else "–" for r in paper_rank]  # NaN: not in the paper
    shown = table.drop(columns="mean").astype(object).fillna("–")
    print(
        f"Study {args.study}, experiment {args.experiment}: target mIoU (%) of the checkpoints the label-free"
    )
    print(f"objective `{selection.metric}` picks, mean ± sd over seeds; paper: {args.benchmark}.\n")
    print(markdown_table(shown))


if __name__ == "__main__":
    main()
