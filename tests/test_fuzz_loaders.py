"""Fuzzing the dataset loaders: mutated MMSA pickles, MERBench files and source strings.

Every case starts from a tiny valid input, applies random mutations (truncation, flipped
bytes, wrong dtypes, NaN/inf, wrong shapes, lengths beyond T, labels out of range, refused
pickle globals, odd source strings) and asserts the only outcomes are a validated `Dataset`
or a `DatasetError` that names the file (and, for a mutated field, the split or field).
Any other exception, a numpy warning (a silent overflowing cast), a case running longer than
`HANG_S`, or a marker file written by an injected global fails the test.

CI runs `FUZZ_EXAMPLES` (500) cases per loader, derandomized (a fixed seed derived from the
test), in a few seconds each. A longer, freshly random run for developers:

    AFFECTUNE_FUZZ_EXAMPLES=20000 AFFECTUNE_FUZZ_SEED=random \
        .venv/bin/python -m pytest tests/test_fuzz_loaders.py -q

(`AFFECTUNE_FUZZ_SEED=<int>` replays one random run; hypothesis prints the failing input.)
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import subprocess
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Verbosity, event, given, seed, settings
from hypothesis import strategies as st

from affectune.data import DatasetError, canonical_source, load
from affectune.data.schema import Dataset, validate

FUZZ_EXAMPLES = int(os.environ.get("AFFECTUNE_FUZZ_EXAMPLES", "500"))
_SEED = os.environ.get("AFFECTUNE_FUZZ_SEED", "")
HANG_S = 10.0
"""A single load taking longer than this counts as a hang."""


def fuzz(test):
    """The fuzz settings: FUZZ_EXAMPLES cases, a fixed seed unless AFFECTUNE_FUZZ_SEED is set."""
    test = settings(max_examples=FUZZ_EXAMPLES, derandomize=not _SEED, deadline=None,
                    database=None, print_blob=True, verbosity=Verbosity.quiet,
                    suppress_health_check=list(HealthCheck))(test)
    if _SEED and _SEED != "random":
        test = seed(int(_SEED))(test)
    return test


class Hang(BaseException):
    """Raised by the alarm; a BaseException so no loader's `except Exception` can swallow it."""


@contextlib.contextmanager
def no_hang(limit_s: float = HANG_S):
    def _alarm(signum, frame):
        raise Hang(f"a load ran longer than {limit_s} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(source: str, *, files: tuple[str, ...], named: bool) -> str:
    """Load `source`; a Dataset must validate, a DatasetError must name one of `files`
    (and a split or field when `named`). Anything else propagates and fails the test."""
    try:
        with no_hang(), warnings.catch_warnings():
            warnings.simplefilter("error")  # a silent coercion (overflowing cast) is a failure
            ds = load(source)
    except DatasetError as e:
        assert e.file and e.file.startswith(files), f"error names {e.file!r}, not {files}: {e}"
        if named:
            assert e.split or e.field, f"error names no split or field: {e}"
        event(f"DatasetError field={e.field}")
        return "error"
    assert isinstance(ds, Dataset)
    validate(ds)
    event("loaded")
    return "loaded"


# --- mutations shared by both formats --------------------------------------------------------
ODD_VALUES = [np.nan, np.inf, -np.inf, -1, 0, 0.5, 3.5, -7, 9, 1e12, 5e9, 1e30, -1e30, 1e300,
              2.0 ** 63, 10 ** 6]
DTYPES = ["int8", "uint8", "int64", "float16", "float64", "bool", "complex64", "U3", "S2",
          "O", "datetime64[s]"]


@st.composite
def mutated_array(draw, x):
    """`x` (an ndarray, list or scalar) with one structural or value mutation."""
    try:
        x = np.asarray(x)
    except ValueError:  # already ragged: replace it outright
        return draw(st.sampled_from([None, 0, "text"]))
    kind = draw(st.sampled_from(["value", "dtype", "shape", "replace"]))
    event(f"array mutation {kind}")
    if kind == "value" and x.size:
        y = x.astype(np.float64) if x.dtype.kind in "biuf" else x.copy()
        idx = draw(st.integers(0, x.size - 1))
        value = draw(st.sampled_from(ODD_VALUES))
        y.reshape(-1)[idx] = value if y.dtype.kind == "f" else str(value)
        return y
    if kind == "dtype":
        with np.errstate(all="ignore"):
            try:
                return x.astype(draw(st.sampled_from(DTYPES)))
            except (ValueError, TypeError, OverflowError):
                return x
    if kind == "shape":
        how = draw(st.sampled_from(["drop_row", "add_axis", "flatten", "transpose", "empty",
                                    "zero_T", "add_rows"]))
        if how == "drop_row" and x.ndim:
            return x[1:]
        if how == "add_axis":
            return x[..., None]
        if how == "flatten":
            return x.reshape(-1)
        if how == "transpose":
            return x.T
        if how == "empty" and x.ndim:
            return x[:0]
        if how == "zero_T" and x.ndim >= 2:
            return x[:, :0]
        if how == "add_rows" and x.ndim:
            return np.concatenate([x, x[:1]])
        return x
    return draw(st.sampled_from([None, 0, 1.5, "text", b"\x00", [1, [2, 3]], {"a": 1}, (),
                                 np.float32(np.nan), np.array(5)]))


# --- MMSA pickles ----------------------------------------------------------------------------
MMSA_FIELDS = ["text", "audio", "vision", "text_bert", "audio_lengths", "vision_lengths",
               "regression_labels", "classification_labels", "id", "raw_text"]


def tiny_mmsa(rng: np.random.Generator) -> dict:
    """A valid MMSA dict: 2 samples per split, 4 text frames, unaligned audio/vision."""
    data = {}
    for split in ("train", "valid", "test"):
        n, t = 2, 4
        mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float64)
        ids = np.array([[101, 7, 102, 0], [101, 102, 0, 0]], np.float64)
        data[split] = {
            "text": rng.standard_normal((n, t, 3)) * mask[:, :, None],
            "text_bert": np.stack([ids, mask, np.zeros_like(mask)], axis=1),
            "audio": rng.standard_normal((n, 5, 2)).astype(np.float32),
            "vision": rng.standard_normal((n, 3, 2)),
            "audio_lengths": [5, 3],
            "vision_lengths": np.array([3, 1]),
            "regression_labels": np.array([[-1.5], [2.0]]),
            "classification_labels": np.array([0.0, 2.0]),
            "id": [f"{split}$_$0", f"{split}$_$1"],
            "raw_text": ["a", "b"],
        }
    return data


