"""Search space files: the shipped ones validate, and every kind of mistake fails before Ray with its key."""

from pathlib import Path

import pytest
import yaml

from msl.config import load_config
from study.cli import main
from study.space import SpaceError, describe_plan, load_space, source_key

SPACES_DIR = Path(__file__).parent.parent / "search_spaces"
SPACES = sorted(SPACES_DIR.glob("*.yaml"))
BASE = {
    "config": {
        "data": {"source_root": "/data/gta5", "target_root": "/data/cs"},
        "model": {"arch": "deeplab_resnet18_small"},
        "optim": {"iterations": 100},
    }
}


def write(tmp_path: Path, **space) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**BASE, **space}, sort_keys=False))  # experiments run in file order
    return path


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_spaces_validate(path):
    """Each shipped space loads and plans (a dry run also checks its data, which only the quickstart's is
    here: the next test)."""
    out = describe_plan(load_space(path))
    assert "trials" in out and "budget: at most" in out and "label-free" in out


def test_the_quickstart_passes_its_dry_run_on_the_synthetic_data(synth, monkeypatch, capsys):
    monkeypatch.setenv("MSL_SYNTH", str(synth))
    assert main(["run", str(SPACES_DIR / "quickstart.yaml"), "--dry-run"]) == 0
    assert (
        "dry run: the space, its data, the study name and the resources check out" in capsys.readouterr().out
    )


def test_plan_counts_trials_and_budget(tmp_path):
    space = load_space(
        write(
            tmp_path,
            seeds=[0, 1, 2],
            variants=["source_only", "maxsquare"],
            params={"loss.iw_ratio": {"grid": [0.1, 0.2]}, "optim.lr": {"loguniform": [1e-4, 1e-2]}},
            search={"algorithm": "random", "num_samples": 2},
        )
    )
    (experiment,) = space.experiments
    assert experiment.num_trials() == 2 * 3 * 2 * 2
    plan = describe_plan(space)
    assert "24 trials = 2 variants x 3 seeds x 2 grid points x 2 samples" in plan
    assert "at most 2400 trial-iterations (100 per trial)" in plan and "source models: 3" in plan


def test_source_models_are_shared_across_targets_but_not_seeds(tmp_path):
    space = load_space(
        write(
            tmp_path,
            seeds=[0, 1],
            experiments={
                "a": {"set": {"data.target_city": "Rome"}},
                "b": {"set": {"data.target_city": "Rio"}},
            },
        )
    )
    a, b = space.experiments
    assert source_key(space.source_config(a, 0)) == source_key(space.source_config(b, 0))
    assert source_key(space.source_config(a, 0)) != source_key(space.source_config(a, 1))
    assert space.source_config(a, 0).selection.metric == "source_val_miou"
    assert space.source_config(a, 0).model.multi_level  # multi-level variants share the source model


def test_a_source_key_is_the_one_a_study_made_before_loss_options_existed_gives():
    cfg = load_config(None, {"stage": "source", "runtime.seed": 3})
    assert source_key(cfg) == "seed3-efa5426c"  # computed with the code of 3c55404
    assert source_key(load_config(None, {"stage": "source", "runtime.seed": 3, "loss.target": "none"})) != (
        source_key(cfg)
    )


def test_source_stage_takes_the_data_and_model_but_not_the_optimisation_of_the_trials(tmp_path):
    space = load_space(
        write(
            tmp_path,
            set={
                "optim.lr": 0.01,
                "loss.lambda_target": 2.0,
                "eval.every": 7,
                "data.batch_size": 3,
                "model.aspp_branches": 4,
            },
            source={"set": {"optim.iterations": 50}},
        )
    )
    (experiment,) = space.experiments
    trial, source = space.trial_config(experiment, "maxsquare", 0, {}), space.source_config(experiment, 0)
    base = load_config(space.base)
    assert (trial.optim.lr, trial.loss.lambda_target, trial.eval.every) == (0.01, 2.0, 7)
    assert (source.optim.lr, source.loss.lambda_target, source.eval.every) == (
        base.optim.lr,
        base.loss.lambda_target,
        base.eval.every,
    )
    assert (source.data.batch_size, source.model.aspp_branches, source.optim.iterations) == (3, 4, 50)


