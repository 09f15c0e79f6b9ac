"""The raw layer: a business day's landing drop loaded into ``raw.<dataset>`` tables, bad rows into a quarantine.

A run loads its business dates a month at a time (one write; a backfill run covers up to four), each day from the
latest complete version of its drop:

1. Verify the write's drops before writing anything: every file the manifest lists exists with the manifest's size
   and SHA-256, parses as Parquet, has the manifest's row count and every column of its dataset. Any problem fails
   the run with the write's days untouched (the failure names the days the run's earlier writes loaded): a drop
   that is wrong as a whole must be re-delivered, not half-loaded.
2. Parse and validate rows: a column of another type than the contract is cast value by value, then the rules of
   ``RULES`` apply. A row that fails goes to ``raw.quarantine`` with its reasons; the others load. Bad rows are a
   producer's problem to fix in the next version, and should not hold back the day's good rows.
3. Replace the business date's partition of every raw table and of the quarantine (so a fixed re-delivery also
   clears the old quarantine rows), then check per dataset that loaded + quarantined rows = the manifest's rows.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import dagster as dg
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.lending import DOMAIN
from assets.lending.contract import (
    CATEGORIES,
    DATASETS,
    DECISIONS,
    DECLINE_REASONS,
    MAX_APR_BPS,
    PAYMENT_STATUSES,
    RECOVERY_CHANNELS,
    REFUND_REASONS,
    REFUND_TYPES,
    REGIONS,
    REVERSAL_REASONS,
    RISK_BANDS,
    SCHEMAS,
)
from assets.lending.landing import (
    DATASET_VERSION,
    DropInfo,
    FileInfo,
    LandingZone,
    LandingZoneResource,
    complete_versions,
    drop_prefix,
    read_manifest,
    sha256_hex,
)
from assets.lending.raw_rules import (
    PARENTS,
    REFERENCES,
    VOLUME_THRESHOLDS,
    QuarantinedParents,
    RecentVolumes,
    apply_rules_across_rows,
    held_back_check_results,
    held_back_check_specs,
)
from assets.lending.tables import (
    DAY_CHAIN_BACKFILL,
    DAYS_PER_WRITE,
    LENDING_PARTITIONS,
    PARTITION,
    RAW_QUARANTINE,
    RAW_TABLES,
)
from assets.lending.world import TERMS_MONTHS
from batch_platform.assets import column_schema
from batch_platform.compute import COMPUTE_PROFILE_TAG, DAY_CHAIN_TAG, DEFAULT_PROFILE, profile_tags
from batch_platform.domain import domain_pool
from batch_platform.inputs import LakeInput, before_this_partition
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage, WriteResult
from batch_platform.lake.selection import PartitionSelection
from batch_platform.partitions import in_writes_of, partition_keys

# One step writes every raw table, so they share one pool (limit 1 by default): two runs never replace the same
# raw partition at once. The tables' own pools have no other writer.
RAW_LANDING_POOL = domain_pool(DOMAIN, "raw-landing")
ROWS_MATCH_MANIFEST = "rows_match_manifest"
MAX_REASONS_IN_METADATA = 5

Mask = npt.NDArray[np.bool_]


# -- row rules ----------------------------------------------------------------------------------------------------


def _values(table: pa.Table, column: str, rows: Sequence[int]) -> list[Any]:
    return list(table[column].take(pa.array(rows, pa.int64())).to_pylist())


def _mask(condition: pa.ChunkedArray | pa.Array) -> Mask:
    """A boolean Arrow result as a numpy mask; null (a comparison with a null value) is not a violation."""
    return np.asarray(pc.fill_null(condition, False).to_numpy(zero_copy_only=False), dtype=np.bool_)


@dataclass(frozen=True)
class Rule:
    """A row-level condition of the landing contract; a row that breaks it is quarantined with the reason.

    Rules see the typed rows (after parsing). A null passes every rule but ``Required``: whether a column may be
    null is that rule's business alone.
    """

    def violations(self, table: pa.Table) -> Mask:
        raise NotImplementedError

    def reasons(self, table: pa.Table, rows: Sequence[int]) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Required(Rule):
    column: str

    def violations(self, table: pa.Table) -> Mask:
        return _mask(pc.is_null(table[self.column]))

    def reasons(self, table: pa.Table, rows: Sequence[int]) -> list[str]:
        return [f"{self.column} is required but null"] * len(rows)


@dataclass(frozen=True)
class Between(Rule):
    """``low <= value <= high``; either bound may be open (None)."""

    column: str
    low: int | None = None
    high: int | None = None
    unless: tuple[str, tuple[str, ...]] | None = None  # (column, values): rows with those values are exempt

    def violations(self, table: pa.Table) -> Mask:
        column = table[self.column]
        bad = np.zeros(table.num_rows, dtype=np.bool_)
        if self.low is not None:
            bad |= _mask(pc.less(column, self.low))
        if self.high is not None:
            bad |= _mask(pc.greater(column, self.high))
        if self.unless is not None:
            exempt_column, exempt_values = self.unless
            bad &= ~_mask(pc.is_in(table[exempt_column], pa.array(exempt_values, pa.string())))
        return bad

    def reasons(self, table: pa.Table, rows: Sequence[int]) -> list[str]:
        if self.low is not None and self.high is not None:
            expected = f"is outside [{self.low}, {self.high}]"
        elif self.low is not None:
            expected = f"is below {self.low}"
        else:
            expected = f"is above {self.high}"
        values = _values(table, self.column, rows)
        if self.unless is None:
            return [f"{self.column} {v} {expected}" for v in values]
        context = self.unless[0]
        return [
            f"{self.column} {v} {expected} for {context} {c!r}"
            for v, c in zip(values, _values(table, context, rows), strict=True)
        ]


@dataclass(frozen=True)
class OneOf(Rule):
    column: str
    allowed: tuple[Any, ...] = ()

    def violations(self, table: pa.Table) -> Mask:
        column = table[self.column]
        allowed = pa.array(self.allowed, column.type)
        return _mask(pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, allowed))))

    def reasons(self, table: pa.Table, rows: Sequence[int]) -> list[str]:
        allowed = ", ".join(str(a) for a in self.allowed)
        return [f"{self.column} {v!r} is not one of {allowed}" for v in _values(table, self.column, rows)]


@dataclass(frozen=True, init=False)
class Unique(Rule):
    """No two rows share the key: every occurrence after the first (in file order) is a duplicate."""

    key: tuple[str, ...]

    def __init__(self, *key: str) -> None:
        object.__setattr__(self, "key", key)

    def violations(self, table: pa.Table) -> Mask:
        keys = table.select(list(self.key))
        position = pa.array(np.arange(table.num_rows, dtype=np.int64))
        complete = np.ones(table.num_rows, dtype=np.bool_)
        for name in self.key:
            complete &= _mask(pc.is_valid(keys[name]))
        keyed = keys.append_column("_row", position).filter(pa.array(complete))
        firsts = keyed.group_by(list(self.key), use_threads=False).aggregate([("_row", "min")])["_row_min"]
        bad = complete.copy()
        bad[firsts.to_numpy()] = False
        return bad

    def reasons(self, table: pa.Table, rows: Sequence[int]) -> list[str]:
        if len(self.key) == 1:
            return [f"duplicate {self.key[0]} {v}" for v in _values(table, self.key[0], rows)]
        names = f"({', '.join(self.key)})"
        values = zip(*(_values(table, c, rows) for c in self.key), strict=True)
        return [f"duplicate {names} ({', '.join(str(v) for v in vs)})" for vs in values]


# The landing contract beyond types, per dataset. Every dataset also gets, from SCHEMAS: each non-nullable column
# is Required, and each money column (*_cents) is at least 0 (see rules_for).
RULES: dict[str, tuple[Rule, ...]] = {
    "customers": (Unique("customer_id"),),
    "merchants": (
        Unique("merchant_id"),
        OneOf("category", CATEGORIES),
        OneOf("region", REGIONS),
    ),
    "applications": (
        Unique("application_id"),
        OneOf("term_months", TERMS_MONTHS),
        Between("credit_score", 300, 850),
        OneOf("risk_band", RISK_BANDS),
        OneOf("decision", DECISIONS),
        OneOf("decline_reason", DECLINE_REASONS),
        Between("offered_apr_bps", 0, MAX_APR_BPS),
    ),
    "loans": (
        Unique("loan_id"),
        Between("principal_cents", low=1),
        OneOf("term_months", TERMS_MONTHS),
        Between("apr_bps", 0, MAX_APR_BPS),
        OneOf("risk_band", RISK_BANDS),
    ),
    "repayment_schedule": (Unique("loan_id", "schedule_version", "installment_number"),),
    "payments": (
        Unique("payment_id"),
        OneOf("payment_status", PAYMENT_STATUSES),
        Between("amount_cents", low=1, unless=("payment_status", ("missed",))),
        OneOf("reversal_reason", REVERSAL_REASONS),
    ),
    "refunds": (
        Unique("refund_id"),
        OneOf("refund_type", REFUND_TYPES),
        OneOf("reason", REFUND_REASONS),
    ),
    "charge_offs": (Unique("loan_id"),),  # a loan is charged off once
    "recoveries": (
        Unique("recovery_id"),
        OneOf("channel", RECOVERY_CHANNELS),
    ),
}


def rules_for(dataset: str) -> tuple[Rule, ...]:
    schema = SCHEMAS[dataset]
    required = tuple(Required(f.name) for f in schema if not f.nullable)
    money = tuple(Between(f.name, low=0) for f in schema if f.name.endswith("_cents"))
    return (*required, *money, *RULES[dataset])


# -- parsing --------------------------------------------------------------------------------------------------------


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
_ONE_BY_ONE = 16  # below this many values, casting each is cheaper than splitting further


def _bisect_cast(array: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[int]]:
    """Cast, splitting the array in halves until the values that fail are isolated."""
    failed: list[int] = []
    pieces: list[pa.Array] = []

    def cast_span(start: int, length: int) -> None:
        try:
            pieces.append(array.slice(start, length).cast(target))
            return
        except _CAST_ERRORS:
            pass
        if length > _ONE_BY_ONE:
            half = length // 2
            cast_span(start, half)
            cast_span(start + half, length - half)
            return
        for row in range(start, start + length):
            try:
                pieces.append(array.slice(row, 1).cast(target))
            except _CAST_ERRORS:
                failed.append(row)
                pieces.append(pa.nulls(1, target))

    cast_span(0, len(array))
    return pa.concat_arrays(pieces), failed


def cast_values(column: pa.ChunkedArray | pa.Array, target: pa.DataType) -> tuple[pa.Array, list[int]]:
    """Cast a column to ``target`` value by value: the cast column (null where a value failed) and the failed rows.

    The whole column is cast at once when it can be. Otherwise its distinct values are cast, split in halves until
    the ones that fail are isolated: a few bad values among a million cost a few dozen casts, and a column of one
    repeated junk value ("n/a") costs one.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    try:
        return array.cast(target), []
    except pa.ArrowNotImplementedError:
        # No cast exists between the two types: every value fails, and bisecting would only say so n times.
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
        return pa.nulls(len(array), target), [int(i) for i in np.flatnonzero(valid)]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    try:
        encoded = array.dictionary_encode()
    except pa.ArrowNotImplementedError:
        return _bisect_cast(array, target)
    distinct, failed_distinct = _bisect_cast(encoded.dictionary, target)
    failed = pc.is_in(encoded.indices, pa.array(failed_distinct, encoded.indices.type))
    return distinct.take(encoded.indices), [int(i) for i in np.flatnonzero(_mask(failed))]


