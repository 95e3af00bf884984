"""What several worker processes share: set up by `python -m gateway` before uvicorn starts them."""

from __future__ import annotations

import os
import tempfile

from gateway.ops.metrics import MULTIPROCESS_VARIABLE

# The supervising process, which replaces its workers one by one on SIGHUP (uvicorn's Multiprocess). Not
# GATEWAY_*: every variable with that prefix is a setting, and an unknown one is refused.
SUPERVISOR_VARIABLE = "_GATEWAY_SUPERVISOR_PID"


def prepare_workers() -> None:
    """Metrics files in a fresh folder (summed at scrape), and the supervisor's pid for reloads."""
    os.environ.setdefault(MULTIPROCESS_VARIABLE, tempfile.mkdtemp(prefix="gateway-metrics-"))
    os.environ[SUPERVISOR_VARIABLE] = str(os.getpid())


def supervisor_pid() -> int | None:
    """The supervisor's pid when this process is one of several workers."""
    value = os.environ.get(SUPERVISOR_VARIABLE)
    return int(value) if value else None
