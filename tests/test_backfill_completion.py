"""A backfill whose crashed run is being retried is not ended before the retry's work is seen
(batch_platform.backfill_completion): Dagster 1.13.27's own check would end it in two windows, shown here on a real
instance's storage, and the guard defers the end in both (tests/test_daemon_patches.py: the run coordinator installs
it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG, WILL_RETRY_TAG

from batch_platform import backfill_completion
from batch_platform.backfill_completion import backfill_runs_are_complete

LOG = logging.getLogger(__name__)
DAGSTERS_CHECK = backfill_completion._dagsters_check
BACKFILL_ID = "bf1"


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a"]))
def probe() -> None:
    pass


DEFS = dg.Definitions(assets=[probe])


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        yield instance


def add_backfill(instance: dg.DagsterInstance) -> PartitionBackfill:
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=BACKFILL_ID,
        asset_graph=DEFS.resolve_asset_graph(),
        partition_names=["a"],
        asset_selection=[probe.key],
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill


def set_read_cursor(instance: dg.DagsterInstance, storage_id: int) -> None:
    """What a tick stores before its end check: the event it read materializations up to."""
    backfill = instance.get_backfill(BACKFILL_ID)
    assert backfill is not None and backfill.asset_backfill_data is not None
    data = backfill.asset_backfill_data.with_latest_storage_id(storage_id)
    instance.update_backfill(backfill.with_asset_backfill_data(data, instance, DEFS.resolve_asset_graph()))


def backfill_run(instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> dg.DagsterRun:
    job = DEFS.resolve_implicit_global_asset_job_def()
    return instance.create_run_for_job(job, tags={BACKFILL_ID_TAG: BACKFILL_ID, **(tags or {})})


def mark_failed_without_dagsters_decision(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """The state between Dagster storing a run's failure and tagging whether it will retry."""
    failure = DagsterEvent(event_type_value=dg.DagsterEventType.RUN_FAILURE.value, job_name=run.job_name)
    instance.run_storage.handle_run_event(run.run_id, failure)


def test_a_backfill_with_a_run_failed_a_moment_ago_waits_for_dagsters_retry_decision(
    instance: dg.DagsterInstance,
) -> None:
    mark_failed_without_dagsters_decision(instance, backfill_run(instance))
    assert DAGSTERS_CHECK(BACKFILL_ID, instance, LOG)  # the window: Dagster would end the backfill here
    assert not backfill_runs_are_complete(BACKFILL_ID, instance, LOG)


def test_once_dagster_decides_not_to_retry_a_failed_run_the_backfill_can_end(instance: dg.DagsterInstance) -> None:
    run = backfill_run(instance, {"dagster/max_retries": "0"})
    instance.report_run_failed(run)
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None and failed.tags[WILL_RETRY_TAG] == "false"
    assert backfill_runs_are_complete(BACKFILL_ID, instance, LOG)


def test_a_run_that_ended_after_the_tick_read_materializations_defers_the_end_to_the_next_tick(
    instance: dg.DagsterInstance,
) -> None:
    add_backfill(instance)
    result = dg.materialize([probe], instance=instance, partition_key="a", tags={BACKFILL_ID_TAG: BACKFILL_ID})
    (ended,) = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_SUCCESS, limit=1).records
    assert ended.run_id == result.run_id
    # The tick read materializations up to an event before the run's end: its retry's work may be unread.
    set_read_cursor(instance, ended.storage_id - 1)
    assert DAGSTERS_CHECK(BACKFILL_ID, instance, LOG)  # the window: Dagster would end the backfill here
    assert not backfill_runs_are_complete(BACKFILL_ID, instance, LOG)
    # The next tick reads past the run's end.
    set_read_cursor(instance, ended.storage_id)
    assert backfill_runs_are_complete(BACKFILL_ID, instance, LOG)
