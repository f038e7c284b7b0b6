"""Source strings (`scheme:target?key=value&...`) and their typed options.

Each source kind declares its options as a dataclass; `parse_options` turns the query-string
values into those typed fields (int, float, bool as 0/1, str) and rejects unknown keys with the
list of valid ones. `format_options` writes the non-default fields back sorted by name, which is
what makes `canonical_source` stable.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote

from affectune.data.schema import DatasetError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class SourceString:
    """A parsed source string; `options` still holds the raw string values."""

    scheme: str
    target: str
    options: dict[str, str]


def split_source(source: str) -> SourceString:
    """`"synthetic:mosi?seed=3"` -> SourceString("synthetic", "mosi", {"seed": "3"})."""
    if not isinstance(source, str) or ":" not in source:
        raise DatasetError(f"source {source!r} must look like 'scheme:target[?key=value&...]'",
                           field="source")
    scheme, rest = source.split(":", 1)
    target, _, query = rest.partition("?")
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError as e:
            raise DatasetError(f"cannot parse options {query!r}: {e}", field="source") from None
        for key, value in pairs:
            if key in options:
                raise DatasetError(f"option {key!r} given twice in {source!r}", field="source")
            options[key] = value
    return SourceString(scheme.strip().lower(), target.strip(), options)


def _field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def describe_options(cls, defaults: dict | None = None) -> str:
    """`name=default (type)` for each option that has a default, for error messages."""
    defaults = {**_defaults(cls), **(defaults or {})}
    return ", ".join(f"{k}={_format_value(defaults[k])} ({t.__name__})"
                     for k, t in _field_types(cls).items() if k in defaults)


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.init and f.default is not dataclasses.MISSING}


def _convert(key: str, raw: str, kind: type, where: str):
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected 0 or 1")
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError("not finite")
            return value
        return str(raw)
    except ValueError as e:
        raise DatasetError(f"option {key}={raw!r} is not a valid {kind.__name__} ({e})",
                           file=where, field=key) from None


def resolve_path_source(scheme: str, target: str, raw: dict[str, str], cls, *, example: str):
    """(absolute path, options of `cls`) for a file or directory source such as `mmsa:<path>`."""
    if not target:
        raise DatasetError(f"{scheme}: needs a path, e.g. {scheme}:{example}", field="source")
    try:  # a NUL byte, an unknown ~user or an over-long name is a bad source, not a crash
        if "\x00" in target:
            raise ValueError("embedded null byte")
        path = Path(target).expanduser().resolve()
    except (ValueError, RuntimeError, OSError) as e:
        raise DatasetError(f"{scheme}: path {target[:200]!r} is not usable ({e})",
                           field="source") from None
    return path, parse_options(cls, raw, where=str(path))


def path_is(path: Path, kind: str) -> bool:
    """`path.is_file()` (kind "file") or `is_dir()`, as a `DatasetError` naming the path when
    the OS refuses to look (name too long, permission denied)."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except OSError as e:
        raise DatasetError(f"cannot access: {e.strerror or e}", file=str(path)) from None


def parse_options(cls, raw: dict[str, str], *, where: str, fixed: dict | None = None,
                  defaults: dict | None = None):
    """Build options dataclass `cls` from raw strings; unknown keys list the valid ones.

    `fixed` are fields not settable from the query string (e.g. the preset name); `defaults`
    override the dataclass defaults (e.g. per preset)."""
    types = _field_types(cls)
    settable = {k: t for k, t in types.items() if k not in (fixed or {})}
    unknown = sorted(set(raw) - set(settable))
    if unknown:
        raise DatasetError(f"unknown option(s) {unknown}; valid options: "
                           f"{describe_options(cls, defaults)}", file=where, field=unknown[0])
    values = {**(defaults or {}), **(fixed or {})}
    values.update({k: _convert(k, v, settable[k], where) for k, v in raw.items()})
    try:
        return cls(**values)
    except DatasetError as e:
        if e.file:
            raise
        raise DatasetError(e.problem, file=where, split=e.split, field=e.field) from None
    except (TypeError, ValueError) as e:
        raise DatasetError(str(e), file=where) from None


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def format_options(opts, *, skip: tuple[str, ...] = (), defaults: dict | None = None) -> str:
    """`?a=1&b=x` of the fields that differ from their defaults, sorted; "" when none."""
    base = {**_defaults(type(opts)), **(defaults or {})}
    items = []
    for f in sorted(dataclasses.fields(opts), key=lambda f: f.name):
        value = getattr(opts, f.name)
        if f.name in skip or not f.init or (f.name in base and base[f.name] == value):
            continue
        items.append(f"{f.name}={quote(_format_value(value), safe='/._-')}")
    return "?" + "&".join(items) if items else ""
