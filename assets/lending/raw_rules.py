"""The landing contract's rules that need more than one row: dates against the drop's window, volumes against
recent history, and references to rows that were quarantined.

The raw load (``assets.lending.raw``) applies them to each drop before anything is written:

* **Dates.** Every dated field is declared in the landing contract's ``DATE_FIELDS`` (``contract.py``) with its
  rule; a row breaking one is quarantined with a reason naming the field, the date and the bounds. The window is the
  contract's ``drop_window`` (which the simulator writes by) for the lender the raw tables are partitioned for.
* **Volumes.** A dataset whose row count is far outside its last loaded business days fails the drop, unless the
  manifest declares it (``"expected_anomalies": {"payments": "reason"}``). History is read from the lake's
  partition statistics (Iceberg manifests, no data files): the current state of the raw tables, restatements
  included, where Dagster's materialization metadata would only hold per-run totals.
* **References.** A row referring to a quarantined row (a payment of a quarantined loan), of the same drop or of an
  earlier one, is quarantined with it, the reason naming the parent: loading it would leave an orphan in core and
  fail the whole range run of the core table that audits references.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import dagster as dg
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And, In

from assets.lending.contract import DATASETS, DATE_FIELDS, LENDING_START, DateRule, drop_window
from assets.lending.schedule import MAX_TERM_MONTHS, add_months
from assets.lending.tables import PARTITION, RAW_QUARANTINE, RAW_TABLES
from batch_platform.lake import IcebergLakeResource, LakeTable
from batch_platform.lake.selection import PartitionSelection, iceberg_filter

HELD_BACK_BY_QUARANTINE = "rows_held_back_by_quarantine"
LENDER_START = date.fromisoformat(LENDING_START)
_MICROS_PER_DAY = 86_400_000_000


# -- dates ----------------------------------------------------------------------------------------------------------


def expected_window(business_date: date) -> tuple[date, date]:
    """The calendar days whose events the business date's drop carries (the landing contract's ``drop_window``)."""
    return drop_window(business_date, LENDER_START)


def date_bounds(rule: DateRule, business_date: date) -> tuple[date | None, date]:
    """Earliest (None: unbounded) and latest date a field under ``rule`` may hold in the business date's drop."""
    if rule is DateRule.IN_WINDOW:
        return expected_window(business_date)
    if rule is DateRule.BOOK_PAST:
        return LENDER_START, business_date
    if rule is DateRule.NOT_AFTER_DROP:
        return None, business_date
    return LENDER_START, add_months(business_date, MAX_TERM_MONTHS)


def _explain(rule: DateRule, low: date | None, high: date) -> str:
    if rule is DateRule.IN_WINDOW:
        return f"is outside the drop's window [{low}, {high}]"
    if rule is DateRule.BOOK_PAST:
        return f"is outside [{low}, {high}] (the lender's first day to the drop's business day)"
    if rule is DateRule.NOT_AFTER_DROP:
        return f"is after the drop's business day {high}"
    return f"is outside [{low}, {high}] (a scheduled date: the lender's first day to {MAX_TERM_MONTHS} months ahead)"


