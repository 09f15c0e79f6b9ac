"""The raw layer's rules across rows: dates within the drop's window, volumes against recent history, and
quarantine following loan references within a drop and into later drops."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.sql import SparkSession
from test_lending_raw import failure_message, landing_bytes, replace_column, snapshots_of_run

from assets.lending.contract import DATASETS, DATE_FIELDS, EVENT_DATE_COLUMN, SCHEMAS, DateRule, business_days
from assets.lending.core import LOANS, MERCHANTS, REFERENCES_A_LOAN, REFUNDS, REPAYMENT_SCHEDULE
from assets.lending.landing import DropInfo, LandingZone, LandingZoneResource, read_drop, write_drop
from assets.lending.raw import ROWS_MATCH_MANIFEST, parse_dataset, raw_landing_drop
from assets.lending.raw_rules import (
    HELD_BACK_BY_QUARANTINE,
    QuarantinedParents,
    RecentVolumes,
    VolumeThreshold,
    apply_rules_across_rows,
    date_violations,
    expected_window,
)
from assets.lending.simulator import SimulationConfig, build_drop, simulate, write_tables
from assets.lending.tables import CORE_REFUNDS, CORE_REPAYMENT_SCHEDULE, RAW_QUARANTINE, RAW_TABLES
from assets.lending.world import World
from batch_platform.datasets import lake_dataset_asset
from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource

CONFIG = SimulationConfig(seed=7, start=date(2023, 1, 3), scale=0.05)
WEDNESDAY = date(2023, 3, 1)  # its drop's window is the day itself
MONDAY = date(2023, 3, 6)  # its drop carries the weekend


def landing_of(tmp_path: Path, first: date, last: date) -> LandingZone:
    zone = LandingZone.local(tmp_path / "landing")
    simulate(CONFIG, first, last, zone)
    return zone


def run_raw(
    lake: IcebergLakeResource,
    zone: LandingZone,
    first: date,
    last: date | None = None,
    assets: list[dg.AssetsDefinition] | None = None,
    spark: SparkResource | None = None,
) -> dg.ExecuteInProcessResult:
    """One run over [first, last] (a range run, as a backfill makes), raw only unless other assets are given."""
    resources: dict[str, object] = {"lake": lake, "landing": LandingZoneResource(uri=zone.root)}
    if spark is not None:
        resources["spark"] = spark
    last = last or first
    return dg.materialize(
        [raw_landing_drop, *(assets or [])],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )


def quarantined(lake: IcebergLakeResource, day: date, dataset: str) -> list[dict[str, object]]:
    rows = lake.read_arrow(RAW_QUARANTINE, [day.isoformat()]).to_pylist()
    return sorted((r for r in rows if r["dataset"] == dataset), key=lambda r: int(str(r["row_number"])))


def loaded(lake: IcebergLakeResource, day: date, dataset: str) -> pa.Table:
    return lake.read_arrow(RAW_TABLES[dataset], [day.isoformat()])


def checks(result: dg.ExecuteInProcessResult, name: str) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations() if e.check_name == name}


def with_value(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    return replace_column(table, column, pa.array(values, table.schema.field(column).type))


# -- the declaration ----------------------------------------------------------------------------------------------


def test_every_dated_field_of_the_contract_declares_its_rule_and_each_event_date_is_held_to_the_window() -> None:
    for dataset in DATASETS:
        dated = {f.name for f in SCHEMAS[dataset] if pa.types.is_date(f.type) or pa.types.is_timestamp(f.type)}
        assert set(DATE_FIELDS[dataset]) == dated, dataset
        assert DATE_FIELDS[dataset][EVENT_DATE_COLUMN[dataset]] is DateRule.IN_WINDOW


def test_the_window_is_the_simulators_drop_window_for_the_lender() -> None:
    assert expected_window(WEDNESDAY) == (WEDNESDAY, WEDNESDAY)
    assert expected_window(MONDAY) == (date(2023, 3, 4), MONDAY)
    assert expected_window(date(2023, 1, 3)) == (date(2023, 1, 3), date(2023, 1, 3))  # nothing before the lender


def test_the_simulators_drops_break_no_date_rule() -> None:
    world = World(CONFIG)
    for day in (date(2023, 1, 3), MONDAY, date(2023, 6, 30), date(2024, 6, 28)):
        for dataset, table in build_drop(CONFIG, day, world=world).items():
            assert date_violations(dataset, table, day) == {}, (day, dataset)


def test_a_monday_drop_may_carry_saturday_but_not_friday() -> None:
    payments = build_drop(CONFIG, MONDAY)["payments"].slice(0, 3)
    payments = with_value(payments, "payment_date", 0, date(2023, 3, 4))
    payments = with_value(payments, "payment_date", 1, date(2023, 3, 3))
    assert date_violations("payments", payments, MONDAY) == {
        1: ["payment_date 2023-03-03 is outside the drop's window [2023-03-04, 2023-03-06]"]
    }


def test_a_due_date_may_lie_ahead_but_not_past_the_longest_term() -> None:
    schedule = build_drop(CONFIG, WEDNESDAY)["repayment_schedule"].slice(0, 2)
    schedule = with_value(schedule, "due_date", 0, date(2025, 3, 1))  # 24 months ahead: the longest term
    schedule = with_value(schedule, "due_date", 1, date(2025, 3, 2))
    assert date_violations("repayment_schedule", schedule, WEDNESDAY) == {
        1: [
            "due_date 2025-03-02 is outside [2023-01-03, 2025-03-01] (a scheduled date: the lender's first day to "
            "24 months ahead)"
        ]
    }


# -- dates in a drop ----------------------------------------------------------------------------------------------


def test_events_outside_their_drops_window_are_quarantined_naming_field_date_and_window_and_the_rest_loads(
    lake: IcebergLakeResource, tmp_path: Path
) -> None:
    zone = landing_of(tmp_path, WEDNESDAY, WEDNESDAY)
    tables = read_drop(zone, WEDNESDAY)
    # A producer with bad habits: a payment six weeks late, one from before the lender existed, a loan from the future.
    payments = with_value(tables["payments"], "payment_date", 0, date(2023, 4, 12))
    payments = with_value(payments, "payment_date", 1, date(2022, 12, 1))
    loans = with_value(tables["loans"], "origination_date", 2, date(2023, 3, 11))
    future_loan = loans["loan_id"][2].as_py()
    schedule_of_future_loan = pc.sum(pc.equal(tables["repayment_schedule"]["loan_id"], future_loan)).as_py()
    write_tables(CONFIG, WEDNESDAY, zone, {**tables, "payments": payments, "loans": loans}, version=2)
    before = landing_bytes(Path(zone.root))

    result = run_raw(lake, zone, WEDNESDAY)

    assert result.success
    assert all(e.passed for e in checks(result, ROWS_MATCH_MANIFEST).values())
    window = "the drop's window [2023-03-01, 2023-03-01]"
    assert [(r["row_number"], r["reason"]) for r in quarantined(lake, WEDNESDAY, "payments")] == [
        (0, f"payment_date 2023-04-12 is outside {window}"),
        (1, f"payment_date 2022-12-01 is outside {window}"),
    ]
    assert [(r["row_number"], r["reason"]) for r in quarantined(lake, WEDNESDAY, "loans")] == [
        (2, f"origination_date 2023-03-11 is outside {window}")
    ]
    # Its schedule goes with it, naming the loan row; every other row of the drop loads.
    held = quarantined(lake, WEDNESDAY, "repayment_schedule")
    assert len(held) == schedule_of_future_loan > 0
    assert {r["reason"] for r in held} == {
        f"loan_id {future_loan} refers to loans row 2 of drop {WEDNESDAY} v2, which is quarantined"
    }
    for dataset, table in tables.items():
        quarantined_rows = {"payments": 2, "loans": 1, "repayment_schedule": schedule_of_future_loan}.get(dataset, 0)
        assert loaded(lake, WEDNESDAY, dataset).num_rows == table.num_rows - quarantined_rows, dataset
    assert future_loan not in loaded(lake, WEDNESDAY, "loans")["loan_id"].to_pylist()
    assert landing_bytes(Path(zone.root)) == before  # nothing in the landing is rewritten


# -- volumes --------------------------------------------------------------------------------------------------------


VOLUME_DAYS = list(business_days(date(2023, 3, 1), date(2023, 3, 8)))  # five days of history, then the day judged


def test_a_dataset_with_zero_rows_after_days_with_rows_fails_the_drop_with_the_counts_unless_the_producer_flags_it(
    lake: IcebergLakeResource, tmp_path: Path
) -> None:
    *history, day = VOLUME_DAYS
    zone = landing_of(tmp_path, history[0], day)
    assert run_raw(lake, zone, history[0], history[-1]).success
    counts = sorted(read_drop(zone, d)["payments"].num_rows for d in history)
    tables = read_drop(zone, day)
    write_tables(CONFIG, day, zone, {**tables, "payments": tables["payments"].slice(0, 0)}, version=2)

    failed = run_raw(lake, zone, day)

    message = failure_message(failed)
    median = counts[2]
    assert "nothing was written" in message
    assert (
        f"{day.isoformat()}/v2: payments: 0 rows, far outside its last 5 loaded business days "
        f"({counts[0]}-{counts[-1]} rows, median {median}; accepted {median / 10:g} to {median * 10:g})"
    ) in message
    assert '"expected_anomalies": {"payments": "<reason>"}' in message
    assert snapshots_of_run(lake, failed.run_id) == []
    # The same drop, with the producer's word that the day is genuinely empty: it loads.
    write_tables(
        CONFIG,
        day,
        zone,
        {**tables, "payments": tables["payments"].slice(0, 0)},
        version=3,
        expected_anomalies={"payments": "payment processor outage, no collections"},
    )
    flagged = run_raw(lake, zone, day)
    assert flagged.success
    assert loaded(lake, day, "payments").num_rows == 0
    assert loaded(lake, day, "loans").num_rows == tables["loans"].num_rows


def test_a_range_run_judges_each_day_against_the_days_before_it_in_the_same_run(
    lake: IcebergLakeResource, tmp_path: Path
) -> None:
    first, day = VOLUME_DAYS[0], VOLUME_DAYS[-1]
    zone = landing_of(tmp_path, first, day)
    tables = read_drop(zone, day)
    write_tables(CONFIG, day, zone, {**tables, "loans": tables["loans"].slice(0, 0)}, version=2)
    result = run_raw(lake, zone, first, day)
    assert "loans: 0 rows, far outside its last 5 loaded business days" in failure_message(result)
    assert snapshots_of_run(lake, result.run_id) == []  # no day of the run was written


def volumes(*counts: int) -> RecentVolumes:
    days = list(business_days(date(2023, 3, 1), date(2023, 3, 31)))
    return RecentVolumes({d: {"payments": n} for d, n in zip(days, counts, strict=False)})


def rows(payments: int) -> dict[str, int]:
    return {**dict.fromkeys(DATASETS, 0), "payments": payments}


def test_volume_rules_flag_a_tenfold_jump_or_drop_and_spare_new_and_sparse_datasets() -> None:
    judged_day = date(2023, 4, 3)
    steady = volumes(100, 120, 90, 110, 105)
    assert steady.judge(judged_day, rows(1_000), {}).problems == []
    assert steady.judge(judged_day, rows(11), {}).problems == []  # median 105: 10.5 to 1050 pass
    [jump] = steady.judge(judged_day, rows(1_101), {}).problems
    assert jump.startswith("payments: 1101 rows, far outside its last 5 loaded business days (90-120 rows, median 105")
    assert steady.judge(judged_day, rows(9), {}).problems != []
    # Four days of history: a new lender or dataset is not judged yet.
    assert volumes(100, 120, 90, 110).judge(judged_day, rows(0), {}).problems == []
    # A sparse dataset (median below 10 rows) has no usual volume to be far from.
    assert volumes(0, 0, 9, 0, 30).judge(judged_day, rows(0), {}).problems == []
    # Thresholds are per dataset.
    strict = {"payments": VolumeThreshold(max_ratio=2.0)}
    assert steady.judge(judged_day, rows(300), {}, strict).problems != []
    verdict = steady.judge(judged_day, rows(0), {"payments": "outage", "paymnts": "typo"})
    assert verdict.problems == ["expected_anomalies names 'paymnts', which is not a dataset of the contract"]
    assert verdict.accepted[0].endswith("expected by the producer: outage")


# -- references to quarantined rows ---------------------------------------------------------------------------------

ORIGINATED = date(2023, 1, 6)  # drop of loan 20230106000004, partially refunded on Monday 2023-01-09
REFUNDED = date(2023, 1, 9)
BAD_LOAN = 20230106000004


def corrupt_loan(zone: LandingZone) -> int:
    """Re-deliver ORIGINATED with BAD_LOAN's APR over the legal cap; returns its schedule rows in that drop."""
    tables = read_drop(zone, ORIGINATED)
    row = tables["loans"]["loan_id"].to_pylist().index(BAD_LOAN)
    write_tables(
        CONFIG, ORIGINATED, zone, {**tables, "loans": with_value(tables["loans"], "apr_bps", row, 9_999)}, version=2
    )
    return int(pc.sum(pc.equal(tables["repayment_schedule"]["loan_id"], BAD_LOAN)).as_py())


