"""`runtime.compile`: the training forward is compiled once per run, evaluation never compiles, resume works,
and the losses match the eager run's."""

from __future__ import annotations

import json

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from msl.config import load_config
from msl.trainer import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

# UDA with different source and target sizes: two input shapes, so two graphs, each compiled once.
UDA = {
    "stage": "uda",
    "loss.target": "iw_maxsquare",
    "model.multi_level": True,
    "data.target_size": [48, 32],
    "eval.every": 2,
    "optim.poly_horizon": 4,
}


def tiny(synth, **overrides):
    return load_config(tiny_config(synth), {**UDA, **overrides})


def losses(run_dir) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith("loss_")} for r in records]


@pytest.fixture
def counted_compile(monkeypatch):
    """torch.compile with an AOTAutograd-eager backend (the whole capture path, no C++ build) that records
    every graph it is given; dynamo's caches are cleared before and after."""
    graphs: list = []
    real_compile, aot_eager = torch.compile, lookup_backend("aot_eager")

    def backend(graph, example_inputs):
        graphs.append(graph)
        return aot_eager(graph, example_inputs)

    monkeypatch.setattr(
        torch, "compile", lambda model, **kwargs: real_compile(model, backend=backend, **kwargs)
    )
    torch._dynamo.reset()
    yield graphs
    torch._dynamo.reset()


def test_compiled_training_compiles_once_per_shape_and_resumes(synth, tmp_path, counted_compile):
    eager = train(tiny(synth), tmp_path / "eager")
    assert counted_compile == []
    compiled = train(tiny(synth, **{"runtime.compile": True}), tmp_path / "compiled")
    assert len(counted_compile) == 2  # source shape and target shape, over 4 iterations and 2 evaluations
    for ours, theirs in zip(losses(tmp_path / "compiled"), losses(tmp_path / "eager"), strict=True):
        assert ours == pytest.approx(theirs, rel=1e-4)
    assert compiled["oracle_miou"] == pytest.approx(eager["oracle_miou"], abs=1e-3)

    torch._dynamo.reset()
    counted_compile.clear()
    split = tmp_path / "split"
    train(tiny(synth, **{"runtime.compile": True, "optim.iterations": 2}), split)
    train(tiny(synth, **{"runtime.compile": True}), split, resume_from=split / "checkpoints" / "last.pt")
    # The resumed run (a new model in the same process) reuses the two cached graphs: their guards hold
    # for any model of the same architecture; a fresh process compiles its own two.
    assert len(counted_compile) == 2
    straight = torch.load(tmp_path / "compiled" / "checkpoints" / "last.pt", weights_only=False)["model"]
    resumed = torch.load(split / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert straight.keys() == resumed.keys()  # state dicts of the eager module: no `_orig_mod.` prefix
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, msg=key)


def test_inductor_losses_match_eager(synth, tmp_path):
    """The default backend (inductor, C++ on the CPU) over two iterations."""
    torch._dynamo.reset()
    overrides = {"optim.iterations": 2, "data.target_size": [64, 32]}  # one shape: one compilation
    train(tiny(synth, **overrides), tmp_path / "eager")
    train(tiny(synth, **overrides, **{"runtime.compile": True}), tmp_path / "compiled")
    torch._dynamo.reset()
    for ours, theirs in zip(losses(tmp_path / "compiled"), losses(tmp_path / "eager"), strict=True):
        assert ours == pytest.approx(theirs, rel=1e-3)
