"""The study's searcher: Ray Tune's OptunaSearch that never trains the same config twice.

Every search trial trains with the study's seed, so a config proposed again after it finished is an
identical run: its result is already known. On a space of discrete choices (ints, categoricals) TPE
proposes such repeats often: in the search-efficiency benchmark (docs/studies.md) TPE + ASHA ran 31.5
trials on a 20-point space, at least 11.5 of them repeats that cost epochs and taught nothing. Here
a repeated proposal is told its known result without training (what Optuna's maintainers suggest for
duplicated samples, optuna/optuna#2021) and the sampler is asked again; continuous spaces practically
never repeat.
"""

from __future__ import annotations

from typing import Callable

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

MAX_REPEATED_PROPOSALS = 100
"""Proposals in a row that repeat finished configs before the space counts as exhausted."""
CONFIG_ATTR = "config"
"""Optuna user attribute holding a proposal's whole config when it is more than the drawn params
(a define-by-run space may derive values from the draws; the config is what trains)."""


def proposed_config(trial: optuna.trial.BaseTrial) -> dict:
    """What a proposal trains: its recorded config, else its drawn params."""
    return trial.user_attrs.get(CONFIG_ATTR, trial.params)


def known_values(study: optuna.Study, config: dict) -> list[float] | None:
    """The objective values of a finished trial of `study` that trained `config`, or None."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if proposed_config(trial) == config:
            return trial.values
    return None


def ask_unseen(study: optuna.Study, ask: Callable[[], optuna.trial.Trial]) -> optuna.trial.Trial | None:
    """`ask()` until it proposes a config no finished trial trained; each repeat is told its known
    values (so the sampler sees it and moves on). None when MAX_REPEATED_PROPOSALS in a row were repeats."""
    for _ in range(MAX_REPEATED_PROPOSALS):
        trial = ask()
        values = known_values(study, proposed_config(trial))
        if values is None:
            return trial
        study.tell(trial, values)
    return None


class NoRepeatOptunaSearch(OptunaSearch):
    """OptunaSearch whose proposals never repeat a finished trial's config (see the module docstring);
    when only repeats come, the search ends (Searcher.FINISHED) instead of retraining them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exhausted = False
        """True once the search ended on repeats (saved and restored with the searcher's state)."""

    def suggest(self, trial_id: str):
        proposed = []

        def ask() -> optuna.trial.Trial:
            self._ot_trials.pop(trial_id, None)  # a told repeat is done: OptunaSearch asks anew
            proposed.append(super(NoRepeatOptunaSearch, self).suggest(trial_id))
            trial = self._ot_trials[trial_id]
            trial.set_user_attr(CONFIG_ATTR, proposed[-1])
            return trial

        if ask_unseen(self._ot_study, ask) is None:
            self._ot_trials.pop(trial_id, None)
            self.exhausted = True
            print(f"[affectune] the sampler proposed only configs that already ran ({MAX_REPEATED_PROPOSALS} "
                  "in a row): the search space is exhausted, no more trials start", flush=True)
            return Searcher.FINISHED
        return proposed[-1]
