"""`msl-study report`: comparison tables and plots of a study, honest about how every number was chosen.

`build_report(study_dir)` reads only the study directory (`study.results.load_study`) and writes

    <out>/report.md        sections 1-7 (see `build_report`), GitHub markdown, percentages with one decimal
    <out>/tables/*.csv     the numbers behind each table (percent, full precision)
    <out>/tables/*.tex     the tables as shown, for a paper (booktabs)
    <out>/plots/*.png

Honest selection is the rule of every headline number: a trial's value is the target mIoU (`oracle_miou`, read
from the target val labels, i.e. the test set) of the checkpoint that the experiment's *own objective* (plan
"metric"/"mode", label-free unless the plan says oracle) picks among that trial's evaluations, and when a
variant was run in several configurations, the configuration is the one whose objective is best on average
over seeds (the rule is `study.decide`'s). The best target mIoU itself is never used to choose; section 4
shows what each validator would choose. It works on running and partly failed studies: errored, diverged,
stopped and running trials are counted and listed, never dropped silently nor counted as zeros.

This module holds the sections; the statistics are `study.stats`'s, the number formats and table files
`study.tables`'s, the figures `study.plots`'s.
"""

from __future__ import annotations

import math
import re
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from msl.objectives import LABEL_FREE_METRICS, LABEL_FREE_MODES, STUDY_VALIDATORS, is_better
from msl.user_loss import is_import_path
from msl.words import count
from study import distributions, plots
from study.decide import TARGET, Selection, best_label, select, variants_of
from study.importance import MIN_TRIALS, importances
from study.layout import FAILED_STATUSES, TRIAL_STATUSES, Plan
from study.pruning import rung_audit
from study.results import (
    ExperimentResults,
    StudyResults,
    config_label,
    format_value,
    load_study,
    param_column,
)
from study.selection import (
    TOP_K,
    checkpoint_audit,
    configuration_audit,
    variant_audit,
    with_study_validators,
)
from study.space import SCHEDULERS
from study.stats import paired_change, rank_agreement, seed_statistics, t_quantile
from study.tables import (
    MISSING,
    is_missing,
    message_line,
    p_value_text,
    paper_number,
    percent,
    percent_spread,
    plain,
    signed_percent,
    slug,
    write_table,
)

BASELINE = "source_only"
# The baseline with the same target exposure as the adapting variants (they all forward target batches): a
# change against it is the loss's alone, not batch norm's (msl.config.LossConfig.adabn).
EXPOSED_BASELINE = "adabn"
PRUNING_SCHEDULERS = tuple(name for name in SCHEDULERS if name != "fifo")  # those that stop or pause trials
MAX_LEVELS = 6  # a searched parameter with more distinct values is binned for its pivot table
BINS = 4


# --- the paper's numbers ------------------------------------------------------------------------------------


def paper_results() -> dict:
    """study/paper_results.yaml, the numbers published for the paper (package data)."""
    return yaml.safe_load(resources.files("study").joinpath("paper_results.yaml").read_text())


def paper_benchmark(plan: Plan) -> dict | None:
    """The plan's benchmark entry: {"miou": {variant: %}, maybe "miou13", "per_class", "source"}.

    A benchmark with one table per target city names the city after a slash or dot, e.g.
    "cityscapes_to_crosscity/rome"."""
    if not plan.benchmark:
        return None
    name, *city = re.split(r"[/.]", plan.benchmark)
    entry = paper_results().get(name)
    if entry is None:
        return None
    entry = dict(entry)
    for key in ("miou", "miou13"):
        if city and key in entry:
            entry[key] = entry[key].get(city[0].lower(), {})
        if any(isinstance(value, dict) for value in entry.get(key, {}).values()):
            entry[key] = {}  # per city, but the plan names no city
    return entry


def _class_key(name: str) -> str:
    return name.lower().replace(" ", "_")


# --- output -------------------------------------------------------------------------------------------------