class _Global:
    """Pickles as a call of `module.name(*args)`: an injected global the loader must refuse."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _injected_globals(marker: str) -> list:
    import builtins
    import posix
    return [_Global(os.system, (f"touch {marker}",)), _Global(posix.system, (f"touch {marker}",)),
            _Global(builtins.exec, (f"open({marker!r}, 'w').close()",)),
            _Global(subprocess.call, (["touch", marker],)),
            _Global(builtins.__import__, ("os",)), _Global(np.load, (marker,)),
            _Global(np.array, ([1.0],))]  # numpy, but not an allow-listed rebuild function


@st.composite
def mmsa_bytes(draw, marker: str):
    """Pickle bytes of a mutated MMSA dict, possibly truncated or with flipped bytes."""
    data = tiny_mmsa(np.random.default_rng(draw(st.integers(0, 3))))
    injected = False  # a refused global stops unpickling before any field is known
    for _ in range(draw(st.integers(0, 3))):
        split = draw(st.sampled_from(["train", "valid", "test"]))
        target = draw(st.sampled_from(MMSA_FIELDS + ["<split>", "<key>", "<global>"]))
        if target == "<split>":
            data[split] = draw(st.sampled_from([None, [], "x", {"text": 1}]))
            continue
        if not isinstance(data.get(split), dict):
            continue
        if target == "<key>":  # a non-string key next to the named fields
            data[split][draw(st.sampled_from([1, None, (1, 2), b"k"]))] = 0
        elif target == "<global>":
            field = draw(st.sampled_from(MMSA_FIELDS))
            data[split][field] = draw(st.sampled_from(_injected_globals(marker)))
            injected = True
        elif target in data[split] and draw(st.booleans()):
            data[split][target] = draw(mutated_array(data[split][target]))
        else:
            data[split].pop(target, None)
    blob = pickle.dumps(data, protocol=draw(st.integers(0, pickle.HIGHEST_PROTOCOL)))
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    event(f"bytes {damage}")
    if damage == "truncate":
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
    elif damage == "flip":
        at = draw(st.integers(0, len(blob) - 1))
        blob = blob[:at] + bytes([blob[at] ^ draw(st.integers(1, 255))]) + blob[at + 1:]
    return blob, damage == "none" and not injected


MMSA_OPTIONS = ["", "?task=classification", "?task=classification&cls_source=sign",
                "?task=classification&cls_source=labels", "?nan_policy=zero",
                "?task=classification&nan_policy=zero"]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_unmutated_mmsa_fixture_loads(fuzz_dir):
    path = fuzz_dir / "valid.pkl"
    path.write_bytes(pickle.dumps(tiny_mmsa(np.random.default_rng(0))))
    for opts in MMSA_OPTIONS:
        assert isinstance(load(f"mmsa:{path}{opts}"), Dataset)


@fuzz
@given(data=st.data())
def test_fuzz_mmsa_pickles(fuzz_dir, data):
    path, marker = fuzz_dir / "aligned_50.pkl", fuzz_dir / "pwned"
    blob, named = data.draw(mmsa_bytes(str(marker)))
    path.write_bytes(blob)
    opts = data.draw(st.sampled_from(MMSA_OPTIONS))
    outcome(f"mmsa:{path}{opts}", files=(str(path),), named=named)
    assert not marker.exists(), "an injected pickle global was executed"


# --- MERBench feature directories ------------------------------------------------------------
MER_SPLITS = {"train": 2, "val": 1, "test": 1}


def write_tiny_merbench(root, rng: np.random.Generator) -> dict:
    """A valid MERBench directory; returns {relative path: array} of everything written."""
    classes = np.array(["neu", "hap", "sad"])
    files = {}
    labels = {"class_names": classes}
    for split, n in MER_SPLITS.items():
        ids = np.array([f"{split}_{i}" for i in range(n)])
        labels[f"{split}_ids"] = ids
        labels[f"{split}_emo"] = classes[np.arange(n) % 3]
        labels[f"{split}_val"] = np.linspace(-2, 2, n)
        for i, sample in enumerate(ids):
            files[f"text/{sample}.npy"] = rng.standard_normal(3)
            files[f"audio/{sample}.npy"] = rng.standard_normal((2 + i, 2)).astype(np.float32)
            files[f"vision/{sample}.npy"] = rng.standard_normal((2, 2))
    for m in ("text", "audio", "vision"):
        (root / m).mkdir(parents=True, exist_ok=True)
    for rel, x in files.items():
        np.save(root / rel, x)
    np.savez(root / "label.npz", **labels)
    return {"label.npz": labels, **files}


def _npy_claiming(x: np.ndarray, rows: int) -> bytes:
    """A .npy whose header claims `rows` rows but whose data is `x`'s (a lying header)."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False,
              "shape": (rows, *x.shape[1:])}
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(np.ascontiguousarray(x).tobytes())
    return buf.getvalue()