def test_a_quarantined_loan_takes_its_schedule_with_it_and_its_later_refund_is_held_back_alone(
    lake: IcebergLakeResource, tmp_path: Path
) -> None:
    zone = landing_of(tmp_path, ORIGINATED, REFUNDED)
    schedule_rows = corrupt_loan(zone)
    loan_row = read_drop(zone, ORIGINATED)["loans"]["loan_id"].to_pylist().index(BAD_LOAN)

    first = run_raw(lake, zone, ORIGINATED)
    assert first.success
    [loan] = quarantined(lake, ORIGINATED, "loans")
    assert loan["reason"] == "apr_bps 9999 is outside [0, 3600]"
    parent = f"loans row {loan_row} of drop {ORIGINATED} v2"
    held = quarantined(lake, ORIGINATED, "repayment_schedule")
    assert len(held) == schedule_rows > 0
    assert {r["reason"] for r in held} == {f"loan_id {BAD_LOAN} refers to {parent}, which is quarantined"}
    assert BAD_LOAN not in loaded(lake, ORIGINATED, "repayment_schedule")["loan_id"].to_pylist()
    warning = checks(first, HELD_BACK_BY_QUARANTINE)["repayment_schedule"]
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.metadata["held_back_rows"].value == schedule_rows

    # The next drop (a later run): the loan's refund and re-issued schedule are held back; other refunds load.
    later = run_raw(lake, zone, REFUNDED)
    assert later.success
    refunds = read_drop(zone, REFUNDED)["refunds"]
    assert refunds.num_rows >= 2
    assert [json.loads(str(r["record"]))["loan_id"] for r in quarantined(lake, REFUNDED, "refunds")] == [BAD_LOAN]
    assert {r["reason"] for r in quarantined(lake, REFUNDED, "refunds")} == {
        f"loan_id {BAD_LOAN} refers to {parent}, which is quarantined"
    }
    assert sorted(loaded(lake, REFUNDED, "refunds")["loan_id"].to_pylist()) == sorted(
        i for i in refunds["loan_id"].to_pylist() if i != BAD_LOAN
    )
    reissued = quarantined(lake, REFUNDED, "repayment_schedule")
    assert reissued and {json.loads(str(r["record"]))["schedule_version"] for r in reissued} == {2}
    assert checks(later, HELD_BACK_BY_QUARANTINE)["refunds"].metadata["held_back_rows"].value == 1
    assert all(e.passed for e in checks(later, ROWS_MATCH_MANIFEST).values())


