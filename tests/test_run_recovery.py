"""Runs that die: a backfill whose run worker is killed with SIGKILL three times (while Spark files are staged,
while an audit branch is audited, inside the publish commit) recovers alone under a real webserver and daemon
(tests/dagster_stack.py), and the lake ends equal to a clean rebuild.

One stack and one backfill serve all three kills. Test-only pause points (batch_platform/test_hooks.py) make the
run worker wait at a named point of a named table's write; the test SIGKILLs it there. The three tables form a
dependency chain (loans -> loan_daily_status -> ledger_entries), so the points are reached in this order, each by
the run then executing that table's step: the first, or an automatic retry (from failure) of a run killed before.
How the backfill daemon groups assets into runs varies, so one run and its retries may meet all three points: that
needs three retries, one more than the instance's two, the only override of the project's dagster.yaml here.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
    PARENT_RUN_ID_TAG,
)
from dagster_stack import DagsterStack, lending_resources, run_backfill_cli
from lake_rows import table_rows
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import ancestors_of
from test_lake_crash_safety import local_path

from assets.lending.core import core_assets
from assets.lending.landing import LandingZone
from assets.lending.raw import raw_assets
from assets.lending.simulator import simulate
from assets.lending.tables import (
    CORE_LEDGER_ENTRIES,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_TABLES,
    RAW_QUARANTINE,
    RAW_TABLES,
)
from assets.lending.world import SimulationConfig
from batch_platform.lake import IcebergLakeResource, LakeTable
from batch_platform.lake.audit_branches import audit_branch_run_id
from batch_platform.lake.commit import SUMMARY_RUN_ID
from batch_platform.lake.maintenance import build_maintenance_job, maintenance_run_config
from batch_platform.spark import SparkResource
from batch_platform.test_hooks import PAUSE_DIR_ENV

pytestmark = pytest.mark.timeout(1800)

FIRST_DAY = date(2023, 1, 3)  # the lender's first business day
LAST_DAY = date(2023, 1, 5)
SIMULATION = SimulationConfig(seed=11, start=FIRST_DAY, scale=0.02)
PAUSE_TIMEOUT_S = 900.0
FAILED_TIMEOUT_S = 120.0
BACKFILL_TIMEOUT_S = 1200.0
ALERT_TIMEOUT_S = 180.0
# The operator's backfill of the issue: raw and core (reporting would add a run and minutes, and no new case).
SELECTION = "group:lending_raw or group:lending_core"
LAKE_TABLES = [*RAW_TABLES.values(), RAW_QUARANTINE, *CORE_TABLES]


@dataclass(frozen=True)
class KillPoint:
    point: str  # a pause point of batch_platform.test_hooks
    table: LakeTable

    @property
    def target(self) -> str:
        return f"{self.table.identifier}@{MAIN_BRANCH}" if self.point == "commit" else self.table.identifier


# The loan book rather than core/payments for the audit: the lender's first days have no payment due yet, and an
# empty table would prove little about partial partitions.
KILL_POINTS = [
    KillPoint("staged", CORE_LOANS),
    KillPoint("audit", CORE_LOAN_DAILY_STATUS),
    KillPoint("commit", CORE_LEDGER_ENTRIES),
]


@dataclass(frozen=True)
class Kill:
    where: KillPoint
    run_id: str
    step_key: str
    slot_holders_before: list[str]  # runs holding the table's pool slot while the run was paused


@dataclass(frozen=True)
class Recovery:
    stack: DagsterStack
    landing: LandingZone
    backfill_id: str
    kills: list[Kill]


def step_key_of(instance: dg.DagsterInstance, run: dg.DagsterRun, asset_key: dg.AssetKey) -> str | None:
    if run.execution_plan_snapshot_id is None:
        return None
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    for step in plan.steps:
        if any(o.properties is not None and o.properties.asset_key == asset_key for o in step.outputs):
            return step.key
    return None


def running_step(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> tuple[dg.DagsterRun, str]:
    """The started run executing the asset's step now (started, not finished)."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        step_key = step_key_of(instance, run, asset_key)
        if step_key is None:
            continue
        started = {e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)}
        ended = {
            e.step_key
            for e in instance.all_logs(
                run.run_id, of_type={dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
            )
        }
        if step_key in started - ended:
            return run, step_key
    raise AssertionError(f"no started run is executing {asset_key.to_user_string()}")


def wait_for(predicate_description: str, timeout: float, check: object) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{predicate_description} after {timeout} s")
        time.sleep(0.5)


def backfill_state(stack: DagsterStack, backfill_id: str) -> str:
    """What the daemon made of the backfill, for a timeout's message: its status, its runs, the daemon's warnings."""
    instance = stack.instance()
    backfill = instance.get_backfill(backfill_id)
    lines = [f"backfill {backfill_id}: {backfill.status if backfill else 'missing'}"]
    for run in instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})):
        lines.append(
            f"  run {run.run_id} {run.status.value} parent={run.parent_run_id} "
            f"will_retry={run.tags.get('dagster/will_retry')} retry={run.tags.get('dagster/auto_retry_run_id')}"
        )
    log = stack.logs_dir / "daemon.log"
    # Errors only: the daemon's warnings are mostly beta/preview notices that would crowd them out.
    errors = [line for line in log.read_text(errors="replace").splitlines() if "ERROR" in line]
    return "\n".join([*lines, "daemon errors (last 15):", *errors[-15:]])


