"""Real-format loaders on fixture files written here: the safe unpickler, MMSA pickles and
MERBench feature directories."""

from __future__ import annotations

import os
import pickle
import pickletools

import numpy as np
import pytest

from affectune.data import MASK_ID, PAD_ID, UNK_ID, DatasetError, canonical_source, load
from affectune.data.mmsa import remap_bert_ids
from affectune.data.safe_pickle import safe_load, safe_loads


# --- safe unpickler ------------------------------------------------------------------------
class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker, how="os"):
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "os":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "eval":
            return (eval, (f"open({self.marker!r}, 'w').close()",))
        import subprocess
        return (subprocess.call, (["touch", self.marker],))


@pytest.mark.parametrize("how, refused", [("os", "system"), ("eval", "builtins.eval"),
                                          ("subprocess", "subprocess.call")])
def test_malicious_pickle_is_refused_without_running(tmp_path, how, refused):
    marker = tmp_path / "pwned"
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps({"train": {"text": _Evil(marker, how)}}, protocol=4))
    with pytest.raises(DatasetError) as info:
        load(f"mmsa:{path}")
    assert not marker.exists()
    assert refused in str(info.value) and str(path) in str(info.value)
    with pytest.raises(DatasetError, match="refused"):
        safe_load(path)
    assert not marker.exists()


def test_other_library_classes_are_refused():
    with pytest.raises(DatasetError, match="collections.Counter"):
        safe_loads(pickle.dumps({"x": __import__("collections").Counter("ab")}))


def test_numpy1_pickles_load_under_numpy2():
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.float64(0.5),
            "ids": ["v1", "v2"]}
    blob = pickle.dumps(data, protocol=2)
    assert b"numpy._core.multiarray" in blob or b"numpy.core.multiarray" in blob
    # Write the module name exactly as numpy 1 did: numpy.core.multiarray.
    numpy1 = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    globals_named = {arg for op, arg, _ in pickletools.genops(numpy1) if op.name == "GLOBAL"}
    assert "numpy.core.multiarray _reconstruct" in globals_named
    out = safe_loads(numpy1)
    np.testing.assert_array_equal(out["a"], data["a"])
    assert out["a"].dtype == np.float32 and out["y"] == 0.5 and out["ids"] == ["v1", "v2"]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_round_trips_at_every_protocol(protocol):
    data = {"x": np.linspace(0, 1, 5), "s": {1, 2}, "b": b"\x00\xff", "t": (1, "a"),
            "o": np.array(["a", "bb"], dtype=object)}
    out = safe_loads(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["x"], data["x"])
    assert out["s"] == {1, 2} and out["b"] == b"\x00\xff" and out["t"] == (1, "a")
    assert out["o"].tolist() == ["a", "bb"]


