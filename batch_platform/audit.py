"""Write-audit-publish for lake assets: stage the files, audit the staged files, commit them to main only if the
blocking audits pass.

Audits are Dagster asset checks of the asset that writes the table, evaluated inside the asset's step against the
staged Parquet files the commit would reference. A failed blocking audit fails the step: main is untouched,
downstream assets do not run, and the files are committed to an audit branch for an operator to inspect (its name
is in the check's metadata).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage, WriteResult
from batch_platform.partitions import partition_keys as keys_of
from batch_platform.spark import SparkResource
from batch_platform.test_hooks import pause_point

SAMPLE_ROWS = 10


@dataclass(frozen=True)
class AuditOutcome:
    """Result of one audit: failing row count and a sample of the failing rows' values."""

    failing_rows: int
    sample: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0

    @classmethod
    def from_failures(cls, failures: DataFrame, **metadata: Any) -> AuditOutcome:
        """Count the failing rows of a DataFrame and keep a few of them for the operator."""
        failures = failures.cache()
        try:
            count = failures.count()
            sample = [row.asDict() for row in failures.limit(SAMPLE_ROWS).collect()] if count else []
        finally:
            failures.unpersist()
        return cls(failing_rows=count, sample=[{k: _plain(v) for k, v in r.items()} for r in sample], metadata=metadata)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


@dataclass(frozen=True)
class Audit:
    """A named rule over the rows a write staged.

    ``reads`` names declared inputs of the dataset the rule also needs (an orphan check reads its parent table);
    ``evaluate`` receives them as keyword arguments after the written rows. A row rule (``failing_row`` set: true
    for a row that breaks it) is counted while the rows are staged, in the write's own Spark job; ``evaluate`` then
    reads the staged files only when that count is not zero, for the exact count and a sample.
    """

    name: str
    description: str
    evaluate: Callable[..., AuditOutcome]
    blocking: bool = True
    reads: tuple[str, ...] = ()
    failing_row: Callable[[], Column] | None = None


def row_rule(name: str, description: str, failing_row: Callable[[], Column], *, blocking: bool = True) -> Audit:
    """An audit every row passes or fails on its own: ``failing_row`` is true (never null) for a failing row."""

    def evaluate(df: DataFrame) -> AuditOutcome:
        return AuditOutcome.from_failures(df.where(failing_row()))

    return Audit(name, description, evaluate, blocking, failing_row=failing_row)


def unique(*columns: str, blocking: bool = True) -> Audit:
    def evaluate(df: DataFrame) -> AuditOutcome:
        dupes = df.groupBy(*columns).count().where(F.col("count") > 1).withColumnRenamed("count", "occurrences")
        return AuditOutcome.from_failures(dupes)

    return Audit(f"unique_{'_'.join(columns)}", f"{', '.join(columns)} identify a row", evaluate, blocking)


def not_null(*columns: str, blocking: bool = True) -> Audit:
    def failing_row() -> Column:
        condition = F.lit(False)
        for column in columns:
            condition = condition | F.col(column).isNull()
        return condition

    name = f"not_null_{'_'.join(columns)}"
    return row_rule(name, f"{', '.join(columns)} are never null", failing_row, blocking=blocking)


def rows_satisfy(name: str, description: str, condition: Callable[[], Column], *, blocking: bool = True) -> Audit:
    """Every row satisfies a Spark column expression (nulls count as failures)."""
    return row_rule(name, description, lambda: ~F.coalesce(condition(), F.lit(False)), blocking=blocking)


