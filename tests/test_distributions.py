"""Distribution specs (study.distributions) against the libraries that use them: Ray Tune's search-space
objects and Optuna's distributions."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
from ray import tune

from study.distributions import check, edge, is_log, to_optuna, to_tune
from study.space import SpaceError


@pytest.mark.parametrize(
    ("spec", "bounds"),
    [
        ({"uniform": [0.1, 0.5]}, [0.1, 0.5]),
        ({"loguniform": [0.001, 0.1]}, [0.001, 0.1]),
        ({"randint": [2, 6]}, [2, 5]),  # Tune's randint excludes the upper bound
        ({"quniform": [0.0, 1.0, 0.25]}, [0.0, 1.0]),
        ({"choice": ["a", "b"]}, ["a", "b"]),
    ],
)
def test_a_spec_samples_within_the_bounds_check_returns(spec, bounds):
    sampled = to_tune(spec).sample(size=200)
    if "choice" in spec:
        assert set(sampled) == set(bounds)
    else:
        assert bounds[0] <= min(sampled) and max(sampled) <= bounds[1]
    assert check(spec, "params.x", SpaceError) == bounds


def test_a_grid_is_tunes_grid_search():
    assert to_tune({"grid": [1, 2]}) == tune.grid_search([1, 2])


def test_optuna_distributions_and_the_log_scale():
    values = pd.Series([0.01, 0.1])
    assert to_optuna({"loguniform": [0.001, 1.0]}, values) == optuna.distributions.FloatDistribution(
        0.001, 1.0, log=True
    )
    assert to_optuna({"randint": [2, 6]}, values) == optuna.distributions.IntDistribution(2, 5)
    assert to_optuna({"grid": [0.1, 0.01]}, values) == optuna.distributions.CategoricalDistribution(
        [0.01, 0.1]
    )
    assert is_log({"loguniform": [0.001, 1.0]}) and not is_log({"uniform": [0.0, 1.0]})
    assert not is_log({"grid per variant": {"log_maxsquare": [0.1, 1.0]}})  # a variant's name says nothing


def test_a_bad_spec_raises_the_error_asked_for_naming_the_key():
    with pytest.raises(SpaceError, match=r"params.x.loguniform: bounds must be > 0"):
        check({"loguniform": [0.0, 1.0]}, "params.x", SpaceError)
    with pytest.raises(SpaceError, match=r"params.x.normal: unknown key; .*valid keys here: choice, grid"):
        check({"normal": [0, 1]}, "params.x", SpaceError)


@pytest.mark.parametrize(
    ("spec", "value", "variant", "expected"),
    [
        ({"grid": [0.1, 1.0, 3.0]}, 3.0, None, ("top of grid", "the largest value of its grid [0.1, 1, 3]")),
        (
            {"grid": [0.1, 1.0, 3.0]},
            0.1,
            None,
            ("bottom of grid", "the smallest value of its grid [0.1, 1, 3]"),
        ),
        ({"grid": [0.1, 1.0, 3.0]}, 1.0, None, None),
        ({"grid": [3.0]}, 3.0, None, None),  # nothing else was tried: no edge to speak of
        ({"choice": ["a", "b"]}, "a", None, None),
        (
            {"grid per variant": {"maxsquare": [1, 2]}},
            2,
            "maxsquare",
            ("top of grid", "the largest value of its grid [1, 2]"),
        ),
        # log scale: 5% of the two decades from 0.01 to 1 ends at 10**-1.9 = 0.0126
        (
            {"loguniform": [0.01, 1.0]},
            0.0122,
            None,
            ("at lower bound", "within 5% of the lower bound of loguniform [0.01, 1]"),
        ),
        ({"loguniform": [0.01, 1.0]}, 0.02, None, None),
        (
            {"uniform": [0.0, 1.0]},
            0.97,
            None,
            ("at upper bound", "within 5% of the upper bound of uniform [0, 1]"),
        ),
        ({"uniform": [0.0, 1.0]}, 0.5, None, None),
    ],
)
def test_a_value_at_the_edge_of_its_search_is_named(spec, value, variant, expected):
    assert edge(spec, value, variant) == expected
