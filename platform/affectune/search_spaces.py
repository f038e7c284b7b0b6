"""Search-space machinery: Optuna define-by-run functions registered by (method, name).

The spaces themselves live in each method's model file (`models/<method>.py`), next to the
method's config and presets; this module never names a method.

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


def _load_methods() -> None:
    """Spaces register when their model files are imported; importing the package loads them all."""
    import importlib

    importlib.import_module("affectune.models")


def get_space(method: str, name: str) -> SearchSpace:
    _load_methods()
    try:
        return _SPACES[(method, name)]
    except KeyError:
        have = sorted(n for m, n in _SPACES if m == method)
        raise KeyError(f"no search space {name!r} for method {method!r}; registered: {have}") from None


def list_spaces(method: str | None = None) -> list[tuple[str, str]]:
    _load_methods()
    return sorted(k for k in _SPACES if method is None or k[0] == method)


def _model_fields(method: str) -> set[str]:
    _load_methods()
    from affectune.models import model_class

    return {f.name for f in dataclasses.fields(model_class(method).config_class)}


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


GRID_PARAM = "grid_point"
"""The helper dimension of a `grid_space`: the label of the drawn point."""


def _point_label(point: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


class GridDefine:
    """The define-by-run function of a `grid_space`: draws one point label, returns its values.

    A module-level class, not a closure, so Tune can pickle the searcher that holds it."""

    def __init__(self, points: dict[str, dict], name: str):
        self.points, self.__name__ = points, name

    def __call__(self, trial) -> dict:
        return dict(self.points[trial.suggest_categorical(GRID_PARAM, list(self.points))])


def grid_space(method: str, name: str, points: list[dict], *, description: str = "") -> SearchSpace:
    """Register a finite space given by its points only (written once, e.g. DQF's Table 5 pairs).

    The define-by-run function draws one point label (a helper dimension) and returns the point's
    values as derived constants, so a grid need not be a Cartesian product."""
    points = [dict(p) for p in points]
    labels = [_point_label(p) for p in points]
    if not points or len(set(labels)) != len(labels):
        raise ValueError(f"grid space {name!r} of {method!r}: points must be distinct and non-empty")
    define = GridDefine(dict(zip(labels, points)), f"{method}_{name}_grid")
    register_space(method, name, description=description, grid=[{GRID_PARAM: lb} for lb in labels],
                   helpers=(GRID_PARAM,))(define)
    return _SPACES[(method, name)]


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