@dataclass
class ParsedDataset:
    """One landing file split into rows that load (typed to the contract) and rows that are quarantined."""

    dataset: str
    rows: pa.Table  # the loading rows, SCHEMAS[dataset] columns (nullable)
    quarantined: dict[int, list[str]] = field(default_factory=dict)  # row number in the file -> reasons
    records: dict[int, str] = field(default_factory=dict)  # row number -> the row as delivered, as JSON
    ignored_columns: list[str] = field(default_factory=list)
    row_numbers: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # of `rows`, in the file

    def hold_back(self, reasons: Mapping[int, list[str]]) -> None:
        """Quarantine loading rows (positions in ``rows``) that a rule across rows refused; their record is typed."""
        if not reasons:
            return
        positions = sorted(reasons)
        for position, record in zip(
            positions, self.rows.take(pa.array(positions, pa.int64())).to_pylist(), strict=True
        ):
            row = int(self.row_numbers[position])
            self.quarantined[row] = self.quarantined.get(row, []) + reasons[position]
            self.records[row] = json.dumps(_redacted(self.dataset, record), default=str)
        keep = np.ones(self.rows.num_rows, dtype=np.bool_)
        keep[positions] = False
        self.rows, self.row_numbers = self.rows.filter(pa.array(keep)), self.row_numbers[keep]
        self.quarantined = dict(sorted(self.quarantined.items()))


