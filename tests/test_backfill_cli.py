"""`batch-platform backfill`: input errors refused before anything is submitted, and one real asset backfill of the
lending pipeline through a real webserver and daemon (tests/dagster_stack.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
)
from dagster_graphql.schema import create_schema
from dagster_stack import (  # noqa: F401 - lending_backfill_fixture registers the lending_backfill fixture
    HISTORY_FIRST_DAY,
    SIMULATION,
    LendingBackfill,
    free_port,
    lending_backfill_fixture,
    lending_resources,
)
from graphql import parse, validate
from lake_rows import table_rows

from assets.lending.contract import CATEGORIES
from assets.lending.domain import lending
from assets.lending.landing import LandingZone, complete_versions, read_drop
from assets.lending.simulator import write_correction, write_tables
from assets.lending.tables import (
    CORE_LEDGER_ENTRIES,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_MERCHANTS,
    CORE_PAYMENTS,
    RAW_QUARANTINE,
    RAW_TABLES,
    REPORTING_MERCHANT_PERFORMANCE,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from batch_platform.backfill_cli import (
    BACKFILL_PROGRESS_QUERY,
    EXIT_BAD_INPUT,
    EXIT_UNREACHABLE,
    LAUNCH_BACKFILL_MUTATION,
    BackfillInputError,
    DagsterWebserverClient,
    GraphQLFailure,
    main,
    plan_backfill,
)
from batch_platform.lake import IcebergLakeResource
from batch_platform.partitions import business_day_partitions, daily_partitions
from batch_platform.spark import SparkResource
from definitions import build_definitions
from sensors.lending import RESTATEMENT_TAG

# The module's stack runs a real backfill (minutes on 2 busy cores) in the first end-to-end test's setup.
pytestmark = pytest.mark.timeout(1800)

# -- input errors: no webserver involved ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions()


def test_an_unknown_selection_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key:no_such/asset", "--from", "2023-01-03", "--to", "2023-01-13"]) == EXIT_BAD_INPUT
    assert "asset selection 'key:no_such/asset' matches no asset" in capsys.readouterr().err


def test_an_unparseable_selection_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["group:lending_raw)((", "--from", "2023-01-03", "--to", "2023-01-13"]) == EXIT_BAD_INPUT
    assert "invalid asset selection 'group:lending_raw)(('" in capsys.readouterr().err


def test_a_range_before_the_first_partition_exits_2_naming_the_asset_and_its_partitions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["key:raw/loans", "--from", "2022-12-19", "--to", "2023-01-06"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "outside the partitions of raw/" in err
    assert "its first partition is 2023-01-03" in err


def test_a_range_after_the_last_partition_is_refused(defs: dg.Definitions) -> None:
    with pytest.raises(BackfillInputError, match=r"outside the partitions of core/loans: .* its last \d{4}-"):
        plan_backfill(defs, "key:core/loans", date(2023, 1, 3), date(2999, 1, 1))


def test_a_weekend_holds_no_business_day_partition(defs: dg.Definitions) -> None:
    with pytest.raises(BackfillInputError, match="core/loans has no partition between 2023-01-07 and 2023-01-08"):
        plan_backfill(defs, "key:core/loans", date(2023, 1, 7), date(2023, 1, 8))


def test_an_unpartitioned_asset_is_refused() -> None:
    @dg.asset
    def lookup() -> None: ...

    with pytest.raises(BackfillInputError, match="lookup is not partitioned"):
        plan_backfill(dg.Definitions(assets=[lookup]), "key:lookup", date(2024, 1, 1), date(2024, 1, 2))


def test_each_asset_gets_the_keys_of_its_own_partitions_definition() -> None:
    """Business-day assets skip the weekend, calendar-day assets keep it; downstream is added on request."""

    @dg.asset(partitions_def=business_day_partitions("2024-01-01"))
    def business() -> None: ...

    @dg.asset(partitions_def=daily_partitions("2024-01-01"), deps=[business])
    def calendar() -> None: ...

    defs = dg.Definitions(assets=[business, calendar])
    alone = plan_backfill(defs, "key:business", date(2024, 1, 5), date(2024, 1, 8))
    assert [(a.asset_key.to_user_string(), a.partition_keys) for a in alone.assets] == [
        ("business", ("2024-01-05", "2024-01-08"))
    ]
    both = plan_backfill(defs, "key:business", date(2024, 1, 5), date(2024, 1, 8), downstream=True)
    assert {a.asset_key.to_user_string(): a.partition_keys for a in both.assets} == {
        "business": ("2024-01-05", "2024-01-08"),
        "calendar": ("2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"),
    }
    assert both.partitions_by_assets()[1] == {
        "assetKey": {"path": ["calendar"]},
        "partitions": {"range": {"start": "2024-01-05", "end": "2024-01-08"}},
    }


def test_a_multi_asset_that_cannot_be_subset_is_targeted_whole(defs: dg.Definitions) -> None:
    plan = plan_backfill(defs, "key:raw/loans", date(2023, 1, 3), date(2023, 1, 4))
    assert {a.asset_key for a in plan.assets} == {*(t.asset_key for t in RAW_TABLES.values()), RAW_QUARANTINE.asset_key}


def test_the_graphql_documents_are_valid_against_the_installed_schema() -> None:
    schema = create_schema().graphql_schema
    for document in (LAUNCH_BACKFILL_MUTATION, BACKFILL_PROGRESS_QUERY):
        assert validate(schema, parse(document)) == []


def test_an_unreachable_webserver_exits_3_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there once the probe socket is closed
    assert main(["key:raw/loans", "--from", "2023-01-03", "--to", "2023-01-04", "--url", url]) == EXIT_UNREACHABLE
    assert f"cannot reach the Dagster webserver at {url}" in capsys.readouterr().err


# -- end to end: the webserver takes the backfill, the daemon runs it -------------------------------------------------


def lending_asset_keys() -> set[dg.AssetKey]:
    graph = build_definitions().resolve_asset_graph()
    return set(lending.selection("raw", "core", "reporting").resolve(graph))


def test_the_command_submits_one_backfill_and_exits_0_when_it_succeeds(lending_backfill: LendingBackfill) -> None:
    cli, stack = lending_backfill.cli, lending_backfill.stack
    assert cli.exit_code == 0, f"{cli.output}\n{stack.log_tails()}"
    assert f"{stack.url}/runs/b/{lending_backfill.backfill_id}" in cli.output
    asset_partitions = len(lending_asset_keys()) * len(lending_backfill.days)
    assert f"COMPLETED_SUCCESS: partitions {asset_partitions}/{asset_partitions} materialized, 0 failed" in cli.output
    backfills = stack.instance().get_backfills()
    assert [b.backfill_id for b in backfills] == [lending_backfill.backfill_id]
    backfill = backfills[0]
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    assert backfill.title == "lending e2e"
    assert backfill.tags["batch-platform/test"] == "backfill-e2e"


def test_every_targeted_partition_of_every_asset_was_materialized(lending_backfill: LendingBackfill) -> None:
    instance = lending_backfill.stack.instance()
    backfill = instance.get_backfill(lending_backfill.backfill_id)
    assert backfill is not None and backfill.asset_backfill_data is not None
    days = {d.isoformat() for d in lending_backfill.days}
    lending_keys = lending_asset_keys()
    targeted = {
        (k.asset_key, k.partition_key) for k in backfill.asset_backfill_data.target_subset.iterate_asset_partitions()
    }
    assert targeted == {(key, day) for key in lending_keys for day in days}
    missing = {
        key.to_user_string(): sorted(days - set(instance.get_materialized_partitions(key))) for key in lending_keys
    }
    assert {k: v for k, v in missing.items() if v} == {}


def test_each_partition_is_in_the_tables_exactly_once(lending_backfill: LendingBackfill) -> None:
    lake = IcebergLakeResource(data_dir=str(lending_backfill.stack.data_dir))
    landed = {d: read_drop(lending_backfill.landing, d)["loans"].num_rows for d in lending_backfill.days}
    assert sum(landed.values()) > 0

    keys = [d.isoformat() for d in lending_backfill.days]  # the backfilled days, read by partition
    raw_loans = Counter(lake.read_arrow(RAW_TABLES["loans"], keys)["business_date"].to_pylist())
    quarantine = lake.read_arrow(RAW_QUARANTINE, keys)
    quarantined = Counter(quarantine.filter(pc.equal(quarantine["dataset"], "loans"))["business_date"].to_pylist())
    assert {d: raw_loans[d] + quarantined[d] for d in landed} == landed
    assert set(raw_loans) <= set(landed)
    assert Counter(lake.read_arrow(CORE_LOANS, keys)["business_date"].to_pylist()) == raw_loans

    status = lake.read_arrow(CORE_LOAN_DAILY_STATUS).select(["business_date", "loan_id"])
    pairs = list(zip(status["business_date"].to_pylist(), status["loan_id"].to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) > 0  # no loan twice on any day, history included
    assert set(lending_backfill.days) <= {d for d, _ in pairs}


def test_the_backfill_policy_batches_partitions_into_few_runs(
    lending_backfill: LendingBackfill, record_property: Callable[[str, object], None]
) -> None:
    runs = lending_backfill.stack.instance().get_runs(
        filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: lending_backfill.backfill_id})
    )
    asset_partitions = len(lending_asset_keys()) * len(lending_backfill.days)
    record_property("backfill_runs", len(runs))
    print(f"the backfill of {asset_partitions} asset partitions made {len(runs)} runs")
    assert [r.status for r in runs if r.status != dg.DagsterRunStatus.SUCCESS] == []
    # One run per asset partition would be asset_partitions runs; multi_run(23) makes range runs. How the daemon
    # splits the graph into runs depends on when it sees materializations (2 to 5 runs seen), so only bounds hold.
    assert 0 < len(runs) * 10 <= asset_partitions
    ranges = {
        r.run_id: (r.tags.get(ASSET_PARTITION_RANGE_START_TAG), r.tags.get(ASSET_PARTITION_RANGE_END_TAG)) for r in runs
    }
    assert all(start and end for start, end in ranges.values()), ranges
    raw_runs = [r.run_id for r in runs if RAW_TABLES["loans"].asset_key in (r.asset_selection or set())]
    days = lending_backfill.days
    assert [ranges[run_id] for run_id in raw_runs] == [(days[0].isoformat(), days[-1].isoformat())]


def test_a_graphql_error_is_reported_with_dagsters_message(lending_backfill: LendingBackfill) -> None:
    client = DagsterWebserverClient(lending_backfill.stack.url)
    with pytest.raises(GraphQLFailure, match="BackfillNotFoundError: Backfill no-such-backfill could not be found"):
        client.backfill_progress("no-such-backfill")


# -- restatement, on the same stack after the backfill (last: it changes the landing) -------------------------------
# Two producers restate two days at once: a payments correction and a merchant moved to another category. The
# restatement sensor (running by default under the daemon) must react alone and rebuild each restated day and every
# later one; the result must equal a new lake built from the landing as it now is. One full rebuild serves both
# restatements (a rebuild is minutes on 2 cores; one per restatement doubled the module's time).

RESTATED_TABLES = [
    CORE_MERCHANTS,
    CORE_LOANS,
    CORE_PAYMENTS,
    CORE_LOAN_DAILY_STATUS,
    CORE_LEDGER_ENTRIES,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
    REPORTING_MERCHANT_PERFORMANCE,
]
SENSOR_TIMEOUT_S = 240.0
RESTATEMENT_TIMEOUT_S = 900.0


def _merchant_restatement(landing: LandingZone, days: list[date]) -> tuple[date, dict[str, pa.Table], set[int]]:
    """The first of ``days`` that onboards a merchant later days' loans use, and its drop with those merchants moved
    to another category (what a producer restating a miscategorized merchant sends)."""
    for index, day in enumerate(days[:-1]):
        tables = read_drop(landing, day)
        onboarded = set(tables["merchants"].column("merchant_id").to_pylist())
        later = {m for d in days[index + 1 :] for m in read_drop(landing, d)["loans"].column("merchant_id").to_pylist()}
        if restated := onboarded & later:
            merchants = tables["merchants"]
            recategorized = [
                next(c for c in CATEGORIES if c != category) if merchant in restated else category
                for merchant, category in zip(
                    merchants.column("merchant_id").to_pylist(), merchants.column("category").to_pylist(), strict=True
                )
            ]
            column = merchants.schema.get_field_index("category")
            tables["merchants"] = merchants.set_column(
                column, merchants.schema.field(column), pa.array(recategorized, merchants.schema.field(column).type)
            )
            return day, tables, restated
    raise AssertionError("no backfill day onboards a merchant that later loans use: choose another simulation")


@dataclass(frozen=True)
class Restatement:
    """The stack after two restated drops went through the sensor's backfills, and a full rebuild to compare with."""

    lake: IcebergLakeResource
    rebuilt: IcebergLakeResource
    first_day: date  # the earliest restated day
    backfills: list[PartitionBackfill]
    payments_before: Counter[tuple[object, ...]]
    merchant_day: date
    merchant_tables: dict[str, pa.Table]
    moved_merchants: set[int]


