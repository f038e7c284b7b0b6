"""Models: every registered model on every data shape and mask, plus shared layers and DQF specifics.

Batches are built from a DatasetSpec with random tensors (`make_batch`), so these tests need no
dataset. Every model is built small (hidden 16, one layer) to keep the file fast.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.fitting import fit_fixed_batch
from affectune import MODALITIES
from affectune.batch import Batch
from affectune.data.schema import MASK_ID, PAD_ID, DatasetSpec
from affectune.models import build_model, list_models, model_class
from affectune.models.base import TrainViews
from affectune.models import layers as L
from affectune.models.dqf import AUX_KEYS, CONCAT_AUX_KEYS, TABLE4_VARIANTS

DIMS = {"text": 10, "audio": 4, "vision": 6}
SPECS = {
    "reg_aligned": DatasetSpec("regression", 0, DIMS, {m: 6 for m in MODALITIES}, vocab_size=20, aligned=True),
    "cls4_unaligned": DatasetSpec("classification", 4, DIMS, {"text": 5, "audio": 8, "vision": 7}, vocab_size=20),
    "cls7_unaligned": DatasetSpec("classification", 7, DIMS, {"text": 7, "audio": 4, "vision": 9}, vocab_size=20),
}
MASKS = ("complete", "half_frames", "modality_missing", "length_zero")

# Parameters that legitimately get no gradient in some case: (model, mask) -> parts of their dotted
# names (a prefix, or a part anywhere in the name). Every other trainable parameter of every model
# must receive a gradient under every mask.
NO_GRAD_EXCLUSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    # MCULoRA routes each sample to the private LoRA of its modality combination; a 5-sample batch
    # never holds all 7 combinations, so the other combinations' adapters get no gradient by design.
    **{("mculora", mask): (".private_A.", ".private_B.") for mask in MASKS},
}


def make_batch(spec: DatasetSpec, mask: str = "complete", B: int = 5, seed: int = 0) -> Batch:
    """B random samples shaped by `spec`, padded beyond random lengths, with a missing-data mask.

    complete: nothing dropped; half_frames: each valid frame dropped w.p. 0.5 (zero-filled);
    modality_missing: every audio frame dropped; length_zero: sample 0 has no text frame and
    sample 1 no vision frame (length 0, all padding)."""
    g = torch.Generator().manual_seed(seed)
    feats, valid, dropped = {}, {}, {}
    for m in MODALITIES:
        T = spec.seq_lens[m]
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[-1] = T  # at least one full-length sample
        if mask == "length_zero":
            if m == "text":
                lengths[0] = 0
            if m == "vision":
                lengths[1] = 0
        valid[m] = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        if mask == "half_frames":
            dropped[m] = valid[m] & (torch.rand(B, T, generator=g) < 0.5)
        elif mask == "modality_missing" and m == "audio":
            dropped[m] = valid[m].clone()
        else:
            dropped[m] = torch.zeros(B, T, dtype=torch.bool)
        x = torch.randn(B, T, spec.dims[m], generator=g)
        feats[m] = x * (valid[m] & ~dropped[m]).unsqueeze(-1)  # zero at padding and dropped frames
    if spec.task == "regression":
        label = (torch.rand(B, generator=g) * 6 - 3).float()
    else:
        label = torch.randint(0, spec.num_classes, (B,), generator=g)
    tokens = None
    if spec.vocab_size:
        tokens = torch.randint(MASK_ID + 1, spec.vocab_size, (B, spec.seq_lens["text"]), generator=g)
        tokens = torch.where(valid["text"], tokens, torch.full_like(tokens, PAD_ID))
    available = torch.ones(B, len(MODALITIES), dtype=torch.bool)
    if mask == "modality_missing":
        available[:, MODALITIES.index("audio")] = False  # wholly absent: the model may know it
    return Batch(**feats, valid=valid, dropped=dropped, label=label, index=torch.arange(B), tokens=tokens,
                 available=available)


def pad_batch(batch: Batch, extra: int = 3, seed: int = 1) -> Batch:
    """The same samples with `extra` padding frames appended to every modality, filled with noise
    (never zeros) so a model that reads padding is caught."""
    g = torch.Generator().manual_seed(seed)
    feats, valid, dropped = {}, {}, {}
    for m in MODALITIES:
        x = batch.features(m)
        B, _, D = x.shape
        feats[m] = torch.cat([x, torch.randn(B, extra, D, generator=g) * 5], 1)
        valid[m] = torch.cat([batch.valid[m], torch.zeros(B, extra, dtype=torch.bool)], 1)
        dropped[m] = torch.cat([batch.dropped[m], torch.zeros(B, extra, dtype=torch.bool)], 1)
    tokens = None
    if batch.tokens is not None:
        tokens = torch.cat([batch.tokens, torch.full((B, extra), PAD_ID, dtype=torch.long)], 1)
    return batch.replace(**feats, valid=valid, dropped=dropped, tokens=tokens)


def small_config(name: str, **extra) -> dict:
    """Small overrides for any registered model, from the fields its config has."""
    fields = {f.name for f in dataclasses.fields(model_class(name).config_class)}
    cfg = {k: v for k, v in {"hidden": 16, "layers": 1, "heads": 2}.items() if k in fields}
    return {**cfg, **extra}


def build(name: str, spec: DatasetSpec, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(name, small_config(name, **extra), spec)


def expected_pred_shape(spec: DatasetSpec, B: int) -> tuple[int, ...]:
    return (B,) if spec.task == "regression" else (B, spec.num_classes)


# ----------------------------------------------------------------------------- every model


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("name", list_models())
def test_train_step_and_predict(name, spec_name, mask):
    spec = SPECS[spec_name]
    model = build(name, spec)
    batch = make_batch(spec, mask)
    model.train()
    views = model.train_policy(batch, torch.Generator().manual_seed(3))
    assert isinstance(views, TrainViews) and views.complete is batch
    assert all(isinstance(v, Batch) for v in views.trained().values())
    model.zero_grad()
    for step in range(model.steps_per_batch):  # gradients of every step accumulate here
        losses = model.training_losses(views, step)
        assert torch.isfinite(losses["loss"]) and losses["loss"].requires_grad
        assert all(not v.requires_grad for k, v in losses.items() if k != "loss")
        losses["loss"].backward()
    excluded = NO_GRAD_EXCLUSIONS.get((name, mask), ())
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and not any(part in n for part in excluded) and p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"

    model.eval()
    with torch.no_grad():
        pred = model.predict(batch)
        again = model.predict(batch)
    assert pred.shape == expected_pred_shape(spec, batch.size)
    assert torch.isfinite(pred).all()
    assert torch.equal(pred, again), "predict must be deterministic in eval mode"


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("name", list_models())
def test_padding_invariance(name, spec_name):
    """Appending padding frames (valid False, noisy features) leaves eval predictions unchanged."""
    spec = SPECS[spec_name]
    model = build(name, spec).eval()
    for mask in ("complete", "length_zero"):
        batch = make_batch(spec, mask, seed=4)
        with torch.no_grad():
            ref, padded = model.predict(batch), model.predict(pad_batch(batch))
        assert padded.shape == ref.shape
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list_models())
def test_forward_ignores_dropped_masks(name):
    """Models may read features and padding masks only: the `dropped` record must not matter."""
    spec = SPECS["cls4_unaligned"]
    model = build(name, spec).eval()
    batch = make_batch(spec, "half_frames", seed=5)
    blind = batch.replace(dropped={m: torch.zeros_like(v) for m, v in batch.dropped.items()})
    with torch.no_grad():
        torch.testing.assert_close(model.predict(blind), model.predict(batch), atol=0, rtol=0)


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_and_sample_independence(name):
    spec = SPECS["reg_aligned"]
    model = build(name, spec)
    n = model.num_parameters()
    assert n > 0 and n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # eval predictions of a sample do not depend on the other samples of the batch
    model.eval()
    batch = make_batch(spec, "half_frames", B=4, seed=6)
    with torch.no_grad():
        full = model.predict(batch)
        first = model.predict(batch.replace(
            text=batch.text[:1], audio=batch.audio[:1], vision=batch.vision[:1],
            valid={m: v[:1] for m, v in batch.valid.items()}, dropped={m: v[:1] for m, v in batch.dropped.items()},
            label=batch.label[:1], index=batch.index[:1], tokens=batch.tokens[:1],
            available=batch.available[:1]))
    torch.testing.assert_close(first, full[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("source", ["synthetic:mosi?scale=0.05", "synthetic:iemocap?scale=0.02&aligned=0"])
@pytest.mark.parametrize("name", list_models())
def test_fits_a_real_synthetic_batch(name, source):
    """On 8 samples of the synthetic benchmark every model runs its policy and can overfit them."""
    from affectune.data import load
    from affectune.loader import preload

    ds = load(source)
    batch = preload(ds, "train").batch(slice(0, 8))
    model = build(name, ds.spec(), dropout=0.0)
    views = model.train_policy(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(model.training_losses(views)["loss"])
    first, last = fit_fixed_batch(model, TrainViews(batch), steps=25)  # complete inputs: the loss must fall
    last = last["loss"]
    with torch.no_grad():
        pred = model.predict(batch)
    assert pred.shape == expected_pred_shape(ds.spec(), 8) and torch.isfinite(pred).all()
    assert last < 0.7 * first, f"{name} on {source}: loss {first:.3f} -> {last:.3f}"


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="divisible"):
        build_model("dqf", {"hidden": 30, "heads": 4}, SPECS["reg_aligned"])
    with pytest.raises(ValueError, match="kernel_size"):
        build_model("mult", {"kernel_size": 2}, SPECS["reg_aligned"])
    with pytest.raises(ValueError, match="train_missing"):
        build_model("late_fusion", {"train_missing": "sometimes"}, SPECS["reg_aligned"])
    with pytest.raises(ValueError, match="unknown config field"):
        build_model("dqf", {"layer": 3}, SPECS["reg_aligned"])
    for field, value in (("cross_modal", "pairwise"), ("unimodal", "mlp"), ("plain_positions", "rope")):
        with pytest.raises(ValueError, match=f"{field} must be one of"):
            build_model("dqf", {field: value}, SPECS["reg_aligned"])


# ----------------------------------------------------------------------------- train policies


def test_dqf_trains_on_uniform_ratio_masks_and_baselines_on_complete_inputs():
    spec = SPECS["cls4_unaligned"]
    batch = make_batch(spec, "complete", B=8)
    dqf = build("dqf", spec)
    a = dqf.train_policy(batch, torch.Generator().manual_seed(11))
    b = dqf.train_policy(batch, torch.Generator().manual_seed(11))
    assert list(a.views) == ["masked"] and a.complete is batch
    a, b = a["masked"], b["masked"]
    assert any(a.dropped[m].any() for m in MODALITIES)
    for m in MODALITIES:
        assert torch.equal(a.dropped[m], b.dropped[m])  # seeded
        assert not (a.dropped[m] & ~batch.valid[m]).any()  # padding is never "dropped"
        assert (a.features(m)[a.dropped[m]] == 0).all()  # dropped frames zero-filled
    for name in ("mult", "late_fusion"):
        model = build(name, spec)
        complete = model.train_policy(batch, torch.Generator().manual_seed(11))
        assert complete.views == {} and list(complete.trained().values()) == [batch]
        masked = build(name, spec, train_missing="uniform_ratio").train_policy(batch, torch.Generator().manual_seed(11))
        for m in MODALITIES:  # same generator, same policy -> the same masks as DQF's
            assert torch.equal(masked["masked"].dropped[m], a.dropped[m])


# ----------------------------------------------------------------------------- DQF specifics


def test_dqf_losses_are_task_plus_weighted_aux():
    spec = SPECS["reg_aligned"]
    model = build("dqf", spec, aux_weight=0.5).eval()  # eval: no dropout, so we can recompute
    batch = make_batch(spec, "half_frames")
    losses = model.training_losses(TrainViews(batch))
    assert set(losses) == {"loss", "task", *(f"aux_{k}" for k in AUX_KEYS)}
    aux_sum = sum(losses[f"aux_{k}"] for k in AUX_KEYS)
    torch.testing.assert_close(losses["loss"].detach(), losses["task"] + 0.5 * aux_sum)
    out = model(batch)
    torch.testing.assert_close(losses["task"], (out["pred"] - batch.label).abs().mean())  # MAE
    torch.testing.assert_close(losses["aux_ta"], (out["aux"]["ta"] - batch.label).abs().mean())
    # classification: cross-entropy on every head
    spec = SPECS["cls7_unaligned"]
    model = build("dqf", spec).eval()
    batch = make_batch(spec, "complete")
    losses, out = model.training_losses(TrainViews(batch)), model(batch)
    torch.testing.assert_close(losses["aux_tav"], F.cross_entropy(out["aux"]["tav"], batch.label))
    torch.testing.assert_close(losses["loss"].detach(),
                               losses["task"] + sum(losses[f"aux_{k}"] for k in AUX_KEYS))
    # two views are averaged
    two = model.training_losses(TrainViews(batch, {"a": batch, "b": batch}))
    torch.testing.assert_close(two["loss"], losses["loss"])



def test_dqf_table4_variants_change_the_architecture():
    spec = SPECS["cls4_unaligned"]
    names = lambda model: {n for n, _ in model.named_parameters()}  # noqa: E731
    full = build("dqf", spec)
    no_qua, no_qca, with_mult = (build("dqf", spec, **TABLE4_VARIANTS[k]) for k in ("w/o Q-UA", "w/o Q-CA", "Q-UA w/ MulT"))
    queries = {f"queries.{m}" for m in MODALITIES}
    assert queries <= names(full) and {"pairs.ta.query", "pairs.tv.query", "pairs.av.query"} <= names(full)
    # w/o Q-UA: no queries nor their updates; learned positions shaped like the queries instead
    assert not any(n.startswith(("queries.", "query_updates.")) for n in names(no_qua))
    assert {m: no_qua.positions[m].shape for m in MODALITIES} == {m: full.queries[m].shape for m in MODALITIES}
    assert {"pairs.ta.query"} <= names(no_qua)
    # w/o Q-CA: no pair modules and no eq. 9 fusion; one transformer over the concatenation
    assert queries <= names(no_qca)
    assert not any(n.startswith(("pairs.", "fusion.", "cls")) for n in names(no_qca))
    assert any(n.startswith("concat.encoder.") for n in names(no_qca))
    assert set(no_qca.aux_heads) == set(CONCAT_AUX_KEYS) and no_qca.head.mlp.net[0].in_features == 4 * 16
    # Q-UA w/ MulT: Q-UA kept, MulT's cross-modal transformers in place of Q-CA, eq. 9 kept
    from affectune.models.mult import CrossModalTransformer

    assert queries <= names(with_mult) and {"cls"} <= names(with_mult)
    assert not any(n.startswith("pairs.") and n.endswith(".query") for n in names(with_mult))
    assert all(isinstance(with_mult.pairs[k].a2b, CrossModalTransformer) for k in ("ta", "tv", "av"))
    assert with_mult.head.mlp.net[0].in_features == 7 * 16
    counts = {m.num_parameters() for m in (full, no_qua, no_qca, with_mult)}
    assert len(counts) == 4


@pytest.mark.parametrize("variant", ["w/o Q-UA", "w/o Q-CA", "Q-UA w/ MulT"])
@pytest.mark.parametrize("spec_name", ["reg_aligned", "cls4_unaligned"])
def test_dqf_table4_variants_train_and_ignore_padding(variant, spec_name):
    spec = SPECS[spec_name]
    model = build("dqf", spec, **TABLE4_VARIANTS[variant])
    batch = make_batch(spec, "half_frames", seed=2)
    losses = model.training_losses(model.train_policy(batch, torch.Generator().manual_seed(0)))
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())  # every part of the variant trains
    model.eval()
    for mask in ("complete", "length_zero"):
        batch = make_batch(spec, mask, seed=4)
        with torch.no_grad():
            ref, padded = model.predict(batch), model.predict(pad_batch(batch))
        assert torch.isfinite(ref).all()
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=0)


def test_dqf_without_qca_losses_are_the_four_that_exist():
    spec = SPECS["reg_aligned"]
    model = build("dqf", spec, cross_modal="concat", aux_weight=0.5).eval()
    batch = make_batch(spec, "half_frames")
    losses, out = model.training_losses(TrainViews(batch)), model(batch)
    assert set(losses) == {"loss", "task", "aux_t", "aux_a", "aux_v", "aux_tav"} and set(out["aux"]) == set(CONCAT_AUX_KEYS)
    expected = (out["pred"] - batch.label).abs().mean() + 0.5 * sum(
        (out["aux"][k] - batch.label).abs().mean() for k in CONCAT_AUX_KEYS)
    torch.testing.assert_close(losses["loss"].detach(), expected)
    # the trimodal feature reads every modality: changing only the text changes the tav head
    other_text = batch.replace(text=batch.text + 1.0)
    with torch.no_grad():
        assert (model(other_text)["aux"]["tav"] - out["aux"]["tav"]).abs().max() > 1e-4


def test_dqf_without_qua_keeps_a_positional_signal():
    """Kernel-1 Conv, no positions and the concat transformer make a modality's frame order
    invisible (self-attention is permutation-equivariant, pooling invariant); positions restore it."""
    spec = SPECS["reg_aligned"]
    batch = make_batch(spec, "complete", seed=3)
    full = batch.valid["audio"].all(1)  # samples whose every audio frame is valid (flip keeps the mask)
    assert full.any()
    reversed_audio = batch.replace(audio=torch.where(full[:, None, None], batch.audio.flip(1), batch.audio))
    preds = {}
    for positions in ("none", "learned", "sinusoidal"):
        model = build("dqf", spec, unimodal="transformer", plain_positions=positions, kernel_size=1,
                      cross_modal="concat").eval()
        with torch.no_grad():
            preds[positions] = (model.predict(batch)[full], model.predict(reversed_audio)[full])
    torch.testing.assert_close(preds["none"][1], preds["none"][0], atol=1e-5, rtol=0)
    for positions in ("learned", "sinusoidal"):
        assert (preds[positions][1] - preds[positions][0]).abs().max() > 1e-4


def test_dqf_query_lengths():
    spec = SPECS["cls4_unaligned"]  # T: text 5, audio 8, vision 7
    d = 16
    full = build("dqf", spec)
    assert {m: tuple(full.queries[m].shape) for m in MODALITIES} == {m: (spec.seq_lens[m], d) for m in MODALITIES}
    assert tuple(full.pairs["av"].query.shape) == (7, d)  # min(T_a, T_v)
    short = build("dqf", spec, num_queries=3, pair_queries=2)
    assert {tuple(short.queries[m].shape) for m in MODALITIES} == {(3, d)}
    assert tuple(short.pairs["ta"].query.shape) == (2, d)
    capped = build("dqf", spec, num_queries=6)
    assert tuple(capped.queries["text"].shape) == (5, d) and tuple(capped.queries["audio"].shape) == (6, d)


def test_dqf_queries_are_injected():
    """Changing a Q-UA query or a Q-CA query changes the prediction (both take part)."""
    spec = SPECS["reg_aligned"]
    model = build("dqf", spec).eval()
    batch = make_batch(spec, "complete")
    with torch.no_grad():
        ref = model.predict(batch)
        model.queries["audio"].add_(1.0)
        after_qua = model.predict(batch)
        model.pairs["tv"].query.add_(1.0)
        after_qca = model.predict(batch)
    assert (after_qua - ref).abs().max() > 1e-4
    assert (after_qca - after_qua).abs().max() > 1e-4


def test_dqf_missing_modality_changes_prediction_but_stays_finite():
    spec = SPECS["reg_aligned"]
    model = build("dqf", spec).eval()
    batch = make_batch(spec, "complete")
    no_text = batch.replace(valid={**batch.valid, "text": torch.zeros_like(batch.valid["text"])})
    with torch.no_grad():
        a, b = model.predict(batch), model.predict(no_text)
    assert torch.isfinite(b).all() and (a - b).abs().max() > 1e-4


# ----------------------------------------------------------------------------- shared layers


def test_masked_pooling_hand_values():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]], [[5.0], [5.0], [5.0]]])  # (3, 3, 1)
    valid = torch.tensor([[True, True, False], [True, False, True], [False, False, False]])
    assert L.masked_mean(x, valid).squeeze(-1).tolist() == [2.0, 4.0, 0.0]
    assert L.last_valid(x, valid).squeeze(-1).tolist() == [3.0, 6.0, 0.0]
    with pytest.raises(ValueError, match="pooling"):
        L.pool(x, valid, "max")


def test_sinusoidal_table_hand_values():
    pe = L.sinusoidal_table(3, 4)
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                             [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
                             [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]])
    torch.testing.assert_close(pe, expected)
    assert L.sinusoidal_table(2, 5).shape == (2, 5)  # odd widths work


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = L.MultiHeadAttention(8, 2).eval()
    ref = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    q, kv = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    valid = torch.tensor([[True] * 6, [True] * 2 + [False] * 4, [False, True, False, True, True, False]])
    expected, expected_w = ref(q, kv, kv, key_padding_mask=~valid)
    got, got_w = ours(q, kv, kv, valid, need_weights=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_w, expected_w)
    torch.testing.assert_close(ours(q, kv, kv, valid), expected)  # fused kernel path


def test_attention_is_finite_with_no_valid_key():
    torch.manual_seed(0)
    attn = L.MultiHeadAttention(8, 2)
    q, kv = torch.randn(2, 3, 8, requires_grad=True), torch.randn(2, 5, 8, requires_grad=True)
    valid = torch.tensor([[True, True, False, False, False], [False] * 5])
    out = attn(q, kv, kv, valid)
    assert torch.isfinite(out).all() and out[1].abs().max() == 0
    out.square().sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(kv.grad).all()
    assert kv.grad[0, 2:].abs().max() == 0  # padded keys get no gradient
    block = L.TransformerEncoderLayer(8, 2)
    x = torch.randn(2, 5, 8)
    y = block(x, valid)
    assert torch.isfinite(y).all() and y[1].abs().max() == 0 and y[0, 2:].abs().max() == 0


def test_temporal_conv_respects_padding():
    torch.manual_seed(0)
    conv = L.TemporalConv(3, 4, kernel_size=3)
    x = torch.randn(2, 6, 3)
    valid = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    y = conv(x, valid)
    ref = F.conv1d(x[0, :4].T.unsqueeze(0), conv.conv.weight, padding=1)[0].T  # the valid prefix alone
    torch.testing.assert_close(y[0, :4], ref)
    assert y[0, 4:].abs().max() == 0
    with pytest.raises(ValueError, match="odd"):
        L.TemporalConv(3, 4, kernel_size=2)


def test_fit_to_length_places_slots_on_frames():
    q = torch.arange(6.0).reshape(3, 2)  # (P=3, d=2)
    assert torch.equal(L.fit_to_length(q, 3, 3), q)  # identity when P == T
    stretched = L.fit_to_length(q, 5, 5)  # linear interpolation, ends kept
    torch.testing.assert_close(stretched[:, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    padded = L.fit_to_length(q, 3, 5)  # batch longer than the dataset: extra frames get no slot
    assert torch.equal(padded[:3], q) and padded[3:].abs().max() == 0
    assert torch.equal(L.fit_to_length(q.unsqueeze(0), 3, 2)[0], q[:2])


def test_task_head_shapes():
    x = torch.randn(4, 8)
    assert L.TaskHead(8, SPECS["reg_aligned"])(x).shape == (4,)
    assert L.TaskHead(8, SPECS["cls7_unaligned"])(x).shape == (4, 7)


def test_late_fusion_parameter_count_by_hand_and_mean_of_heads():
    spec, d, k = SPECS["cls4_unaligned"], 16, 3
    model = build("late_fusion", spec).eval()
    per_modality = {m: (DIMS[m] * d * k + d) + (d * d * k + d) + (d * d + d) + (d * 4 + 4) for m in MODALITIES}
    assert model.num_parameters() == sum(per_modality.values())
    batch = make_batch(spec, "length_zero")  # sample 0 has no text, sample 1 no vision
    with torch.no_grad():
        out = model(batch)
    y = out["per_modality"]  # (B, 3, C)
    torch.testing.assert_close(out["pred"][0], y[0, 1:].mean(0))  # audio + vision
    torch.testing.assert_close(out["pred"][1], y[1, :2].mean(0))  # text + audio
    torch.testing.assert_close(out["pred"][2:], y[2:].mean(1))
