"""A day chain is not starved in the run queue: runs of steps that read their own earlier partitions go first.

The run coordinator (batch_platform.compute.run_tags_for) reads the steps a run executes from its stored execution
plan; Dagster's queued run coordinator launches runs by ``dagster/priority``, highest first.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pyarrow as pa
import pytest

from assets.lending.raw import raw_landing_drop
from batch_platform.compute import DAY_CHAIN_PRIORITY, DAY_CHAIN_TAG, PRIORITY_TAG, run_tags_for
from batch_platform.datasets import LakeDataset, lake_dataset_asset, lake_datasets_multi_asset
from batch_platform.inputs import LakeInput, previous, this_partition
from batch_platform.lake import LakeTable

pytestmark = pytest.mark.unit

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")
SCHEMA = pa.schema([pa.field("business_date", pa.date32(), nullable=False), pa.field("n", pa.int64())])
EVENTS = LakeTable("t", "events", SCHEMA, "business_date")
BOOK = LakeTable("t", "book", SCHEMA, "business_date")
DAILY_TOTALS = LakeTable("t", "daily_totals", SCHEMA, "business_date")


def _carry(events, yesterday):  # type: ignore[no-untyped-def]
    return events


def _total(events):  # type: ignore[no-untyped-def]
    return events


# The book carries yesterday's balances forward (a day chain); the totals only read the day's events.
BOOK_DATASET = LakeDataset(
    BOOK,
    _carry,
    inputs=[LakeInput(EVENTS, this_partition(), name="events"), LakeInput(BOOK, previous(1), name="yesterday")],
    partitions_def=DAILY,
)
TOTALS_DATASET = LakeDataset(
    DAILY_TOTALS, _total, inputs=[LakeInput(EVENTS, this_partition(), name="events")], partitions_def=DAILY
)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _tags_of_a_run(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, **tags: str) -> dict[str, str]:
    defs = dg.Definitions(
        assets=[asset],
        resources={key: dg.ResourceDefinition.none_resource() for key in ("lake", "spark", "landing")},
    )
    job = defs.resolve_implicit_global_asset_job_def()
    run = instance.create_run_for_job(job, tags=tags)
    return {**run.tags, **run_tags_for(instance, run)}


def test_a_run_of_a_day_chain_goes_first_in_the_queue(instance: dg.DagsterInstance) -> None:
    assert _tags_of_a_run(instance, lake_dataset_asset(BOOK_DATASET))[PRIORITY_TAG] == str(DAY_CHAIN_PRIORITY)


def test_a_multi_asset_holding_a_day_chain_goes_first(instance: dg.DagsterInstance) -> None:
    both = lake_datasets_multi_asset("book_and_totals", [BOOK_DATASET, TOTALS_DATASET])
    assert _tags_of_a_run(instance, both)[PRIORITY_TAG] == str(DAY_CHAIN_PRIORITY)


def test_the_raw_load_is_the_root_of_the_lenders_chain(instance: dg.DagsterInstance) -> None:
    tags = _tags_of_a_run(instance, raw_landing_drop)
    assert raw_landing_drop.op.tags[DAY_CHAIN_TAG] == "true" and tags[PRIORITY_TAG] == str(DAY_CHAIN_PRIORITY)


def test_a_run_that_reads_no_past_of_its_own_keeps_the_default_priority(instance: dg.DagsterInstance) -> None:
    assert PRIORITY_TAG not in _tags_of_a_run(instance, lake_dataset_asset(TOTALS_DATASET))


def test_a_priority_given_to_the_run_is_kept(instance: dg.DagsterInstance) -> None:
    tags = _tags_of_a_run(instance, lake_dataset_asset(BOOK_DATASET), **{PRIORITY_TAG: "-5"})
    assert tags[PRIORITY_TAG] == "-5"
