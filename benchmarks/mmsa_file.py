"""A MOSI-shaped, unaligned MMSA pickle (`unaligned_50.pkl` layout) for the peer benchmark.

Shapes as MMSA's CMU-MOSI unaligned features: text (N, 50, 768), audio (N, 375, 5), vision
(N, 500, 20), with `audio_lengths`/`vision_lengths`, `regression_labels` in [-3, 3], `raw_text`
and `id`. The samples come from the embedded synthetic generator (`synthetic:mosi`, unaligned,
audio 7.5 and vision 10 frames per token), so labels are learnable from the features and
lengths average about 60-65% of the padded ones. The generator makes at most 8 vision frames per
token (400), so vision is stretched in time to 500 frames (frame j repeats generated frame
floor(0.8 j), lengths x 1.25). Padding is zero, as in MMSA's files.

    python -m benchmarks.mmsa_file OUT.pkl [--train 48 --valid 16 --test 32 --seed 0]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from affectune.data import load

MOSI_UNALIGNED = "synthetic:mosi?aligned=0&ood=0&text_dim=768&audio_dim=5&vision_dim=20" \
                 "&audio_ratio=7.5&vision_ratio=8&scale={scale}&seed={seed}"
"""text 50 x 768, audio ceil(7.5 * 50) = 375 x 5, vision 8 * 50 = 400 x 20 (stretched to 500)."""
VISION_FRAMES = 500
MOSI_SIZES = (1284, 229, 686)  # the real corpus' train/valid/test sizes


def stretch(x: np.ndarray, lengths: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, T, D) -> (n, frames, D) by repeating frames (frame j <- floor(j T / frames)); new lengths."""
    T = x.shape[1]
    out = x[:, np.arange(frames) * T // frames]  # padding maps to padding (zeros)
    return out, np.minimum(frames, -(-lengths * frames // T))  # ceil(L frames / T)


def mmsa_split(split, n: int, name: str) -> dict:
    """The first n samples of an affectune Split as one MMSA split dict."""
    if len(split.ids) < n:
        raise ValueError(f"the generated {name} split has {len(split.ids)} samples, {n} asked")
    vision, vision_len = stretch(split.vision[:n], split.lengths["vision"][:n], VISION_FRAMES)
    return {
        "text": split.text[:n].astype(np.float32),  # (n, 50, 768)
        "audio": split.audio[:n].astype(np.float32),  # (n, 375, 5)
        "vision": vision.astype(np.float32),  # (n, 500, 20)
        "audio_lengths": [int(v) for v in split.lengths["audio"][:n]],  # MMSA stores lists
        "vision_lengths": [int(v) for v in vision_len],
        "regression_labels": split.label_reg[:n].astype(np.float32),
        "raw_text": [f"synthetic {name} sample {i}" for i in range(n)],
        "id": [f"{name}_{i}" for i in range(n)],
    }


def write_mosi_like(path: str | Path, n_train: int = 48, n_valid: int = 16, n_test: int = 32,
                    seed: int = 0) -> dict[str, float]:
    """Write the pickle; returns each modality's mean length as a fraction of its padded length."""
    for name, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        if n < 1:
            raise ValueError(f"{name} size must be >= 1, got {n}")
    scale = max(n / size for n, size in zip((n_train, n_valid, n_test), MOSI_SIZES))
    ds = load(MOSI_UNALIGNED.format(scale=round(scale * 1.01 + 1e-4, 4), seed=seed))
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    data = {name: mmsa_split(ds.splits[name], n, name) for name, n in sizes.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(data, protocol=4))
    tmp.replace(path)
    train = data["train"]
    return {m: float(np.mean(train.get(f"{m}_lengths", ds.splits["train"].lengths[m][:n_train]))
                     / train[m].shape[1]) for m in ("text", "audio", "vision")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=48)
    ap.add_argument("--valid", type=int, default=16)
    ap.add_argument("--test", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    fill = write_mosi_like(a.out, a.train, a.valid, a.test, a.seed)
    print(f"wrote {a.out}: mean length / padded length " + ", ".join(f"{m} {v:.2f}" for m, v in fill.items()))


if __name__ == "__main__":
    main()
