"""MCULoRA: the LoRA layer, routing by `Batch.available`, soft orthogonality, DPFT and its split use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from tests.fitting import fit_fixed_batch
from affectune import MODALITIES
from affectune import missing
from affectune.batch import Batch
from affectune.data.schema import DatasetSpec
from affectune.models import build_model
from affectune.models.base import EpochContext, TrainViews
from affectune.models.layers import LoRALinear
from affectune.models.mculora import (
    NUM_COMBINATIONS, combination_labels, dpft_update, js_divergence, project_to_capped_simplex,
    soft_orthogonality,
)

DIMS = {"text": 10, "audio": 4, "vision": 6}
REG = DatasetSpec("regression", 0, DIMS, {m: 6 for m in MODALITIES}, vocab_size=20, aligned=True)
CLS = DatasetSpec("classification", 4, DIMS, {"text": 5, "audio": 8, "vision": 7}, vocab_size=20)
SMALL = {"hidden": 16, "depth": 1, "heads": 2}


def make_batch(spec: DatasetSpec, B: int = 6, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    feats, valid = {}, {}
    for m in MODALITIES:
        T = spec.seq_lens[m]
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        valid[m] = torch.arange(T)[None, :] < lengths[:, None]
        feats[m] = torch.randn(B, T, spec.dims[m], generator=g) * valid[m].unsqueeze(-1)
    label = (torch.rand(B, generator=g) * 6 - 3) if spec.task == "regression" else \
        torch.randint(0, spec.num_classes, (B,), generator=g)
    return Batch(**feats, valid=valid, dropped={m: torch.zeros_like(v) for m, v in valid.items()},
                 label=label, index=torch.arange(B))


def build(spec=REG, seed=0, **extra):
    torch.manual_seed(seed)
    return build_model("mculora", {**SMALL, **extra}, spec)


# ----------------------------------------------------------------------------- the LoRA layer


def test_lora_linear_equals_base_at_init_and_after_b_moves_it_does_not():
    torch.manual_seed(0)
    layer = LoRALinear(5, 3, rank=2, num_private=7, dropout=0.0)
    x = torch.randn(4, 2, 5)
    route = torch.tensor([0, 6, 3, 3])
    torch.testing.assert_close(layer(x), layer.base(x), atol=0, rtol=0)  # B = 0: shared path
    torch.testing.assert_close(layer(x, route), layer.base(x), atol=0, rtol=0)  # B = 0: private path
    assert all(float(b.detach().abs().max()) == 0 for b in (layer.shared_B, *layer.private_B))
    assert all(float(a.detach().abs().max()) > 0 for a in (layer.shared_A, *layer.private_A))  # Kaiming, not zero
    bound = 1 / math.sqrt(5)  # kaiming_uniform(a=sqrt(5)) on fan_in 5
    assert float(layer.shared_A.detach().abs().max()) <= bound
    with torch.no_grad():
        layer.private_B[3].fill_(1.0)
    y = layer(x, route)
    expected3 = layer.base(x[2:]) + x[2:] @ layer.private_A[3].T @ layer.private_B[3].T
    torch.testing.assert_close(y[2:], expected3)
    torch.testing.assert_close(y[:2], layer.base(x[:2]))  # other samples' adapters untouched
    torch.testing.assert_close(layer(x), layer.base(x))  # the shared path ignores private adapters
    with pytest.raises(ValueError, match="out of range"):
        layer(x, torch.tensor([0, 7, 1, 1]))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(5, 3, rank=0, num_private=7)


def test_private_adapter_gets_gradient_only_from_its_own_combination():
    model = build(dropout=0.0, lora_dropout=0.0)
    batch = make_batch(REG, B=4)
    # sample 0: only text available ({t} is combination 2); samples 1-3: everything (6)
    keep = torch.tensor([[True, False, False]] + [[True, True, True]] * 3)
    batch = missing.drop_modalities(batch, keep)
    assert missing.combination_index(batch).tolist() == [2, 6, 6, 6]
    out = model(batch)
    out["pred"][0].backward()  # only sample 0 in the loss
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for layer in layers:
        for k in range(NUM_COMBINATIONS):
            grads = (layer.private_A[k].grad, layer.private_B[k].grad)
            if k == 2:
                assert grads[1] is not None  # B gets gradient at init (A does too once B != 0)
            else:
                assert grads[0] is None or float(grads[0].abs().max()) == 0
                assert grads[1] is None or float(grads[1].abs().max()) == 0, f"adapter {k} moved by sample 0"
    assert any(float(layer.private_B[2].grad.abs().max()) > 0 for layer in layers)
    # and a sample of combination 6 moves adapter 6 only
    model.zero_grad(set_to_none=True)
    model(batch)["pred"][1].backward()
    assert all(layer.private_B[2].grad is None or float(layer.private_B[2].grad.abs().max()) == 0 for layer in layers)
    assert any(layer.private_B[6].grad is not None and float(layer.private_B[6].grad.abs().max()) > 0
               for layer in layers)


def test_routing_reads_available_not_dropped_and_not_fill():
    model = build(spec=CLS).eval()
    batch = make_batch(CLS, B=6, seed=3)
    absent = torch.tensor([[False, True, False], [False, False, True], [True, False, False],
                           [False, True, True], [False, False, False], [True, True, False]])
    whole = {m: batch.valid[m] & absent[:, k:k + 1] for k, m in enumerate(MODALITIES)}
    zero = missing.apply_dropped(batch, whole, fill="zero", record=False, absent=absent)
    gauss = missing.apply_dropped(batch, whole, fill="gaussian", seed=7, record=False, absent=absent)
    assert not torch.equal(zero.audio, gauss.audio)  # the fills really differ
    with torch.no_grad():
        p_zero, p_gauss = model.predict(zero), model.predict(gauss)
        recorded = model.predict(zero.replace(dropped=whole))  # the record of drops changes nothing
    torch.testing.assert_close(p_gauss, p_zero, atol=0, rtol=0)
    torch.testing.assert_close(recorded, p_zero, atol=0, rtol=0)
    assert model(zero)["combination"].tolist() == missing.combination_index(zero).tolist()
    # a modality absent but whose features were never filled (noise left in) is ignored too
    noisy = zero.replace(audio=torch.randn_like(zero.audio) * 10)
    with torch.no_grad():
        p_noisy = model.predict(noisy)
    rows = absent[:, 1]  # samples without audio
    torch.testing.assert_close(p_noisy[rows], p_zero[rows], atol=0, rtol=0)


# ----------------------------------------------------------------------------- losses


def test_soft_orthogonality_zero_for_orthogonal_and_hand_value_otherwise():
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])  # (1, 3, 2)
    c = torch.tensor([[[0.0, 5.0], [-4.0, 0.0], [1.0, -1.0]]])
    present = torch.ones(1, 3, dtype=torch.bool)
    assert float(soft_orthogonality(s, c, present)) == 0.0
    # cos^2: (1,0)vs(1,1) = 1/2; (0,2)vs(0,-3) = 1; (3,3)vs(1,-1) = 0, but the last is absent
    c2 = torch.tensor([[[1.0, 1.0], [0.0, -3.0], [1.0, -1.0]]])
    torch.testing.assert_close(soft_orthogonality(s, c2, present), torch.tensor((0.5 + 1.0 + 0.0) / 3))
    torch.testing.assert_close(soft_orthogonality(s, c2, torch.tensor([[True, True, False]])), torch.tensor(0.75))
    assert float(soft_orthogonality(s, c2, torch.zeros(1, 3, dtype=torch.bool))) == 0.0


def test_training_loss_is_task_plus_weighted_orthogonality():
    model = build(spec=REG, orth_weight=0.25).eval()
    batch = make_batch(REG)
    with torch.no_grad():
        model.head.shared_B.normal_()  # make the two streams differ so orth is not trivially 1
    views = TrainViews(batch)
    losses = model.training_losses(views)
    out = model(batch)
    task = (out["pred"] - batch.label).abs().mean()
    orth = soft_orthogonality(out["shared"], out["characteristic"], out["present"])
    torch.testing.assert_close(losses["task"], task.detach())
    torch.testing.assert_close(losses["orth"], orth.detach())
    torch.testing.assert_close(losses["loss"].detach(), task.detach() + 0.25 * orth.detach())
    # at init (B = 0) both streams coincide: every token pair has cosine 1
    fresh = build(spec=REG).eval()
    torch.testing.assert_close(fresh.training_losses(views)["orth"], torch.tensor(1.0))


def test_prediction_is_the_weighted_mix_of_common_and_characteristic():
    model = build(spec=CLS).eval()
    with torch.no_grad():
        for layer in (model.head, model.fuse):
            for b in (layer.shared_B, *layer.private_B):
                b.normal_()
        out = model(make_batch(CLS))
    w = out["w"].unsqueeze(-1)
    torch.testing.assert_close(out["pred"], (1 - w) * out["y_common"] + w * out["y_characteristic"])
    assert ((out["w"] > 0) & (out["w"] < 1)).all()


# ----------------------------------------------------------------------------- DPFT


def test_js_divergence_matches_scipy():
    torch.manual_seed(0)
    p, q = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    ours = js_divergence(p, q)
    ref = [jensenshannon(p[i].softmax(-1).numpy(), q[i].softmax(-1).numpy()) ** 2 for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)
    assert float(js_divergence(p, p).abs().max()) < 1e-12


def test_capped_simplex_projection():
    lo, hi = 0.07, 0.22
    feasible = torch.tensor([0.1, 0.2, 0.1, 0.15, 0.15, 0.1, 0.2], dtype=torch.float64)
    torch.testing.assert_close(project_to_capped_simplex(feasible, lo, hi), feasible)
    q = torch.tensor([0.5, 0.0, 0.1, 0.1, 0.1, 0.1, 0.1], dtype=torch.float64)
    p = project_to_capped_simplex(q, lo, hi)
    assert abs(float(p.sum()) - 1) < 1e-9 and float(p.min()) >= lo - 1e-12 and float(p.max()) <= hi + 1e-12
    assert float(p[0]) == pytest.approx(hi) and float(p[1]) == pytest.approx(lo)
    # the unclipped middle entries keep their order and shift by one common tau
    mid = p[2:] - q[2:]
    assert float(mid.max() - mid.min()) < 1e-9


def test_dpft_raises_the_stalled_combination_and_respects_the_clip_range():
    lo, hi, step = 0.07, 0.22, 0.01
    probs = torch.full((7,), 1 / 7, dtype=torch.float64)
    js = torch.zeros(7)
    history = []
    for epoch in range(40):  # scripted: combination 3 ({v,a}) stalls, the others keep decoupling
        prev, js = js, js + torch.tensor([0.05, 0.04, 0.06, 0.0, 0.03, 0.02, 0.07])
        probs = dpft_update(probs, prev, js, step, lo, hi)
        history.append(probs.clone())
        assert abs(float(probs.sum()) - 1) < 1e-9
        assert float(probs.min()) >= lo - 1e-12 and float(probs.max()) <= hi + 1e-12
    assert float(history[0][3]) == pytest.approx(1 / 7 + step)  # first step: +step to the slowest
    assert float(history[0][6]) == pytest.approx(1 / 7 - step)  # -step to the fastest
    assert all(float(b[3]) >= float(a[3]) for a, b in zip(history, history[1:]))
    assert float(history[-1][3]) == pytest.approx(hi)  # ends at the cap
    assert float(history[-1][6]) == pytest.approx(lo)


def test_on_epoch_end_moves_buffers_logs_probabilities_and_round_trips(monkeypatch):
    model = build(spec=REG, dpft_step=0.02)
    script = iter([torch.tensor([0.1] * 7), torch.tensor([0.2, 0.2, 0.2, 0.1, 0.2, 0.2, 0.3])])
    monkeypatch.setattr(model, "combination_js", lambda ctx: next(script))
    first = model.on_epoch_end(0, ctx=None)
    labels = combination_labels()
    assert labels == ["v", "a", "t", "av", "tv", "ta", "tav"]
    assert all(first[f"dpft_p_{k}"] == pytest.approx(1 / 7) for k in labels)  # first epoch: measure only
    assert first["dpft_js_av"] == pytest.approx(0.1)
    second = model.on_epoch_end(1, ctx=None)
    assert second["dpft_p_av"] > 1 / 7 > second["dpft_p_tav"]
    assert sum(second[f"dpft_p_{k}"] for k in labels) == pytest.approx(1.0)
    # the probabilities live in buffers: the state dict carries them, and sampling uses them
    clone = build(spec=REG, dpft_step=0.02, seed=9)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.dpft_probs, model.dpft_probs) and int(clone.dpft_measured) == 2
    off = build(spec=REG, dpft=False)
    assert off.on_epoch_end(0, ctx=None) == {f"dpft_p_{k}": pytest.approx(1 / 7) for k in labels}


def test_train_policy_samples_with_the_buffer_probabilities():
    model = build(spec=CLS)
    batch = make_batch(CLS, B=40)
    with torch.no_grad():
        model.dpft_probs.zero_()
        model.dpft_probs[4] = 1.0  # only {v, t}
    views = model.train_policy(batch, torch.Generator().manual_seed(0))
    assert set(views.views) == {"masked"} and views.complete is batch
    assert views.combination["masked"].tolist() == [4] * 40
    view = views["masked"]
    assert missing.combination_index(view).tolist() == [4] * 40
    assert not view.available[:, MODALITIES.index("audio")].any()
    assert float(view.audio.abs().max()) == 0


def _tiny_split(source="synthetic:mosi?scale=0.05", split="valid"):
    from affectune.data import load
    from affectune.loader import preload

    ds = load(source)
    return ds, preload(ds, split)


def test_dpft_reads_only_the_validation_split_and_removes_whole_modalities():
    ds, valid = _tiny_split()
    model = build(spec=ds.spec())
    seen = []

    def predict(data, fn):
        seen.append(data)
        with torch.inference_mode():
            rows = []
            for b in data.batches(16):
                seen_available.append(b.available.clone())
                rows.append(fn(b))
            return torch.cat(rows).float()

    seen_available = []
    ctx = EpochContext(valid=valid, valid_masked=None, task=ds.task, select_metric="valmask_mae",
                       direction="min", predict=predict, score=None)
    logged = model.on_epoch_end(0, ctx)
    assert all(data is valid for data in seen) and len(seen) == NUM_COMBINATIONS
    assert all(v.all() for v in seen_available)  # the split is complete; drops happen inside fn
    js = torch.tensor([logged[f"dpft_js_{k}"] for k in combination_labels()])
    assert torch.isfinite(js).all() and (js >= 0).all() and (js <= math.log(2)).all()
    # by hand, for {t}: the same model on the split with audio and vision removed
    keep = torch.tensor([[True, False, False]]).expand(len(valid), -1)
    model.eval()
    with torch.no_grad():
        by_hand = model.sample_js(missing.drop_modalities(valid.batch(slice(None)), keep)).mean()
    assert logged["dpft_js_t"] == pytest.approx(float(by_hand), rel=1e-5, abs=1e-9)


# ----------------------------------------------------------------------------- optimiser, shapes, fitting


def test_param_groups_split_lora_from_base():
    model = build(spec=REG, lora_lr_scale=0.5, lora_weight_decay_scale=0.0)
    groups = model.param_groups({"lr": 1e-3, "weight_decay": 1e-5})
    base, lora = groups
    assert (base["lr"], base["weight_decay"]) == (1e-3, 1e-5)
    assert (lora["lr"], lora["weight_decay"]) == (5e-4, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    lora_names = {names[id(p)] for p in lora["params"]}
    assert all(".shared_" in n or ".private_" in n for n in lora_names)
    assert not any(".shared_" in n or ".private_" in n for n in (names[id(p)] for p in base["params"]))
    assert len(base["params"]) + len(lora["params"]) == len(list(model.parameters()))
    torch.optim.Adam(groups)  # a valid optimiser spec


def test_rank_fields_set_adapter_shapes_and_parameter_count():
    model = build(spec=REG, rank_proj=3, rank_mlp=5, rank_head=2)
    assert tuple(model.in_proj["text"].shared_A.shape) == (3, DIMS["text"])
    assert tuple(model.blocks[0].attn.q.private_B[6].shape) == (16, 3)
    assert tuple(model.blocks[0].fc1.shared_A.shape) == (5, 16)
    assert tuple(model.head.private_A[0].shape) == (2, 48)
    d, w = 16, 48
    lora = lambda i, o, r: (i * o + o) + 8 * r * (i + o)  # noqa: E731  base + 8 adapters (shared + 7)
    expected = sum(lora(DIMS[m], d, 3) for m in MODALITIES)
    expected += 4 * lora(d, d, 3) + 2 * lora(d, d, 5) + 4 * d  # attention, MLP, two LayerNorms
    expected += 2 * d + lora(w, w, 2) + lora(w, 1, 2)  # final norm, fuse, head
    expected += (2 * w * 64 + 64) + (64 + 1)  # weighting MLP
    assert model.num_parameters() == expected == model.num_parameters(trainable_only=False)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="divisible"):
        build_model("mculora", {"hidden": 15, "heads": 2}, REG)
    with pytest.raises(ValueError, match="rank_mlp"):
        build_model("mculora", {"rank_mlp": 0}, REG)
    with pytest.raises(ValueError, match="dpft_min_prob"):
        build_model("mculora", {"dpft_min_prob": 0.2}, REG)
    with pytest.raises(ValueError, match="orth_weight"):
        build_model("mculora", {"orth_weight": -1.0}, REG)


@pytest.mark.parametrize("source", ["synthetic:mosi?scale=0.05", "synthetic:iemocap?scale=0.02&aligned=0"])
def test_overfits_eight_samples(source):
    ds, train = _tiny_split(source, "train")
    batch = train.batch(slice(0, 8))
    model = build(spec=ds.spec(), dropout=0.0, lora_dropout=0.0)
    first, last = fit_fixed_batch(model, TrainViews(batch), steps=40,
                                  params=model.param_groups({"lr": 3e-3, "weight_decay": 0.0}))
    last = last["task"]
    assert last < 0.3 * first, f"{source}: loss {first:.3f} -> {last:.3f}"


# ----------------------------------------------------------------------------- dashboard


def test_dashboard_plots_the_dpft_probabilities_of_a_trial():
    import json
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))
    import views

    labels = combination_labels()
    p0 = {f"dpft_p_{k}": 1 / 7 for k in labels}
    p1 = {**p0, "dpft_p_av": 1 / 7 + 0.02, "dpft_p_tav": 1 / 7 - 0.02}
    js = {f"dpft_js_{k}": 0.1 for k in labels}  # not a distribution: no plot of its own
    curve = [{"epoch": 1, "val_mae": 0.9, **p0, **js}, {"epoch": 2, "val_mae": 0.8, **p1, **js}]
    frame = pd.DataFrame({"trial_id": ["t0", "t1"], "status": ["completed", "completed"],
                          "learning_curve": [json.dumps(curve), json.dumps(curve[:1])]})
    groups = views.curve_distributions(frame)
    assert groups == {"dpft_p": sorted(f"dpft_p_{k}" for k in labels)}
    fig = views.trial_distribution_figure(frame, "t0", groups["dpft_p"])
    traces = {t.name: (list(t.x), list(t.y)) for t in fig.data}
    assert set(traces) == set(labels)
    assert traces["av"] == ([1, 2], [pytest.approx(1 / 7), pytest.approx(1 / 7 + 0.02)])
    assert "t0" in fig.layout.title.text


# ----------------------------------------------------------------------------- presets and spaces


@pytest.mark.parametrize("space_name", ["paper", "wide"])
def test_search_spaces_yield_buildable_configs(space_name):
    import optuna

    from affectune.search_spaces import apply_params, get_space

    space = get_space("mculora", space_name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        derived = space.define(trial) or {}
        params = {**trial.params, **derived}
        config = apply_params("mculora", params, {"lr": 1e-3, "model_config": {"hidden": 16}}, space.helpers)
        assert "dpft_clip" not in config["model_config"] and "lr" in config
        mc = config["model_config"]
        assert {"rank_proj", "rank_mlp", "rank_head", "orth_weight", "dpft_step"} <= set(mc)
        assert mc["dpft_min_prob"] < 1 / 7 < mc["dpft_max_prob"]
        model = build_model("mculora", mc, REG)
        assert tuple(model.blocks[0].fc1.shared_A.shape)[0] == mc["rank_mlp"]


def test_paper_preset_and_study_defaults_build():
    from affectune.models.mculora import MCULoRA

    paper = MCULoRA.preset("paper")
    assert (paper["optimizer"], paper["lr"], paper["weight_decay"]) == ("adam", 1e-4, 1e-5)
    model = build_model("mculora", paper["model_config"], REG)
    assert (model.config.hidden, model.config.depth, model.config.heads, model.config.dropout) == (256, 4, 2, 0.5)
    assert (model.config.rank_proj, model.config.rank_mlp, model.config.rank_head) == (4, 8, 4)
    build_model("mculora", MCULoRA.study_defaults["model_config"], REG)


# ----------------------------------------------------------------------------- in the training loop


def test_loop_logs_dpft_probabilities_and_never_reads_test(tmp_path):
    import copy

    from affectune.data import load
    from affectune.train import read_checkpoint, train_loop
    from test_train import _GuardedDataset, _NoTestSplits  # the loop's split guard

    dataset = load("synthetic:mosi?scale=0.05")
    guarded = copy.copy(dataset)
    guarded.__class__ = _GuardedDataset
    guarded._fingerprint = dataset.fingerprint
    guarded.splits = _NoTestSplits(dataset.splits)
    cfg = {"model": "mculora", "model_config": {**SMALL, "dpft_step": 0.02}, "dataset": "synthetic:mosi?scale=0.05",
           "epochs": 3, "batch_size": 16, "num_threads": 1, "patience": None, "lr": 1e-3,
           "checkpoint_dir": str(tmp_path / "ckpt")}
    out = train_loop(cfg, dataset=guarded)
    labels = combination_labels()
    probs = [[epoch[f"dpft_p_{k}"] for k in labels] for epoch in out.history]
    assert all(sum(p) == pytest.approx(1.0) for p in probs)
    assert probs[0] == pytest.approx([1 / 7] * 7)  # epoch 1 only measures
    assert probs[1] != pytest.approx(probs[0]) and min(probs[2]) >= 0.07 - 1e-9 and max(probs[2]) <= 0.22 + 1e-9
    assert all(0 <= out.history[-1][f"dpft_js_{k}"] <= math.log(2) for k in labels)
    state = read_checkpoint(out.checkpoint_path)["state_dict"]
    assert {"dpft_probs", "dpft_prev_js", "dpft_measured"} <= set(state)


def test_dashboard_trial_explorer_shows_the_dpft_probabilities(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from streamlit.testing import v1 as ST

    from affectune.store import open_store

    store = open_store(str(tmp_path))
    lineage = {"method": "mculora", "dataset": "synthetic-mosi", "fingerprint": "f" * 32, "code_version": "test"}
    store.write_study({"study": "mculora_s", **lineage, "objective": [{"metric": "val_mae", "mode": "min"}]})
    labels = combination_labels()
    curve = [{"epoch": e, "val_mae": 1.0 - 0.1 * e,
              **{f"dpft_p_{k}": (1 / 7 + 0.01 * e if k == "av" else 1 / 7 - 0.01 * e / 6) for k in labels}}
             for e in (1, 2, 3)]
    store.write_trial("mculora_s", {**lineage, "trial_id": "t000", "status": "completed", "seed": 0,
                                    "config": {"model": "mculora"}, "params": {"lr": 1e-3}, "val_mae": 0.7,
                                    "learning_curve": curve, "epochs_run": 3})
    monkeypatch.setenv("AFFECTUNE_STORE", str(tmp_path))
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    at = ST.AppTest.from_file(str(app), default_timeout=60).run()
    at.switch_page("app_pages/trials.py").run()  # the Trial explorer page (/trials)
    assert not at.exception, [e.value for e in at.exception]
    figs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    dist = next(f for f in figs if f["layout"]["title"]["text"].startswith("dpft_p of trial t000"))
    av = next(t for t in dist["data"] if t["name"] == "av")
    assert av["x"] == [1, 2, 3] and av["y"] == pytest.approx([1 / 7 + 0.01 * e for e in (1, 2, 3)])
