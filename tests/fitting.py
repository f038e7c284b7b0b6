"""Overfit one fixed batch: the shared check that a model's losses can be driven down."""

from __future__ import annotations

import torch


def fit_fixed_batch(model, views, steps: int, params=None, lr: float = 3e-3) -> tuple[float, dict[str, float]]:
    """Adam on `views` for `steps` steps; (the first step's total loss, every loss afterwards in eval mode)."""
    opt = torch.optim.Adam(model.parameters() if params is None else params, lr=lr)
    first = None
    for _ in range(steps):
        loss = model.training_losses(views)["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return first, {key: float(value) for key, value in model.training_losses(views).items()}
