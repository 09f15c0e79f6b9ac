"""The simulator's book of a day (assets/lending/world_book.py) equals the book the platform computes from the drops.

A small lender's first seven months are simulated and loaded through raw and core as one range run, as a backfill
would; the book the platform chained day by day is then compared, every column of every row, with the book the
simulator derives for the same days from its plan of each loan's life. Seven months, so that the books compared
hold every kind of loan a big day starts from: delinquent and cured, 60+ days past due, charged off, paid off early
and on schedule, cancelled and partially refunded (schedule version 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from assets.lending.contract import LENDING_START, business_days
from assets.lending.core import core_assets
from assets.lending.landing import LandingZone, LandingZoneResource
from assets.lending.raw import raw_assets
from assets.lending.simulator import simulate
from assets.lending.tables import CORE_LOAN_DAILY_STATUS
from assets.lending.world import SimulationConfig, World
from assets.lending.world_book import world_book
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource

FIRST = date.fromisoformat(LENDING_START)
DAYS = list(business_days(FIRST, date(2023, 7, 31)))
CONFIG = SimulationConfig(seed=5, start=FIRST, scale=0.03)
# Early days (new loans only), the first due dates, the first cures and 60+, the first charge-offs, the last day.
# Simulating and loading seven months takes several minutes (about 7 on 2 CPUs): more than one test's usual limit.
pytestmark = pytest.mark.timeout(1_500)
COMPARED = [DAYS[0], DAYS[21], DAYS[40], DAYS[62], DAYS[85], DAYS[104], DAYS[120], DAYS[-2], DAYS[-1]]


@pytest.fixture(scope="module")
def platform_lake(
    tmp_path_factory: pytest.TempPathFactory, spark_resource: SparkResource, spark: SparkSession
) -> Iterator[IcebergLakeResource]:
    root: Path = tmp_path_factory.mktemp("world_book")
    simulate(CONFIG, DAYS[0], DAYS[-1], LandingZone.local(root / "landing"))
    lake = IcebergLakeResource(data_dir=str(root / "lake"))
    resources = {
        "lake": lake,
        "spark": spark_resource,
        "landing": LandingZoneResource(uri=str(root / "landing")),
        "pii": PiiTokenizer(key="test-only-hmac-key-0123456789abcdef0123"),
    }
    # Raw and core over every day as one range run, as a backfill would (the book in writes of 23 days).
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [*raw_assets, *core_assets],
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": DAYS[0].isoformat(),
            "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
        },
    )
    assert result.success
    yield lake


def _differences(expected: pa.Table, actual: pa.Table, limit: int = 5) -> list[str]:
    """The first rows (by loan) and columns where two books differ, for a readable failure."""
    found = []
    left = {row["loan_id"]: row for row in expected.to_pylist()}
    right = {row["loan_id"]: row for row in actual.to_pylist()}
    for loan_id in sorted(set(left) ^ set(right))[:limit]:
        found.append(f"loan {loan_id}: only in the {'platform' if loan_id in left else 'simulator'}'s book")
    for loan_id in sorted(set(left) & set(right)):
        columns = [c for c in expected.column_names if left[loan_id][c] != right[loan_id][c]]
        if columns:
            found.append(
                f"loan {loan_id}: "
                + ", ".join(f"{c} platform={left[loan_id][c]!r} simulator={right[loan_id][c]!r}" for c in columns)
            )
        if len(found) >= limit:
            break
    return found


def test_the_simulators_book_of_a_day_equals_the_book_the_platform_chained_from_the_drops(
    platform_lake: IcebergLakeResource,
) -> None:
    world = World(CONFIG)
    seen: dict[str, set[object]] = {"status": set(), "schedule_version": set(), "ever_60_plus": set()}
    for day in COMPARED:
        simulator = _assert_same_book(platform_lake, world, day)
        for column, values in seen.items():
            values.update(simulator[column].to_pylist())
    # The comparison covered every kind of loan, not only current ones.
    assert seen["status"] == {"current", "delinquent", "charged_off", "paid_off", "cancelled"}
    assert seen["schedule_version"] == {1, 2}
    assert True in seen["ever_60_plus"]


def _assert_same_book(lake: IcebergLakeResource, world: World, day: date) -> pa.Table:
    platform = lake.read_arrow(CORE_LOAN_DAILY_STATUS, [day.isoformat()]).sort_by("loan_id")
    simulator = world_book(world, day).select(platform.column_names)
    assert platform.num_rows > 0
    differences = _differences(platform, simulator)
    assert not differences, f"{day}: the books differ:\n" + "\n".join(differences)
    assert simulator.equals(platform.cast(simulator.schema)), f"{day}: same rows, different types or order"
    return simulator


def test_the_simulators_book_refuses_a_day_with_no_drop() -> None:
    world = World(CONFIG)
    with pytest.raises(ValueError, match="2023-01-07 is not a business day"):
        world_book(world, date(2023, 1, 7))
    with pytest.raises(ValueError, match="before the simulated lender's start"):
        world_book(world, date(2022, 12, 30))