def test_seeds_per_sample_runs_each_configuration_on_every_seed_in_one_trial(tmp_path):
    space = load_space(
        write(
            tmp_path,
            seeds=[0, 1, 2],
            seeds_per_sample=3,
            variants=["iw_maxsquare"],
            params={"optim.lr": {"loguniform": [1e-4, 1e-2]}},
            search={"algorithm": "optuna", "num_samples": 5},
            scheduler={"name": "asha", "grace_period": 20},
        )
    )
    (experiment,) = space.experiments
    assert experiment.num_trials() == 5
    plan = describe_plan(space)
    assert "5 trials = 1 variant x 1 trial of all seeds x 1 grid point x 5 samples" in plan
    assert "at most 1500 trial-iterations (100 per trial and seed, 3 seeds per trial)" in plan


# Every kind of mistake in a space file, with the message it must give (tests/test_errors.py runs each through
# the CLI too).
BAD_SPACES = [
    (
        {
            "variants": {"mine": {"loss.target": "maxsquare", "optim.reference_param_groups": True}},
            "set": {"optim.optimizer": "adamw"},
        },
        "variants.mine: optim.reference_param_groups: reproduces the reference's SGD only",
    ),
    (
        {
            "set": {"optim.reference_param_groups": True},
            "params": {"optim.optimizer": {"choice": ["sgd", "adamw"]}},
        },
        "params.optim.optimizer='adamw': optim.reference_param_groups: reproduces the reference's SGD only",
    ),
    (
        {
            "params": {
                "optim.optimizer": {"choice": ["sgd", "adamw"]},
                "optim.reference_param_groups": {"choice": [False, True]},
            }
        },
        "params.optim.optimizer='adamw', params.optim.reference_param_groups=True: "
        "optim.reference_param_groups: reproduces the reference's SGD only",
    ),
    ({"set": {"data.random_scale": [0.5, 2.0]}}, "set.data.random_scale: needs data.random_crop"),
    (
        {"config": {"data": {"source_root": "/data/gta5"}}, "variants": ["source_only"]},
        "variants.source_only: data.target_root: is empty, but stage uda trains on the target images",
    ),
    (
        {"config": {"data": {"source_root": "/data/gta5"}}, "set": {"data.source_root": ""}},
        "source: data.source_root: is empty, but stage source trains on the source images",
    ),
    (
        {"variants": {"mine": {"data.source_root": ""}}},
        "variants.mine: data.source_root: is empty, but stage uda trains on the source images",
    ),
    ({"set": {"model.arch": "resnet"}}, "set.model.arch: 'resnet' is not allowed; choose one of"),
    ({"seedz": [0]}, "seedz: unknown key; did you mean 'seeds'?"),
    ({"variants": ["maxsquares"]}, "variants: unknown variant 'maxsquares'"),
    ({"params": {"optim.lr": {"loguniform": [0, 0.1]}}}, "params.optim.lr.loguniform: bounds must be > 0"),
    ({"params": {"optim.lr": {"lognormal": [1, 2]}}}, "params.optim.lr.lognormal: unknown key"),
    ({"params": {"optim.lr": {"uniform": [0.2, 0.1]}}}, "lower bound must be below the upper bound"),
    (
        {"params": {"loss.lamda_target": {"choice": [0.1]}}},
        "loss.lamda_target: unknown key; did you mean 'loss.lambda_target'?",
    ),
    (
        {"params": {"loss.threshold": {"uniform": [0.5, 1.5]}}},
        "params.loss.threshold=1.5: loss.threshold: 1.5 is out of range; it must be < 1",
    ),
    ({"variants": {"mine": {"loss.target": "maxsquares"}}}, "variants.mine.loss.target: 'maxsquares'"),
    # Each error is named where the file writes the key: the top-level set, an experiment's own, source.set.
    ({"set": {"optim.iteratons": 5}}, "set.optim.iteratons: unknown key; did you mean 'optim.iterations'?"),
    ({"set": {"model.archh": "x"}}, "set.model.archh: unknown key"),  # shared with the source model too
    (
        {"experiments": {"a": {"set": {"loss.lamda_target": 1.0}}}},
        "experiments.a.set.loss.lamda_target: unknown key",
    ),
    ({"metric": "miou"}, "metric: 'miou' is not a metric the trainer reports"),
    ({"metric": "oracle_miou"}, "metric: 'oracle_miou' reads the target test labels"),
    ({"search": {"algorithm": "optuna"}, "seeds": [0, 1]}, "optuna (TPE) explores the params of one variant"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu: expected 0, a fraction of one GPU"),
    ({"seeds_per_sample": 2}, "seeds_per_sample: 2 runs every configuration on that many seeds; list them"),
    ({"seeds_per_sample": 0}, "seeds_per_sample: 0 is out of range; it must be >= 1"),
    (
        {
            "seeds": [0, 1],
            "seeds_per_sample": 2,
            "scheduler": {
                "name": "pbt",
                "perturbation_interval": 10,
                "mutations": {"loss.lambda_target": {"choice": [0.1, 1.0]}},
            },
        },
        "seeds_per_sample: not with the pbt scheduler or a confirmation",
    ),
    (
        {"scheduler": {"name": "asha", "grace_periods": 3}},
        "scheduler.grace_periods: unknown key; did you mean 'scheduler.grace_period'?",
    ),
    (
        {"scheduler": {"name": "pbt", "perturbation_interval": 10}},
        "pbt needs perturbation_interval and mutations",
    ),
    (
        {
            "scheduler": {
                "name": "pbt",
                "perturbation_interval": 10,
                "synch": "yes",
                "mutations": {"loss.lambda_target": {"choice": [0.1, 1.0]}},
            }
        },
        "synch: expected true or false",
    ),
    ({"source": {"set": {"optim.lr": -1}}}, "source.set.optim.lr: -1.0 is out of range"),
    ({"experiments": {"sweep": {"seeds": "all"}}}, "experiments.sweep.seeds: expected a list"),
    (
        {"scheduler": {"name": "asha", "grace_period": 200}},
        "scheduler.grace_period: 200 is more than the 100 iterations a trial runs",
    ),
    (
        {"scheduler": {"name": "asha", "max_iterations": 400}},
        "scheduler.max_iterations: 400 is more than the 100 iterations a trial runs (optim.iterations)",
    ),
    ({"experiments": {"../escaped": {}}}, "experiments.../escaped: '../escaped' is not allowed as a name"),
    ({"name": "/tmp/elsewhere"}, "name: '/tmp/elsewhere' is not allowed as a name"),
    ({"variants": {"a/b": {}}}, "variants.a/b: 'a/b' is not allowed as a name"),
    ({"search": {"num_samples": 0}}, "search.num_samples: 0 is out of range; it must be >= 1"),
    ({"resources": {"cpus": 2}}, "resources.cpus: unknown key; did you mean 'resources.cpu'?"),
    ({"experiments": {"a": {"name": "b"}}}, "experiments.a.name: unknown key"),  # the name is its key
    (
        {
            "scheduler": {
                "name": "pbt",
                "perturbation_interval": 10,
                "quantile_fraction": 0.75,
                "mutations": {"loss.lambda_target": {"choice": [0.1, 1.0]}},
            }
        },
        "scheduler.quantile_fraction: 0.75 is out of range; it must be <= 0.5",
    ),
]


@pytest.mark.parametrize(("space", "message"), BAD_SPACES)
def test_mistakes_fail_with_the_key(tmp_path, space, message):
    with pytest.raises(SpaceError) as error:
        load_space(write(tmp_path, **space))
    assert message in str(error.value)


def test_an_oracle_objective_needs_to_be_asked_for(tmp_path):
    (experiment,) = load_space(write(tmp_path, metric="oracle_miou", allow_oracle=True)).experiments
    assert experiment.oracle and experiment.mode == "max"
    assert "ORACLE" in describe_plan(load_space(write(tmp_path, metric="oracle_miou", allow_oracle=True)))


def test_choose_by_takes_any_label_free_validator_and_an_oracle_only_when_asked_for(tmp_path):
    (experiment,) = load_space(write(tmp_path, choose_by="ensemble_agreement")).experiments
    assert experiment.chooser == "ensemble_agreement"
    assert "chosen by target_bnm" in describe_plan(load_space(write(tmp_path, choose_by="target_bnm")))
    with pytest.raises(SpaceError, match="choose_by: 'ensemble_agreemnt' is not a validator; choose one of"):
        load_space(write(tmp_path, choose_by="ensemble_agreemnt"))
    with pytest.raises(SpaceError, match="choose_by: 'oracle_miou' reads the target test labels"):
        load_space(write(tmp_path, choose_by="oracle_miou"))
    space = load_space(write(tmp_path, choose_by="oracle_miou", allow_oracle=True))
    assert "chosen by oracle_miou (ORACLE)" in describe_plan(space)
    with pytest.raises(
        SpaceError, match="metric: 'ensemble_agreement' is computed from the saved softmax maps"
    ):
        load_space(write(tmp_path, metric="ensemble_agreement"))


def test_an_oracle_objective_not_asked_for_is_refused_naming_every_label_free_metric(tmp_path):
    with pytest.raises(SpaceError, match="Set allow_oracle: true") as error:
        load_space(write(tmp_path, metric="oracle_miou"))
    label_free = [
        "source_val_miou",
        "target_entropy",
        "target_im",
        "target_max_square",
        "target_snd",
        "target_bnm",
    ]
    assert f"use a label-free metric ({', '.join(label_free)})" in str(error.value)


def test_a_trials_overrides_take_the_variants_over_the_experiments_and_the_searched_values_over_both(
    tmp_path,
):
    path = write(
        tmp_path,
        set={"optim.lr": 0.02, "optim.momentum": 0.8},
        variants={"mine": {"optim.momentum": 0.7, "loss.target": "entropy"}},
    )
    space = load_space(path)
    (experiment,) = space.experiments
    overrides = experiment.trial_overrides("mine", {"optim.lr": 0.05})
    assert overrides == {"optim.lr": 0.05, "optim.momentum": 0.7, "loss.target": "entropy"}
    cfg = space.trial_config(experiment, "mine", 0, {"optim.lr": 0.05})
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.loss.target) == (0.05, 0.7, "entropy")