def references(
    column: str, parent: str, parent_column: str | None = None, *, name: str | None = None, blocking: bool = True
) -> Audit:
    """Every row's ``column`` value exists in the declared input ``parent``: no orphan reaches main."""
    key = parent_column or column

    def evaluate(df: DataFrame, **inputs: DataFrame) -> AuditOutcome:
        # Probe the parent with the step's distinct ids (broadcast) instead of shuffling a whole history into a join:
        # the parent is scanned once, never moved. Joining the distinct ids with the parent's ids, both shuffled, was
        # twice as fast against a million loans but three times slower against a hundred million, a real history.
        wanted = F.broadcast(df.select(column).distinct())
        known = inputs[parent].select(F.col(key).alias(column)).join(wanted, column, "left_semi").distinct()
        return AuditOutcome.from_failures(df.join(known, column, "left_anti").select(column))

    return Audit(
        name or f"references_a_{parent.removesuffix('s')}",
        f"every row's {column} is a {key} of {parent}",
        evaluate,
        blocking,
        reads=(parent,),
    )


def audit_check_specs(table: LakeTable, audits: Sequence[Audit]) -> list[dg.AssetCheckSpec]:
    """The asset check specs to pass as ``check_specs`` to the asset that writes ``table``."""
    return [
        dg.AssetCheckSpec(name=a.name, asset=table.asset_key, description=a.description, blocking=a.blocking)
        for a in audits
    ]


@dataclass
class AuditedWrite:
    """One write through write-audit-publish: what each audit found on the staged files and where they went."""

    partition_keys: list[str] | None
    outcomes: list[tuple[Audit, AuditOutcome, float]]  # (audit, outcome, seconds)
    seconds: dict[str, float]
    published: WriteResult | None = None  # None: a blocking audit failed and main was not changed
    kept: dict[str, Any] = field(default_factory=dict)  # the audit branch holding the failed write

    @property
    def blocking_failures(self) -> list[str]:
        return [f"{a.name} ({o.failing_rows} rows)" for a, o, _ in self.outcomes if a.blocking and not o.passed]


def audit_and_commit(
    lake: IcebergLakeResource,
    session: SparkSession,
    table: LakeTable,
    df: DataFrame,
    audits: Sequence[Audit],
    *,
    partition_keys: Sequence[str] | None,
    lineage: Lineage,
    inputs: Mapping[str, DataFrame] | None = None,
) -> AuditedWrite:
    """Stage ``df`` as Parquet files, run the audits on those files, and commit them to main if every blocking audit
    passes, else to an audit branch. Reports nothing: ``report_writes`` turns a step's writes into its events."""
    keys = list(partition_keys) if partition_keys else None
    started = time.perf_counter()
    counted = [F.count_if(a.failing_row()).alias(a.name) for a in audits if a.failing_row is not None]
    write_id, staged = lake.stage_spark(session, table, df, partition_keys=keys, lineage=lineage, observe=counted)
    pause_point("staged", table.identifier)  # test-only: inert unless a test arms it
    files = lake.check_staged(table, staged, partition_keys=keys)
    seconds = {"wap/stage_seconds": time.perf_counter() - started}
    pause_point("audit", table.identifier)
    # Not cached: each audit reads only the columns it needs from the staged Parquet files. Caching every column
    # (the book's installments too) pinned the storage memory, and a 23-day chunk of the book at scale 1 then
    # failed its uniqueness audit for lack of execution memory (docs/benchmarks.md, "Backfill").
    audited = lake.read_staged(session, table, files)
    outcomes: list[tuple[Audit, AuditOutcome, float]] = []
    for audit in audits:
        audit_started = time.perf_counter()
        if audit.failing_row is not None and staged.observed.get(audit.name) == 0:
            outcome = AuditOutcome(failing_rows=0, metadata={"counted": "while staging"})
        else:
            outcome = audit.evaluate(audited, **{name: (inputs or {})[name] for name in audit.reads})
        outcomes.append((audit, outcome, time.perf_counter() - audit_started))
    seconds["wap/audit_seconds"] = sum(s for _, _, s in outcomes)
    write = AuditedWrite(keys, outcomes, seconds)
    if write.blocking_failures:
        branch = lake.create_audit_branch(table, lineage)
        on_branch = lake.commit_files(table, write_id, files, partition_keys=keys, lineage=lineage, branch=branch)
        write.kept = {"audit_branch": branch, "branch_snapshot_id": on_branch.snapshot_id}
        return write
    commit_started = time.perf_counter()
    write.published = lake.commit_files(table, write_id, files, partition_keys=keys, lineage=lineage)
    seconds["wap/commit_seconds"] = time.perf_counter() - commit_started
    return write


