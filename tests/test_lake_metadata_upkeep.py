"""Metadata that ages well, on real pyiceberg tables on local disk: old metadata files deleted after commits,
snapshot expiry bounded (main's history capped, published audit branches' snapshots gone), main's manifests
re-packed with every row kept, and a maintenance step that fails midway leaving the table as it was.

DuckDB is not installed in this project, so the "other reader" is pyarrow alone: the current metadata file opened
as a StaticTable (no catalog) and its data files read with pyarrow.parquet.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import StaticTable
from pyiceberg.table.snapshots import Operation
from test_lake_crash_safety import ASSET_KEY, local_path, rows_for
from test_lake_maintenance import _commit_staged, _sorted_rows, _stage, _table, _write

from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.maintenance import (
    MaintenanceConfig,
    branch_leftovers,
    expire_snapshots,
    maintain_table,
    remove_orphan_files,
)
from batch_platform.lake.manifests import rewrite_manifests

FIRST_DAY = date(2024, 1, 1)


def _days(count: int) -> list[str]:
    return [(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(count)]


def _metadata_files(lake: IcebergLakeResource, table: LakeTable) -> set[str]:
    folder = local_path(lake.load(table).metadata_location).parent
    return {str(p) for p in folder.glob("*.metadata.json")}


def _data_manifests(lake: IcebergLakeResource, table: LakeTable) -> int:
    iceberg_table = lake.load(table)
    head = iceberg_table.current_snapshot()
    assert head is not None
    return sum(1 for m in head.manifests(iceberg_table.io) if m.content == ManifestContent.DATA)


def _count_and_sum(rows: pa.Table) -> tuple[int, float]:
    return rows.num_rows, pc.sum(rows["amount"]).as_py()


def _read_without_the_catalog(metadata_location: str) -> pa.Table:
    """Another reader's view: the metadata file alone, and the data files it lists read by pyarrow.parquet."""
    static = StaticTable.from_metadata(metadata_location)
    files = [task.file.file_path for task in static.scan().plan_files()]
    return pa.concat_tables([pq.read_table(local_path(f)) for f in files]).sort_by(
        [("event_date", "ascending"), ("event_id", "ascending")]
    )


def test_old_metadata_files_beyond_the_configured_count_are_deleted_and_the_table_still_reads(
    lake: IcebergLakeResource,
) -> None:
    table = LakeTable(
        namespace="test",
        name="metadata_files",
        schema=_table("x").schema,
        partition_column="event_date",
        properties={"write.metadata.previous-versions-max": "4"},
    )
    for key in _days(10):
        _write(lake, table, key, 5)

    current = lake.load(table)
    logged = {str(local_path(e.metadata_file)) for e in current.metadata.metadata_log}
    assert len(logged) == 4
    # On disk: the current file and the four the log keeps, nothing older.
    assert _metadata_files(lake, table) == logged | {str(local_path(current.metadata_location))}
    rows = _sorted_rows(lake, table)
    assert rows.num_rows == 50
    assert _read_without_the_catalog(current.metadata_location).equals(rows)
    # Every snapshot still reads: deleting metadata files deletes no snapshot.
    for snapshot in current.snapshots():
        lake.read_arrow(table, snapshot_id=snapshot.snapshot_id)


def test_a_table_created_before_the_metadata_properties_gets_them_at_its_next_write_and_sheds_old_files(
    lake: IcebergLakeResource,
) -> None:
    old_defaults = {
        "write.metadata.delete-after-commit.enabled": "false",
        "write.metadata.previous-versions-max": "100",
    }
    before = LakeTable("test", "upgraded", _table("x").schema, partition_column="event_date", properties=old_defaults)
    for key in _days(30):
        _write(lake, before, key, 2)
    assert len(_metadata_files(lake, before)) == 31  # creation and 30 commits, all kept

    now = LakeTable("test", "upgraded", before.schema, partition_column="event_date")  # the lake's defaults
    _write(lake, now, "2024-03-01", 2)

    current = lake.load(now)
    assert current.properties["write.metadata.delete-after-commit.enabled"] == "true"
    assert len(current.metadata.metadata_log) == 25
    assert len(_metadata_files(lake, now)) == 26
    assert _read_without_the_catalog(current.metadata_location).num_rows == 62


