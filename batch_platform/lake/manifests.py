"""Main's manifests re-packed: a table's manifest list bounded by its size, not its age.

Every commit's fast append adds a manifest to main's manifest list, which every later commit and scan reads.
pyiceberg 0.12 has no ``rewrite_manifests``; this module adds one on its snapshot producer. Run by the maintenance
job (batch_platform.lake.maintenance); docs/benchmarks.md, "Commit cost against table age".
"""

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestContent, ManifestEntry, ManifestFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Operation, Snapshot, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import EMPTY_DICT

from batch_platform.lake.commit import MaintenanceLineage
from batch_platform.lake.errors import LakeError
from batch_platform.lake.resource import IcebergLakeResource
from batch_platform.lake.tables import LakeTable

log = logging.getLogger(__name__)

# Main's data manifests are re-packed once there are more than this (a fast append adds one per commit) ...
DEFAULT_MAX_MANIFESTS = 16
# ... into manifests of at most this many files, in partition order: a re-run of one partition then rewrites one
# manifest of this size in its commit, not one holding every file of the table.
DEFAULT_ENTRIES_PER_MANIFEST = 500


@dataclass(frozen=True)
class ManifestRewriteResult:
    manifests_before: int
    manifests_after: int
    entries_rewritten: int
    snapshot_id: int | None

    def metadata(self) -> dict[str, int]:
        return {
            "maintenance/manifests_before_rewrite": self.manifests_before,
            "maintenance/manifests_after_rewrite": self.manifests_after,
            "maintenance/manifest_entries_rewritten": self.entries_rewritten,
        }


def _partition_order(entry: ManifestEntry) -> tuple[tuple[bool, Any], ...]:
    # Nulls last; one partition field holds one type, so the values compare.
    partition = entry.data_file.partition
    return tuple((partition[i] is None, partition[i]) for i in range(len(partition)))


class _RewriteManifests(_SnapshotProducer["_RewriteManifests"]):
    """A ``replace`` snapshot of main with the same live data files, in fewer manifests.

    pyiceberg 0.12 has no RewriteManifests (Java's ``rewrite_manifests``), so this extends its snapshot producer
    (a private API, pinned by the lake's pyiceberg version and covered by tests/test_lake_metadata_upkeep.py). The
    data manifests of main's head are read again on every commit attempt, so a commit that lands between attempts
    is re-packed with the rest, never lost; delete manifests are kept as they are.
    """

    def __init__(
        self, transaction: Transaction, io: FileIO, snapshot_properties: dict[str, str], entries_per_manifest: int
    ) -> None:
        super().__init__(Operation.REPLACE, transaction, io, snapshot_properties=snapshot_properties)
        self._entries_per_manifest = entries_per_manifest
        self.entries_rewritten = 0

    def _validate_concurrency(self) -> None:
        """Nothing to validate: each attempt re-packs the head it commits on (see the class docstring)."""

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _existing_manifests(self) -> list[ManifestFile]:
        parent = self._parent()
        if parent is None:
            return []
        manifests = parent.manifests(self._io)
        by_spec: dict[int, list[ManifestEntry]] = defaultdict(list)
        for manifest in manifests:
            if manifest.content == ManifestContent.DATA:
                live = manifest.fetch_manifest_entry(self._io, discard_deleted=True)
                by_spec[manifest.partition_spec_id].extend(live)
        rewritten: list[ManifestFile] = []
        self.entries_rewritten = 0
        for spec_id, entries in sorted(by_spec.items()):
            entries.sort(key=_partition_order)
            for start in range(0, len(entries), self._entries_per_manifest):
                with self.new_manifest_writer(self.spec(spec_id)) as writer:
                    for entry in entries[start : start + self._entries_per_manifest]:
                        writer.existing(entry)  # keeps the entry's snapshot id and sequence numbers
                rewritten.append(writer.to_manifest_file())
            self.entries_rewritten += len(entries)
        return rewritten + [m for m in manifests if m.content != ManifestContent.DATA]

    def _parent(self) -> Snapshot | None:
        if self._parent_snapshot_id is None:
            return None
        return self._transaction.table_metadata.snapshot_by_id(self._parent_snapshot_id)

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        # pyiceberg's summary update refuses ``replace``; the table's totals are those of the parent.
        parent = self._parent()
        previous = parent.summary.additional_properties if parent is not None and parent.summary is not None else {}
        totals = {k: v for k, v in previous.items() if k.startswith("total-")}
        return Summary(operation=Operation.REPLACE, **totals, **snapshot_properties)


def _data_manifests(iceberg_table: Table) -> list[ManifestFile]:
    head = iceberg_table.current_snapshot()
    if head is None:
        return []
    return [m for m in head.manifests(iceberg_table.io) if m.content == ManifestContent.DATA]


def _live_files(iceberg_table: Table, snapshot_id: int) -> dict[str, int]:
    snapshot = iceberg_table.snapshot_by_id(snapshot_id)
    assert snapshot is not None
    return {
        entry.data_file.file_path: entry.data_file.record_count
        for manifest in snapshot.manifests(iceberg_table.io)
        for entry in manifest.fetch_manifest_entry(iceberg_table.io, discard_deleted=True)
    }


def rewrite_manifests(
    lake: IcebergLakeResource,
    table: LakeTable,
    *,
    max_manifests: int = DEFAULT_MAX_MANIFESTS,
    entries_per_manifest: int = DEFAULT_ENTRIES_PER_MANIFEST,
    run_id: str | None = None,
) -> ManifestRewriteResult:
    """Re-pack main's data manifests when there are more than ``max_manifests``, in partition order.

    Every commit's fast append adds a manifest to main's manifest list, which every later commit and scan reads;
    this bounds the list by the table's size (``entries_per_manifest`` files each) instead of its age. The new
    snapshot lists exactly the files the old head did (checked after the commit; a mismatch raises with the
    snapshot to roll back to). Older snapshots keep their manifests until they expire.
    """
    if entries_per_manifest < 1 or max_manifests < 1:
        raise ValueError("max_manifests and entries_per_manifest must be at least 1")
    iceberg_table = lake.load(table)
    before = _data_manifests(iceberg_table)
    if len(before) <= max_manifests:
        return ManifestRewriteResult(len(before), len(before), 0, None)
    lineage = MaintenanceLineage(
        run_id=run_id or f"maintenance-{uuid.uuid4().hex}",
        asset_key=table.asset_key.to_user_string(),
        action="rewrite-manifests",
    )
    summary = lineage.summary(f"rewrite-manifests-{uuid.uuid4().hex}")
    with iceberg_table.transaction() as tx:
        producer = _RewriteManifests(tx, iceberg_table.io, summary, entries_per_manifest)
        producer.commit()
    rewritten = lake.load(table)
    head = rewritten.snapshot_by_id(producer.snapshot_id)
    assert head is not None and head.parent_snapshot_id is not None
    if _live_files(rewritten, head.snapshot_id) != _live_files(rewritten, head.parent_snapshot_id):
        raise LakeError(
            f"{table.identifier}: the manifest rewrite (snapshot {head.snapshot_id}) does not list the files its "
            f"parent did; roll main back to snapshot {head.parent_snapshot_id}"
        )
    after = [m for m in head.manifests(rewritten.io) if m.content == ManifestContent.DATA]
    log.info("%s: rewrote %d data manifests as %d", table.identifier, len(before), len(after))
    return ManifestRewriteResult(len(before), len(after), producer.entries_rewritten, head.snapshot_id)