# Clear PII lives in raw.customers only; a quarantined customer row keeps its row number in the landing file, where
# an operator with access to the landing zone can read the delivered values.
PII_COLUMNS = {
    "customers": ("first_name", "last_name", "email", "phone", "date_of_birth", "national_id", "street_address")
}


def _redacted(dataset: str, record: dict[str, Any]) -> dict[str, Any]:
    pii = PII_COLUMNS.get(dataset, ())
    return {k: ("<redacted pii>" if k in pii and v is not None else v) for k, v in record.items()}


def parse_dataset(dataset: str, landed: pa.Table) -> ParsedDataset:
    """Type the landed rows to the contract and apply its rules; needs every contract column present."""
    schema = SCHEMAS[dataset]
    reasons: dict[int, list[str]] = {}
    unparsed: set[tuple[int, str]] = set()  # (row, column) whose value failed to parse
    columns = []
    for contract in schema:
        column = landed[contract.name]
        if column.type == contract.type:
            columns.append(column.combine_chunks())
            continue
        cast, failed = cast_values(column, contract.type)
        columns.append(cast)
        for row, value in zip(failed, _values(landed, contract.name, failed), strict=True):
            reasons.setdefault(row, []).append(f"{contract.name}: cannot parse {value!r} as {contract.type}")
            unparsed.add((row, contract.name))
    typed = pa.Table.from_arrays(columns, schema=pa.schema([f.with_nullable(True) for f in schema]))
    for rule in rules_for(dataset):
        rows = [int(r) for r in np.flatnonzero(rule.violations(typed))]
        if isinstance(rule, Required):
            # A value that failed to parse is null now; its parse error is the reason, not "required".
            rows = [r for r in rows if (r, rule.column) not in unparsed]
        for row, reason in zip(rows, rule.reasons(typed, rows), strict=True):
            reasons.setdefault(row, []).append(reason)
    bad = sorted(reasons)
    keep = np.ones(landed.num_rows, dtype=np.bool_)
    keep[bad] = False
    delivered = landed.take(pa.array(bad, pa.int64())).to_pylist() if bad else []
    return ParsedDataset(
        dataset=dataset,
        rows=typed.filter(pa.array(keep)),
        quarantined={row: reasons[row] for row in bad},
        records={
            row: json.dumps(_redacted(dataset, record), default=str) for row, record in zip(bad, delivered, strict=True)
        },
        ignored_columns=sorted(set(landed.column_names) - set(schema.names)),
        row_numbers=np.flatnonzero(keep).astype(np.int64),
    )


