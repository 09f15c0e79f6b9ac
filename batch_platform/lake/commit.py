"""One atomic "replace these partitions" commit, with lineage in the snapshot summary and retries on races."""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg
import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException, ValidationException
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Snapshot

from batch_platform.lake.errors import PartitionWriteConflict
from batch_platform.lake.tables import LakeTable
from batch_platform.test_hooks import pause_point

log = logging.getLogger(__name__)

SUMMARY_RUN_ID = "dagster.run-id"
SUMMARY_ASSET_KEY = "dagster.asset-key"
SUMMARY_PARTITIONS = "dagster.partition-keys"
SUMMARY_WRITE_ID = "batch-platform.write-id"


@dataclass(frozen=True)
class Lineage:
    """Who wrote a commit: stored in every snapshot summary the write produces."""

    run_id: str
    asset_key: str
    partition_keys: tuple[str, ...] = ()

    @classmethod
    def from_context(cls, context: dg.AssetExecutionContext, asset_key: dg.AssetKey | None = None) -> Lineage:
        """Lineage of the step; a multi-asset names which of its assets the write is for."""
        keys = tuple(context.partition_keys) if context.has_partition_key_range or context.has_partition_key else ()
        key = asset_key or context.asset_key
        return cls(run_id=context.run_id, asset_key=key.to_user_string(), partition_keys=keys)

    def summary(self, write_id: str) -> dict[str, str]:
        return {
            SUMMARY_RUN_ID: self.run_id,
            SUMMARY_ASSET_KEY: self.asset_key,
            SUMMARY_PARTITIONS: ",".join(self.partition_keys),
            SUMMARY_WRITE_ID: write_id,
        }


@dataclass(frozen=True)
class WriteResult:
    """What one write committed, read from the commit's own snapshot (not from a later look at the table)."""

    table: str
    snapshot_id: int | None
    rows: int
    files: int
    bytes: int
    partitions: tuple[str, ...]
    attempts: int
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "iceberg/table": self.table,
            "iceberg/snapshot_id": self.snapshot_id,
            "dagster/row_count": self.rows,
            "iceberg/files_added": self.files,
            "iceberg/bytes_added": self.bytes,
            "iceberg/partitions_written": len(self.partitions),
            "iceberg/commit_attempts": self.attempts,
            **self.extra,
        }

    def materialize_result(self, **metadata: Any) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={**self.metadata(), **metadata})

    @classmethod
    def combine(cls, results: Sequence[WriteResult]) -> WriteResult:
        """One step's consecutive writes to one table as one result: their rows, files and partitions added up, the
        last one's snapshot (the table's state after the step)."""
        if not results:
            raise ValueError("no writes to combine")
        last = results[-1]
        return cls(
            table=last.table,
            snapshot_id=last.snapshot_id,
            rows=sum(r.rows for r in results),
            files=sum(r.files for r in results),
            bytes=sum(r.bytes for r in results),
            partitions=tuple(p for r in results for p in r.partitions),
            attempts=max(r.attempts for r in results),
            extra=last.extra,
        )


def partition_filter(table: LakeTable, partition_keys: Sequence[str] | None) -> BooleanExpression:
    """The rows a write of these partitions replaces: those partitions, or the whole table if it is unpartitioned."""
    if table.partition_column is None:
        return AlwaysTrue()
    if not partition_keys:
        raise ValueError(f"{table.identifier} is partitioned by {table.partition_column}: name the partitions to write")
    values = sorted({date.fromisoformat(k) for k in partition_keys})
    # pyiceberg's expressions are pydantic models whose generated signature mypy misreads.
    if len(values) == 1:
        return EqualTo(table.partition_column, values[0])  # type: ignore[call-arg,arg-type]
    return In(table.partition_column, values)  # type: ignore[call-arg,arg-type]


def find_snapshot(iceberg_table: Table, write_id: str) -> Snapshot | None:
    """The last snapshot of this write (the append, after the delete), if it reached the table."""
    for snapshot in reversed(iceberg_table.metadata.snapshots):
        if snapshot.summary is not None and snapshot.summary.get(SUMMARY_WRITE_ID) == write_id:
            return snapshot
    return None


def _files_in(iceberg_table: Table, row_filter: BooleanExpression, branch: str) -> set[str]:
    """Data files of the branch head that hold rows of the given partitions."""
    head = iceberg_table.snapshot_by_name(branch)
    if head is None:
        return set()
    scan = iceberg_table.scan(row_filter=row_filter, snapshot_id=head.snapshot_id)
    return {task.file.file_path for task in scan.plan_files()}