def test_a_range_run_through_core_holds_back_the_refund_of_a_quarantined_loan_instead_of_failing(
    lake: IcebergLakeResource, tmp_path: Path, spark_resource: SparkResource, spark: SparkSession
) -> None:
    first = CONFIG.start  # core audits every refund against the loans since the lender's first day
    zone = landing_of(tmp_path, first, REFUNDED)
    corrupt_loan(zone)
    core = [lake_dataset_asset(d) for d in (MERCHANTS, REPAYMENT_SCHEDULE, LOANS, REFUNDS)]

    result = run_raw(lake, zone, first, REFUNDED, core, spark_resource)

    assert result.success
    assert checks(result, REFERENCES_A_LOAN)["refunds"].passed
    refunds = lake.read_arrow(CORE_REFUNDS, [REFUNDED.isoformat()])["loan_id"].to_pylist()
    assert BAD_LOAN not in refunds and len(refunds) == read_drop(zone, REFUNDED)["refunds"].num_rows - 1
    schedule = lake.read_arrow(CORE_REPAYMENT_SCHEDULE)["loan_id"].to_pylist()
    assert BAD_LOAN not in schedule and len(schedule) > 0  # no schedule without its loan in core


def test_a_malformed_expected_anomalies_declaration_is_refused_naming_it(tmp_path: Path) -> None:
    zone = LandingZone.local(tmp_path)
    manifest = json.loads(zone.read_bytes(write_drop(zone, WEDNESDAY, 1, WEDNESDAY, {}).manifest_key))
    assert DropInfo.from_manifest({**manifest, "expected_anomalies": {"payments": "outage"}}).expected_anomalies == (
        ("payments", "outage"),
    )
    with pytest.raises(TypeError, match="expected_anomalies must map dataset names to non-empty reasons"):
        DropInfo.from_manifest({**manifest, "expected_anomalies": {"payments": ""}})
    with pytest.raises(TypeError, match="expected_anomalies"):
        DropInfo.from_manifest({**manifest, "expected_anomalies": ["payments"]})


def test_a_duplicated_loan_holds_nothing_back_because_one_copy_loads() -> None:
    tables = build_drop(CONFIG, WEDNESDAY)
    loans = pa.concat_tables([tables["loans"], tables["loans"].slice(0, 1)])
    parsed = {d: parse_dataset(d, loans if d == "loans" else t) for d, t in tables.items()}
    held_back = apply_rules_across_rows(parsed, WEDNESDAY, 1, QuarantinedParents())
    assert parsed["loans"].quarantined == {tables["loans"].num_rows: [f"duplicate loan_id {loans['loan_id'][0]}"]}
    assert held_back == dict.fromkeys(DATASETS, 0)
    assert parsed["repayment_schedule"].rows.num_rows == tables["repayment_schedule"].num_rows
