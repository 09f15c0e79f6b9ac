"""The history a day's steps read, written into a benchmark lake without running the days before it.

A day two years into a lender reads more than its own drop: ``core/loans`` to date (the events' ``references_a_loan``
audits), ``core/merchants`` to date (a loan's merchant as of its day), ``core/closed_loans`` to date (the reports)
and the previous business day's book. ``seed_history`` writes the first two for the business days before the
benchmark day (only the ids the day's events name are real, the rest is plausible filler); ``opening_book`` derives
the previous day's book from the simulator's state and ``seed_book`` commits it; ``seed_closed_loans`` fills the
closed loans to date with that book's final rows under new ids.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from assets.lending.contract import CATEGORIES, LENDING_START, REGIONS, RISK_BANDS, business_days, previous_business_day
from assets.lending.landing import LandingZone, read_drop
from assets.lending.schedule import TERMS_MONTHS, due_dates, epoch_day
from assets.lending.simulator import drop_window
from assets.lending.tables import (
    CORE_CLOSED_LOANS,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_MERCHANTS,
    OPEN_STATUSES,
    PARTITION,
)
from assets.lending.world import ID_BLOCK, SimulationConfig, World
from assets.lending.world_book import world_book_parts
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.spark_io import check_staged_files

WORLD_START = date.fromisoformat(LENDING_START)
SEED = 1
EVENT_DATASETS = ("payments", "refunds", "charge_offs", "recoveries")  # the datasets whose rows name a loan
# Below this seq every id of a day is an application of that day (the simulator's ids are yyyymmdd * ID_BLOCK + seq).
FILLER_SEQ_LIMIT = ID_BLOCK // 2

# -- the history the day's core steps read -----------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    business_days: int
    first_day: date
    loans: int
    referenced_loans: int
    imported_loans: int  # of the referenced, those originated before the history's first day (in its partition)
    merchants: int
    commits: int
    wall_s: float


def referenced_loans(tables: dict[str, pa.Table], window_start: date) -> dict[int, np.ndarray]:
    """Loan ids the drop's events name, originated before its window, grouped by origination day (yyyymmdd)."""
    ids = np.unique(np.concatenate([tables[d]["loan_id"].to_numpy() for d in EVENT_DATASETS]))
    keys = ids // ID_BLOCK
    start_key = window_start.year * 10_000 + window_start.month * 100 + window_start.day
    ids, keys = ids[keys < start_key], keys[keys < start_key]
    return {int(k): ids[keys == k] for k in np.unique(keys)}


def _day_key(day: date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


def _money(values: np.ndarray) -> pa.Array:
    # Whole currency units: int32 casts to decimal(18, 2) exactly.
    return pa.array(values.astype(np.int32)).cast(pa.decimal128(18, 2))


def _dates(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32), pa.date32())


