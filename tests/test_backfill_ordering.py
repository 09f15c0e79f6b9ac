"""The asset backfill daemon never starts a later day of the day-chained loan book before the day it carries from.

Dagster's own backfill logic (``execute_backfill_iteration``, what ``dagster-daemon`` runs every tick) is driven
over this code location's real asset graph, with a launcher that only records runs: the test decides when each run
"publishes" which assets, so the tick that once broke a restatement is reproduced exactly, not by timing. That tick
saw the restated day's core/payments published but not yet core/refunds (the run publishes its assets one after
another); the daemon then launched core/loan_daily_status for the later days, which read the old book of the
restated day (see LOAN_BOOK_INPUTS in assets/lending/core.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
    PARTITION_NAME_TAG,
)
from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster_stack import PII_KEY_ENV, PROJECT_ROOT, TEST_PII_KEY

from assets.lending.core import LOAN_BOOK_INPUTS
from assets.lending.tables import (
    CORE_CHARGE_OFFS,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_PAYMENTS,
    CORE_REFUNDS,
    CORE_REPAYMENT_SCHEDULE,
    LENDING_PARTITIONS,
    RAW_QUARANTINE,
    RAW_TABLES,
)
from batch_platform.automation import asset_graph_subset, downstream_closure
from batch_platform.lake import LakeTable
from batch_platform.settings import DATA_DIR_ENV
from sensors.lending import PIPELINE

BOOK = CORE_LOAN_DAILY_STATUS.asset_key
HISTORY = LENDING_PARTITIONS.get_partition_keys_in_range(dg.PartitionKeyRange("2023-01-03", "2023-02-15"))
RESTATED_DAY = "2023-02-06"
MAX_TICKS = 30
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcessContext]:
    """The code location in a code server, over an instance whose launcher records runs and executes none."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PII_KEY_ENV, TEST_PII_KEY)  # the run's execution plan resolves the resources' config
        env.setenv(DATA_DIR_ENV, str(tmp_path_factory.mktemp("data")))
        launcher = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
        with instance_for_test(overrides={"run_launcher": launcher}) as instance:
            target = ModuleTarget(
                module_name="definitions",
                attribute="defs",
                working_directory=str(PROJECT_ROOT),
                location_name="batch_platform",
            )
            with create_test_daemon_workspace_context(target, instance) as context:
                yield context


def _partitions(run: dg.DagsterRun) -> list[str]:
    if PARTITION_NAME_TAG in run.tags:
        return [run.tags[PARTITION_NAME_TAG]]
    return list(
        LENDING_PARTITIONS.get_partition_keys_in_range(
            dg.PartitionKeyRange(run.tags[ASSET_PARTITION_RANGE_START_TAG], run.tags[ASSET_PARTITION_RANGE_END_TAG])
        )
    )


def _publish(instance: dg.DagsterInstance, run: dg.DagsterRun, keys: set[dg.AssetKey]) -> None:
    """What a run's steps record once their commits are on main: a materialization per asset and partition."""
    for key in sorted(keys):
        for partition in _partitions(run):
            materialization = dg.AssetMaterialization(key, partition=partition)
            _record(instance, run, DagsterEventType.ASSET_MATERIALIZATION, StepMaterializationData(materialization))


def _record(instance: dg.DagsterInstance, run: dg.DagsterRun, kind: DagsterEventType, data: object = None) -> None:
    event = DagsterEvent(kind.value, run.job_name, event_specific_data=data)  # type: ignore[arg-type]
    instance.handle_new_event(
        EventLogEntry(
            error_info=None,
            level=logging.INFO,
            user_message="",
            run_id=run.run_id,
            timestamp=time.time(),
            dagster_event=event,
        )
    )


@pytest.mark.parametrize(
    "late_input",
    [CORE_LOANS, CORE_PAYMENTS, CORE_REFUNDS, CORE_REPAYMENT_SCHEDULE, CORE_CHARGE_OFFS],
    ids=lambda table: table.identifier,
)
def test_a_restatement_backfill_never_runs_a_later_day_of_the_loan_book_before_the_restated_day(
    workspace: WorkspaceProcessContext, late_input: LakeTable
) -> None:
    """Each run first publishes everything except ``late_input`` (and what depends on it in that run), a daemon
    tick happens, then the run finishes: no book run may start on a day whose previous day is targeted and not yet
    materialized by the backfill."""
    instance = workspace.instance
    request = workspace.create_request_context()
    graph = request.asset_graph
    held_back = set(dg.AssetSelection.assets(late_input.asset_key).downstream().resolve(graph))
    roots = {key: [RESTATED_DAY] for key in [*(t.asset_key for t in RAW_TABLES.values()), RAW_QUARANTINE.asset_key]}
    pipeline = set(PIPELINE.resolve(graph))
    targets = downstream_closure(graph, roots, existing=lambda key: HISTORY if key in pipeline else ())
    book_days = sorted(targets[BOOK])
    assert book_days[0] == RESTATED_DAY and len(book_days) > 1 and LOAN_BOOK_INPUTS in targets

    backfill_id = f"order{len(instance.get_backfills())}"
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id, time.time(), {}, instance, asset_graph_subset(graph, targets), None, None, None
    )
    instance.add_backfill(backfill)

    book_ranges: dict[str, list[str]] = {}  # run id -> the book days it computes
    half_done: set[str] = set()
    book_materialized: set[str] = set()
    for _ in range(MAX_TICKS):
        list(execute_backfill_iteration(workspace, log))
        runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))[::-1]  # oldest first
        for run in runs:
            if run.run_id in book_ranges or BOOK not in (run.asset_selection or set()):
                continue
            days = _partitions(run)
            book_ranges[run.run_id] = days
            previous = book_days[book_days.index(days[0]) - 1] if days[0] != book_days[0] else None
            assert previous is None or previous in book_materialized, (
                f"a run of {BOOK.to_user_string()} for {days[0]}..{days[-1]} started before {previous}, which it "
                f"carries from, was materialized (book runs: {list(book_ranges.values())})"
            )
        status = instance.get_backfill(backfill_id)
        assert status is not None
        if status.status != BulkActionStatus.REQUESTED:
            break
        # The oldest unfinished run makes progress: first everything but the late input, then the rest.
        unfinished = [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
        if not unfinished:
            continue
        run = unfinished[0]
        selection = set(run.asset_selection or set())
        if run.run_id not in half_done and selection & held_back and selection - held_back:
            half_done.add(run.run_id)
            _publish(instance, run, selection - held_back)
            continue
        _publish(instance, run, selection & held_back if run.run_id in half_done else selection)
        _record(instance, run, DagsterEventType.RUN_SUCCESS)
        book_materialized |= set(book_ranges.get(run.run_id, ()))
    else:
        pytest.fail(f"the backfill did not finish in {MAX_TICKS} ticks")

    assert status.status == BulkActionStatus.COMPLETED_SUCCESS
    assert book_materialized == set(book_days)