def _epoch_days(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Days since 1970 of a date or timestamp column (a timestamp's UTC date), and which values are not null."""
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    if pa.types.is_timestamp(column.type):
        micros = pc.fill_null(column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), 0).to_numpy()
        return np.floor_divide(micros, _MICROS_PER_DAY).astype(np.int64), valid
    days = pc.fill_null(column.cast(pa.date32()).cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
    return np.asarray(days, dtype=np.int64), valid


def date_violations(dataset: str, rows: pa.Table, business_date: date) -> dict[int, list[str]]:
    """Rows (positions in ``rows``, typed to the contract) whose dated fields break their rule, with the reasons.

    A null date breaks no date rule: whether it may be null is the Required rule's business.
    """
    reasons: dict[int, list[str]] = {}
    for column, rule in DATE_FIELDS[dataset].items():
        low, high = date_bounds(rule, business_date)
        days, valid = _epoch_days(rows[column])
        epoch = date(1970, 1, 1)
        bad = valid & (days > (high - epoch).days)
        if low is not None:
            bad |= valid & (days < (low - epoch).days)
        positions = [int(p) for p in np.flatnonzero(bad)]
        values = rows[column].take(pa.array(positions, pa.int64())).to_pylist()
        explanation = _explain(rule, low, high)
        for position, value in zip(positions, values, strict=True):
            reasons.setdefault(position, []).append(f"{column} {value} {explanation}")
    return reasons


# -- volumes --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeThreshold:
    """When a dataset's row count fails its drop: outside [median / max_ratio, median * max_ratio] of its history.

    History is the dataset's delivered rows (loaded + quarantined) on the last ``history_days`` loaded business days.
    With fewer than ``min_history_days`` of them (a new lender or dataset), or a median below ``min_median_rows``
    (sparse datasets such as month-end charge-offs, where a zero or a burst is ordinary), the count is not judged.
    A Monday drop carries three days of events: well inside the default ratio of 10.
    """

    history_days: int = 10
    min_history_days: int = 5
    max_ratio: float = 10.0
    min_median_rows: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.min_history_days <= self.history_days:
            raise ValueError("need 0 < min_history_days <= history_days")
        if self.max_ratio <= 1:
            raise ValueError("max_ratio must be above 1")


DEFAULT_VOLUME_THRESHOLD = VolumeThreshold()
# Per dataset; a dataset not listed gets the default.
VOLUME_THRESHOLDS: dict[str, VolumeThreshold] = dict.fromkeys(DATASETS, DEFAULT_VOLUME_THRESHOLD)


@dataclass(frozen=True)
class VolumeVerdict:
    problems: list[str]  # anomalies the producer did not declare: the drop fails
    accepted: list[str]  # anomalies the manifest declared expected: logged, the drop loads


@dataclass
class RecentVolumes:
    """Delivered rows per dataset on loaded business days, oldest first; a run adds each day it verifies."""

    days: dict[date, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_lake(
        cls,
        lake: IcebergLakeResource,
        history: Mapping[str, PartitionSelection],
        quarantine: PartitionSelection,
        history_days: int,
    ) -> RecentVolumes:
        """The last ``history_days`` loaded business days among the declared partitions read (``history``: per
        dataset, the days before the run; ``quarantine``: the quarantine's), from partition statistics."""
        counts: dict[date, dict[str, int]] = {}
        for dataset in DATASETS:
            for day, rows in _partition_rows(lake, RAW_TABLES[dataset], history[dataset]).items():
                counts.setdefault(day, {})[dataset] = rows
        for day in _partition_rows(lake, RAW_QUARANTINE, quarantine):
            counts.setdefault(day, {})
        recent = sorted(counts)[-history_days:]
        if recent:
            # Quarantined rows were delivered too: a day whose rows were all refused is not an empty day.
            quarantine_rows = lake.read_arrow(RAW_QUARANTINE, dg.PartitionKeyRange(str(recent[0]), str(recent[-1])))
            for row in quarantine_rows.select([PARTITION, "dataset"]).to_pylist():
                per_day = counts.setdefault(row[PARTITION], {})
                per_day[row["dataset"]] = per_day.get(row["dataset"], 0) + 1
        return cls({day: counts[day] for day in recent})

    def record(self, business_date: date, rows: Mapping[str, int]) -> None:
        self.days[business_date] = dict(rows)

    def judge(
        self,
        business_date: date,
        rows: Mapping[str, int],
        expected: Mapping[str, str],
        thresholds: Mapping[str, VolumeThreshold] | None = None,
    ) -> VolumeVerdict:
        """Compare a drop's rows per dataset with the loaded business days before it."""
        thresholds = VOLUME_THRESHOLDS if thresholds is None else thresholds
        problems = [
            f"expected_anomalies names {name!r}, which is not a dataset of the contract"
            for name in sorted(set(expected) - set(DATASETS))
        ]
        accepted = []
        earlier = sorted(d for d in self.days if d < business_date)
        for dataset in DATASETS:
            threshold = thresholds.get(dataset, DEFAULT_VOLUME_THRESHOLD)
            history = [self.days[d].get(dataset, 0) for d in earlier[-threshold.history_days :]]
            if len(history) < threshold.min_history_days:
                continue
            median = statistics.median(history)
            if median < threshold.min_median_rows:
                continue
            low, high = median / threshold.max_ratio, median * threshold.max_ratio
            count = rows[dataset]
            if low <= count <= high:
                continue
            finding = (
                f"{dataset}: {count} rows, far outside its last {len(history)} loaded business days "
                f"({min(history)}-{max(history)} rows, median {median:g}; accepted {low:g} to {high:g})"
            )
            if dataset in expected:
                accepted.append(f"{finding}; expected by the producer: {expected[dataset]}")
            else:
                problems.append(
                    f"{finding}. If the producer means it, its manifest says so: "
                    f'"expected_anomalies": {{"{dataset}": "<reason>"}}'
                )
        return VolumeVerdict(problems, accepted)


def _partition_rows(lake: IcebergLakeResource, table: LakeTable, selection: PartitionSelection) -> dict[date, int]:
    if selection == []:
        return {}
    try:
        iceberg_table = lake.catalog().load_table(table.identifier)
    except NoSuchTableError:
        return {}
    if iceberg_table.current_snapshot() is None:  # created, never written
        return {}
    stats = iceberg_table.inspect.partitions(row_filter=iceberg_filter(table, selection)).to_pylist()
    return {row["partition"][PARTITION]: int(row["record_count"]) for row in stats}


# -- references -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """``column`` of a dataset's row holds the ``key`` of a row of ``parent``: the row depends on it."""

    column: str
    parent: str
    key: str


_OF_A_LOAN = (Reference("loan_id", "loans", "loan_id"),)
# Per dataset, what its rows depend on. Parents come before their dependents in DATASETS.
REFERENCES: dict[str, tuple[Reference, ...]] = {
    "repayment_schedule": _OF_A_LOAN,
    "payments": _OF_A_LOAN,
    "refunds": _OF_A_LOAN,
    "charge_offs": _OF_A_LOAN,
    "recoveries": _OF_A_LOAN,
}
PARENTS: dict[str, str] = {r.parent: r.key for refs in REFERENCES.values() for r in refs}


def _as_key(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


@dataclass
class QuarantinedParents:
    """Keys of quarantined parent rows that no later row may be loaded against: parent -> key -> where it lies.

    A key that is loaded after all (one copy of a duplicate, a re-delivery) is no longer held.
    """

    held: dict[str, dict[int, str]] = field(default_factory=dict)

    @classmethod
    def from_lake(
        cls, lake: IcebergLakeResource, quarantine: PartitionSelection, parents_loaded: Mapping[str, PartitionSelection]
    ) -> QuarantinedParents:
        """Parents quarantined in the declared partitions of the quarantine (the days before the run), unless the
        declared partitions of the parent's raw table (the same days) loaded them after all. Later days are never
        looked at: what a day holds back depends on the days before it only, whatever was loaded since."""
        parents = cls()
        if quarantine == []:
            return parents
        try:
            table = lake.load(RAW_QUARANTINE)
        except NoSuchTableError:
            return parents
        # Only the parents' quarantined rows are read (dataset is a column with file statistics, not a partition).
        earlier = And(iceberg_filter(RAW_QUARANTINE, quarantine), In("dataset", sorted(PARENTS)))  # type: ignore[call-arg,arg-type]
        rows = table.scan(row_filter=earlier).to_arrow()  # pyiceberg applies the filter to rows too
        for row in rows.to_pylist():
            key = _as_key(json.loads(row["record"]).get(PARENTS[row["dataset"]]))
            if key is not None:
                where = f"{row['dataset']} row {row['row_number']} of drop {row[PARTITION]} v{row['drop_version']}"
                parents.held.setdefault(row["dataset"], {})[key] = where
        for parent, keys in parents.held.items():
            # Loaded on an earlier day after all (one copy of a duplicate, a re-delivery): not held.
            found = (
                lake.load(RAW_TABLES[parent])
                .scan(
                    row_filter=And(
                        iceberg_filter(RAW_TABLES[parent], parents_loaded[parent]),
                        In(PARENTS[parent], list(keys)),  # type: ignore[call-arg,arg-type]
                    ),
                    selected_fields=(PARENTS[parent],),
                )
                .to_arrow()
            )
            for loaded_key in found.column(PARENTS[parent]).to_pylist():
                keys.pop(loaded_key, None)
        return parents

    def dependents_of_held(self, dataset: str, rows: pa.Table) -> dict[int, list[str]]:
        """Rows (positions in ``rows``) that refer to a held parent, with reasons naming it."""
        reasons: dict[int, list[str]] = {}
        for reference in REFERENCES.get(dataset, ()):
            held = self.held.get(reference.parent, {})
            if not held:
                continue
            values = rows[reference.column]
            hit = pc.fill_null(pc.is_in(values, pa.array(list(held), values.type)), False)
            positions = [int(p) for p in np.flatnonzero(np.asarray(hit.to_numpy(zero_copy_only=False)))]
            for position, value in zip(
                positions, values.take(pa.array(positions, pa.int64())).to_pylist(), strict=True
            ):
                reasons.setdefault(position, []).append(
                    f"{reference.column} {value} refers to {held[value]}, which is quarantined"
                )
        return reasons

    def add_drop(
        self, dataset: str, business_date: date, version: int, records: Mapping[int, str], loaded: pa.Table
    ) -> None:
        """A drop's quarantined rows of a parent dataset (row number -> record as JSON) and its loading rows."""
        if dataset not in PARENTS:
            return
        held = self.held.setdefault(dataset, {})
        for row, record in records.items():
            key = _as_key(json.loads(record).get(PARENTS[dataset]))
            if key is not None:
                held[key] = f"{dataset} row {row} of drop {business_date} v{version}"
        if held:
            # Loaded after all (one copy of a duplicate, a re-delivery): no longer held. Only the held few are probed.
            keys = loaded[PARENTS[dataset]]
            found = keys.filter(pc.fill_null(pc.is_in(keys, pa.array(list(held), keys.type)), False))
            for key in found.to_pylist():
                held.pop(key, None)


class ParsedRows(Protocol):
    """What the rules across rows need of a parsed landing file (``raw.ParsedDataset``)."""

    rows: pa.Table
    records: dict[int, str]

    def hold_back(self, reasons: Mapping[int, list[str]]) -> None: ...


def apply_rules_across_rows(
    parsed: Mapping[str, ParsedRows], business_date: date, version: int, parents: QuarantinedParents
) -> dict[str, int]:
    """Quarantine a drop's rows with dates outside their rule or referring to a quarantined row; returns, per
    dataset, the rows held back for their parent. Datasets go in DATASETS order: parents are settled first."""
    held_back = {}
    for dataset in DATASETS:
        rows = parsed[dataset]
        rows.hold_back(date_violations(dataset, rows.rows, business_date))
        dependents = parents.dependents_of_held(dataset, rows.rows)
        rows.hold_back(dependents)
        held_back[dataset] = len(dependents)
        parents.add_drop(dataset, business_date, version, rows.records, rows.rows)
    return held_back


def held_back_check_specs() -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            HELD_BACK_BY_QUARANTINE,
            asset=RAW_TABLES[dataset].asset_key,
            blocking=False,
            description=(
                "Rows quarantined because the row they refer to (their loan) is: WARN when any. Once the parent is "
                "re-delivered, re-run the days listed in by_business_date to load them."
            ),
        )
        for dataset in REFERENCES
    ]


def held_back_check_results(held_back: Mapping[date, Mapping[str, int]]) -> list[dg.AssetCheckResult]:
    """Per dependent dataset, the rows of the run's days held back for a quarantined parent (WARN: others load)."""
    return [
        dg.AssetCheckResult(
            asset_key=RAW_TABLES[dataset].asset_key,
            check_name=HELD_BACK_BY_QUARANTINE,
            passed=sum(day[dataset] for day in held_back.values()) == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "held_back_rows": sum(day[dataset] for day in held_back.values()),
                "by_business_date": dg.MetadataValue.json({str(d): day[dataset] for d, day in held_back.items()}),
            },
        )
        for dataset in REFERENCES
    ]