def _backfills_covering(instance: dg.DagsterInstance, prefixes: set[str]) -> list[PartitionBackfill]:
    """The restatement backfills whose tags name ``prefixes``, once every prefix is named (one sensor tick may see
    both drops, or each its own), each named by exactly one backfill."""
    deadline = time.monotonic() + SENSOR_TIMEOUT_S
    while time.monotonic() < deadline:
        backfills = [b for b in instance.get_backfills() if RESTATEMENT_TAG in b.tags]
        named = Counter(p for b in backfills for p in b.tags[RESTATEMENT_TAG].split(","))
        if set(named) >= prefixes:
            assert all(named[p] == 1 for p in prefixes), f"a restated drop in several backfills: {named}"
            return backfills
        time.sleep(2)
    raise AssertionError(f"no restatement backfill names {sorted(prefixes)} within {SENSOR_TIMEOUT_S} s")


def _full_rebuild(
    lending_backfill: LendingBackfill, spark_resource: SparkResource, tmp_path: Path
) -> IcebergLakeResource:
    """From scratch: a new lake built over the landing as it is now, the lender's whole history in one range run."""
    rebuilt = IcebergLakeResource(data_dir=str(tmp_path / "rebuild"))
    result = dg.materialize(
        lending.registered_assets(),
        resources={**lending_resources(lending_backfill.stack, spark_resource), "lake": rebuilt},
        instance=dg.DagsterInstance.ephemeral(),
        tags={
            ASSET_PARTITION_RANGE_START_TAG: HISTORY_FIRST_DAY.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: lending_backfill.days[-1].isoformat(),
        },
    )
    assert result.success
    return rebuilt


