"""The embedded synthetic benchmark: deterministic multimodal sentiment/emotion data from a seed.

Source strings: `synthetic:<preset>[?option=value&...]`, presets `mosi`, `mosei` (regression,
score in [-3, 3]), `iemocap` (4 classes), `meld` (7 classes). Options are the fields of
`SyntheticConfig` (e.g. `synthetic:mosei?scale=0.1&seed=3&aligned=0`).

Generative model, per sample i (all draws from one numpy Generator seeded by (seed, preset)):

1. Label. Regression: with probability p_zero the score s_i is exactly 0; otherwise its sign is
   negative with probability p_negative and its magnitude is |N(1.1, 0.7)| clipped to [1/3, 3];
   s_i is rounded to steps of 1/3 (MOSI-style average of three annotators). Classification: the
   class y_i is drawn from the preset's imbalanced prior (IEMOCAP neutral/happy/sad/angry
   .31/.30/.20/.20; MELD neutral .47, joy .17, surprise .12, anger .11, sadness .07, disgust
   .03, fear .03). The label code c_i is s_i/3 (regression) or 0.7 onehot(y_i) (classification).
2. Sarcasm. A fraction `sarcasm` of the samples whose label has an opposite (s_i != 0, or a
   class with a flip partner: IEMOCAP happy <-> angry, MELD joy <-> anger) is sarcastic: the
   text is written for the flipped label (-s_i, or the partner class) while audio and vision
   carry a sarcasm cue and no label evidence. Such samples take two modalities: the text says
   what was said, a nonverbal cue says that it is meant the other way round.
3. Expressiveness. Each modality m carries the label of sample i only with probability
   `expressive_m` (text .85, audio .5, vision .45), independently; a sample with none gets
   expressive text, and sarcastic samples always have expressive text. So every modality holds
   evidence the others lack on some samples, and removing any of them costs a fusion model.
4. Text. Length L_i ~ N(0.6 T, 0.2 T) clipped to [6, T] with T = `text_len`. Each token is a
   sentiment word with probability `sentiment_rate` (times 0.3 + 0.7 |s|/3 for regression; 0
   where the text is not expressive, so its words are neutral):
   positive with probability sigmoid(2.5 s_text) (regression) or from the text label's lexicon
   with probability 0.6, else a random lexicon (classification); otherwise a Zipf-distributed
   neutral filler word. With probability `spurious` the sample also contains one spurious
   "dataset" word whose group agrees with the label with probability `spurious_agreement`
   (language bias). In the `ood` split the association is changed: regression reverses it
   (positive samples get the negative group's words), classification shifts it (class k gets
   the words of class k+1). Tokens become UNK with probability `unk_rate`. Ids: PAD=0, UNK=1,
   MASK=2, then lexicon, spurious and filler words. Text features = E[token] + a per-sample
   context vector N(0, 0.5^2) + per-token noise N(0, context_noise^2), where the fixed embedding
   table E has N(0, 1) rows and lexicon rows add 2 * snr_text * (polarity * u or P_t[class]) (directions of norm
   sqrt(Dt)).
5. Audio and vision. Aligned: frames share the text's axis and lengths. Unaligned (`aligned=0`):
   T_m = ceil(ratio_m * T) frames, L_m = L_i * ratio_m * U(0.85, 1.15) clipped to [1, T_m].
   Every valid frame = speaker offset N(0, 0.5^2) + N(0, 1) noise; each frame is an evidence
   frame with probability `evidence_rate` (at least one per sample), where snr_m * c_i P_m is
   added if m is expressive and the sample not sarcastic (P_m a fixed random projection whose
   rows have norm sqrt(D_m)), plus `sarcasm_cue` * q_m for sarcastic samples.
   Evidence is spread over random frames, so dropping frames degrades a model gradually. With
   the defaults text carries the most evidence, then audio, then vision (docs/datasets.md has
   the measured cost of removing each).

Padding beyond a length is zero. Splits: train/valid/test sized like the real corpus times
`scale` (valid: `valid_scale` when set; at least 16 each), and `ood` (test-sized) unless `ood=0`. Default dims: text 32,
audio 16, vision 16; text_len 50.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

from affectune import MODALITIES
from affectune.data.options import format_options, parse_options
from affectune.data.schema import MASK_ID, PAD_ID, UNK_ID, Dataset, DatasetError, Split

SPLITS = ("train", "valid", "test")
EXPRESSIVE = tuple(f"expressive_{m}" for m in MODALITIES)


@dataclass(frozen=True)
class Preset:
    """The shape of one real corpus that a synthetic preset imitates."""

    name: str
    task: str
    sizes: tuple[int, int, int]  # train, valid, test at scale 1
    class_names: tuple[str, ...] = ()
    class_prior: tuple[float, ...] = ()
    sarcasm_flip: tuple[int, ...] = ()  # class the text shows when sarcastic, -1 = never
    p_zero: float = 0.0  # regression: share of exactly-neutral scores
    p_negative: float = 0.5  # regression: share of negative among non-zero scores
    default_scale: float = 1.0


PRESETS: dict[str, Preset] = {
    "mosi": Preset("mosi", "regression", (1284, 229, 686), p_zero=0.07, p_negative=0.55),
    "mosei": Preset("mosei", "regression", (16326, 1871, 4659), p_zero=0.18, p_negative=0.35,
                    default_scale=0.25),
    "iemocap": Preset("iemocap", "classification", (3872, 553, 1106),
                      class_names=("neutral", "happy", "sad", "angry"),
                      class_prior=(0.309, 0.296, 0.196, 0.199), sarcasm_flip=(-1, 3, -1, 1)),
    "meld": Preset("meld", "classification", (9989, 1109, 2610),
                   class_names=("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"),
                   class_prior=(0.47, 0.17, 0.12, 0.11, 0.07, 0.03, 0.03),
                   sarcasm_flip=(-1, 3, -1, 1, -1, -1, -1)),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator parameters; every field except `preset` is a source-string option."""

    preset: str
    """Which corpus to imitate: mosi, mosei, iemocap or meld."""
    seed: int = 0
    """Seed of the numpy Generator; the same seed gives the same arrays."""
    scale: float = 1.0
    """Multiplies the preset's split sizes (mosei defaults to 0.25)."""
    valid_scale: float = 0.0
    """Multiplies the preset's valid split size instead of `scale` (0 = `scale`): a larger, less noisy
    validation split at the same train/test data (those splits' arrays do not change)."""
    aligned: bool = True
    """1: audio and vision share the text's frames; 0: longer, differently sized sequences."""
    ood: bool = True
    """Add an `ood` split (test-sized) with the spurious word association changed."""
    text_len: int = 50
    """Padded text length T (tokens)."""
    text_dim: int = 32
    """Text feature size."""
    audio_dim: int = 16
    """Audio feature size."""
    vision_dim: int = 16
    """Vision feature size."""
    audio_ratio: float = 2.5
    """Unaligned only: audio frames per token."""
    vision_ratio: float = 2.0
    """Unaligned only: vision frames per token."""
    vocab_size: int = 1000
    """Vocabulary size including PAD/UNK/MASK, lexicon and spurious words."""
    snr_text: float = 1.5
    """Strength of the sentiment direction in lexicon word embeddings."""
    snr_audio: float = 1.8
    """Strength of the label evidence on audio evidence frames."""
    snr_vision: float = 1.6
    """Strength of the label evidence on vision evidence frames."""
    evidence_rate: float = 0.3
    """Probability that an audio/vision frame carries label evidence."""
    sentiment_rate: float = 0.25
    """Probability that a token is a sentiment (lexicon) word, at full intensity."""
    expressive_text: float = 0.85
    """Probability that a sample's words carry its label (else neutral wording, no lexicon words)."""
    expressive_audio: float = 0.5
    """Probability that a sample's voice carries its label (else no label evidence in audio)."""
    expressive_vision: float = 0.45
    """Probability that a sample's face carries its label (else no label evidence in vision)."""
    sarcasm: float = 0.15
    """Share of eligible samples whose text shows the flipped label (resolved by text + a cue)."""
    sarcasm_cue: float = 1.5
    """Strength of the sarcasm cue on audio/vision evidence frames (expressive or not)."""
    spurious: float = 0.5
    """Probability that a sample contains one spurious dataset word."""
    spurious_agreement: float = 0.9
    """Probability that the spurious word's group is the label's associated group."""
    unk_rate: float = 0.01
    """Probability that a token is replaced by UNK."""
    context_noise: float = 0.5
    """Std of the per-token noise added to text embeddings."""

    def __post_init__(self):
        where = f"synthetic:{self.preset}"
        if self.preset not in PRESETS:
            raise DatasetError(f"unknown synthetic preset {self.preset!r}; presets: "
                               f"{', '.join(PRESETS)}", file=where, field="preset")
        checks = [
            ("scale", 0 < self.scale <= 4, "must lie in (0, 4]"),
            ("valid_scale", 0 <= self.valid_scale <= 4, "must lie in [0, 4] (0 = scale)"),
            ("text_len", 8 <= self.text_len <= 512, "must lie in [8, 512]"),
            *((f"{m}_dim", 1 <= getattr(self, f"{m}_dim") <= 1024, "must lie in [1, 1024]")
              for m in MODALITIES),
            ("audio_ratio", 1 <= self.audio_ratio <= 8, "must lie in [1, 8]"),
            ("vision_ratio", 1 <= self.vision_ratio <= 8, "must lie in [1, 8]"),
            *((k, getattr(self, k) >= 0, "must be >= 0")
              for k in ("snr_text", "snr_audio", "snr_vision", "sarcasm_cue", "context_noise")),
            *((k, 0 <= getattr(self, k) <= 1, "must lie in [0, 1]")
              for k in ("evidence_rate", "sentiment_rate", "sarcasm", "spurious",
                        "spurious_agreement", "unk_rate", *EXPRESSIVE)),
            ("seed", self.seed >= 0, "must be >= 0"),
        ]
        for name, ok, problem in checks:
            if not ok:
                raise DatasetError(f"{name}={getattr(self, name)!r} {problem}", file=where,
                                   field=name)
        need = _vocab_layout(PRESETS[self.preset], 0)["filler_start"] + 50
        if self.vocab_size < need:
            raise DatasetError(f"vocab_size={self.vocab_size} must be >= {need} for this preset",
                               file=where, field="vocab_size")

    @property
    def preset_info(self) -> Preset:
        return PRESETS[self.preset]