def history_loans(
    world: World,
    day: date,
    business_date: date,
    referenced: np.ndarray | None,
    approval: float,
    full: bool,
    merchant_category: np.ndarray,
    rng: np.random.Generator,
) -> pa.Table:
    """core/loans rows for the loans originated on ``day``: the referenced ids, plus, if ``full``, as many more
    ids of that day as the simulator would have approved. Only the ids are real; the other columns are plausible
    random values (the day's steps read only ``loan_id`` of the history)."""
    ids = referenced if referenced is not None else np.empty(0, np.int64)
    if full:
        applications = world.counts(epoch_day(day))[0]
        if applications > FILLER_SEQ_LIMIT:
            raise ValueError(f"{applications} applications on {day}: over the filler id range; lower the scale")
        base = _day_key(day) * ID_BLOCK
        free = np.setdiff1d(np.arange(applications, dtype=np.int64), ids - base)
        ids = np.sort(np.concatenate([ids, base + free[: max(0, round(applications * approval) - len(ids))]]))
    n = len(ids)
    origination = epoch_day(day)
    term = np.array(TERMS_MONTHS, np.int64)[rng.integers(0, len(TERMS_MONTHS), n)]
    apr = np.where(rng.random(n) < 0.1, 0, rng.integers(799, 3600, n))
    principal = rng.integers(100, 6_000, n)
    merchant = rng.integers(1, len(merchant_category) + 1, n)
    due = due_dates(origination)
    return pa.table(
        {
            "business_date": _dates(np.full(n, epoch_day(business_date))),
            "loan_id": ids,
            "application_id": ids,
            "customer_id": rng.integers(_day_key(WORLD_START) * ID_BLOCK, _day_key(day) * ID_BLOCK + 1, n),
            "merchant_id": merchant,
            "merchant_category": pa.array(CATEGORIES).take(pa.array(merchant_category[merchant - 1])),
            "origination_date": _dates(np.full(n, origination)),
            "vintage_month": _dates(np.full(n, epoch_day(day.replace(day=1)))),
            "principal": _money(principal),
            "term_months": term.astype(np.int32),
            "apr_bps": apr.astype(np.int32),
            "is_zero_apr_promo": apr == 0,
            "risk_band": pa.array(RISK_BANDS).take(pa.array(rng.integers(0, len(RISK_BANDS), n))),
            "installment": _money(principal // term + 1),
            "total_interest": _money(principal * apr * term // 240_000),
            "first_due_date": _dates(np.full(n, due[1])),
            "maturity_date": _dates(due[term]),
        }
    )


def history_merchants(world: World, first: date, last: date, business_date: date, category: np.ndarray) -> pa.Table:
    """core/merchants rows of the merchants onboarded in [first, last] (real ids and categories, made-up names)."""
    ids: list[int] = []
    onboarded: list[int] = []
    for offset in range((last - first).days + 1):
        day = epoch_day(first) + offset
        low = 1 if day == world.start_day else world.merchants_as_of(day - 1) + 1
        new = range(low, world.merchants_as_of(day) + 1)
        ids.extend(new)
        onboarded.extend([day] * len(new))
    id_array = np.array(ids, np.int64)
    return pa.table(
        {
            "business_date": _dates(np.full(len(ids), epoch_day(business_date))),
            "merchant_id": id_array,
            "onboarded_date": _dates(np.array(onboarded, np.int64)),
            "merchant_name": pa.array([f"Merchant {i}" for i in ids], pa.string()),
            "category": pa.array(CATEGORIES).take(pa.array(category[id_array - 1])),
            "region": pa.array(REGIONS).take(pa.array(id_array % len(REGIONS))),
            "state": pa.nulls(len(ids), pa.string()),
            "city": pa.nulls(len(ids), pa.string()),
        }
    )


def seed_history(
    lake: IcebergLakeResource,
    landing: Path,
    config: SimulationConfig,
    business_date: date,
    full: bool,
    *,
    days: int | None = None,
    days_per_commit: int = 1,
) -> Seeded:
    """Write core/loans and core/merchants for the ``days`` business days before ``business_date`` (every one since
    the lender's start if None), ``days_per_commit`` days per commit: one, as the daily runs make them, or a
    backfill's chunk (the planning of a history read scales with those commits' manifests).

    A history that starts after the lender did is a lake that started late: its first partition also holds what it
    imported, every loan originated before it that the day's events name, and every merchant onboarded before it.
    """
    started = time.perf_counter()
    world = World(config)
    window_start = drop_window(config, business_date)[0]
    drop = read_drop(LandingZone.local(landing), business_date)
    referenced = referenced_loans(drop, window_start)
    approval = drop["loans"].num_rows / max(1, drop["applications"].num_rows)
    category = world.merchant_attributes(world.merchants_as_of(epoch_day(business_date)))["category"]
    rng = np.random.default_rng(SEED)
    history = list(business_days(config.start, previous_business_day(business_date)))
    if days is not None:
        if not 0 < days <= len(history):
            raise ValueError(f"{days} days of history: the lender has {len(history)} business days before the day")
        history = history[-days:]
    imported = [k for k in referenced if k < _day_key(drop_window(config, history[0])[0])]
    loans = merchants = commits = 0
    for number in range(0, len(history), days_per_commit):
        chunk = history[number : number + days_per_commit]
        keys = [day.isoformat() for day in chunk]
        lineage = Lineage(run_id="benchmark-history", asset_key="", partition_keys=tuple(keys))
        loan_parts, merchant_parts = [], []
        for day in chunk:
            first, last = drop_window(config, day)
            if day == history[0]:  # the import: what the lake holds from before its first day
                loan_parts += [_imported_loans(world, day, referenced, imported, category, rng)]
                first_merchant = config.start
            else:
                first_merchant = first
            loan_parts += [
                history_loans(
                    world,
                    first + timedelta(days=i),
                    day,
                    referenced.get(_day_key(first + timedelta(days=i))),
                    approval,
                    full,
                    category,
                    rng,
                )
                for i in range((last - first).days + 1)
            ]
            merchant_parts.append(history_merchants(world, first_merchant, last, day, category))
        loans += lake.write_arrow(CORE_LOANS, pa.concat_tables(loan_parts), partition_keys=keys, lineage=lineage).rows
        written = lake.write_arrow(
            CORE_MERCHANTS, pa.concat_tables(merchant_parts), partition_keys=keys, lineage=lineage
        )
        merchants += written.rows
        commits += 2
        done = number + len(chunk)
        if done % 100 < days_per_commit or done == len(history):
            print(f"  history: {done}/{len(history)} business days, {loans:,} loans", file=sys.stderr, flush=True)
    return Seeded(
        len(history),
        history[0],
        loans,
        sum(len(v) for v in referenced.values()),
        sum(len(referenced[k]) for k in imported),
        merchants,
        commits,
        time.perf_counter() - started,
    )


def _imported_loans(
    world: World,
    day: date,
    referenced: dict[int, np.ndarray],
    imported: list[int],
    category: np.ndarray,
    rng: np.random.Generator,
) -> pa.Table:
    """core/loans rows, in the history's first partition, of the loans originated before it that the day names."""
    if not imported:
        return history_loans(world, day, day, None, 0.0, False, category, rng)
    parts = [history_loans(world, _from_day_key(k), day, referenced[k], 0.0, False, category, rng) for k in imported]
    return pa.concat_tables(parts)


def _from_day_key(key: int) -> date:
    return date(key // 10_000, key // 100 % 100, key % 100)


# -- the book the day starts from -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpeningBook:
    """The book of the business day before the benchmark day, from the simulator's state, as Parquet files."""

    business_date: date
    files: list[Path]
    rows: int
    open_loans: int
    installments: int
    closed: pa.Table  # that day's final rows: the loans that closed with its drop
    wall_s: float


def opening_book(config: SimulationConfig, business_date: date, folder: Path, workers: int) -> OpeningBook:
    """core/loan_daily_status of the business day before ``business_date`` (assets/lending/world_book.py: what the
    platform would have chained from the lender's first drop), written a week of originations per file."""
    started = time.perf_counter()
    day = previous_business_day(business_date)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    closed: list[pa.Table] = []
    rows = open_loans = installments = 0
    for number, part in enumerate(world_book_parts(World(config), day, workers=workers)):
        path = folder / f"book-{number:05d}.parquet"
        pq.write_table(part, path)
        files.append(path)
        is_open = pc.is_in(part["status"], pa.array(OPEN_STATUSES))
        rows += part.num_rows
        open_loans += pc.sum(is_open.cast(pa.int64())).as_py() or 0
        installments += pc.sum(pc.list_value_length(part["installments"])).as_py() or 0
        closed.append(part.filter(pc.invert(is_open)))
        if number % 10 == 0:
            print(f"  opening book: {rows:,} rows", file=sys.stderr, flush=True)
    return OpeningBook(
        day, files, rows, open_loans, installments, pa.concat_tables(closed), time.perf_counter() - started
    )


def commit_parquet(
    lake: IcebergLakeResource, table: LakeTable, parts: Iterable[pa.Table], keys: list[str], lineage: Lineage
) -> int:
    """Replace the partitions ``keys`` with Arrow parts in one commit: each part staged as a Parquet file where a
    Spark write would stage it, checked from its footer and added as it is (the Spark path, without Spark, for
    tables too large to hold in memory at once). Returns the rows committed."""
    lake.table(table)  # created (or evolved) first, as a Spark write does
    write_id = uuid.uuid4().hex
    uri = lake.staging_uri(table, lineage.run_id, write_id)
    filesystem, base = pafs.FileSystem.from_uri(uri)
    filesystem.create_dir(base, recursive=True)
    files, rows = [], 0
    for number, part in enumerate(parts):
        name = f"part-{number:05d}.parquet"
        pq.write_table(part.select(table.schema.names).cast(table.schema), f"{base}/{name}", filesystem=filesystem)
        files.append(f"{uri}/{name}")
        rows += part.num_rows
    checked = check_staged_files(lake.load(table).io, table, files, keys)
    lake.commit_files(table, write_id, checked, partition_keys=keys, lineage=lineage)
    return rows


def seed_book(lake: IcebergLakeResource, book: OpeningBook, instance: dg.DagsterInstance) -> int:
    """The opening book as core/loan_daily_status's partition of its day, recorded as materialized in ``instance``
    (as an operator importing a book would report it): the next day's run checks its previous day there."""
    key = book.business_date.isoformat()
    lineage = Lineage(run_id="benchmark-opening-book", asset_key="", partition_keys=(key,))
    rows = commit_parquet(lake, CORE_LOAN_DAILY_STATUS, (pq.read_table(f) for f in book.files), [key], lineage)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=CORE_LOAN_DAILY_STATUS.asset_key,
            partition=key,
            metadata={"dagster/row_count": rows, "source": "the simulator's state (world_book)"},
        )
    )
    return rows


def seed_closed_loans(lake: IcebergLakeResource, book: OpeningBook, days: list[date], days_per_commit: int) -> int:
    """core/closed_loans for each history day: as many final rows as closed with the opening book's day, those very
    rows under new ids (each day's ids offset by a multiple of 10**14, far from the simulator's), so the reporting's
    read of every closed loan to date reads as many rows as a lake of that age would hold."""
    rows = 0
    for number in range(0, len(days), days_per_commit):
        chunk = days[number : number + days_per_commit]
        keys = [day.isoformat() for day in chunk]
        lineage = Lineage(run_id="benchmark-history", asset_key="", partition_keys=tuple(keys))
        parts = (
            book.closed.set_column(
                book.closed.schema.get_field_index(PARTITION),
                PARTITION,
                pa.array([day] * book.closed.num_rows, pa.date32()),
            ).set_column(
                book.closed.schema.get_field_index("loan_id"),
                "loan_id",
                pc.add(book.closed["loan_id"], (number + offset + 1) * 10**14),
            )
            for offset, day in enumerate(chunk)
        )
        rows += commit_parquet(lake, CORE_CLOSED_LOANS, parts, keys, lineage)
    return rows
