"""MMSA pickles (`aligned_50.pkl`, `unaligned_50.pkl` of CMU-MOSI/MOSEI, CH-SIMS).

Source string: `mmsa:<path to .pkl>[?task=classification&cls_source=sign&nan_policy=zero]`.

Layout read (a dict with splits `train`, `valid`, `test`, each a dict of):
    text                 (N, T, Dt) float: BERT (or GloVe) features
    text_bert            (N, 3, T) optional: token ids, attention mask, segment ids
    audio, vision        (N, Ta, Da), (N, Tv, Dv) float
    audio_lengths,       (N,) ints or lists, optional; when absent, a modality with the text's
      vision_lengths     frame count takes the text lengths, otherwise last non-zero frame + 1
    regression_labels    (N,) or (N, 1) float in [-3, 3]
    classification_labels (N,) ints, optional
    id, raw_text         (N,) strings, optional (ids default to "<split>-<row>")

Text length = sum of the text_bert mask when present, else last non-zero text frame + 1.
Nothing is coerced silently: NaN/inf (real MMSA audio/vision may contain -inf), wrong shapes,
non-integral lengths or labels and lengths out of range raise `DatasetError` naming the file,
split and field. `nan_policy=zero` replaces non-finite feature values by 0 on request and
records how many per split and field in `Dataset.meta["non_finite_replaced"]`.

Token ids: BERT uses [PAD]=0, [UNK]=100, [MASK]=103 while this platform uses PAD/UNK/MASK =
0/1/2. BERT ids 1 and 2 are unused slots ([unused0], [unused1]), so the remapping swaps
1 <-> 100 and 2 <-> 103: a bijection that keeps every other id (e.g. [CLS]=101, [SEP]=102).
Positions beyond the text length are PAD. vocab_size = 30522 (bert-base) or max id + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectune.data.options import format_options, path_is, resolve_path_source
from affectune.data.safe_pickle import safe_load
from affectune.data.schema import MASK_ID, UNK_ID, Dataset, DatasetError, Split, check_class_count

SPLITS = ("train", "valid", "test")
BERT_VOCAB = 30522
BERT_UNK, BERT_MASK = 100, 103
MAX_VOCAB = 1_000_000
"""Token ids at or above this are a damaged file (the largest tokenizers have ~250k ids),
not a reason to size an embedding table of that many rows."""


@dataclass(frozen=True)
class MMSAOptions:
    """Options of an `mmsa:` source."""

    task: str = "regression"
    """regression (scores in [-3, 3]) or classification."""
    cls_source: str = "auto"
    """Classification labels from: auto (classification_labels if present, else sign),
    labels (classification_labels) or sign (score >= 0 is class 1, else class 0)."""
    nan_policy: str = "error"
    """error: NaN/inf in features is an error; zero: replace by 0 (recorded in meta)."""

    def __post_init__(self):
        for name, allowed in (("task", ("regression", "classification")),
                              ("cls_source", ("auto", "labels", "sign")),
                              ("nan_policy", ("error", "zero"))):
            if getattr(self, name) not in allowed:
                raise DatasetError(f"option {name}={getattr(self, name)!r} must be one of "
                                   f"{', '.join(allowed)}", field=name)


def resolve(target: str, raw: dict[str, str]) -> tuple[Path, MMSAOptions]:
    return resolve_path_source("mmsa", target, raw, MMSAOptions, example="/data/MOSI/aligned_50.pkl")


def canonical(path: Path, opts: MMSAOptions) -> str:
    return f"mmsa:{path}" + format_options(opts)


def remap_bert_ids(ids: np.ndarray) -> np.ndarray:
    """BERT token ids -> platform ids: swap 1<->[UNK]=100 and 2<->[MASK]=103; 0 stays PAD."""
    out = ids.copy()
    for a, b in ((UNK_ID, BERT_UNK), (MASK_ID, BERT_MASK)):
        out[ids == a], out[ids == b] = b, a
    return out


class _Reader:
    """Converts one split's fields with explicit checks."""

    def __init__(self, file: str, split: str, d: dict, opts: MMSAOptions):
        self.file, self.split, self.d, self.opts = file, split, d, opts
        self.replaced: dict[str, int] = {}

    def err(self, field: str, problem: str) -> DatasetError:
        return DatasetError(problem, file=self.file, split=self.split, field=field)

    def array(self, field: str, *, required: bool = True) -> np.ndarray | None:
        if field not in self.d or self.d[field] is None:
            if required:
                raise self.err(field, f"missing (keys: {sorted(map(str, self.d))})")
            return None
        try:
            return np.asarray(self.d[field])
        except (ValueError, TypeError) as e:
            raise self.err(field, f"cannot be read as an array ({e})") from None

    def features(self, field: str, n: int | None) -> np.ndarray:
        x = self.array(field)
        if x.ndim != 3 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise self.err(field, f"expected a numeric (N, T, D) array, got {x.dtype} {x.shape}")
        if 0 in x.shape:
            raise self.err(field, f"has an empty axis (shape {x.shape})")
        if n is not None and x.shape[0] != n:
            raise self.err(field, f"has {x.shape[0]} rows, expected {n}")
        with np.errstate(over="ignore", invalid="ignore"):
            x32 = x.astype(np.float32)  # a copy: the caller's data is never modified
        if (np.isinf(x32) & np.isfinite(x)).any():  # nan_policy is for NaN/inf in the file
            raise self.err(field, "values beyond float32's range (about 3.4e38)")
        x = x32
        bad = ~np.isfinite(x)
        if bad.any():
            if self.opts.nan_policy != "zero":
                row = int(np.argwhere(bad)[0][0])
                raise self.err(field, f"{int(bad.sum())} NaN/inf values (first in row {row}); "
                                      "fix the file or pass nan_policy=zero to replace them by 0")
            x[bad] = 0.0
            self.replaced[field] = int(bad.sum())
        return x

    def integers(self, field: str, x: np.ndarray, shape: tuple) -> np.ndarray:
        if x.shape != shape:
            raise self.err(field, f"expected shape {shape}, got {x.shape}")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise self.err(field, f"expected numbers, got {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and (
                not np.isfinite(x).all() or (x != np.round(x)).any()):
            raise self.err(field, "values are not whole numbers")
        largest = np.abs(x.astype(np.float64)).max() if x.size else 0
        if largest >= 2 ** 62:  # would not survive the cast to int64
            raise self.err(field, f"value {largest} is far too large")
        return x.astype(np.int64)

    def lengths(self, field: str, n: int, t_max: int) -> np.ndarray | None:
        raw = self.array(field, required=False)
        if raw is None:
            return None
        ln = self.integers(field, raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw,
                           (n,))
        bad = (ln < 0) | (ln > t_max)
        if bad.any():
            i = int(np.argmax(bad))
            raise self.err(field, f"length {int(ln[i])} of row {i} is outside [0, {t_max}]")
        return ln


