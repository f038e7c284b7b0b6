"""The missing-modality protocol: the seeded test grid (numpy) and the train-time policies (torch).

Test protocol (DQF's, the platform default): a subset S of modalities is subject to missingness
and, inside every modality of S, each present frame is dropped with probability r. Masks are a
pure function of (seed, sample id, modality, pattern) and the rate, so every method, every trial
and every machine sees exactly the same inputs. Dropped frames are filled (zeros by default).

Train-time policies are the methods' own recipes (DQF, CIDer, UMDF, MCULoRA, MITR-DNet),
implemented here once. They take a `Batch` and a `torch.Generator` (the only source of
randomness) and return a new `Batch` whose `dropped` masks record the removed frames and whose
features are zero at those frames. Padding (frames beyond a sample's length) is never dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from affectune import MODALITIES, SHORT
from affectune.batch import Batch
from affectune.data.schema import UNK_ID

# ----------------------------------------------------------------------------- subsets and grid

_V, _A, _T = "vision", "audio", "text"

SUBSETS: tuple[frozenset[str], ...] = (
    frozenset({_V}),
    frozenset({_A}),
    frozenset({_T}),
    frozenset({_V, _A}),
    frozenset({_V, _T}),
    frozenset({_A, _T}),
    frozenset({_V, _A, _T}),
)
"""The 7 non-empty modality subsets in DQF Table 2's row order (vision, audio, text, the three
pairs, all three); shown by `format_subset` as {v},{a},{t},{a,v},{t,v},{t,a},{t,a,v}."""

FULL_SET: frozenset[str] = frozenset(MODALITIES)

RATES: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))
"""Missing rates 0.0, 0.1, ..., 1.0 (exact one-decimal values)."""

PATTERNS: tuple[str, ...] = ("random", "block")
FILLS: tuple[str, ...] = ("zero", "gaussian")

_LETTER_TO_MODALITY = {letter: m for m, letter in SHORT.items()}


def _check_subset(subset: frozenset[str] | set[str] | Sequence[str]) -> frozenset[str]:
    s = frozenset(subset)
    unknown = s - FULL_SET
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}")
    if not s:
        raise ValueError("a modality subset must not be empty")
    return s


def subset_label(subset: frozenset[str] | set[str] | Sequence[str]) -> str:
    """Short label with letters in canonical t, a, v order: "t", "a", "v", "ta", "tv", "av", "tav"."""
    s = _check_subset(subset)
    return "".join(SHORT[m] for m in MODALITIES if m in s)


def parse_subset(label: str) -> frozenset[str]:
    """Inverse of `subset_label`; accepts any letter order ("vat" == "tav")."""
    if not isinstance(label, str) or not label:
        raise ValueError(f"subset label must be a non-empty string of letters t/a/v, got {label!r}")
    letters = label.strip().lower()
    bad = [c for c in letters if c not in _LETTER_TO_MODALITY]
    if bad:
        raise ValueError(f"subset label {label!r} has unknown letters {bad}; use t (text), a (audio), v (vision)")
    if len(set(letters)) != len(letters):
        raise ValueError(f"subset label {label!r} repeats a letter")
    return frozenset(_LETTER_TO_MODALITY[c] for c in letters)


def format_subset(subset: frozenset[str] | set[str] | Sequence[str] | str) -> str:
    """Display form of a subset or its label, in the same canonical t, a, v letter order as the
    labels: "ta" -> "{t,a}". The one formatter (CLI tables, study summaries, the dashboard)."""
    label = subset_label(parse_subset(subset) if isinstance(subset, str) else subset)
    return "{" + ",".join(label) + "}"


def _check_rate(rate: float) -> float:
    r = float(rate)
    if not (0.0 <= r <= 1.0):  # also rejects NaN
        raise ValueError(f"missing rate must be in [0, 1], got {rate!r}")
    return r


def test_grid(
    subsets: Sequence[frozenset[str]] = SUBSETS, rates: Sequence[float] = RATES
) -> list[tuple[frozenset[str], float]]:
    """All (subset, rate) cells in subset-major order, except ({t,a,v}, 1.0): nothing would be left."""
    cells = []
    for s in subsets:
        s = _check_subset(s)
        for r in rates:
            r = _check_rate(r)
            if s == FULL_SET and r == 1.0:
                continue
            cells.append((s, r))
    return cells


test_grid.__test__ = False  # not a pytest test despite its name

INTER_CONDITIONS: tuple[frozenset[str], ...] = (
    frozenset({_T}),
    frozenset({_A}),
    frozenset({_V}),
    frozenset({_T, _A}),
    frozenset({_T, _V}),
    frozenset({_A, _V}),
    frozenset({_T, _A, _V}),
)
"""UMDF-style inter-modality conditions: the AVAILABLE modality sets {t},{a},{v},{t,a},{t,v},{a,v},{t,a,v}."""

SUBSET_ORDER: tuple[str, ...] = tuple(subset_label(s) for s in SUBSETS)
"""Labels of SUBSETS in their row order: the order of every table and selector of missing subsets."""
CONDITION_ORDER: tuple[str, ...] = tuple(subset_label(s) for s in INTER_CONDITIONS)
"""Labels of INTER_CONDITIONS in their row order."""


def inter_condition_dropped(available: frozenset[str] | set[str] | Sequence[str]) -> frozenset[str]:
    """The wholly missing modalities of an inter-modality condition (empty for the complete case)."""
    return FULL_SET - _check_subset(available)


# ----------------------------------------------------------------------------- test-time masks

_HASH_DOMAIN = "affectune.missing.v1"


def _sample_rng(seed: int, sample_id: str, modality: str, pattern: str) -> np.random.Generator:
    """A numpy RNG that depends only on (seed, sample id, modality, pattern), stable across runs,
    processes and machines (blake2b, not Python's salted hash())."""
    key = repr((_HASH_DOMAIN, int(seed), str(sample_id), modality, pattern)).encode("utf-8")
    digest = hashlib.blake2b(key, digest_size=16).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return modality


def _check_pattern(pattern: str) -> str:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown missing pattern {pattern!r}; expected one of {PATTERNS}")
    return pattern


def frame_uniforms(ids: Sequence[str], T: int, modality: str, *, seed: int, pattern: str) -> np.ndarray:
    """(N, T) float64 uniforms in [0, 1), row i a pure function of (seed, ids[i], modality, pattern).

    Row i is the first T draws of that sample's own stream, so it does not depend on the other
    samples in `ids` nor on their order, and a larger T only appends columns (prefix-stable).
    For pattern "random" column t is frame t's uniform; for "block" column 0 is the draw that
    places the block (the other columns are unused).
    """
    _check_modality(modality)
    _check_pattern(pattern)
    if int(T) < 0:
        raise ValueError(f"T must be >= 0, got {T}")
    T = int(T)
    out = np.empty((len(ids), T), dtype=np.float64)  # (N, T)
    for i, sample_id in enumerate(ids):
        out[i] = _sample_rng(seed, sample_id, modality, pattern).random(T)
    return out


def _block_length(rate: float, lengths: np.ndarray) -> np.ndarray:
    """round(rate * length) with halves rounded up (not banker's), robust to 0.1-step float error."""
    return np.minimum(np.floor(rate * lengths + 0.5 + 1e-9).astype(np.int64), lengths)


def frame_mask(
    ids: Sequence[str],
    lengths: np.ndarray,
    T: int,
    modality: str,
    rate: float,
    *,
    seed: int,
    pattern: str = "random",
    uniforms: np.ndarray | None = None,
) -> np.ndarray:
    """(N, T) bool, True = frame dropped; never True at padding (t >= lengths[i]).

    "random": frame t dropped iff t < length and u[i, t] < rate, so each present frame is dropped
    independently with probability `rate`, and masks are nested across rates (the mask at 0.3
    contains the mask at 0.2). "block": one contiguous run of round(rate * length) frames inside
    [0, length), starting at floor(u[i, 0] * (length - k + 1)).
    Pass `uniforms` (from `frame_uniforms` with the same arguments) to evaluate many rates cheaply.
    """
    rate = _check_rate(rate)
    _check_pattern(pattern)
    lengths = np.asarray(lengths)
    n = len(ids)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},) to match ids, got {lengths.shape}")
    if not np.issubdtype(lengths.dtype, np.integer):
        if not np.all(np.mod(lengths, 1) == 0):
            raise ValueError("lengths must be integers")
    lengths = lengths.astype(np.int64)
    if (lengths < 0).any() or (lengths > T).any():
        raise ValueError(f"lengths must lie in [0, T={T}], got range [{lengths.min()}, {lengths.max()}]")
    if uniforms is None:
        uniforms = frame_uniforms(ids, T, modality, seed=seed, pattern=pattern)
    elif uniforms.shape != (n, T):
        raise ValueError(f"uniforms must have shape ({n}, {T}), got {uniforms.shape}")
    frames = np.arange(T)[None, :]  # (1, T)
    inside = frames < lengths[:, None]  # (N, T)
    if pattern == "random":
        return inside & (uniforms < rate)
    k = _block_length(rate, lengths)  # (N,) block length per sample
    if T == 0:
        return np.zeros((n, 0), dtype=bool)
    start = np.floor(uniforms[:, 0] * (lengths - k + 1)).astype(np.int64)  # (N,) in [0, length - k]
    return (frames >= start[:, None]) & (frames < (start + k)[:, None])


ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


