"""The loan pipeline's landing and restatement sensors and its deadline schedule, evaluated against a real Dagster
instance (SQLite, on disk), a real landing zone of simulated drops (a local folder, and an S3 bucket on a moto
server) and real raw loads: the raw asset runs (no Spark), so "loaded" is what the raw tables recorded."""

import json
import os
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import dagster as dg
import pyarrow.fs as pafs
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from lending_automation import (
    PIPELINE_KEYS,
    LendingAutomation,
    backfill_targets,
    single_run_request,
)

from assets.lending.contract import business_days
from assets.lending.landing import LandingZone, LandingZoneResource, complete_versions
from assets.lending.raw import raw_assets
from assets.lending.simulator import simulate, write_correction
from assets.lending.tables import CORE_LOAN_DAILY_STATUS, CORE_LOANS, RAW_TABLES
from assets.lending.world import SimulationConfig
from batch_platform.listing import ListingCursor, LocalObjects, S3Objects
from sensors.lending import (
    DROP_TAG,
    RESTATEMENT_TAG,
    WatchState,
    lending_landing_sensor,
    lending_restatement_sensor,
    scan_landing,
)

FIRST = date(2023, 1, 3)  # the lender's first business day (2023-01-02 was a bank holiday)
DAYS = list(business_days(FIRST, date(2023, 1, 10)))  # 6 business days
CONFIG = SimulationConfig(seed=5, start=FIRST, scale=0.01)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[LendingAutomation]:
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield LendingAutomation(tmp_path, instance)


# -- landing ----------------------------------------------------------------------------------------------------


def test_a_complete_new_drop_starts_the_days_pipeline_with_the_drop_as_run_key(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[0], world.landing)
    request = single_run_request(world.tick(lending_landing_sensor))
    assert request.partition_key == "2023-01-03"
    assert request.run_key == "pos-lending-v1/business_date=2023-01-03/v1"
    assert set(request.asset_selection or []) == PIPELINE_KEYS
    assert request.tags[DROP_TAG] == request.run_key


def test_a_tick_that_finds_nothing_new_reads_no_manifest_and_requests_nothing(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[0], world.landing)
    first = world.tick(lending_landing_sensor)
    second = world.tick(lending_landing_sensor, first.cursor)
    assert not second.run_requests
    assert second.skip_message is not None
    assert "no new complete drop (0 new manifests)" in (second.skip_message or "")


def test_several_new_days_become_one_backfill_over_them(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[2], world.landing)
    request = single_run_request(world.tick(lending_landing_sensor))
    targets = backfill_targets(request)
    assert set(targets) == PIPELINE_KEYS
    assert all(keys == [str(d) for d in DAYS[:3]] for keys in targets.values())


def test_a_drop_whose_day_is_loaded_is_not_run_again(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[1], world.landing)
    world.load_raw(DAYS[0], DAYS[1])
    result = world.tick(lending_landing_sensor)
    assert not result.run_requests


def test_a_day_after_a_missing_drop_waits_for_it_and_runs_when_it_lands(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[0], world.landing)
    world.load_raw(DAYS[0], DAYS[0])
    simulate(CONFIG, DAYS[2], DAYS[2], world.landing)  # DAYS[1] has not landed
    waiting = world.tick(lending_landing_sensor)
    assert not waiting.run_requests
    assert WatchState.from_cursor(waiting.cursor).pending[0].business_date == str(DAYS[2])

    simulate(CONFIG, DAYS[1], DAYS[1], world.landing)
    targets = backfill_targets(single_run_request(world.tick(lending_landing_sensor, waiting.cursor)))
    assert targets[CORE_LOAN_DAILY_STATUS.asset_key] == [str(DAYS[1]), str(DAYS[2])]


def test_new_drops_wait_while_a_pipeline_backfill_is_in_flight(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[1], world.landing)
    subset_request = single_run_request(world.tick(lending_landing_sensor))
    world.instance.add_backfill(
        PartitionBackfill.from_asset_graph_subset(
            backfill_id="inflight",
            dynamic_partitions_store=world.instance,
            backfill_timestamp=time.time(),
            asset_graph_subset=subset_request.asset_graph_subset,
            tags={},
            title=None,
            description=None,
            run_config=None,
        )
    )
    waiting = world.tick(lending_landing_sensor)
    assert not waiting.run_requests
    assert "backfill inflight" in waiting.skip_message  # type: ignore[union-attr]

    backfill = world.instance.get_backfill("inflight")
    assert backfill is not None
    world.instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_FAILED))
    retried = world.tick(lending_landing_sensor, waiting.cursor)  # nothing was loaded: the pending days run now
    assert backfill_targets(single_run_request(retried))[RAW_TABLES["loans"].asset_key] == [str(DAYS[0]), str(DAYS[1])]