def test_corrupt_pickle_names_the_file(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(DatasetError, match="broken.pkl.*not a readable pickle"):
        safe_load(path)


# --- MMSA ----------------------------------------------------------------------------------
def mmsa_split(rng, n, t_text, t_audio, t_vision, split, bert=True, cls=True):
    text_len = rng.integers(3, t_text + 1, n)
    mask = (np.arange(t_text)[None, :] < text_len[:, None]).astype(np.float64)
    ids = rng.integers(104, 30000, (n, t_text)).astype(np.float64)
    ids[:, 0] = 101
    ids[0, 1:3] = [100, 103]  # BERT [UNK], [MASK]
    ids[1, 1:3] = [1, 2]  # BERT [unused0], [unused1]
    ids *= mask  # [PAD] = 0 beyond the length
    text = rng.standard_normal((n, t_text, 12)) * mask[:, :, None]
    audio_len = rng.integers(1, t_audio + 1, n)
    d = {
        "text": text,
        "audio": rng.standard_normal((n, t_audio, 5)),
        "vision": rng.standard_normal((n, t_vision, 7)).astype(np.float32),
        "audio_lengths": [int(v) for v in audio_len],  # MMSA stores lists
        "vision_lengths": np.full(n, t_vision),
        "regression_labels": np.round(rng.uniform(-3, 3, n) * 3) / 3,
        "raw_text": [f"sentence {i}" for i in range(n)],
        "id": [f"{split}_vid$_${i}" for i in range(n)],
    }
    if bert:
        d["text_bert"] = np.stack([ids, mask, np.zeros_like(mask)], axis=1)  # (N, 3, T)
    if cls:
        d["classification_labels"] = np.digitize(d["regression_labels"], [-0.01, 0.01]).astype(np.float64)
    return d


def write_mmsa(path, aligned, rng, **kw):
    t = 8
    ta, tv = (t, t) if aligned else (20, 15)
    data = {s: mmsa_split(rng, n, t, ta, tv, s, **kw)
            for s, n in (("train", 10), ("valid", 4), ("test", 6))}
    path.write_bytes(pickle.dumps(data, protocol=4))
    return data


@pytest.mark.parametrize("aligned", [True, False])
def test_mmsa_round_trips_the_numbers(tmp_path, aligned):
    path = tmp_path / ("aligned_50.pkl" if aligned else "unaligned_50.pkl")
    raw = write_mmsa(path, aligned, np.random.default_rng(0))
    ds = load(f"mmsa:{path}")
    assert ds.task == "regression" and ds.aligned == aligned and ds.file == str(path)
    assert ds.source == f"mmsa:{path}" and ds.vocab_size == 30522
    assert ds.dims == {"text": 12, "audio": 5, "vision": 7}
    for name, r in raw.items():
        s = ds.splits[name]
        np.testing.assert_allclose(s.text, r["text"].astype(np.float32))
        np.testing.assert_allclose(s.audio, r["audio"].astype(np.float32))
        np.testing.assert_allclose(s.label_reg, r["regression_labels"].astype(np.float32))
        np.testing.assert_array_equal(s.lengths["text"], r["text_bert"][:, 1].sum(1))
        np.testing.assert_array_equal(s.lengths["audio"], r["audio_lengths"])
        np.testing.assert_array_equal(s.lengths["vision"], r["vision_lengths"])
        assert s.ids.tolist() == r["id"]
        bert_ids = r["text_bert"][:, 0].astype(np.int64)
        expected = bert_ids.copy()
        expected[bert_ids == 100], expected[bert_ids == 103] = UNK_ID, MASK_ID
        expected[bert_ids == 1], expected[bert_ids == 2] = 100, 103
        np.testing.assert_array_equal(s.tokens, expected)
    t = ds.splits["train"].tokens
    assert t[0, 1] == UNK_ID and t[0, 2] == MASK_ID and t[1, 1] == 100 and t[1, 2] == 103
    assert (t[:, 0] == 101).all()  # [CLS] keeps its id


def test_bert_id_remapping_is_a_bijection():
    ids = np.arange(200)
    out = remap_bert_ids(ids)
    assert sorted(out.tolist()) == ids.tolist()
    assert out[0] == PAD_ID and out[100] == UNK_ID and out[103] == MASK_ID
    np.testing.assert_array_equal(remap_bert_ids(out), ids)


def test_mmsa_classification_from_labels_or_sign(tmp_path):
    path = tmp_path / "aligned_50.pkl"
    raw = write_mmsa(path, True, np.random.default_rng(1))
    ds = load(f"mmsa:{path}?task=classification")
    assert ds.num_classes == 3 and ds.class_names == ("negative", "neutral", "positive")
    np.testing.assert_array_equal(ds.splits["test"].label_cls,
                                  raw["test"]["classification_labels"].astype(int))
    sign = load(f"mmsa:{path}?cls_source=sign&task=classification")
    assert sign.num_classes == 2 and sign.source.endswith("?cls_source=sign&task=classification")
    np.testing.assert_array_equal(sign.splits["train"].label_cls,
                                  raw["train"]["regression_labels"] >= 0)


def test_mmsa_without_text_bert_uses_nonzero_frames(tmp_path):
    path = tmp_path / "aligned_50.pkl"
    raw = write_mmsa(path, True, np.random.default_rng(2), bert=False, cls=False)
    ds = load(f"mmsa:{path}")
    assert ds.vocab_size == 0 and ds.splits["train"].tokens is None
    mask_len = (np.abs(raw["train"]["text"]).max(2) > 0).sum(1)
    np.testing.assert_array_equal(ds.splits["train"].lengths["text"], mask_len)


def corrupt(tmp_path, edit):
    path = tmp_path / "unaligned_50.pkl"
    data = write_mmsa(path, False, np.random.default_rng(3))
    edit(data)
    path.write_bytes(pickle.dumps(data))
    return path


@pytest.mark.parametrize("edit, split, field, words", [
    (lambda d: d["valid"]["audio"].__setitem__((1, 2, 3), -np.inf), "valid", "audio", "nan_policy=zero"),
    (lambda d: d["test"]["vision"].__setitem__((0, 0, 0), np.nan), "test", "vision", "NaN"),
    (lambda d: d["train"]["audio_lengths"].__setitem__(2, 21), "train", "audio_lengths", "outside [0, 20]"),
    (lambda d: d["train"]["regression_labels"].__setitem__(4, 3.5), "train", "regression_labels", "[-3, 3]"),
    (lambda d: d["valid"].__setitem__("audio", d["valid"]["audio"][:3]), "valid", "audio", "3 rows"),
    (lambda d: d["test"].pop("text"), "test", "text", "missing"),
    (lambda d: d["train"]["text_bert"].__setitem__((0, 0, 1), 7.5), "train", "text_bert", "whole numbers"),
])
def test_mmsa_errors_name_file_split_and_field(tmp_path, edit, split, field, words):
    path = corrupt(tmp_path, edit)
    with pytest.raises(DatasetError) as info:
        load(f"mmsa:{path}")
    e = info.value
    assert (e.file, e.split, e.field) == (str(path), split, field)
    assert words in str(e)


def test_mmsa_nan_policy_zero_is_explicit_and_recorded(tmp_path):
    path = corrupt(tmp_path, lambda d: d["valid"]["audio"].__setitem__((1, slice(0, 4), 0), -np.inf))
    ds = load(f"mmsa:{path}?nan_policy=zero")
    assert ds.splits["valid"].audio[1, :4, 0].tolist() == [0.0] * 4
    assert ds.meta["non_finite_replaced"] == {"valid": {"audio": 4}}
    assert ds.source.endswith("?nan_policy=zero")


def test_mmsa_missing_split_and_file(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"train": {}, "test": {}}))
    with pytest.raises(DatasetError, match="missing split.*valid"):
        load(f"mmsa:{path}")
    with pytest.raises(DatasetError, match="no such file"):
        load(f"mmsa:{tmp_path / 'absent.pkl'}")