def _last_nonzero_frame(x: np.ndarray) -> np.ndarray:
    """(N,) last frame with any non-zero feature, plus one (0 for an all-zero sample)."""
    nonzero = np.abs(x).max(axis=2) > 0  # (N, T)
    t = x.shape[1]
    return np.where(nonzero.any(1), t - np.argmax(nonzero[:, ::-1], axis=1), 0).astype(np.int64)


def _read_split(file: str, split: str, d, opts: MMSAOptions) -> tuple[Split, dict, int]:
    if not isinstance(d, dict):
        raise DatasetError(f"expected a dict of fields, got {type(d).__name__}", file=file,
                           split=split)
    r = _Reader(file, split, d, opts)
    text = r.features("text", None)
    n, t_text = text.shape[:2]
    audio, vision = r.features("audio", n), r.features("vision", n)

    tokens, max_id = None, -1
    bert = r.array("text_bert", required=False)
    if bert is not None:
        if bert.ndim != 3 or bert.shape[:2] != (n, 3) or bert.shape[2] != t_text:
            raise r.err("text_bert", f"expected shape ({n}, 3, {t_text}) "
                                     f"(ids, mask, segments), got {bert.shape}")
        ids = r.integers("text_bert", bert[:, 0], (n, t_text))
        mask = r.integers("text_bert", bert[:, 1], (n, t_text))
        if (ids < 0).any() or (ids >= MAX_VOCAB).any():
            raise r.err("text_bert", f"token ids must lie in [0, {MAX_VOCAB})")
        if not np.isin(mask, (0, 1)).all():
            raise r.err("text_bert", "attention mask (row 1) must hold only 0 and 1")
        text_len = mask.sum(1).astype(np.int64)
        max_id = int(ids.max())
        tokens = remap_bert_ids(ids)
        tokens[np.arange(t_text)[None, :] >= text_len[:, None]] = 0
    else:
        text_len = _last_nonzero_frame(text)

    lengths = {"text": text_len}
    for m, x in (("audio", audio), ("vision", vision)):
        ln = r.lengths(f"{m}_lengths", n, x.shape[1])
        if ln is None:
            ln = text_len.copy() if x.shape[1] == t_text else _last_nonzero_frame(x)
        lengths[m] = ln

    y_reg = r.array("regression_labels")
    if y_reg.ndim == 2 and y_reg.shape[1] == 1:
        y_reg = y_reg[:, 0]
    if y_reg.shape != (n,) or y_reg.dtype.kind not in "iuf":
        raise r.err("regression_labels", f"expected ({n},) numbers, got {y_reg.dtype} {y_reg.shape}")
    y_reg = y_reg.astype(np.float32)
    if not np.isfinite(y_reg).all() or (np.abs(y_reg) > 3).any():
        i = int(np.argmax(~np.isfinite(y_reg) | (np.abs(y_reg) > 3)))
        raise r.err("regression_labels", f"row {i} has {y_reg[i]}: scores must be finite "
                                          "and within [-3, 3]")

    y_cls = None
    if opts.task == "classification":
        raw_cls = r.array("classification_labels", required=opts.cls_source == "labels")
        if raw_cls is not None and opts.cls_source != "sign":
            if raw_cls.ndim == 2 and raw_cls.shape[1] == 1:
                raw_cls = raw_cls[:, 0]
            y_cls = r.integers("classification_labels", raw_cls, (n,))
            if (y_cls < 0).any():
                raise r.err("classification_labels", "negative class labels")
        else:
            y_cls = (y_reg >= 0).astype(np.int64)

    raw_ids = r.array("id", required=False)
    if raw_ids is None:
        ids_arr = np.array([f"{split}-{i}" for i in range(n)])
    else:
        if raw_ids.shape != (n,):
            raise r.err("id", f"expected {n} ids, got shape {raw_ids.shape}")
        ids_arr = raw_ids.astype(str)

    split_obj = Split(text=text, audio=audio, vision=vision, lengths=lengths, ids=ids_arr,
                      label_reg=y_reg, label_cls=y_cls, tokens=tokens)
    return split_obj, r.replaced, max_id


