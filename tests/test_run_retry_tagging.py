"""A backfill run that dies is never mistaken for a run that will not be retried.

Dagster 1.13.27 marks a failed run ``dagster/will_retry`` only after it has stored the failure, and a backfill tick
that looks in between ends the backfill as stalled; the retry daemon then refuses to retry. The run coordinator tags
every run ahead (batch_platform.compute.run_tags_for), and Dagster overwrites the tag with its decision on failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent
from dagster._core.execution.asset_backfill import backfill_runs_are_complete
from dagster._core.storage.tags import BACKFILL_ID_TAG

from batch_platform.compute import WILL_RETRY_TAG, run_tags_for

LOG = logging.getLogger(__name__)


@dg.asset
def probe() -> None:
    pass


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        yield instance


def backfill_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    job = dg.Definitions(assets=[probe]).resolve_implicit_global_asset_job_def()
    return instance.create_run_for_job(job, tags={BACKFILL_ID_TAG: "bf1", **tags})


def coordinator_tags(instance: dg.DagsterInstance) -> dict[str, str]:
    """The tags the run coordinator adds to a run of the job, computed on a run outside the backfill."""
    job = dg.Definitions(assets=[probe]).resolve_implicit_global_asset_job_def()
    outside = instance.create_run_for_job(job)
    instance.delete_run(outside.run_id)
    return run_tags_for(instance, outside)


def mark_failed_without_dagsters_decision(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """The state between Dagster storing a run's failure and tagging whether it will retry."""
    failure = DagsterEvent(event_type_value=dg.DagsterEventType.RUN_FAILURE.value, job_name=run.job_name)
    instance.run_storage.handle_run_event(run.run_id, failure)


def test_every_run_is_tagged_as_retried_ahead_when_run_retries_are_enabled(instance: dg.DagsterInstance) -> None:
    assert coordinator_tags(instance)[WILL_RETRY_TAG] == "true"
    with dg.instance_for_test() as no_retries:
        assert WILL_RETRY_TAG not in coordinator_tags(no_retries)


def test_a_backfill_with_a_run_failed_a_moment_ago_is_still_waiting_for_its_retry(
    instance: dg.DagsterInstance,
) -> None:
    tagged = backfill_run(instance, coordinator_tags(instance))
    mark_failed_without_dagsters_decision(instance, tagged)
    assert not backfill_runs_are_complete("bf1", instance, LOG)


def test_without_the_tag_dagster_would_judge_that_backfill_complete(instance: dg.DagsterInstance) -> None:
    untagged = backfill_run(instance, {})
    mark_failed_without_dagsters_decision(instance, untagged)
    assert backfill_runs_are_complete("bf1", instance, LOG)


def test_dagsters_decision_on_failure_replaces_the_tag(instance: dg.DagsterInstance) -> None:
    run = backfill_run(instance, {**coordinator_tags(instance), "dagster/max_retries": "0"})
    instance.report_run_failed(run)
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None and failed.tags[WILL_RETRY_TAG] == "false"
    assert backfill_runs_are_complete("bf1", instance, LOG)
