"""Registry-wide contracts, parametrised over what is registered so new methods are covered:

* every model trains a few steps with `train_loop` on a regression/aligned and a
  classification/unaligned dataset, and `save_checkpoint` -> `load_checkpoint` reproduces its
  validation predictions exactly (torch.equal), including state its hooks computed; the loop's own
  checkpoint reproduces the metrics the loop reported for the selected epoch;
* every registered search space's draws (every point of a grid, seeded Optuna draws otherwise)
  route to a valid train config whose model builds and runs.
"""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch
from torch import nn

import affectune.models as models_pkg
from affectune import MODALITIES
from affectune import train as train_mod
from affectune.batch import Batch
from affectune.data import Dataset, load
from affectune.data.schema import DatasetSpec
from affectune.loader import preload
from affectune.models import _registry, build_model, list_models, model_class
from affectune.models.base import MERModel, ModelConfig
from affectune.models.layers import masked_mean
from affectune.search_spaces import apply_params, draw, get_space, list_spaces
from affectune.train import (
    CHECKPOINT_FILE, TrainConfig, load_checkpoint, masked_validation, predict_split, save_checkpoint, score,
    train_loop,
)

# Short sequences keep every model fast; 16 samples per split (the generator's minimum).
SOURCES = {
    "regression_aligned": "synthetic:mosi?scale=0.01&text_len=8",
    "classification_unaligned": "synthetic:iemocap?scale=0.01&text_len=8&aligned=0",
}
SMALL = {"hidden": 8, "layers": 1, "heads": 2, "self_layers": 1}
"""Small overrides, applied to the fields a model's config has."""
RANDOM_DRAWS = 4
"""Optuna draws per non-grid search space."""


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    return {name: load(source) for name, source in SOURCES.items()}


def small_config(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(model_class(name).config_class)}
    return {k: v for k, v in SMALL.items() if k in fields}