# --- MERBench ------------------------------------------------------------------------------
def write_merbench(root, rng, *, emo=True, frame_text=False):
    classes = np.array(["neutral", "happy", "sad", "angry"])
    arrays, lengths = {"class_names": classes}, {}
    for split, n in (("train", 8), ("val", 3), ("test", 4)):
        ids = np.array([f"{split}_{i:03d}" for i in range(n)])
        arrays[f"{split}_ids"] = ids
        arrays[f"{split}_emo"] = classes[rng.integers(0, 4, n)]
        arrays[f"{split}_val"] = rng.uniform(-5, 5, n)
        for i in ids:
            t_a = int(rng.integers(2, 9))
            lengths[i] = t_a
            feats = {"text": rng.standard_normal((3, 6) if frame_text else 6),
                     "audio": rng.standard_normal((t_a, 4)).astype(np.float32),
                     "vision": rng.standard_normal((5, 3))}
            for m, x in feats.items():
                (root / m).mkdir(parents=True, exist_ok=True)
                np.save(root / m / f"{i}.npy", x)
    if not emo:
        arrays = {k: v for k, v in arrays.items() if not k.endswith("_emo")}
    np.savez(root / "label.npz", **arrays)
    return arrays, lengths


def test_merbench_directory_loads_and_pads(tmp_path):
    arrays, lengths = write_merbench(tmp_path, np.random.default_rng(0))
    ds = load(f"merbench:{tmp_path}")
    assert ds.task == "classification" and ds.num_classes == 4
    assert ds.class_names == ("neutral", "happy", "sad", "angry")
    assert set(ds.splits) == {"train", "valid", "test"}
    assert ds.dims == {"text": 6, "audio": 4, "vision": 3}
    assert ds.seq_lens["text"] == 1 and ds.seq_lens["audio"] == max(lengths.values())
    s = ds.splits["valid"]
    assert s.ids.tolist() == arrays["val_ids"].tolist()
    lookup = {c: k for k, c in enumerate(arrays["class_names"])}
    assert s.label_cls.tolist() == [lookup[c] for c in arrays["val_emo"]]
    for row, i in enumerate(s.ids):
        x = np.load(tmp_path / "audio" / f"{i}.npy")
        assert s.lengths["audio"][row] == len(x) == lengths[i]
        np.testing.assert_array_equal(s.audio[row, :len(x)], x)
        assert not s.audio[row, len(x):].any()
        np.testing.assert_allclose(s.text[row, 0], np.load(tmp_path / "text" / f"{i}.npy"), rtol=1e-6)
    assert (s.lengths["text"] == 1).all() and not ds.aligned


