"""The raw layer: landing drops into raw.* tables, verified as a whole first, bad rows quarantined with reasons."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.exceptions import NoSuchTableError

from assets.lending import raw
from assets.lending.contract import DATASETS
from assets.lending.landing import (
    MANIFEST_NAME,
    LandingZone,
    LandingZoneResource,
    drop_prefix,
    manifest_bytes,
    parquet_bytes,
    read_drop,
    read_manifest,
    sha256_hex,
)
from assets.lending.raw import (
    ROWS_MATCH_MANIFEST,
    cast_values,
    parse_dataset,
    raw_landing_drop,
)
from assets.lending.raw_rules import HELD_BACK_BY_QUARANTINE, REFERENCES
from assets.lending.simulator import SimulationConfig, build_drop, simulate, write_correction
from assets.lending.tables import LENDING_PARTITIONS, RAW_QUARANTINE, RAW_TABLES
from assets.lending.world import World
from batch_platform.lake import IcebergLakeResource, LakeTable
from batch_platform.lake.commit import SUMMARY_PARTITIONS, SUMMARY_RUN_ID

CONFIG = SimulationConfig(seed=7, start=date(2023, 1, 3), scale=0.05)
DAY = date(2023, 3, 1)  # the book is two months old: every dataset but merchants and charge-offs has rows
KEY = DAY.isoformat()
NEXT_DAY = date(2023, 3, 2)
NO_DROP_DAY = date(2023, 3, 3)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated v1 drops of two business days, generated once and copied by each test that needs a landing."""
    root = tmp_path_factory.mktemp("pristine") / "landing"
    simulate(CONFIG, DAY, NEXT_DAY, LandingZone.local(root))
    return root


@pytest.fixture
def landing_root(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    shutil.copytree(pristine, root)
    return root


def materialize(lake: IcebergLakeResource, landing_root: Path, key: str = KEY) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_landing_drop],
        partition_key=key,
        resources={"lake": lake, "landing": LandingZoneResource(uri=str(landing_root))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    failures = result.get_step_failure_events()
    assert len(failures) == 1
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.message


def landing_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def raw_partition(lake: IcebergLakeResource, table: LakeTable, key: str = KEY) -> pa.Table:
    return lake.read_arrow(table, [key])


def snapshots_of_run(lake: IcebergLakeResource, run_id: str) -> list[str]:
    """The raw tables (quarantine included) holding a snapshot committed by the run."""
    touched = []
    for table in [*RAW_TABLES.values(), RAW_QUARANTINE]:
        try:
            snapshots = lake.load(table).metadata.snapshots
        except NoSuchTableError:
            continue
        if any(s.summary is not None and s.summary.get(SUMMARY_RUN_ID) == run_id for s in snapshots):
            touched.append(table.identifier)
    return touched


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        e.asset_key.path[-1]: e.passed
        for e in result.get_asset_check_evaluations()
        if e.check_name == ROWS_MATCH_MANIFEST
    }


def redeliver(
    root: Path,
    dataset: str,
    change: Callable[[pa.Table], pa.Table] | None = None,
    *,
    file_bytes: Callable[[bytes], bytes] | None = None,
    manifest_follows_file: bool = True,
    manifest_rows: Callable[[int], int] | None = None,
) -> Path:
    """Copy the day's v1 drop to v2 with one dataset's file changed; returns the changed file.

    ``change`` rewrites the file's rows, ``file_bytes`` its bytes. The v2 manifest describes the new file when
    ``manifest_follows_file`` (so only the content is wrong), else keeps v1's entry (so the checksum catches it);
    ``manifest_rows`` then overrides the row count it announces.
    """
    zone = LandingZone.local(root)
    source, target = root / drop_prefix(DAY, 1), root / drop_prefix(DAY, 2)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    changed = target / f"{dataset}.parquet"
    data = changed.read_bytes()
    if change is not None:
        data = parquet_bytes(change(read_drop(zone, DAY, 1)[dataset]))
    if file_bytes is not None:
        data = file_bytes(data)
    changed.write_bytes(data)
    manifest = read_manifest(zone, DAY, 1)
    manifest.update(version=2, supersedes=1)
    for entry in manifest["files"]:
        if entry["dataset"] != dataset:
            continue
        if manifest_follows_file:
            entry.update(sha256=sha256_hex(data), bytes=len(data), rows=_rows_of(data))
        if manifest_rows is not None:
            entry["rows"] = manifest_rows(entry["rows"])
    (target / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))  # last: the drop is complete from here
    return changed


