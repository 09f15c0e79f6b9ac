"""Iceberg table maintenance: compact small files, rewrite manifests (batch_platform.lake.manifests), expire
snapshots, remove orphan files and dead runs' staging.

Every write replaces whole partitions, so each re-run leaves the replaced files behind, referenced only by older
snapshots; a run killed between staging and commit leaves its staged files in ``data/_staging/<run_id>/``. This
module reclaims both, and rewrites partitions made of many small files. It knows tables only as ``LakeTable``s.

It also keeps a table's metadata from growing with its age, which is what a commit costs in pyiceberg 0.12 (it
deep-copies the whole table metadata, every snapshot with its summary, many times per commit, and re-reads the
manifest list): snapshot expiry keeps at most ``max_snapshots`` of main's history and drops what published or
removed audit branches left behind, and main's manifests are re-packed when a fast append per commit has made many
(see docs/benchmarks.md, "Commit cost against table age").

Nothing a branch or tag references is expired, and no file that any remaining snapshot can read is deleted.
"""

# No ``from __future__ import annotations`` here: Dagster reads the op's ``dg.Config`` annotation at runtime.

import contextlib
import logging
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import Field
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import BooleanExpression
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import ancestors_of

from batch_platform.lake.audit_branches import remove_dead_audit_branches
from batch_platform.lake.commit import MaintenanceLineage, commit_replace, partition_filter
from batch_platform.lake.errors import LakeError, PartitionWriteConflict
from batch_platform.lake.manifests import (
    DEFAULT_ENTRIES_PER_MANIFEST,
    DEFAULT_MAX_MANIFESTS,
    rewrite_manifests,
)
from batch_platform.lake.resource import IcebergLakeResource
from batch_platform.lake.schema import apply_table_properties
from batch_platform.lake.tables import LakeTable

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_RETENTION = timedelta(days=30)
DEFAULT_ORPHAN_MIN_AGE = timedelta(hours=24)
DEFAULT_TARGET_FILE_BYTES = 128 * 1024 * 1024
DEFAULT_COMPACT_MIN_FILES = 5
# A commit's cost grows by about 0.7 ms of CPU with each snapshot the metadata holds (pyiceberg 0.12 deep-copies them
# all many times per commit), from about 20 ms for a new table: 25, plus a day of commits between maintenance
# runs, keeps the commit at about twice a new table's (1.9-2.0x measured, docs/benchmarks.md). That is two to four
# weeks of time travel for a table written once a day (one snapshot per new partition, two per re-run), less
# after a backfill; a lower cap buys margin with history.
DEFAULT_MAX_SNAPSHOTS = 25
STAGING_FOLDER = "data/_staging"
# Runs in these states may still write (or be about to write) into their staging folder.
LIVE_RUN_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
_EXPIRE_ATTEMPTS = 5
_EPOCH = date(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def _since_epoch(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (a float timestamp loses the last few hundred nanoseconds)."""
    if moment.tzinfo is None:
        raise ValueError("pass a timezone-aware datetime, e.g. datetime.now(UTC)")
    return (moment - _EPOCH_UTC) // timedelta(microseconds=1) * 1000


# -- results -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpireResult:
    expired_snapshots: int
    remaining_snapshots: int
    # Of expired_snapshots: those inside the retention but beyond max_snapshots of main's history, and those that
    # only a published or removed branch (an audit branch) ever reached.
    expired_beyond_max: int = 0
    expired_branch_leftovers: int = 0

    def metadata(self) -> dict[str, int]:
        return {
            "maintenance/expired_snapshots": self.expired_snapshots,
            "maintenance/expired_snapshots_beyond_max": self.expired_beyond_max,
            "maintenance/expired_branch_leftover_snapshots": self.expired_branch_leftovers,
            "maintenance/remaining_snapshots": self.remaining_snapshots,
        }


@dataclass(frozen=True)
class OrphanResult:
    """What orphan removal found under the table location and what it deleted (or would delete, in a dry run)."""

    files_listed: int
    reachable_files: int
    orphan_files_deleted: int
    orphan_bytes_deleted: int
    young_orphans_kept: int
    dead_staging_runs: int
    dead_staging_files_deleted: int
    dead_staging_bytes_deleted: int
    committed_staging_files_kept: int
    live_staging_runs_kept: int
    dry_run: bool = False

    @property
    def files_deleted(self) -> int:
        return self.orphan_files_deleted + self.dead_staging_files_deleted

    @property
    def bytes_deleted(self) -> int:
        return self.orphan_bytes_deleted + self.dead_staging_bytes_deleted

    def metadata(self) -> dict[str, int]:
        return {
            "maintenance/files_listed": self.files_listed,
            "maintenance/reachable_files": self.reachable_files,
            "maintenance/orphan_files_deleted": self.orphan_files_deleted,
            "maintenance/orphan_bytes_deleted": self.orphan_bytes_deleted,
            "maintenance/young_orphans_kept": self.young_orphans_kept,
            "maintenance/dead_staging_runs": self.dead_staging_runs,
            "maintenance/dead_staging_files_deleted": self.dead_staging_files_deleted,
            "maintenance/dead_staging_bytes_deleted": self.dead_staging_bytes_deleted,
            "maintenance/committed_staging_files_kept": self.committed_staging_files_kept,
            "maintenance/live_staging_runs_kept": self.live_staging_runs_kept,
            "maintenance/files_deleted": self.files_deleted,
            "maintenance/bytes_deleted": self.bytes_deleted,
        }


@dataclass(frozen=True)
class CompactionResult:
    partitions_compacted: int
    files_before: int
    files_after: int
    rows_rewritten: int
    partitions_skipped_too_large: int
    partitions_skipped_with_deletes: int

    def metadata(self) -> dict[str, int]:
        return {
            "maintenance/partitions_compacted": self.partitions_compacted,
            "maintenance/files_before_compaction": self.files_before,
            "maintenance/files_after_compaction": self.files_after,
            "maintenance/rows_rewritten": self.rows_rewritten,
            "maintenance/partitions_skipped_too_large": self.partitions_skipped_too_large,
            "maintenance/partitions_skipped_with_deletes": self.partitions_skipped_with_deletes,
        }


# -- expire snapshots ----------------------------------------------------------------------------------------------


def _snapshots_kept_by_refs(iceberg_table: Table, retain_last: int) -> set[int]:
    """Heads of every branch and tag, plus the last snapshots of each branch's history that must be kept."""
    metadata = iceberg_table.metadata
    kept: set[int] = set()
    for name, ref in metadata.refs.items():
        kept.add(ref.snapshot_id)
        if ref.snapshot_ref_type != SnapshotRefType.BRANCH:
            continue
        keep = max(ref.min_snapshots_to_keep or 1, retain_last if name == MAIN_BRANCH else 1)
        for index, snapshot in enumerate(ancestors_of(metadata.snapshot_by_id(ref.snapshot_id), metadata)):
            if index >= keep:
                break
            kept.add(snapshot.snapshot_id)
    return kept


def _main_history(iceberg_table: Table) -> list[int]:
    """Main's head and its ancestors, newest first."""
    metadata = iceberg_table.metadata
    head = metadata.snapshot_by_name(MAIN_BRANCH)
    return [s.snapshot_id for s in ancestors_of(head, metadata)] if head is not None else []


def branch_leftovers(iceberg_table: Table) -> set[int]:
    """Snapshots that no branch or tag reaches and that were never main's head.

    Only a branch that is gone wrote these: an audit branch after ``publish`` (main got the same data files in its
    own snapshot) or after ``remove_dead_audit_branches``. No history reads them. A snapshot that was main's head
    once and was rolled back from is in main's snapshot log and is not one of these: it ages out with the retention.
    The lake stages audited writes on branches, never as Iceberg ``wap.id`` staged snapshots, which would look the
    same and must not be expired before they are cherry-picked.
    """
    metadata = iceberg_table.metadata
    reached: set[int] = set()
    for ref in metadata.refs.values():
        head = metadata.snapshot_by_id(ref.snapshot_id)
        if head is not None:
            reached.update(s.snapshot_id for s in ancestors_of(head, metadata))
    were_main = {entry.snapshot_id for entry in metadata.snapshot_log}
    return {s.snapshot_id for s in metadata.snapshots if s.snapshot_id not in reached | were_main}


def expire_snapshots(
    lake: IcebergLakeResource,
    table: LakeTable,
    older_than: timedelta = DEFAULT_SNAPSHOT_RETENTION,
    *,
    retain_last: int = 1,
    max_snapshots: int | None = None,
    expire_branch_leftovers: bool = True,
    now: datetime | None = None,
) -> ExpireResult:
    """Expire snapshots older than the retention, with pyiceberg's ExpireSnapshots.

    Also expired, whatever their age: main's history beyond its newest ``max_snapshots`` (when set), so that a
    table's metadata, and the cost of its next commit, stays bounded however fast it is written; and, with
    ``expire_branch_leftovers``, the snapshots only a published or removed audit branch reached
    (``branch_leftovers``). Time travel is therefore to the retention or the last ``max_snapshots`` of main,
    whichever is shorter.

    Kept whatever their age: the current snapshot (and the last ``retain_last`` of main's history), the head of
    every branch and tag (an audit branch waiting for an operator), and the ``min-snapshots-to-keep`` of a branch
    that sets it. Expiring deletes no file: ``remove_orphan_files`` reclaims what the expired snapshots held.
    """
    if retain_last < 1:
        raise ValueError("retain_last must be at least 1: the current snapshot is always kept")
    if max_snapshots is not None and max_snapshots < retain_last:
        raise ValueError(f"max_snapshots ({max_snapshots}) must be at least retain_last ({retain_last})")
    cutoff_ms = _since_epoch((now or datetime.now(UTC)) - older_than) // 1_000_000
    expired: list[int] = []
    beyond_max: set[int] = set()
    leftovers: set[int] = set()
    for attempt in range(1, _EXPIRE_ATTEMPTS + 1):
        iceberg_table = lake.load(table)
        kept = _snapshots_kept_by_refs(iceberg_table, retain_last)
        beyond_max = set(_main_history(iceberg_table)[max_snapshots:]) - kept if max_snapshots is not None else set()
        leftovers = branch_leftovers(iceberg_table) - kept if expire_branch_leftovers else set()
        old = {s.snapshot_id for s in iceberg_table.snapshots() if s.timestamp_ms < cutoff_ms} - kept
        expired = sorted(old | beyond_max | leftovers)
        if not expired:
            break
        try:
            iceberg_table.maintenance.expire_snapshots().by_ids(expired).commit()
            break
        except CommitFailedException:
            # Another commit moved the table (a new branch may now protect a snapshot): plan again on a fresh load.
            if attempt == _EXPIRE_ATTEMPTS:
                raise
            log.warning("%s: expiring snapshots lost a commit race; retrying", table.identifier)
    remaining = len(lake.load(table).snapshots())
    log.info("%s: expired %d snapshots, %d remain", table.identifier, len(expired), remaining)
    return ExpireResult(
        expired_snapshots=len(expired),
        remaining_snapshots=remaining,
        expired_beyond_max=len(beyond_max),
        expired_branch_leftovers=len(leftovers - beyond_max),
    )


# -- orphan files --------------------------------------------------------------------------------------------------


def reachable_files(iceberg_table: Table) -> set[str]:
    """Every file the table's current metadata can lead a reader to, as URIs.

    The current metadata file and the metadata log, statistics files, and for every remaining snapshot (all
    branches and tags) its manifest list, its manifests and the live data and delete files they list. Entries a
    manifest marks deleted are not reachable: no remaining snapshot reads them.
    """
    metadata = iceberg_table.metadata
    io = iceberg_table.io
    files = {iceberg_table.metadata_location}
    files.update(entry.metadata_file for entry in metadata.metadata_log)
    files.update(stats.statistics_path for stats in metadata.statistics)
    files.update(stats.statistics_path for stats in metadata.partition_statistics)
    manifests = {}
    for snapshot in metadata.snapshots:
        files.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            manifests[manifest.manifest_path] = manifest
    files.update(manifests)
    for manifest in manifests.values():
        files.update(entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io, discard_deleted=True))
    return files


def _pyarrow_io(io: FileIO) -> PyArrowFileIO:
    # Listing needs a pyarrow file system, which pyiceberg's PyArrowFileIO builds for file://, s3:// and others.
    return io if isinstance(io, PyArrowFileIO) else PyArrowFileIO(io.properties)


def _staging_run(path: str, staging_root: str) -> str | None:
    """The run id of a file under ``data/_staging/<run_id>/``, or None for any other file."""
    if not path.startswith(staging_root):
        return None
    run_id, separator, _ = path[len(staging_root) :].partition("/")
    return run_id if separator and run_id else None


def remove_orphan_files(
    lake: IcebergLakeResource,
    table: LakeTable,
    older_than: timedelta = DEFAULT_ORPHAN_MIN_AGE,
    live_run_ids: Collection[str] = (),
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> OrphanResult:
    """Delete files under the table location that no remaining snapshot reaches.

    A file outside staging is deleted only if it is older than ``older_than``: a younger one may belong to a
    commit in flight. A staging folder ``data/_staging/<run_id>/`` of a run not in ``live_run_ids`` is cleaned
    whatever its age, since its run is over: its unreferenced files go (the whole folder if none is referenced),
    while staged files a commit registered in place stay. Folders of live runs are not touched.
    """
    iceberg_table = lake.load(table)
    io = _pyarrow_io(iceberg_table.io)
    scheme, netloc, root = io.parse_location(iceberg_table.location().rstrip("/"))
    fs = io.fs_by_scheme(scheme, netloc)
    # List before reading the metadata: a file committed meanwhile is then reachable in the metadata read after.
    listed = [
        info
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        if info.type == pafs.FileType.File
    ]
    iceberg_table = lake.load(table)
    reachable = {io.parse_location(uri)[2] for uri in reachable_files(iceberg_table)}
    listed_paths = {info.path for info in listed}
    reachable_here = {p for p in reachable if p.startswith(root + "/")}
    if reachable_here and not reachable_here & listed_paths:
        # Paths from the metadata and from the listing are spelled differently: deleting now would delete live data.
        raise LakeError(
            f"{table.identifier}: none of the {len(reachable_here)} files the metadata references was found listing "
            f"{root}; refusing to delete anything (example reference: {sorted(reachable_here)[0]})"
        )
    missing = reachable_here - listed_paths
    if missing:
        log.warning(
            "%s: %d referenced files were not found on storage, e.g. %s", table.identifier, len(missing), min(missing)
        )

    cutoff_ns = _since_epoch((now or datetime.now(UTC)) - older_than)
    staging_root = f"{root}/{STAGING_FOLDER}/"
    live = set(live_run_ids)
    orphans: list[pafs.FileInfo] = []
    young = 0
    staging_by_run: dict[str, list[pafs.FileInfo]] = {}
    for info in listed:
        run_id = _staging_run(info.path, staging_root)
        if run_id is not None:
            staging_by_run.setdefault(run_id, []).append(info)
        elif info.path not in reachable:
            if info.mtime_ns is not None and info.mtime_ns <= cutoff_ns:
                orphans.append(info)
            else:
                young += 1

    dead_runs = 0
    dead_files: list[pafs.FileInfo] = []
    committed_kept = 0
    to_delete = [info.path for info in orphans]
    whole_folders: list[str] = []
    for run_id, infos in staging_by_run.items():
        if run_id in live:
            continue
        dead_runs += 1
        unreferenced = [info for info in infos if info.path not in reachable]
        committed_kept += len(infos) - len(unreferenced)
        dead_files.extend(unreferenced)
        if len(unreferenced) == len(infos):
            whole_folders.append(f"{staging_root}{run_id}")  # one call, and no empty folders left behind
        else:
            to_delete.extend(info.path for info in unreferenced)

    if not dry_run:
        for path in to_delete:
            with contextlib.suppress(FileNotFoundError):  # gone already: nothing to reclaim
                fs.delete_file(path)
        for folder in whole_folders:
            fs.delete_dir(folder)

    result = OrphanResult(
        files_listed=len(listed),
        reachable_files=len(reachable),
        orphan_files_deleted=len(orphans),
        orphan_bytes_deleted=sum(info.size or 0 for info in orphans),
        young_orphans_kept=young,
        dead_staging_runs=dead_runs,
        dead_staging_files_deleted=len(dead_files),
        dead_staging_bytes_deleted=sum(info.size or 0 for info in dead_files),
        committed_staging_files_kept=committed_kept,
        live_staging_runs_kept=len(staging_by_run.keys() & live),
        dry_run=dry_run,
    )
    log.info("%s: %s", table.identifier, result)
    return result


# -- compaction ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PartitionFiles:
    key: str | None
    paths: frozenset[str]
    bytes: int
    has_deletes: bool


def _partition_key(value: Any) -> str:
    # An identity-partitioned date is stored as days since the epoch (Iceberg spec).
    day = value if isinstance(value, date) else _EPOCH + timedelta(days=int(value))
    return day.isoformat()


def _partitions_of(iceberg_table: Table, table: LakeTable) -> list[_PartitionFiles]:
    head = iceberg_table.current_snapshot()
    if head is None:
        return []
    paths: dict[str | None, set[str]] = {}
    sizes: dict[str | None, int] = {}
    deletes: dict[str | None, bool] = {}
    for task in iceberg_table.scan(snapshot_id=head.snapshot_id).plan_files():
        key = _partition_key(task.file.partition[0]) if table.partition_column is not None else None
        paths.setdefault(key, set()).add(task.file.file_path)
        sizes[key] = sizes.get(key, 0) + task.file.file_size_in_bytes
        deletes[key] = deletes.get(key, False) or bool(task.delete_files)
    return [_PartitionFiles(k, frozenset(paths[k]), sizes[k], deletes[k]) for k in sorted(paths, key=str)]


def _main_files(iceberg_table: Table, row_filter: BooleanExpression) -> frozenset[str]:
    head = iceberg_table.current_snapshot()
    if head is None:
        return frozenset()
    return frozenset(
        t.file.file_path for t in iceberg_table.scan(row_filter=row_filter, snapshot_id=head.snapshot_id).plan_files()
    )


def _loader_expecting(
    lake: IcebergLakeResource, table: LakeTable, row_filter: BooleanExpression, expected: frozenset[str]
) -> Callable[[], Table]:
    """A table loader for commit_replace whose first load must still show the files the compaction read.

    commit_replace guards its retries against the partition as its first load saw it; this closes the gap between
    reading the partition here and that first load, so a compaction never replaces rows it did not read.
    """
    checked = False

    def load() -> Table:
        nonlocal checked
        loaded = lake.load(table)
        if not checked:
            if _main_files(loaded, row_filter) != expected:
                raise PartitionWriteConflict(
                    f"{table.identifier}: a writer changed the partition while it was being compacted; not compacted"
                )
            checked = True
        return loaded

    return load


def _same_rows(before: pa.Table, after: pa.Table) -> bool:
    if before.num_rows != after.num_rows or before.schema != after.schema:
        return False
    if before.equals(after):
        return True
    # Several output files may come back in another order: compare as sorted multisets of rows.
    keys = [(name, "ascending") for name in before.column_names]
    try:
        return before.sort_by(keys).equals(after.sort_by(keys))
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return False  # columns that cannot be sorted: only an identical read counts as the same


def compact_partitions(
    lake: IcebergLakeResource,
    table: LakeTable,
    *,
    target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES,
    min_files: int = DEFAULT_COMPACT_MIN_FILES,
    run_id: str | None = None,
) -> CompactionResult:
    """Rewrite each partition of main made of at least ``min_files`` files, totalling at most ``target_file_bytes``,
    as one file.

    A partition is read from the current snapshot with pyarrow and replaced in one transaction through
    ``commit_replace``, the lake's own partition replacement, with a snapshot summary marking it as maintenance;
    the committed partition is read back and must hold the same rows. Partitions larger than the target (they
    would need several output files and more memory than a maintenance step should take) and partitions with
    row-level delete files are left as they are and counted as skipped.
    """
    if min_files < 2:
        raise ValueError("min_files must be at least 2: a partition of one file has nothing to compact")
    iceberg_table = lake.load(table)
    lineage_run_id = run_id or f"maintenance-{uuid.uuid4().hex}"
    compacted = files_before = files_after = rows = too_large = with_deletes = 0
    for part in _partitions_of(iceberg_table, table):
        if len(part.paths) < min_files:
            continue
        if part.has_deletes:
            with_deletes += 1
            continue
        if part.bytes > target_file_bytes:
            too_large += 1
            continue
        keys = [part.key] if part.key is not None else None
        row_filter = partition_filter(table, keys)
        head = iceberg_table.current_snapshot()
        assert head is not None  # the partition was listed from it
        data = iceberg_table.scan(row_filter=row_filter, snapshot_id=head.snapshot_id).to_arrow()
        result = commit_replace(
            _loader_expecting(lake, table, row_filter, part.paths),
            table,
            partition_keys=keys,
            lineage=MaintenanceLineage(
                run_id=lineage_run_id,
                asset_key=table.asset_key.to_user_string(),
                partition_keys=tuple(keys or ()),
                action="compaction",
            ),
            write_id=f"compaction-{uuid.uuid4().hex}",
            arrow_data=data,
            attempts=lake.commit_attempts,
        )
        iceberg_table = lake.load(table)
        reread = iceberg_table.scan(row_filter=row_filter, snapshot_id=result.snapshot_id).to_arrow()
        if not _same_rows(data, reread):
            raise LakeError(
                f"{table.identifier}: partition {part.key or '<all>'} does not read the same after compaction "
                f"(snapshot {result.snapshot_id}); roll main back to snapshot {head.snapshot_id}"
            )
        compacted += 1
        files_before += len(part.paths)
        files_after += result.files
        rows += data.num_rows
        log.info("%s: compacted %s from %d files to %d", table.identifier, part.key, len(part.paths), result.files)
    return CompactionResult(
        partitions_compacted=compacted,
        files_before=files_before,
        files_after=files_after,
        rows_rewritten=rows,
        partitions_skipped_too_large=too_large,
        partitions_skipped_with_deletes=with_deletes,
    )


# -- Dagster job ---------------------------------------------------------------------------------------------------


class MaintenanceConfig(dg.Config):
    retention_days: int = Field(default=30, description="expire snapshots older than this (branch heads are kept)")
    max_snapshots: int = Field(
        default=DEFAULT_MAX_SNAPSHOTS,
        description="keep at most this many snapshots of main's history even inside the retention; 0: no limit",
    )
    rewrite_manifests: bool = Field(default=True, description="re-pack main's manifests when there are many")
    max_manifests: int = Field(default=DEFAULT_MAX_MANIFESTS, description="re-pack above this many data manifests")
    entries_per_manifest: int = Field(
        default=DEFAULT_ENTRIES_PER_MANIFEST, description="files per manifest when manifests are re-packed"
    )
    orphan_min_age_hours: int = Field(
        default=24, description="delete unreferenced files older than this; dead runs' staging goes at any age"
    )
    audit_branch_retention_hours: int = Field(
        default=72, description="remove audit branches of runs that ended longer ago than this, and their files"
    )
    compact: bool = Field(default=True, description="rewrite partitions of many small files as one file")
    target_file_mb: int = Field(default=128, description="compact only partitions whose files total at most this")
    compact_min_files: int = Field(
        default=DEFAULT_COMPACT_MIN_FILES, description="compact a partition only from this many files up"
    )


def maintenance_op_name(table: LakeTable) -> str:
    return f"maintain__{table.namespace}__{table.name}"


def live_run_ids(instance: dg.DagsterInstance) -> set[str]:
    """Runs that may still write into their staging folders: queued, starting, running or being cancelled."""
    return set(instance.get_run_ids(filters=dg.RunsFilter(statuses=list(LIVE_RUN_STATUSES))))


def maintain_table(
    lake: IcebergLakeResource,
    table: LakeTable,
    config: MaintenanceConfig,
    instance: dg.DagsterInstance,
    run_id: str | None = None,
) -> dict[str, Any]:
    """One table's maintenance, in the order each step needs; returns what each step did, as asset metadata.

    The lake's table properties first (a table created before a default changed gets it without a write);
    compaction and the manifest rewrite before expiry, so the snapshots they replace expire in the same run; dead
    audit branches before orphan removal, which then deletes the files only those branches held.
    """
    apply_table_properties(lake.load(table), table)
    metadata: dict[str, Any] = {"iceberg/table": table.identifier}
    if config.compact:
        compaction = compact_partitions(
            lake,
            table,
            target_file_bytes=config.target_file_mb * 1024 * 1024,
            min_files=config.compact_min_files,
            run_id=run_id,
        )
        metadata.update(compaction.metadata())
    if config.rewrite_manifests:
        rewrite = rewrite_manifests(
            lake,
            table,
            max_manifests=config.max_manifests,
            entries_per_manifest=config.entries_per_manifest,
            run_id=run_id,
        )
        metadata.update(rewrite.metadata())
    expired = expire_snapshots(
        lake, table, timedelta(days=config.retention_days), max_snapshots=config.max_snapshots or None
    )
    metadata.update(expired.metadata())
    branches = remove_dead_audit_branches(lake, table, instance, timedelta(hours=config.audit_branch_retention_hours))
    metadata.update(branches.metadata())
    live = live_run_ids(instance)
    orphans = remove_orphan_files(lake, table, timedelta(hours=config.orphan_min_age_hours), live)
    metadata.update(orphans.metadata())
    head = lake.load(table).current_snapshot()
    metadata["iceberg/snapshot_id"] = head.snapshot_id if head is not None else None
    return metadata


def _maintenance_op(table: LakeTable) -> dg.OpDefinition:
    @dg.op(
        name=maintenance_op_name(table),
        description=(
            f"Compact, rewrite manifests, expire snapshots and remove orphan files of Iceberg table {table.identifier}."
        ),
        pool=table.pool,  # the table's writers' pool: maintenance never runs beside a write to this table
        out=dg.Out(dg.Nothing),
    )
    def maintain(
        context: dg.OpExecutionContext, config: MaintenanceConfig, lake: IcebergLakeResource
    ) -> Iterator[dg.AssetObservation | dg.Output[None]]:
        if not lake.catalog().table_exists(table.identifier):
            context.log.info(f"{table.identifier} does not exist yet: nothing to maintain")
            yield dg.Output(None, metadata={"iceberg/table": table.identifier, "maintenance/skipped": True})
            return
        metadata = maintain_table(lake, table, config, context.instance, context.run_id)
        context.log.info(f"{table.identifier}: {metadata}")
        yield dg.AssetObservation(asset_key=table.asset_key, metadata=metadata)
        yield dg.Output(None, metadata=metadata)

    return maintain


def build_maintenance_job(tables: Sequence[LakeTable], name: str = "iceberg_maintenance") -> dg.JobDefinition:
    """One op per table, each in the table's own concurrency pool, using the ``lake`` resource."""
    identifiers = [t.identifier for t in tables]
    duplicates = sorted({i for i in identifiers if identifiers.count(i) > 1})
    if duplicates:
        raise ValueError(f"tables listed more than once: {duplicates}")
    ops = [_maintenance_op(t) for t in tables]

    @dg.job(
        name=name,
        description="Iceberg maintenance: compaction, manifest rewrite, snapshot expiry, orphan and staging cleanup.",
    )
    def maintenance_job() -> None:
        for op in ops:
            op()

    return maintenance_job


def maintenance_run_config(tables: Sequence[LakeTable], **config: Any) -> dict[str, Any]:
    """Run config giving every table's op the same MaintenanceConfig values, e.g. ``retention_days=7``."""
    values = MaintenanceConfig(**config).model_dump()
    return {"ops": {maintenance_op_name(t): {"config": values} for t in tables}}


def build_maintenance_schedule(
    job: dg.JobDefinition, cron: str = "0 3 * * *", timezone: str = "UTC"
) -> dg.ScheduleDefinition:
    """Daily by default (03:00), running from the start: maintenance is not opt-in.

    Daily, not weekly: a commit's cost grows with every snapshot and manifest since the last run, so the run's
    interval bounds it (``max_snapshots`` plus one day's commits; docs/benchmarks.md, "Commit cost against table
    age").
    """
    return dg.ScheduleDefinition(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