def test_dry_run_shows_the_effective_settings_with_every_default(tmp_path, synth, capsys):
    pbt = {"name": "pbt", "perturbation_interval": 10, "mutations": {"optim.lr": {"choice": [0.1, 0.2]}}}
    data = {"data.source_root": str(synth / "source"), "data.target_root": str(synth / "target")}
    experiments = {"a": {"scheduler": {"name": "asha"}}, "p": {"scheduler": pbt}}
    path = write(tmp_path, set=data, experiments=experiments)
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "scheduler: {name: asha, grace_period: 1, reduction_factor: 4.0, max_iterations: 100}" in out
    assert "perturbation_interval: 10, mutations: {optim.lr: {choice: [0.1, 0.2]}}, " in out
    assert "quantile_fraction: 0.25, synch: false}" in out
    assert out.count("search: {algorithm: grid, num_samples: 1, seed: 0}") == 2
    assert out.count("objective: max source_val_miou (label-free)") == 2
    assert (
        "resources per trial: {cpu: 1.0, gpu: 0.0}; max_concurrent: null, retries: 1, checkpoints_to_keep: 2"
        in out
    )


def test_dry_run_of_a_bad_space_exits_with_the_message(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, seedz=[1])), "--dry-run"]) == 2
    assert "seedz: unknown key" in capsys.readouterr().err