@st.composite
def merbench_mutation(draw, root, files: dict):
    """Apply 1-3 mutations to the directory at `root`; returns whether each named a field."""
    named = True
    for _ in range(draw(st.integers(1, 3))):
        rel = draw(st.sampled_from(sorted(files)))
        path = root / rel
        if not path.exists():
            continue  # deleted by an earlier mutation
        kind = draw(st.sampled_from(["array", "array", "truncate", "flip", "delete", "lying_header",
                                     "pickle", "swap_format"]))
        event(f"merbench {kind}")
        if kind == "array" and rel == "label.npz":
            labels = dict(files[rel])
            key = draw(st.sampled_from(sorted(labels)))
            if draw(st.booleans()):
                labels[key] = draw(mutated_array(labels[key]))
            else:
                labels.pop(key)
            try:
                np.savez(path, **{k: np.asarray(v) for k, v in labels.items()})
            except (ValueError, TypeError):
                continue  # a ragged object numpy cannot even make an array of
        elif kind == "array":
            try:
                np.save(path, np.asarray(draw(mutated_array(files[rel]))))
            except (ValueError, TypeError):
                continue  # a ragged object numpy cannot even make an array of
        elif kind in ("truncate", "flip"):
            blob = path.read_bytes()
            if not blob:
                continue
            at = draw(st.integers(0, len(blob) - 1))
            if kind == "truncate":
                blob = blob[:at]
            else:
                blob = blob[:at] + bytes([blob[at] ^ draw(st.integers(1, 255))]) + blob[at + 1:]
            path.write_bytes(blob)
            named = False
        elif kind == "delete":
            path.unlink()
            named = named and rel != "label.npz"  # a missing label file has no field to name
        elif kind == "lying_header" and rel != "label.npz":
            x = np.atleast_1d(files[rel])
            rows = draw(st.sampled_from([0, len(x) + 1, 10 ** 6, 2 ** 40]))
            path.write_bytes(_npy_claiming(x, rows))
            named = False
        elif kind == "pickle":
            path.write_bytes(pickle.dumps(_Global(os.system, (f"touch {root / 'pwned'}",))))
            named = False
        elif kind == "swap_format":  # a .npy where the .npz belongs, or the other way round
            other = io.BytesIO()
            if rel == "label.npz":
                np.save(other, np.zeros(3))
            else:
                np.savez(other, x=np.zeros(3))
            path.write_bytes(other.getvalue())
            named = False
    return named


