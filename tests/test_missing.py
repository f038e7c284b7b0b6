"""The missing-modality protocol: seeded test masks, fills and the train-time policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from affectune import MODALITIES
from affectune import missing as M
from affectune.batch import Batch
from affectune.data.schema import UNK_ID

FAST = settings(max_examples=25, deadline=None)
DIMS = {"text": 3, "audio": 2, "vision": 4}


def make_batch(lengths: dict[str, list[int]], T: dict[str, int], seed: int = 0, tokens: bool = True) -> Batch:
    """A batch with random features, padding beyond each length, nothing dropped."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths["text"])
    valid = {m: torch.arange(T[m])[None, :] < torch.tensor(lengths[m])[:, None] for m in MODALITIES}  # (B, T_m)
    feats = {m: torch.randn(b, T[m], DIMS[m], generator=g) * valid[m][..., None] for m in MODALITIES}
    tok = torch.randint(3, 50, (b, T["text"]), generator=g).masked_fill(~valid["text"], 0) if tokens else None
    return Batch(
        **feats, valid=valid, dropped={m: torch.zeros_like(valid[m]) for m in MODALITIES},
        label=torch.zeros(b), index=torch.arange(b), tokens=tok,
    )


@st.composite
def batches(draw, max_b: int = 6, max_t: int = 8) -> Batch:
    b = draw(st.integers(1, max_b))
    T = {m: draw(st.integers(1, max_t)) for m in MODALITIES}
    lengths = {m: draw(st.lists(st.integers(0, T[m]), min_size=b, max_size=b)) for m in MODALITIES}
    return make_batch(lengths, T, seed=draw(st.integers(0, 1000)))