def load(path: Path, opts: MMSAOptions) -> Dataset:
    file = str(path)
    if not path_is(path, "file"):
        raise DatasetError("no such file", file=file)
    data = safe_load(path)
    if not isinstance(data, dict):
        raise DatasetError(f"expected a dict of splits, got {type(data).__name__}", file=file)
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise DatasetError(f"missing split(s) {missing} (keys: {sorted(map(str, data))})",
                           file=file, split=missing[0])
    splits, replaced, max_id = {}, {}, -1
    for name in SPLITS:
        splits[name], rep, mid = _read_split(file, name, data[name], opts)
        max_id = max(max_id, mid)
        if rep:
            replaced[name] = rep
    has_tokens = [s.tokens is not None for s in splits.values()]
    if any(has_tokens) and not all(has_tokens):
        bad = next(k for k, s in splits.items() if s.tokens is None)
        raise DatasetError("text_bert is present in some splits but not this one", file=file,
                           split=bad, field="text_bert")
    num_classes, class_names = 0, ()
    if opts.task == "classification":
        top = max(int(s.label_cls.max()) for s in splits.values())
        num_classes = max(2, check_class_count(top, file=file, field="classification_labels"))
        from_sign = opts.cls_source == "sign" or "classification_labels" not in data["train"]
        if from_sign:
            class_names = ("negative", "non-negative")
        elif num_classes == 3:
            class_names = ("negative", "neutral", "positive")  # MMSA's NEG/NEU/POS
        else:
            class_names = tuple(f"class_{k}" for k in range(num_classes))
    shapes = {m: splits["train"].features(m).shape[1] for m in ("text", "audio", "vision")}
    meta = {"format": "mmsa", "nan_policy": opts.nan_policy, "non_finite_replaced": replaced,
            "token_id_mapping": "bert: 1<->100 (UNK), 2<->103 (MASK)" if all(has_tokens) else None}
    return Dataset(
        source=canonical(path, opts), splits=splits, task=opts.task, num_classes=num_classes,
        class_names=class_names,
        vocab_size=max(BERT_VOCAB, max_id + 1) if all(has_tokens) else 0,
        aligned=len(set(shapes.values())) == 1, file=file, meta=meta,
    )