MER_OPTIONS = ["", "?task=regression", "?task=classification", "?max_frames=1",
               "?task=regression&val_scale=2.0"]


def test_unmutated_merbench_fixture_loads(fuzz_dir):
    root = fuzz_dir / "merbench-valid"
    write_tiny_merbench(root, np.random.default_rng(0))
    for opts in MER_OPTIONS[:4]:
        assert isinstance(load(f"merbench:{root}{opts}"), Dataset)


@pytest.fixture(scope="module")
def merbench_dir(fuzz_dir):
    """A valid directory written once, its files, and their bytes to restore after each case."""
    root = fuzz_dir / "merbench"
    files = write_tiny_merbench(root, np.random.default_rng(0))
    return root, files, {rel: (root / rel).read_bytes() for rel in files}


@fuzz
@given(data=st.data())
def test_fuzz_merbench_directories(merbench_dir, data):
    root, files, pristine = merbench_dir
    try:
        named = data.draw(merbench_mutation(root, files))
        opts = data.draw(st.sampled_from(MER_OPTIONS))
        outcome(f"merbench:{root}{opts}", files=(str(root),), named=named)
        assert not (root / "pwned").exists(), "an injected pickle global was executed"
    finally:  # restore only what differs: rewriting every file per case is the slow part
        for rel, blob in pristine.items():
            path = root / rel
            if not path.is_file() or path.stat().st_size != len(blob) or path.read_bytes() != blob:
                path.write_bytes(blob)


# --- source strings --------------------------------------------------------------------------
OPTION_KEYS = ["task", "nan_policy", "cls_source", "text", "audio", "vision", "val_scale",
               "max_frames", "seed", "scale", "aligned", "ood", "text_len", "vocab_size",
               "sarcasm", "bogus", ""]
OPTION_VALUES = ["", "0", "1", "-1", "2", "1e400", "nan", "inf", "-inf", "0x10", "1_0", " 3 ",
                 "regression", "classification", "zero", "sign", "..", "../x", "a/b", "%00",
                 "%2F", "é", "\x00", "9" * 40, "true", "yes"]
SCHEMES = ["synthetic", "mmsa", "merbench", "MMSA", " merbench ", "", "http", "file", "s3"]
TEXT = st.text(alphabet=st.sampled_from(list("ab:/?&=%.~ \x00é-_9")), max_size=12)


@st.composite
def source_strings(draw, targets: list[str]):
    scheme = draw(st.one_of(st.sampled_from(SCHEMES), TEXT))
    target = draw(st.one_of(st.sampled_from(targets), TEXT))
    pairs = draw(st.lists(st.tuples(st.one_of(st.sampled_from(OPTION_KEYS), TEXT),
                                    st.one_of(st.sampled_from(OPTION_VALUES), TEXT)), max_size=3))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    sep = draw(st.sampled_from([":", ":", "", "::", ": "]))
    return f"{scheme}{sep}{target}" + (f"?{query}" if pairs or draw(st.booleans()) else "")


def test_fuzz_source_strings(fuzz_dir):
    mmsa_file = fuzz_dir / "src.pkl"
    mmsa_file.write_bytes(pickle.dumps(tiny_mmsa(np.random.default_rng(1))))
    mer_root = fuzz_dir / "src-merbench"
    write_tiny_merbench(mer_root, np.random.default_rng(1))
    targets = ["mosi", "mosei", "iemocap", "meld", "nope", str(mmsa_file), str(mer_root),
               str(fuzz_dir / "absent"), "~no_such_user_xyz/a.pkl", "~", f"{mmsa_file}\x00x",
               "a" * 5000, "/" + "d/" * 3000]

    @fuzz
    @given(source=source_strings(targets))
    def check(source):
        try:
            with no_hang():
                canon = canonical_source(source)
        except DatasetError as e:
            assert e.file or e.field, f"error names neither file nor field: {e}"
            event(f"source error field={e.field}")
            return
        assert isinstance(canon, str)
        assert canonical_source(canon) == canon  # canonical strings are fixed points
        if not canon.startswith("synthetic:"):  # synthetic loads are covered by their tests
            outcome(source, files=(canon.split(":", 1)[1].split("?")[0],), named=False)

    check()


