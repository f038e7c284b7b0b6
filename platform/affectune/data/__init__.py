"""Datasets: one schema for every source, named by a source string (see `load`)."""

from affectune.data.schema import (  # noqa: F401
    MASK_ID, PAD_ID, UNK_ID, Dataset, DatasetError, DatasetSpec, Split, fingerprint, validate,
)
from affectune.data.sources import SCHEMES, canonical_source, clear_cache, load  # noqa: F401
