"""Mixed precision and torch.compile through the one loop, on CPU (autocast works there).

Every registered model trains under bf16 with finite losses, and what leaves the loop (weights,
checkpoint, metrics) is fp32. fp16 goes through the gradient scaler. One model is compiled.
"""

from __future__ import annotations

import math

import pytest
import torch

from affectune.data import load
from affectune.models import list_models
from affectune.train import TrainConfig, load_checkpoint, read_checkpoint, train_loop

SOURCE = "synthetic:iemocap?scale=0.03"
BASE = {"dataset": SOURCE, "epochs": 1, "batch_size": 16, "num_threads": 1, "patience": None,
        "model_config": {"hidden": 16}}


@pytest.fixture(scope="module")
def dataset():
    return load(SOURCE)


def _small(name: str) -> dict:
    """A small config of `name`: width 16 and one layer where the model has layers."""
    import dataclasses

    from affectune.models import model_class

    fields = {f.name for f in dataclasses.fields(model_class(name).config_class)}
    small = {"hidden": 16}
    for key, value in (("layers", 1), ("heads", 2), ("self_layers", 1)):
        if key in fields:
            small[key] = value
    return small


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_under_bf16_autocast(name, dataset, tmp_path):
    out = train_loop({**BASE, "model": name, "model_config": _small(name), "precision": "bf16",
                      "checkpoint_dir": str(tmp_path)}, dataset=dataset)
    assert math.isfinite(out.history[0]["train_loss"])
    assert all(math.isfinite(v) for k, v in out.best_metrics.items() if k.startswith("val"))
    payload = read_checkpoint(out.checkpoint_path)
    floats = [t for t in payload["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)  # checkpoints stay fp32


def test_bf16_autocast_really_computes_in_bf16(dataset, tmp_path):
    seen = []
    import affectune.models as models

    original = models.build_model

    def spy(*a, **k):
        model = original(*a, **k)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)
        return model

    models.build_model = spy
    try:
        train_loop({**BASE, "model": "late_fusion", "precision": "bf16", "checkpoint_dir": str(tmp_path)},
                   dataset=dataset)
    finally:
        models.build_model = original
    assert seen and set(seen) == {torch.bfloat16}


def test_fp16_uses_a_gradient_scaler_and_stays_finite(dataset, tmp_path):
    out = train_loop({**BASE, "model": "late_fusion", "precision": "fp16", "checkpoint_dir": str(tmp_path)},
                     dataset=dataset)
    assert math.isfinite(out.history[0]["train_loss"])


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig("late_fusion", precision="fp8")


def test_compiled_model_trains_and_its_checkpoint_loads_uncompiled(dataset, tmp_path):
    out = train_loop({**BASE, "model": "late_fusion", "compile": True, "checkpoint_dir": str(tmp_path)},
                     dataset=dataset)
    assert math.isfinite(out.history[0]["train_loss"])
    model, _ = load_checkpoint(out.checkpoint_path)  # same state-dict keys: no "_orig_mod." prefix
    assert model.num_parameters() == out.num_parameters