# -- the drop ---------------------------------------------------------------------------------------------------


def latest_complete_drop(landing: LandingZone, location: str, business_date: date) -> DropInfo:
    versions = complete_versions(landing, business_date)
    if not versions:
        raise dg.Failure(
            description=(
                f"No complete drop exists for business date {business_date} at {location} (no version under "
                f"{DATASET_VERSION}/business_date={business_date.isoformat()}/ has a manifest): the landing is late "
                "or missing."
            ),
            metadata={"landing": location, "business_date": business_date.isoformat()},
        )
    prefix = drop_prefix(business_date, versions[-1])
    try:
        return DropInfo.from_manifest(read_manifest(landing, business_date, versions[-1]))
    except (ValueError, KeyError, TypeError) as exc:
        raise dg.Failure(
            description=f"The manifest of drop {prefix} at {location} cannot be read: {exc!r}; nothing was written.",
            metadata={"landing": location, "drop": prefix},
        ) from exc


def _verify_file(landing: LandingZone, entry: FileInfo) -> tuple[pa.Table | None, list[str]]:
    """The file's rows if it is exactly what the manifest describes, else the ways it differs."""
    where = f"{entry.dataset} ({entry.key})"
    if not landing.exists(entry.key):
        return None, [f"{where}: the file is missing"]
    data = landing.read_bytes(entry.key)
    digest = sha256_hex(data)
    differences = []
    if len(data) != entry.size_bytes:
        differences.append(f"size {len(data)} bytes, the manifest says {entry.size_bytes}")
    if digest != entry.sha256:
        differences.append(f"sha256 {digest}, the manifest says {entry.sha256}")
    if differences:
        return None, [f"{where}: {'; '.join(differences)} (truncated or corrupted)"]
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        return None, [f"{where}: not readable as Parquet: {exc}"]
    problems = []
    if table.num_rows != entry.rows:
        problems.append(
            f"{entry.dataset}: the manifest says {entry.rows} rows, the file has {table.num_rows} ({entry.key})"
        )
    problems += [
        f"{entry.dataset}: column {name!r} is missing from {entry.key}"
        for name in SCHEMAS[entry.dataset].names
        if name not in table.column_names
    ]
    return table, problems


