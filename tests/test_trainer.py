"""Short real trainings on the small synthetic benchmark: both stages, every target loss, resume, logging."""

import json
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import msl.trainer
from msl.config import load_config
from msl.probs_maps import load_probs, saved_iterations
from msl.run_dir import RunDir
from msl.trainer import NonFiniteLossError, poly_lr, train
from tests.conftest import tiny_config

METRICS = {
    "source_val_miou",
    "oracle_miou",
    "target_entropy",
    "target_im",
    "target_max_square",
    "target_snd",
    "target_bnm",
}


def tiny(synth, **overrides):
    return load_config(tiny_config(synth), overrides)


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def source_run(synth, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "source"
    train(tiny(synth, **{"model.multi_level": True}), run_dir)
    return run_dir


def test_source_stage_writes_a_complete_run_directory(source_run):
    records = read_metrics(source_run)
    assert [r["iteration"] for r in records] == [2, 4]
    assert METRICS <= set(records[-1]) and {"loss_source_ce", "loss_source_aux_ce"} <= set(records[-1])
    assert len(records[-1]["oracle_iou"]) == 19
    assert (source_run / "checkpoints" / "last.pt").is_file() and (
        source_run / "checkpoints" / "best.pt"
    ).is_file()
    maps = saved_iterations(source_run)  # validator images x classes x eval.probs_size (default 32 x 16)
    assert list(maps) == [2, 4] and load_probs(maps[4]).shape == (4, 19, 16, 32)
    progress = RunDir(source_run).read_progress()  # rewritten every log_every (here 1) iterations
    assert (progress["iteration"], progress["iterations"]) == (4, 4) and progress["elapsed_s"] > 0
    info = json.loads((source_run / "run_info.json").read_text())
    assert info["seed"] == 0 and "torch" in info["versions"] and info["git_revision"]
    assert load_config(source_run / "config.yaml").data.normalization == "imagenet"  # auto, resolved
    best = torch.load(source_run / "checkpoints" / "best.pt", weights_only=False)["best"]
    chosen = max(records, key=lambda r: r["source_val_miou"])  # first of equals wins
    assert best["iteration"] == chosen["iteration"] and best["metric"] == "source_val_miou"
    # is_best marks a strict improvement over every earlier evaluation (it is the best-so-far when written).
    values = [r["source_val_miou"] for r in records]
    assert [r["is_best"] for r in records] == [all(v > w for w in values[:i]) for i, v in enumerate(values)]


def test_tensorboard_scalars_read_back_with_tensorboards_reader(source_run):
    events = EventAccumulator(str(source_run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/source_ce", "learning_rate", "metrics/oracle_miou", "metrics/target_im"} <= set(
        tags["scalars"]
    )
    lrs = [(e.step, e.value) for e in events.Scalars("learning_rate")]
    assert lrs == [(i + 1, pytest.approx(poly_lr(0.01, i, 4, 0.9))) for i in range(4)]
    miou = [e.value for e in events.Scalars("metrics/oracle_miou")]
    assert miou == pytest.approx([r["oracle_miou"] for r in read_metrics(source_run)])
    assert any(tag.endswith("/prediction") for tag in tags["images"])


@pytest.mark.parametrize("multi_level", [False, True])
@pytest.mark.parametrize("loss", ["none", "entropy", "iw_entropy", "maxsquare", "iw_maxsquare", "hard"])
def test_uda_runs_every_target_loss_without_reading_target_train_labels(
    synth, source_run, tmp_path, loss, multi_level
):
    blind = tmp_path / "target"
    shutil.copytree(synth / "target", blind)
    shutil.rmtree(blind / "gtFine" / "train")  # any read of a target-train label would now fail
    cfg = tiny(
        synth,
        **{
            "stage": "uda",
            "data.target_root": str(blind),
            "loss.target": loss,
            "loss.threshold": 0.5,
            "model.multi_level": multi_level,
            "model.weights": str(source_run / "checkpoints" / "last.pt"),
        },
    )
    record = train(cfg, tmp_path / "run")
    terms = {k for k in record if k.startswith("loss_")}
    expected = {"loss_source_ce"} | ({"loss_source_aux_ce", "loss_target_guidance"} if multi_level else set())
    if loss != "none" or multi_level:
        expected |= {"loss_target_loss"}
    assert terms == expected
    assert METRICS <= set(record) and 0 <= record["oracle_miou"] <= 1


def test_same_config_gives_the_same_metrics(synth, tmp_path):
    cfg = tiny(synth, **{"optim.iterations": 2})
    train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    timing = ("elapsed_s", "time")
    first, second = (
        [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(tmp_path / run)]
        for run in "ab"
    )
    assert first == second


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])  # AdamW's moments must come back too
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(synth, source_run, tmp_path, optimizer):
    overrides = {
        "stage": "uda",
        "loss.target": "iw_maxsquare",
        "model.multi_level": True,
        "eval.every": 3,
        "optim.optimizer": optimizer,
        "model.weights": str(source_run / "checkpoints" / "last.pt"),
        "optim.poly_horizon": 6,
    }
    train(tiny(synth, **overrides, **{"optim.iterations": 6}), tmp_path / "straight")
    train(tiny(synth, **overrides, **{"optim.iterations": 3}), tmp_path / "split")
    train(
        tiny(synth, **overrides, **{"optim.iterations": 6}),
        tmp_path / "split",
        resume_from=tmp_path / "split" / "checkpoints" / "last.pt",
    )
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    split = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=False)
    for key, value in straight["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert ("exp_avg" in next(iter(split["optimizer"]["state"].values()))) == (optimizer == "adamw")
    assert [r["iteration"] for r in read_metrics(tmp_path / "split")] == [3, 6]
    assert (
        read_metrics(tmp_path / "split")[-1]["oracle_miou"]
        == read_metrics(tmp_path / "straight")[-1]["oracle_miou"]
    )


def test_a_run_stopped_after_each_evaluation_and_resumed_equals_the_straight_run(synth, source_run, tmp_path):
    """`stop_after` (how a trial steps several seeds in turn): same weights, same records, the same
    schedule."""
    overrides = {
        "stage": "uda",
        "loss.target": "iw_maxsquare",
        "eval.every": 2,
        "optim.iterations": 6,
        "model.weights": str(source_run / "checkpoints" / "last.pt"),
    }
    cfg = tiny(synth, **overrides)
    train(cfg, tmp_path / "straight")
    chunks = tmp_path / "chunks"
    first = train(cfg, chunks, stop_after=2)
    assert first["iteration"] == 2 and [r["iteration"] for r in read_metrics(chunks)] == [2]
    last = chunks / "checkpoints" / "last.pt"
    assert train(cfg, chunks, resume_from=last, stop_after=4)["iteration"] == 4
    train(cfg, chunks, resume_from=last)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    split = torch.load(last, weights_only=False)
    for key, value in straight["model"].items():
        assert torch.equal(value, split["model"][key]), key
    timing = ("elapsed_s", "time")
    records = [
        [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(run)]
        for run in (tmp_path / "straight", chunks)
    ]
    assert records[0] == records[1]  # lr included: the schedule's horizon stayed optim.iterations


def tensorboard_scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_keeps_every_step_across_resumes_and_drops_what_a_crash_logged_after_its_checkpoint(
    synth, source_run, tmp_path
):
    """Stepped like a seeds_per_sample trial (resumed after each evaluation), TensorBoard's own reader sees
    every evaluation and every logged iteration once, equal to metrics.jsonl and to a straight run; steps a
    process logged after its last checkpoint (then died) are replaced by the resumed run's."""
    cfg = tiny(
        synth,
        **{
            "stage": "uda",
            "loss.target": "iw_maxsquare",
            "eval.every": 2,
            "optim.iterations": 6,
            "model.weights": str(source_run / "checkpoints" / "last.pt"),
        },
    )
    train(cfg, tmp_path / "straight")
    run = tmp_path / "stepped"
    last = run / "checkpoints" / "last.pt"
    train(cfg, run, stop_after=2)
    at_2 = shutil.copy(last, tmp_path / "at_2.pt")
    train(cfg, run, resume_from=last, stop_after=4)  # then "dies": the next process resumes from iteration 2
    train(cfg, run, resume_from=at_2, stop_after=4)
    train(cfg, run, resume_from=last)
    miou = tensorboard_scalars(run, "metrics/oracle_miou")
    assert miou == [(r["iteration"], pytest.approx(r["oracle_miou"])) for r in read_metrics(run)]
    assert [step for step, _ in miou] == [2, 4, 6]
    for tag in ("learning_rate", "loss/source_ce", "loss/target_loss", "metrics/oracle_miou"):
        assert tensorboard_scalars(run, tag) == tensorboard_scalars(tmp_path / "straight", tag), tag


def test_non_finite_loss_stops_with_the_iteration_and_the_term(synth, source_run, tmp_path, monkeypatch):
    def nan_on_second_call():
        calls = iter(range(100))
        return lambda logits: logits.float().mean() * (float("nan") if next(calls) == 1 else 1.0)

    monkeypatch.setattr(msl.trainer, "build_target_loss", lambda *a, **k: nan_on_second_call())
    cfg = tiny(synth, **{"stage": "uda", "model.weights": str(source_run / "checkpoints" / "last.pt")})
    with pytest.raises(NonFiniteLossError, match="'target_loss' at iteration 1"):
        train(cfg, tmp_path / "run")


def test_an_existing_run_is_never_overwritten(source_run, synth):
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(synth), source_run)