def config_from_options(preset: str, raw: dict[str, str]) -> SyntheticConfig:
    """Typed config from a preset name and raw query-string options."""
    where = f"synthetic:{preset}"
    if preset not in PRESETS:
        raise DatasetError(f"unknown synthetic preset {preset!r}; presets: {', '.join(PRESETS)}",
                           file=where, field="preset")
    return parse_options(SyntheticConfig, raw, where=where, fixed={"preset": preset},
                         defaults=_preset_defaults(preset))


def _preset_defaults(preset: str) -> dict:
    return {"scale": PRESETS[preset].default_scale}


def canonical(cfg: SyntheticConfig) -> str:
    """`synthetic:<preset>` plus the non-default options, sorted."""
    return f"synthetic:{cfg.preset}" + format_options(cfg, skip=("preset",),
                                                      defaults=_preset_defaults(cfg.preset))


# --- vocabulary ------------------------------------------------------------------------------
LEXICON_PER_GROUP = 40
SPURIOUS_PER_GROUP = 4


def _groups(preset: Preset) -> int:
    """Lexicon/spurious groups: positive+negative for regression, one per class otherwise."""
    return 2 if preset.task == "regression" else len(preset.class_names)


def _vocab_layout(preset: Preset, vocab_size: int) -> dict:
    g = _groups(preset)
    lex_start = MASK_ID + 1
    spur_start = lex_start + g * LEXICON_PER_GROUP
    filler_start = spur_start + g * SPURIOUS_PER_GROUP
    return {"groups": g, "lexicon_start": lex_start, "spurious_start": spur_start,
            "filler_start": filler_start, "filler_count": vocab_size - filler_start}