def test_merbench_regression_with_scale_and_folder_options(tmp_path):
    arrays, _ = write_merbench(tmp_path, np.random.default_rng(1), emo=False, frame_text=True)
    (tmp_path / "text").rename(tmp_path / "bert")
    ds = load(f"merbench:{tmp_path}?val_scale=0.6&text=bert")
    assert ds.task == "regression" and ds.seq_lens["text"] == 3
    np.testing.assert_allclose(ds.splits["test"].label_reg,
                               (arrays["test_val"] * 0.6).astype(np.float32), rtol=1e-6)
    assert canonical_source(f"merbench:{tmp_path}?text=bert&val_scale=0.6") == ds.source
    with pytest.raises(DatasetError, match=r"within \(-3.0, 3.0\)"):
        load(f"merbench:{tmp_path}?text=bert")  # valence in [-5, 5] without val_scale


def test_merbench_refuses_pickled_labels_and_bad_files(tmp_path):
    arrays, _ = write_merbench(tmp_path, np.random.default_rng(2))
    np.savez(tmp_path / "label.npz", **arrays, train_extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match="pickled objects") as info:  # only *_corpus dicts are unpickled
        load(f"merbench:{tmp_path}")
    assert info.value.field == "train_extra"
    corpus = np.array([{"train_000": {"emo": "happy", "val": 1.0}}], dtype=object)  # a list, not a dict
    np.savez(tmp_path / "label.npz", train_corpus=corpus)
    with pytest.raises(DatasetError, match="expected a non-empty dict") as info:
        load(f"merbench:{tmp_path}")
    assert info.value.field == "train_corpus"

    write_merbench(tmp_path, np.random.default_rng(2))
    (tmp_path / "vision" / "test_002.npy").unlink()
    with pytest.raises(DatasetError) as info:
        load(f"merbench:{tmp_path}")
    assert info.value.split == "test" and info.value.field == "vision"
    assert info.value.file.endswith("test_002.npy") and "missing" in str(info.value)

    write_merbench(tmp_path, np.random.default_rng(2))
    np.save(tmp_path / "audio" / "train_001.npy", np.full((3, 4), np.nan))
    with pytest.raises(DatasetError, match="NaN"):
        load(f"merbench:{tmp_path}")


def test_merbench_ids_cannot_escape_the_directory(tmp_path):
    arrays, _ = write_merbench(tmp_path, np.random.default_rng(3))
    arrays["train_ids"] = np.array(["../../etc/passwd"] + arrays["train_ids"][1:].tolist())
    np.savez(tmp_path / "label.npz", **arrays)
    with pytest.raises(DatasetError, match="not a plain file name"):
        load(f"merbench:{tmp_path}")


# --- MERBench label files as distributed: pickled *_corpus dicts, features/<name>/ -----------
FEATURES = {"text": "features/Baichuan-13B-Base-UTT", "audio": "features/chinese-hubert-large-UTT",
            "vision": "features/clip-vit-large-patch14-UTT"}
MER_FOLDERS = "&".join(f"{m}={folder}" for m, folder in FEATURES.items())


def write_merbench_corpus(root, rng, corpora: dict[str, dict], dims=(5, 4, 3)):
    """MERBench's layout: label.npz of pickled {sample: {"emo", "val"}} dicts (as its preprocess
    scripts write them with np.savez_compressed) and utterance-level (D,) features."""
    for corpus in corpora.values():
        for name in corpus:
            for (m, folder), d in zip(FEATURES.items(), dims):
                (root / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / folder / f"{name}.npy", rng.standard_normal(d).astype(np.float32))
    np.savez_compressed(root / "label.npz", **corpora)


def meld_like(rng, sizes=(("train", 7), ("val", 3), ("test", 4))) -> dict[str, dict]:
    """MELD as MERBench ships it: integer classes, 'val' -10 (no valence)."""
    return {f"{split}_corpus": {f"{split}_dia{i}_utt{i % 2}": {"emo": int(rng.integers(0, 7)), "val": -10}
                                for i in range(n)} for split, n in sizes}


def test_merbench_corpus_dicts_load_with_feature_folders(tmp_path):
    rng = np.random.default_rng(0)
    corpora = meld_like(rng)
    write_merbench_corpus(tmp_path, rng, corpora)
    ds = load(f"merbench:{tmp_path}?{MER_FOLDERS}")
    assert ds.task == "classification" and ds.meta["labels"] == "corpus dicts"
    assert set(ds.splits) == {"train", "valid", "test"}
    assert ds.dims == {"text": 5, "audio": 4, "vision": 3} and ds.seq_lens == {m: 1 for m in FEATURES}
    assert ds.num_classes == 1 + max(e["emo"] for c in corpora.values() for e in c.values())
    for split, key in (("train", "train_corpus"), ("valid", "val_corpus"), ("test", "test_corpus")):
        s = ds.splits[split]
        assert s.ids.tolist() == list(corpora[key])  # the dict's order
        assert s.label_cls.tolist() == [e["emo"] for e in corpora[key].values()]
        for row, name in enumerate(s.ids):
            for m, folder in FEATURES.items():
                np.testing.assert_array_equal(s.features(m)[row, 0], np.load(tmp_path / folder / f"{name}.npy"))
    assert ds.source == canonical_source(f"merbench:{tmp_path}?{MER_FOLDERS}")
    assert "text=features/Baichuan-13B-Base-UTT" in ds.source


