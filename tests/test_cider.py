"""CIDer specifics: MSSD losses, MACI confounders and output, counterfactual tokens, tau calibration.

Registry-wide behaviour (every task, alignment and mask; gradients; padding) is covered by
tests/test_models.py, which iterates over every registered model, cider included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.fitting import fit_fixed_batch
from affectune import MODALITIES
from affectune.data.schema import MASK_ID, PAD_ID, UNK_ID, DatasetSpec
from affectune.loader import TensorSplit
from affectune.models import build_model
from affectune.models import cider as C
from affectune.models.base import EvalContext, FitContext, TrainViews

DIMS = {"text": 3, "audio": 2, "vision": 2}
REG = DatasetSpec("regression", 0, DIMS, {"text": 4, "audio": 6, "vision": 5}, vocab_size=12)
CLS = DatasetSpec("classification", 3, DIMS, {m: 4 for m in MODALITIES}, vocab_size=12, aligned=True)
SMALL = {"hidden": 8, "layers": 2, "heads": 2, "dropout": 0.0, "out_dropout": 0.0, "embed_dropout": 0.0}


def fixture_split(spec: DatasetSpec, labels, seed: int = 0) -> TensorSplit:
    """N samples with known lengths (sample i has i % T + 1 frames), random features, tokens."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    features, valid, lengths = {}, {}, {}
    for m in MODALITIES:
        T = spec.seq_lens[m]
        ln = torch.tensor([i % T + 1 for i in range(n)])
        valid[m] = torch.arange(T)[None, :] < ln[:, None]
        features[m] = torch.randn(n, T, spec.dims[m], generator=g) * valid[m].unsqueeze(-1)
        lengths[m] = ln.numpy()
    tokens = torch.randint(MASK_ID + 1, spec.vocab_size, (n, spec.seq_lens["text"]), generator=g)
    tokens = torch.where(valid["text"], tokens, torch.full_like(tokens, PAD_ID))
    dtype = torch.float32 if spec.task == "regression" else torch.int64
    return TensorSplit(features, valid, torch.tensor(labels, dtype=dtype),
                       np.array([f"s{i}" for i in range(n)]), lengths, tokens)


def build(spec, **extra):
    torch.manual_seed(0)
    return build_model("cider", {**SMALL, **extra}, spec)


def fit(model, split, name="fixture"):
    model.on_fit_start(FitContext(split, model.spec, {}, name))
    return model


# ----------------------------------------------------------------------------- MSSD losses


def test_recon_loss_counts_dropped_positions_only():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 3.0], [0.5, 0.0]]])  # (1, 3, 2)
    target = torch.tensor([[[9.0, 9.0], [0.0, 0.0], [0.0, 0.0]]])
    dropped = torch.tensor([[False, True, True]])
    # SmoothL1 (beta 1): |x| < 1 -> 0.5 x^2, else |x| - 0.5. Position 1: (0.5 + 2.5) / 2 = 1.5;
    # position 2: (0.125 + 0) / 2 = 0.0625; mean over the 2 dropped positions.
    assert C.masked_recon_loss(pred, target, dropped).item() == pytest.approx((1.5 + 0.0625) / 2)
    assert C.masked_recon_loss(pred, target, torch.zeros_like(dropped)).item() == 0.0
    # the model's loss: changing the target at kept positions or padding changes nothing
    model = build(REG).eval()
    complete = fixture_split(REG, [1.0, -1.0, 0.5, 2.0]).batch(slice(None))
    g = torch.Generator().manual_seed(1)
    dropped_masks = {m: complete.valid[m] & (torch.rand(complete.valid[m].shape, generator=g) < 0.5) for m in MODALITIES}
    from affectune.missing import apply_dropped

    masked = apply_dropped(complete, dropped_masks)
    with torch.no_grad():
        student = model(masked)
        ref = model.recon_loss(student, masked, complete)
        kept = {m: ~dropped_masks[m] for m in MODALITIES}
        noisy = complete.replace(**{m: complete.features(m) + 7.0 * kept[m].unsqueeze(-1) for m in MODALITIES})
        assert model.recon_loss(student, masked, noisy).item() == pytest.approx(ref.item(), abs=1e-6)
        moved = complete.replace(**{m: complete.features(m) + 7.0 * dropped_masks[m].unsqueeze(-1) for m in MODALITIES})
        assert model.recon_loss(student, masked, moved).item() > ref.item() + 1.0


