"""`tensorboard --logdir STUDY`'s HParams table (study/tensorboard_hparams.py), read back from the study's
root with TensorBoard's own event multiplexer and hparams metadata parser, as TensorBoard loads it."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata
from tensorboard.util import tensor_util

from study import layout
from study.tensorboard_hparams import write_hparams
from tests.test_replay import _write_study


def _read(study) -> dict[str, tuple[dict, dict]]:
    """Each session run: (its hyperparameters, its metrics' values)."""
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(study))
    mux.Reload()
    sessions, scalar_tags = {}, mux.PluginRunToTagToContent("scalars")
    for run, tags in mux.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        if metadata.SESSION_START_INFO_TAG not in tags:
            continue
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        hparams = {
            key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for key, value in start.hparams.items()
        }
        scalars = {
            tag: float(tensor_util.make_ndarray(mux.Tensors(run, tag)[-1].tensor_proto))
            for tag in scalar_tags.get(run, {})
        }
        sessions[run] = (hparams, scalars)
    return sessions


def test_every_run_is_a_row_with_its_configuration_and_results(tmp_path):
    study = _write_study(tmp_path)
    write_hparams(study, "sweep")
    write_hparams(study, "sweep")  # rewritten, not doubled
    sessions = _read(study)
    assert sorted(sessions) == [f"sweep/hparams/maxsquare_s0_a_0000{i}" for i in range(4)]
    hparams, metrics = sessions["sweep/hparams/maxsquare_s0_a_00003"]
    assert hparams == {
        "experiment": "sweep",
        "variant": "maxsquare",
        "seed": 0.0,
        "status": "finished",
        "iterations": 4.0,
        "loss.lambda_target": 3.0,
    }
    # its best target_im is 0.41 at iteration 2, where the target mIoU is 26%; 28% at its last evaluation
    assert metrics == pytest.approx(
        {"objective/target_im": 0.41, "selected_target_miou": 26.0, "final_target_miou": 28.0}
    )


def test_a_value_tensorboard_cannot_hold_is_shown_as_its_text(tmp_path):
    study = _write_study(tmp_path)
    trial = layout.trials_dir(study, "sweep") / "maxsquare_s0_a_00001" / layout.TRIAL_FILE
    layout.write_json(trial, {**layout.read_json(trial), "params": {"loss.lambda_target": [512, 256]}})
    write_hparams(study, "sweep")
    hparams, _ = _read(study)["sweep/hparams/maxsquare_s0_a_00001"]
    assert hparams["loss.lambda_target"] == "[512, 256]"