def test_merbench_corpus_regression_and_mer2023_members(tmp_path):
    rng = np.random.default_rng(1)
    mosei = {f"{split}_corpus": {f"{split}_{i}": {"emo": 0, "val": float(v)}
                                 for i, v in enumerate(rng.uniform(-3, 3, n).round(2))}
             for split, n in (("train", 6), ("val", 2), ("test", 3))}
    write_merbench_corpus(tmp_path / "mosei", rng, mosei)
    ds = load(f"merbench:{tmp_path / 'mosei'}?{MER_FOLDERS}")  # 'emo' is a placeholder 0 -> regression
    assert ds.task == "regression"
    np.testing.assert_allclose(ds.splits["test"].label_reg, list(v["val"] for v in mosei["test_corpus"].values()),
                               rtol=1e-6)

    emos = ["worried", "happy", "neutral", "angry"]
    mer = {f"{split}_corpus": {f"sample_{split}_{i}": {"emo": emos[(i + k) % 4], "val": 0.5 * i}
                               for i in range(n)} for k, (split, n) in enumerate((("train", 6), ("test1", 3), ("test2", 2)))}
    write_merbench_corpus(tmp_path / "mer", rng, mer)
    with pytest.raises(DatasetError, match="no member val_corpus.*valid_corpus=") as info:
        load(f"merbench:{tmp_path / 'mer'}?{MER_FOLDERS}")
    assert info.value.split == "valid" and info.value.file.endswith("label.npz")
    ds = load(f"merbench:{tmp_path / 'mer'}?{MER_FOLDERS}&valid_corpus=test2_corpus&test_corpus=test1_corpus")
    assert ds.task == "classification" and ds.class_names == tuple(sorted(emos))
    assert ds.splits["test"].ids.tolist() == list(mer["test1_corpus"])
    assert [ds.class_names[k] for k in ds.splits["valid"].label_cls] == [e["emo"] for e in mer["test2_corpus"].values()]


def test_merbench_corpus_naming_a_code_global_is_refused_unexecuted(tmp_path):
    rng = np.random.default_rng(2)
    corpora = meld_like(rng)
    write_merbench_corpus(tmp_path, rng, corpora)
    marker = tmp_path / "pwned"
    corpora["val_corpus"]["val_dia0_utt0"]["emo"] = _Evil(marker)  # a crafted pickle: os.system
    np.savez(tmp_path / "label.npz", **corpora)
    with pytest.raises(DatasetError, match=r"refused to load global (posix|os|nt)\.system") as info:
        load(f"merbench:{tmp_path}?{MER_FOLDERS}")
    assert info.value.file == str(tmp_path / "label.npz") and info.value.field == "val_corpus"
    assert not marker.exists()


@pytest.mark.parametrize("entry, problem", [
    ({"emo": [1, 2], "val": 0.0}, r"'emo' of sample 'train_dia0_utt0' is \[1, 2\]"),
    ({"emo": 1.5, "val": 0.0}, "'emo' of sample 'train_dia0_utt0' is 1.5"),
    ({"val": 0.0}, "sample 'train_dia0_utt0' has no 'emo'"),
])
def test_merbench_corpus_entries_are_checked(tmp_path, entry, problem):
    rng = np.random.default_rng(3)
    corpora = meld_like(rng)
    corpora["train_corpus"]["train_dia0_utt0"] = entry
    write_merbench_corpus(tmp_path, rng, corpora)
    with pytest.raises(DatasetError, match=problem) as info:
        load(f"merbench:{tmp_path}?{MER_FOLDERS}&task=classification")
    assert info.value.field == "train_corpus" and info.value.split == "train"


@pytest.mark.parametrize("folder", ["../features/x", "/etc", "features//x", "features/./x", ""])
def test_merbench_feature_folders_stay_inside_the_directory(tmp_path, folder):
    with pytest.raises(DatasetError, match="inside the dataset directory") as info:
        load(f"merbench:{tmp_path}?text={folder}")
    assert info.value.field == "text"
