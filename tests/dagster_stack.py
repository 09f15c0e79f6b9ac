"""A real Dagster stack for end-to-end tests: ``dagster-webserver`` and ``dagster-daemon`` over this code location.

``DagsterStack.running(tmp)`` writes a DAGSTER_HOME with the project's dagster.yaml (SQLite storage in the home,
pools limited to one writer per table, at most 4 concurrent runs), points BATCH_PLATFORM_DATA_DIR at <tmp>/data
and starts the webserver on a free port from the project root, as separate processes in their own process groups
(``dagster dev`` in the background ignores SIGTERM). The daemon starts only when asked: the real code location's
sensors default to running, so a test submits its backfill first and then starts the daemon, and the landing sensor
sees the drops as targeted by that backfill.

``lending_backfill`` is a module-scoped fixture that other test files import to get a stack on which the lending
pipeline has been backfilled through ``batch-platform backfill`` (10 business days, tiny scale):

    from dagster_stack import LendingBackfill, lending_backfill_fixture  # noqa: F401 - registers `lending_backfill`

    def test_something(lending_backfill: LendingBackfill) -> None: ...

Module scope: each importing test module gets its own stack and backfill (about 4-6 minutes on 2 cores); its tests
run on it, in file order, after the backfill has completed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, PartitionBackfill

from assets.lending.contract import business_days
from assets.lending.domain import lending
from assets.lending.landing import LandingZone, LandingZoneResource
from assets.lending.simulator import simulate
from assets.lending.world import SimulationConfig
from batch_platform.backfill_cli import BACKFILL_ID_PREFIX, WEBSERVER_URL_ENV, DagsterWebserverClient
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.settings import DATA_DIR_ENV
from batch_platform.spark import SparkResource

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TEST_PII_KEY = "test-only-hmac-key-0123456789abcdef0123"
PII_KEY_ENV = "BATCH_PLATFORM_PII_KEY"
# The webserver loads the code location (Spark, pyiceberg imports) before it answers: ~11 s idle, more under load.
STARTUP_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0
LOG_TAIL_LINES = 60

WORKSPACE_QUERY = """
query WorkspaceLoad {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } }
      }
    }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"--- {path.name}: not written ---"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


class Service:
    """A long-running command in its own process group (so its code servers, run workers and JVMs stop with it),
    stdout and stderr in one log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(argv),
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after a grace period (descendants that left the group
        included)."""
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        pgid = self.process.pid  # start_new_session makes the leader's pid the group id
        with suppress(ProcessLookupError, psutil.NoSuchProcess):
            os.killpg(pgid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_GRACE_S)
        _, alive = psutil.wait_procs(descendants, timeout=1.0)
        with suppress(ProcessLookupError, psutil.NoSuchProcess):
            os.killpg(pgid, signal.SIGKILL)
        for process in alive:
            with suppress(ProcessLookupError, psutil.NoSuchProcess):
                process.kill()
        self.process.wait(timeout=STOP_GRACE_S)
        self._log.close()


