"""The newcomer's path at a reduced size: `msl data synth`, then `msl-study run search_spaces/quickstart.yaml
--report`, as `make quickstart` runs them, with fewer seeds, samples and iterations."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def test_quickstart_pipeline_ends_in_a_report(tmp_path):
    synth = tmp_path / "synth"
    subprocess.run(
        [str(BIN / "msl"), "data", "synth", "--out", str(synth), "--scale", "small"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    space = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    space["source"] = {"set": {"optim.iterations": 6}}
    for settings in [space["set"], space["experiments"]["sweep"]["set"]]:
        settings.update({"optim.iterations": 6, "eval.every": 3})
    tune, confirm = space["experiments"]["tune"], space["experiments"]["confirm"]
    tune["variants"] = {
        "source_only": {},
        "iw_maxsquare": {"params": {"loss.lambda_target": {"grid": [0.3, 3.0]}}},
    }
    confirm.update(seeds=[1], variants=["source_only", "iw_maxsquare"])
    space["experiments"]["sweep"]["search"]["num_samples"] = 3
    space["experiments"]["sweep"]["scheduler"]["grace_period"] = 3
    reduced = tmp_path / "quickstart.yaml"
    reduced.write_text(yaml.safe_dump(space, sort_keys=False))  # experiments run in file order

    env = {**os.environ, "MSL_SYNTH": str(synth), "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run(
        [str(BIN / "msl-study"), "run", str(reduced), "--storage", str(tmp_path / "studies"), "--report"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Failed to fetch metrics" not in result.stdout + result.stderr  # Tune's warning per trial
    for ended in ("tune: 3/3 trials ended", "confirm: 2/2 trials ended", "sweep: 3/3 trials ended"):
        assert ended in result.stdout
    report = (tmp_path / "studies" / "quickstart" / "report" / "report.md").read_text()
    for variant in confirm["variants"]:
        assert f"| {variant} " in report
    assert "label-free" in report and "Pruning budget" in report and "Tune, then confirm" in report
    assert "**Checkpoint level**" in report and "**Configuration level**" in report  # the selection audit
    assert "| ensemble_agreement " in report and "| target_snd " in report and "| target_bnm " in report
    # tune chose iw_maxsquare's lambda by ensemble agreement from the saved maps, and confirm says so
    assert "iw_maxsquare runs with lambda_target=" in result.stdout
    assert "by ensemble_agreement)" in result.stdout
    assert "**Variant level**" in report and "| ensemble_agreement (chooses) " in report
    assert "target_im (min, label-free); configurations by ensemble_agreement" in report
    assert "selected in experiment `tune` by `ensemble_agreement`" in report
