"""Distribution specs of searched keys (`params`, a variant's own grids, PBT `mutations`): `{kind: args}`
with kind one of KINDS, as a space file writes them and plan.json records them. The one home of what a spec
means: `check` (its arguments, and the values that bound it), `to_tune` (the Ray Tune search-space object),
`to_optuna` (the Optuna distribution, for hyperparameter importance) and `is_log` (searched on a log
scale). Ray and Optuna are imported only by the function that needs them.
"""

from __future__ import annotations

import math
from typing import Any

from msl.config import check_known_keys

KINDS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")
LOG_KINDS = ("loguniform",)


def _number_list(value: Any, length: int, path: str, error: type[ValueError]) -> list[float]:
    if not (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise error(f"{path}: expected a list of {length} numbers, got {value!r}")
    return value


def check(dist: Any, path: str, error: type[ValueError]) -> list[Any]:
    """Validate one distribution spec, raising `error` naming `path`; return the values that bound it (to try
    in configs)."""

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise error(message)

    require(
        isinstance(dist, dict) and len(dist) == 1,
        f"{path}: expected one of {', '.join(KINDS)} with its arguments, e.g. {{uniform: [0, 1]}}, "
        f"got {dist!r}",
    )
    ((kind, args),) = dist.items()
    check_known_keys(dist, KINDS, f"{path}.", error)
    if kind in ("choice", "grid"):
        require(
            isinstance(args, list) and len(args) > 0,
            f"{path}.{kind}: expected a non-empty list, got {args!r}",
        )
        return list(args)
    if kind == "quniform":
        low, high, step = _number_list(args, 3, f"{path}.quniform", error)
        require(step > 0, f"{path}.quniform: the step must be > 0, got {step}")
    else:
        low, high = _number_list(args, 2, f"{path}.{kind}", error)
    require(low < high, f"{path}.{kind}: the lower bound must be below the upper bound, got {args!r}")
    if kind == "loguniform":
        require(low > 0, f"{path}.loguniform: bounds must be > 0, got {args!r}")
    if kind == "randint":
        require(
            all(isinstance(v, int) for v in args), f"{path}.randint: bounds must be integers, got {args!r}"
        )
        return [low, high - 1]  # Tune's randint excludes the upper bound
    return [low, high]


def to_tune(spec: dict[str, Any]):
    """A checked distribution spec as a Tune search-space object."""
    from ray import tune

    ((kind, args),) = spec.items()
    if kind == "choice":
        return tune.choice(args)
    if kind == "grid":
        return tune.grid_search(args)
    return getattr(tune, kind)(*args)  # uniform, loguniform, randint, quniform take their bounds in order


def to_optuna(spec: dict, values):
    """The Optuna distribution of a searched key, from its spec in plan.json and the values the trials had
    (a pandas Series): a grid, a choice or a per-variant grid is categorical over those values."""
    import optuna

    for kind in ("uniform", "loguniform", "quniform", "randint"):
        if kind in spec:
            low, high = spec[kind][:2]
            if kind == "randint":
                return optuna.distributions.IntDistribution(int(low), int(high) - 1)
            return optuna.distributions.FloatDistribution(float(low), float(high), log=kind in LOG_KINDS)
    choices = sorted(values.unique().tolist(), key=lambda value: (str(type(value)), value))
    return optuna.distributions.CategoricalDistribution(choices)


def is_log(spec: dict) -> bool:
    """Whether a spec of plan.json's `searched` is searched on a log scale."""
    return any(kind in LOG_KINDS for kind in spec)


EDGE_SHARE = 0.05  # a value this close to a bound of a continuous range (share of its width) is at that bound


def edge(spec: dict, value: Any, variant: str | None = None) -> tuple[str, str] | None:
    """Where `value` sits at the edge of what a spec of plan.json's `searched` (a variant's own grid: pass
    `variant`) lets a search try, short and in words (("top of grid", "the largest value of its grid [0.1, 1,
    3]"), ("at lower bound", "within 5% of the lower bound of loguniform [0.01, 1]")), or None when it is
    inside. A value at an edge may mean that the best lies beyond it."""
    if "grid per variant" in spec:
        spec = {"grid": spec["grid per variant"].get(variant, [])}
    ((kind, args),) = spec.items()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if kind in ("grid", "choice"):
        numbers = [v for v in args if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) < 2 or len(numbers) < len(args):
            return None
        listed = f"its {kind} [{', '.join(format(v, '.4g') for v in args)}]"
        if value == max(numbers):
            return "top of grid", f"the largest value of {listed}"
        return ("bottom of grid", f"the smallest value of {listed}") if value == min(numbers) else None
    low, high = args[:2]
    log = kind in LOG_KINDS and low > 0 and value > 0
    position = (math.log(value / low) / math.log(high / low)) if log else (value - low) / (high - low)
    bounds = f"{kind} [{low:.4g}, {high:.4g}]"
    if position <= EDGE_SHARE:
        return "at lower bound", f"within {EDGE_SHARE:.0%} of the lower bound of {bounds}"
    if position >= 1 - EDGE_SHARE:
        return "at upper bound", f"within {EDGE_SHARE:.0%} of the upper bound of {bounds}"
    return None
