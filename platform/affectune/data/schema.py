"""The one in-memory schema every dataset source produces, with validation and a fingerprint.

A `Dataset` holds named splits (`train`, `valid`, `test`, optionally `ood`). Each `Split` holds
per-modality float32 feature sequences padded to a common length, the true lengths, labels and
optional text token ids. Validation names the source file, split, field and problem; nothing is
silently coerced.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from affectune import MODALITIES

PAD_ID, UNK_ID, MASK_ID = 0, 1, 2
"""Special token ids shared by every source that provides token ids."""

TASKS = ("regression", "classification")
REG_RANGE = (-3.0, 3.0)
MAX_CLASSES = 1000
"""Largest class count a file may imply: MER corpora have 2 to 7 classes, and a label such as
1e18 in a damaged file would otherwise size a class-name list and the model's output layer."""


def check_class_count(max_label: int, *, file: str, split: str | None = None,
                      field: str | None = None) -> int:
    """`max_label + 1` classes, or a `DatasetError` when that exceeds `MAX_CLASSES`."""
    if max_label >= MAX_CLASSES:
        raise DatasetError(f"class label {max_label} implies more than {MAX_CLASSES} classes; "
                           "the file is probably damaged", file=file, split=split, field=field)
    return max_label + 1


class DatasetError(ValueError):
    """Bad dataset input. The message names the file, split, field and problem."""

    def __init__(self, problem: str, *, file: str | None = None, split: str | None = None,
                 field: str | None = None):
        where = ", ".join(
            f"{k} {v!r}" for k, v in (("file", file), ("split", split), ("field", field)) if v
        )
        super().__init__(f"{where}: {problem}" if where else problem)
        self.file, self.split, self.field, self.problem = file, split, field, problem


@dataclass
class Split:
    """One split. N samples; T_m frames and D_m features per modality m."""

    text: np.ndarray  # (N, Tt, Dt) float32
    audio: np.ndarray  # (N, Ta, Da) float32
    vision: np.ndarray  # (N, Tv, Dv) float32
    lengths: dict[str, np.ndarray]  # modality -> (N,) int64, 0 <= length <= T_m
    ids: np.ndarray  # (N,) str, unique within the split; masks are keyed on these
    label_reg: np.ndarray | None = None  # (N,) float32 in [-3, 3]
    label_cls: np.ndarray | None = None  # (N,) int64 in [0, num_classes)
    tokens: np.ndarray | None = None  # (N, Tt) int64 token ids, PAD_ID beyond the text length

    def __len__(self) -> int:
        return int(self.text.shape[0])

    def features(self, modality: str) -> np.ndarray:
        return getattr(self, modality)

    def subset(self, index: np.ndarray) -> "Split":
        """Rows `index` of this split (a copy-free view where numpy allows)."""
        take = lambda a: None if a is None else a[index]  # noqa: E731
        return Split(
            text=self.text[index], audio=self.audio[index], vision=self.vision[index],
            lengths={m: v[index] for m, v in self.lengths.items()}, ids=self.ids[index],
            label_reg=take(self.label_reg), label_cls=take(self.label_cls),
            tokens=take(self.tokens),
        )


@dataclass
class Dataset:
    """Validated splits plus what a model needs to know about them."""

    source: str  # the canonical source string, e.g. "synthetic:mosi?seed=0"
    splits: dict[str, Split]
    task: str  # "regression" or "classification"
    num_classes: int = 0  # classification only
    class_names: tuple[str, ...] = ()
    vocab_size: int = 0  # 0 when the source has no token ids
    aligned: bool = False  # all modalities share the text's frame axis
    file: str | None = None  # the file the data came from, for error messages
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self)

    @property
    def dims(self) -> dict[str, int]:
        """Feature size per modality."""
        s = self.splits["train"]
        return {m: int(s.features(m).shape[2]) for m in MODALITIES}

    @property
    def seq_lens(self) -> dict[str, int]:
        """Padded frame count per modality."""
        s = self.splits["train"]
        return {m: int(s.features(m).shape[1]) for m in MODALITIES}

    @functools.cached_property
    def fingerprint(self) -> str:
        """Content hash, computed once: a dataset's arrays are not modified after validation."""
        return fingerprint(self)

    def spec(self) -> "DatasetSpec":
        return DatasetSpec(
            task=self.task, num_classes=self.num_classes, dims=self.dims,
            seq_lens=self.seq_lens, vocab_size=self.vocab_size, aligned=self.aligned,
        )


@dataclass(frozen=True)
class DatasetSpec:
    """What a model is built from: shapes and task, never data."""

    task: str
    num_classes: int
    dims: dict[str, int]
    seq_lens: dict[str, int]
    vocab_size: int = 0
    aligned: bool = False

    @property
    def out_dim(self) -> int:
        return 1 if self.task == "regression" else self.num_classes


