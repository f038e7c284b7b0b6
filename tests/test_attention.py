"""The shared attention (models/layers.py) against a plain reference: fused and explicit paths,
padding masks, samples without any valid key, dropout; and batches trimmed to their longest sample."""

import math

import pytest
import torch

from affectune.models import layers as L


def reference_attention(q, k, v, key_valid):
    """Textbook softmax(q k^T / sqrt(e)) v per head with padded keys at -inf; keyless rows -> 0."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, Tq, Tk)
    scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # a keyless row is all -inf -> NaN -> 0
    return weights @ v, weights


def random_qkv(B=4, h=2, Tq=5, Tk=7, e=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, h, T, e, generator=g, dtype=torch.float64) for T in (Tq, Tk, Tk))
    key_valid = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [False, True, False, True, True, False, False],
                              [False] * 7])  # full, prefix, holes, no valid key
    return q, k, v, key_valid


@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "explicit"])
def test_attention_matches_reference_with_masks(need_weights):
    q, k, v, key_valid = random_qkv()
    has_key = key_valid.any(1)
    allowed = (key_valid | ~has_key[:, None])[:, None, None, :]  # MultiHeadAttention's rule
    got, weights = L.attention(q, k, v, allowed, 0.0, need_weights)
    expected, expected_w = reference_attention(q, k, v, key_valid)
    keep = has_key[:, None, None, None]  # keyless rows are zeroed by MultiHeadAttention, not here
    torch.testing.assert_close(torch.where(keep, got, 0.0), expected, rtol=1e-10, atol=1e-10)
    if need_weights:
        torch.testing.assert_close(torch.where(keep, weights, 0.0), expected_w, rtol=1e-10, atol=1e-10)
        assert weights[1, :, :, 3:].abs().max() == 0  # padded keys get exactly zero weight
    else:
        assert weights is None


def test_module_fused_and_explicit_paths_agree_in_training_without_dropout():
    torch.manual_seed(0)
    attn = L.MultiHeadAttention(8, 2, dropout=0.0).train()
    q, kv = torch.randn(4, 5, 8), torch.randn(4, 7, 8)
    _, _, _, key_valid = random_qkv()
    fused = attn(q, kv, kv, key_valid)
    explicit, _ = attn(q, kv, kv, key_valid, need_weights=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    assert fused[3].abs().max() == 0  # the keyless sample


def test_attention_dropout_is_unbiased_and_keeps_masks():
    """Explicit path with dropout: its mean over draws is the dropout-free output (inverted
    dropout), padded keys never get weight, and a keyless sample stays finite with zero output."""
    torch.manual_seed(0)
    attn = L.MultiHeadAttention(8, 2, dropout=0.3).train()
    q = torch.randn(4, 5, 8, requires_grad=True)
    kv = torch.randn(4, 7, 8, requires_grad=True)
    _, _, _, key_valid = random_qkv()
    n = 400  # independent draws in one call: the batch repeated n times
    draws = attn(q.repeat(n, 1, 1), kv.repeat(n, 1, 1), kv.repeat(n, 1, 1), key_valid.repeat(n, 1))
    draws = draws.view(n, *q.shape)  # (n, B, Tq, d)
    clean = attn.eval()(q, kv, kv, key_valid)
    assert (draws[0] - clean).abs().max() > 1e-3  # dropout is really on in training
    torch.testing.assert_close(draws.mean(0), clean, rtol=0, atol=0.05)
    attn.train()
    out = attn(q, kv, kv, key_valid)
    assert torch.isfinite(out).all() and out[3].abs().max() == 0
    out.square().sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(kv.grad).all()
    assert kv.grad[1, 3:].abs().max() == 0  # padded keys of sample 1 get no gradient


def test_attention_under_bf16_autocast_is_finite():
    torch.manual_seed(0)
    attn = L.MultiHeadAttention(8, 2, dropout=0.2).train()
    q, kv = torch.randn(4, 5, 8), torch.randn(4, 7, 8)
    _, _, _, key_valid = random_qkv()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for module in (attn.train(), attn.eval()):  # explicit (dropout) and fused paths
            out = module(q, kv, kv, key_valid)
            assert torch.isfinite(out.float()).all() and out[3].abs().max() == 0


def test_batches_are_trimmed_to_their_longest_sample():
    """Training and evaluation batches end at the batch's last valid frame per modality (at least
    one frame); features, masks and tokens are cut alike and nothing valid is lost."""
    from affectune.data import load
    from affectune.loader import EpochBatches, preload

    data = preload(load("synthetic:mosi?scale=0.02&aligned=0&ood=0"), "train")
    lengths = {m: torch.as_tensor(data.lengths[m]) for m in data.lengths}
    batches = list(EpochBatches(data, 8, seed=0)) + list(data.batches(8))
    assert any(b.audio.shape[1] < data.features["audio"].shape[1] for b in batches)  # something was cut
    for b in batches:
        for m in data.lengths:
            longest = int(lengths[m][b.index].max())
            assert b.features(m).shape[1] == b.valid[m].shape[1] == b.dropped[m].shape[1] == max(1, longest)
            assert torch.equal(b.features(m), data.features[m][b.index, :max(1, longest)])
        assert b.tokens.shape == b.valid["text"].shape
    empty = data.batch(torch.tensor([0])).replace(valid={m: torch.zeros_like(v) for m, v in
                                                         data.batch(torch.tensor([0])).valid.items()})
    assert all(empty.trimmed().features(m).shape[1] == 1 for m in data.lengths)  # never zero frames


def test_keep_mask_rate_and_lanes():
    """Each of the four 16-bit lanes of a 64-bit draw keeps at rate 1 - p; p = 0 keeps everything."""
    torch.manual_seed(0)
    keep = L.keep_mask((250_000, 4), 0.3)  # column j = lane j of each draw
    assert keep.dtype == torch.uint8 and keep.shape == (250_000, 4) and keep.max() == 1
    torch.testing.assert_close(keep.float().mean(0), torch.full((4,), 0.7), rtol=0, atol=0.005)
    assert L.keep_mask((1000,), 0.0).all()
    torch.manual_seed(1)
    a = L.keep_mask((7, 5), 0.5)
    torch.manual_seed(1)
    assert torch.equal(a, L.keep_mask((7, 5), 0.5))  # the global seed decides, as for F.dropout


@pytest.mark.parametrize("chunk", [1 << 20, 40], ids=["one-chunk", "many-chunks"])
def test_chunked_dropout_attention_matches_autograd_with_the_same_mask(monkeypatch, chunk):
    """Output and q/k/v gradients of the CPU dropout path (a 1-byte keep mask, softmax recomputed in
    backward) equal plain autograd over the same drop masks, drawn in the same chunk order."""
    monkeypatch.setattr(L, "ATTENTION_CHUNK", chunk)  # 40 scores: 1 (batch x head) row per chunk
    q, k, v, key_valid = (t.requires_grad_() if t.dtype.is_floating_point else t for t in random_qkv())
    has_key = key_valid.any(1)
    allowed = (key_valid | ~has_key[:, None])[:, None, None, :]
    torch.manual_seed(3)
    got, _ = L.attention(q, k, v, allowed, 0.25)
    grads = torch.autograd.grad(got.sin().sum(), (q, k, v))

    torch.manual_seed(3)  # the same masks, chunk by chunk over the B * h rows
    rows, per = 4 * 2, max(1, chunk // (5 * 7))
    keep = torch.cat([L.keep_mask((min(per, rows - i), 5, 7), 0.25) for i in range(0, rows, per)])
    assert keep.any() and not keep.all()
    scores = (q @ k.transpose(-1, -2) / math.sqrt(3)).masked_fill(~allowed, float("-inf"))
    expected = (scores.softmax(-1) * keep.view(4, 2, 5, 7) / 0.75) @ v
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for g, e in zip(grads, torch.autograd.grad(expected.sin().sum(), (q, k, v))):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_shared_dropout_scales_kept_elements_and_routes_gradients():
    """layers.Dropout: kept elements scaled by 1 / (1 - p), dropped ones 0 with their gradient,
    rate p, identity in eval mode."""
    torch.manual_seed(0)
    drop = L.Dropout(0.2).train()
    x = torch.randn(200, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.8)
    assert abs(kept.float().mean().item() - 0.8) < 0.01
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.8)
    assert torch.equal(drop.eval()(x), x)


def test_length_buckets_visit_every_sample_once_with_less_padding():
    """length_buckets: each epoch visits every row exactly once (a short last batch kept or dropped
    as without buckets), reproducibly for a (seed, epoch), differently across epochs, and batches
    of similar length carry fewer padded frames than shuffled ones."""
    from affectune.data import load
    from affectune.loader import EpochBatches, preload

    data = preload(load("synthetic:mosi?scale=0.05&aligned=0&ood=0"), "train")
    n = len(data)
    total = torch.as_tensor(sum(data.lengths[m] for m in data.lengths))

    def epoch(buckets, e, drop=False):
        eb = EpochBatches(data, 10, seed=0, length_buckets=buckets, drop_small_last=drop)
        eb.set_epoch(e)
        return eb.batch_rows()

    assert 0 < n % 10 < 5  # the split ends in a short batch, which drop_small_last drops
    assert sorted(torch.cat(epoch(4, 1)).tolist()) == list(range(n))
    kept = epoch(4, 1, drop=True)
    assert len(kept) == len(epoch(0, 1, drop=True)) == n // 10 and all(len(r) == 10 for r in kept)
    assert len(set(torch.cat(kept).tolist())) == n // 10 * 10
    assert all(torch.equal(a, b) for a, b in zip(epoch(4, 2), epoch(4, 2)))  # reproducible
    assert not all(torch.equal(a, b) for a, b in zip(epoch(4, 2), epoch(4, 3)))
    padding = {b: sum(int((total[r].max() - total[r]).sum()) for r in epoch(b, 1)) for b in (0, 4)}
    assert padding[4] < 0.5 * padding[0], padding
    from affectune.train import TrainConfig

    with pytest.raises(ValueError, match="length_buckets"):
        EpochBatches(data, 8, seed=0, length_buckets=-1)
    with pytest.raises(ValueError, match="length_buckets"):
        TrainConfig(model="mult", length_buckets=-1)
