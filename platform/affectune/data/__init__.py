"""Datasets: one schema for every source, named by a source string (see `load`)."""

from affectune.data.schema import (  # noqa: F401
    MASK_ID, PAD_ID, UNK_ID, Dataset, DatasetError, DatasetSpec, Split, fingerprint, validate,
)