def _zipf(n: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return p / p.sum()


@dataclass
class _World:
    """Everything fixed across splits: embeddings, projections, cue directions, vocabulary."""

    layout: dict
    embedding: np.ndarray  # (V, Dt) float32
    projection: dict[str, np.ndarray]  # audio/vision -> (K, D_m) float32
    cue: dict[str, np.ndarray]  # audio/vision -> (D_m,) float32


def _directions(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """(k, d) random directions of norm sqrt(d) (unit variance per feature on average), so a
    modality's SNR is set by its snr_* option and not by the luck of the draw."""
    x = rng.standard_normal((k, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(d)).astype(np.float32)


def _build_world(cfg: SyntheticConfig, rng: np.random.Generator) -> _World:
    preset = cfg.preset_info
    layout = _vocab_layout(preset, cfg.vocab_size)
    g = layout["groups"]
    emb = rng.standard_normal((cfg.vocab_size, cfg.text_dim), dtype=np.float32)
    emb[PAD_ID] = 0.0
    # Meaning of each lexicon group in text-embedding space: +/- one sentiment direction for
    # regression, one prototype per class for classification.
    if preset.task == "regression":
        u = _directions(rng, 1, cfg.text_dim)[0]
        group_dirs = np.stack([u, -u])  # (2, Dt): positive, negative
    else:
        group_dirs = _directions(rng, g, cfg.text_dim)  # (C, Dt)
    for k in range(g):
        rows = slice(layout["lexicon_start"] + k * LEXICON_PER_GROUP,
                     layout["lexicon_start"] + (k + 1) * LEXICON_PER_GROUP)
        emb[rows] += 2.0 * cfg.snr_text * group_dirs[k]
    k_dim = 1 if preset.task == "regression" else g
    projection, cue = {}, {}
    for m in ("audio", "vision"):
        d = getattr(cfg, f"{m}_dim")
        projection[m] = _directions(rng, k_dim, d)
        cue[m] = _directions(rng, 1, d)[0]
    return _World(layout, emb, projection, cue)


# --- one split -------------------------------------------------------------------------------
def _labels(preset: Preset, n: int, rng: np.random.Generator):
    """(score or class, label code c (n, K))."""
    if preset.task == "regression":
        magnitude = np.clip(np.abs(rng.normal(1.1, 0.7, n)), 1 / 3, 3.0)
        sign = np.where(rng.random(n) < preset.p_negative, -1.0, 1.0)
        score = np.round(sign * magnitude * 3) / 3
        score[rng.random(n) < preset.p_zero] = 0.0
        score = np.clip(score, -3.0, 3.0).astype(np.float32)
        return score, (score / 3.0)[:, None]
    y = rng.choice(len(preset.class_prior), size=n, p=np.asarray(preset.class_prior))
    # 0.7-strength one-hot codes: class evidence per frame a little above regression's typical
    # |s|/3 (about 0.4), so audio and vision still add to a dominant text with 4 or 7 classes.
    return y.astype(np.int64), 0.7 * np.eye(len(preset.class_prior), dtype=np.float32)[y]


def _expressive(cfg: SyntheticConfig, sarcastic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) bool: which modalities carry the sample's label, independently with probability
    expressive_<m>. A sample with none gets expressive text (something always shows the label),
    and a sarcastic sample always has expressive text (its flipped words are the sarcasm)."""
    n = len(sarcastic)
    p = np.array([getattr(cfg, k) for k in EXPRESSIVE])  # (3,)
    flags = rng.random((n, len(MODALITIES))) < p[None, :]
    flags[:, 0] |= sarcastic | ~flags.any(1)
    return flags


def _frames(n: int, t_max: int, lengths: np.ndarray, dim: int, evidence: np.ndarray,
            snr: float, cue: np.ndarray, sarcastic: np.ndarray, cfg: SyntheticConfig,
            rng: np.random.Generator) -> np.ndarray:
    """Audio/vision features (n, t_max, dim): noise + evidence on random frames, zero padding."""
    valid = np.arange(t_max)[None, :] < lengths[:, None]  # (n, T)
    is_evidence = (rng.random((n, t_max)) < cfg.evidence_rate) & valid
    one = np.minimum((rng.random(n) * lengths).astype(np.int64), lengths - 1)
    is_evidence[np.arange(n), one] = True  # at least one evidence frame per sample
    x = rng.standard_normal((n, t_max, dim), dtype=np.float32)  # (n, T, D)
    x += 0.5 * rng.standard_normal((n, 1, dim), dtype=np.float32)  # speaker offset
    signal = snr * evidence + cfg.sarcasm_cue * sarcastic[:, None] * cue[None, :]  # (n, D)
    x += is_evidence[:, :, None] * signal[:, None, :].astype(np.float32)
    x *= valid[:, :, None]
    return x


def _make_split(cfg: SyntheticConfig, world: _World, name: str, n: int, shifted: bool,
                rng: np.random.Generator) -> tuple[Split, dict]:
    preset = cfg.preset_info
    lay = world.layout
    g = lay["groups"]
    label, code = _labels(preset, n, rng)

    # Sarcasm: the text is written for the flipped label.
    if preset.task == "regression":
        eligible = label != 0
    else:
        flip = np.asarray(preset.sarcasm_flip)
        eligible = flip[label] >= 0
    sarcastic = eligible & (rng.random(n) < cfg.sarcasm)
    expressive = _expressive(cfg, sarcastic, rng)  # (n, 3) in MODALITIES order

    # Text tokens (n, T).
    t_max = cfg.text_len
    lengths = np.clip(np.round(rng.normal(0.6 * t_max, 0.2 * t_max, n)), 6, t_max).astype(np.int64)
    valid = np.arange(t_max)[None, :] < lengths[:, None]
    if preset.task == "regression":
        s_text = np.where(sarcastic, -label, label)
        p_sent = cfg.sentiment_rate * (0.3 + 0.7 * np.abs(s_text) / 3) * expressive[:, 0]
        p_pos = 1.0 / (1.0 + np.exp(-2.5 * s_text))
        group = np.where(rng.random((n, t_max)) < p_pos[:, None], 0, 1)
        label_group = np.where(label > 0, 0, np.where(label < 0, 1, rng.integers(0, 2, n)))
    else:
        y_text = np.where(sarcastic, flip[label], label)
        p_sent = cfg.sentiment_rate * expressive[:, 0]
        group = np.where(rng.random((n, t_max)) < 0.6, y_text[:, None],
                         rng.integers(0, g, (n, t_max)))
        label_group = label
    lexicon_word = (lay["lexicon_start"] + group * LEXICON_PER_GROUP
                    + rng.choice(LEXICON_PER_GROUP, size=(n, t_max), p=_zipf(LEXICON_PER_GROUP, 0.8)))
    filler_word = lay["filler_start"] + rng.choice(
        lay["filler_count"], size=(n, t_max), p=_zipf(lay["filler_count"], 1.0))
    tokens = np.where(rng.random((n, t_max)) < p_sent[:, None], lexicon_word, filler_word)

    # Language bias: one spurious word whose group follows the label (changed in `ood`).
    associated = (label_group + 1) % g if shifted else label_group
    other = (associated + rng.integers(1, g, n)) % g  # uniformly one of the other groups
    spur_group = np.where(rng.random(n) < cfg.spurious_agreement, associated, other)
    has_spur = rng.random(n) < cfg.spurious
    spur_word = (lay["spurious_start"] + spur_group * SPURIOUS_PER_GROUP
                 + rng.integers(0, SPURIOUS_PER_GROUP, n))
    pos = np.minimum((rng.random(n) * lengths).astype(np.int64), lengths - 1)
    rows = np.flatnonzero(has_spur)
    tokens[rows, pos[rows]] = spur_word[rows]
    tokens[rng.random((n, t_max)) < cfg.unk_rate] = UNK_ID
    tokens[~valid] = PAD_ID
    tokens = tokens.astype(np.int64)

    # Text features: embedding lookup + per-sample context + per-token noise; zero padding.
    text = world.embedding[tokens]  # (n, T, Dt)
    text += 0.5 * rng.standard_normal((n, 1, cfg.text_dim), dtype=np.float32)
    text += cfg.context_noise * rng.standard_normal(text.shape, dtype=np.float32)
    text *= valid[:, :, None]

    feats, lens = {"text": text}, {"text": lengths}
    for m in ("audio", "vision"):
        if cfg.aligned:
            t_m, len_m = t_max, lengths
        else:
            ratio = getattr(cfg, f"{m}_ratio")
            t_m = int(np.ceil(ratio * t_max))
            len_m = np.clip(np.round(lengths * ratio * rng.uniform(0.85, 1.15, n)), 1, t_m)
            len_m = len_m.astype(np.int64)
        # The label shows only where this modality is expressive, and never on sarcastic samples:
        # there it carries the cue alone, so resolving them takes the text and a cue together.
        shown = expressive[:, MODALITIES.index(m)] & ~sarcastic  # (n,)
        evidence = (code * shown[:, None]) @ world.projection[m]  # (n, D_m)
        feats[m] = _frames(n, t_m, len_m, getattr(cfg, f"{m}_dim"), evidence,
                           getattr(cfg, f"snr_{m}"), world.cue[m], sarcastic, cfg, rng)
        lens[m] = len_m

    split = Split(
        text=feats["text"], audio=feats["audio"], vision=feats["vision"], lengths=lens,
        ids=np.array([f"{cfg.preset}-{name}-{i:06d}" for i in range(n)]),
        label_reg=label if preset.task == "regression" else None,
        label_cls=label if preset.task == "classification" else None,
        tokens=tokens,
    )
    truth = {"sarcastic": sarcastic, "spurious_group": np.where(has_spur, spur_group, -1),
             "label_group": label_group,
             **{f"expressive_{m}": expressive[:, k] for k, m in enumerate(MODALITIES)}}
    return split, truth


def split_sizes(cfg: SyntheticConfig) -> dict[str, int]:
    scales = {"train": cfg.scale, "valid": cfg.valid_scale or cfg.scale, "test": cfg.scale}
    sizes = {name: max(16, int(round(n * scales[name])))
             for name, n in zip(SPLITS, cfg.preset_info.sizes)}
    if cfg.ood:
        sizes["ood"] = sizes["test"]
    return sizes


def generate_with_truth(cfg: SyntheticConfig) -> tuple[Dataset, dict[str, dict]]:
    """The dataset plus per-split latent truth (sarcasm flags, spurious groups) for analysis."""
    preset = cfg.preset_info
    root = np.random.SeedSequence([cfg.seed, zlib.crc32(preset.name.encode())])
    world_seq, *split_seqs = root.spawn(1 + 4)
    world = _build_world(cfg, np.random.default_rng(world_seq))
    sizes = split_sizes(cfg)
    splits, truth = {}, {}
    for (name, n), seq in zip(sizes.items(), split_seqs):
        splits[name], truth[name] = _make_split(cfg, world, name, n, name == "ood",
                                                np.random.default_rng(seq))
    lay = world.layout
    group_names = ("positive", "negative") if preset.task == "regression" else preset.class_names
    meta = {
        "generator": "affectune.data.synthetic",
        "config": dataclasses.asdict(cfg),
        "sizes": sizes,
        "sarcastic_fraction": {k: float(v["sarcastic"].mean()) for k, v in truth.items()},
        "lexicon_ids": {name: [lay["lexicon_start"] + k * LEXICON_PER_GROUP,
                               lay["lexicon_start"] + (k + 1) * LEXICON_PER_GROUP]
                        for k, name in enumerate(group_names)},
        "spurious_ids": {name: [lay["spurious_start"] + k * SPURIOUS_PER_GROUP,
                                lay["spurious_start"] + (k + 1) * SPURIOUS_PER_GROUP]
                         for k, name in enumerate(group_names)},
        "ood_shift": "reversed" if preset.task == "regression" else "class k -> words of k+1",
    }
    ds = Dataset(
        source=canonical(cfg), splits=splits, task=preset.task,
        num_classes=len(preset.class_names), class_names=preset.class_names,
        vocab_size=cfg.vocab_size, aligned=cfg.aligned, meta=meta,
    )
    return ds, truth


def generate(cfg: SyntheticConfig) -> Dataset:
    """The synthetic dataset for `cfg` (validated by `Dataset`)."""
    return generate_with_truth(cfg)[0]