def verify_drop(landing: LandingZone, location: str, drop: DropInfo) -> dict[str, pa.Table]:
    """Every dataset's landed rows, once the whole drop matches its manifest; else a Failure listing every problem."""
    listed = [f.dataset for f in drop.files]
    problems = [f"{d}: the manifest lists no file for it" for d in DATASETS if d not in listed]
    problems += [f"{d}: not a dataset of the contract" for d in sorted(set(listed) - set(DATASETS))]
    problems += [f"{d}: listed {listed.count(d)} times" for d in sorted({d for d in listed if listed.count(d) > 1})]
    tables: dict[str, pa.Table] = {}
    for entry in drop.files:
        if entry.dataset not in DATASETS:
            continue
        table, file_problems = _verify_file(landing, entry)
        problems += file_problems
        if table is not None:
            tables[entry.dataset] = table
    if problems:
        raise dg.Failure(
            description=(
                f"Drop {drop.prefix} at {location} does not match its manifest; nothing was written:\n"
                + "\n".join(f"- {p}" for p in problems)
            ),
            metadata={"landing": location, "drop": drop.prefix, "problems": problems},
        )
    return tables


def raw_rows(parsed: ParsedDataset, business_date: date, version: int) -> pa.Table:
    rows = parsed.rows
    return rows.add_column(0, "drop_version", pa.array(np.full(rows.num_rows, version, np.int32))).add_column(
        0, PARTITION, pa.array([business_date] * rows.num_rows, pa.date32())
    )


def quarantine_rows(parsed: Sequence[ParsedDataset], business_date: date, version: int) -> pa.Table:
    rows = [
        {
            PARTITION: business_date,
            "drop_version": version,
            "dataset": p.dataset,
            "row_number": row,
            "reason": "; ".join(reasons),
            "record": p.records[row],
        }
        for p in parsed
        for row, reasons in p.quarantined.items()
    ]
    return pa.Table.from_pylist(rows, schema=RAW_QUARANTINE.schema)


# -- the asset ------------------------------------------------------------------------------------------------------