def train_and_capture(monkeypatch, data_name: str, dataset: Dataset, tmp_path, model: str, **changes):
    """Run `train_loop` and return (outcome, the trained in-memory model, the config used)."""
    built: list[MERModel] = []

    def recording_build(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(models_pkg, "build_model", recording_build)  # where the loop looks it up
    monkeypatch.setattr(train_mod, "build_model", recording_build, raising=False)
    config = {"model": model, "model_config": small_config(model), "dataset": SOURCES[data_name],
              "epochs": 2, "batch_size": 16,
              "lr": 3e-3, "num_threads": 1, "patience": None, "device": "cpu",
              "checkpoint_dir": str(tmp_path / "loop"), **changes}
    outcome = train_loop(config, dataset=dataset)
    assert len(built) == 1, f"train_loop built {len(built)} models"
    return outcome, built[0].eval(), config


def validation_predictions(model: MERModel, dataset: Dataset, config: dict) -> dict[str, torch.Tensor]:
    """(N, out_dim) predictions on the validation split, complete and with the loop's fixed masks."""
    valid = preload(dataset, "valid")
    masked = masked_validation(valid, TrainConfig.from_dict(config))
    return {"val": predict_split(model, valid, 7), "valmask": predict_split(model, masked, 7)}


def assert_roundtrip_exact(model: MERModel, dataset: Dataset, config: dict, tmp_path) -> None:
    before = validation_predictions(model, dataset, config)
    path = save_checkpoint(tmp_path / "roundtrip" / CHECKPOINT_FILE, model, TrainConfig.from_dict(config),
                           fingerprint=dataset.fingerprint, epoch=1, metrics={})
    reloaded, _ = load_checkpoint(path)
    after = validation_predictions(reloaded, dataset, config)
    for key in before:
        assert torch.equal(before[key], after[key]), (
            f"{model.name}: {key} predictions differ after save -> load by up to "
            f"{(before[key] - after[key]).abs().max().item():.3g}; is hook state kept outside registered buffers?")


# ----------------------------------------------------------------------------- every model


@pytest.mark.parametrize("data_name", list(SOURCES))
@pytest.mark.parametrize("name", list_models())
def test_save_load_reproduces_validation_predictions(name, data_name, datasets, tmp_path, monkeypatch):
    dataset = datasets[data_name]
    outcome, model, config = train_and_capture(monkeypatch, data_name, dataset, tmp_path, name)
    assert outcome.epochs_run == 2 and all(torch.isfinite(p).all() for p in model.state_dict().values())
    assert_roundtrip_exact(model, dataset, config, tmp_path)
    # the loop's checkpoint is the selected epoch, in the state its metrics were computed with
    loop_model, loop_config = load_checkpoint(tmp_path / "loop")
    preds = validation_predictions(loop_model, dataset, loop_config)
    reported = outcome.history[outcome.best_epoch - 1]
    spec = dataset.spec()
    valid = preload(dataset, "valid")
    data = {"val": valid, "valmask": masked_validation(valid, TrainConfig.from_dict(loop_config))}
    compared = 0
    for prefix, pred in preds.items():
        metrics = score(spec.task, data[prefix], pred, spec.num_classes)
        for metric, value in metrics.items():
            if f"{prefix}_{metric}" in reported:
                assert value == pytest.approx(reported[f"{prefix}_{metric}"], abs=1e-6), f"{prefix}_{metric}"
                compared += 1
    assert compared >= 4  # at least two metrics per validation set were checked


# ----------------------------------------------------------------------------- the check can fail


class TrainMeanModel(MERModel):
    """Test-only: a linear head on pooled features plus the train-label mean, computed by `on_fit_start`.

    `persistent_stat = False` keeps the statistic in a non-persistent buffer, which a checkpoint
    does not hold: the round-trip check must catch that."""

    config_class = ModelConfig
    persistent_stat = True

    def __init__(self, config: ModelConfig, spec: DatasetSpec):
        super().__init__(config, spec)
        self.head = nn.Linear(sum(spec.dims.values()), spec.out_dim)
        self.register_buffer("train_label_mean", torch.zeros(()), persistent=self.persistent_stat)

    def on_fit_start(self, ctx) -> None:
        self.train_label_mean.fill_(float(ctx.train.label.float().mean()))

    def forward(self, batch: Batch) -> dict:
        pooled = torch.cat([masked_mean(batch.features(m), batch.valid[m]) for m in MODALITIES], -1)  # (B, sum D)
        out = self.head(pooled) + self.train_label_mean  # (B, out_dim)
        return {"pred": out.squeeze(-1) if self.is_regression else out}


class LeakyTrainMeanModel(TrainMeanModel):
    persistent_stat = False


@pytest.mark.parametrize("cls, kept", [(TrainMeanModel, True), (LeakyTrainMeanModel, False)])
def test_roundtrip_check_catches_hook_state_outside_the_checkpoint(cls, kept, datasets, tmp_path, monkeypatch):
    name = f"test_{cls.__name__.lower()}"
    monkeypatch.setattr(cls, "name", name)
    monkeypatch.setitem(_registry._MODELS, name, cls)  # registered for this test only
    dataset = datasets["regression_aligned"]
    _, model, config = train_and_capture(monkeypatch, "regression_aligned", dataset, tmp_path, name, epochs=1)
    train_labels = preload(dataset, "train").label.float()
    assert model.train_label_mean.item() == pytest.approx(train_labels.mean().item())  # the hook ran
    if kept:
        assert_roundtrip_exact(model, dataset, config, tmp_path)
    else:
        with pytest.raises(AssertionError, match="differ after save -> load"):
            assert_roundtrip_exact(model, dataset, config, tmp_path)


# ----------------------------------------------------------------------------- every search space

TINY_SPEC = DatasetSpec("classification", 3, {"text": 6, "audio": 3, "vision": 4},
                        {"text": 4, "audio": 6, "vision": 5}, vocab_size=12)


def space_draws(method: str, name: str) -> list[dict]:
    """Every point of a grid space; seeded Optuna draws (drawn + derived params) otherwise."""
    space = get_space(method, name)
    if space.grid:
        return [draw(space, point) for point in space.grid]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = []
    for _ in range(RANDOM_DRAWS):
        trial = study.ask()
        derived = space.define(trial) or {}
        draws.append({**trial.params, **derived})
    return draws


def tiny_batch(spec: DatasetSpec, B: int = 3) -> Batch:
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(B, spec.seq_lens[m], spec.dims[m], generator=g) for m in MODALITIES}
    valid = {m: torch.ones(B, spec.seq_lens[m], dtype=torch.bool) for m in MODALITIES}
    return Batch(**feats, valid=valid, dropped={m: torch.zeros_like(v) for m, v in valid.items()},
                 label=torch.arange(B) % spec.num_classes, index=torch.arange(B),
                 tokens=torch.randint(2, spec.vocab_size, (B, spec.seq_lens["text"]), generator=g))


@pytest.mark.parametrize("method, name", list_spaces())
def test_search_space_draws_build_valid_configs(method, name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(method, name)
    base = {"model": method, "dataset": "synthetic:mosi", **model_class(method).study_defaults}
    draws = space_draws(method, name)
    assert len({tuple(sorted(d.items())) for d in draws}) == (len(space.grid) or len(draws)) > 1  # distinct
    fields = {f.name for f in dataclasses.fields(model_class(method).config_class)}
    for params in draws:
        config = apply_params(method, params, base, space.helpers)
        TrainConfig.from_dict(config)  # every top-level key is a train config field, values checked
        model = build_model(method, dict(config["model_config"]), TINY_SPEC).eval()
        for key, value in params.items():  # every drawn or derived value reached the config
            if key in space.helpers:
                assert key not in config and key not in config["model_config"]
            elif key in fields:
                assert getattr(model.config, key) == value, (name, key)
            else:
                assert config[key] == value, (name, key)
        with torch.no_grad():
            pred = model.predict(tiny_batch(TINY_SPEC))
        assert pred.shape == (3, TINY_SPEC.num_classes) and torch.isfinite(pred).all()
