"""Run several Python scripts one after another in this one interpreter, each exactly as
`python SCRIPT ARG...` would (runpy with `__name__ == "__main__"` and `sys.argv`), each with its
stdout and stderr (file descriptors 1 and 2, so Ray's and C-level output too) in its own log file.

    python tests/run_scripts.py CASES.json RESULTS.json

CASES.json is a list of {"argv": [script, arg, ...], "log": path}; RESULTS.json receives the exit
code of each case, in order, as soon as it ends. A test that runs many short study scripts pays
the interpreter, torch and Ray start-up (and a Ray job with its worker pool) once per runner
instead of once per script.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback


def exit_code(exc: SystemExit) -> int:
    """The status `python SCRIPT` exits with after `raise SystemExit(code)` (a message is printed)."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def run_case(argv: list[str], log_path: str) -> int:
    """Run one script as `__main__` with `argv`, its output (fds 1 and 2) to `log_path`; its exit code."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.argv = list(argv)
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exit_code(exc)
        except BaseException:  # noqa: BLE001 - an uncaught exception exits python with 1 and a traceback
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
    return code


def main(cases_file: str, results_file: str) -> None:
    with open(cases_file) as f:
        cases = json.load(f)
    codes = []
    for case in cases:
        codes.append(run_case(case["argv"], case["log"]))
        with open(results_file, "w") as f:
            json.dump(codes, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