def test_maintenance_gives_a_table_no_longer_written_the_lake_properties(lake: IcebergLakeResource) -> None:
    table = _table("idle")
    for key in _days(3):
        _write(lake, table, key, 2)
    # As a table created before the default changed: its next write would fix it, but none is coming.
    tx = lake.load(table).transaction()
    tx.set_properties({"write.metadata.delete-after-commit.enabled": "false"})
    tx.commit_transaction()

    maintain_table(lake, table, MaintenanceConfig(), dg.DagsterInstance.ephemeral())

    assert lake.load(table).properties["write.metadata.delete-after-commit.enabled"] == "true"


def test_published_audit_branch_snapshots_expire_while_main_and_its_time_travel_stay_readable(
    lake: IcebergLakeResource,
) -> None:
    table = _table(f"published_{uuid.uuid4().hex[:6]}")
    key = "2024-03-04"
    first = _write(lake, table, key, 5)
    first_rows = _sorted_rows(lake, table)
    published_rows = []
    for run in range(3):  # three audited writes, each published: branch, write to it, publish (drops the branch)
        run_id = uuid.uuid4().hex
        lineage = Lineage(run_id, ASSET_KEY, (key,))
        branch = lake.create_audit_branch(table, lineage)
        staged = _stage(lake, table, run_id, key, [3 + run])
        lake.commit_staged(
            table, local_path(staged.staging_uri).name, staged, partition_keys=[key], lineage=lineage, branch=branch
        )
        lake.publish(table, branch, partition_keys=[key], lineage=lineage)
        published_rows.append(_sorted_rows(lake, table))
    # And one audit branch still waiting for an operator.
    waiting = lake.create_audit_branch(table, Lineage("waiting", ASSET_KEY, (key,)))

    before = lake.load(table)
    leftovers = branch_leftovers(before)
    main_history = {s.snapshot_id for s in before.snapshots()} - leftovers
    assert len(leftovers) == 6  # each branch write was a delete and an append; the branches are gone

    result = expire_snapshots(lake, table)  # 30 days: nothing of main is old enough

    after = lake.load(table)
    assert result.expired_branch_leftovers == 6 and result.expired_snapshots == 6
    assert {s.snapshot_id for s in after.snapshots()} == main_history
    assert not branch_leftovers(after)
    assert after.snapshot_by_name(waiting) is not None
    # Orphan removal then reclaims the branches' manifests, never the published data files main now lists.
    remove_orphan_files(lake, table, older_than=timedelta(0))
    assert _sorted_rows(lake, table).equals(published_rows[-1])
    assert _sorted_rows(lake, table, ref=waiting).equals(published_rows[-1])
    # Time travel inside the retention reads each version main had.
    assert (
        lake.read_arrow(table, snapshot_id=first)
        .sort_by([("event_date", "ascending"), ("event_id", "ascending")])
        .equals(first_rows)
    )


def test_expiry_keeps_at_most_max_snapshots_of_main_and_each_kept_one_reads(lake: IcebergLakeResource) -> None:
    table = _table("capped")
    days = _days(8)
    versions: dict[int, int] = {}
    for count, key in enumerate(days, start=1):
        versions[_write(lake, table, key, 2)] = count * 2
    held = next(iter(versions))  # a tag on the oldest version is kept whatever the cap
    lake.load(table).manage_snapshots().create_tag(snapshot_id=held, tag_name="kept").commit()

    result = expire_snapshots(lake, table, max_snapshots=3)

    remaining = {s.snapshot_id for s in lake.load(table).snapshots()}
    newest_three = list(versions)[-3:]
    assert remaining == {*newest_three, held}
    assert result.expired_beyond_max == 4
    for snapshot_id in [*newest_three, held]:
        assert lake.read_arrow(table, snapshot_id=snapshot_id).num_rows == versions[snapshot_id]
    with pytest.raises(ValueError, match="at least retain_last"):
        expire_snapshots(lake, table, retain_last=5, max_snapshots=3)