@pytest.mark.parametrize("adabn", [False, True])
def test_source_only_draws_no_target_batch_and_adabn_one_per_iteration(
    synth, source_run, tmp_path, monkeypatch, adabn
):
    """`source_only` sees no target data in training; `adabn` forwards every target batch (without a loss)."""
    seen = []
    build = msl.trainer.build_run_data

    class Counting(torch.utils.data.Dataset):
        def __init__(self, dataset):
            self.dataset = dataset

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, key):
            seen.append(key)
            return self.dataset[key]

    def counting(cfg, normalization):
        data = build(cfg, normalization)
        data.target_train = Counting(data.target_train)
        return data

    monkeypatch.setattr(msl.trainer, "build_run_data", counting)
    cfg = tiny(
        synth,
        **{
            "stage": "uda",
            "loss.target": "none",
            "loss.adabn": adabn,
            "model.weights": str(source_run / "checkpoints" / "last.pt"),
        },
    )
    train(cfg, tmp_path / "run")
    assert sum(isinstance(key, tuple) for key in seen) == (4 * 2 if adabn else 0)  # 4 iterations x batch 2


def test_adabn_changes_batch_norm_statistics_only(synth, source_run, tmp_path):
    """In train mode batch norm normalises with batch statistics, so forwarding target batches without a loss
    leaves every trained weight as source-only training makes it and moves only the running statistics."""
    states = {}
    for adabn in (False, True):
        cfg = tiny(
            synth,
            **{
                "stage": "uda",
                "loss.target": "none",
                "loss.adabn": adabn,
                "model.weights": str(source_run / "checkpoints" / "last.pt"),
            },
        )
        train(cfg, tmp_path / f"adabn{adabn}")
        states[adabn] = torch.load(
            tmp_path / f"adabn{adabn}" / "checkpoints" / "last.pt", weights_only=False
        )["model"]
    running = [key for key in states[False] if key.endswith(("running_mean", "running_var"))]
    assert running and all(not torch.equal(states[False][key], states[True][key]) for key in running)
    others = [key for key in states[False] if key not in running and not key.endswith("num_batches_tracked")]
    assert all(torch.equal(states[False][key], states[True][key]) for key in others)