# What the load reads of the lake besides the landing drop, declared once: the partitions the step reads come from
# these (batch_platform.inputs), and so do the Dagster dependencies, so a restated day's closure reaches the later
# days whose judgment it changes (their volume history, the parents they may hold rows back for).
#
# Dagster sees each raw table depend on its own earlier days only. The reads across raw tables (a dataset's
# volume counts the quarantine, a payment is held back for a loan quarantined earlier) are listed in each table's
# ``batch_platform/inputs`` metadata but are no Dagster edges: the load is one step that always writes every raw
# table of a day together (``can_subset=False``), so the self-dependencies already order the days and bring every
# table's later days into a restatement; edges between the tables with offsets would make the backfill daemon
# launch one run per day (it only groups a range of a self-dependent asset with nothing else), and two tables
# reading each other's past leave a backfill with no root. Dagster also takes one window per upstream table in a
# multi-asset, so a raw table is read through one window, every partition before the run, even where only the last
# loaded days count (the volume history).
VOLUME_HISTORY_DAYS = max(t.history_days for t in VOLUME_THRESHOLDS.values())
VOLUME_HISTORY = {d: LakeInput(RAW_TABLES[d], before_this_partition(), name=d) for d in DATASETS}
EARLIER_QUARANTINE = LakeInput(RAW_QUARANTINE, before_this_partition(), name="quarantine")
EARLIER_PARENTS = {parent: LakeInput(RAW_TABLES[parent], before_this_partition(), name=parent) for parent in PARENTS}


def reads_of(dataset: str | None) -> list[LakeInput]:
    """What the load of ``dataset`` (None: the quarantine) reads of the lake."""
    if dataset is None:
        return [EARLIER_QUARANTINE, *EARLIER_PARENTS.values()]
    parents = {r.parent for r in REFERENCES.get(dataset, ())}
    return [VOLUME_HISTORY[dataset], EARLIER_QUARANTINE, *(EARLIER_PARENTS[p] for p in sorted(parents))]


def _spec(table: LakeTable, reads: Sequence[LakeInput]) -> dg.AssetSpec:
    # What lake_asset puts on a single-table asset, so the catalog shows raw tables like every other lake table.
    return dg.AssetSpec(
        key=table.asset_key,
        description=table.description or None,
        group_name="raw",  # the layer; registration makes it the domain's group, lending_raw
        kinds={"iceberg"},
        tags={COMPUTE_PROFILE_TAG: DEFAULT_PROFILE},
        deps=[r.dep(partitioned=True) for r in reads if r.table == table],
        metadata={
            "iceberg/table": table.identifier,
            "dagster/table_name": table.identifier,
            "dagster/column_schema": column_schema(table),
            "iceberg/partition_column": table.partition_column or "",
            "batch_platform/inputs": dg.MetadataValue.json(
                {r.key: f"{r.table.identifier}: {r.window.describe()}" for r in reads}
            ),
        },
    )


def _selection(declared: LakeInput, keys: Sequence[str]) -> PartitionSelection:
    # Every table the load reads, it also writes: the run's own partitions are what it computes, never an input.
    return declared.selection(declared.table, LENDING_PARTITIONS, keys)


def _lineage(context: dg.AssetExecutionContext, table: LakeTable, keys: Sequence[str]) -> Lineage:
    return replace(Lineage.from_context(context, asset_key=table.asset_key), partition_keys=tuple(keys))


@dataclass(frozen=True)
class _LoadedDay:
    business_date: date
    drop: DropInfo
    parsed: dict[str, ParsedDataset]
    held_back: dict[str, int]  # rows quarantined because a row they refer to is, per dataset
    accepted_anomalies: list[str]  # volume anomalies the manifest declared expected

    def without_rows(self) -> "_LoadedDay":
        """What the run's results still need once the day is written (counts, reasons), not its rows: a run of
        months keeps one month's rows in memory."""
        empty = np.zeros(0, np.int64)
        parsed = {
            d: replace(p, rows=p.rows.schema.empty_table(), records={}, row_numbers=empty)
            for d, p in self.parsed.items()
        }
        return replace(self, parsed=parsed)