def _conflict_message(table: LakeTable, partition_keys: Sequence[str] | None, lineage: Lineage) -> str:
    return (
        f"{table.identifier}: another writer committed to partitions {list(partition_keys or ['<all>'])} while run "
        f"{lineage.run_id} was writing them; this write was not applied. Re-run it once the other run has finished."
    )


def commit_replace(
    load_table: Callable[[], Table],
    table: LakeTable,
    *,
    partition_keys: Sequence[str] | None,
    lineage: Lineage,
    write_id: str,
    data_files: Sequence[str] = (),
    arrow_data: pa.Table | None = None,
    existing_files: Sequence[DataFile] = (),
    branch: str = MAIN_BRANCH,
    attempts: int = 10,
) -> WriteResult:
    """Replace the given partitions with the new data in one catalog commit.

    The delete and the append are one transaction: readers see the old partition or the new one, never neither or
    both. A commit that loses a race with another writer is retried by pyiceberg (table properties), and again here
    on a freshly loaded table. A race on the same partitions is a conflict, reported and never retried: the
    other writer's data must not be silently replaced.

    The new data is staged Parquet paths (``data_files``, Spark), rows (``arrow_data``), or data files already in
    the table on another branch (``existing_files``, publishing an audited write).
    """
    delete_filter = partition_filter(table, partition_keys)
    summary = lineage.summary(write_id)
    base_files: set[str] = set()
    for attempt in range(1, attempts + 1):
        iceberg_table = load_table()
        if attempt == 1:
            # The partitions as this write found them; pyiceberg validates its own retries against this view.
            base_files = _files_in(iceberg_table, delete_filter, branch)
        else:
            if find_snapshot(iceberg_table, write_id) is not None:
                break  # an earlier attempt's commit landed although its response was lost
            if _files_in(iceberg_table, delete_filter, branch) != base_files:
                # Re-basing this write on the fresh table would silently replace another run's commit.
                raise PartitionWriteConflict(_conflict_message(table, partition_keys, lineage))
        try:
            with iceberg_table.transaction() as tx, warnings.catch_warnings():
                # Replacing a partition that does not exist yet is normal; pyiceberg warns about it.
                warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                tx.delete(delete_filter=delete_filter, snapshot_properties=summary, branch=branch)
                if data_files:
                    # Staged file names are unique per write, so the full-table duplicate check is wasted work.
                    tx.add_files(
                        list(data_files), snapshot_properties=summary, check_duplicate_files=False, branch=branch
                    )
                if arrow_data is not None and arrow_data.num_rows:
                    tx.append(arrow_data, snapshot_properties=summary, branch=branch)
                if existing_files:
                    with tx.update_snapshot(snapshot_properties=summary, branch=branch).fast_append() as append:
                        for data_file in existing_files:
                            append.append_data_file(data_file)
                pause_point("commit", f"{table.identifier}@{branch}")  # test-only: inert unless a test arms it
            break
        except ValidationException as exc:
            raise PartitionWriteConflict(f"{_conflict_message(table, partition_keys, lineage)} ({exc})") from exc
        except (CommitFailedException, CommitStateUnknownException) as exc:
            lost_a_race = load_table().metadata_location != iceberg_table.metadata_location
            if attempt == attempts or not (lost_a_race or isinstance(exc, CommitStateUnknownException)):
                # A requirement that fails on an unchanged table is not a race: retrying cannot help.
                raise
            delay = min(5.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning("%s: commit attempt %d failed (%s); retrying in %.2fs", table.identifier, attempt, exc, delay)
            time.sleep(delay)
    snapshot = find_snapshot(iceberg_table, write_id)
    props = snapshot.summary.additional_properties if snapshot is not None and snapshot.summary else {}
    return WriteResult(
        table=table.identifier,
        snapshot_id=snapshot.snapshot_id if snapshot is not None else None,
        rows=int(props.get("added-records", 0)),
        files=int(props.get("added-data-files", 0)),
        bytes=int(props.get("added-files-size", 0)),
        partitions=tuple(sorted(partition_keys or ())),
        attempts=attempt,
    )


# Snapshot summary key naming the maintenance action that wrote a snapshot (compaction, rewrite-manifests, ...).
SUMMARY_MAINTENANCE = "batch-platform.maintenance"


@dataclass(frozen=True)
class MaintenanceLineage(Lineage):
    """Lineage of a maintenance commit: the usual keys plus which maintenance action wrote the snapshot."""

    action: str = "compaction"

    def summary(self, write_id: str) -> dict[str, str]:
        return {**super().summary(write_id), SUMMARY_MAINTENANCE: self.action}
