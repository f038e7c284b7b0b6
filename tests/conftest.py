"""Shared fixtures of the suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: intra-op threads only add contention on a shared CPU (about 10x slower here).
    train_loop's num_threads sets the same for the rest of the process; this restores the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