def _load_day(
    context: dg.AssetExecutionContext,
    landing: LandingZoneResource,
    key: str,
    volumes: RecentVolumes,
    parents: QuarantinedParents,
) -> tuple[_LoadedDay, list[str]]:
    """A verified, parsed drop with the contract's rules across rows applied, and its volume problems."""
    business_date = date.fromisoformat(key)
    zone, location = landing.zone(), landing.location()
    drop = latest_complete_drop(zone, location, business_date)
    landed = verify_drop(zone, location, drop)
    parsed = {d: parse_dataset(d, landed[d]) for d in DATASETS}
    held_back = apply_rules_across_rows(parsed, business_date, drop.version, parents)
    rows = {d: drop.rows(d) for d in DATASETS}
    verdict = volumes.judge(business_date, rows, dict(drop.expected_anomalies))
    volumes.record(business_date, rows)
    for accepted in verdict.accepted:
        context.log.warning(f"{drop.prefix}: {accepted}")
    context.log.info(
        f"{drop.prefix}: "
        + ", ".join(f"{p.dataset} {p.rows.num_rows} loaded/{len(p.quarantined)} quarantined" for p in parsed.values())
    )
    for p in parsed.values():
        if p.ignored_columns:
            context.log.warning(f"{p.dataset}: columns outside the contract are not loaded: {p.ignored_columns}")
    problems = [f"{drop.prefix}: {p}" for p in verdict.problems]
    return _LoadedDay(business_date, drop, parsed, held_back, verdict.accepted), problems


def _load_days(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, landing: LandingZoneResource, keys: Sequence[str]
) -> list[_LoadedDay]:
    """Every drop of ``keys``, in date order (each day's history includes the days before it, the lake's and the
    run's earlier writes'), or a Failure."""
    volumes = RecentVolumes.from_lake(
        lake,
        {d: _selection(VOLUME_HISTORY[d], keys) for d in DATASETS},
        _selection(EARLIER_QUARANTINE, keys),
        VOLUME_HISTORY_DAYS,
    )
    parents = QuarantinedParents.from_lake(
        lake, _selection(EARLIER_QUARANTINE, keys), {p: _selection(i, keys) for p, i in EARLIER_PARENTS.items()}
    )
    days, problems = [], []
    for key in keys:
        day, day_problems = _load_day(context, landing, key, volumes, parents)
        days.append(day)
        problems += day_problems
    if problems:
        raise dg.Failure(
            description=(
                f"Row counts far outside recent history at {landing.location()}; nothing was written:\n"
                + "\n".join(f"- {p}" for p in problems)
            ),
            metadata={"landing": landing.location(), "problems": problems},
        )
    return days


