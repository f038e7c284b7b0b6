"""Search spaces per method, as Optuna define-by-run functions, registered by (method, name).

A space is a function `define(trial) -> dict | None` that calls `trial.suggest_*` (Optuna's API) and
may return derived constants (e.g. `hidden = heads * head_dim`, so a conditional dimension never
proposes an invalid combination). Define-by-run gives conditional and method-specific dimensions
for free: a later method can suggest `lora_rank` only when `use_lora` was drawn, etc.

`apply_params(method, params, base_config)` turns the drawn values into a full train config: a
key that is a field of the method's model config goes to `config["model_config"]`, any other key to
the top-level train config (lr, batch_size, ...). Unknown keys are rejected by the model config.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

SpaceFn = Callable[[Any], "dict | None"]


@dataclass(frozen=True)
class SearchSpace:
    """A named, registered search space of one method."""

    method: str
    """Registered model name the space belongs to."""
    name: str
    """Space name, e.g. "paper" or "wide"."""
    define: SpaceFn
    """Optuna define-by-run function: suggests params, may return derived constants."""
    description: str = ""
    """One line shown in the studies table and the docs."""
    grid: tuple[dict, ...] = field(default=())
    """The full grid when the space is a finite grid (used by the search-efficiency benchmark)."""
    helpers: tuple[str, ...] = ()
    """Drawn params that only feed derived values (e.g. head_dim -> hidden); not config keys."""

    def describe(self) -> dict:
        """JSON-able description for the study store."""
        return {"method": self.method, "name": self.name, "description": self.description,
                "grid_size": len(self.grid) or None}


_SPACES: dict[tuple[str, str], SearchSpace] = {}


def register_space(method: str, name: str, *, description: str = "", grid: list[dict] | None = None,
                   helpers: tuple[str, ...] = ()):
    """Decorator: register `define` as space `name` of `method`."""

    def wrap(define: SpaceFn) -> SpaceFn:
        key = (method, name)
        if key in _SPACES:
            raise ValueError(f"search space {name!r} of method {method!r} is registered twice")
        _SPACES[key] = SearchSpace(method, name, define, description, tuple(grid or ()), tuple(helpers))
        return define

    return wrap


def get_space(method: str, name: str) -> SearchSpace:
    try:
        return _SPACES[(method, name)]
    except KeyError:
        have = sorted(n for m, n in _SPACES if m == method)
        raise KeyError(f"no search space {name!r} for method {method!r}; registered: {have}") from None


def list_spaces(method: str | None = None) -> list[tuple[str, str]]:
    return sorted(k for k in _SPACES if method is None or k[0] == method)


def _model_fields(method: str) -> set[str]:
    from affectune.models import _registry

    try:
        return {f.name for f in dataclasses.fields(_registry.model_class(method).config_class)}
    except KeyError:
        # Importing affectune.models registers the models; do it lazily (no import side effects).
        import importlib

        importlib.import_module("affectune.models")
        return {f.name for f in dataclasses.fields(_registry.model_class(method).config_class)}


def apply_params(method: str, params: dict, base_config: dict, helpers: tuple[str, ...] = ()) -> dict:
    """Full train config = base config with `params` routed to model_config or the top level.

    Keys in `helpers` (a space's derivation-only dimensions) are left out of the config.
    """
    params = {k: v for k, v in params.items() if k not in helpers}
    config = copy.deepcopy(base_config)
    config.setdefault("model", method)
    model_config = dict(config.get("model_config") or {})
    fields = _model_fields(method)
    for key, value in params.items():
        if key in fields:
            model_config[key] = value
        else:
            config[key] = value
    config["model_config"] = model_config
    return config


class FixedTrial:
    """A stand-in for an Optuna trial that answers suggestions from fixed values (for grids)."""

    def __init__(self, values: dict):
        self.values, self.params = dict(values), {}

    def _take(self, name: str, *_, **__) -> Any:
        if name not in self.values:
            raise KeyError(f"fixed trial has no value for {name!r} (has {sorted(self.values)})")
        self.params[name] = self.values[name]
        return self.values[name]

    suggest_int = suggest_float = suggest_categorical = _take


def draw(space: SearchSpace, values: dict) -> dict:
    """The params (drawn + derived) the space yields for fixed `values`."""
    trial = FixedTrial(values)
    derived = space.define(trial) or {}
    return {**trial.params, **derived}


# --------------------------------------------------------------------------- DQF spaces
PAPER_LAYERS = (2, 4, 6)
PAPER_HEADS = (2, 4, 6)


@register_space("dqf", "paper", description="DQF Table 5: layers in {2,4,6} x heads in {2,4,6}",
                grid=[{"layers": l, "heads": h} for l, h in itertools.product(PAPER_LAYERS, PAPER_HEADS)])
def dqf_paper(trial) -> None:
    trial.suggest_categorical("layers", PAPER_LAYERS)
    trial.suggest_categorical("heads", PAPER_HEADS)
    # hidden stays the base config's: it must be divisible by every head count (12, 24, 48, ...).
    return None


@register_space("dqf", "wide", description="layers, heads, head width, lr, dropout, aux-loss weight",
                helpers=("head_dim",))
def dqf_wide(trial) -> dict:
    trial.suggest_int("layers", low=1, high=6)
    heads = trial.suggest_categorical("heads", (2, 4, 6))
    # hidden = heads * head_dim: every drawn combination is valid (hidden % heads == 0).
    head_dim = trial.suggest_categorical("head_dim", (4, 8, 16))
    trial.suggest_float("lr", low=1e-4, high=3e-2, log=True)
    trial.suggest_float("dropout", low=0.0, high=0.5)
    trial.suggest_float("aux_weight", low=0.0, high=2.0)
    return {"hidden": heads * head_dim}