def kill_at(stack: DagsterStack, pause_dir: Path, where: KillPoint, backfill_id: str) -> Kill:
    pid_file = pause_dir / f"{where.point}@{where.target}.pid"
    try:
        wait_for(f"no run reached {where.point}@{where.target}", PAUSE_TIMEOUT_S, pid_file.exists)
    except TimeoutError as timeout:
        raise TimeoutError(f"{timeout}\n{backfill_state(stack, backfill_id)}") from None
    instance = stack.instance()
    run, step_key = running_step(instance, where.table.asset_key)
    holders = [s.run_id for s in instance.event_log_storage.get_concurrency_info(where.table.pool).claimed_slots]
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    def failed() -> bool:
        record = instance.get_run_by_id(run.run_id)
        return record is not None and record.status == dg.DagsterRunStatus.FAILURE

    wait_for(f"run {run.run_id} was not marked failed", FAILED_TIMEOUT_S, failed)
    print(f"killed run {run.run_id} at {where.point}@{where.target} (step {step_key})")
    return Kill(where, run.run_id, step_key, holders)


@pytest.fixture(scope="module")
def recovery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recovery]:
    root = tmp_path_factory.mktemp("run_recovery")
    pause_dir = root / "pause"
    pause_dir.mkdir()
    with DagsterStack.running(
        root / "stack",
        extra_env={PAUSE_DIR_ENV: str(pause_dir)},
        instance_overrides={"run_retries": {"max_retries": 3}},
    ) as stack:
        landing = LandingZone.local(stack.landing_dir)
        simulate(SIMULATION, FIRST_DAY, LAST_DAY, landing)
        for where in KILL_POINTS:
            (pause_dir / f"{where.point}@{where.target}.armed").touch()
        cli = run_backfill_cli(
            stack,
            [SELECTION, "--from", FIRST_DAY.isoformat(), "--to", LAST_DAY.isoformat(), "--no-wait"],
        )
        assert cli.exit_code == 0 and cli.backfill_id, cli.output
        kills = [kill_at(stack, pause_dir, where, cli.backfill_id) for where in KILL_POINTS]
        backfill = stack.wait_backfill(cli.backfill_id, BACKFILL_TIMEOUT_S)
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (
            f"{backfill_state(stack, cli.backfill_id)}\n{stack.log_tails()}"
        )
        yield Recovery(stack, landing, cli.backfill_id, kills)


