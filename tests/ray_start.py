"""Start a local Ray for a test, retrying the node start-up a loaded machine can time out.

Ray waits a fixed 30 s for its raylet to register (ray/_private/node.py); on the 2-core CI host,
while the suite's background jobs start their own processes, that wait can run out once. The
retry changes nothing a test checks: the test still gets a fresh Ray with the resources it asks.
"""

from __future__ import annotations

import time

ATTEMPTS = 3


def start_ray(**init_kwargs) -> None:
    """`ray.init(**init_kwargs)`, tried up to ATTEMPTS times when the node start-up times out."""
    import ray  # here, not at import: test modules set Ray's environment before Ray reads it

    for attempt in range(1, ATTEMPTS + 1):
        try:
            ray.init(**init_kwargs)
            return
        except Exception as error:  # Ray raises a bare Exception for the start-up timeout
            if "timed out during startup" not in str(error) or attempt == ATTEMPTS:
                raise
            ray.shutdown()
            time.sleep(5)
