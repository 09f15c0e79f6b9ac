"""The lending simulator: deterministic, self-consistent landing drops whose behaviour follows risk."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from assets.lending.contract import RISK_BANDS
from assets.lending.landing import MANIFEST_NAME, DropInfo, parquet_bytes, write_drop
from assets.lending.schedule import amortize, epoch_day
from assets.lending.simulator import (
    DATASETS,
    DEFAULT_WORLD_START,
    SCHEMAS,
    LandingZone,
    SimulationConfig,
    build_drop,
    complete_versions,
    main,
    read_drop,
    read_manifest,
    simulate,
    write_correction,
)
from assets.lending.world import World

# A small lender, from its first day until its first charge-offs and recoveries have landed (about 200 drops).
SMALL = SimulationConfig(seed=3, start=DEFAULT_WORLD_START, scale=0.05)
BOOK_END = date(2023, 9, 29)
MONTH_END = date(2023, 6, 30)  # a business day with charge-offs


@dataclass
class Book:
    landing: LandingZone
    root: Path
    drops: list[DropInfo]
    _loaded: list[dict[str, pa.Table]] = field(default_factory=list)

    def drop_tables(self) -> list[dict[str, pa.Table]]:
        """Each drop's tables (read and checked against its manifest once), in business-date order."""
        if not self._loaded:
            self._loaded.extend(read_drop(self.landing, d.business_date) for d in self.drops)
        return self._loaded

    def table(self, dataset: str) -> pa.Table:
        return pa.concat_tables([tables[dataset] for tables in self.drop_tables()])


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Book:
    root = tmp_path_factory.mktemp("landing")
    landing = LandingZone.local(root)
    return Book(landing, root, simulate(SMALL, SMALL.start, BOOK_END, landing))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _column(table: pa.Table, name: str) -> np.ndarray:
    column = table[name]
    if pa.types.is_date32(column.type):
        column = column.cast(pa.int32())
    return column.to_numpy(zero_copy_only=False)


def test_same_seed_writes_byte_identical_drops_and_manifests(tmp_path: Path) -> None:
    first, last = date(2023, 6, 26), date(2023, 7, 7)
    simulate(SMALL, first, last, LandingZone.local(tmp_path / "a"))
    simulate(SMALL, first, last, LandingZone.local(tmp_path / "b"))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 9 * (len(DATASETS) + 1)  # nine drops: 2023-07-04 is a bank holiday
    assert a == b


def test_a_day_is_the_same_generated_alone_or_within_a_long_run(book: Book, tmp_path: Path) -> None:
    # The book was generated from the lender's first day in one pass; this day is generated on its own.
    alone = LandingZone.local(tmp_path)
    simulate(SMALL, MONTH_END, MONTH_END, alone)
    prefix = f"pos-lending-v1/business_date={MONTH_END.isoformat()}/v1"
    assert _files(tmp_path / prefix) == _files(book.root / prefix)


def test_cohorts_shared_among_processes_give_the_same_tables() -> None:
    world = World(SMALL)
    alone, shared = world.events(date(2023, 6, 1), MONTH_END), world.events(date(2023, 6, 1), MONTH_END, workers=2)
    assert all(alone[name].equals(shared[name]) for name in DATASETS)


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    other = SimulationConfig(seed=SMALL.seed + 1, start=SMALL.start, scale=SMALL.scale)
    ours, theirs = build_drop(SMALL, MONTH_END), build_drop(other, MONTH_END)
    for dataset in ("customers", "applications", "loans", "payments"):
        assert not ours[dataset].equals(theirs[dataset]), dataset