def _tune_then_confirm(tmp_path, confirm: dict, confirm_seeds: list[int], **tune) -> Path:
    return write(
        tmp_path,
        experiments={
            "tune": {
                "seeds": [0],
                "variants": ["source_only", "maxsquare"],
                "params": {"loss.lambda_target": {"grid": [0.1, 1.0]}},
                **tune,
            },
            "confirm": {"seeds": confirm_seeds, "variants": ["source_only", "maxsquare"], "confirm": confirm},
        },
    )


def test_a_confirmation_runs_on_fresh_seeds_with_the_earlier_experiments_configurations(tmp_path):
    space = load_space(_tune_then_confirm(tmp_path, {"from": "tune"}, [1, 2]))
    tune, confirm = space.experiments
    assert (tune.confirm, confirm.confirm) == (None, "tune")
    assert confirm.num_trials() == 2 * 2 and not confirm.params
    assert "confirms the configurations that 'tune' selects, on fresh seeds" in describe_plan(space)


@pytest.mark.parametrize(
    ("confirm", "seeds", "message"),
    [
        ({"from": "tune"}, [0, 1], r"experiments.confirm.seeds: \[0\] also ran in 'tune'"),
        ({"from": "later"}, [1], "experiments.confirm.confirm.from: 'later' is not an earlier experiment"),
        (
            {"form": "tune"},
            [1],
            "experiments.confirm.confirm.form: unknown key; did you mean 'experiments.confirm.confirm.from'",
        ),
        ("tune", [1], "experiments.confirm.confirm: expected a mapping"),
    ],
)
def test_a_confirmation_that_cannot_be_fair_fails_with_its_key(tmp_path, confirm, seeds, message):
    with pytest.raises(SpaceError, match=message):
        load_space(_tune_then_confirm(tmp_path, confirm, seeds))


