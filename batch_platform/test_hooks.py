"""Test-only pause points: let an end-to-end test stop a run at a named moment of a lake write and kill it there.

Inert unless ``BATCH_PLATFORM_TEST_PAUSE_DIR`` is set, which only tests do (tests/test_run_recovery.py). A test arms
a point by creating ``<dir>/<point>@<target>.armed``; the first process to reach that point and target takes the
arming (an atomic rename, so exactly one run pauses), writes its pid to ``<dir>/<point>@<target>.pid`` and waits
until it is killed. Points: ``staged`` (Spark files staged, not committed), ``audit`` (staged files checked,
audits not run), ``commit`` (inside the Iceberg transaction, before the catalog commit; ``target`` names the
branch too).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_DIR_ENV = "BATCH_PLATFORM_TEST_PAUSE_DIR"


def pause_point(point: str, target: str) -> None:
    """Wait here for ever if a test armed ``point@target``; return at once otherwise."""
    folder = os.environ.get(PAUSE_DIR_ENV)
    if not folder:
        return
    armed = Path(folder) / f"{point}@{target}.armed"
    try:
        armed.rename(armed.with_suffix(".taken"))
    except FileNotFoundError:
        return  # not armed, or another run took it
    pid_file = armed.with_suffix(".pid")
    partial = pid_file.with_suffix(".partial")
    partial.write_text(str(os.getpid()))
    partial.rename(pid_file)  # the test never reads half a pid
    while True:
        time.sleep(1)