def test_manifest_lists_every_file_with_its_row_count_and_checksum(book: Book) -> None:
    assert [d.business_date for d in book.drops] == sorted({d.business_date for d in book.drops})
    for drop in book.drops:
        folder = book.root / drop.prefix
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [MANIFEST_NAME] + [f["path"] for f in manifest["files"]]
        )
        assert [f["dataset"] for f in manifest["files"]] == list(DATASETS)
        for entry in manifest["files"]:
            data = (folder / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["bytes"]
            assert pq.read_metadata(pa.BufferReader(data)).num_rows == entry["rows"]


def test_manifest_is_written_after_every_data_file(tmp_path: Path) -> None:
    class RecordingLandingZone(LandingZone):
        written: list[str] = []

        def write_bytes(self, key: str, data: bytes) -> None:
            self.written.append(key)
            super().write_bytes(key, data)

    landing = RecordingLandingZone(pafs.LocalFileSystem(), str(tmp_path))
    drops = simulate(SMALL, date(2023, 3, 1), date(2023, 3, 3), landing)
    for drop in drops:
        keys = [k for k in landing.written if k.startswith(drop.prefix + "/")]
        assert keys[-1] == drop.manifest_key
        assert len(keys) == len(DATASETS) + 1


def test_parquet_bytes_depend_only_on_the_table(book: Book) -> None:
    table = book.table("payments").slice(0, 5_000)
    rebuilt = pa.Table.from_pylist(table.to_pylist(), schema=table.schema)
    data = parquet_bytes(table)
    assert data == parquet_bytes(rebuilt)
    metadata = pq.read_metadata(pa.BufferReader(data))
    # No writer timestamps: the footer holds the Arrow schema and the library version, nothing about "now".
    assert set(metadata.metadata) == {b"ARROW:schema"}
    assert metadata.created_by.startswith("parquet-cpp-arrow version")


def test_money_is_integer_cents_never_floating_point(book: Book) -> None:
    for dataset, schema in SCHEMAS.items():
        for column in schema:
            assert not pa.types.is_floating(column.type), (dataset, column.name)
            if column.name.endswith("_cents"):
                assert column.type == pa.int64(), (dataset, column.name)
        assert read_drop(book.landing, MONTH_END)[dataset].schema == schema


def test_every_row_references_records_that_already_landed(book: Book) -> None:
    known: dict[str, set[int]] = {"loan": set(), "customer": set(), "merchant": set(), "application": set()}
    for drop, tables in zip(book.drops, book.drop_tables(), strict=True):
        known["customer"].update(_column(tables["customers"], "customer_id").tolist())
        known["merchant"].update(_column(tables["merchants"], "merchant_id").tolist())
        known["application"].update(_column(tables["applications"], "application_id").tolist())
        known["loan"].update(_column(tables["loans"], "loan_id").tolist())
        assert set(_column(tables["applications"], "customer_id").tolist()) <= known["customer"]
        assert set(_column(tables["applications"], "merchant_id").tolist()) <= known["merchant"]
        assert set(_column(tables["loans"], "application_id").tolist()) <= known["application"]
        for dataset in ("repayment_schedule", "payments", "refunds", "charge_offs", "recoveries"):
            assert set(_column(tables[dataset], "loan_id").tolist()) <= known["loan"], (drop.business_date, dataset)
    for dataset in ("payments", "refunds", "charge_offs", "recoveries"):
        assert book.table(dataset).num_rows > 0, dataset


def test_schedules_amortize_to_the_principal_and_agree_with_apr_and_term(book: Book) -> None:
    loans = book.table("loans")
    schedule = book.table("repayment_schedule")
    schedule = schedule.sort_by(
        [("loan_id", "ascending"), ("schedule_version", "ascending"), ("installment_number", "ascending")]
    )
    loan_id, version = _column(schedule, "loan_id"), _column(schedule, "schedule_version")
    number, installment = _column(schedule, "installment_number"), _column(schedule, "installment_cents")
    principal_part, interest = _column(schedule, "principal_cents"), _column(schedule, "interest_cents")
    balance_after = _column(schedule, "balance_after_cents")
    assert (installment == principal_part + interest).all()

    by_loan = {lid: i for i, lid in enumerate(_column(loans, "loan_id").tolist())}
    row = np.array([by_loan[lid] for lid in loan_id.tolist()])
    principal, apr, term = (_column(loans, c)[row] for c in ("principal_cents", "apr_bps", "term_months"))
    regular = _column(loans, "installment_cents")[row]
    refunded = dict(
        zip(
            _column(book.table("refunds"), "loan_id").tolist(),
            _column(book.table("refunds"), "amount_cents").tolist(),
            strict=True,
        )
    )
    financed = np.where(
        version == 1, principal, principal - np.array([refunded.get(lid, 0) for lid in loan_id.tolist()])
    )

    # Each (loan, version) has installments 1..term whose principal parts sum to what was financed, to the cent.
    starts = np.flatnonzero(np.r_[True, (loan_id[1:] != loan_id[:-1]) | (version[1:] != version[:-1])])
    assert (number[starts] == 1).all()
    assert (np.diff(np.r_[starts, len(loan_id)]) == term[starts]).all()
    assert (np.add.reduceat(principal_part, starts) == financed[starts]).all()
    ends = np.r_[starts[1:], len(loan_id)] - 1
    assert (balance_after[ends] == 0).all()

    # Interest is the monthly rate (APR / 12) on the balance before the installment, rounded half up.
    balance_before = balance_after + principal_part
    expected_interest = np.floor(balance_before * (apr / 120_000) + 0.5).astype(np.int64)
    assert (interest == expected_interest).all()
    assert (interest[apr == 0] == 0).all()

    # The regular installment is the annuity payment; every installment but the last equals it.
    first_v1 = starts[version[starts] == 1]
    for i in first_v1:
        rate = Fraction(int(apr[i]), 120_000)
        exact = (
            Fraction(int(principal[i]), int(term[i]))
            if rate == 0
            else principal[i] * rate / (1 - (1 + rate) ** -int(term[i]))
        )
        assert abs(regular[i] - exact) <= Fraction(1, 2)
    not_last = np.ones(len(loan_id), dtype=bool)
    not_last[ends] = False
    v1 = version == 1
    assert (installment[not_last & v1] == regular[not_last & v1]).all()
    # The last installment absorbs the rounding: at most a cent per installment away from the regular one.
    assert (np.abs(installment[ends] - regular[ends]) <= term[ends])[version[ends] == 1].all()
    assert (version == 2).any(), "a partial refund re-issues a schedule"


def test_a_zero_apr_schedule_splits_the_principal_with_the_last_installment_absorbing_rounding() -> None:
    schedule = amortize(np.array([10_000, 100_000]), np.array([0, 1200]), np.array([3, 12]))
    assert schedule.installment[0, :3].tolist() == [3333, 3333, 3334]
    assert schedule.interest[0].sum() == 0
    # The textbook case: $1,000 at 12% APR over 12 months is $88.85 a month, $66.19 of interest in all.
    assert schedule.installment[1, :11].tolist() == [8885] * 11
    assert schedule.installment[1, 11] == 8884
    assert schedule.interest[1].sum() == 6619 and schedule.principal[1].sum() == 100_000


def test_charge_off_happens_only_after_120_days_past_due(book: Book) -> None:
    charge_offs = book.table("charge_offs")
    assert charge_offs.num_rows > 0
    payments = book.table("payments")
    schedule = book.table("repayment_schedule")
    paid_loan, paid_k = _column(payments, "loan_id"), _column(payments, "installment_number")
    paid_on, paid_amount = _column(payments, "payment_date"), _column(payments, "amount_cents")
    due_loan, due_k = _column(schedule, "loan_id"), _column(schedule, "installment_number")
    due_on, due_amount = _column(schedule, "due_date"), _column(schedule, "installment_cents")
    effective, version = _column(schedule, "effective_date"), _column(schedule, "schedule_version")
    for loan_id, charged_on, dpd, oldest in zip(
        *(
            _column(charge_offs, c).tolist()
            for c in ("loan_id", "charge_off_date", "days_past_due", "oldest_unpaid_installment")
        ),
        strict=True,
    ):
        assert dpd >= 120
        # Recompute days past due from what landed: the oldest installment due and not fully paid by then.
        mine = (due_loan == loan_id) & (effective <= charged_on)
        in_force = mine & (version == version[mine].max())
        unpaid = []
        for k, when, amount in zip(due_k[in_force], due_on[in_force], due_amount[in_force], strict=True):
            paid = paid_amount[(paid_loan == loan_id) & (paid_k == k) & (paid_on <= charged_on)].sum()
            if when <= charged_on and paid < amount:
                unpaid.append((k, when))
        k, when = min(unpaid)
        assert k == oldest and charged_on - when == dpd
        assert not ((paid_loan == loan_id) & (paid_on > charged_on)).any(), "no payment after the charge-off"
    # Loans that are not charged off never get near 120 days past due: late payments come within 89 days.
    assert _column(payments, "days_late").max() <= 89


def test_delinquency_and_charge_offs_rise_with_risk_band() -> None:
    config = SimulationConfig(seed=5, start=DEFAULT_WORLD_START, scale=0.25)
    cohort_end = date(2023, 6, 30)
    events = World(config).events(config.start, date(2024, 6, 28))
    loans = events["loans"]
    band_of = dict(zip(_column(loans, "loan_id").tolist(), _column(loans, "risk_band").tolist(), strict=True))
    early = set(_column(loans.filter(pc.field("origination_date") <= cohort_end), "loan_id").tolist())

    payments = events["payments"]
    attempt = _column(payments, "payment_id") % 10 == 0  # the autopay attempt on each due date
    bands = np.array([band_of[lid] for lid in _column(payments, "loan_id").tolist()])
    missed = _column(payments, "payment_status") == "missed"
    charged_early = [lid for lid in _column(events["charge_offs"], "loan_id").tolist() if lid in early]

    missed_rate, charge_off_rate = [], []
    for band in RISK_BANDS:
        mine = attempt & (bands == band)
        missed_rate.append(missed[mine].mean())
        originated = sum(1 for lid in early if band_of[lid] == band)
        charge_off_rate.append(sum(1 for lid in charged_early if band_of[lid] == band) / originated)
    assert missed_rate == sorted(missed_rate) and len(set(missed_rate)) == len(RISK_BANDS), missed_rate
    assert charge_off_rate == sorted(charge_off_rate) and len(set(charge_off_rate)) == len(RISK_BANDS), charge_off_rate
    assert charge_off_rate[-1] > 5 * charge_off_rate[0]


def test_correction_is_a_new_version_and_leaves_the_original_byte_identical(tmp_path: Path) -> None:
    landing = LandingZone.local(tmp_path)
    (original,) = simulate(SMALL, MONTH_END, MONTH_END, landing)
    v1_files = _files(tmp_path / original.prefix)

    v2 = write_correction(SMALL, MONTH_END, landing)
    assert v2.version == 2 and v2.prefix != original.prefix
    assert _files(tmp_path / original.prefix) == v1_files
    manifest = read_manifest(landing, MONTH_END, 2)
    assert manifest["supersedes"] == 1
    changed = sum(manifest["corrections"].values())
    assert changed >= 1

    before, after = read_drop(landing, MONTH_END, 1), read_drop(landing, MONTH_END, 2)
    assert before["payments"]["payment_id"].equals(after["payments"]["payment_id"])
    differs = (_column(before["payments"], "amount_cents") != _column(after["payments"], "amount_cents")) | (
        _column(before["payments"], "reversed") != _column(after["payments"], "reversed")
    )
    assert differs.sum() == changed
    assert after["payments"].filter(pc.field("reversed"))["reversal_reason"].null_count == 0
    v2_files = _files(tmp_path / v2.prefix)
    for dataset in DATASETS:
        if dataset != "payments":
            assert v2_files[f"{dataset}.parquet"] == v1_files[f"{dataset}.parquet"], dataset

    with pytest.raises(FileExistsError):
        write_correction(SMALL, MONTH_END, landing, version=2)
    v3 = write_correction(SMALL, MONTH_END, landing)
    assert v3.version == 3 and complete_versions(landing, MONTH_END) == [1, 2, 3]
    assert sum(read_manifest(landing, MONTH_END, 3)["corrections"].values()) > changed
    assert _files(tmp_path / v2.prefix) == v2_files

    # Restatements are deterministic too.
    elsewhere = LandingZone.local(tmp_path / "elsewhere")
    simulate(SMALL, MONTH_END, MONTH_END, elsewhere)
    again = write_correction(SMALL, MONTH_END, elsewhere)
    assert _files(tmp_path / "elsewhere" / again.prefix) == v2_files


def test_simulate_keeps_complete_drops_and_refuses_another_world(tmp_path: Path) -> None:
    landing = LandingZone.local(tmp_path)
    first = simulate(SMALL, date(2023, 2, 1), date(2023, 2, 3), landing)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert simulate(SMALL, date(2023, 2, 1), date(2023, 2, 3), landing) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")} == stamps
    with pytest.raises(ValueError, match="generated with"):
        simulate(
            SimulationConfig(seed=99, start=SMALL.start, scale=SMALL.scale), date(2023, 2, 1), date(2023, 2, 1), landing
        )


def test_monday_drop_carries_the_weekend(book: Book) -> None:
    monday = next(d for d in book.drops if d.business_date.weekday() == 0 and d.business_date > SMALL.start)
    assert (monday.covers_from, monday.covers_to) == (monday.business_date - timedelta(days=2), monday.business_date)
    dates = set(_column(read_drop(book.landing, monday.business_date)["applications"], "application_date").tolist())
    assert dates == {epoch_day(monday.business_date) - offset for offset in (2, 1, 0)}


def test_landing_zone_works_on_any_pyarrow_filesystem() -> None:
    # pyarrow's in-memory mock stands in for S3: a non-local filesystem, written without renames.
    landing = LandingZone(pafs._MockFileSystem(), "bucket/landing")
    tables = build_drop(SMALL, date(2023, 2, 1))
    drop = write_drop(landing, date(2023, 2, 1), 1, date(2023, 2, 1), tables)
    assert complete_versions(landing, date(2023, 2, 1)) == [1]
    assert all(read_drop(landing, date(2023, 2, 1))[name].equals(tables[name]) for name in DATASETS)
    assert drop.rows("loans") == tables["loans"].num_rows


def test_main_writes_drops_and_restatements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--scale", "0.02", "--seed", "1", "--landing", str(tmp_path), "--world-start", "2023-01-03"]
    assert main(["--start", "2023-01-03", "--end", "2023-01-08", *common]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4  # Tuesday to Friday
    assert main(["--start", "2023-01-04", "--correct", *common]) == 0
    assert "business_date=2023-01-04/v2" in capsys.readouterr().out
    assert (tmp_path / "pos-lending-v1" / "business_date=2023-01-04" / "v2" / MANIFEST_NAME).exists()


def test_benchmark_reports_every_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # benchmarks/ is a folder of scripts, not an installed package: load the script from its path.
    spec = importlib.util.spec_from_file_location(
        "simulator_benchmark", Path(__file__).parents[1] / "benchmarks" / "simulator.py"
    )
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    run = benchmark.run

    # At a tiny scale the benchmark still runs end to end; it flags that the day is under a million payments.
    assert run(0.01, date(2023, 3, 1), str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in DATASETS)
    assert "under a million payments" in out
