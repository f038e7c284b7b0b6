"""Models registered by name, in the manner of timm's registry.

Each model file defines a config dataclass and an `MERModel` subclass, and registers the
class with `@register("name")`. The class names its config class in `config_class`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from affectune.data.schema import DatasetSpec

_MODELS: dict[str, type] = {}


def register(name: str):
    """Class decorator: make the model buildable as `build_model(name, ...)`."""

    def wrap(cls):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice ({_MODELS[name]} and {cls})")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_class(name: str) -> type:
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None


def make_config(name: str, overrides: dict[str, Any] | None = None):
    """The model's config dataclass from defaults plus `overrides`; unknown keys are an error."""
    cls = model_class(name).config_class
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) for model {name!r}: {unknown}; "
                         f"fields are {sorted(known)}")
    return cls(**overrides)


def build_model(name: str, config: Any, spec: DatasetSpec):
    """Build model `name` from a config dataclass or a dict of overrides, for data `spec`."""
    if not dataclasses.is_dataclass(config):
        config = make_config(name, config)
    return model_class(name)(config, spec)