@pytest.fixture(scope="module")
def restatement(
    lending_backfill: LendingBackfill, spark_resource: SparkResource, tmp_path_factory: pytest.TempPathFactory
) -> Restatement:
    stack, days, landing = lending_backfill.stack, lending_backfill.days, lending_backfill.landing
    lake = IcebergLakeResource(data_dir=str(stack.data_dir))
    payments_before = table_rows(lake, CORE_PAYMENTS)

    # Day 3 of the 10 gets reversed and fixed payments; the merchant restatement is on another day, never the
    # first (so the backfill's target also shows that days before the earliest restated one are left alone).
    corrected_day = days[2]
    merchant_day, merchant_tables, moved = _merchant_restatement(landing, [d for d in days[1:] if d != corrected_day])
    correction = write_correction(SIMULATION, corrected_day, landing)
    version = complete_versions(landing, merchant_day)[-1] + 1
    merchant_drop = write_tables(SIMULATION, merchant_day, landing, merchant_tables, version=version)

    backfills = [
        stack.wait_backfill(b.backfill_id, RESTATEMENT_TIMEOUT_S)
        for b in _backfills_covering(stack.instance(), {correction.prefix, merchant_drop.prefix})
    ]
    return Restatement(
        lake=lake,
        rebuilt=_full_rebuild(lending_backfill, spark_resource, tmp_path_factory.mktemp("restatement")),
        first_day=min(corrected_day, merchant_day),
        backfills=backfills,
        payments_before=payments_before,
        merchant_day=merchant_day,
        merchant_tables=merchant_tables,
        moved_merchants=moved,
    )


