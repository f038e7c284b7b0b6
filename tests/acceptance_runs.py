"""The two trainings of test_cli_train's DQF-vs-late-fusion acceptance check, run in the background
(tests/background.py: conftest.py starts them when the session collects that test) so that they
train while the rest of the suite runs; the test waits for them and checks the numbers.

    python tests/acceptance_runs.py WORK

Each model trains as a user types it (`python -m affectune train ...`, one torch thread), both at
once; WORK/<model>/ gets the run's files, WORK/<model>.log its output, WORK/codes.json the exit codes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEED = 0
COMMON = ["--dataset", "synthetic:mosi?scale=0.25", "--epochs", "8", "--batch-size", "32", "--lr", "0.002",
          "--seed", str(SEED), "--set", "hidden=32", "--set", "num_threads=1", "--mask-seeds", "0,1",
          "--subsets", "tav", "--no-inter"]
MODELS = {"dqf": ["--set", "layers=1"], "late_fusion": []}
"""model -> its own flags (a one-layer DQF at this budget)."""
TIME_LIMIT_S = 600


def main(work: Path) -> int:
    procs = {}
    for model, extra in MODELS.items():
        with open(work / f"{model}.log", "w") as log:  # a file: a pipe could fill up
            procs[model] = subprocess.Popen([sys.executable, "-m", "affectune", "train", "--model", model, *COMMON,
                                             *extra, "--out", str(work / model)], stdout=log, stderr=subprocess.STDOUT)
    codes = {model: proc.wait(timeout=TIME_LIMIT_S) for model, proc in procs.items()}
    (work / "codes.json").write_text(json.dumps(codes))
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
