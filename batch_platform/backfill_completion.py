"""A backfill ends only once it has seen all its runs did: two windows of Dagster 1.13.27's backfill daemon closed.

The asset backfill daemon ends a backfill when each targeted partition has a status (materialized, or failed and
downstream of a failure) and no run of it is in flight or waiting to be retried
(``dagster._core.execution.asset_backfill.backfill_runs_are_complete``). Two windows let it end, COMPLETED_FAILED, a
backfill whose crashed run is being retried, and nothing downstream of that run is ever requested:

1. Dagster stores a run's failure before it tags whether the run will be retried (``dagster/will_retry``); a tick
   between the two sees no retry pending (dagster-io/dagster#34204).
2. The assets a failed run planned count as failed until the tick reads a materialization of them. A tick reads the
   materializations first and checks the runs after; if the retry finishes in between (a tick takes seconds, more
   on a busy daemon), the tick sees every partition with a status, the retry finished and nothing pending, and ends
   the backfill with the retry's partitions failed. tests/test_run_recovery.py met this in CI.

The guard adds two conditions to Dagster's, each deferring the end to a later tick: no failed run of the backfill
still lacks Dagster's retry decision (when run retries are on), and no run of the backfill ended after the event
the tick read materializations up to (the backfill's ``latest_storage_id``, stored before the check). The daemon
process runs no code of the project but its run coordinator, which installs the guard when the instance creates
it (``batch_platform.compute.ComputeProfileRunCoordinator``).
"""

from __future__ import annotations

import logging

import dagster as dg
from dagster._core.event_api import RunStatusChangeEventType
from dagster._core.execution import asset_backfill
from dagster._core.storage.tags import BACKFILL_ID_TAG, WILL_RETRY_TAG

_RUN_ENDS: tuple[RunStatusChangeEventType, ...] = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
_PAGE = 1_000


def failed_runs_without_retry_decision(instance: dg.DagsterInstance, backfill_id: str) -> list[str]:
    """Failed runs of the backfill that Dagster has not yet tagged as retried or not (none if retries are off)."""
    if not instance.run_retries_enabled:
        return []
    failed = instance.get_runs(
        filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}, statuses=[dg.DagsterRunStatus.FAILURE])
    )
    return [run.run_id for run in failed if WILL_RETRY_TAG not in run.tags]


def runs_ended_after_materializations_read(instance: dg.DagsterInstance, backfill_id: str) -> list[str]:
    """Runs of the backfill whose end was stored after the event its last tick read materializations up to: their
    last materializations may not have been read yet."""
    backfill = instance.get_backfill(backfill_id)
    data = backfill.asset_backfill_data if backfill is not None else None
    if data is None or data.latest_storage_id is None:
        return []  # a job backfill, or one stored before the cursor existed: nothing to compare with
    ended: set[str] = set()
    for event_type in _RUN_ENDS:
        cursor = None
        while True:
            page = instance.fetch_run_status_changes(
                dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=data.latest_storage_id),
                limit=_PAGE,
                cursor=cursor,
                ascending=True,
            )
            ended.update(record.run_id for record in page.records)
            if not page.has_more:
                break
            cursor = page.cursor
    if not ended:
        return []
    return list(instance.get_run_ids(filters=dg.RunsFilter(run_ids=sorted(ended), tags={BACKFILL_ID_TAG: backfill_id})))


_dagsters_check = asset_backfill.backfill_runs_are_complete


def backfill_runs_are_complete(backfill_id: str, instance: dg.DagsterInstance, logger: logging.Logger) -> bool:
    """Dagster's check that no run of the backfill is in flight or waiting to retry, plus the guard's two."""
    if not _dagsters_check(backfill_id, instance, logger):
        return False
    if undecided := failed_runs_without_retry_decision(instance, backfill_id):
        logger.info(f"Failed runs not yet tagged with their retry decision: {undecided}. Backfill still in progress.")
        return False
    if unseen := runs_ended_after_materializations_read(instance, backfill_id):
        logger.info(f"Runs ended after this tick read materializations: {unseen}. Deferring to the next tick.")
        return False
    return True


def install_backfill_completion_guard() -> None:
    """Make the backfill daemon of this process use the guarded check (idempotent)."""
    asset_backfill.backfill_runs_are_complete = backfill_runs_are_complete