def test_attention_kl_hand_values_and_same_layer():
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (B=1, h=1, N=2, N=2)
    student = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + 1.0 * math.log(1.0 / 0.5)
    assert C.attention_kl(teacher, student, torch.tensor([[True, True]])).item() == pytest.approx(expected, rel=1e-5)
    only_first = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert C.attention_kl(teacher, student, torch.tensor([[True, False]])).item() == pytest.approx(only_first, rel=1e-5)
    # the model distils the LAST layer's attention onto the last layer's (2 layers here)
    model = build(CLS, layers=2).eval()
    complete = fixture_split(CLS, [0, 1, 2, 1]).batch(slice(None))
    from affectune.missing import rmfm

    masked = rmfm(complete, torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher_out, student_out = model(complete, need_attn=True), model(masked, need_attn=True)
        parts = model.mssd_losses(teacher_out, masked, complete)
    assert len(teacher_out["attn"]) == 2
    last = C.attention_kl(teacher_out["attn"][-1], student_out["attn"][-1], teacher_out["valid"])
    first = C.attention_kl(teacher_out["attn"][0], student_out["attn"][0], teacher_out["valid"])
    crossed = C.attention_kl(teacher_out["attn"][0], student_out["attn"][-1], teacher_out["valid"])
    assert parts["attn"].item() == pytest.approx(last.item(), rel=1e-6)
    assert abs(first.item() - last.item()) > 1e-6 and abs(crossed.item() - last.item()) > 1e-6


def test_mssd_total_is_the_weighted_sum_and_two_step_splits_it():
    model = build(REG, joint_weight=0.3, attn_weight=0.2, recon_weight=0.7).eval()
    complete = fixture_split(REG, [1.0, -1.0, 0.5, 2.0]).batch(slice(None))
    views = model.train_policy(complete, torch.Generator().manual_seed(2))
    assert set(views.views) == {"masked"} and model.steps_per_batch == 1
    losses = model.training_losses(views)
    expected = (losses["task"] + losses["task_masked"] + 0.3 * losses["joint"] + 0.2 * losses["attn"]
                + 0.7 * losses["recon"])
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.no_grad():
        assert losses["task"].item() == pytest.approx(F.l1_loss(model(complete)["pred"], complete.label).item(), rel=1e-6)
    two = build(REG, two_step=True, joint_weight=0.3, attn_weight=0.2, recon_weight=0.7).eval()
    assert two.steps_per_batch == 2
    step0, step1 = two.training_losses(views, 0), two.training_losses(views, 1)
    assert set(step0) == {"loss", "task"} and step0["loss"].item() == pytest.approx(losses["task"].item(), rel=1e-6)
    assert "task" not in step1
    assert step1["loss"].item() == pytest.approx((expected - losses["task"]).item(), rel=1e-5)
    # step 1's teacher is detached: its gradient comes from the masked view only
    two.zero_grad()
    step1["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in two.parameters() if p.grad is not None)


def test_dropped_text_words_read_as_unk_whatever_the_fill():
    """Text frames whose id is [UNK] get the learned [UNK] vector: zero or gaussian fill, same output."""
    from affectune.missing import apply_dropped

    model = build(REG).eval()
    complete = fixture_split(REG, [1.0, -1.0, 0.5, 2.0]).batch(slice(None))
    drop = {"text": complete.valid["text"] & (torch.arange(4)[None, :] % 2 == 0)}
    zero = apply_dropped(complete, drop, fill="zero", record=False)
    noise = apply_dropped(complete, drop, fill="gaussian", seed=3, record=False)
    assert (zero.tokens[drop["text"]] == UNK_ID).all()
    with torch.no_grad():
        torch.testing.assert_close(model.predict(zero), model.predict(noise))
        assert (model.predict(zero) - model.predict(complete)).abs().max() > 1e-5


# ----------------------------------------------------------------------------- MACI


def test_confounders_are_train_class_means_and_survive_a_checkpoint(tmp_path):
    from affectune.train import TrainConfig, load_checkpoint, save_checkpoint

    split = fixture_split(CLS, [0, 2, 0, 1, 2, 0])
    model = fit(build(CLS), split)
    # hand computation: utterance vector = time mean over valid frames, concatenated t|a|v
    rows = []
    for i in range(6):
        n = i % 4 + 1
        rows.append(torch.cat([split.features[m][i, :n].mean(0) for m in MODALITIES]))
    rows = torch.stack(rows)
    expected = torch.stack([rows[[0, 2, 5]].mean(0), rows[[3]].mean(0), rows[[1, 4]].mean(0)])
    torch.testing.assert_close(model.confounders, expected)
    torch.testing.assert_close(model.prior, torch.tensor([3 / 6, 1 / 6, 2 / 6]))
    assert bool(model.fitted)
    # regression: sign bins (negative, non-negative)
    reg = fit(build(REG), fixture_split(REG, [-1.0, 0.0, 2.0, -0.5]))
    torch.testing.assert_close(reg.prior, torch.tensor([0.5, 0.5]))
    # checkpoint round trip: buffers and predictions identical
    model.tau.fill_(0.7)
    path = save_checkpoint(tmp_path / "best.pt", model, TrainConfig(model="cider", model_config=SMALL),
                           fingerprint="fixture", epoch=1, metrics={})
    loaded, _ = load_checkpoint(path)
    for name in ("confounders", "prior", "token_counts", "token_cv", "cf_keep", "tau", "fitted"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    batch = split.batch(slice(None))
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(batch), model.eval().predict(batch), atol=0, rtol=0)


def test_maci_output_is_the_prior_weighted_mixture():
    model = fit(build(CLS), fixture_split(CLS, [0, 2, 0, 1, 2, 0])).eval()
    batch = fixture_split(CLS, [0, 1, 2], seed=4).batch(slice(None))
    with torch.no_grad():
        out = model(batch)
        conf = torch.cat([model.confounder_enc[m](p) for m, p in
                          zip(MODALITIES, torch.split(model.confounders, [3, 2, 2], 1))], -1)
        mix = sum(model.prior[z] * model.classifiers[z](torch.cat([out["joint"], conf[z].expand(3, -1)], -1)).softmax(-1)
                  for z in range(3))
    torch.testing.assert_close(out["pred"], mix.log())
    torch.testing.assert_close(out["pred"].exp().sum(-1), torch.ones(3))  # normalised log-probabilities
    # regression: sum_z P(z) f_z over the two sign bins
    reg = fit(build(REG), fixture_split(REG, [-1.0, 0.0, 2.0, 1.0])).eval()
    batch = fixture_split(REG, [0.5, -2.0], seed=5).batch(slice(None))
    with torch.no_grad():
        out = reg(batch)
        conf = torch.cat([reg.confounder_enc[m](p) for m, p in
                          zip(MODALITIES, torch.split(reg.confounders, [3, 2, 2], 1))], -1)
        f = torch.stack([reg.classifiers[z](torch.cat([out["joint"], conf[z].expand(2, -1)], -1))[:, 0]
                         for z in range(2)], 1)
    torch.testing.assert_close(out["pred"], 0.25 * f[:, 0] + 0.75 * f[:, 1])
    # ablation: no MACI -> a linear head, no confounder parameters
    plain = build(REG, use_maci=False)
    assert not any(n.startswith(("confounder_enc", "classifiers")) for n, _ in plain.named_parameters())


# ----------------------------------------------------------------------------- counterfactual text


def test_counterfactual_keeps_exactly_the_selected_tokens():
    spec = DatasetSpec("classification", 2, DIMS, {m: 4 for m in MODALITIES}, vocab_size=10, aligned=True)
    # class 0: samples 0, 1; class 1: sample 2. Counts (class 0 | class 1):
    #   id 3: 4|4 (cv 0)  id 4: 3|1 (cv 0.5)  id 5: 1|1 (cv 0)  id 6: 2|0 (cv 1)  id 7: 0|1 (cv 1)  id 8: 1|0 (cv 1)
    tokens = torch.tensor([[3, 3, 4, 6], [3, 4, 4, 5], [3, 3, 4, 7], [3, 3, 8, 6]])
    labels = [0, 0, 1, 0]
    split = fixture_split(spec, labels)
    split = TensorSplit(split.features, {m: torch.ones_like(v) for m, v in split.valid.items()}, split.label,
                        split.ids, {m: np.full(4, 4) for m in MODALITIES}, tokens)
    # with sample 3 (class 0): id 3: 5|2, id 4: 3|1, id 5: 1|0, id 6: 2|0, id 7: 0|1, id 8: 1|0
    # totals: 3->7, 4->4, 6->2, 5->1, 7->1, 8->1; CV: 3 -> 3/7, 4 -> 0.5, others 1
    paper = fit(build(spec, top_k=3, cv_threshold=0.45), split)
    torch.testing.assert_close(paper.token_counts[:, 3:9], torch.tensor([[5.0, 3, 1, 2, 0, 1], [2, 1, 0, 0, 1, 0]]))
    torch.testing.assert_close(paper.token_cv[3], torch.tensor(1.5 / 3.5))
    # top-3 by frequency: ids 3, 4, 6; CV >= 0.45 among them: 4 and 6
    assert paper.cf_keep.nonzero().flatten().tolist() == [4, 6]
    code = fit(build(spec, top_k=3, cv_threshold=0.45, cf_order="cv_then_frequent"), split)
    # CV >= 0.45: ids 4, 5, 6, 7, 8; the 3 most frequent: 4 (4), 6 (2), then 5 (1, lowest id among ties)
    assert code.cf_keep.nonzero().flatten().tolist() == [4, 5, 6]
    query = torch.tensor([[PAD_ID, UNK_ID, MASK_ID, 3, 4, 5, 6, 9]])
    assert paper.counterfactual_tokens(query).tolist() == [[PAD_ID, UNK_ID, MASK_ID, MASK_ID, 4, MASK_ID, 6, MASK_ID]]
    assert code.counterfactual_tokens(query).tolist() == [[PAD_ID, UNK_ID, MASK_ID, MASK_ID, 4, 5, 6, MASK_ID]]


def test_counterfactual_without_token_ids_is_refused_naming_the_dataset():
    split = fixture_split(REG, [1.0, -1.0])
    split.tokens = None
    with pytest.raises(ValueError, match="merbench:/data/feats.*use_counterfactual"):
        fit(build(REG, use_counterfactual=True), split, name="merbench:/data/feats")
    off = fit(build(REG, use_counterfactual=False), split, name="merbench:/data/feats")
    assert bool(off.fitted) and not bool(off.cf_active)
    with pytest.warns(UserWarning, match="merbench:/data/feats.*counterfactual text is off"):
        auto = fit(build(REG), split, name="merbench:/data/feats")  # the default, "auto"
    assert bool(auto.fitted) and not bool(auto.cf_active)
    with_tokens = fit(build(REG), fixture_split(REG, [1.0, -1.0]), name="mmsa:/data/aligned_50.pkl")
    assert bool(with_tokens.cf_active)


def test_tau_is_chosen_on_validation_and_used_by_predict():
    """Factual y + 2 b and counterfactual b: tau = 2 removes the bias exactly."""
    model = build(REG, tau_max=3.0, tau_step=0.5)
    model.cf_active.fill_(True)  # as on_fit_start decides on a dataset with token ids
    g = torch.Generator().manual_seed(0)
    y, b = torch.randn(20, generator=g), torch.randn(20, generator=g)
    pair = torch.stack([y + 2 * b, b], 1)  # (N, 2): factual | counterfactual
    seen = []

    class Split:
        def __init__(self, name):
            self.name, self.label = name, y

    def predict(split, fn):
        seen.append(split.name)
        assert fn == model.factual_and_counterfactual
        return pair

    def score(split, pred):
        return {"mae": float((pred[:, 0] - split.label).abs().mean())}

    ctx = EvalContext(valid=Split("valid"), valid_masked=Split("valid_masked"), task="regression",
                      select_metric="valmask_mae", direction="min", predict=predict, score=score)
    model.calibrate(ctx)
    assert float(model.tau) == 2.0 and seen == ["valid_masked"]  # the split the selection metric reads
    assert model.on_epoch_end(1, None) == {"tau": 2.0}
    # predict applies y - tau y_cf with the calibrated tau
    model = fit(model, fixture_split(REG, [1.0, -1.0, 0.5, 2.0])).eval()
    batch = fixture_split(REG, [0.5, -2.0], seed=5).batch(slice(None))
    with torch.no_grad():
        both = model.factual_and_counterfactual(batch)
        torch.testing.assert_close(model.predict(batch), both[:, 0] - 2.0 * both[:, 1])
        model.tau.zero_()
        torch.testing.assert_close(model.predict(batch), model(batch)["pred"])


# ----------------------------------------------------------------------------- overfitting and tools


@pytest.mark.parametrize("source", ["synthetic:mosi?scale=0.05", "synthetic:iemocap?scale=0.02&aligned=0"])
def test_overfits_eight_synthetic_samples(source):
    from affectune.data import load
    from affectune.loader import preload

    ds = load(source)
    train = preload(ds, "train")
    batch = train.batch(slice(0, 8))
    model = fit(build_model("cider", {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0, "out_dropout": 0.0,
                                      "embed_dropout": 0.0}, ds.spec()), train, ds.source)
    # complete inputs only: the masked view falls back to the complete one
    first, last = fit_fixed_batch(model, TrainViews(batch), steps=30)
    last = last["loss"]
    assert last < 0.5 * first, f"{source}: loss {first:.3f} -> {last:.3f}"


def test_describe_command_prints_config_and_mmsa_parameter_count(capsys):
    from affectune.__main__ import main

    assert main(["models", "describe", "cider", "--mmsa-dims"]) == 0
    out = capsys.readouterr().out
    assert "use_counterfactual = 'auto'" in out and "frames text 50, audio 375, vision 500" in out
    count = int(out.split("parameters: ")[1].split(" ")[0].replace(",", ""))
    assert abs(count - 248_000) <= 0.15 * 248_000, count  # the paper's ~248K, within 15%
    assert main(["models", "describe", "cider", "--set", "layers=0"]) == 2


def test_spaces_draw_valid_configs():
    import optuna

    from affectune.models import make_config
    from affectune.search_spaces import apply_params, get_space

    for name in ("paper", "wide"):
        space = get_space("cider", name)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(10):
            trial = study.ask()
            cfg = apply_params("cider", {**trial.params, **(space.define(trial) or {})},
                               {"model_config": {"hidden": 32}}, space.helpers)
            model_cfg = make_config("cider", cfg["model_config"])
            assert model_cfg.layers in (1, 2, 3, 4) and 32 % model_cfg.heads == 0
            study.tell(trial, 0.0)
    assert {"cv_threshold", "top_k", "tau_max", "lr"} <= set(trial.params)
    # the paper preset and the study defaults are valid train configs
    from affectune.models import model_class
    from affectune.train import TrainConfig

    cls = model_class("cider")
    for partial in (cls.preset("paper"), cls.study_defaults):
        cfg = TrainConfig.from_dict({**partial, "model": "cider"})
        make_config("cider", cfg.model_config)
    assert cls.preset("paper")["model_config"]["two_step"] is True


def test_composite_attention_equals_seven_masked_softmaxes():
    """The block-wise assembly equals the seven attentions computed one masked softmax at a time."""
    torch.manual_seed(0)
    mca = C.MultimodalCompositeAttention(8, 2, 0.0)
    B, T, d, h = 3, 4, 8, 2
    x = torch.randn(B, 3 * T, d)
    valid = torch.rand(B, 3 * T) < 0.7
    valid[0, :T] = False  # no text frame
    valid[1, T:] = False  # text only
    y, attn = mca(x, valid)
    segment = torch.arange(3).repeat_interleave(T)
    q, k, v = mca.qkv(x).view(B, 3 * T, 3, h, d // h).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)  # (B, h, 3T, 3T)
    outs = {}
    for combo in C.COMBINATIONS:
        member = torch.tensor(["tav".index(c) for c in combo])
        in_s = torch.isin(segment, member)
        keys = valid & in_s
        p = scores.masked_fill(~keys[:, None, None, :], float("-inf")).softmax(-1).nan_to_num(0.0)
        p = p * in_s[None, None, :, None]  # queries outside the combination read nothing
        if combo == "tav":
            torch.testing.assert_close(attn, p)
        outs[combo] = mca.out[combo]((p @ v).transpose(1, 2).reshape(B, 3 * T, d))
    summary = {m: mca.summary[m](torch.cat([outs[c] for c in C.COMBINATIONS if m in c], -1)) for m in "tav"}
    expected = mca.final(torch.cat([summary[m][:, i * T:(i + 1) * T] for i, m in enumerate("tav")], 1))
    torch.testing.assert_close(y, expected)


def test_the_loop_fits_calibrates_on_validation_and_never_reads_test(tmp_path):
    """Through the one loop, two optimiser steps per batch: fit-start statistics, tau chosen on
    validation each epoch and logged, the test split untouched, and the checkpoint reproducing the
    selected epoch's validation numbers (tau included)."""
    import copy

    from test_train import _GuardedDataset, _NoTestSplits

    from affectune.data import load
    from affectune.loader import preload
    from affectune.metrics import compute_metrics
    from affectune.train import TrainConfig, load_checkpoint, masked_validation, predict_split, train_loop

    dataset = load("synthetic:mosi?scale=0.05")
    guarded = copy.copy(dataset)
    guarded.__class__ = _GuardedDataset
    guarded._fingerprint = dataset.fingerprint
    guarded.splits = _NoTestSplits(dataset.splits)
    cfg = {"model": "cider", "dataset": dataset.source, "epochs": 2, "batch_size": 16, "num_threads": 1,
           "patience": None, "checkpoint_dir": str(tmp_path),
           "model_config": {"hidden": 8, "layers": 1, "heads": 2, "two_step": True, "tau_step": 0.5}}
    out = train_loop(cfg, dataset=guarded)
    taus = [h["tau"] for h in out.history]
    assert all(t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0) for t in taus)
    model, config = load_checkpoint(out.checkpoint_path)
    assert bool(model.fitted) and float(model.tau) == taus[out.best_epoch - 1]
    valid = preload(dataset, "valid")
    masked = masked_validation(valid, TrainConfig.from_dict(config))
    pred = predict_split(model, masked, 64)[:, 0].numpy()
    mae = compute_metrics("regression", masked.label.numpy(), pred)["mae"]
    assert mae == pytest.approx(out.history[out.best_epoch - 1]["valmask_mae"], abs=1e-5)