def _rows_of(data: bytes) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows)


def replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, pa.field(name, values.type), values)


def quarantine_of(lake: IcebergLakeResource, dataset: str) -> list[dict[str, object]]:
    rows = raw_partition(lake, RAW_QUARANTINE).to_pylist()
    return sorted((r for r in rows if r["dataset"] == dataset), key=lambda r: int(str(r["row_number"])))


def test_one_asset_declares_every_raw_table_with_a_blocking_row_count_check_and_a_held_back_warning() -> None:
    keys = {RAW_TABLES[d].asset_key for d in DATASETS} | {RAW_QUARANTINE.asset_key}
    assert set(raw_landing_drop.keys) == keys
    assert raw_landing_drop.op.pool == "lending-raw-landing"  # the domain's own pool
    assert not raw_landing_drop.can_subset
    assert raw_landing_drop.partitions_def == LENDING_PARTITIONS
    for key in keys:
        spec = raw_landing_drop.specs_by_key[key]
        assert spec.group_name == "raw" and spec.kinds == {"iceberg"}
        assert spec.metadata["iceberg/table"] == ".".join(key.path)
    checks = {(c.asset_key, c.name): c for c in raw_landing_drop.check_specs}
    counts = {(RAW_TABLES[d].asset_key, ROWS_MATCH_MANIFEST) for d in DATASETS}
    held_back = {(RAW_TABLES[d].asset_key, HELD_BACK_BY_QUARANTINE) for d in REFERENCES}
    assert set(checks) == counts | held_back
    assert all(checks[c].blocking for c in counts)
    assert not any(checks[c].blocking for c in held_back)  # a warning: other loans' rows still flow


def test_the_landing_resource_defaults_to_the_data_dir_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = LandingZoneResource()
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(tmp_path))
    assert resource.location() == str(tmp_path / "landing")
    assert resource.zone().root == str(tmp_path / "landing")


# -- clean drops ------------------------------------------------------------------------------------------------


def test_a_clean_drop_loads_every_dataset_with_the_manifests_row_counts(
    lake: IcebergLakeResource, landing_root: Path
) -> None:
    manifest = {f["dataset"]: f["rows"] for f in read_manifest(LandingZone.local(landing_root), DAY, 1)["files"]}
    result = materialize(lake, landing_root)
    assert result.success
    assert check_results(result) == dict.fromkeys(DATASETS, True)
    for dataset in DATASETS:
        rows = raw_partition(lake, RAW_TABLES[dataset])
        assert rows.num_rows == manifest[dataset], dataset
        assert set(rows["business_date"].to_pylist()) <= {DAY}
        assert set(rows["drop_version"].to_pylist()) <= {1}
    assert raw_partition(lake, RAW_QUARANTINE).num_rows == 0
    # The rows are the landing's rows, value for value.
    landed = read_drop(LandingZone.local(landing_root), DAY)["payments"].sort_by("payment_id")
    loaded = raw_partition(lake, RAW_TABLES["payments"]).sort_by("payment_id")
    for column in landed.column_names:
        assert loaded[column].to_pylist() == landed[column].to_pylist(), column


def test_rematerializing_a_partition_replaces_it_with_the_same_rows(
    lake: IcebergLakeResource, landing_root: Path
) -> None:
    assert materialize(lake, landing_root).success
    first = {d: raw_partition(lake, RAW_TABLES[d]).num_rows for d in DATASETS}
    again = materialize(lake, landing_root)
    assert again.success
    assert {d: raw_partition(lake, RAW_TABLES[d]).num_rows for d in DATASETS} == first
    assert check_results(again) == dict.fromkeys(DATASETS, True)


def test_other_partitions_are_left_alone(lake: IcebergLakeResource, landing_root: Path) -> None:
    assert materialize(lake, landing_root, KEY).success
    day_one = raw_partition(lake, RAW_TABLES["payments"]).num_rows
    assert materialize(lake, landing_root, NEXT_DAY.isoformat()).success
    assert raw_partition(lake, RAW_TABLES["payments"]).num_rows == day_one
    assert raw_partition(lake, RAW_TABLES["payments"], NEXT_DAY.isoformat()).num_rows > 0


def materialize_range(
    lake: IcebergLakeResource, landing_root: Path, first: date, last: date
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_landing_drop],
        resources={"lake": lake, "landing": LandingZoneResource(uri=str(landing_root))},
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)},
        raise_on_error=False,
    )


