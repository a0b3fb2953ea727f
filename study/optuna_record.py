"""The Optuna study of an `optuna` search says what happened to each trial (its journal is what
optuna-dashboard, `optuna.load_study` and `optuna.importance` read).

Ray's OptunaSearch records a trial that a scheduler stopped at a rung as COMPLETE with its rung value, keys
intermediate values by Tune's report count (1, 2, ...) and, when a study resumes from a searcher state saved
before a trial's last report, writes the next report over it under the same count. `OptunaRecord` keys them
by the trial's `iteration` (the time attribute of every scheduler), tells a trial that ended before the
horizon without an error PRUNED, with its last value as its last intermediate value, and one that raised an
error FAIL, whatever it reported before. A trial that HyperBand stops while it waits, paused, is judged by
the last result it reported (Tune passes none): COMPLETE if that was at the horizon.
"""

from __future__ import annotations

import warnings

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class OptunaRecord(OptunaSearch):
    """Ray's OptunaSearch (TPE) whose Optuna record is keyed by iteration and knows pruned trials; `horizon`:
    the iterations of a full trial."""

    def __init__(self, *, horizon: int, **kwargs):
        super().__init__(**kwargs)
        self._horizon = horizon
        self._last: dict[str, dict] = {}  # trial id -> the last result reported

    def _report(self, trial_id: str, result: dict) -> None:
        if self.metric not in result or "iteration" not in result:
            return
        self._last[trial_id] = {key: result[key] for key in (self.metric, "iteration")}
        with warnings.catch_warnings():  # a step Optuna holds already (a resumed trial): it keeps the first
            warnings.filterwarnings("ignore", message="The reported value is ignored")
            self._ot_trials[trial_id].report(result[self.metric], int(result["iteration"]))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)  # Ray's warning
            return
        self._report(trial_id, result or {})  # Tune does not pass on the result at which a scheduler stops
        # ... nor any result when it stops a trial that waits, paused, at a rung or at the horizon
        result = result or self._last.get(trial_id)
        if error:
            state = TrialState.FAIL
        elif (result or {}).get("iteration", self._horizon) < self._horizon:
            state = TrialState.PRUNED  # Optuna takes the last intermediate value as its value
        else:
            super().on_trial_complete(trial_id, result, error)
            return
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)
