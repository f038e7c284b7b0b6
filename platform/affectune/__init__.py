"""affectune: hyper-parameter studies of multimodal emotion recognition under missing modalities."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
"""Canonical modality order. Short letters: t, a, v."""

SHORT = {"text": "t", "audio": "a", "vision": "v"}


VERSION_FILE = Path(__file__).with_name("CODE_VERSION")
"""The code version shipped with the code where it runs without a usable git checkout (cluster
nodes): written from git by `write_code_version`, which cluster.yaml's setup_commands run."""


@functools.cache
def code_version() -> str:
    """Package version plus the git commit (with `.dirty` if the tree has changes), for lineage.

    From VERSION_FILE when present (a cluster node: its tree is a partial copy, so git there
    would call every unshipped file deleted), else from git, else the package version alone."""
    if VERSION_FILE.is_file():
        shipped = VERSION_FILE.read_text().strip()
        if shipped:
            return shipped
    return _git_version() or __version__


def _git_version(paths: tuple[str, ...] = ()) -> str | None:
    """`<version>+g<sha>[.dirty]` from git (dirtiness restricted to `paths` if given); None without git."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", *paths],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return None


def write_code_version() -> str:
    """Write VERSION_FILE from git, judging dirtiness on the top-level entries present in this tree
    only (a node holds the shipped directories and .git, not the whole checkout); returns the text.
    Raises RuntimeError where git cannot read the checkout (e.g. .git of a worktree is a pointer)."""
    root = Path(__file__).resolve().parents[2]
    present = tuple(sorted(entry.name for entry in root.iterdir() if entry.name != ".git"))
    version = _git_version(present)
    if version is None:
        raise RuntimeError(f"no git checkout at {root}: cannot record the code version")
    VERSION_FILE.write_text(version + "\n")
    code_version.cache_clear()
    return version