@dg.multi_asset(
    name="raw_landing_drop",
    description="Load a business day's landing drop into raw.* tables; rows failing the contract go to quarantine.",
    specs=[_spec(RAW_QUARANTINE, reads_of(None)), *(_spec(RAW_TABLES[d], reads_of(d)) for d in DATASETS)],
    check_specs=[
        dg.AssetCheckSpec(
            ROWS_MATCH_MANIFEST,
            asset=RAW_TABLES[d].asset_key,
            blocking=True,
            description="Rows loaded plus rows quarantined equal the rows the drop's manifest announced.",
        )
        for d in DATASETS
    ]
    + held_back_check_specs(),
    partitions_def=LENDING_PARTITIONS,
    backfill_policy=DAY_CHAIN_BACKFILL,
    can_subset=False,
    pool=RAW_LANDING_POOL,
    # A day's hold-backs read the days before it: the raw load is the root of the lender's day chain.
    op_tags={**profile_tags(DEFAULT_PROFILE), DAY_CHAIN_TAG: "true"},
)
def raw_landing_drop(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, landing: LandingZoneResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    days: list[_LoadedDay] = []
    written: dict[str, list[WriteResult]] = {t.identifier: [] for t in (RAW_QUARANTINE, *RAW_TABLES.values())}
    # A month of drops per write, in order: a backfill run of months holds one month in memory, and each month's
    # volume history and parents include the months the run wrote before it.
    for keys in in_writes_of(partition_keys(context), DAYS_PER_WRITE):
        try:
            loaded = _load_days(context, lake, landing, keys)
        except dg.Failure as failure:
            if not days:
                raise
            raise dg.Failure(
                description=(
                    f"{failure.description}\nThis run had already loaded {days[0].business_date}.."
                    f"{days[-1].business_date}; re-running it replaces them."
                ),
                metadata=failure.metadata,
            ) from failure
        for table, result in _write_days(context, lake, keys, loaded):
            written[table.identifier].append(result)
        days += [d.without_rows() for d in loaded]
    yield from _loaded_results(days, {t: WriteResult.combine(r) for t, r in written.items()})


def _write_days(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, keys: Sequence[str], days: Sequence[_LoadedDay]
) -> Iterator[tuple[LakeTable, WriteResult]]:
    """The verified drops of ``keys`` into the quarantine and each raw table: one commit per table."""
    # Replaced even when empty: a fixed re-delivery must clear the quarantine rows of the version before it.
    quarantine = pa.concat_tables(
        [quarantine_rows(list(d.parsed.values()), d.business_date, d.drop.version) for d in days]
    )
    yield (
        RAW_QUARANTINE,
        lake.write_arrow(
            RAW_QUARANTINE, quarantine, partition_keys=keys, lineage=_lineage(context, RAW_QUARANTINE, keys)
        ),
    )
    # One commit per table for all the write's days: a run that dies midway leaves some tables on the new version and
    # yields no check results for the rest; re-running the partitions completes it (every write replaces them).
    for dataset in DATASETS:
        table = RAW_TABLES[dataset]
        rows = pa.concat_tables([raw_rows(d.parsed[dataset], d.business_date, d.drop.version) for d in days])
        yield table, lake.write_arrow(table, rows, partition_keys=keys, lineage=_lineage(context, table, keys))


def _loaded_results(
    days: Sequence[_LoadedDay], written: Mapping[str, WriteResult]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The run's materializations and checks, from what its writes committed (by table identifier)."""
    kept = written[RAW_QUARANTINE.identifier]
    yield dg.MaterializeResult(
        asset_key=RAW_QUARANTINE.asset_key,
        metadata={
            **kept.metadata(),
            "landing/drops": dg.MetadataValue.json([d.drop.prefix for d in days]),
            **{f"quarantined/{ds}": sum(len(d.parsed[ds].quarantined) for d in days) for ds in DATASETS},
        },
    )
    for dataset in DATASETS:
        table = RAW_TABLES[dataset]
        quarantined = [q for d in days for q in d.parsed[dataset].quarantined.values()]
        reasons = [r for rs in quarantined[:MAX_REASONS_IN_METADATA] for r in rs]
        yield dg.MaterializeResult(
            asset_key=table.asset_key,
            metadata={
                **written[table.identifier].metadata(),
                "landing/drops": dg.MetadataValue.json([d.drop.prefix for d in days]),
                "landing/drop_versions": dg.MetadataValue.json({str(d.business_date): d.drop.version for d in days}),
                "landing/manifest_rows": sum(d.drop.rows(dataset) for d in days),
                "landing/quarantined_rows": len(quarantined),
                "landing/quarantine_sample": dg.MetadataValue.json(reasons),
                "landing/accepted_anomalies": dg.MetadataValue.json(
                    [a for d in days for a in d.accepted_anomalies if a.startswith(f"{dataset}:")]
                ),
                "landing/ignored_columns": dg.MetadataValue.json(
                    sorted({c for d in days for c in d.parsed[dataset].ignored_columns})
                ),
            },
        )

    # Counted from the commits (rows the snapshots added), not from what this step meant to write.
    quarantine_rows_meant = sum(len(d.parsed[ds].quarantined) for d in days for ds in DATASETS)
    quarantine_committed = kept.rows == quarantine_rows_meant
    for dataset in DATASETS:
        manifest_rows = sum(d.drop.rows(dataset) for d in days)
        quarantined_rows = sum(len(d.parsed[dataset].quarantined) for d in days)
        yield dg.AssetCheckResult(
            asset_key=RAW_TABLES[dataset].asset_key,
            check_name=ROWS_MATCH_MANIFEST,
            passed=quarantine_committed
            and written[RAW_TABLES[dataset].identifier].rows + quarantined_rows == manifest_rows,
            metadata={
                "manifest_rows": manifest_rows,
                "loaded_rows": written[RAW_TABLES[dataset].identifier].rows,
                "quarantined_rows": quarantined_rows,
                "quarantine_committed": quarantine_committed,
                "drop_versions": dg.MetadataValue.json({str(d.business_date): d.drop.version for d in days}),
            },
        )
    yield from held_back_check_results({d.business_date: d.held_back for d in days})


raw_assets = [raw_landing_drop]