def fill_features(x: ArrayOrTensor, dropped: ArrayOrTensor, *, fill: str = "zero", seed: int = 0) -> ArrayOrTensor:
    """A copy of x (B, T, D) with dropped (B, T) frames replaced by zeros or seeded N(0, 1) noise.

    Works on numpy arrays and torch tensors alike; the input is never modified.
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}")
    if tuple(x.shape[:2]) != tuple(dropped.shape) or x.ndim != 3:
        raise ValueError(f"features (B, T, D) and dropped (B, T) disagree: {tuple(x.shape)} vs {tuple(dropped.shape)}")
    if isinstance(x, torch.Tensor):
        d = torch.as_tensor(dropped, dtype=torch.bool, device=x.device).unsqueeze(-1)  # (B, T, 1)
        if fill == "zero":
            return x.masked_fill(d, 0.0)
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(tuple(x.shape), generator=gen, dtype=torch.float32).to(x.device, x.dtype)
        return torch.where(d, noise, x)
    x = np.asarray(x)
    d = np.asarray(dropped, dtype=bool)[..., None]  # (B, T, 1)
    if fill == "zero":
        return np.where(d, np.zeros((), dtype=x.dtype), x)
    noise = np.random.default_rng(int(seed)).standard_normal(x.shape).astype(x.dtype, copy=False)
    return np.where(d, noise, x)


# ----------------------------------------------------------------------------- applying masks to a Batch


def apply_dropped(
    batch: Batch,
    dropped: dict[str, torch.Tensor],
    *,
    fill: str = "zero",
    seed: int = 0,
    record: bool = True,
    mask_tokens: bool = True,
    absent: Sequence[str] | torch.Tensor = (),
) -> Batch:
    """A new Batch with the given (B, T_m) frames removed for each modality in `dropped`.

    Drops are restricted to valid frames, combined (OR) with the batch's existing drops, and the
    features filled. With `record=False` (test time) the batch's `dropped` masks are left as they
    were, so a model cannot see the evaluation masks. With `mask_tokens`, dropped text positions
    get UNK_ID in `tokens` (a missing word must not leak through its id; CIDer's [UNK] vector).
    `absent` marks modalities absent as a whole in `Batch.available`: modality names (every
    sample) or a (B, 3) bool tensor (True = absent), whatever `record` says, because a model may
    legitimately know that a modality is missing entirely (not which frames are).
    """
    unknown = set(dropped) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities in dropped masks: {sorted(unknown)}")
    changes: dict = {}
    new_dropped = dict(batch.dropped)
    for k, m in enumerate(MODALITIES):
        if m not in dropped:
            continue
        valid = batch.valid[m]  # (B, T_m)
        mask = torch.as_tensor(dropped[m], dtype=torch.bool, device=valid.device)
        if mask.shape != valid.shape:
            raise ValueError(f"dropped mask for {m} has shape {tuple(mask.shape)}, expected {tuple(valid.shape)}")
        total = (mask & valid) | batch.dropped[m]  # (B, T_m)
        changes[m] = fill_features(batch.features(m), total, fill=fill, seed=int(seed) * 3 + k)
        if m == "text" and mask_tokens and batch.tokens is not None:
            changes["tokens"] = batch.tokens.masked_fill(total & valid, UNK_ID)
        new_dropped[m] = total
    if record:
        changes["dropped"] = new_dropped
    gone = _absent_matrix(absent, batch)
    if gone is not None:
        changes["available"] = batch.available & ~gone
    return batch.replace(**changes)


def _absent_matrix(absent: Sequence[str] | torch.Tensor, batch: Batch) -> torch.Tensor | None:
    """(B, 3) bool "absent as a whole" from modality names or a (B, 3) tensor; None if nothing is."""
    if isinstance(absent, torch.Tensor):
        if tuple(absent.shape) != (batch.size, len(MODALITIES)):
            raise ValueError(f"absent must have shape ({batch.size}, {len(MODALITIES)}), got {tuple(absent.shape)}")
        return absent.to(device=batch.available.device, dtype=torch.bool)
    names = set(absent)
    if not names:
        return None
    unknown = names - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities in absent: {sorted(unknown)}")
    row = torch.tensor([m in names for m in MODALITIES], dtype=torch.bool, device=batch.available.device)
    return row.expand(batch.size, -1)


# ----------------------------------------------------------------------------- train-time policies

AVAILABLE_COMBINATIONS: tuple[frozenset[str], ...] = SUBSETS
"""The 7 non-empty AVAILABLE-modality combinations, in SUBSETS order (index = combination id)."""

# (7, 3) bool: row c says which modalities (MODALITIES order) combination c keeps.
_COMBINATION_MATRIX = torch.tensor([[m in c for m in MODALITIES] for c in AVAILABLE_COMBINATIONS], dtype=torch.bool)
FULL_COMBINATION_INDEX: int = AVAILABLE_COMBINATIONS.index(FULL_SET)
_BIT_WEIGHTS = torch.tensor([1, 2, 4])  # availability bits of (text, audio, vision)
# (8,) long: availability code -> combination id; code 0 (nothing available) -> the full set.
_CODE_TO_COMBINATION = torch.full((8,), FULL_COMBINATION_INDEX, dtype=torch.long)
for _c, _row in enumerate(_COMBINATION_MATRIX):
    _CODE_TO_COMBINATION[int((_row.long() * _BIT_WEIGHTS).sum())] = _c


def _check_generator(generator: torch.Generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"train-time policies need a torch.Generator, got {type(generator).__name__}")
    return generator


def _rand(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniforms drawn on the generator's device (the only randomness source), moved to `device`."""
    return torch.rand(shape, generator=gen, device=gen.device).to(device)


def _frame_drop(batch: Batch, gen: torch.Generator, rate_per_sample: dict[str, torch.Tensor]) -> Batch:
    """Drop each valid frame of modality m independently with probability rate_per_sample[m] (B,) or (B, T_m)."""
    dropped = {}
    for m in MODALITIES:
        if m not in rate_per_sample:
            continue
        valid = batch.valid[m]  # (B, T_m)
        rate = rate_per_sample[m].to(valid.device)
        if rate.ndim == 1:
            rate = rate[:, None]  # (B, 1)
        dropped[m] = (_rand(tuple(valid.shape), gen, valid.device) < rate) & valid
    return apply_dropped(batch, dropped)


def uniform_ratio(batch: Batch, generator: torch.Generator) -> Batch:
    """DQF: per modality and per mini-batch a ratio g_m ~ U(0, 1); each present frame dropped w.p. g_m."""
    gen = _check_generator(generator)
    g = torch.rand(len(MODALITIES), generator=gen, device=gen.device)  # (3,)
    b = batch.size
    return _frame_drop(batch, gen, {m: g[k].expand(b) for k, m in enumerate(MODALITIES)})


def fixed_rate(batch: Batch, generator: torch.Generator, rate: float, modalities: Sequence[str] = MODALITIES) -> Batch:
    """MITR-DNet (TFR-Net style): each present frame of the listed modalities dropped w.p. `rate`."""
    gen = _check_generator(generator)
    rate = _check_rate(rate)
    mods = _check_subset(modalities)
    return _frame_drop(batch, gen, {m: torch.full((batch.size,), rate) for m in MODALITIES if m in mods})


def random_rate(
    batch: Batch, generator: torch.Generator, max_rate: float = 1.0, modalities: Sequence[str] = MODALITIES
) -> Batch:
    """MITR-DNet random-rate training: per sample r ~ U(0, max_rate), shared by the listed modalities."""
    gen = _check_generator(generator)
    max_rate = _check_rate(max_rate)
    mods = _check_subset(modalities)
    r = torch.rand(batch.size, generator=gen, device=gen.device) * max_rate  # (B,)
    return _frame_drop(batch, gen, {m: r for m in MODALITIES if m in mods})


def rmfm(batch: Batch, generator: torch.Generator) -> Batch:
    """CIDer's random modality feature masking: per frame p ~ U(0, 1), frame dropped w.p. p (50% overall)."""
    gen = _check_generator(generator)
    rates = {m: _rand(tuple(batch.valid[m].shape), gen, batch.valid[m].device) for m in MODALITIES}  # (B, T_m)
    return _frame_drop(batch, gen, rates)


def drop_modalities(batch: Batch, available: torch.Tensor) -> Batch:
    """Remove whole modalities per sample: available (B, 3) bool in MODALITIES order; False => all frames dropped."""
    available = torch.as_tensor(available, dtype=torch.bool)
    if tuple(available.shape) != (batch.size, len(MODALITIES)):
        raise ValueError(f"available must have shape ({batch.size}, {len(MODALITIES)}), got {tuple(available.shape)}")
    dropped = {}
    for k, m in enumerate(MODALITIES):
        valid = batch.valid[m]  # (B, T_m)
        dropped[m] = valid & ~available[:, k].to(valid.device)[:, None]
    return apply_dropped(batch, dropped, absent=~available)


def combination_matrix(index: torch.Tensor) -> torch.Tensor:
    """(B, 3) bool availability of MODALITIES for combination ids (B,) (AVAILABLE_COMBINATIONS order)."""
    index = torch.as_tensor(index, dtype=torch.long)
    return _COMBINATION_MATRIX.to(index.device)[index]


def combination_sampling(
    batch: Batch, generator: torch.Generator, probs: torch.Tensor
) -> tuple[Batch, torch.Tensor]:
    """MCULoRA: per sample draw which combination is AVAILABLE with `probs` (7,), drop the others wholly.

    Returns the new batch and the (B,) long combination ids (AVAILABLE_COMBINATIONS order).
    """
    gen = _check_generator(generator)
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if tuple(probs.shape) != (len(AVAILABLE_COMBINATIONS),):
        raise ValueError(f"probs must have shape ({len(AVAILABLE_COMBINATIONS)},), got {tuple(probs.shape)}")
    if not torch.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"probs must be finite, non-negative and not all zero, got {probs.tolist()}")
    # Inverse-CDF sampling: one uniform per sample from the generator, whatever its device.
    cdf = torch.cumsum(probs / probs.sum(), 0)  # (7,)
    u = torch.rand(batch.size, generator=gen, device=gen.device, dtype=torch.float64).cpu()  # (B,)
    # Zero-probability combinations have empty CDF intervals; clamping to the last positive one
    # covers u >= cdf[-1] (float round-off) without ever choosing a zero-probability combination.
    last_positive = int(torch.nonzero(probs > 0).max())
    index = torch.searchsorted(cdf, u, right=True).clamp_max(last_positive)  # (B,)
    index = index.to(batch.label.device)
    return drop_modalities(batch, combination_matrix(index)), index