def commits_of(lake: IcebergLakeResource, table: LakeTable) -> list[str]:
    """The partitions each commit of the table wrote, oldest first."""
    return [s.summary[SUMMARY_PARTITIONS] for s in lake.load(table).metadata.snapshots if s.summary is not None]


def test_a_run_longer_than_one_write_loads_its_drops_a_write_at_a_time_and_reports_them_as_one(
    lake: IcebergLakeResource, landing_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raw, "DAYS_PER_WRITE", 1)
    result = materialize_range(lake, landing_root, DAY, NEXT_DAY)

    assert result.success
    assert check_results(result) == dict.fromkeys(DATASETS, True)
    for table in [RAW_TABLES[d] for d in ("applications", "loans", "payments")]:  # rows on both days
        assert commits_of(lake, table) == [str(DAY), str(NEXT_DAY)], table.identifier
    payments = result.asset_materializations_for_node(raw_landing_drop.op.name)
    payments = [m for m in payments if m.asset_key == RAW_TABLES["payments"].asset_key]
    assert sorted(str(m.partition) for m in payments) == [str(DAY), str(NEXT_DAY)]
    metadata = payments[0].metadata
    both_days = lake.read_arrow(RAW_TABLES["payments"], [str(DAY), str(NEXT_DAY)]).num_rows
    assert metadata["dagster/row_count"].value == both_days > 0


def test_a_bad_drop_in_a_later_write_fails_the_run_naming_the_days_its_earlier_writes_loaded(
    lake: IcebergLakeResource, landing_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raw, "DAYS_PER_WRITE", 2)
    result = materialize_range(lake, landing_root, DAY, NO_DROP_DAY)

    message = failure_message(result)
    assert f"No complete drop exists for business date {NO_DROP_DAY}" in message
    assert f"This run had already loaded {DAY}..{NEXT_DAY}; re-running it replaces them." in message
    assert commits_of(lake, RAW_TABLES["payments"]) == [f"{DAY},{NEXT_DAY}"]
    assert raw_partition(lake, RAW_TABLES["payments"], str(NO_DROP_DAY)).num_rows == 0


def test_a_correction_drop_replaces_the_partition_with_the_new_versions_rows(
    lake: IcebergLakeResource, landing_root: Path
) -> None:
    zone = LandingZone.local(landing_root)
    assert materialize(lake, landing_root).success
    write_correction(CONFIG, DAY, zone)
    result = materialize(lake, landing_root)
    assert result.success
    v2 = read_drop(zone, DAY, 2)
    for dataset in DATASETS:
        rows = raw_partition(lake, RAW_TABLES[dataset])
        assert rows.num_rows == v2[dataset].num_rows, dataset
        assert set(rows["drop_version"].to_pylist()) <= {2}
    loaded = raw_partition(lake, RAW_TABLES["payments"]).sort_by("payment_id")
    assert loaded["amount_cents"].to_pylist() == v2["payments"].sort_by("payment_id")["amount_cents"].to_pylist()
    assert loaded["reversed"].to_pylist() == v2["payments"].sort_by("payment_id")["reversed"].to_pylist()


