"""Ray Tune's synchronous scheduler for the space's `hyperband` and `successive_halving` settings.

Ray's HyperBandScheduler places a bracket's first rung at max_t / eta^s and has no grace period; it fills the
bracket that runs every trial to max_t first. `RungHyperBand` keeps Ray's bracket logic (trials pause at a
rung until every trial of their bracket has reached it, then the best 1/eta continue from their checkpoints)
and changes only where the brackets start: at ASHA's rungs (grace_period x reduction_factor^k,
`study.space.rungs`), the bracket with the most halvings first. Successive halving is its one-bracket case,
every trial of the experiment in that bracket.
"""

from __future__ import annotations

from ray.tune.schedulers import HyperBandScheduler

from study.space import bracket_sizes, rungs


class RungHyperBand(HyperBandScheduler):
    """HyperBand whose bracket with `s` halvings starts at rung `len(rung_list) - s` (the first at
    `rung_list[0]`) and holds `sizes[len(rung_list) - s]` trials; `sizes` lists the brackets of a band, the
    one with the most halvings first."""

    def __init__(self, *, max_t: int, reduction_factor: int, rung_list: list[int], sizes: list[int]):
        super().__init__(time_attr="iteration", max_t=max_t, reduction_factor=reduction_factor)
        starts, halvings = [*rung_list, max_t], len(rung_list)
        self._s_max_1 = len(sizes)  # brackets per band (Ray's name)
        self._get_n0 = lambda s: sizes[halvings - s]
        self._get_r0 = lambda s: starts[halvings - s]
        self._halvings = halvings

    def _create_bracket(self, s: int):
        return super()._create_bracket(
            self._halvings - s
        )  # the s-th bracket of a band: the most halvings first


def synchronous_scheduler(spec, horizon: int, trials: int) -> RungHyperBand:
    """The scheduler of a `hyperband` or `successive_halving` setting over trials of `horizon` iterations;
    `trials`: how many the experiment runs (successive halving's one bracket)."""
    return RungHyperBand(
        max_t=horizon,
        reduction_factor=int(spec.reduction_factor),
        rung_list=rungs(spec, horizon),
        sizes=bracket_sizes(spec, horizon, trials),
    )