def test_a_confirmation_searches_nothing_itself(tmp_path):
    path = write(
        tmp_path,
        experiments={
            "tune": {"seeds": [0]},
            "confirm": {
                "seeds": [1],
                "confirm": {"from": "tune"},
                "params": {"optim.lr": {"grid": [0.1, 0.2]}},
            },
        },
    )
    with pytest.raises(
        SpaceError, match="experiments.confirm.confirm: a confirmation searches nothing itself"
    ):
        load_space(path)


def test_a_confirmation_checks_the_earlier_search_space_in_its_own_settings(tmp_path):
    """The configurations to confirm come from the tuning's distributions: they are checked with the
    confirmation's own fixed settings before anything runs."""
    path = _tune_then_confirm(tmp_path, {"from": "tune"}, [1])
    space = yaml.safe_load(path.read_text())
    space["experiments"]["tune"]["params"] = {"loss.iw_ratio": {"uniform": [0.0, 0.5]}}
    space["experiments"]["confirm"]["set"] = {"loss.iw_ratio": 0.3}  # the tuned value replaces it
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    load_space(path)
    space["experiments"]["tune"]["params"] = {"loss.iw_ratio": {"uniform": [0.0, 1.5]}}
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    with pytest.raises(SpaceError, match="loss.iw_ratio"):
        load_space(path)


def test_each_variant_can_search_its_own_grid(tmp_path):
    """Losses differ in scale, so a fair comparison gives each its own lambda grid; variants without one run
    once."""
    space = load_space(
        write(
            tmp_path,
            seeds=[0, 1],
            params={"optim.lr": {"grid": [0.01, 0.02]}},
            variants={
                "source_only": {},
                "entropy": {"params": {"loss.lambda_target": {"grid": [0.01, 0.03, 0.1]}}},
                "maxsquare": {"loss.iw_ratio": 0.3, "params": {"loss.lambda_target": {"grid": [0.1, 1.0]}}},
            },
        )
    )
    (experiment,) = space.experiments
    assert experiment.variants["maxsquare"].set == {
        "loss.target": "maxsquare",
        "model.multi_level": False,
        "loss.iw_ratio": 0.3,
    }
    assert [experiment.grid_size(v) for v in experiment.variants] == [2, 6, 4]
    assert experiment.num_trials() == (2 + 6 + 4) * 2
    assert "24 trials = (2 + 6 + 4 grid points of the 3 variants) x 2 seeds x 1 sample" in describe_plan(
        space
    )


@pytest.mark.parametrize(
    ("variants", "extra", "message"),
    [
        (
            {"entropy": {"params": {"loss.lambda_target": {"uniform": [0.0, 1.0]}}}},
            {},
            "variants.entropy.params.loss.lambda_target: a variant's own params are grids",
        ),
        (
            {"entropy": {"params": {"loss.lambda_target": {"grid": [0.1]}}}},
            {"params": {"loss.lambda_target": {"grid": [1]}}},
            r"variants: \['loss.lambda_target'\] searched both in params and in a variant's own params",
        ),
        (
            {"entropy": {"params": {"loss.lambda_target": {"grid": [0.1]}}}},
            {"search": {"algorithm": "random"}},
            "variants: a variant's own params are grids; they need search.algorithm grid",
        ),
        (
            {"entropy": {"params": {"loss.lambda_target": {"grid": [0.1, -1.0]}}}},
            {},
            "params.loss.lambda_target=-1.0: .*must be >= 0",
        ),
    ],
)
def test_a_variants_own_grid_is_checked_before_ray(tmp_path, variants, extra, message):
    with pytest.raises(SpaceError, match=message):
        load_space(write(tmp_path, variants=variants, **extra))
