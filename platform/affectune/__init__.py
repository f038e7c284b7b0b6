"""affectune: hyper-parameter studies of multimodal emotion recognition under missing modalities."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
"""Canonical modality order. Short letters: t, a, v."""

SHORT = {"text": "t", "audio": "a", "vision": "v"}


@functools.cache
def code_version() -> str:
    """Package version plus the git commit (with `+dirty` if the tree has changes), for lineage."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__