def _span(keys: Sequence[str] | None) -> str:
    if not keys:
        return "the table"
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]}"


def report_writes(
    table: LakeTable, writes: Sequence[AuditedWrite], *, asset_key: dg.AssetKey | None = None
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """A step's consecutive writes to one table as the step's events: one check result per audit over all of them
    and one materialization, or a failure naming what was committed before the write that failed (only the last
    write can have failed: a step stops at the first)."""
    failed = writes[-1] if writes and writes[-1].published is None else None
    for index, (audit, _, _) in enumerate(writes[0].outcomes if writes else []):
        found = [w.outcomes[index][1] for w in writes]
        failing = [o for o in found if not o.passed]
        yield dg.AssetCheckResult(
            asset_key=table.asset_key,
            check_name=audit.name,
            passed=not failing,
            severity=dg.AssetCheckSeverity.ERROR if audit.blocking else dg.AssetCheckSeverity.WARN,
            metadata={
                "failing_rows": sum(o.failing_rows for o in found),
                "failing_sample": dg.MetadataValue.json([r for o in failing for r in o.sample][:SAMPLE_ROWS]),
                "audit_seconds": round(sum(w.outcomes[index][2] for w in writes), 3),
                **({"audit_branch": failed.kept["audit_branch"]} if failed else {}),
                **{k: v for o in found for k, v in o.metadata.items()},
            },
        )
    published = [w.published for w in writes if w.published is not None]
    if failed is not None:
        before = ""
        if published:
            committed = [k for w in writes[:-1] for k in w.partition_keys or []]
            before = f" The run's earlier writes were committed ({_span(committed)}); re-running it replaces them."
        raise dg.Failure(
            description=(
                f"{table.identifier}: audit failed for {_span(failed.partition_keys)}: "
                f"{', '.join(failed.blocking_failures)}. Main was not changed by that write; its data is on branch "
                f"{failed.kept['audit_branch']!r} for inspection.{before}"
            ),
            metadata=failed.kept,
        )
    seconds = {k: round(sum(w.seconds.get(k, 0.0) for w in writes), 3) for k in writes[0].seconds}
    combined = WriteResult.combine(published)
    metadata = {"iceberg/audited_rows": combined.rows, **seconds}
    if len(writes) > 1:
        metadata["wap/writes"] = len(writes)
    yield dg.MaterializeResult(asset_key=asset_key, metadata=combined.materialize_result(**metadata).metadata)


def write_audit_publish(
    context: dg.AssetExecutionContext,
    lake: IcebergLakeResource,
    spark: SparkResource,
    table: LakeTable,
    df: DataFrame,
    audits: Sequence[Audit],
    *,
    inputs: Mapping[str, DataFrame] | None = None,
    asset_key: dg.AssetKey | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Stage ``df`` as Parquet files, run the audits on those files (with the declared inputs they read), and commit
    them to main, once, if every blocking audit passes. ``asset_key`` names the asset in a multi-asset step.

    The audits read the very files the commit will reference, so main never holds data that failed a blocking audit
    and a passing step costs one catalog commit (auditing on a branch cost four: branch, write, publish, drop). Data
    that fails is committed to an audit branch instead, where an operator can read it (and publish it after review);
    maintenance drops such branches after their retention.

    Where the step's time went is in the metadata: ``wap/stage_seconds`` (computing ``df`` and writing its files,
    most of a step), ``wap/audit_seconds`` and ``wap/commit_seconds`` on the materialization, each audit's own
    ``audit_seconds`` on its check.
    """
    write = audit_and_commit(
        lake,
        spark.session,
        table,
        df,
        audits,
        partition_keys=keys_of(context) or None,
        lineage=Lineage.from_context(context, asset_key),
        inputs=inputs,
    )
    yield from report_writes(table, [write], asset_key=asset_key)
