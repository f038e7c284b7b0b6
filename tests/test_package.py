"""The package layout: `platform/` must never shadow the stdlib module, from the repo root."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_platform_and_torch_import_from_repo_root():
    code = "import platform, torch, affectune, affectune.models; print(platform.system(), torch.__version__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] in {"Linux", "Darwin", "Windows"}


def test_platform_dir_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_code_version_names_the_commit():
    import affectune

    version = affectune.code_version()
    assert version.startswith(affectune.__version__)
    assert "+g" in version  # the repo is a git checkout in development and CI
