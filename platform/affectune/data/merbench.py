"""MERBench-style pre-extracted features: per-sample `.npy` files plus a label file.

Source string: `merbench:<dir>[?task=regression&text=bert&audio=wav2vec&vision=manet&...]`.

Directory layout:
    <dir>/label.npz            either MERBench's own label file, as distributed:
        train_corpus, val_corpus, test_corpus
                               pickled dicts {sample name: {"emo": class, "val": valence}}
                               (MER2023: test1_corpus, ... and no val_corpus: name the members
                               to use with the valid_corpus / test_corpus options)
                               or plain arrays (np.load with allow_pickle=False):
        <split>_ids            (N,) str  sample ids, for split in train, valid (or val), test,
                                          and optionally ood
        <split>_emo            (N,) int class index, or str class name  (classification)
        <split>_val            (N,) float valence                       (regression)
        class_names            (C,) str  optional; orders string labels, names int labels
    <dir>/<text>/<id>.npy      (D,) utterance-level or (T, D) frame-level float features
    <dir>/<audio>/<id>.npy     folders relative to <dir>, by default text, audio, vision; MERBench
    <dir>/<vision>/<id>.npy    keeps them under features/<feature name>/ (options name those)

The pickled `*_corpus` members are read by `affectune.data.safe_pickle` (plain dicts, strings
and numbers only: any other global is refused, naming the file and member, before it is
called); every other member and every `.npy` is read with `allow_pickle=False`. Each modality
is zero-padded to its longest sample (utterance-level features count as one frame) and the
true lengths are recorded; `max_frames` truncates longer sequences on request (recorded in
meta). Regression values must lie in [-3, 3] after multiplying by `val_scale` (e.g. 0.6 for a
[-5, 5] valence scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectune import MODALITIES
from affectune.data.options import format_options, path_is, resolve_path_source
from affectune.data.safe_pickle import safe_loads
from affectune.data.schema import Dataset, DatasetError, Split, check_class_count

LABEL_FILE = "label.npz"
CORPUS_SUFFIX = "_corpus"
SPLIT_PREFIXES = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",),
                  "ood": ("ood",)}


@dataclass(frozen=True)
class MERBenchOptions:
    """Options of a `merbench:` source."""

    task: str = "auto"
    """auto (classification if <split>_emo exists, else regression), classification, regression."""
    text: str = "text"
    """Folder of the text features, relative to the directory (e.g. features/Baichuan-13B-Base-UTT)."""
    audio: str = "audio"
    """Folder of the audio features, relative to the directory."""
    vision: str = "vision"
    """Folder of the vision features, relative to the directory."""
    labels: str = LABEL_FILE
    """Label file in the directory (MERBench's IEMOCAP ships label_4way.npz)."""
    valid_corpus: str = "val_corpus"
    """MERBench label files: the pickled member read as the validation split."""
    test_corpus: str = "test_corpus"
    """MERBench label files: the pickled member read as the test split (MER2023: test1_corpus)."""
    val_scale: float = 1.0
    """Multiplies regression values (they must end within [-3, 3])."""
    max_frames: int = 0
    """Truncate frame-level features to this many frames; 0 keeps all."""

    def __post_init__(self):
        if self.task not in ("auto", "classification", "regression"):
            raise DatasetError(f"option task={self.task!r} must be auto, classification or "
                               "regression", field="task")
        for m in MODALITIES:
            folder = getattr(self, m)
            parts = folder.split("/")
            if not folder or folder.startswith("/") or any(
                    not part or part in (".", "..") or "\\" in part for part in parts):
                raise DatasetError(f"option {m}={folder!r} must be a folder inside the dataset "
                                   "directory, e.g. audio or features/wav2vec-large-UTT (no "
                                   "absolute path, no '..')", field=m)
        if not self.labels or Path(self.labels).name != self.labels or self.labels in (".", ".."):
            raise DatasetError(f"option labels={self.labels!r} must be a plain file name",
                               field="labels")
        for key in ("valid_corpus", "test_corpus"):
            if not getattr(self, key).endswith(CORPUS_SUFFIX):
                raise DatasetError(f"option {key}={getattr(self, key)!r} must name a "
                                   f"*{CORPUS_SUFFIX} member of the label file", field=key)
        if not (self.val_scale > 0):
            raise DatasetError(f"option val_scale={self.val_scale} must be > 0", field="val_scale")
        if self.max_frames < 0:
            raise DatasetError(f"option max_frames={self.max_frames} must be >= 0",
                               field="max_frames")


def resolve(target: str, raw: dict[str, str]) -> tuple[Path, MERBenchOptions]:
    return resolve_path_source("merbench", target, raw, MERBenchOptions, example="/data/mer2023")


def canonical(path: Path, opts: MERBenchOptions) -> str:
    return f"merbench:{path}" + format_options(opts)


def _read_labels(root: Path, opts: MERBenchOptions) -> tuple[dict[str, np.ndarray], bool]:
    """(label arrays as <split>_ids/_emo/_val, whether they came from MERBench's *_corpus dicts)."""
    path = root / opts.labels
    file = str(path)
    if not path_is(path, "file"):
        raise DatasetError(f"no {opts.labels} (expected MERBench's train_corpus/val_corpus/"
                           "test_corpus dicts or arrays <split>_ids, <split>_emo, <split>_val)",
                           file=file)
    with path.open("rb") as fh:  # ours to close: np.load leaks its own handle on a bad zip
        try:
            npz = np.load(fh, allow_pickle=False)
        except Exception as e:  # corrupt or truncated data of any kind (zip, header, pickle)
            raise DatasetError(f"not a readable .npz ({type(e).__name__}: {e})",
                               file=file) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DatasetError("is a single array, not an .npz archive of named arrays",
                               file=file)
        with npz:
            if f"train{CORPUS_SUFFIX}" in npz.files:
                return _corpus_arrays(npz, opts, file), True
            return {key: _read_label_array(npz, key, file) for key in npz.files}, False


def _corpus_arrays(npz, opts: MERBenchOptions, file: str) -> dict[str, np.ndarray]:
    """MERBench's pickled {sample: {"emo", "val"}} members as <split>_ids/_emo/_val arrays."""
    members = {"train": f"train{CORPUS_SUFFIX}", "valid": opts.valid_corpus, "test": opts.test_corpus}
    have = sorted(k for k in npz.files if k.endswith(CORPUS_SUFFIX))
    arrays = {}
    for split, key in members.items():
        if key not in npz.files:
            option = {"valid": "valid_corpus", "test": "test_corpus"}.get(split)
            hint = f"; name the member to use with the option {option}=" if option else ""
            raise DatasetError(f"no member {key} for the {split} split (have {have}){hint}",
                               file=file, split=split, field=key)
        corpus = _read_corpus(npz, key, file)
        arrays[f"{split}_ids"] = np.array(list(corpus), dtype=str)
        for what in ("emo", "val"):
            values = _corpus_values(corpus, what, file, split, key)
            if values is not None:
                arrays[f"{split}_{what}"] = values
    return arrays


def _read_corpus(npz, key: str, file: str) -> dict:
    """One pickled member through the safe unpickler: a dict {sample name: dict}."""
    try:
        with npz.zip.open(key + ".npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(member)
            payload = member.read()
    except Exception as e:  # a damaged member: CRC, zlib, header, truncated data
        raise DatasetError(f"not a readable array ({type(e).__name__}: {e})", file=file,
                           field=key) from None
    if not dtype.hasobject:
        raise DatasetError(f"expected a pickled dict {{sample name: {{'emo', 'val'}}}}, got a "
                           f"plain {dtype} array", file=file, field=key)
    try:
        value = safe_loads(payload, name=file)
    except DatasetError as e:
        raise DatasetError(e.problem, file=file, field=key) from None
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.hasobject:
        value = value.item()  # np.savez wraps the dict in a 0-d object array
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"expected a non-empty dict {{sample name: {{'emo', 'val'}}}}, got "
                           f"{type(value).__name__}", file=file, field=key)
    for name, entry in value.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise DatasetError(f"entry {name!r}: expected a sample name (str) mapping to a dict, "
                               f"got {type(name).__name__} -> {type(entry).__name__}", file=file,
                               field=key)
    return value


def _corpus_values(corpus: dict, what: str, file: str, split: str, key: str) -> np.ndarray | None:
    """The `what` ("emo" or "val") of every sample as an array; None if no sample has it."""
    present = [name for name, entry in corpus.items() if what in entry]
    if not present:
        return None
    if len(present) != len(corpus):
        name = next(n for n, entry in corpus.items() if what not in entry)
        raise DatasetError(f"sample {name!r} has no {what!r} while others do", file=file,
                           split=split, field=key)
    values = [entry[what] for entry in corpus.values()]
    allowed = ("str", "int") if what == "emo" else ("int", "float")
    first = _label_kind(values[0])
    for name, value in zip(corpus, values):
        kind = _label_kind(value)
        if kind not in allowed or (what == "emo" and kind != first):
            expected = ("class names (str) or class indices (int), all of one kind" if what == "emo"
                        else "finite numbers")
            raise DatasetError(f"{what!r} of sample {name!r} is {value!r}: expected {expected}",
                               file=file, split=split, field=key)
    if first == "str":
        return np.array(values, dtype=str)
    return np.array(values, dtype=np.int64 if what == "emo" else np.float64)


def _label_kind(value) -> str:
    """"str", "int", "float" or "other" (bools and non-finite numbers are "other")."""
    if isinstance(value, (str, np.str_)):
        return "str"
    if isinstance(value, (bool, np.bool_)):
        return "other"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return "float"
    return "other"


def _read_label_array(npz, key: str, file: str) -> np.ndarray:
    """One member of label.npz; a pickled or corrupt member names its key."""
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DatasetError("holds pickled objects, which are refused outside MERBench's "
                               "train_corpus/val_corpus/test_corpus dicts; store plain arrays "
                               "<split>_ids, <split>_emo, <split>_val instead", file=file,
                               field=key) from None
        raise DatasetError(f"not a readable array ({e})", file=file, field=key) from None
    except Exception as e:  # a damaged member: CRC, zlib, truncated data
        raise DatasetError(f"not a readable array ({type(e).__name__}: {e})", file=file,
                           field=key) from None


def _split_key(labels: dict, split: str, what: str) -> str | None:
    for prefix in SPLIT_PREFIXES[split]:
        if f"{prefix}_{what}" in labels:
            return f"{prefix}_{what}"
    return None


def _read_feature(path: Path, split: str, modality: str, dim: int | None) -> np.ndarray:
    err = lambda problem: DatasetError(problem, file=str(path), split=split, field=modality)  # noqa: E731
    if not path_is(path, "file"):
        raise err("missing feature file")
    try:  # memory-mapped first, so a header claiming more data than the file holds fails here
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        x = np.array(x) if isinstance(x, np.ndarray) else x
    except Exception as e:  # corrupt or truncated data of any kind
        raise err(f"not a plain numeric .npy ({type(e).__name__}: {e})") from None
    if not isinstance(x, np.ndarray) or x.ndim not in (1, 2) or not (
            np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise err(f"expected a numeric (D,) or (T, D) array, got {getattr(x, 'dtype', '?')} "
                  f"{getattr(x, 'shape', '?')}")
    x = x.reshape(1, -1) if x.ndim == 1 else x
    if x.shape[1] == 0:
        raise err(f"has no features (shape {x.shape})")
    if dim is not None and x.shape[1] != dim:
        raise err(f"feature size {x.shape[1]} differs from the other samples' {dim}")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)  # values beyond float32's range become inf: refused below
    if not np.isfinite(x).all():
        raise err("contains NaN or inf (or values beyond float32's range)")
    return x


def _check_ids(ids: np.ndarray, file: str, split: str, key: str) -> np.ndarray:
    if ids.ndim != 1 or ids.dtype.kind not in "US":
        raise DatasetError(f"expected a 1-d string array, got {ids.dtype} {ids.shape}", file=file,
                           split=split, field=key)
    ids = ids.astype(str)
    for i in ids:
        if not i or Path(i).name != i or i in (".", ".."):
            raise DatasetError(f"sample id {i!r} is not a plain file name", file=file,
                               split=split, field=key)
    return ids


def _class_names(labels: dict, file: str) -> tuple[str, ...]:
    if "class_names" not in labels:
        return ()
    names = labels["class_names"]
    if names.ndim != 1 or names.dtype.kind not in "US" or len(set(names.tolist())) != len(names):
        raise DatasetError(f"expected a 1-d array of distinct strings, got {names.dtype} "
                           f"{names.shape}", file=file, field="class_names")
    return tuple(names.astype(str))


def _auto_task(labels: dict, from_corpus: bool) -> str:
    """Classification when there are classes: an <split>_emo array, or, in MERBench's corpus
    dicts (which always hold both keys), train 'emo' values that are not all one placeholder
    (CMU-MOSI/MOSEI and SIMS write 'emo': 0 for every sample)."""
    emo = labels.get("train_emo")
    if emo is None:
        return "regression"
    return "classification" if not from_corpus or len(np.unique(emo)) > 1 else "regression"


def load(root: Path, opts: MERBenchOptions) -> Dataset:
    if not path_is(root, "dir"):
        raise DatasetError("no such directory", file=str(root))
    labels, from_corpus = _read_labels(root, opts)
    label_file = str(root / opts.labels)
    class_names = _class_names(labels, label_file)
    task = opts.task if opts.task != "auto" else _auto_task(labels, from_corpus)
    label_kind = "emo" if task == "classification" else "val"

    names = [s for s in SPLIT_PREFIXES if _split_key(labels, s, "ids") is not None]
    for required in ("train", "valid", "test"):
        if required not in names:
            raise DatasetError(f"no array {required}_ids (have {sorted(labels)})",
                               file=label_file, split=required)

    # Labels per split; string classes are named by class_names or sorted over all splits.
    raw_y = {}
    for s in names:
        key = _split_key(labels, s, label_kind)
        if key is None:
            what = f"{label_kind!r} in its corpus dict" if from_corpus else f"array {s}_{label_kind}"
            raise DatasetError(f"no {what} for task {task}", file=label_file, split=s)
        raw_y[s] = labels[key]
    if task == "classification" and any(y.dtype.kind in "US" for y in raw_y.values()):
        if not class_names:
            class_names = tuple(sorted({str(v) for y in raw_y.values() for v in y}))

    splits, truncated, frame_counts = {}, {}, {}
    feats_by_split = {}
    dims: dict[str, int | None] = {m: None for m in MODALITIES}
    for s in names:
        ids_key = _split_key(labels, s, "ids")
        ids = _check_ids(labels[ids_key], label_file, s, ids_key)
        feats = {}
        for m in MODALITIES:
            seqs = []
            for i in ids:
                x = _read_feature(root / getattr(opts, m) / f"{i}.npy", s, m, dims[m])
                dims[m] = x.shape[1]
                if opts.max_frames and x.shape[0] > opts.max_frames:
                    truncated[m] = truncated.get(m, 0) + 1
                    x = x[:opts.max_frames]
                seqs.append(x)
            feats[m] = seqs
            frame_counts[m] = max(frame_counts.get(m, 0), max(len(x) for x in seqs))
        feats_by_split[s] = (ids, feats)

    for s, (ids, feats) in feats_by_split.items():
        n = len(ids)
        arrays, lengths = {}, {}
        for m in MODALITIES:
            out = np.zeros((n, frame_counts[m], dims[m]), np.float32)  # (N, T_m, D_m)
            for row, x in enumerate(feats[m]):
                out[row, :len(x)] = x
            arrays[m] = out
            lengths[m] = np.array([len(x) for x in feats[m]], np.int64)
        y = raw_y[s]
        field = f"{_split_key(labels, s, label_kind)}"
        if y.shape != (n,):
            raise DatasetError(f"expected {n} labels, got shape {y.shape}", file=label_file,
                               split=s, field=field)
        label_reg = label_cls = None
        if task == "classification":
            if y.dtype.kind in "US":
                unknown = sorted(set(y.astype(str)) - set(class_names))
                if unknown:
                    raise DatasetError(f"labels {unknown} are not in class_names {class_names}",
                                       file=label_file, split=s, field=field)
                lookup = {c: k for k, c in enumerate(class_names)}
                label_cls = np.array([lookup[v] for v in y.astype(str)], np.int64)
            elif np.issubdtype(y.dtype, np.integer):
                label_cls = y.astype(np.int64)
            else:
                raise DatasetError(f"expected integer or string classes, got {y.dtype}",
                                   file=label_file, split=s, field=field)
        else:
            if not np.issubdtype(y.dtype, np.number):
                raise DatasetError(f"expected numbers, got {y.dtype}", file=label_file, split=s,
                                   field=field)
            label_reg = (y.astype(np.float64) * opts.val_scale).astype(np.float32)
        splits[s] = Split(text=arrays["text"], audio=arrays["audio"], vision=arrays["vision"],
                          lengths=lengths, ids=ids, label_reg=label_reg, label_cls=label_cls)

    num_classes = 0
    if task == "classification":
        num_classes = len(class_names) or check_class_count(
            max(int(sp.label_cls.max()) for sp in splits.values()), file=label_file,
            field=_split_key(labels, "train", "emo"))
        class_names = class_names or tuple(f"class_{k}" for k in range(num_classes))
    return Dataset(
        source=canonical(root, opts), splits=splits, task=task, num_classes=num_classes,
        class_names=class_names, vocab_size=0,
        aligned=all(frame_counts[m] == 1 for m in MODALITIES), file=label_file,
        meta={"format": "merbench", "folders": {m: getattr(opts, m) for m in MODALITIES},
              "labels": "corpus dicts" if from_corpus else "arrays",
              "truncated_samples": truncated, "max_frames": opts.max_frames},
    )