class _ReportWriter:
    """Collects the markdown and writes each table (csv + tex) and figure (png) as it is added."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.lines: list[str] = []
        for folder in ("tables", "plots"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)

    def add(self, *paragraphs: str) -> None:
        for paragraph in paragraphs:
            self.lines.extend([paragraph, ""])

    def table(self, name: str, numbers: pd.DataFrame, shown: pd.DataFrame) -> None:
        """`numbers` go to the csv, `shown` (formatted strings) to the tex file and the markdown."""
        self.add(
            write_table(self.out_dir / "tables", name, numbers, shown),
            f"<sub>[{name}.csv](tables/{name}.csv) · [{name}.tex](tables/{name}.tex)</sub>",
        )

    def figure(self, name: str, figure, caption: str) -> None:
        figure.savefig(self.out_dir / "plots" / f"{name}.png", dpi=100)
        self.add(f"![{caption}](plots/{name}.png)")

    def write(self) -> Path:
        path = self.out_dir / "report.md"
        path.write_text("\n".join(self.lines).rstrip() + "\n")
        return path


def build_report(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the report of the study in `study_dir` (default output: `<study_dir>/report`); returns
    report.md."""
    results = load_study(study_dir)
    report = _ReportWriter(Path(out_dir) if out_dir is not None else Path(study_dir) / "report")
    experiments = results.experiments()
    selections = {exp.name: select(exp) for exp in experiments}
    by_name = {exp.name: exp for exp in experiments}

    def comparison(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
        _variant_comparison(report, exp, selection)
        tuned = (exp.plan.confirm or {}).get("from")
        if tuned in by_name:
            _confirmation(report, exp, selection, by_name[tuned], selections[tuned])

    _overview(report, results)
    report.add(_headline(experiments, selections))
    for title, section in [
        ("1. Variant comparison", comparison),
        ("2. Per-class IoU", _per_class_iou),
        ("3. Hyperparameter sensitivity", _sensitivity),
        ("4. Label-free model selection", _label_free_selection),
        ("5. Pruning budget", _pruning_budget),
        ("6. Learning curves", _learning_curves),
    ]:
        report.add(f"## {title}")
        for exp in experiments:
            section(report, exp, selections[exp.name])
    report.add("## 7. Trials that errored, diverged, were stopped or are still running")
    _unfinished_trials(report, results)
    return report.write()


def _experiment_heading(report: _ReportWriter, exp: ExperimentResults) -> None:
    report.add(f"### Experiment `{exp.name}`")


def _kind(value, default: str) -> str:
    """A scheduler ({"name": "asha", ...}) or search ({"algorithm": "optuna", ...}) as its name."""
    if isinstance(value, dict):
        return str(value.get("name") or value.get("algorithm") or default)
    return str(value or default)


def _overview(report: _ReportWriter, results: StudyResults) -> None:
    study = results.study
    report.add(
        f"# Study `{study.get('name', results.path.name)}`",
        f"Created {study.get('created', MISSING)} · git revision `{study.get('git_revision', MISSING)}` · "
        f"target mIoU (`{TARGET}`) is measured on the target val labels, in percent.",
    )
    rows = []
    for name, plan in results.plans.items():
        trials = results.trials[results.trials["experiment"] == name]
        counts = trials["status"].value_counts()
        rows.append(
            {
                "experiment": name,
                "scheduler": _kind(plan.scheduler, "fifo"),
                "search": _kind(plan.search, MISSING),
                "objective": _objective_words(plan),
                "variants": len(plan.variants),
                "seeds": len(plan.seeds),
                "trials planned": MISSING if plan.num_trials is None else plan.num_trials,
                "trials started": len(trials),
                **{status: int(counts.get(status, 0)) for status in TRIAL_STATUSES},
                "max iterations": plan.max_iterations,
            }
        )
    numbers = pd.DataFrame(rows)
    report.table("overview", numbers, numbers.astype(str))


def _headline(experiments: list[ExperimentResults], selections: dict[str, Selection]) -> str:
    """The report's first paragraph, from section 1's tables: per experiment the best variant (highest mean
    target mIoU selected) and its change against source_only with its interval and p-value, or that no
    variant differs from source_only at p < 0.05."""
    sentences = []
    for exp in experiments:
        numbers, _ = variant_table(exp, selections[exp.name])
        numbers = numbers.dropna(subset=["mean"])
        if numbers.empty:
            sentences.append(f"Experiment `{exp.name}`: no trial has a result yet.")
            continue
        best = numbers.loc[numbers["mean"].idxmax()]
        sentences.append(f"Experiment `{exp.name}`: " + _headline_words(numbers, best))
    return "**Headline.** " + " ".join(sentences)


def _headline_words(numbers: pd.DataFrame, best: pd.Series) -> str:
    """The headline's words for one experiment: `best` is its row with the highest mean."""
    name = best["variant"] + (
        f" ({best['config']})" if best["config"] not in (None, "default", "fixed") else ""
    )
    if "change" not in numbers:
        return f"the best is {name} at {best['mean']:.1f} mIoU (no {BASELINE} to compare with)."
    differs = numbers[(numbers["p_value"] < 0.05) & (numbers["variant"] != best["variant"])]
    others = "; ".join(
        f"{row.variant} differs from {BASELINE} at p < 0.05 ({row.change:+.1f}, "
        f"p = {p_value_text(row.p_value)})"
        for row in differs.itertuples()
    )
    if best["variant"] == BASELINE or is_missing(best["change"]):
        lead = f"{name} is best at {best['mean']:.1f} mIoU"
        return f"{lead}; {others or f'no variant differs from {BASELINE} at p < 0.05'}."
    seeds = count(int(best["n_pairs"]), "seed")
    if best["p_value"] < 0.05:
        interval = f"[{best['change_ci_low']:+.1f}, {best['change_ci_high']:+.1f}]"
        return (
            f"{name} is best at {best['mean']:.1f} mIoU, {best['change']:+.1f} against {BASELINE} (95% "
            f"t-interval {interval}, p = {p_value_text(best['p_value'])}, {seeds})"
            + (f"; {others}." if others else ".")
        )
    return (
        f"{others or f'no variant differs from {BASELINE} at p < 0.05'}; the best, {name}, is "
        f"{best['change']:+.1f} mIoU against it (p = {p_value_text(best['p_value'])}, {seeds})."
    )


def _objective_words(plan: Plan) -> str:
    kind = "oracle" if plan.oracle else "label-free"
    chooser = f"; configurations by {plan.choose_by}" if plan.choose_by else ""
    return f"{plan.metric} ({plan.mode}, {kind}){chooser}"


# --- 1. variant comparison ----------------------------------------------------------------------------------


def _variant_comparison(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    _experiment_heading(report, exp)
    numbers, shown = variant_table(exp, selection)
    report.add(_selection_words(exp, selection, paper_benchmark(exp.plan) or {}))
    report.table(f"variants_{slug(exp.name)}", numbers, shown)
    words = [_interval_words(numbers), _edge_words(exp, selection)] if not numbers.empty else []
    if words := " ".join(filter(None, words)):
        report.add(words)


def variant_table(exp: ExperimentResults, selection: Selection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Section 1's table: one row per variant, as numbers (percent) and as shown (strings)."""
    paper = paper_benchmark(exp.plan) or {}
    extra_metrics = [
        key for key in ("miou13",) if paper.get(key) and exp.evals[f"oracle_{key}"].notna().any()
    ]
    baseline = selection.values(BASELINE) if BASELINE in selection.configs else None
    exposed = selection.values(EXPOSED_BASELINE) if EXPOSED_BASELINE in selection.configs else None
    numbers, shown = [], []
    for variant in selection.configs:
        chosen = selection.values(variant)
        final = selection.values(variant, which="final")
        row = {
            "variant": variant,
            "loss": variant_loss(exp.plan, variant),
            "config": _configuration(exp, variant, selection),
            "edge": "; ".join(
                f"{key}: {edge.words}" for key, edge in _edges(exp, variant, selection).items()
            ),
            **seed_statistics(chosen),
            **{f"final_{k}": v for k, v in seed_statistics(final).items() if k in ("n_seeds", "mean", "std")},
        }
        if baseline is not None and variant != BASELINE:
            row.update(paired_change(chosen, baseline))
        if exposed is not None and variant not in (BASELINE, EXPOSED_BASELINE):
            row.update(
                {f"{EXPOSED_BASELINE}_{key}": value for key, value in paired_change(chosen, exposed).items()}
            )
        for key in extra_metrics:
            extra = seed_statistics(selection.values(variant, f"oracle_{key}"))
            row.update(
                {
                    f"{key}_mean": extra["mean"],
                    f"{key}_std": extra["std"],
                    f"paper_{key}": paper[key].get(variant),
                }
            )
        row["paper"] = paper.get("miou", {}).get(variant)
        numbers.append(row)
        edges = [edge.short for edge in _edges(exp, variant, selection).values()]
        shown.append(
            _variant_row_shown(row, exp, paper, baseline is not None, exposed is not None, extra_metrics)
            | ({"configuration": f"{row['config']} ({', '.join(edges)})"} if edges else {})
        )
    numbers = pd.DataFrame(numbers)
    for column in numbers.columns:
        if column.endswith(("mean", "std", "ci_low", "ci_high", "change")):
            numbers[column] = 100 * numbers[column]
    return numbers, pd.DataFrame(shown)


def _edges(exp: ExperimentResults, variant: str, selection: Selection) -> dict:
    """The values of the variant's selected configuration at the edge of what was searched (`exp.edges`)."""
    return exp.edges(variant, selection.configs.get(variant))


def variant_loss(plan: Plan, variant: str) -> str | None:
    """The `loss.target` a variant sets in the plan: a built-in loss's name, or the import path of a user loss
    (read as text: a report never imports the user's code)."""
    return plan.variants.get(variant, {}).get("loss.target")


def _configuration(exp: ExperimentResults, variant: str, selection: Selection) -> str | None:
    """The configuration a row reports: the selected one of a search, or the one a confirmation was given."""
    confirm = exp.plan.confirm
    if confirm:
        return config_label(confirm["selected"][variant]) if variant in confirm["selected"] else "fixed"
    return selection.configs[variant]


def _variant_row_shown(
    row: dict,
    exp: ExperimentResults,
    paper: dict,
    paired: bool,
    paired_exposed: bool,
    extra_metrics: list[str],
) -> dict:
    shown = {"variant": row["variant"]}
    if any(is_import_path(variant_loss(exp.plan, name) or "") for name in exp.plan.variants):
        shown["loss"] = row["loss"] or MISSING  # a user loss, by its import path
    if exp.searched or exp.plan.confirm:
        shown["configuration"] = row["config"] or MISSING
    shown.update({"seeds": str(row["n_seeds"]), "mIoU selected": percent_spread(row["mean"], row["std"])})
    if paper.get("miou"):
        shown["paper"] = paper_number(row["paper"])
    shown.update(
        {"95% CI": _interval(row), "mIoU final": percent_spread(row["final_mean"], row["final_std"])}
    )
    if paired:
        shown[f"change vs {BASELINE}"] = signed_percent(row.get("change", math.nan))
        shown["p (paired t)"] = p_value_text(row.get("p_value", math.nan))
    if paired_exposed:
        shown[f"change vs {EXPOSED_BASELINE}"] = signed_percent(
            row.get(f"{EXPOSED_BASELINE}_change", math.nan)
        )
        shown[f"p vs {EXPOSED_BASELINE}"] = p_value_text(row.get(f"{EXPOSED_BASELINE}_p_value", math.nan))
    for key in extra_metrics:
        name = key.replace("miou", "mIoU")
        shown[f"{name} selected"] = percent_spread(row[f"{key}_mean"], row[f"{key}_std"])
        shown[f"paper {name}"] = paper_number(row[f"paper_{key}"])
    return shown


def _interval(row: dict) -> str:
    """A row's 95% interval in percent, clipped to 0-100 (what mIoU can be) and then marked †."""
    if is_missing(row["ci_low"]):
        return MISSING
    low, high = max(row["ci_low"], 0.0), min(row["ci_high"], 1.0)
    clipped = "†" if (low, high) != (row["ci_low"], row["ci_high"]) else ""
    return f"[{percent(low)}, {percent(high)}]{clipped}"


def _interval_words(numbers: pd.DataFrame) -> str:
    """What the table's intervals can say with its seeds: how wide a t-interval is with the fewest seeds (up
    to 3), and that a † interval was clipped."""
    words = []
    seeds = numbers.loc[numbers["n_seeds"] > 1, "n_seeds"]
    if len(seeds) and seeds.min() <= 3:
        n = int(seeds.min())
        words.append(
            f"Few seeds: with {n} seeds a 95% Student-t interval is ±{t_quantile(n):.1f} standard errors "
            f"wide (t at {n - 1} degree{'s' if n > 2 else ''} of freedom); it says little, more seeds narrow "
            "it."
        )
    if (numbers["ci_low"] < 0).any() or (numbers["ci_high"] > 100).any():
        words.append("†: the t-interval reaches beyond what mIoU can be and is shown clipped to 0–100.")
    return " ".join(words)


def _edge_words(exp: ExperimentResults, selection: Selection) -> str:
    """One sentence naming every selected value at the edge of what was searched (marked in the table)."""
    named = [
        f"{variant}'s {key} = {format_value(edge.value)} is {edge.words}"
        for variant in selection.configs
        for key, edge in _edges(exp, variant, selection).items()
    ]
    if not named:
        return ""
    return (
        f"At the edge of what was searched: {'; '.join(named)}. The best may lie beyond it: widen the search "
        "there before reading the number as the variant's best."
    )


def _selection_words(exp: ExperimentResults, selection: Selection, paper: dict) -> str:
    """The sentence every comparison table needs: how its rows were selected and over what."""
    kind = (
        "an **oracle** selection: the objective reads the target test labels, so these numbers are optimistic"
        if selection.oracle
        else "a **label-free** selection: no target labels are read to choose"
    )
    seeds = exp.plan.seeds or sorted(exp.trials["seed"].dropna().unique().tolist())
    words = [
        f"Each seed's value is the target mIoU of the checkpoint that the experiment's objective "
        f"`{selection.metric}` ({selection.mode}) picks among that trial's evaluations, {kind}. "
        f"Rows are over the seeds {seeds} (column *seeds*: how many had a value); 95% CI: Student t over "
        "seeds. "
        "*final*: the last checkpoint of the same trials, no checkpoint selection."
    ]
    if exp.searched:
        chooser = (
            "objective"
            if selection.chooser == selection.metric
            else f"`{selection.chooser}` at those checkpoints (the experiment's `choose_by`)"
        )
        words.append(
            f"A variant's *configuration* is the one whose {chooser}, averaged over seeds, is best among "
            f"those tried ({', '.join(exp.searched)})."
        )
    confirm = exp.plan.confirm
    if confirm:
        by = f"`{confirm['by']}`" if confirm.get("by") else "that experiment's own objective"
        words.append(
            f"A variant's *configuration* was selected in experiment `{confirm['from']}` by {by} (best mean "
            "over its seeds); these seeds never took part in that selection (*fixed*: a variant that was not "
            "searched)."
        )
    if BASELINE in selection.configs:
        words.append(
            f"*change*: mean paired difference to `{BASELINE}` over the seeds both have, p-value of a "
            "paired t-test over those seeds."
        )
    if EXPOSED_BASELINE in selection.configs:
        words.append(
            f"*change vs {EXPOSED_BASELINE}*: the same against `{EXPOSED_BASELINE}`, which forwards the "
            "target batches without a loss as every adapting variant does: that difference is the loss's "
            "alone, not batch normalisation's."
        )
    if paper.get("miou"):
        words.append(
            f"*paper*: Chen et al., ICCV 2019, benchmark `{exp.plan.benchmark}` "
            f"(source: {paper.get('source', MISSING)})."
        )
    counts = exp.trials["status"].value_counts()
    if failed := [
        f"{counts[status]} {'errored' if status == 'error' else status}"
        for status in FAILED_STATUSES
        if counts.get(status, 0)
    ]:
        words.append(f"Left out: {' and '.join(failed)} trial(s), listed in section 7.")
    if counts.get("running", 0):
        words.append(f"Provisional: {counts['running']} trial(s) still running.")
    return " ".join(words)


def _confirmation(
    report: _ReportWriter,
    exp: ExperimentResults,
    selection: Selection,
    tuned: ExperimentResults,
    tuned_selection: Selection,
) -> None:
    """How much of what the tuning showed holds on the confirmation's fresh seeds."""
    numbers, shown = [], []
    for variant, params in exp.plan.confirm["selected"].items():
        if variant == BASELINE:
            continue
        tuning, confirmed = tuned_selection.values(variant), selection.values(variant)
        tuning_change = confirmed_change = {"change": math.nan, "p_value": math.nan}
        if BASELINE in tuned_selection.configs:
            tuning_change = paired_change(tuning, tuned_selection.values(BASELINE))
        if BASELINE in selection.configs:
            confirmed_change = paired_change(confirmed, selection.values(BASELINE))
        kept = (
            confirmed_change["change"] / tuning_change["change"] if tuning_change["change"] > 0 else math.nan
        )
        row = {
            "variant": variant,
            "config": config_label(params),
            "tuning_mean": tuning.mean(),
            "confirmed_mean": confirmed.mean(),
            "tuning_change": tuning_change["change"],
            "confirmed_change": confirmed_change["change"],
            "confirmed_p_value": confirmed_change["p_value"],
            "kept": kept,
        }
        numbers.append(row)
        shown.append(
            {
                "variant": variant,
                "configuration": row["config"],
                f"mIoU in {tuned.name}": percent(row["tuning_mean"]),
                "mIoU confirmed": percent(row["confirmed_mean"]),
                f"change vs {BASELINE} in {tuned.name}": signed_percent(row["tuning_change"]),
                "change confirmed": signed_percent(row["confirmed_change"]),
                "p confirmed": p_value_text(row["confirmed_p_value"]),
                "margin kept": MISSING if is_missing(kept) else f"{100 * kept:.0f}%",
            }
        )
    if not numbers:
        return
    report.add(
        f"Tune, then confirm: each variant's configuration as selected in `{tuned.name}` (seeds "
        f"{tuned.plan.seeds}) and as measured again on the fresh seeds {exp.plan.seeds} of "
        f"`{exp.name}`. *margin kept*: the confirmed change against `{BASELINE}` as a share of the change "
        "seen during tuning (the tuning picked the best of several configurations on its own seeds, so its "
        "margin is optimistic; – where the tuning showed no gain)."
    )
    numbers = pd.DataFrame(numbers)
    for column in ("tuning_mean", "confirmed_mean", "tuning_change", "confirmed_change"):
        numbers[column] = 100 * numbers[column]
    report.table(f"confirmation_{slug(exp.name)}", numbers, pd.DataFrame(shown))


# --- 2. per-class IoU ---------------------------------------------------------------------------------------


def _per_class_iou(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    _experiment_heading(report, exp)
    names = exp.plan.class_names or [f"class_{i}" for i in range(exp.plan.num_classes)]
    columns = {}
    for variant in selection.configs:
        rows = selection.rows(variant)
        if "oracle_iou" in rows and len(rows):
            columns[variant] = _nanmean(np.array(rows["oracle_iou"].tolist(), dtype=float))  # (C,)
    if not columns:
        report.add("No per-class IoU reported yet.")
        return
    ours = pd.DataFrame(columns, index=names)
    present = ours.notna().any(axis=1)
    table = 100 * ours[present]
    for variant, per_class in ((paper_benchmark(exp.plan) or {}).get("per_class") or {}).items():
        if isinstance(per_class, dict):
            table[f"paper {variant}"] = [per_class.get(_class_key(name)) for name in table.index]
    numbers = table.rename_axis("class").reset_index()
    shown = numbers.copy()
    for column in table.columns:
        shown[column] = numbers[column].map(paper_number)
    words = ["Target IoU per class (%) at the selected checkpoints of section 1, mean over seeds."]
    if not present.all():
        words.append(
            f"Classes never present in the target labels nor predicted are left out: "
            f"{', '.join(ours.index[~present])}."
        )
    report.add(" ".join(words))
    report.table(f"per_class_{slug(exp.name)}", numbers, shown)


def _nanmean(matrix: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN for a column with no value (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(matrix, axis=0)


# --- 3. hyperparameter sensitivity --------------------------------------------------------------------------


def _sensitivity(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    _experiment_heading(report, exp)
    if not exp.searched:
        report.add("No searched parameters.")
        return
    points = selection.picks.dropna(subset=["selected_row"])
    points = points.assign(
        value=selection.evals.loc[points["selected_row"].astype(int), TARGET].to_numpy(),
        stopped=points["status"] == "stopped",
    )
    points = points.merge(exp.trials[["trial_name", *map(param_column, exp.searched)]], on="trial_name")
    report.add(
        "Target mIoU (%) of each trial at the checkpoint its objective selects, mean (and count) per "
        "value of one parameter, all other parameters and seeds pooled. Stopped trials are included at "
        "the checkpoint they reached (hollow markers in the plots)."
    )
    colors = plots.variant_colors(variants_of(exp))
    for key in exp.searched:
        column = param_column(key)
        log = distributions.is_log(exp.plan.searched[key])
        searching = points[points[column].notna()]  # a variant that did not search the key has no value
        levels = _levels(searching[column], log)
        summary = (
            searching.assign(level=levels)
            .groupby(["level", "variant"], observed=True, sort=True)["value"]
            .agg(["mean", "count"])
            .reset_index()
        )
        pivot = summary.pivot(index="level", columns="variant", values="mean")
        counts = summary.pivot(index="level", columns="variant", values="count")
        shown = pivot.copy().astype(object)
        for variant in pivot.columns:
            shown[variant] = [
                MISSING if is_missing(mean) else f"{percent(mean)} ({count:.0f})"
                for mean, count in zip(pivot[variant], counts[variant], strict=True)
            ]
        name = f"sensitivity_{slug(exp.name)}_{slug(key)}"
        left_out = [v for v in dict.fromkeys(points["variant"]) if v not in set(searching["variant"])]
        report.add(
            f"**{key}**" + (f" ({', '.join(left_out)} did not search {key}: left out)" if left_out else "")
        )
        numbers = summary.assign(mean=100 * summary["mean"]).rename(columns={"level": key})
        report.table(name, numbers, shown.rename_axis(key).reset_index().astype(str))
        figure = plots.sensitivity(searching, column, colors, log=log, xlabel=key, title=f"{exp.name}: {key}")
        report.figure(name, figure, f"target mIoU against {key}")
    _importances(report, exp, selection)


def _importances(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    table = importances(exp, selection.picks, selection.mode)
    if table.empty:
        report.add(
            "Importances (Optuna's fANOVA and PED-ANOVA) need two or more varied parameters and "
            f"{MIN_TRIALS} "
            "or more finished trials of one variant and seed; this experiment has fewer."
        )
        return
    report.add(
        f"**Importance** of each searched parameter for the objective ({selection.metric}, at each trial's "
        "selected checkpoint), by Optuna's evaluators, normalised to sum to 1 per variant, seed and "
        "evaluator; "
        "computed per seed over the finished trials (stopped ones left out), mean ± standard deviation over "
        "seeds."
    )
    shown = table.pivot_table(index=["variant", "parameter"], columns="evaluator", values="mean", sort=False)
    spread = table.pivot_table(  # with one seed every std is NaN: keep the columns
        index=["variant", "parameter"], columns="evaluator", values="std", sort=False, dropna=False
    )
    for evaluator in shown.columns:
        shown[evaluator] = [
            plain(mean) if is_missing(std) else f"{plain(mean)} ± {plain(std)}"
            for mean, std in zip(shown[evaluator], spread[evaluator], strict=True)
        ]
    counts = table.groupby(["variant", "parameter"], sort=False)[["seeds", "trials"]].first()
    shown = shown.join(counts).reset_index()
    report.table(f"importance_{slug(exp.name)}", table, shown.astype(str))


def _levels(values: pd.Series, log: bool) -> pd.Series:
    """Parameter values as ordered categories: the values themselves when few, else BINS equal-width bins
    (equal in log scale for log-distributed parameters)."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and numeric.nunique() > MAX_LEVELS:
        low, high = numeric.min(), numeric.max()
        edges = np.geomspace(low, high, BINS + 1) if log and low > 0 else np.linspace(low, high, BINS + 1)
        labels = [f"{a:.3g} – {b:.3g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return pd.cut(numeric, edges, labels=labels, include_lowest=True)
    labels = values.map(format_value)
    order = sorted(labels.unique(), key=lambda label: (_as_number(label), label))
    return pd.Series(pd.Categorical(labels, categories=order, ordered=True), index=values.index)


def _as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


# --- 4. label-free model selection --------------------------------------------------------------------------


def _label_free_selection(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    _experiment_heading(report, exp)
    usable = exp.trials.loc[~exp.trials["status"].isin(FAILED_STATUSES), "trial_name"]
    # The study-level validators are read from the saved maps once: `select` has them when one chose
    evals = selection.evals if set(STUDY_VALIDATORS) <= set(selection.evals) else with_study_validators(exp)
    evals = evals[evals["trial_name"].isin(usable) & evals[TARGET].notna()]
    validators = [metric for metric in LABEL_FREE_MODES if evals[metric].notna().any()]
    if evals.empty or not validators:
        report.add("No evaluation with both a validator and the target mIoU yet.")
        return
    oracle_best = evals.at[best_label(evals[TARGET], "max"), TARGET]
    seed_best = evals.groupby("seed")[TARGET].max().mean()
    numbers, shown = [], []
    for validator in validators:
        mode = LABEL_FREE_MODES[validator]
        pick = evals.loc[best_label(evals[validator], mode)]
        seed_picks = [
            group.at[best_label(group[validator], mode), TARGET]
            for _, group in evals.groupby("seed")
            if group[validator].notna().any()
        ]
        row = {
            "validator": validator,
            "mode": mode,
            "objective": validator == selection.metric,
            "variant": pick["variant"],
            "config": pick["config"],
            "seed": pick["seed"],
            "iteration": pick["iteration"],
            "pick_target": pick[TARGET],
            "oracle_best": oracle_best,
            "gap": oracle_best - pick[TARGET],
            "seed_pick_target": np.mean(seed_picks),
            "seed_oracle_best": seed_best,
            **rank_agreement(evals[validator], evals[TARGET], mode),
        }
        numbers.append(row)
        shown.append(
            {
                "validator": f"{validator}{' (objective)' if row['objective'] else ''}",
                "mode": mode,
                "picks": _pick_words(row, exp),
                "its mIoU": percent(row["pick_target"]),
                "oracle best": percent(oracle_best),
                "gap": percent(row["gap"]),
                "per seed: pick / best": f"{percent(row['seed_pick_target'])} / {percent(seed_best)}",
                "Spearman": plain(row["spearman"]),
                "Kendall": plain(row["kendall"]),
                "n": str(row["n"]),
            }
        )
    numbers = pd.DataFrame(numbers)
    for column in ("pick_target", "oracle_best", "gap", "seed_pick_target", "seed_oracle_best"):
        numbers[column] = 100 * numbers[column]
    report.add(
        "For each label-free validator: the checkpoint (trial and iteration) with its best value over all "
        f"{len(evals)} evaluations of the experiment, that checkpoint's target mIoU (%) against the best "
        "target mIoU of any checkpoint (*gap*), the same choice made within each seed (mean over seeds), "
        "and the rank correlation with the target mIoU over all evaluations, signed so that positive "
        "means the validator (in its own direction) agrees with the target."
    )
    report.table(f"selection_{slug(exp.name)}", numbers, pd.DataFrame(shown))
    figure = plots.validator_scatter(evals, validators, TARGET, plots.variant_colors(variants_of(exp)))
    report.figure(f"selection_{slug(exp.name)}", figure, "validators against target mIoU")
    _selection_audit(report, exp, selection, evals, validators)


def _selection_audit(
    report: _ReportWriter,
    exp: ExperimentResults,
    selection: Selection,
    evals: pd.DataFrame,
    validators: list[str],
) -> None:
    """The audit of study.selection at the checkpoint, configuration and (in a tuning) variant level, with
    reference rows."""
    references = {
        "checkpoint": [(TARGET, "max", "oracle: target mIoU"), ("iteration", "max", "no selection: last")],
        "configuration": [(TARGET, "max", "oracle: target mIoU")],
    }
    audits = {"checkpoint": checkpoint_audit, "configuration": configuration_audit}
    if evals.groupby("trial_name").size().max() < 2:
        report.add(
            "Checkpoint level: every trial was evaluated once, so there is no checkpoint to choose and "
            "nothing to audit (evaluate more often, `eval.every`, to compare validators within a trial)."
        )
        audits.pop("checkpoint")
    for level, audit in audits.items():
        numbers, shown = [], []
        rows = [(v, LABEL_FREE_MODES[v], v) for v in validators] + references[level]
        for validator, mode, name in rows:
            row = {"validator": name, "mode": mode, **audit(evals, validator, mode)}
            for column in ("regret", "worst_regret", *(f"top{k}" for k in TOP_K)):
                row[column] = 100 * row[column]
            numbers.append(row)
            shown.append(
                {
                    **_regret_cells(row),
                    **{f"top-{k}": percent(row[f"top{k}"] / 100) for k in TOP_K},
                    **_correlation_cells(row),
                }
            )
        report.add(f"**{level.capitalize()} level** ({AUDIT_WORDS[level]})")
        report.table(f"selection_{level}s_{slug(exp.name)}", pd.DataFrame(numbers), pd.DataFrame(shown))
    if not exp.plan.confirm and (evals.groupby("variant")["config"].nunique() > 1).any():
        _variant_audit(report, exp, selection, evals, validators)


def _variant_audit(
    report: _ReportWriter,
    exp: ExperimentResults,
    selection: Selection,
    evals: pd.DataFrame,
    validators: list[str],
) -> None:
    """study.selection's variant level: which configuration each variant keeps, as a tuning decides."""
    numbers, shown = [], []
    rows = [(v, LABEL_FREE_MODES[v], v) for v in validators] + [(TARGET, "max", "oracle: target mIoU")]
    checkpoints = selection.checkpoints(evals)  # where the tuning scores its configurations
    for validator, mode, name in rows:
        name = f"{name} (chooses)" if validator == selection.chooser else name
        audit = variant_audit(checkpoints, validator, mode)
        on_edge = sum(bool(exp.edges(variant, config)) for variant, config in audit.pop("picks").items())
        row = {"validator": name, "mode": mode, **audit, "picks_on_edge": on_edge}
        row["regret"], row["worst_regret"] = 100 * row["regret"], 100 * row["worst_regret"]
        numbers.append(row)
        shown.append(
            {
                **_regret_cells(row),
                "picks on an edge": f"{on_edge} of {row['variants']}",
                **_correlation_cells(row),
            }
        )
    report.add(f"**Variant level** ({AUDIT_WORDS['variant']})")
    report.table(f"selection_per_variant_{slug(exp.name)}", pd.DataFrame(numbers), pd.DataFrame(shown))


AUDIT_WORDS = {
    "checkpoint": "which evaluation of a trial to keep: *regret* = the trial's best target mIoU (%) minus "
    "that of the validator's pick, mean and *worst* over trials (each a seed of a configuration); *top-k*: "
    "mean target mIoU of the validator's k best checkpoints of each trial, mean over trials; rank "
    "correlations over every evaluation after subtracting its trial's means, *n* evaluations",
    "configuration": "which configuration to keep, every trial at its last checkpoint and each configuration "
    "at its mean over seeds: *regret* = the best configuration's target mIoU (%) minus the chosen one's, "
    "*worst*: the largest regret when choosing within a single seed; *top-k*: mean target mIoU of the k "
    "best configurations; rank correlations over the *n* configurations",
    "variant": "which configuration each variant keeps, as this tuning decides: every trial at the "
    "checkpoint its metric selected and each configuration at its mean over seeds: *regret* = the variant's "
    "best configuration's target mIoU (%) minus that of the validator's pick, mean and *worst* over the "
    "variants with two configurations or more; *picks on an edge*: of those variants, how many picks sit at "
    "an edge of what was searched; rank correlations over the *n* configurations after subtracting their "
    "variant's means",
}


def _regret_cells(row: dict) -> dict[str, str]:
    """An audit row's validator, direction and regrets (in percent points), as shown."""
    return {
        "validator": row["validator"],
        "mode": row["mode"],
        "regret": percent(row["regret"] / 100),
        "worst": percent(row["worst_regret"] / 100),
    }


def _correlation_cells(row: dict) -> dict[str, str]:
    """An audit row's rank correlations with their intervals, and the number of points, as shown."""
    return {
        "Spearman [95% CI]": _with_interval(row["spearman"], row["spearman_low"], row["spearman_high"]),
        "weighted Spearman [95% CI]": _with_interval(
            row["weighted_spearman"], row["weighted_low"], row["weighted_high"]
        ),
        "n": str(row["n"]),
    }


def _with_interval(value: float, low: float, high: float) -> str:
    if is_missing(value):
        return MISSING
    return plain(value) if is_missing(low) else f"{plain(value)} [{plain(low)}, {plain(high)}]"


def _pick_words(row: dict, exp: ExperimentResults) -> str:
    config = f", {row['config']}" if exp.searched else ""
    return f"{row['variant']}{config}, seed {row['seed']}, iteration {row['iteration']:.0f}"


# --- 5. pruning budget --------------------------------------------------------------------------------------


def _pruning_budget(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    scheduler = _kind(exp.plan.scheduler, "fifo").lower()
    if scheduler not in PRUNING_SCHEDULERS:
        report.add(f"Experiment `{exp.name}` uses the `{scheduler}` scheduler: every trial runs to the end.")
        return
    _experiment_heading(report, exp)
    trials = exp.trials
    planned = exp.planned_runs
    full = planned * exp.plan.max_iterations
    used = int(trials["iterations"].sum())
    budget = pd.DataFrame(
        [
            {
                "scheduler": scheduler,
                "trials planned": planned,
                "trials started": len(trials),
                "trial-iterations used": used,
                "every trial to the end": full,
                "used (%)": 100 * used / full if full else math.nan,
            }
        ]
    )
    report.add(
        f"Trial-iterations spent by `{scheduler}` against running each of the {planned} planned trials to "
        f"{exp.plan.max_iterations} iterations (errored and diverged trials count the iterations they "
        "ran)."
    )
    report.table(
        f"budget_{slug(exp.name)}",
        budget,
        budget.map(lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)),
    )
    rungs = pd.crosstab(trials["iterations"], trials["status"]).reindex(
        columns=[s for s in TRIAL_STATUSES if s in set(trials["status"])]
    )
    rungs = rungs.rename_axis("last iteration reached").reset_index()
    rungs.columns.name = None
    report.add("Trials by the last iteration they reached (a stopped trial's rung).")
    report.table(f"rungs_{slug(exp.name)}", rungs, rungs.astype(str))
    _pruning_audit(report, exp, selection)
    curve = budget_curve(exp.evals, selection.metric, selection.mode)
    if curve.empty:
        return
    name = f"budget_curve_{slug(exp.name)}"
    curve.to_csv(report.out_dir / "tables" / f"{name}.csv", index=False)
    report.add(
        "Best result found against compute spent: evaluations in wall-clock order, each adding the "
        f"iterations its trial ran since its previous evaluation ([{name}.csv](tables/{name}.csv), "
        "metrics as stored: fractions, not percent)."
    )
    report.figure(
        f"budget_{slug(exp.name)}",
        plots.budget_curve(curve, selection.metric),
        "best result against cumulative trial-iterations",
    )


def _pruning_audit(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    audit = rung_audit(exp, selection.picks, selection.metric, selection.mode)
    if audit.empty:
        return
    report.add(
        f"**Pruning audit.** At each iteration where trials were stopped: the Spearman correlation of the "
        f"objective ({selection.metric}) there with the trials' final objective (their best checkpoint), "
        "over the trials that ran to the end, and where the trial with the best final objective ranked "
        "there (1 = best). A low correlation means the stopped trials may have held the winner; "
        "`benchmarks/asha_vs_full.py` measures what pruning lost by running every trial to the end."
    )
    shown = audit.astype(object)
    shown["spearman"] = [MISSING if is_missing(value) else plain(value) for value in audit["spearman"]]
    shown["pick's rank"] = [
        MISSING if is_missing(rank) else f"{rank:.0f} of {count}"
        for rank, count in zip(audit["pick's rank"], audit["trials evaluated"], strict=True)
    ]
    report.table(f"pruning_audit_{slug(exp.name)}", audit, shown.astype(str))


def budget_curve(evals: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """After each evaluation (in wall-clock order): cumulative trial-iterations, the best objective so far,
    the target mIoU of that best-so-far checkpoint, and the best target mIoU seen so far."""
    events = evals.sort_values(["wall_time", "iteration"], kind="stable")
    spent = events.groupby("trial_name")["iteration"].diff().fillna(events["iteration"]).clip(lower=0)
    rows, best_objective, pick_target, best_target = [], math.nan, math.nan, math.nan
    for (_, event), cumulative in zip(events.iterrows(), spent.cumsum(), strict=True):
        if is_better(event[metric], best_objective, mode):
            best_objective, pick_target = event[metric], event[TARGET]
        best_target = np.nanmax([best_target, event[TARGET]])
        rows.append(
            {
                "trial_iterations": cumulative,
                "trial_name": event["trial_name"],
                "iteration": event["iteration"],
                "best_objective": best_objective,
                "pick_target": pick_target,
                "best_target": best_target,
            }
        )
    return pd.DataFrame(rows)


# --- 6. learning curves -------------------------------------------------------------------------------------


def _learning_curves(report: _ReportWriter, exp: ExperimentResults, selection: Selection) -> None:
    _experiment_heading(report, exp)
    metrics = [m for m in [TARGET, *LABEL_FREE_METRICS] if exp.evals[m].notna().any()]
    frames = []
    for variant in selection.configs:
        trial_names = selection.chosen_picks(variant)["trial_name"]
        evals = exp.evals[exp.evals["trial_name"].isin(trial_names)]
        for metric in metrics:
            curve = evals.groupby("iteration")[metric].agg(["mean", "std", "count"]).reset_index()
            frames.append(curve.assign(variant=variant, metric=metric))
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if curves.empty or not metrics:
        report.add("No evaluations yet.")
        return
    if exp.evals.groupby("trial_name").size().max() < 2:
        at = ", ".join(f"{i:.0f}" for i in sorted(exp.evals["iteration"].unique()))
        report.add(
            f"Every trial was evaluated once (at iteration {at}): there is no curve to draw; section 1 holds "
            "those values."
        )
        return
    curves = curves[["variant", "metric", "iteration", "mean", "std", "count"]]
    name = f"curves_{slug(exp.name)}"
    curves.to_csv(report.out_dir / "tables" / f"{name}.csv", index=False)
    report.add(
        f"Mean over seeds with a band of ±1 standard deviation, per variant (its selected configuration), "
        f"every evaluation ([{name}.csv](tables/{name}.csv), metrics as stored: fractions, not percent)."
    )
    report.figure(
        name,
        plots.learning_curves(curves, metrics, plots.variant_colors(variants_of(exp))),
        f"learning curves of {exp.name}",
    )


# --- 7. unfinished trials -----------------------------------------------------------------------------------


def _unfinished_trials(report: _ReportWriter, results: StudyResults) -> None:
    trials = results.trials[results.trials["status"] != "finished"]
    if results.trials.empty or trials.empty:
        report.add("No trial has started yet." if results.trials.empty else "Every trial finished.")
        return
    numbers = trials[
        [
            "experiment",
            "trial_name",
            "variant",
            "seed",
            "config",
            "status",
            "iterations",
            "evaluations",
            "error",
            "reason",
        ]
    ]
    shown = numbers[
        ["experiment", "trial_name", "variant", "seed", "config", "status", "iterations", "evaluations"]
    ].astype(str)
    shown["reason or error"] = [
        message_line(error if isinstance(error, str) else reason)
        for error, reason in zip(numbers["error"], numbers["reason"], strict=True)
    ]
    report.add(
        "Errored and diverged trials are left out of every table above (their compute still counts in "
        "section 5); stopped trials count at the checkpoint they reached; running trials with what they "
        "have so far."
    )
    report.table("unfinished_trials", numbers, shown)