def test_the_restatement_sensor_alone_starts_backfills_that_succeed(
    restatement: Restatement, lending_backfill: LendingBackfill
) -> None:
    statuses = [b.status for b in restatement.backfills]
    assert statuses and set(statuses) == {BulkActionStatus.COMPLETED_SUCCESS}, lending_backfill.stack.log_tails()


def test_the_restated_days_and_every_later_day_are_rebuilt_and_no_earlier_day(
    restatement: Restatement, lending_backfill: LendingBackfill
) -> None:
    def targeted(key: dg.AssetKey) -> list[str]:
        keys = set()
        for backfill in restatement.backfills:
            assert backfill.asset_backfill_data is not None
            keys |= set(backfill.asset_backfill_data.target_subset.get_partitions_subset(key).get_partition_keys())
        return sorted(keys)

    later = [d.isoformat() for d in lending_backfill.days if d >= restatement.first_day]
    assert restatement.first_day > lending_backfill.days[0]
    # The loan book is a day chain: every day from the earliest restated one. The raw load of a day reads the
    # quarantine and raw tables of the days before it (what they hold back), so every later day's load is re-judged
    # too, and with it every later day downstream; loans read merchants as of their own day.
    assert targeted(CORE_LOAN_DAILY_STATUS.asset_key) == later
    assert targeted(RAW_TABLES["loans"].asset_key) == later
    assert targeted(CORE_LOANS.asset_key) == later


def test_the_restated_tables_equal_a_full_rebuild(restatement: Restatement) -> None:
    for table in RESTATED_TABLES:
        assert table_rows(restatement.lake, table) == table_rows(restatement.rebuilt, table), (
            f"{table.identifier} differs from a full rebuild"
        )


def test_the_corrected_payments_changed_the_data(restatement: Restatement) -> None:
    # Equality with the rebuild is not the old state read twice: the correction reversed and fixed payments.
    assert table_rows(restatement.lake, CORE_PAYMENTS) != restatement.payments_before


def test_later_days_loans_carry_the_restated_merchant_category(restatement: Restatement) -> None:
    loans = restatement.lake.read_arrow(CORE_LOANS).to_pylist()
    moved = [
        r
        for r in loans
        if r["merchant_id"] in restatement.moved_merchants and r["business_date"] > restatement.merchant_day
    ]
    merchants = restatement.merchant_tables["merchants"].to_pylist()
    categories = {r["merchant_id"]: r["category"] for r in merchants}
    assert moved and all(r["merchant_category"] == categories[r["merchant_id"]] for r in moved)