def test_manifest_rewrite_keeps_every_row_and_file_and_later_writes_still_replace_partitions(
    lake: IcebergLakeResource,
) -> None:
    table = _table("repacked")
    lake.table(table)  # commit_staged writes to an existing table (a Spark write creates it before staging)
    days = _days(20)
    for key in days:
        _commit_staged(lake, table, key, [3, 4])
    _commit_staged(lake, table, days[5], [6])  # a re-run: its delete rewrote a manifest
    before = lake.load(table)
    head = before.current_snapshot()
    assert head is not None and head.summary is not None
    rows = _sorted_rows(lake, table)
    files = {t.file.file_path for t in before.scan().plan_files()}
    assert _data_manifests(lake, table) > 6

    result = rewrite_manifests(lake, table, max_manifests=6, entries_per_manifest=15)

    after = lake.load(table)
    rewritten = after.current_snapshot()
    assert rewritten is not None and rewritten.summary is not None
    assert rewritten.snapshot_id == result.snapshot_id and rewritten.parent_snapshot_id == head.snapshot_id
    assert rewritten.summary.operation == Operation.REPLACE
    assert rewritten.summary["total-records"] == head.summary["total-records"]
    assert result.entries_rewritten == len(files) == 39
    assert result.manifests_after == _data_manifests(lake, table) == 3  # 39 files, 15 a manifest
    assert _sorted_rows(lake, table).equals(rows)
    assert _count_and_sum(_sorted_rows(lake, table)) == _count_and_sum(rows)
    assert {t.file.file_path for t in after.scan().plan_files()} == files
    assert _read_without_the_catalog(after.metadata_location).equals(rows)
    # One partition's scan still prunes to its files; the version before the rewrite still reads.
    assert lake.read_arrow(table, [days[5]]).num_rows == 6
    assert lake.read_arrow(table, snapshot_id=head.snapshot_id).num_rows == rows.num_rows
    # A later re-run replaces its partition in the packed manifests; the other partitions are untouched.
    _commit_staged(lake, table, days[0], [1])
    assert lake.read_arrow(table, [days[0]]).num_rows == 1
    assert lake.read_arrow(table).num_rows == rows.num_rows - 7 + 1
    # Few manifests: nothing to do, no commit.
    assert rewrite_manifests(lake, table, max_manifests=6).snapshot_id is None


def test_a_manifest_rewrite_whose_commit_fails_leaves_the_table_as_it_was_and_the_next_run_succeeds(
    lake: IcebergLakeResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _table("interrupted")
    for key in _days(8):
        lake.write_arrow(table, rows_for(key, 4, "w"), partition_keys=[key], lineage=Lineage("w", ASSET_KEY, (key,)))
    location = lake.load(table).metadata_location
    rows = _sorted_rows(lake, table)

    def lost_catalog(*args: object, **kwargs: object) -> None:
        raise ConnectionError("catalog unreachable mid-commit")  # outcome unknown: pyiceberg keeps what it wrote

    with monkeypatch.context() as patched:
        patched.setattr(SqlCatalog, "commit_table", lost_catalog)
        with pytest.raises(ConnectionError):
            maintain_table(lake, table, MaintenanceConfig(max_manifests=2), dg.DagsterInstance.ephemeral())

    assert lake.load(table).metadata_location == location
    assert _sorted_rows(lake, table).equals(rows)
    assert _read_without_the_catalog(location).equals(rows)
    # The next run re-packs, and orphan removal takes the manifests the failed attempt wrote.
    result = maintain_table(
        lake, table, MaintenanceConfig(max_manifests=2, orphan_min_age_hours=0), dg.DagsterInstance.ephemeral()
    )
    assert result["maintenance/manifests_after_rewrite"] == 1
    assert result["maintenance/orphan_files_deleted"] > 0
    assert _sorted_rows(lake, table).equals(rows)
