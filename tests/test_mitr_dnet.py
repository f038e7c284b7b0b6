"""MITR-DNet specifics: MIB-TRL causality and time reversal, the stop-gradient from the teacher,
the losses' composition, the static masks of the authors' protocol, presets, spaces, overfitting.

The registry-wide checks (every data shape and mask, gradients to every parameter, padding
invariance) are in tests/test_models.py; batches come from its `make_batch`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from affectune import MODALITIES
from affectune.models import build_model, model_class
from affectune.models.base import TrainViews
from affectune.models.mitr_dnet import MIBTRL, CausalGatedConv, reverse_in_length, valid_lengths
from affectune.search_spaces import draw, get_space
from test_models import SPECS, make_batch


def small(spec, **extra):
    torch.manual_seed(0)
    return build_model("mitr_dnet", {"hidden": 16, "heads": 2, "layers": 1, **extra}, spec)


def mibtrl(levels=4, filters=3, residual=True) -> MIBTRL:
    torch.manual_seed(0)
    return MIBTRL(filters, levels, kernel_size=2, residual=residual, dropout=0.0).eval()


# ----------------------------------------------------------------------------- MIB-TRL


def test_reverse_in_length_hand_values_and_involution():
    x = torch.tensor([[1.0, 2.0, 3.0, 9.0, 9.0], [4.0, 5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0, 9.0]]).unsqueeze(-1)
    lengths = torch.tensor([3, 5, 0])
    r = reverse_in_length(x, lengths).squeeze(-1)
    assert r.tolist() == [[3.0, 2.0, 1.0, 9.0, 9.0], [8.0, 7.0, 6.0, 5.0, 4.0], [9.0] * 5]  # padding stays put
    assert torch.equal(reverse_in_length(reverse_in_length(x, lengths), lengths), x)
    with pytest.raises(ValueError, match="prefix"):
        valid_lengths(torch.tensor([[True, False, True]]))


def test_gated_causal_conv_hand_values():
    """One level, 1 channel, kernel 2, dilation 2: y_t = tanh(a x_{t-2} + b x_t + c) * sigmoid(e x_{t-2} + f x_t + g)."""
    level = CausalGatedConv(1, 1, kernel_size=2, dilation=2)
    a, b, c, e, f, g = 0.5, -1.0, 0.1, 2.0, 0.3, -0.2
    with torch.no_grad():
        level.conv.weight.copy_(torch.tensor([[[a, b]], [[e, f]]]))  # (2F, C_in, k): filter row, gate row
        level.conv.bias.copy_(torch.tensor([c, g]))
    x = [1.0, -2.0, 0.5, 3.0]
    y = level(torch.tensor(x).view(1, 4, 1), torch.ones(1, 4, dtype=torch.bool)).view(-1).tolist()
    past = [0.0, 0.0, 1.0, -2.0]  # x_{t-2}, zero before the start
    expected = [math.tanh(a * p + b * xt + c) / (1 + math.exp(-(e * p + f * xt + g))) for p, xt in zip(past, x)]
    assert y == pytest.approx(expected, abs=1e-6)


def test_forward_stream_is_causal_and_backward_reads_the_future():
    """Perturbing frames after t0 leaves the forward stream at frames <= t0 unchanged (all levels);
    the backward stream at those frames does change, so the check can fail."""
    block = mibtrl()
    T, t0 = 12, 6
    x = torch.randn(2, T, 3)
    valid = torch.ones(2, T, dtype=torch.bool)
    valid[0, 10:] = False  # sample 0 has length 10
    y = x.clone()
    y[:, t0 + 1:] += torch.randn(2, T - t0 - 1, 3) * 3
    with torch.no_grad():
        (fx, bx), (fy, by) = block.streams(x, valid), block.streams(y, valid)
    assert len(fx) == len(bx) == 4
    for level in range(4):
        torch.testing.assert_close(fy[level][:, : t0 + 1], fx[level][:, : t0 + 1], atol=0, rtol=0)
        assert (fy[level][:, t0 + 1:] - fx[level][:, t0 + 1:]).abs().max() > 1e-3
        assert (by[level][:, : t0 + 1] - bx[level][:, : t0 + 1]).abs().max() > 1e-3


def test_receptive_field_of_dilations_1_2_4_8():
    """With kernel 2 and dilations 1, 2, 4, 8 the last level at frame t reads frames t-15..t exactly."""
    block = mibtrl()
    x = torch.randn(1, 20, 3, requires_grad=True)
    fwd, _ = block.streams(x, torch.ones(1, 20, dtype=torch.bool))
    fwd[-1][0, 19].sum().backward()
    reads = (x.grad[0].abs().sum(-1) > 0).nonzero().view(-1).tolist()
    assert reads == list(range(4, 20))


def test_backward_stream_is_the_forward_stream_of_the_time_reversed_input():
    block = mibtrl(residual=False)
    x = torch.randn(3, 9, 3)
    lengths = torch.tensor([9, 5, 1])
    valid = torch.arange(9)[None, :] < lengths[:, None]
    with torch.no_grad():
        _, bwd = block.streams(x, valid)
        fwd_of_reversed = block.forward_stream(reverse_in_length(x, lengths), valid)
        full = block.forward_stream(x[:1].flip(1), valid[:1])  # sample 0 has no padding: plain flip
    for level, (b, f) in enumerate(zip(bwd, fwd_of_reversed)):
        torch.testing.assert_close(b, reverse_in_length(f, lengths))
        torch.testing.assert_close(b[:1], full[level].flip(1))
        assert b[1, 5:].abs().max() == 0  # padding stays zero and at the end
    # Z concatenates the level sums: (B, T, L*F)
    with torch.no_grad():
        z = block(x, valid)
        fwd, bwd = block.streams(x, valid)
    assert z.shape == (3, 9, 4 * 3)
    torch.testing.assert_close(z[..., 3:6], fwd[1] + bwd[1])


def test_backward_stream_ignores_padding_at_the_start():
    """A reversal over the padded length would put padding first; within the length it never
    touches the valid frames, even when the padded features are noise."""
    block = mibtrl()
    x = torch.randn(1, 6, 3)
    valid = torch.tensor([[True] * 4 + [False] * 2])
    noisy = x.clone()
    noisy[0, 4:] = torch.randn(2, 3) * 10
    with torch.no_grad():
        a, b = block(x, valid), block(noisy, valid)
        short = block(x[:, :4], valid[:, :4])
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a[:, :4], short)


# ----------------------------------------------------------------------------- losses


def two_views(spec, seed=0):
    batch = make_batch(spec, "complete", B=6, seed=seed)
    model = small(spec, train_protocol="static", static_rate=0.5, dropout=0.0)
    return model, model.train_policy(batch, torch.Generator().manual_seed(1))


def test_teacher_gets_no_gradient_from_simsiam_or_distillation():
    spec = SPECS["cls4_unaligned"]
    model, views = two_views(spec)
    teacher_in = {m: views.complete.features(m).clone().requires_grad_() for m in MODALITIES}
    student_in = {m: views["masked"].features(m).clone().requires_grad_() for m in MODALITIES}
    teacher = model(views.complete.replace(**teacher_in))
    student = model(views["masked"].replace(**student_in))
    for name in ("simsiam_loss", "distill_loss"):
        model.zero_grad()
        for t in (*teacher_in.values(), *student_in.values()):
            t.grad = None
        loss = getattr(model, name)(student, teacher, views["masked"].valid)
        loss.backward(retain_graph=True)
        assert all(t.grad is None for t in teacher_in.values()), f"{name} sent a gradient to the teacher"
        assert sum(float(t.grad.abs().sum()) for t in student_in.values()) > 0, f"{name} trains no student input"
    # the SimSiam targets come from the projector without a graph; the predictor learns from the student
    model.zero_grad()
    model.simsiam_loss(student, teacher, views["masked"].valid).backward(retain_graph=True)
    assert model.predictor.net[0].weight.grad.abs().sum() > 0


def test_simsiam_hand_value_and_zero_for_aligned_directions():
    """1 - cos(pred(proj(z^s)), proj(z^t)) averaged over samples, then modalities; 0 when they align."""
    spec = SPECS["reg_aligned"]
    model, views = two_views(spec)
    model.eval()
    with torch.no_grad():
        s, t = model(views["masked"]), model(views.complete)
        got = model.simsiam_loss(s, t, views["masked"].valid)
        per_mod = []
        for m in MODALITIES:
            zs = s["z"][m].sum(1) / views["masked"].valid[m].sum(1, keepdim=True)  # (B, L*F) mean over valid
            zt = t["z"][m].sum(1) / views["masked"].valid[m].sum(1, keepdim=True)
            p, target = model.predictor(model.projector(zs)), model.projector(zt)
            cos = (p * target).sum(-1) / (p.norm(dim=-1) * target.norm(dim=-1))
            per_mod.append((1 - cos).mean())
        torch.testing.assert_close(got, torch.stack(per_mod).mean())
        model.predictor = torch.nn.Identity()  # prediction = projection: same view, same direction
        assert float(model.simsiam_loss(t, t, views.complete.valid)) == pytest.approx(0.0, abs=1e-6)


def test_total_loss_is_the_weighted_sum_and_task_is_l1():
    spec = SPECS["reg_aligned"]
    batch = make_batch(spec, "complete", B=6)
    model = small(spec, train_protocol="static", dropout=0.0, distill_weight=0.3, simsiam_weight=0.7,
                  recon_weight=1.5, teacher_task_weight=0.5).eval()
    views = model.train_policy(batch, torch.Generator().manual_seed(0))
    losses = model.training_losses(views)
    assert set(losses) == {"loss", "task", "task_teacher", "distill", "simsiam", "recon"}
    expected = (losses["task"] + 0.5 * losses["task_teacher"] + 0.3 * losses["distill"]
                + 0.7 * losses["simsiam"] + 1.5 * losses["recon"])
    torch.testing.assert_close(losses["loss"].detach(), expected)
    with torch.no_grad():
        s, t = model(views["masked"]), model(batch)
    torch.testing.assert_close(losses["task"], (s["pred"] - batch.label).abs().mean())
    torch.testing.assert_close(losses["task_teacher"], (t["pred"] - batch.label).abs().mean())
    assert all(float(losses[k]) > 0 for k in ("distill", "simsiam", "recon"))
    # classification: cross-entropy
    spec = SPECS["cls7_unaligned"]
    model = small(spec, dropout=0.0).eval()
    batch = make_batch(spec, "complete")
    losses = model.training_losses(TrainViews(batch))  # no masked view: the student is the complete batch
    with torch.no_grad():
        pred = model(batch)["pred"]
    torch.testing.assert_close(losses["task"], F.cross_entropy(pred, batch.label))
    assert float(losses["distill"]) == 0 and float(losses["recon"]) == 0


def test_reconstruction_only_on_dropped_frames_by_hand():
    spec = SPECS["cls4_unaligned"]
    model, views = two_views(spec)
    masked, complete = views["masked"], views.complete
    out = model(masked)
    got = model.recon_loss(out, masked, complete)
    per_mod = []
    for m in MODALITIES:
        lost = masked.dropped[m] & complete.present(m)  # (B, T)
        assert lost.any()
        pred = model.decoders[m](out["z"][m])[lost]  # (n, D)
        per_mod.append(F.smooth_l1_loss(pred, complete.features(m)[lost]))
    torch.testing.assert_close(got, torch.stack(per_mod).mean())
    # changing the complete view's features at frames the student kept changes nothing
    kept = {m: complete.features(m) + 5 * (~masked.dropped[m]).unsqueeze(-1) for m in MODALITIES}
    torch.testing.assert_close(model.recon_loss(out, masked, complete.replace(**kept)), got)


# ----------------------------------------------------------------------------- train protocols


def test_static_masks_are_identical_across_epochs():
    """Keyed on each sample's train row: other generators (epochs), other batch compositions and
    orders, and extra padding give the same mask for the same row."""
    spec = SPECS["cls4_unaligned"]
    model = small(spec, train_protocol="static", static_rate=0.4)
    batch = make_batch(spec, "complete", B=8, seed=3).replace(index=torch.arange(100, 108))
    epoch1 = model.train_policy(batch, torch.Generator().manual_seed(1))["masked"]
    epoch2 = model.train_policy(batch, torch.Generator().manual_seed(2))["masked"]
    order = torch.tensor([5, 2, 7, 0])
    sub = batch.replace(text=batch.text[order], audio=batch.audio[order], vision=batch.vision[order],
                        valid={m: v[order] for m, v in batch.valid.items()},
                        dropped={m: v[order] for m, v in batch.dropped.items()},
                        label=batch.label[order], index=batch.index[order], tokens=batch.tokens[order],
                        available=batch.available[order])
    shuffled = model.train_policy(sub, torch.Generator().manual_seed(3))["masked"]
    for m in MODALITIES:
        assert torch.equal(epoch1.dropped[m], epoch2.dropped[m])
        assert torch.equal(epoch1.features(m), epoch2.features(m))
        assert torch.equal(shuffled.dropped[m], epoch1.dropped[m][order])
        assert not (epoch1.dropped[m] & ~batch.valid[m]).any()
        assert (epoch1.features(m)[epoch1.dropped[m]] == 0).all()
    # another row id or another static seed gives another mask; the random protocol changes per step
    moved = model.train_policy(batch.replace(index=torch.arange(8)), torch.Generator().manual_seed(1))["masked"]
    reseeded = small(spec, train_protocol="static", static_rate=0.4, static_seed=1).train_policy(
        batch, torch.Generator().manual_seed(1))["masked"]
    rnd = small(spec, train_protocol="random")
    r1, r2 = (rnd.train_policy(batch, torch.Generator().manual_seed(s))["masked"] for s in (1, 2))
    for other in (moved, reseeded, r2):
        first = r1 if other is r2 else epoch1
        assert any(not torch.equal(first.dropped[m], other.dropped[m]) for m in MODALITIES)


def test_static_rate_and_train_modalities():
    spec = SPECS["reg_aligned"]
    batch = make_batch(spec, "complete", B=200, seed=0)
    batch = batch.replace(valid={m: torch.ones_like(v) for m, v in batch.valid.items()})
    for rate in (0.0, 0.3, 1.0):
        view = small(spec, train_protocol="static", static_rate=rate).train_policy(batch, torch.Generator())["masked"]
        frac = torch.cat([view.dropped[m].flatten() for m in MODALITIES]).float().mean()
        assert float(frac) == pytest.approx(rate, abs=0.03)  # 3600 frames: 3 sigma < 0.025
    view = small(spec, train_protocol="static", train_modalities="ta").train_policy(batch, torch.Generator())["masked"]
    assert view.dropped["text"].any() and view.dropped["audio"].any() and not view.dropped["vision"].any()
    view = small(spec, train_protocol="random", random_max_rate=0.2, train_modalities="v").train_policy(
        batch, torch.Generator().manual_seed(0))["masked"]
    assert not view.dropped["text"].any() and 0.05 < float(view.dropped["vision"].float().mean()) < 0.15


# ----------------------------------------------------------------------------- config, presets, spaces


def test_config_errors_name_the_field():
    spec = SPECS["reg_aligned"]
    for bad, field in [({"train_protocol": "fixed"}, "train_protocol"), ({"static_rate": 1.5}, "static_rate"),
                       ({"kernel_size": 1}, "kernel_size"), ({"levels": 0}, "levels"),
                       ({"distill_distance": "kl"}, "distill_distance"), ({"hidden": 30, "heads": 4}, "divisible"),
                       ({"recon_weight": -1.0}, "recon_weight"), ({"encoder_kernel": 2}, "encoder_kernel")]:
        with pytest.raises(ValueError, match=field):
            build_model("mitr_dnet", bad, spec)
    with pytest.raises(ValueError, match="unknown letters"):
        build_model("mitr_dnet", {"train_modalities": "tx"}, spec)


def test_levels_and_filters_set_the_width_and_parameter_count():
    spec = SPECS["reg_aligned"]
    model = small(spec, levels=3, filters=5)
    assert [lvl.conv.dilation[0] for lvl in model.mibtrl.levels] == [1, 2, 4]
    assert model.to_fusion.in_features == 15 and model.decoders["audio"].in_features == 15
    # MIB-TRL: 3 levels of Conv1d(5 -> 2*5, k=2) with bias
    assert sum(p.numel() for p in model.mibtrl.parameters()) == 3 * (5 * 10 * 2 + 10)


def test_paper_preset_and_search_spaces():
    cls = model_class("mitr_dnet")
    paper = cls.preset("paper")["model_config"]
    assert paper["levels"] == 4 and paper["filters"] == 25 and paper["kernel_size"] == 2
    assert paper["distill_weight"] == 0.3 and paper["train_protocol"] == "static"
    build_model("mitr_dnet", {**paper, "hidden": 16, "heads": 2}, SPECS["reg_aligned"])
    grid = get_space("mitr_dnet", "paper")
    assert [draw(grid, p)["levels"] for p in grid.grid] == [1, 2, 3, 4, 5]
    wide = get_space("mitr_dnet", "wide")
    params = draw(wide, {"levels": 2, "filters": 16, "distill_weight": 0.1, "simsiam_weight": 0.5,
                         "recon_weight": 0.2, "lr": 1e-3})
    assert set(params) == {"levels", "filters", "distill_weight", "simsiam_weight", "recon_weight", "lr"}
    build_model("mitr_dnet", {**{k: v for k, v in params.items() if k != "lr"}, **cls.study_defaults["model_config"]},
                SPECS["cls4_unaligned"])


@pytest.mark.parametrize("source", ["synthetic:mosi?scale=0.05", "synthetic:iemocap?scale=0.02&aligned=0"])
def test_overfits_eight_samples_with_its_own_losses(source):
    """8 synthetic samples, static masks (fixed per sample): the full loss and the student's task
    loss fall; predictions on the complete inputs fit the labels better than at the start."""
    from affectune.data import load
    from affectune.loader import preload

    ds = load(source)
    batch = preload(ds, "train").batch(slice(0, 8))
    torch.manual_seed(0)
    model = build_model("mitr_dnet", {"hidden": 16, "heads": 2, "layers": 1, "dropout": 0.0,
                                      "train_protocol": "static", "static_rate": 0.3}, ds.spec())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(40):
        losses = model.training_losses(model.train_policy(batch, torch.Generator().manual_seed(step)))
        history.append({k: float(v.detach()) for k, v in losses.items()})
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    first, last = history[0], history[-1]
    assert last["loss"] < 0.6 * first["loss"], (first, last)
    assert last["task"] < 0.5 * first["task"], (first, last)
    assert last["task_teacher"] < 0.5 * first["task_teacher"], (first, last)
