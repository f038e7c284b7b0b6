"""UMDF: the distillation losses (hand values, scipy parity), the two train views, inference by
cloning, the loss composition, the joint time axis, presets, and an 8-sample overfit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon

from tests.fitting import fit_fixed_batch
from affectune import MODALITIES
from affectune.data.schema import DatasetSpec
from affectune.models import build_model
from affectune.models.base import TrainViews
from affectune.models.losses import gaussian_mmd, js_divergence, mmd_bandwidths
from affectune.models.umdf import UMDF, joint_sequence
from tests.test_models import SPECS, make_batch

SMALL = {"hidden": 16, "layers": 1, "heads": 2}


def build(spec, seed: int = 0, **extra) -> UMDF:
    torch.manual_seed(seed)
    return build_model("umdf", {**SMALL, **extra}, spec)


# ----------------------------------------------------------------------------- MMD and JS


def test_mmd_is_zero_for_identical_samples():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert float(gaussian_mmd(x, x.clone())) == 0.0
    assert float(gaussian_mmd(x, x.clone(), bandwidths=torch.tensor([0.5, 3.0]))) == 0.0
    same = torch.ones(4, 3)  # all pairwise distances 0: the bandwidth heuristic must not divide by 0
    assert float(gaussian_mmd(same, same)) == 0.0


def test_mmd_hand_computed_tiny_case():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    # k = exp(-d^2) + exp(-d^2 / 2). mean Kxx = (4 + 2a) / 4, mean Kyy = (4 + 2b) / 4,
    # mean Kxy = (2 + b + 2a) / 4 with a = e^-1 + e^-0.5 (d^2 = 1), b = e^-4 + e^-2 (d^2 = 4):
    # MMD^2 = (4 - 2a) / 4 = 1 - a / 2.
    expected = 1 - (math.exp(-1) + math.exp(-0.5)) / 2
    got = gaussian_mmd(x, y, bandwidths=torch.tensor([1.0, 2.0]))
    assert abs(float(got) - expected) < 1e-6
    # DAN bandwidths: ordered-pair squared distances of [0, 1, 0, 2] sum to 22 over 12 pairs
    torch.testing.assert_close(mmd_bandwidths(x, y, num_kernels=3, kernel_mul=2.0),
                               torch.tensor([11 / 12, 11 / 6, 11 / 3]))
    assert float(gaussian_mmd(x, y, num_kernels=3, kernel_mul=2.0)) > 0


def test_mmd_grows_with_the_shift_and_has_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g)
    y = torch.randn(32, 4, generator=g)
    near = gaussian_mmd(x, y, bandwidths=torch.tensor([1.0, 4.0]))
    far = gaussian_mmd(x, y + 3.0, bandwidths=torch.tensor([1.0, 4.0]))
    assert 0 < float(near) < float(far)
    y = y.requires_grad_()
    gaussian_mmd(x, y + 1.0).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="MMD"):
        gaussian_mmd(x, y[:, :3])


def test_js_matches_scipy():
    g = torch.Generator().manual_seed(2)
    p, q = torch.randn(7, 4, generator=g) * 2, torch.randn(7, 4, generator=g) * 2
    P, Q = F.softmax(p, -1).double().numpy(), F.softmax(q, -1).double().numpy()
    # scipy returns the JS *distance* (square root), natural log by default
    expected = np.mean(jensenshannon(P, Q, axis=1) ** 2)
    assert abs(float(js_divergence(p, q)) - expected) < 1e-6
    assert abs(float(js_divergence(q, p)) - expected) < 1e-6  # symmetric
    assert float(js_divergence(p, p)) == pytest.approx(0.0, abs=1e-7)
    sure = torch.tensor([[50.0, -50.0]])  # disjoint distributions: JS = ln 2
    assert float(js_divergence(sure, sure.flip(-1))) == pytest.approx(math.log(2), abs=1e-6)


# ----------------------------------------------------------------------------- train views


def _fully_absent(view, m):
    """(B,) True where modality m is absent as a whole: flagged and every valid frame dropped."""
    k = MODALITIES.index(m)
    frames_gone = (view.dropped[m] | ~view.valid[m]).all(1)
    return ~view.available[:, k] & frames_gone


def test_two_views_differ_and_both_drop_whole_modalities():
    spec = SPECS["cls4_unaligned"]
    model = build(spec)
    batch = make_batch(spec, "complete", B=64)
    views = model.train_policy(batch, torch.Generator().manual_seed(0))
    assert isinstance(views, TrainViews) and set(views.views) == {"a", "b"} and views.complete is batch
    a, b = views["a"], views["b"]
    assert (a.available != b.available).any(1).all()  # heterogeneous: every sample differs between views
    for view in (a, b):
        absent = torch.stack([_fully_absent(view, m) for m in MODALITIES], 1)  # (B, 3)
        assert absent.any(1).sum() > 10  # inter-modality drops in both views, across the batch
        assert torch.equal(absent, ~view.available)  # an absent modality has no frame left
        present_dropped = torch.stack([(view.dropped[m] & view.valid[m]).any(1) & view.available[:, k]
                                       for k, m in enumerate(MODALITIES)], 1)
        assert present_dropped.any()  # intra-modality frame drops too
    # the same generator seed gives the same views (the loop's seeding reproduces a run)
    again = model.train_policy(batch, torch.Generator().manual_seed(0))
    for m in MODALITIES:
        assert torch.equal(again["a"].dropped[m], a.dropped[m]) and torch.equal(again["b"].dropped[m], b.dropped[m])


def test_train_views_include_the_complete_case():
    """P(complete version) = intact_prob / 7 per view: all modalities available and no frame dropped."""
    spec = DatasetSpec("regression", 0, SPECS["reg_aligned"].dims, {m: 40 for m in MODALITIES}, aligned=True)
    batch = make_batch(spec, "complete", B=1400)  # long sequences: frame drops at r > 0 rarely leave none

    def complete_share(view) -> float:
        dropped_any = torch.stack([view.dropped[m].any(1) for m in MODALITIES], 1).any(1)
        return float((view.available.all(1) & ~dropped_any).float().mean())

    views = build(spec, intact_prob=0.5).train_policy(batch, torch.Generator().manual_seed(4))
    for name in ("a", "b"):
        assert abs(complete_share(views[name]) - 0.5 / 7) < 0.025  # 1400 draws: sd 0.007
    never = build(spec, intact_prob=0.0).train_policy(batch, torch.Generator().manual_seed(4))
    assert complete_share(never["a"]) < 0.01 and complete_share(never["b"]) < 0.01


# ----------------------------------------------------------------------------- inference and losses


def test_inference_feeds_the_same_input_to_both_streams(monkeypatch):
    spec = SPECS["cls4_unaligned"]
    model = build(spec).eval()
    batch, other = make_batch(spec, "half_frames", seed=1), make_batch(spec, "half_frames", seed=1)
    other = other.replace(audio=torch.zeros_like(other.audio))
    seen = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda b: seen.append(b) or encode(b))
    with torch.no_grad():
        pred = model.predict(batch)
    assert seen and all(b is batch for b in seen)  # only the test sample reaches the streams
    monkeypatch.undo()
    with torch.no_grad():  # a clone through two separate passes gives the same prediction
        two_pass = model.two_stream(batch, batch.replace())
        mixed = model.two_stream(batch, other)
    torch.testing.assert_close(pred, two_pass["pred"], atol=1e-6, rtol=0)
    torch.testing.assert_close(two_pass["h_a"], two_pass["h_b"], atol=1e-6, rtol=0)
    assert (mixed["pred"] - pred).abs().max() > 1e-4  # the second stream does matter


@pytest.mark.parametrize("spec_name", ["reg_aligned", "cls7_unaligned"])
def test_loss_is_task_plus_weighted_mmd_and_logits(spec_name):
    spec = SPECS[spec_name]
    model = build(spec, lambda1=0.3, lambda2=2.0).eval()  # eval: no dropout, so we can recompute
    batch = make_batch(spec, "complete", B=6)
    views = model.train_policy(batch, torch.Generator().manual_seed(5))
    losses = model.training_losses(views)
    out = model.two_stream(views["a"], views["b"])
    if spec.task == "regression":
        task = F.mse_loss(out["pred"], batch.label)  # the paper's MSE task loss
        logits = F.mse_loss(out["logits_a"], out["logits_b"])
    else:
        task = F.cross_entropy(out["pred"], batch.label)
        logits = js_divergence(out["logits_a"], out["logits_b"])
    torch.testing.assert_close(losses["task"], task.detach())
    torch.testing.assert_close(losses["mmd"], gaussian_mmd(out["h_a"], out["h_b"]).detach())
    torch.testing.assert_close(losses["logits"], logits.detach())
    torch.testing.assert_close(losses["loss"].detach(), task + 0.3 * losses["mmd"] + 2.0 * logits)
    assert float(losses["mmd"]) > 0 and float(losses["logits"]) > 0  # the views differ
    # f_y is the prediction head: logits_k = head(h_k)
    torch.testing.assert_close(out["logits_a"], model.head(out["h_a"]))
    # complete-only views: both streams see the same batch, both distillation terms vanish
    same = model.training_losses(TrainViews(batch))
    assert float(same["mmd"]) == 0.0 and float(same["logits"]) < 1e-10
    if spec.task == "regression":
        l1 = build(spec, regression_loss="l1").eval()
        torch.testing.assert_close(l1.training_losses(TrainViews(batch))["task"],
                                   (l1(batch)["pred"] - batch.label).abs().mean().detach())


# ----------------------------------------------------------------------------- joint time axis


def test_joint_sequence_proportional_hand_case():
    d = 1
    lengths = {"text": 2, "audio": 4, "vision": 0}
    Z = {m: torch.zeros(1, 5, d) for m in MODALITIES}
    valid = {m: (torch.arange(5) < n).unsqueeze(0) for m, n in lengths.items()}
    Z["text"][0, :2, 0] = torch.tensor([10.0, 11.0])
    Z["audio"][0, :4, 0] = torch.tensor([20.0, 21.0, 22.0, 23.0])
    H, joint_valid = joint_sequence(Z, valid, "proportional")
    assert H.shape == (1, 4, 3) and joint_valid.tolist() == [[True] * 4]
    assert H[0, :, 0].tolist() == [10.0, 10.0, 11.0, 11.0]  # text stretched to 4 frames
    assert H[0, :, 1].tolist() == [20.0, 21.0, 22.0, 23.0]  # the longest modality is the axis
    assert H[0, :, 2].tolist() == [0.0] * 4  # no vision frame: zeros
    H_idx, v_idx = joint_sequence(Z, valid, "index")
    assert H_idx.shape == (1, 5, 3) and v_idx.tolist() == [[True] * 4 + [False]]
    Z["audio"] = torch.zeros(1, 6, d)
    with pytest.raises(ValueError, match="proportional"):
        joint_sequence(Z, {**valid, "audio": torch.ones(1, 6, dtype=torch.bool)}, "index")


def test_joint_axis_follows_alignment_and_config_errors_name_the_field():
    assert build(SPECS["reg_aligned"]).joint_axis == "index"
    assert build(SPECS["cls4_unaligned"]).joint_axis == "proportional"
    assert build(SPECS["reg_aligned"], joint_axis="proportional").joint_axis == "proportional"
    for bad, field in (({"hidden": 30, "heads": 4}, "divisible"), ({"joint_axis": "time"}, "joint_axis"),
                       ({"gate_kernel": 2}, "gate_kernel"), ({"intact_prob": 1.5}, "intact_prob"),
                       ({"regression_loss": "huber"}, "regression_loss"), ({"enhance": "x"}, "enhance"), ({"lambda1": -1.0}, "lambda1")):
        with pytest.raises(ValueError, match=field):
            build_model("umdf", bad, SPECS["reg_aligned"])


def test_dfim_self_enhancement_weights_frames_by_softmax_scores():
    model = build(SPECS["reg_aligned"]).eval()
    plain = build(SPECS["reg_aligned"], enhance="plain").eval()
    H = torch.randn(2, 4, 48, generator=torch.Generator().manual_seed(3))
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    with torch.no_grad():
        for m in (model, plain):
            m.dfim.score["a"].weight.zero_()  # uniform scores: M = 1/n on the n valid frames
        n = valid.sum(1, keepdim=True).unsqueeze(-1)  # (2, 1, 1)
        expected = H * valid.unsqueeze(-1)
        torch.testing.assert_close(model.dfim.enhance(H, valid, "a"), expected)  # mean weight 1
        torch.testing.assert_close(plain.dfim.enhance(H, valid, "a"), expected / n)  # diag(M) H
        model.dfim.score["a"].bias.zero_()
        model.dfim.score["a"].weight[0, 0] = 1.0  # score = H[..., 0]: softmax over valid frames
        M = torch.softmax(H[..., 0].masked_fill(~valid, float("-inf")), -1) * n.squeeze(-1)
        torch.testing.assert_close(model.dfim.enhance(H, valid, "a"), H * M.unsqueeze(-1))


# ----------------------------------------------------------------------------- presets


def test_paper_preset_per_dataset():
    mosi = UMDF.preset("paper", "synthetic:mosi?scale=0.1")
    mosei = UMDF.preset("paper", "mmsa:/data/CMU-MOSEI/aligned_50.pkl")
    iemocap = UMDF.preset("paper", "merbench:/data/IEMOCAP")
    assert (mosi["batch_size"], mosi["lr"], mosi["epochs"], mosi["model_config"]["heads"]) == (128, 1e-3, 100, 10)
    assert (mosei["batch_size"], mosei["lr"], mosei["epochs"], mosei["model_config"]["heads"]) == (16, 1e-3, 30, 8)
    assert (iemocap["batch_size"], iemocap["lr"], iemocap["epochs"], iemocap["model_config"]["heads"]) == (32, 2e-3, 40, 10)
    for p in (mosi, mosei, iemocap):
        assert p["optimizer"] == "adam" and p["model_config"]["hidden"] == 40 and p["model_config"]["layers"] == 4
        build_model("umdf", p["model_config"], SPECS["reg_aligned"])  # valid configs
    assert UMDF.preset("paper") == mosi
    with pytest.raises(ValueError, match="MOSI, MOSEI or IEMOCAP"):
        UMDF.preset("paper", "synthetic:meld")
    with pytest.raises(KeyError, match="no preset"):
        UMDF.preset("tiny", "synthetic:mosi")


# ----------------------------------------------------------------------------- overfit


@pytest.mark.parametrize("source", ["synthetic:mosi?scale=0.05", "synthetic:iemocap?scale=0.02&aligned=0"])
def test_umdf_overfits_8_samples(source):
    from affectune.data import load
    from affectune.loader import preload

    ds = load(source)
    batch = preload(ds, "train").batch(slice(0, 8))
    model = build(ds.spec(), dropout=0.0)
    views = model.train_policy(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(model.training_losses(views)["loss"])
    # complete inputs through both streams, fixed batch: the loss must fall
    first, last = fit_fixed_batch(model, TrainViews(batch), steps=25)
    last = last["loss"]
    assert last < 0.7 * first, f"umdf on {source}: loss {first:.3f} -> {last:.3f}"


def test_distill_space_draws_valid_configs_at_the_study_and_paper_widths():
    import optuna

    from affectune.models import make_config
    from affectune.search_spaces import apply_params, get_space

    space = get_space("umdf", "distill")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        derived = space.define(trial) or {}
        for hidden in (UMDF.study_defaults["model_config"]["hidden"], 40):
            cfg = apply_params("umdf", {**trial.params, **derived}, {"model_config": {"hidden": hidden}})
            model_cfg = make_config("umdf", cfg["model_config"])  # valid: heads divide the width
            assert 1e-2 <= model_cfg.lambda1 <= 10 and 1e-2 <= model_cfg.lambda2 <= 10
            assert 1 <= model_cfg.layers <= 4 and 1e-4 <= cfg["lr"] <= 3e-3 and "lr" not in cfg["model_config"]
        seen.add(model_cfg.heads)
        study.tell(trial, 0.0)
    assert seen == {2, 4, 5, 10}
