"""One way to name a dataset everywhere: `load(source)` and `canonical_source(source)`.

    synthetic:<preset>[?seed=3&scale=0.1&aligned=0&...]   presets: mosi, mosei, iemocap, meld
    mmsa:<path to aligned_50.pkl or unaligned_50.pkl>[?task=classification&nan_policy=zero]
    merbench:<directory>[?task=regression&text=<folder>&...]

The canonical form lowercases the scheme, resolves paths to absolute ones, normalises option
values and keeps only non-default options, sorted by name; it is what lineage records and
what `Dataset.source` holds. Synthetic datasets are memoised per canonical string because
trials in one process reuse them; their arrays are read-only so no caller can corrupt the
shared copy (copy before modifying in place).
"""

from __future__ import annotations

import functools


from affectune import MODALITIES
from affectune.data import merbench, mmsa, synthetic
from affectune.data.options import split_source
from affectune.data.schema import Dataset, DatasetError

SCHEMES = ("synthetic", "mmsa", "merbench")


def _resolve(source: str):
    """(scheme, canonical string) for a source string; options are checked here."""
    parsed = split_source(source)
    if parsed.scheme == "synthetic":
        cfg = synthetic.config_from_options(parsed.target, parsed.options)
        return parsed.scheme, synthetic.canonical(cfg)
    if parsed.scheme == "mmsa":
        path, opts = mmsa.resolve(parsed.target, parsed.options)
        return parsed.scheme, mmsa.canonical(path, opts)
    if parsed.scheme == "merbench":
        path, opts = merbench.resolve(parsed.target, parsed.options)
        return parsed.scheme, merbench.canonical(path, opts)
    raise DatasetError(f"unknown source scheme {parsed.scheme!r} in {source!r}; schemes: "
                       f"{', '.join(SCHEMES)} (e.g. synthetic:mosi, mmsa:/data/aligned_50.pkl, "
                       "merbench:/data/mer2023)", field="source")


def canonical_source(source: str) -> str:
    """The normalised source string (sorted non-default options, absolute paths)."""
    return _resolve(source)[1]


def load(source: str) -> Dataset:
    """The validated `Dataset` named by `source`; bad input raises `DatasetError`."""
    scheme, canon = _resolve(source)
    if scheme == "synthetic":
        return _load_synthetic(canon)
    parsed = split_source(canon)
    module = mmsa if scheme == "mmsa" else merbench
    return module.load(*module.resolve(parsed.target, parsed.options))


@functools.lru_cache(maxsize=4)
def _load_synthetic(canon: str) -> Dataset:
    parsed = split_source(canon)
    ds = synthetic.generate(synthetic.config_from_options(parsed.target, parsed.options))
    for s in ds.splits.values():
        arrays = [s.features(m) for m in MODALITIES] + list(s.lengths.values())
        arrays += [a for a in (s.ids, s.label_reg, s.label_cls, s.tokens) if a is not None]
        for a in arrays:
            a.flags.writeable = False
    return ds


def clear_cache() -> None:
    """Forget memoised synthetic datasets (frees their memory)."""
    _load_synthetic.cache_clear()


__all__ = ["SCHEMES", "canonical_source", "clear_cache", "load"]