def test_a_corrupt_drop_is_reported_not_run(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[0], world.landing)
    # A producer's broken delivery: the manifest of v2 names a file that was never uploaded and a wrong size.
    good = json.loads(world.landing.read_bytes("pos-lending-v1/business_date=2023-01-03/v1/_manifest.json"))
    broken_prefix = "pos-lending-v1/business_date=2023-01-04/v1"
    for entry in good["files"][1:]:
        world.landing.write_bytes(
            f"{broken_prefix}/{entry['path']}",
            world.landing.read_bytes(f"pos-lending-v1/business_date=2023-01-03/v1/{entry['path']}"),
        )
    good["files"][1]["bytes"] += 1
    world.landing.write_bytes(
        f"{broken_prefix}/_manifest.json", json.dumps({**good, "business_date": "2023-01-04"}).encode()
    )

    result = world.tick(lending_landing_sensor)
    request = single_run_request(result)
    assert request.partition_key == "2023-01-03"  # the good day runs; the corrupt one does not
    [alert] = world.alerts()
    assert alert["title"] == f"Landing drop corrupt, not loaded: {broken_prefix}"
    assert "is missing" in alert["error_message"] and alert["severity"] == "error"
    assert not world.tick(lending_landing_sensor, result.cursor).run_requests
    assert len(world.alerts()) == 1  # reported once

    scan = scan_landing(LocalObjects(world.root / "landing"), ListingCursor(), time.time())
    [corrupt] = scan.corrupt
    assert corrupt.prefix == broken_prefix
    problems = " ".join(corrupt.problems)
    assert f"{good['files'][0]['path']} is missing" in problems
    assert "the manifest says" in problems


def test_an_incomplete_drop_is_reported_once_and_never_run(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[0], world.landing)
    stuck = world.root / "landing/pos-lending-v1/business_date=2023-01-04/v1"
    stuck.mkdir(parents=True)
    (stuck / "loans.parquet").write_bytes(b"PAR1 half an upload")
    three_hours_ago = time.time() - 3 * 3600
    os.utime(stuck / "loans.parquet", (three_hours_ago, three_hours_ago))

    first = world.tick(lending_landing_sensor)
    assert single_run_request(first).partition_key == "2023-01-03"
    assert "pos-lending-v1/business_date=2023-01-04/v1" in WatchState.from_cursor(first.cursor).reported_incomplete
    [alert] = world.alerts()
    assert "no manifest 3.0 h after its last file was written" in alert["error_message"]
    second = world.tick(lending_landing_sensor, first.cursor)
    assert not second.run_requests
    assert len(world.alerts()) == 1


# -- restatement ----------------------------------------------------------------------------------------------------


def test_a_correction_of_a_loaded_day_launches_one_backfill_over_it_and_everything_downstream(
    world: LendingAutomation,
) -> None:
    simulate(CONFIG, DAYS[0], DAYS[4], world.landing)
    world.load_raw(DAYS[0], DAYS[4])
    downstream = PIPELINE_KEYS - {k for a in raw_assets for k in a.keys}
    world.mark_built(downstream, DAYS[:5])
    quiet = world.tick(lending_restatement_sensor)
    assert not quiet.run_requests

    write_correction(CONFIG, DAYS[2], world.landing)
    request = single_run_request(world.tick(lending_restatement_sensor, quiet.cursor))
    targets = backfill_targets(request)
    later = [str(d) for d in DAYS[2:5]]
    # Every later day that exists: each day's raw load reads the days before it (what they quarantined), loans
    # read the merchants up to their day, and the book carries balances from day to day.
    assert targets[RAW_TABLES["payments"].asset_key] == later
    assert targets[CORE_LOANS.asset_key] == later
    assert targets[CORE_LOAN_DAILY_STATUS.asset_key] == later
    reporting = [k for k in targets if k.path[0] == "reporting"]
    assert reporting and all(targets[k] == later for k in reporting)
    assert set(targets) <= PIPELINE_KEYS
    assert request.tags[RESTATEMENT_TAG] == "pos-lending-v1/business_date=2023-01-05/v2"


def test_a_new_version_of_a_day_never_loaded_is_left_to_the_landing_sensor(world: LendingAutomation) -> None:
    simulate(CONFIG, DAYS[0], DAYS[1], world.landing)
    write_correction(CONFIG, DAYS[1], world.landing)
    assert not world.tick(lending_restatement_sensor).run_requests


# -- S3 -------------------------------------------------------------------------------------------------------------


def test_the_landing_sensor_lists_an_s3_prefix_page_by_page(
    world: LendingAutomation, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-1")
    client.create_bucket(Bucket="landing", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    filesystem = pafs.S3FileSystem(
        access_key="test", secret_key="test", endpoint_override=moto_endpoint, region="eu-west-1", scheme="http"
    )
    simulate(CONFIG, DAYS[0], DAYS[1], LandingZone(filesystem, "landing/drops"))

    store = S3Objects.from_uri(client, "s3://landing/drops", page_size=4)
    assert len(list(store.list())) > 8  # more objects than two pages: the listing followed the continuation
    scan = scan_landing(store, ListingCursor(), time.time())
    assert [d.business_date for d in scan.complete] == [str(DAYS[0]), str(DAYS[1])]

    # One landing configuration (root, endpoint, region) serves the sensors' listing and the raw load's reads.
    landing = LandingZoneResource(uri="s3://landing/drops", s3_endpoint=moto_endpoint, region="eu-west-1")
    world.resources = {**world.resources, "landing": landing}
    request = single_run_request(world.tick(lending_landing_sensor))
    assert backfill_targets(request)[RAW_TABLES["loans"].asset_key] == [str(DAYS[0]), str(DAYS[1])]
    assert complete_versions(landing.zone(), DAYS[1]) == [1]


# -- the deadline schedule ----------------------------------------------------------------------------------------


def test_the_deadline_runs_the_previous_business_day_unless_it_is_materialized(world: LendingAutomation) -> None:
    saturday = date(2023, 1, 7)
    request = world.deadline(saturday)
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2023-01-06"  # Friday, though its partition window is open until Monday

    world.mark_built(PIPELINE_KEYS, [date(2023, 1, 6)])
    skipped = world.deadline(saturday)
    assert isinstance(skipped, dg.SkipReason)
    assert "already materialized" in (skipped.skip_message or "")