def validate(ds: Dataset) -> None:
    """Raise `DatasetError` on the first problem found; never modifies the arrays."""
    err = lambda problem, split=None, fld=None: DatasetError(  # noqa: E731
        problem, file=ds.file or ds.source, split=split, field=fld)
    if ds.task not in TASKS:
        raise err(f"task must be one of {TASKS}, got {ds.task!r}")
    if ds.task == "classification" and not 2 <= ds.num_classes <= MAX_CLASSES:
        raise err(f"classification needs 2 <= num_classes <= {MAX_CLASSES}, "
                  f"got {ds.num_classes}")
    for name in ("train", "valid", "test"):
        if name not in ds.splits:
            raise err(f"missing split {name!r} (have {sorted(ds.splits)})", split=name)
    shapes = None
    for name, s in ds.splits.items():
        n = len(s)
        if n == 0:
            raise err("split is empty", name)
        for m in MODALITIES:
            x = s.features(m)
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 3:
                got = f"{getattr(x, 'dtype', type(x).__name__)} with ndim {getattr(x, 'ndim', '?')}"
                raise err(f"expected a float32 array [N, T, D], got {got}", name, m)
            if 0 in x.shape[1:]:
                raise err(f"has no frames or no features (shape {x.shape})", name, m)
            if x.shape[0] != n:
                raise err(f"has {x.shape[0]} rows but the split has {n} samples", name, m)
            if not np.isfinite(x).all():
                bad = int(np.argwhere(~np.isfinite(x))[0][0])
                raise err(f"contains NaN or inf (first at sample {bad}, id {s.ids[bad]!r})", name, m)
            ln = s.lengths.get(m)
            if ln is None:
                raise err("no lengths given", name, f"{m}_lengths")
            if ln.shape != (n,) or not np.issubdtype(ln.dtype, np.integer):
                raise err(f"expected integer lengths of shape ({n},), got {ln.dtype} {ln.shape}",
                          name, f"{m}_lengths")
            if (ln < 0).any() or (ln > x.shape[1]).any():
                bad = int(np.argwhere((ln < 0) | (ln > x.shape[1]))[0][0])
                raise err(f"length {int(ln[bad])} of sample {bad} is outside [0, {x.shape[1]}]",
                          name, f"{m}_lengths")
        if s.ids.shape != (n,):
            raise err(f"expected {n} ids, got shape {s.ids.shape}", name, "ids")
        if len(set(s.ids.tolist())) != n:
            raise err("ids are not unique", name, "ids")
        if ds.task == "regression":
            y = s.label_reg
            if y is None:
                raise err("regression dataset without regression labels", name, "label_reg")
            if y.shape != (n,) or y.dtype != np.float32:
                raise err(f"expected float32 labels of shape ({n},), got {y.dtype} {y.shape}",
                          name, "label_reg")
            if not np.isfinite(y).all() or (y < REG_RANGE[0]).any() or (y > REG_RANGE[1]).any():
                raise err(f"labels must be finite and within {REG_RANGE}", name, "label_reg")
        else:
            y = s.label_cls
            if y is None:
                raise err("classification dataset without class labels", name, "label_cls")
            if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
                raise err(f"expected integer labels of shape ({n},), got {y.dtype} {y.shape}",
                          name, "label_cls")
            if (y < 0).any() or (y >= ds.num_classes).any():
                raise err(f"labels must lie in [0, {ds.num_classes})", name, "label_cls")
        if s.tokens is not None:
            t = s.tokens
            if t.shape != s.text.shape[:2] or not np.issubdtype(t.dtype, np.integer):
                raise err(f"expected integer ids of shape {s.text.shape[:2]}, got {t.dtype} {t.shape}",
                          name, "tokens")
            if ds.vocab_size <= MASK_ID or (t < 0).any() or (t >= ds.vocab_size).any():
                raise err(f"token ids must lie in [0, vocab_size={ds.vocab_size})", name, "tokens")
        split_shapes = {m: s.features(m).shape[1:] for m in MODALITIES}
        if shapes is None:
            shapes = split_shapes
        elif split_shapes != shapes:
            raise err(f"per-modality [T, D] {split_shapes} differ from train's {shapes}", name)
    if ds.aligned:
        t = shapes["text"][0]
        if any(shapes[m][0] != t for m in MODALITIES):
            raise err(f"aligned dataset with different frame counts {({m: shapes[m][0] for m in MODALITIES})}")


def fingerprint(ds: Dataset) -> str:
    """Stable content hash (sha256, 16 hex) of task, arrays, lengths, labels, tokens and ids."""
    h = hashlib.sha256()
    h.update(f"{ds.task}|{ds.num_classes}|{ds.vocab_size}".encode())
    for name in sorted(ds.splits):
        s = ds.splits[name]
        h.update(name.encode())
        arrays = [s.text, s.audio, s.vision, *(s.lengths[m] for m in MODALITIES),
                  s.label_reg, s.label_cls, s.tokens]
        for a in arrays:
            if a is None:
                h.update(b"-")
                continue
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        h.update("\x1f".join(map(str, s.ids.tolist())).encode())
    return h.hexdigest()[:16]