def big_batch(b: int = 64, t: int = 30, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    lengths = {m: rng.integers(t // 2, t + 1, size=b).tolist() for m in MODALITIES}
    return make_batch(lengths, {m: t for m in MODALITIES}, seed=seed)


def assert_batches_equal(a: Batch, b: Batch) -> None:
    for m in MODALITIES:
        assert torch.equal(a.features(m), b.features(m))
        assert torch.equal(a.dropped[m], b.dropped[m])
    assert (a.tokens is None) == (b.tokens is None)
    if a.tokens is not None:
        assert torch.equal(a.tokens, b.tokens)


ids_st = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8, unique=True)


# ----------------------------------------------------------------------------- subsets and grid


def test_subsets_follow_dqf_table_order_and_labels():
    assert [M.subset_label(s) for s in M.SUBSETS] == ["v", "a", "t", "av", "tv", "ta", "tav"]
    assert len(set(M.SUBSETS)) == 7
    for s in M.SUBSETS:
        assert M.parse_subset(M.subset_label(s)) == s
    assert M.parse_subset("vat") == M.parse_subset("TAV") == frozenset(MODALITIES)
    assert M.parse_subset("at") == frozenset({"text", "audio"})


@pytest.mark.parametrize("bad", ["", "x", "tt", "t a", 3])
def test_parse_subset_rejects_bad_labels(bad):
    with pytest.raises(ValueError, match="subset label"):
        M.parse_subset(bad)


def test_subset_label_rejects_unknown_or_empty():
    with pytest.raises(ValueError, match="unknown modalities"):
        M.subset_label({"text", "smell"})
    with pytest.raises(ValueError, match="empty"):
        M.subset_label(set())


def test_rates_are_exact_decimals():
    assert M.RATES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_grid_has_76_cells_without_full_set_at_rate_one():
    grid = M.test_grid()
    assert len(grid) == 7 * 11 - 1 == 76
    assert len(set(grid)) == 76
    full = frozenset(MODALITIES)
    assert (full, 1.0) not in grid
    assert (full, 0.9) in grid and (frozenset({"text"}), 1.0) in grid
    assert M.test_grid([frozenset({"audio"})], [0.0, 0.5]) == [(frozenset({"audio"}), 0.0), (frozenset({"audio"}), 0.5)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.test_grid(rates=[1.5])


def test_inter_conditions():
    assert [M.subset_label(s) for s in M.INTER_CONDITIONS] == ["t", "a", "v", "ta", "tv", "av", "tav"]
    assert M.inter_condition_dropped({"text"}) == frozenset({"audio", "vision"})
    assert M.inter_condition_dropped(frozenset(MODALITIES)) == frozenset()
    assert M.inter_condition_dropped(M.parse_subset("av")) == frozenset({"text"})


# ----------------------------------------------------------------------------- test-time masks


def test_uniforms_are_pinned_across_versions():
    """Golden values: changing the hash or the RNG would silently change every study's masks."""
    u = M.frame_uniforms(["a", "b"], 3, "audio", seed=0, pattern="random")
    again = M.frame_uniforms(["a", "b"], 3, "audio", seed=0, pattern="random")
    np.testing.assert_array_equal(u, again)
    assert u.shape == (2, 3) and u.dtype == np.float64
    np.testing.assert_allclose(u, GOLDEN_UNIFORMS, rtol=0, atol=1e-15)


# frame_uniforms(["a", "b"], 3, "audio", seed=0, pattern="random") as first released (protocol v1).
GOLDEN_UNIFORMS = np.array([
    [0.7953256486114474, 0.23616973066878988, 0.26090551691131747],
    [0.07933958369232963, 0.19366513643706462, 0.35481246787429443],
])


@FAST
@given(ids=ids_st, T=st.integers(0, 12), seed=st.integers(0, 2**31), data=st.data())
def test_uniforms_independent_of_batch_composition_and_prefix_stable(ids, T, seed, data):
    mod = data.draw(st.sampled_from(MODALITIES))
    full = M.frame_uniforms(ids, T, mod, seed=seed, pattern="random")
    assert ((full >= 0) & (full < 1)).all()
    perm = data.draw(st.permutations(range(len(ids))))
    permuted = M.frame_uniforms([ids[i] for i in perm], T, mod, seed=seed, pattern="random")
    np.testing.assert_array_equal(permuted, full[list(perm)])
    for i, sid in enumerate(ids):
        np.testing.assert_array_equal(M.frame_uniforms([sid], T, mod, seed=seed, pattern="random")[0], full[i])
    longer = M.frame_uniforms(ids, T + 5, mod, seed=seed, pattern="random")
    np.testing.assert_array_equal(longer[:, :T], full)


def test_uniforms_depend_on_seed_modality_pattern_and_id():
    base = M.frame_uniforms(["s1"], 20, "text", seed=0, pattern="random")
    for other in (
        M.frame_uniforms(["s1"], 20, "text", seed=1, pattern="random"),
        M.frame_uniforms(["s1"], 20, "audio", seed=0, pattern="random"),
        M.frame_uniforms(["s1"], 20, "text", seed=0, pattern="block"),
        M.frame_uniforms(["s2"], 20, "text", seed=0, pattern="random"),
    ):
        assert not np.array_equal(base, other)


@st.composite
def mask_cases(draw):
    n = draw(st.integers(1, 8))
    T = draw(st.integers(0, 15))
    ids = [f"id{k}" for k in draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))]
    lengths = np.array(draw(st.lists(st.integers(0, T), min_size=n, max_size=n)), dtype=np.int64)
    return ids, lengths, T, draw(st.sampled_from(MODALITIES)), draw(st.integers(0, 2**31))


@FAST
@given(case=mask_cases(), rate=st.sampled_from(M.RATES) | st.floats(0, 1), pattern=st.sampled_from(M.PATTERNS))
def test_masks_never_touch_padding_and_are_deterministic(case, rate, pattern):
    ids, lengths, T, mod, seed = case
    mask = M.frame_mask(ids, lengths, T, mod, rate, seed=seed, pattern=pattern)
    assert mask.shape == (len(ids), T) and mask.dtype == bool
    padding = np.arange(T)[None, :] >= lengths[:, None]
    assert not (mask & padding).any()
    np.testing.assert_array_equal(mask, M.frame_mask(ids, lengths, T, mod, rate, seed=seed, pattern=pattern))
    # The same sample alone gets the same mask as inside the batch.
    alone = M.frame_mask(ids[:1], lengths[:1], T, mod, rate, seed=seed, pattern=pattern)
    np.testing.assert_array_equal(alone[0], mask[0])
    # Precomputed uniforms give the same answer.
    u = M.frame_uniforms(ids, T, mod, seed=seed, pattern=pattern)
    np.testing.assert_array_equal(M.frame_mask(ids, lengths, T, mod, rate, seed=seed, pattern=pattern, uniforms=u), mask)


@FAST
@given(case=mask_cases(), pattern=st.sampled_from(M.PATTERNS))
def test_rate_zero_drops_nothing_and_rate_one_drops_every_present_frame(case, pattern):
    ids, lengths, T, mod, seed = case
    inside = np.arange(T)[None, :] < lengths[:, None]
    assert not M.frame_mask(ids, lengths, T, mod, 0.0, seed=seed, pattern=pattern).any()
    np.testing.assert_array_equal(M.frame_mask(ids, lengths, T, mod, 1.0, seed=seed, pattern=pattern), inside)


@FAST
@given(case=mask_cases(), r1=st.floats(0, 1), r2=st.floats(0, 1))
def test_random_masks_are_nested_across_rates(case, r1, r2):
    ids, lengths, T, mod, seed = case
    lo, hi = sorted((r1, r2))
    small = M.frame_mask(ids, lengths, T, mod, lo, seed=seed)
    large = M.frame_mask(ids, lengths, T, mod, hi, seed=seed)
    assert not (small & ~large).any()


@FAST
@given(case=mask_cases(), rate=st.floats(0, 1))
def test_block_mask_is_one_contiguous_run_of_rounded_length(case, rate):
    ids, lengths, T, mod, seed = case
    mask = M.frame_mask(ids, lengths, T, mod, rate, seed=seed, pattern="block")
    for row, length in zip(mask, lengths):
        k = int(math.floor(rate * length + 0.5 + 1e-9))  # round half up
        assert row.sum() == k
        if k:
            where = np.flatnonzero(row)
            assert where[-1] - where[0] + 1 == k  # contiguous
            assert where[-1] < length


def test_block_lengths_hand_computed():
    ids = ["a", "b", "c", "d"]
    lengths = np.array([10, 5, 3, 0])
    mask = M.frame_mask(ids, lengths, 10, "vision", 0.5, seed=3, pattern="block")
    assert mask.sum(axis=1).tolist() == [5, 3, 2, 0]  # 5.0, 2.5 -> 3, 1.5 -> 2, 0
    mask = M.frame_mask(ids, lengths, 10, "vision", 0.3, seed=3, pattern="block")
    assert mask.sum(axis=1).tolist() == [3, 2, 1, 0]  # 3.0, 1.5 -> 2, 0.9 -> 1, 0


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_random_drop_fraction_matches_rate(rate):
    n, T = 400, 50
    ids = [f"utt{k}" for k in range(n)]
    lengths = np.random.default_rng(0).integers(10, T + 1, size=n)
    mask = M.frame_mask(ids, lengths, T, "audio", rate, seed=11)
    present = int(lengths.sum())
    frac = mask.sum() / present
    sd = math.sqrt(rate * (1 - rate) / present)
    assert abs(frac - rate) < 5 * sd, (frac, rate, sd)
    # Per-frame position the rate holds too (no positional bias): first vs second half of the frames.
    first = mask[:, :5].sum() / (5 * n)
    assert abs(first - rate) < 5 * math.sqrt(rate * (1 - rate) / (5 * n))


def test_mask_validation_errors():
    ids, lengths = ["a", "b"], np.array([2, 3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.frame_mask(ids, lengths, 4, "text", 1.1, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.frame_mask(ids, lengths, 4, "text", float("nan"), seed=0)
    with pytest.raises(ValueError, match="pattern"):
        M.frame_mask(ids, lengths, 4, "text", 0.5, seed=0, pattern="burst")
    with pytest.raises(ValueError, match="modality"):
        M.frame_mask(ids, lengths, 4, "smell", 0.5, seed=0)
    with pytest.raises(ValueError, match="lengths"):
        M.frame_mask(ids, np.array([2, 5]), 4, "text", 0.5, seed=0)
    with pytest.raises(ValueError, match="lengths"):
        M.frame_mask(ids, np.array([2]), 4, "text", 0.5, seed=0)
    with pytest.raises(ValueError, match="uniforms"):
        M.frame_mask(ids, lengths, 4, "text", 0.5, seed=0, uniforms=np.zeros((2, 3)))


# ----------------------------------------------------------------------------- fill


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("fill", M.FILLS)
def test_fill_features_changes_only_dropped_frames(backend, fill):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 4)).astype(np.float32) + 10.0  # far from N(0,1) noise
    dropped = rng.random((3, 5)) < 0.5
    xin = x if backend == "numpy" else torch.from_numpy(x.copy())
    din = dropped if backend == "numpy" else torch.from_numpy(dropped)
    before = x.copy()
    out = M.fill_features(xin, din, fill=fill, seed=7)
    out_np = np.asarray(out)
    assert type(out) is type(xin) and out_np.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(xin), before)  # input untouched
    np.testing.assert_array_equal(out_np[~dropped], x[~dropped])
    if fill == "zero":
        assert (out_np[dropped] == 0).all()
    else:
        filled = out_np[dropped]
        assert np.abs(filled).max() < 8  # noise, not the +10 features
        np.testing.assert_array_equal(out_np, np.asarray(M.fill_features(xin, din, fill=fill, seed=7)))
        assert not np.array_equal(out_np, np.asarray(M.fill_features(xin, din, fill=fill, seed=8)))


def test_fill_features_validation():
    with pytest.raises(ValueError, match="fill"):
        M.fill_features(np.zeros((1, 2, 3)), np.zeros((1, 2), bool), fill="mean")
    with pytest.raises(ValueError, match="disagree"):
        M.fill_features(np.zeros((1, 2, 3)), np.zeros((1, 3), bool))


def test_gaussian_fill_is_standard_normal():
    out = M.fill_features(np.zeros((50, 40, 10)), np.ones((50, 40), bool), fill="gaussian", seed=1)
    assert abs(out.mean()) < 0.02 and abs(out.std() - 1) < 0.02


# ----------------------------------------------------------------------------- train-time policies


def _policies():
    return {
        "uniform_ratio": M.uniform_ratio,
        "rmfm": M.rmfm,
        "fixed_rate": lambda b, g: M.fixed_rate(b, g, 0.4),
        "fixed_rate_audio": lambda b, g: M.fixed_rate(b, g, 0.7, modalities=("audio",)),
        "random_rate": lambda b, g: M.random_rate(b, g, max_rate=0.8),
        "combination_sampling": lambda b, g: M.combination_sampling(b, g, torch.ones(7))[0],
        "two_views_a": lambda b, g: M.two_views(b, g)[0],
        "two_views_b": lambda b, g: M.two_views(b, g)[1],
    }


@FAST
@given(batch=batches(), seed=st.integers(0, 2**31), name=st.sampled_from(sorted(_policies())))
def test_policies_are_deterministic_respect_padding_and_zero_dropped_frames(batch, seed, name):
    policy = _policies()[name]
    snapshot = {m: batch.features(m).clone() for m in MODALITIES}
    out = policy(batch, torch.Generator().manual_seed(seed))
    assert_batches_equal(out, policy(batch, torch.Generator().manual_seed(seed)))
    for m in MODALITIES:
        assert torch.equal(batch.features(m), snapshot[m])  # input batch untouched
        assert not batch.dropped[m].any()
        d = out.dropped[m]
        assert d.dtype == torch.bool and d.shape == batch.valid[m].shape
        assert not (d & ~batch.valid[m]).any()  # never padding
        assert (out.features(m)[d] == 0).all()
        keep = ~d
        assert torch.equal(out.features(m)[keep], batch.features(m)[keep])
    assert torch.equal(out.tokens[out.dropped["text"]], torch.full_like(out.tokens[out.dropped["text"]], UNK_ID))
    assert torch.equal(out.tokens[~out.dropped["text"]], batch.tokens[~out.dropped["text"]])


def test_policy_randomness_comes_from_the_generator_only():
    batch = big_batch()
    torch.manual_seed(0)
    a = M.uniform_ratio(batch, torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = M.uniform_ratio(batch, torch.Generator().manual_seed(5))
    assert_batches_equal(a, b)
    with pytest.raises(TypeError, match="Generator"):
        M.uniform_ratio(batch, 5)


def _fraction(batch: Batch, out: Batch, m: str) -> float:
    return float(out.dropped[m].sum() / batch.valid[m].sum())


def test_uniform_ratio_varies_across_batches_and_is_shared_within():
    batch = big_batch(b=128, t=40)
    gen = torch.Generator().manual_seed(0)
    outs = [M.uniform_ratio(batch, gen) for _ in range(30)]
    fractions = np.array([[_fraction(batch, out, m) for m in MODALITIES] for out in outs])  # (30, 3)
    # One ratio per modality and batch: spread over (0, 1) like U(0, 1) (sd 0.289), different per modality.
    assert fractions.std(axis=0).min() > 0.15
    assert fractions.min() < 0.2 and fractions.max() > 0.8
    assert abs(fractions.mean() - 0.5) < 0.15
    # Independent ratios per modality: across batches the modalities' fractions are uncorrelated.
    corr = np.corrcoef(fractions.T)  # (3, 3)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.7


def test_rmfm_drops_about_half():
    batch = big_batch(b=128, t=40)
    out = M.rmfm(batch, torch.Generator().manual_seed(0))
    for m in MODALITIES:
        n = int(batch.valid[m].sum())
        assert abs(_fraction(batch, out, m) - 0.5) < 5 * math.sqrt(0.25 / n)


def test_fixed_and_random_rate():
    batch = big_batch(b=128, t=40)
    out = M.fixed_rate(batch, torch.Generator().manual_seed(0), 0.3, modalities=("audio", "vision"))
    assert not out.dropped["text"].any()
    for m in ("audio", "vision"):
        n = int(batch.valid[m].sum())
        assert abs(_fraction(batch, out, m) - 0.3) < 5 * math.sqrt(0.21 / n)
    assert not M.fixed_rate(batch, torch.Generator(), 0.0).dropped["text"].any()
    assert torch.equal(M.fixed_rate(batch, torch.Generator(), 1.0).dropped["text"], batch.valid["text"])
    out = M.random_rate(batch, torch.Generator().manual_seed(0), max_rate=0.4)
    per_sample = out.dropped["audio"].sum(1) / batch.valid["audio"].sum(1)  # (B,)
    assert per_sample.max() <= 0.4 + 0.25 and per_sample.std() > 0.05  # rates differ per sample
    assert abs(float(per_sample.mean()) - 0.2) < 0.05
    with pytest.raises(ValueError):
        M.fixed_rate(batch, torch.Generator(), 1.5)


def test_drop_modalities_removes_whole_modalities():
    batch = big_batch(b=4, t=6)
    available = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    out = M.drop_modalities(batch, available)
    for k, m in enumerate(MODALITIES):
        expected = batch.valid[m] & ~available[:, k:k + 1]
        assert torch.equal(out.dropped[m], expected)
    assert M.combination_index(out).tolist() == [
        M.SUBSETS.index(M.parse_subset(lbl)) for lbl in ("tav", "t", "av", "v")
    ]
    with pytest.raises(ValueError, match="shape"):
        M.drop_modalities(batch, torch.ones(3, 3, dtype=torch.bool))


def test_combination_sampling_follows_probs_and_index_recovers_it():
    batch = big_batch(b=4000, t=3)
    probs = torch.tensor([0.05, 0.1, 0.2, 0.0, 0.15, 0.1, 0.4])
    out, index = M.combination_sampling(batch, torch.Generator().manual_seed(0), probs)
    counts = torch.bincount(index, minlength=7).numpy()
    assert counts[3] == 0  # zero probability never drawn
    keep = probs.numpy() > 0
    expected = probs.numpy()[keep] * len(index)
    assert stats.chisquare(counts[keep], expected).pvalue > 1e-3
    # Every sample has length >= 1 in every modality, so availability is recoverable exactly.
    assert torch.equal(M.combination_index(out), index)
    for c, combo in enumerate(M.AVAILABLE_COMBINATIONS):
        rows = index == c
        for m in MODALITIES:
            assert bool(out.dropped[m][rows].any(1).all()) == (m not in combo) or not rows.any()
    # Unnormalised probabilities are accepted; invalid ones are not.
    _, idx2 = M.combination_sampling(batch, torch.Generator().manual_seed(0), probs * 10)
    assert torch.equal(idx2, index)
    for bad in (torch.zeros(7), -torch.ones(7), torch.ones(6)):
        with pytest.raises(ValueError, match="probs"):
            M.combination_sampling(batch, torch.Generator(), bad)


def test_combination_index_nothing_available_maps_to_full_set():
    batch = make_batch({m: [0, 2] for m in MODALITIES}, {m: 3 for m in MODALITIES})
    assert M.combination_index(batch).tolist() == [M.FULL_COMBINATION_INDEX, M.FULL_COMBINATION_INDEX]
    everything_dropped = M.drop_modalities(batch, torch.zeros(2, 3, dtype=torch.bool))
    assert M.combination_index(everything_dropped).tolist() == [M.FULL_COMBINATION_INDEX] * 2


def test_two_views_differ_per_sample_and_each_is_uniform():
    batch = big_batch(b=2100, t=4)
    a, b = M.two_views(batch, torch.Generator().manual_seed(0), max_frame_rate=0.0)
    ia, ib = M.combination_index(a), M.combination_index(b)
    assert (ia != ib).all()  # heterogeneous at the inter-modality level, sample by sample
    for idx in (ia, ib):
        counts = torch.bincount(idx, minlength=7).numpy()
        assert stats.chisquare(counts).pvalue > 1e-3  # uniform over the 7, complete case included
    # With frame drops, a text frame is dropped if text is unavailable (3 of 7 combinations) or
    # else with probability r ~ U(0, 0.6): expected fraction 3/7 + 4/7 * 0.3 = 0.6 in each view.
    a, b = M.two_views(batch, torch.Generator().manual_seed(1), max_frame_rate=0.6)
    for view in (a, b):
        assert abs(_fraction(batch, view, "text") - 0.6) < 0.04
    assert all(not torch.equal(a.dropped[m], b.dropped[m]) for m in MODALITIES)