# --- regression tests: one per bug the fuzzer found --------------------------------------
def _mmsa_error(fuzz_dir, edit, opts="") -> DatasetError:
    data = tiny_mmsa(np.random.default_rng(0))
    for split in data.values():
        edit(split)
    path = fuzz_dir / "regression.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DatasetError) as info, warnings.catch_warnings():
        warnings.simplefilter("error")
        load(f"mmsa:{path}{opts}")
    assert info.value.file == str(path)
    return info.value


def test_mmsa_missing_field_next_to_a_non_string_key(fuzz_dir):
    # was TypeError: '<' not supported between 'int' and 'str' while listing the keys
    e = _mmsa_error(fuzz_dir, lambda s: (s.pop("text"), s.__setitem__(1, 0)))
    assert e.field == "text" and "missing (keys: ['1', 'audio'" in str(e)


@pytest.mark.parametrize("field, cut", [("text", np.s_[:, :0]), ("audio", np.s_[:, :, :0]),
                                         ("vision", np.s_[:0])])
def test_mmsa_empty_axes_are_refused(fuzz_dir, field, cut):
    # was ValueError: argmax / max of an empty sequence (no frames, no features, no rows)
    def edit(s):
        s.pop("text_bert"), s.pop("audio_lengths"), s.pop("vision_lengths")
        s[field] = s[field][cut]
    e = _mmsa_error(fuzz_dir, edit)
    assert (e.split, e.field) == ("train", field) and "empty axis" in str(e)


@pytest.mark.parametrize("field, value, words", [
    ("classification_labels", 1e12, "more than 1000 classes"),  # was: a 1e12-name tuple (hang)
    ("classification_labels", 1e19, "far too large"),  # was: an overflowing cast to int64
    ("audio_lengths", 1e20, "far too large"),
    ("audio_lengths", np.float16(6e4), "outside [0, 5]"),  # was: float16 overflow comparing to 2**62
])
def test_mmsa_huge_integers_are_refused(fuzz_dir, field, value, words):
    e = _mmsa_error(fuzz_dir, lambda s: s.__setitem__(field, np.array([0, value], type(value))),
                    "?task=classification")
    assert e.field == field and words in str(e)


def test_mmsa_token_ids_beyond_any_vocabulary_are_refused(fuzz_dir):
    # was: loaded with vocab_size 5e9 + 1, an embedding table nobody can allocate
    e = _mmsa_error(fuzz_dir, lambda s: s["text_bert"].__setitem__((0, 0, 1), 5e9))
    assert e.field == "text_bert" and "[0, 1000000)" in str(e)


def test_mmsa_complex_labels_are_refused(fuzz_dir):
    # was: the imaginary part silently dropped (ComplexWarning)
    e = _mmsa_error(fuzz_dir, lambda s: s.__setitem__("regression_labels", np.array([1 + 2j, 0])))
    assert e.field == "regression_labels" and "complex" in str(e)


def test_mmsa_values_beyond_float32_are_refused_even_with_nan_policy_zero(fuzz_dir):
    # was: 1e300 cast to inf, then silently zeroed by nan_policy=zero
    e = _mmsa_error(fuzz_dir, lambda s: s["text"].__setitem__((0, 0, 0), 1e300),
                    "?nan_policy=zero")
    assert e.field == "text" and "float32's range" in str(e)


def _merbench_error(tmp_path, edit) -> DatasetError:
    files = write_tiny_merbench(tmp_path, np.random.default_rng(0))
    edit(tmp_path, files)
    with pytest.raises(DatasetError) as info, warnings.catch_warnings():
        warnings.simplefilter("error")
        load(f"merbench:{tmp_path}")
    return info.value


def test_merbench_label_file_that_is_a_single_array(tmp_path):
    # was TypeError: 'numpy.ndarray' object does not support the context manager protocol
    def edit(root, files):
        with open(root / "label.npz", "wb") as fh:
            np.save(fh, np.zeros(3))
    e = _merbench_error(tmp_path, edit)
    assert e.file == str(tmp_path / "label.npz") and "single array" in str(e)


