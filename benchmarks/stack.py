"""The end-to-end test harness (tests/dagster_stack.py) for benchmarks, with a choice of workspace file.

The harness starts ``dagster-webserver`` and ``dagster-daemon`` on the project's ``workspace.yaml``; a benchmark
that compares code locations (the same assets under another BackfillPolicy) needs another workspace, so
``WorkspaceStack`` only overrides the two commands. Everything else (the temporary DAGSTER_HOME with the project's
dagster.yaml, the data dir, process groups and their cleanup, ``run_backfill_cli``) is the harness's own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# tests/ is not a package: the harness is imported the way the tests import it.
sys.path.insert(0, str(PROJECT_ROOT / "tests"))

from dagster_stack import (  # noqa: E402
    TEST_PII_KEY,
    VENV_BIN,
    CliResult,
    DagsterStack,
    Service,
    run_backfill_cli,
)

__all__ = ["PROJECT_ROOT", "TEST_PII_KEY", "CliResult", "WorkspaceStack", "run_backfill_cli", "write_workspace"]

REAL_WORKSPACE = PROJECT_ROOT / "workspace.yaml"


def write_workspace(path: Path, module_name: str, attribute: str, location_name: str) -> Path:
    """A workspace file loading one Python module from the project root (so ``benchmarks.*`` imports)."""
    workspace = {
        "load_from": [
            {
                "python_module": {
                    "module_name": module_name,
                    "attribute": attribute,
                    "location_name": location_name,
                    "working_directory": str(PROJECT_ROOT),
                }
            }
        ]
    }
    path.write_text(yaml.safe_dump(workspace, sort_keys=False))
    return path


class WorkspaceStack(DagsterStack):
    """The harness's stack, with webserver and daemon loading ``workspace`` instead of the project's."""

    # Set by the harness's __init__; declared here because mypy does not read tests/ (the base class is Any to it).
    webserver: Any
    daemon: Any

    def __init__(self, root: Path, workspace: Path = REAL_WORKSPACE) -> None:
        super().__init__(root)
        self.workspace = workspace

    def start_webserver(self) -> None:
        argv = [str(VENV_BIN / "dagster-webserver"), "-w", str(self.workspace), "-h", "127.0.0.1", "-p", str(self.port)]
        self.webserver = Service("webserver", argv, self.env, self.logs_dir / "webserver.log")
        self._wait_until_serving()

    def start_daemon(self) -> None:
        if self.daemon is None:
            argv = [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(self.workspace)]
            self.daemon = Service("daemon", argv, self.env, self.logs_dir / "daemon.log")

    @classmethod
    @contextmanager
    def serving(cls, root: Path, workspace: Path = REAL_WORKSPACE) -> Iterator[WorkspaceStack]:
        """The webserver up (the daemon is started later, by ``run_backfill_cli``); everything stopped on exit."""
        stack = cls(root, workspace)
        try:
            stack.start_webserver()
            yield stack
        except BaseException:
            print(stack.log_tails(), file=sys.stderr)
            raise
        finally:
            stack.stop()