class DagsterStack:
    """A DAGSTER_HOME, a data dir and the processes serving them; see the module docstring."""

    def __init__(
        self,
        root: Path,
        pii_key: str = TEST_PII_KEY,
        *,
        extra_env: dict[str, str] | None = None,
        instance_overrides: dict[str, dict[str, object]] | None = None,
    ) -> None:
        self.root = root
        self.pii_key = pii_key
        self.home = root / "dagster_home"
        self.data_dir = root / "data"
        self.logs_dir = root / "logs"
        for folder in (self.home, self.data_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / "dagster.yaml", self.home / "dagster.yaml")
        if instance_overrides:
            # Section by section over the project's instance (e.g. one more run retry for a test that kills thrice).
            config = yaml.safe_load((self.home / "dagster.yaml").read_text())
            for section, values in instance_overrides.items():
                config[section] = {**config.get(section, {}), **values}
            (self.home / "dagster.yaml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            DATA_DIR_ENV: str(self.data_dir),
            PII_KEY_ENV: pii_key,
            WEBSERVER_URL_ENV: self.url,
            **(extra_env or {}),
        }
        self.webserver: Service | None = None
        self.daemon: Service | None = None
        self._instance: dg.DagsterInstance | None = None

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"  # where LandingZoneResource() looks by default

    @classmethod
    @contextmanager
    def running(
        cls,
        root: Path,
        *,
        daemon: bool = False,
        extra_env: dict[str, str] | None = None,
        instance_overrides: dict[str, dict[str, object]] | None = None,
    ) -> Iterator[DagsterStack]:
        stack = cls(root, extra_env=extra_env, instance_overrides=instance_overrides)
        try:
            stack.start_webserver()
            if daemon:
                stack.start_daemon()
            yield stack
        except BaseException:
            print(stack.log_tails())
            raise
        finally:
            stack.stop()

    def start_webserver(self) -> None:
        self.webserver = Service(
            "webserver",
            [str(VENV_BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            self.env,
            self.logs_dir / "webserver.log",
        )
        self._wait_until_serving()

    def start_daemon(self) -> None:
        if self.daemon is None:
            self.daemon = Service(
                "daemon",
                [str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                self.env,
                self.logs_dir / "daemon.log",
            )

    def _wait_until_serving(self) -> None:
        """Until /server_info answers and the code location is loaded (a launch needs its asset graph)."""
        assert self.webserver is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.webserver.running:
                raise RuntimeError(f"dagster-webserver exited with {self.webserver.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(f"dagster-webserver did not answer {self.url}/server_info in {STARTUP_TIMEOUT_S} s")
        client = DagsterWebserverClient(self.url)
        while time.monotonic() < deadline:
            workspace = client.execute(WORKSPACE_QUERY, {})["workspaceOrError"]
            entries = workspace.get("locationEntries") or []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                if errors:
                    raise RuntimeError(f"the code location failed to load: {json.dumps(errors, indent=1)}")
                return
            time.sleep(0.5)
        raise TimeoutError(f"the code location did not load in {STARTUP_TIMEOUT_S} s")

    def instance(self) -> dg.DagsterInstance:
        """The DagsterInstance of this stack's home (SQLite storage shared with the webserver and daemon)."""
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home))
        return self._instance

    def wait_backfill(self, backfill_id: str, timeout: float) -> PartitionBackfill:
        """The backfill once its status is terminal; TimeoutError (with the services' logs) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            backfill = self.instance().get_backfill(backfill_id)
            if backfill is not None and backfill.status in BULK_ACTION_TERMINAL_STATUSES:
                return backfill
            if time.monotonic() > deadline:
                status = backfill.status if backfill else "not found"
                raise TimeoutError(f"backfill {backfill_id} still {status} after {timeout} s\n{self.log_tails()}")
            time.sleep(1.0)

    def log_tails(self) -> str:
        return "\n".join(_tail(self.logs_dir / f"{name}.log") for name in ("webserver", "daemon"))

    def stop(self) -> None:
        for service in (self.daemon, self.webserver):
            if service is not None:
                service.stop()
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    output: str
    backfill_id: str | None
    seconds: float


def run_backfill_cli(
    stack: DagsterStack, args: Sequence[str], *, start_daemon_after_submit: bool = True, timeout: float = 1200.0
) -> CliResult:
    """``batch-platform backfill ARGS`` as a subprocess in the stack's environment; once it prints the backfill id,
    the daemon is started (if asked), so the backfill targets the drops before any sensor looks at them."""
    started = time.monotonic()
    process = subprocess.Popen(
        [str(VENV_BIN / "batch-platform"), "backfill", *args],
        cwd=PROJECT_ROOT,
        env=stack.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    backfill_id = None
    deadline = started + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"batch-platform backfill still running after {timeout} s:\n{''.join(output)}\n{stack.log_tails()}"
                ) from None
            if line is None:
                break
            output.append(line)
            if line.startswith(BACKFILL_ID_PREFIX) and backfill_id is None:
                backfill_id = line[len(BACKFILL_ID_PREFIX) :].strip()
                if start_daemon_after_submit:
                    stack.start_daemon()
        exit_code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return CliResult(exit_code, "".join(output), backfill_id, time.monotonic() - started)


# -- the lending pipeline backfilled end to end ---------------------------------------------------------------------

# The lender's first 21 business days are history, loaded in process before the stack's backfill; the backfill is
# the next 10 days, when the first repayments fall due (none are due earlier), so a restated day changes money.
HISTORY_FIRST_DAY = date(2023, 1, 3)  # 2023-01-02 and 2023-01-16 are bank holidays
HISTORY_LAST_DAY = date(2023, 2, 1)
BACKFILL_FIRST_DAY = date(2023, 2, 2)
BACKFILL_LAST_DAY = date(2023, 2, 15)
BACKFILL_DAYS = list(business_days(BACKFILL_FIRST_DAY, BACKFILL_LAST_DAY))
BACKFILL_SELECTION = "group:lending_raw"
SIMULATION = SimulationConfig(seed=7, start=HISTORY_FIRST_DAY, scale=0.02)


def lending_resources(stack: DagsterStack, spark: SparkResource) -> dict[str, object]:
    """What the stack's code location binds, built in this process (same data dir, same PII key)."""
    return {
        "lake": IcebergLakeResource(data_dir=str(stack.data_dir)),
        "spark": spark,
        "landing": LandingZoneResource(uri=str(stack.landing_dir)),
        "pii": PiiTokenizer(key=stack.pii_key),
    }


def load_history(stack: DagsterStack, spark: SparkResource) -> None:
    """The days before the backfill, as one range run recorded in the stack's instance (the sensors see them)."""
    result = dg.materialize(
        lending.registered_assets(),
        resources=lending_resources(stack, spark),
        instance=stack.instance(),
        tags={
            "dagster/asset_partition_range_start": HISTORY_FIRST_DAY.isoformat(),
            "dagster/asset_partition_range_end": HISTORY_LAST_DAY.isoformat(),
        },
    )
    assert result.success, "loading the history failed"


@dataclass(frozen=True)
class LendingBackfill:
    """A stack whose lending pipeline was backfilled by ``batch-platform backfill group:lending_raw --downstream``."""

    stack: DagsterStack
    landing: LandingZone
    days: list[date]  # the backfilled days; the lender's history before them was loaded in process
    cli: CliResult

    @property
    def backfill_id(self) -> str:
        assert self.cli.backfill_id, f"no backfill id printed:\n{self.cli.output}"
        return self.cli.backfill_id


@pytest.fixture(scope="module", name="lending_backfill")
def lending_backfill_fixture(
    tmp_path_factory: pytest.TempPathFactory, spark_resource: SparkResource
) -> Iterator[LendingBackfill]:
    with DagsterStack.running(tmp_path_factory.mktemp("dagster_stack")) as stack:
        landing = LandingZone.local(stack.landing_dir)
        simulate(SIMULATION, HISTORY_FIRST_DAY, BACKFILL_LAST_DAY, landing)
        load_history(stack, spark_resource)
        cli = run_backfill_cli(
            stack,
            [
                BACKFILL_SELECTION,
                "--from",
                BACKFILL_FIRST_DAY.isoformat(),
                "--to",
                BACKFILL_LAST_DAY.isoformat(),
                "--downstream",
                "--title",
                "lending e2e",
                "--tag",
                "batch-platform/test=backfill-e2e",
                "--poll-seconds",
                "2",
            ],
        )
        print(f"batch-platform backfill took {cli.seconds:.0f} s (exit {cli.exit_code}):\n{cli.output}")
        yield LendingBackfill(stack, landing, BACKFILL_DAYS, cli)