def test_a_drop_that_does_not_add_up_fails_its_check_and_blocks_downstream_assets(
    lake: IcebergLakeResource, landing_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug that loses a payment row without quarantining it: the row-count check must catch it.
    parse = raw.parse_dataset

    def lossy(dataset: str, landed: pa.Table) -> raw.ParsedDataset:
        parsed = parse(dataset, landed)
        if dataset == "payments":
            parsed.rows = parsed.rows.slice(1)
        return parsed

    monkeypatch.setattr(raw, "parse_dataset", lossy)
    ran: list[str] = []

    @dg.asset(
        key=["core", "downstream_probe"],
        deps=[RAW_TABLES["payments"].asset_key],
        partitions_def=LENDING_PARTITIONS,
        backfill_policy=raw_landing_drop.backfill_policy,
    )
    def downstream_probe() -> None:
        ran.append("payments")

    result = dg.materialize(
        [raw_landing_drop, downstream_probe],
        partition_key=KEY,
        resources={"lake": lake, "landing": LandingZoneResource(uri=str(landing_root))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert check_results(result) == {**dict.fromkeys(DATASETS, True), "payments": False}
    assert RAW_TABLES["payments"].asset_key in {e.asset_key for e in result.get_asset_materialization_events()}
    assert ran == []  # downstream of the failed blocking check: never ran


def test_a_business_day_without_a_drop_fails_the_run(lake: IcebergLakeResource, landing_root: Path) -> None:
    result = materialize(lake, landing_root, NO_DROP_DAY.isoformat())
    message = failure_message(result)
    assert f"No complete drop exists for business date {NO_DROP_DAY}" in message
    assert str(landing_root) in message
    assert snapshots_of_run(lake, result.run_id) == []


def test_an_incomplete_drop_without_manifest_is_not_loaded(lake: IcebergLakeResource, landing_root: Path) -> None:
    # A producer still writing v2 (no manifest yet): the complete v1 is what loads.
    shutil.copytree(landing_root / drop_prefix(DAY, 1), landing_root / drop_prefix(DAY, 2))
    (landing_root / drop_prefix(DAY, 2) / MANIFEST_NAME).unlink()
    assert materialize(lake, landing_root).success
    assert set(raw_partition(lake, RAW_TABLES["loans"])["drop_version"].to_pylist()) == {1}


# -- bad input that fails the run: nothing reaches the lake ------------------------------------------------------


def assert_failed_without_writing(
    lake: IcebergLakeResource, landing_root: Path, before: dict[str, bytes], v1_rows: dict[str, int]
) -> str:
    """Materialize the bad v2; returns the failure message after checking the lake still holds exactly v1."""
    result = materialize(lake, landing_root)
    message = failure_message(result)
    assert "nothing was written" in message
    assert snapshots_of_run(lake, result.run_id) == []
    assert result.get_asset_materialization_events() == []
    for dataset, rows in v1_rows.items():
        table = raw_partition(lake, RAW_TABLES[dataset])
        assert table.num_rows == rows and set(table["drop_version"].to_pylist()) <= {1}, dataset
    assert landing_bytes(landing_root) == before  # the landing is never modified by a load
    return message


@pytest.fixture
def loaded_v1(lake: IcebergLakeResource, landing_root: Path) -> dict[str, int]:
    """The day's v1 loaded into the lake, before a bad v2 arrives: its row counts per dataset."""
    assert materialize(lake, landing_root).success
    return {d: raw_partition(lake, RAW_TABLES[d]).num_rows for d in DATASETS}


def test_a_landing_file_missing_a_column_fails_naming_dataset_and_column(
    lake: IcebergLakeResource, landing_root: Path, loaded_v1: dict[str, int]
) -> None:
    redeliver(landing_root, "payments", lambda t: t.drop_columns(["amount_cents"]))
    message = assert_failed_without_writing(lake, landing_root, landing_bytes(landing_root), loaded_v1)
    assert "payments: column 'amount_cents' is missing" in message


def test_a_truncated_file_fails_naming_the_file_and_the_size_and_checksum_mismatch(
    lake: IcebergLakeResource, landing_root: Path, loaded_v1: dict[str, int]
) -> None:
    original = (landing_root / drop_prefix(DAY, 1) / "payments.parquet").stat().st_size
    changed = redeliver(landing_root, "payments", file_bytes=lambda data: data[:-100], manifest_follows_file=False)
    message = assert_failed_without_writing(lake, landing_root, landing_bytes(landing_root), loaded_v1)
    where = f"payments ({drop_prefix(DAY, 2)}/payments.parquet)"
    assert f"{where}: size {original - 100} bytes, the manifest says {original}" in message
    assert f"sha256 {sha256_hex(changed.read_bytes())}, the manifest says" in message
    assert "truncated or corrupted" in message


def test_a_manifest_row_count_that_disagrees_with_the_file_fails_naming_both_counts(
    lake: IcebergLakeResource, landing_root: Path, loaded_v1: dict[str, int]
) -> None:
    rows = loaded_v1["loans"]
    redeliver(landing_root, "loans", manifest_rows=lambda n: n + 5)
    message = assert_failed_without_writing(lake, landing_root, landing_bytes(landing_root), loaded_v1)
    assert f"loans: the manifest says {rows + 5} rows, the file has {rows}" in message


def test_a_manifest_without_a_dataset_fails(
    lake: IcebergLakeResource, landing_root: Path, loaded_v1: dict[str, int]
) -> None:
    redeliver(landing_root, "refunds")
    manifest_path = landing_root / drop_prefix(DAY, 2) / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_bytes())
    manifest["files"] = [f for f in manifest["files"] if f["dataset"] != "refunds"]
    manifest_path.write_bytes(manifest_bytes(manifest))
    message = assert_failed_without_writing(lake, landing_root, landing_bytes(landing_root), loaded_v1)
    assert "refunds: the manifest lists no file for it" in message


# -- bad rows: quarantined with a reason, the rest loads ---------------------------------------------------------


def assert_quarantined(
    lake: IcebergLakeResource, landing_root: Path, dataset: str, before: dict[str, bytes]
) -> tuple[dg.ExecuteInProcessResult, list[dict[str, object]]]:
    """Materialize the v2 with bad rows: the run succeeds, its checks pass, the landing is untouched."""
    result = materialize(lake, landing_root)
    assert result.success
    assert check_results(result) == dict.fromkeys(DATASETS, True)
    assert landing_bytes(landing_root) == before
    manifest_rows = {f["dataset"]: f["rows"] for f in read_manifest(LandingZone.local(landing_root), DAY, 2)["files"]}
    quarantined = quarantine_of(lake, dataset)
    loaded = raw_partition(lake, RAW_TABLES[dataset])
    assert loaded.num_rows + len(quarantined) == manifest_rows[dataset]
    assert set(loaded["drop_version"].to_pylist()) <= {2}
    assert {r["drop_version"] for r in quarantined} == {2}
    return result, quarantined


def test_values_of_the_wrong_type_are_parsed_and_unparsable_rows_quarantined(
    lake: IcebergLakeResource, landing_root: Path
) -> None:
    bad = {1: "n/a", 4: "12.50"}  # row -> value that is not an integer

    def as_strings(table: pa.Table) -> pa.Table:
        values = [str(v) for v in table["amount_cents"].to_pylist()]
        for row, value in bad.items():
            values[row] = value
        return replace_column(table, "amount_cents", pa.array(values, pa.string()))

    changed = redeliver(landing_root, "payments", as_strings)
    landed = read_drop(LandingZone.local(landing_root), DAY, 1)["payments"]
    _, quarantined = assert_quarantined(lake, landing_root, "payments", landing_bytes(landing_root))
    assert changed.exists()
    assert [(r["row_number"], r["reason"]) for r in quarantined] == [
        (row, f"amount_cents: cannot parse {value!r} as int64") for row, value in sorted(bad.items())
    ]
    bad_ids = [landed["payment_id"][row].as_py() for row in sorted(bad)]
    assert [json.loads(str(r["record"]))["payment_id"] for r in quarantined] == bad_ids
    assert [json.loads(str(r["record"]))["amount_cents"] for r in quarantined] == [bad[r] for r in sorted(bad)]
    loaded = raw_partition(lake, RAW_TABLES["payments"])
    assert not set(bad_ids) & set(loaded["payment_id"].to_pylist())
    # The parsable strings became the integers they spell.
    expected = landed.filter(pc.invert(pc.is_in(landed["payment_id"], pa.array(bad_ids))))
    assert sorted(loaded["amount_cents"].to_pylist()) == sorted(expected["amount_cents"].to_pylist())


def test_negative_amounts_are_quarantined_with_the_reason(lake: IcebergLakeResource, landing_root: Path) -> None:
    landed = read_drop(LandingZone.local(landing_root), DAY, 1)["payments"]
    paid = [i for i, v in enumerate(landed["amount_cents"].to_pylist()) if v > 0][:2]

    def negate(table: pa.Table) -> pa.Table:
        values = table["amount_cents"].to_pylist()
        for row in paid:
            values[row] = -values[row]
        return replace_column(table, "amount_cents", pa.array(values, pa.int64()))

    redeliver(landing_root, "payments", negate)
    _, quarantined = assert_quarantined(lake, landing_root, "payments", landing_bytes(landing_root))
    assert [r["row_number"] for r in quarantined] == paid
    for record, row in zip(quarantined, paid, strict=True):
        amount = -landed["amount_cents"][row].as_py()
        assert str(record["reason"]).startswith(f"amount_cents {amount} is below 0; ")
    loaded_ids = set(raw_partition(lake, RAW_TABLES["payments"])["payment_id"].to_pylist())
    assert not {landed["payment_id"][row].as_py() for row in paid} & loaded_ids


def test_duplicate_payment_ids_are_quarantined_and_one_copy_loads(
    lake: IcebergLakeResource, landing_root: Path
) -> None:
    landed = read_drop(LandingZone.local(landing_root), DAY, 1)["payments"]
    redeliver(landing_root, "payments", lambda t: pa.concat_tables([t, t.slice(0, 2)]))
    _, quarantined = assert_quarantined(lake, landing_root, "payments", landing_bytes(landing_root))
    ids = landed["payment_id"].to_pylist()
    assert [(r["row_number"], r["reason"]) for r in quarantined] == [
        (len(ids), f"duplicate payment_id {ids[0]}"),
        (len(ids) + 1, f"duplicate payment_id {ids[1]}"),
    ]
    loaded = raw_partition(lake, RAW_TABLES["payments"])["payment_id"].to_pylist()
    assert sorted(loaded) == sorted(ids)  # each id exactly once


def test_a_fixed_redelivery_clears_the_quarantine_of_the_version_before(
    lake: IcebergLakeResource, landing_root: Path
) -> None:
    redeliver(landing_root, "payments", lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    assert materialize(lake, landing_root).success
    assert len(quarantine_of(lake, "payments")) == 1
    write_correction(CONFIG, DAY, LandingZone.local(landing_root), version=3)
    assert materialize(lake, landing_root).success
    assert raw_partition(lake, RAW_QUARANTINE).num_rows == 0
    assert set(raw_partition(lake, RAW_TABLES["payments"])["drop_version"].to_pylist()) == {3}


# -- the rules themselves -------------------------------------------------------------------------------------------


def test_the_simulators_drops_break_no_landing_rule() -> None:
    # Days from the first one to a year and a half in, with charge-offs (June 30) and recoveries: all clean.
    world = World(CONFIG)
    for day in (date(2023, 1, 3), date(2023, 6, 30), date(2023, 9, 29), date(2024, 6, 28)):
        for dataset, table in build_drop(CONFIG, day, world=world).items():
            parsed = parse_dataset(dataset, table)
            assert parsed.quarantined == {}, (day, dataset, parsed.quarantined)
            assert parsed.rows.num_rows == table.num_rows


def test_domain_rules_quarantine_each_bad_row_with_every_reason() -> None:
    loans = build_drop(CONFIG, DAY)["loans"]
    bad = {
        0: ("term_months", 7, "term_months 7 is not one of 3, 6, 12, 24"),
        1: ("apr_bps", 3601, "apr_bps 3601 is outside [0, 3600]"),
        2: ("risk_band", "F", "risk_band 'F' is not one of A, B, C, D, E"),
        3: ("principal_cents", 0, "principal_cents 0 is below 1"),
    }
    for row, (column, value, _) in bad.items():
        values = loans[column].to_pylist()
        values[row] = value
        loans = replace_column(loans, column, pa.array(values, loans.schema.field(column).type))
    values = loans["installment_cents"].to_pylist()
    values[3] = None  # row 3 breaks two rules: both reasons are kept
    loans = replace_column(loans, "installment_cents", pa.array(values, pa.int64()))
    parsed = parse_dataset("loans", loans)
    assert parsed.quarantined == {
        0: [bad[0][2]],
        1: [bad[1][2]],
        2: [bad[2][2]],
        3: ["installment_cents is required but null", bad[3][2]],
    }
    assert parsed.rows.num_rows == loans.num_rows - 4


def test_duplicate_schedule_rows_are_named_by_their_compound_key() -> None:
    schedule = build_drop(CONFIG, DAY)["repayment_schedule"]
    parsed = parse_dataset("repayment_schedule", pa.concat_tables([schedule, schedule.slice(5, 1)]))
    first = schedule.slice(5, 1).to_pylist()[0]
    key = (first["loan_id"], first["schedule_version"], first["installment_number"])
    assert parsed.quarantined == {
        schedule.num_rows: [f"duplicate (loan_id, schedule_version, installment_number) ({key[0]}, {key[1]}, {key[2]})"]
    }


def test_cast_values_isolates_the_values_that_do_not_parse() -> None:
    values = [str(i) for i in range(1000)]
    values[17], values[900] = "x", "9" * 30  # not a number; a number too large for int64
    cast, failed = cast_values(pa.array(values), pa.int64())
    assert failed == [17, 900]
    assert cast.null_count == 2 and cast[18].as_py() == 18
    whole, failed = cast_values(pa.array([b"a", None, b"b"], pa.binary()), pa.date32())
    assert failed == [0, 2] and whole.null_count == 3  # no cast exists: every non-null value fails