def combination_index(batch: Batch) -> torch.Tensor:
    """(B,) long id of each sample's available combination, from `Batch.available`.

    Reads the modality-level flags only (never frames or fill values), so it is legitimate at
    prediction time and identical under zero and gaussian fill. A sample with nothing available
    maps to the full set (its inputs are all fill values anyway); it never raises.
    """
    avail = batch.available  # (B, 3)
    # Encode availability as bits and look each code up: code -> combination id.
    code = (avail.long() * _BIT_WEIGHTS.to(avail.device)).sum(dim=1)  # (B,) in [0, 8)
    return _CODE_TO_COMBINATION.to(avail.device)[code]


def two_views(batch: Batch, generator: torch.Generator, max_frame_rate: float = 0.5,
              intact_prob: float = 0.0) -> tuple[Batch, Batch]:
    """UMDF: two heterogeneous missing versions of the same samples.

    Inter-modality level: view a picks, per sample, an available combination uniformly among the 7
    (complete case included); view b picks uniformly among the 6 OTHER combinations, so the two
    views always differ at the inter-modality level while each view's combination is still uniform
    over the 7. Intra-modality level, independently in each view and sample: with probability
    `intact_prob` the available modalities keep all their frames (so the fully complete version,
    all three modalities and no frame dropped, has probability intact_prob / 7 per view); otherwise
    every available modality gets a rate r ~ U(0, max_frame_rate) and its present frames are
    dropped with probability r.
    """
    gen = _check_generator(generator)
    max_frame_rate = _check_rate(max_frame_rate)
    if not 0.0 <= float(intact_prob) <= 1.0:  # also rejects NaN
        raise ValueError(f"intact_prob must be a probability in [0, 1], got {intact_prob!r}")
    n_comb = len(AVAILABLE_COMBINATIONS)
    b = batch.size
    idx_a = torch.randint(n_comb, (b,), generator=gen, device=gen.device).cpu()  # (B,)
    shift = torch.randint(1, n_comb, (b,), generator=gen, device=gen.device).cpu()  # (B,) in [1, 6]
    idx_b = (idx_a + shift) % n_comb
    views = []
    for idx in (idx_a, idx_b):
        view = drop_modalities(batch, combination_matrix(idx))
        rates = {m: torch.rand(b, generator=gen, device=gen.device) * max_frame_rate for m in MODALITIES}
        if intact_prob > 0:  # drawn only when used, so intact_prob=0 keeps the original random stream
            intact = torch.rand(b, generator=gen, device=gen.device) < intact_prob  # (B,)
            rates = {m: r.masked_fill(intact, 0.0) for m, r in rates.items()}
        views.append(_frame_drop(view, gen, rates))
    return views[0], views[1]