def test_each_killed_run_is_marked_failed_and_its_retry_from_failure_completes_the_backfill(
    recovery: Recovery,
) -> None:
    instance = recovery.stack.instance()
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: recovery.backfill_id}))
    children = {r.tags.get(PARENT_RUN_ID_TAG): r for r in runs}
    killed = {k.run_id for k in recovery.kills}
    for kill in recovery.kills:
        assert instance.get_run_by_id(kill.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        # Retries launched by the daemon, not by the test, each from the failed step, until one succeeds (a retry
        # may itself be the next run killed).
        retry = children[kill.run_id]
        while retry.run_id in killed:
            assert retry.tags.get("dagster/retry_strategy") == "FROM_FAILURE"
            retry = children[retry.run_id]
        assert retry.tags.get("dagster/retry_strategy") == "FROM_FAILURE"
        assert retry.status == dg.DagsterRunStatus.SUCCESS, retry.run_id


def test_the_daemon_tried_to_retry_only_the_killed_runs(recovery: Recovery) -> None:
    # Each run that ended well was never taken for one to retry (a retry tag set ahead of failure would make the
    # retry daemon try, fail, and log an error on the successful run).
    daemon_log = (recovery.stack.logs_dir / "daemon.log").read_text(errors="replace")
    assert "Failed to retry run" not in daemon_log


def test_no_killed_run_left_a_commit_on_main_of_the_table_it_was_writing(recovery: Recovery) -> None:
    lake = IcebergLakeResource(data_dir=str(recovery.stack.data_dir))
    for kill in recovery.kills:
        iceberg_table = lake.load(kill.where.table)
        head = iceberg_table.current_snapshot()
        assert head is not None
        # Main moves only by whole commits: no data the killed run wrote reached main (a new table's empty first
        # snapshot, which a branch needs, adds no file); its retry's commit is there.
        writers = {
            s.summary.get(SUMMARY_RUN_ID)
            for s in ancestors_of(head, iceberg_table.metadata)
            if s.summary and any(int(s.summary.get(k) or 0) for k in ("added-data-files", "deleted-data-files"))
        }
        assert kill.run_id not in writers, kill


def test_a_slot_held_by_a_dead_run_is_freed_and_the_retrys_blocked_step_proceeds(recovery: Recovery) -> None:
    instance = recovery.stack.instance()
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: recovery.backfill_id}))
    retries = {r.tags.get(PARENT_RUN_ID_TAG): r for r in runs}
    for kill in recovery.kills:
        # While paused in its step the run held its table's only slot, and a SIGKILL releases nothing itself.
        assert kill.slot_holders_before == [kill.run_id]
        info = instance.event_log_storage.get_concurrency_info(kill.where.table.pool)
        assert kill.run_id not in {s.run_id for s in info.claimed_slots}
        assert kill.run_id not in {s.run_id for s in info.pending_steps}
        retry = retries[kill.run_id]
        succeeded = {e.step_key for e in instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
        assert kill.step_key in succeeded, f"the retry of {kill.run_id} did not get past {kill.step_key}"
        blocked = [
            e.timestamp
            for e in instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if e.step_key == kill.step_key and "blocked by limit for pool" in (e.message or "")
        ]
        print(f"retry {retry.run_id} of {kill.step_key}: blocked on {kill.where.table.pool} {len(blocked)} times")


def alerts(stack: DagsterStack) -> list[dict[str, object]]:
    path = stack.data_dir / "alerts" / "alerts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_failure_alert_of_a_killed_run_names_its_step_the_signal_and_what_happens_next(
    recovery: Recovery,
) -> None:
    stack = recovery.stack
    wanted = {k.run_id for k in recovery.kills}
    wait_for(
        "not every killed run was alerted",
        ALERT_TIMEOUT_S,
        lambda: wanted <= {a.get("run_id") for a in alerts(stack)},
    )
    by_run = {str(a["run_id"]): a for a in alerts(stack)}
    for kill in recovery.kills:
        text = str(by_run[kill.run_id]["text"])
        assert f"step {kill.step_key}" in text, text
        assert kill.where.table.asset_key.to_user_string() in text, text
        assert "SIGKILL" in text and "signal 9" in text, text
        assert f"{FIRST_DAY.isoformat()}...{LAST_DAY.isoformat()}" in text, text
        # A crash is retried from failure automatically; the alert says so, and how to do it by hand.
        assert "retrying this run automatically from the failed step" in text, text
        assert f"Runs > {kill.run_id} > Re-execute > From failure" in text, text


def test_every_table_equals_a_clean_rebuild(recovery: Recovery, spark_resource: SparkResource, tmp_path: Path) -> None:
    stack = recovery.stack
    lake = IcebergLakeResource(data_dir=str(stack.data_dir))
    rebuilt = IcebergLakeResource(data_dir=str(tmp_path / "rebuild"))
    result = dg.materialize(
        [*raw_assets, *core_assets],
        resources={**lending_resources(stack, spark_resource), "lake": rebuilt},
        instance=dg.DagsterInstance.ephemeral(),
        tags={
            ASSET_PARTITION_RANGE_START_TAG: FIRST_DAY.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: LAST_DAY.isoformat(),
        },
    )
    assert result.success
    for table in LAKE_TABLES:
        assert table_rows(lake, table) == table_rows(rebuilt, table), f"{table.identifier} differs from a clean rebuild"
    for kill in recovery.kills:
        assert sum(table_rows(lake, kill.where.table).values()) > 0, f"{kill.where.table.identifier} is empty"


def test_maintenance_removes_the_killed_runs_staged_files_and_keeps_the_data(
    recovery: Recovery,
) -> None:
    lake = IcebergLakeResource(data_dir=str(recovery.stack.data_dir))
    tables = [kill.where.table for kill in recovery.kills]
    before = {t.identifier: table_rows(lake, t) for t in tables}

    def left_behind(table: LakeTable, run_id: str) -> tuple[list[str], list[Path]]:
        refs = [name for name in lake.load(table).metadata.refs if audit_branch_run_id(name) == run_id]
        staging = local_path(lake.run_staging_uri(table, run_id))
        return refs, list(staging.rglob("*.parquet")) if staging.exists() else []

    for kill in recovery.kills:
        # Killed before or inside its one commit: the run's staged files are all it left (a branch is made only
        # for data that failed an audit, which none of these did).
        branches, files = left_behind(kill.where.table, kill.run_id)
        assert branches == [] and files, f"{kill.run_id} left {branches} and no staged files to clean"

    job = build_maintenance_job(tables)
    config = maintenance_run_config(tables, audit_branch_retention_hours=0, compact=False)
    assert job.execute_in_process(
        run_config=config, resources={"lake": lake}, instance=recovery.stack.instance()
    ).success

    for kill in recovery.kills:
        assert left_behind(kill.where.table, kill.run_id) == ([], []), kill.run_id
    assert {t.identifier: table_rows(lake, t) for t in tables} == before
