"""The lending simulator: daily landing drops of a simulated point-of-sale lender, for the loan assets to ingest.

One drop per business day (Monday to Friday, except Federal Reserve holidays: ``LENDING_CALENDAR``), at
``<landing>/<DATASET_VERSION>/business_date=YYYY-MM-DD/v<N>/``, with one Parquet file per dataset and a
``_manifest.json`` written last. A drop carries the events dated after the previous business day up to its business
date (Monday's drop carries the weekend, the drop after a holiday carries the holiday). Restatements of a past day
are new versions (``write_correction``).

Everything is a pure function of ``SimulationConfig`` and the dates: the same config and dates give byte-identical
files (with the same pyarrow, whose version is in the Parquet footer), and any day can be generated without the days
before it (see ``assets.lending.world``).

Usage::

    config = SimulationConfig(seed=7, start=date(2023, 1, 3), scale=1.0)
    drops = simulate(config, date(2024, 3, 1), date(2024, 3, 29), LandingZone.local("/data/landing"))
    write_correction(config, date(2024, 3, 4), landing)  # -> v2 of that day
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from assets.lending.contract import DATASETS, EVENT_DATE_COLUMN, LENDING_START, REVERSAL_REASONS, SCHEMAS, business_days
from assets.lending.contract import drop_window as landing_drop_window
from assets.lending.landing import (
    DATASET_VERSION,
    DropInfo,
    FileInfo,
    LandingZone,
    complete_versions,
    default_landing_dir,
    drop_prefix,
    read_drop,
    read_manifest,
    write_drop,
)
from assets.lending.schedule import epoch_day
from assets.lending.world import SimulationConfig, Stream, World, rng

__all__ = [
    "DATASETS",
    "DATASET_VERSION",
    "DEFAULT_WORLD_START",
    "MODEL_VERSION",
    "SCHEMAS",
    "DropInfo",
    "FileInfo",
    "LandingZone",
    "SimulationConfig",
    "build_drop",
    "complete_versions",
    "drop_window",
    "main",
    "read_drop",
    "read_manifest",
    "simulate",
    "write_correction",
    "write_tables",
]

# Bump when the behaviour model changes: a landing zone never mixes drops of two models (see _check_generator).
MODEL_VERSION = 1
DEFAULT_WORLD_START = date.fromisoformat(LENDING_START)  # the lender the loan assets are partitioned for
# Events held in memory at once: simulate generates this many payment rows' worth of days per pass.
_PAYMENT_ROWS_PER_PASS = 4_000_000
_STEADY_PAYMENTS_PER_SCALE = 9_000
# A correction restates this share of a day's payments: half reversed, half with the amount fixed.
_CORRECTED_SHARE = 0.005


def drop_window(config: SimulationConfig, business_date: date) -> tuple[date, date]:
    """The calendar days whose events the business date's drop carries (the landing contract's ``drop_window`` for
    the simulated lender)."""
    return landing_drop_window(business_date, config.start)


def build_drop(
    config: SimulationConfig, business_date: date, version: int = 1, *, world: World | None = None, workers: int = 1
) -> dict[str, pa.Table]:
    """The tables of a drop, in memory (version > 1 applies the corrections of versions 2..version)."""
    tables = (world or World(config)).events(*drop_window(config, business_date), workers=workers)
    if version > 1:
        tables, _ = _apply_corrections(config, business_date, tables, version)
    return tables


def simulate(
    config: SimulationConfig, start: date, end: date, landing: LandingZone, *, workers: int = 1
) -> list[DropInfo]:
    """Write the v1 drop of every business day in [start, end]; days already complete are kept as they are.

    Days are generated a few at a time (as many as hold about four million payments), each pass walking the loan
    cohorts that can have events in it, so the cost of a day is proportional to the size of the book. ``workers``
    > 1 shares each pass's cohorts among forked processes (same bytes, for machines with spare cores).
    """
    dates = list(business_days(start, end))
    for business_date in dates:
        drop_window(config, business_date)  # validate all before writing any
    world = World(config)
    drops: list[DropInfo] = []
    pending: list[date] = []
    for business_date in dates:
        if _complete_v1(config, landing, business_date):
            drops.append(DropInfo.from_manifest(read_manifest(landing, business_date, 1)))
            continue
        pending.append(business_date)
    days_per_pass = max(1, _PAYMENT_ROWS_PER_PASS // int(_STEADY_PAYMENTS_PER_SCALE * config.scale + 1))
    while pending:
        first_day = drop_window(config, pending[0])[0]
        batch = [d for d in pending if (d - first_day).days < days_per_pass] or pending[:1]
        pending = pending[len(batch) :]
        events = world.events(first_day, batch[-1], workers=workers)
        for business_date in batch:
            tables = {name: _rows_between(events[name], name, *drop_window(config, business_date)) for name in DATASETS}
            drops.append(_write(config, landing, business_date, 1, tables))
    return sorted(drops, key=lambda d: d.business_date)


def write_correction(
    config: SimulationConfig, business_date: date, landing: LandingZone, version: int | None = None
) -> DropInfo:
    """Write a restated drop of a past business day as the next version (or ``version``, which must be next).

    The restated drop has every dataset of the day; a few payments are reversed (ACH return, duplicate, dispute)
    and a few have their amount fixed. Corrections accumulate (v3 restates v2) and are deterministic. Later days
    are not restated: their events stand as first generated.
    """
    existing = complete_versions(landing, business_date)
    if not existing:
        raise FileNotFoundError(f"no complete drop for {business_date} to correct")
    _check_generator(config, read_manifest(landing, business_date, existing[-1]), business_date)
    version = existing[-1] + 1 if version is None else version
    if version in existing:
        raise FileExistsError(f"version {version} of {business_date} is complete and immutable")
    if version != existing[-1] + 1 or version < 2:
        raise ValueError(f"the next version of {business_date} is {existing[-1] + 1}, not {version}")
    tables = World(config).events(*drop_window(config, business_date))
    tables, summary = _apply_corrections(config, business_date, tables, version)
    return _write(config, landing, business_date, version, tables, {"corrections": summary})


def write_tables(
    config: SimulationConfig,
    business_date: date,
    landing: LandingZone,
    tables: dict[str, pa.Table],
    *,
    version: int = 1,
    expected_anomalies: dict[str, str] | None = None,
) -> DropInfo:
    """Write given tables as a drop of the business date, as the producer would (e.g. a genuinely empty day).

    ``expected_anomalies`` (dataset -> reason) goes into the manifest: the producer's word that a dataset's volume
    is unusual on purpose, which the raw load's volume check accepts.
    """
    drop_window(config, business_date)  # refuses a day that is no business day, or before the lender
    extra = {"expected_anomalies": dict(expected_anomalies)} if expected_anomalies else None
    return _write(config, landing, business_date, version, tables, extra)


def _generator_facts(config: SimulationConfig) -> dict[str, Any]:
    return {
        "model_version": MODEL_VERSION,
        "seed": config.seed,
        "scale": config.scale,
        "start": config.start.isoformat(),
    }


def _check_generator(config: SimulationConfig, manifest: dict[str, Any], business_date: date) -> None:
    if manifest.get("generator") != _generator_facts(config):
        raise ValueError(
            f"the landing zone's drop for {business_date} was generated with {manifest.get('generator')}, "
            f"not {_generator_facts(config)}: use another landing root"
        )


def _complete_v1(config: SimulationConfig, landing: LandingZone, business_date: date) -> bool:
    if 1 not in complete_versions(landing, business_date):
        return False
    _check_generator(config, read_manifest(landing, business_date, 1), business_date)
    return True


def _write(
    config: SimulationConfig,
    landing: LandingZone,
    business_date: date,
    version: int,
    tables: dict[str, pa.Table],
    extra: dict[str, Any] | None = None,
) -> DropInfo:
    covers_from = drop_window(config, business_date)[0]
    facts = {"generator": _generator_facts(config), **(extra or {})}
    return write_drop(landing, business_date, version, covers_from, tables, facts)


def _rows_between(table: pa.Table, dataset: str, first: date, last: date) -> pa.Table:
    """The rows of a table (ordered by event date) whose event date is in [first, last]."""
    days = table[EVENT_DATE_COLUMN[dataset]].cast(pa.int32()).to_numpy()
    lo, hi = np.searchsorted(days, [epoch_day(first), epoch_day(last) + 1])
    return table.slice(int(lo), int(hi - lo))


def _apply_corrections(
    config: SimulationConfig, business_date: date, tables: dict[str, pa.Table], version: int
) -> tuple[dict[str, pa.Table], dict[str, int]]:
    payments = tables["payments"]
    amount = payments["amount_cents"].to_numpy().copy()
    principal = payments["principal_cents"].to_numpy().copy()
    reversed_ = payments["reversed"].to_numpy(zero_copy_only=False).copy()
    reason = np.full(payments.num_rows, -1, dtype=np.int64)
    summary = {"payments_reversed": 0, "payment_amounts_fixed": 0}
    for restatement in range(2, version + 1):
        generator = rng(config.seed, epoch_day(business_date), Stream.CORRECTIONS, restatement)
        eligible = np.flatnonzero((amount > 0) & ~reversed_)
        count = min(len(eligible), max(1, round(len(eligible) * _CORRECTED_SHARE)))
        chosen = np.sort(generator.choice(eligible, size=count, replace=False)) if count else eligible[:0]
        reverse = generator.random(count) < 0.5
        reason_draw = generator.integers(0, len(REVERSAL_REASONS), count)
        delta = generator.integers(1, 501, count)
        downward = generator.random(count) < 0.5
        reversed_rows = chosen[reverse]
        reversed_[reversed_rows] = True
        reason[reversed_rows] = reason_draw[reverse]
        # A fixed amount moves the principal part; down never below zero principal.
        fixed = chosen[~reverse]
        step = delta[~reverse]
        step = np.where(downward[~reverse] & (principal[fixed] >= step), -step, step)
        amount[fixed] += step
        principal[fixed] += step
        summary["payments_reversed"] += len(reversed_rows)
        summary["payment_amounts_fixed"] += len(fixed)
    reasons = pa.array(REVERSAL_REASONS, pa.string()).take(pa.array(np.maximum(reason, 0), mask=reason < 0))
    schema = SCHEMAS["payments"]
    corrected = (
        payments.set_column(schema.get_field_index("amount_cents"), schema.field("amount_cents"), pa.array(amount))
        .set_column(schema.get_field_index("principal_cents"), schema.field("principal_cents"), pa.array(principal))
        .set_column(schema.get_field_index("reversed"), schema.field("reversed"), pa.array(reversed_))
        .set_column(
            schema.get_field_index("reversal_reason"),
            schema.field("reversal_reason"),
            reasons,
        )
    )
    return {**tables, "payments": corrected}, summary


def main(argv: Sequence[str] | None = None) -> int:
    """``batch-platform simulate``: write the landing drops of a date range (or restate one day)."""
    parser = argparse.ArgumentParser(prog="batch-platform simulate", description=main.__doc__)
    parser.add_argument("--start", type=date.fromisoformat, required=True, help="first business date (ISO)")
    parser.add_argument("--end", type=date.fromisoformat, help="last business date (ISO); default: --start")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 is about 1,000 applications a day")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--landing", help="landing root: a folder or s3://bucket/prefix; default: <data dir>/landing")
    parser.add_argument(
        "--world-start",
        type=date.fromisoformat,
        default=DEFAULT_WORLD_START,
        help=f"the simulated lender's first day (ISO); default: {DEFAULT_WORLD_START}",
    )
    parser.add_argument(
        "--correct", action="store_true", help="write the next restated version of --start's drop instead"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes generating each pass (same output)")
    args = parser.parse_args(argv)
    landing = LandingZone.from_uri(args.landing) if args.landing else LandingZone.local(default_landing_dir())
    config = SimulationConfig(seed=args.seed, start=args.world_start, scale=args.scale)
    if args.correct:
        drops = [write_correction(config, args.start, landing)]
    else:
        drops = simulate(config, args.start, args.end or args.start, landing, workers=args.workers)
    for drop in drops:
        rows = ", ".join(f"{f.dataset}={f.rows}" for f in drop.files)
        print(f"{drop_prefix(drop.business_date, drop.version)}: {rows}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
