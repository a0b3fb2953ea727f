"""The `msl` command end to end: synth, verify, train, resume, eval with saved predictions."""

import cv2
import pytest
import yaml

from msl.cli import main
from msl.labels import label_id_to_class_lut
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["data", "synth", "--out", str(root / "synth"), "--scale", "small"]) == 0
    config = tiny_config(root / "synth")
    config["optim"]["iterations"] = 2
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    return root


def test_verify_reports_the_synthetic_target_clean(workspace, capsys):
    assert main(["data", "verify", "--dataset", "cityscapes", "--root", str(workspace / "synth/target")]) == 0
    assert "val" in capsys.readouterr().out


def test_train_then_resume_refuses_a_changed_config(workspace, capsys):
    out = workspace / "run"
    assert main(["train", str(workspace / "run.yaml"), "--out", str(out)]) == 0
    assert "finished 2 iterations" in capsys.readouterr().out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (
        main(["train", str(workspace / "run.yaml"), "--out", str(out), "--resume", "--set", "optim.lr=0.5"])
        == 2
    )
    assert "optim.lr is 0.5 but the run was started with 0.01" in capsys.readouterr().err
    # The same config resumes; the run is complete, so nothing is added or lost.
    assert main(["train", str(workspace / "run.yaml"), "--out", str(out), "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    # A run started before loss.options existed (its config.yaml lacks it) resumes: the default is no change.
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["loss"]["options"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["train", str(workspace / "run.yaml"), "--out", str(out), "--resume"]) == 0
    assert main(["train", str(workspace / "run.yaml"), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "reason"), [("", "the file is empty"), ("data: [", "not valid YAML")])
def test_resume_names_a_damaged_run_config_as_the_runs(workspace, capsys, content, reason):
    out = workspace / f"damaged{len(content)}"
    assert main(["train", str(workspace / "run.yaml"), "--out", str(out)]) == 0
    (out / "config.yaml").write_text(content)
    capsys.readouterr()
    assert main(["train", str(workspace / "run.yaml"), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the run's config.yaml is empty or unreadable ({out / 'config.yaml'}: {reason}" in err
    assert "but the run was started with" not in err and len(err.strip().splitlines()) == 1


def test_eval_prints_classes_and_saves_predictions_that_match_its_metrics(workspace, capsys):
    out = workspace / "eval_run"
    assert main(["train", str(workspace / "run.yaml"), "--out", str(out)]) == 0
    capsys.readouterr()
    predictions = workspace / "predictions"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(out / "checkpoints/last.pt"),
                "--set",
                "eval.max_images=null",
                "--save-predictions",
                f"{predictions}/",  # a trailing slash, as a shell's completion writes it
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "road" in printed and "mIoU" in printed
    assert f"predictions written to {predictions}/labelIds and {predictions}/colour" in printed
    # Recompute road IoU from the saved label-id PNGs and the ground truth files.
    lut = label_id_to_class_lut(19)
    intersection = union = 0
    for path in sorted((predictions / "labelIds").glob("*_pred_labelIds.png")):
        stem = path.name.removesuffix("_pred_labelIds.png").removesuffix("_leftImg8bit")
        city = stem.split("_")[0]
        truth_path = workspace / f"synth/target/gtFine/val/{city}/{stem}_gtFine_labelIds.png"
        truth = lut[cv2.imread(str(truth_path), cv2.IMREAD_UNCHANGED)]
        pred = lut[cv2.imread(str(path), cv2.IMREAD_UNCHANGED)]
        intersection += int(((truth == 0) & (pred == 0)).sum())
        union += int((((truth == 0) | (pred == 0)) & (truth != 255)).sum())
    road_line = next(line for line in printed.splitlines() if line.startswith("road"))
    assert float(road_line.split()[-1]) == pytest.approx(100 * intersection / union, abs=0.01)
    assert len(list((predictions / "colour").glob("*.png"))) == 8