def test_merbench_truncated_label_file(tmp_path):
    # was EOFError / BadZipFile escaping from the lazy member read
    def edit(root, files):
        blob = (root / "label.npz").read_bytes()
        (root / "label.npz").write_bytes(blob[:len(blob) // 2])
    e = _merbench_error(tmp_path, edit)
    assert e.file == str(tmp_path / "label.npz") and "not a readable" in str(e)


def test_merbench_pickled_label_member_names_its_key(tmp_path):
    def edit(root, files):
        labels = dict(files["label.npz"], train_val=np.array([1.0, None], dtype=object))
        np.savez(root / "label.npz", **labels)
    e = _merbench_error(tmp_path, edit)
    assert e.field == "train_val" and "pickled objects" in str(e)


@pytest.mark.parametrize("names", [np.array("neu"), np.array([["a", "b"]]),
                                   np.array(["a", "a", "b"]), np.array([1, 2, 3])])
def test_merbench_bad_class_names(tmp_path, names):
    # was TypeError: iteration over a 0-d array / unhashable ndarray in a set
    def edit(root, files):
        np.savez(root / "label.npz", **dict(files["label.npz"], class_names=names))
    e = _merbench_error(tmp_path, edit)
    assert e.field == "class_names" and "distinct strings" in str(e)


@pytest.mark.parametrize("damage", ["truncated", "lying_header"])
def test_merbench_damaged_feature_file(tmp_path, damage):
    # was EOFError from a truncated header; a header claiming 2**40 rows is refused without
    # allocating them (the file is memory-mapped first)
    def edit(root, files):
        x = files["audio/val_0.npy"]
        blob = (root / "audio/val_0.npy").read_bytes()
        (root / "audio/val_0.npy").write_bytes(
            blob[:20] if damage == "truncated" else _npy_claiming(x, 2 ** 40))
    e = _merbench_error(tmp_path, edit)
    assert (e.file, e.split, e.field) == (str(tmp_path / "audio/val_0.npy"), "valid", "audio")
    assert "not a plain numeric .npy" in str(e)


@pytest.mark.parametrize("x, words", [(np.zeros(0), "no features"),
                                      (np.full(3, 1e300), "float32's range")])
def test_merbench_empty_or_overflowing_features(tmp_path, x, words):
    # was: a dataset with feature size 0; an overflowing cast to float32 (RuntimeWarning)
    e = _merbench_error(tmp_path, lambda root, f: np.save(root / "text/test_0.npy", x))
    assert (e.split, e.field) == ("test", "text") and words in str(e)


def test_merbench_integer_labels_implying_huge_class_count(tmp_path):
    def edit(root, files):
        labels = {k: v for k, v in files["label.npz"].items() if k != "class_names"}
        labels.update(train_emo=np.array([0, 10 ** 12]), val_emo=np.array([1]),
                      test_emo=np.array([0]))
        np.savez(root / "label.npz", **labels)
    e = _merbench_error(tmp_path, edit)
    assert e.field == "train_emo" and "more than 1000 classes" in str(e)


@pytest.mark.parametrize("target, words", [("/tmp/a\x00b.pkl", "null byte"),
                                           ("~no_such_user_xyz/a.pkl", "not usable")])
def test_source_paths_the_os_cannot_use(target, words):
    # was ValueError (embedded null byte) / RuntimeError (unknown ~user) from Path.resolve
    with pytest.raises(DatasetError, match=words) as info:
        canonical_source(f"mmsa:{target}")
    assert info.value.field == "source"


def test_source_path_too_long_for_the_os(tmp_path):
    # was OSError (File name too long) from Path.is_file
    path = tmp_path / ("a" * 5000)
    with pytest.raises(DatasetError, match="cannot access") as info:
        load(f"mmsa:{path}")
    assert info.value.file == str(path)


@pytest.mark.parametrize("index", [0x00100000, 0x40000000, 0xFFFFFFFF])
def test_damaged_memo_index_is_refused_before_allocating(fuzz_dir, index):
    # was: a hang / gigabytes of memory (the fuzzer's 10 s alarm fired): the C unpickler sizes
    # its memo table by the largest LONG_BINPUT index, so one flipped byte allocated 8 * index
    blob = pickle.dumps(tiny_mmsa(np.random.default_rng(0)), protocol=2)
    assert blob[3:4] == b"q"  # BINPUT after PROTO 2 and EMPTY_DICT
    path = fuzz_dir / "memo.pkl"
    path.write_bytes(blob[:3] + b"r" + index.to_bytes(4, "little") + blob[5:])
    start = time.monotonic()
    with pytest.raises(DatasetError, match="memo index .* damaged pickle") as info:
        load(f"mmsa:{path}")
    assert info.value.file == str(path) and time.monotonic() - start < 2.0
