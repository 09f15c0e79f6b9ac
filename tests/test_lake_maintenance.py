"""Iceberg maintenance on real tables: snapshot expiry, orphan and staging cleanup, compaction, the Dagster job.

The killed run is a real child process with a real SparkSession (tests/_crash_writer.py, as in the crash-safety
test), SIGKILLed after staging its files and before its commit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.manifest import ManifestContent
from test_lake_crash_safety import (
    ASSET_KEY,
    CRASH_EVENTS,
    CRASH_WRITER,
    STAGE_TIMEOUT_S,
    kill_process_group,
    local_path,
    rows_for,
    wait_for_marker,
)

from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.commit import SUMMARY_MAINTENANCE, SUMMARY_RUN_ID, partition_filter
from batch_platform.lake.maintenance import (
    build_maintenance_job,
    build_maintenance_schedule,
    compact_partitions,
    expire_snapshots,
    maintenance_op_name,
    maintenance_run_config,
    remove_orphan_files,
)
from batch_platform.lake.spark_io import StagedFiles

NEVER_WRITTEN = LakeTable(
    namespace="test", name="never_written", schema=CRASH_EVENTS.schema, partition_column="event_date"
)
TWO_DAYS_AGO = time.time() - 2 * 24 * 3600


def _table(name: str) -> LakeTable:
    return LakeTable(namespace="test", name=name, schema=CRASH_EVENTS.schema, partition_column="event_date")


def _write(lake: IcebergLakeResource, table: LakeTable, key: str, rows: int) -> int:
    run_id = uuid.uuid4().hex
    result = lake.write_arrow(
        table, rows_for(key, rows, run_id), partition_keys=[key], lineage=Lineage(run_id, ASSET_KEY, (key,))
    )
    assert result.snapshot_id is not None
    return result.snapshot_id


def _stage(lake: IcebergLakeResource, table: LakeTable, run_id: str, key: str, file_rows: list[int]) -> StagedFiles:
    """Stage Parquet files the way a Spark write leaves them: part files plus a _SUCCESS marker."""
    write_id = uuid.uuid4().hex
    uri = lake.staging_uri(table, run_id, write_id)
    folder = local_path(uri)
    folder.mkdir(parents=True)
    files = []
    for index, rows in enumerate(file_rows):
        path = folder / f"part-{index:05d}.parquet"
        part = rows_for(key, rows, run_id)
        part = part.set_column(1, "event_id", pa.array(range(index * 1000, index * 1000 + rows), pa.int64()))
        pq.write_table(part, path)
        files.append(path.as_uri())
    (folder / "_SUCCESS").touch()
    return StagedFiles(uri, tuple(files), (key,))


def _commit_staged(lake: IcebergLakeResource, table: LakeTable, key: str, file_rows: list[int]) -> StagedFiles:
    run_id = uuid.uuid4().hex
    staged = _stage(lake, table, run_id, key, file_rows)
    write_id = local_path(staged.staging_uri).name
    lake.commit_staged(table, write_id, staged, partition_keys=[key], lineage=Lineage(run_id, ASSET_KEY, (key,)))
    return staged


def _files_on_disk(lake: IcebergLakeResource, table: LakeTable) -> dict[str, int]:
    """Every file under the table location, with its size."""
    root = local_path(lake.load(table).location())
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _reachable_on_disk(lake: IcebergLakeResource, table: LakeTable) -> set[str]:
    """What the table's current metadata reaches, gathered with pyiceberg's inspect API."""
    current = lake.load(table)
    uris = {current.metadata_location, *(e.metadata_file for e in current.metadata.metadata_log)}
    uris |= {s.manifest_list for s in current.snapshots()}
    uris |= set(current.inspect.all_manifests()["path"].to_pylist())
    uris |= set(current.inspect.all_files()["file_path"].to_pylist())
    return {str(local_path(u)) for u in uris}


def _partition_files(lake: IcebergLakeResource, table: LakeTable, key: str) -> set[str]:
    scan = lake.load(table).scan(row_filter=partition_filter(table, [key]))
    return {task.file.file_path for task in scan.plan_files()}


def _sorted_rows(lake: IcebergLakeResource, table: LakeTable, ref: str | None = None) -> pa.Table:
    return lake.read_arrow(table, ref=ref).sort_by([("event_date", "ascending"), ("event_id", "ascending")])


def _kill_a_spark_write_after_staging(lake: IcebergLakeResource, key: str, run_id: str, log_dir: Path) -> Path:
    log_file = log_dir / "crash_writer.stderr"
    with log_file.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(CRASH_WRITER),
                *("--data-dir", str(lake.data_dir), "--partition", key, "--rows", "300", "--run-id", run_id),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: killpg reaches the Spark JVM too
        )
        try:
            staged = wait_for_marker(proc, log_file, STAGE_TIMEOUT_S)
        finally:
            kill_process_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert staged.files, "the killed writer staged nothing"
    return local_path(lake.run_staging_uri(CRASH_EVENTS, run_id))


@pytest.mark.spark  # Spark runs in the child process it kills
def test_maintenance_job_after_reruns_and_a_killed_run_leaves_only_reachable_files_and_same_rows(
    lake: IcebergLakeResource, tmp_path: Path
) -> None:
    day, other_day = "2024-03-01", "2024-03-04"
    for rows in range(100, 105):  # five re-runs of one partition: four replaced versions stay behind as files
        _write(lake, CRASH_EVENTS, day, rows)
    _write(lake, CRASH_EVENTS, other_day, 50)
    # A finished Spark-style run: its committed files stay where they were staged, beside an unreferenced _SUCCESS.
    committed = _commit_staged(lake, CRASH_EVENTS, other_day, [20, 30, 40])

    # A writer still running (in the instance the job asks): its staging folder is not touched.
    instance = dg.DagsterInstance.ephemeral()
    live_run = instance.add_run(dg.DagsterRun(job_name="writer", status=dg.DagsterRunStatus.STARTED))
    live_staged = _stage(lake, CRASH_EVENTS, live_run.run_id, day, [10])
    live_files = {
        str(p) for p in local_path(lake.run_staging_uri(CRASH_EVENTS, live_run.run_id)).rglob("*") if p.is_file()
    }
    assert {str(local_path(f)) for f in live_staged.files} < live_files

    killed_folder = _kill_a_spark_write_after_staging(lake, day, uuid.uuid4().hex, tmp_path)
    killed_files = {p for p in killed_folder.rglob("*") if p.is_file()}
    assert killed_files

    before = lake.load(CRASH_EVENTS)
    head = before.current_snapshot()
    assert head is not None
    snapshots_before = len(before.snapshots())
    manifests_before = len([m for m in head.manifests(before.io) if m.content == ManifestContent.DATA])
    rows_before = _sorted_rows(lake, CRASH_EVENTS)
    disk_before = _files_on_disk(lake, CRASH_EVENTS)
    committed_paths = {str(local_path(f)) for f in committed.files}
    committed_success = str(local_path(committed.staging_uri) / "_SUCCESS")

    job = build_maintenance_job([CRASH_EVENTS, NEVER_WRITTEN])
    result = job.execute_in_process(
        instance=instance,
        resources={"lake": lake},
        run_config=maintenance_run_config([CRASH_EVENTS, NEVER_WRITTEN], retention_days=0, orphan_min_age_hours=0),
    )
    assert result.success

    # On disk: exactly what the current metadata reaches, plus the live run's staging; the rows did not change.
    after = lake.load(CRASH_EVENTS)
    assert [s.snapshot_id for s in after.snapshots()] == [head.snapshot_id]
    disk_after = _files_on_disk(lake, CRASH_EVENTS)
    reachable = _reachable_on_disk(lake, CRASH_EVENTS)
    assert set(disk_after) == reachable | live_files
    assert _sorted_rows(lake, CRASH_EVENTS).equals(rows_before)
    assert not killed_folder.exists()
    assert committed_paths <= set(disk_after)
    assert committed_success not in disk_after

    # The counts on the asset page are the files that actually went.
    deleted = set(disk_before) - set(disk_after)
    dead_staging = {str(p) for p in killed_files} | {committed_success}
    orphans = deleted - dead_staging
    assert orphans and not any("/_staging/" in p for p in orphans)
    observations = result.asset_observations_for_node(maintenance_op_name(CRASH_EVENTS))
    assert [o.asset_key for o in observations] == [CRASH_EVENTS.asset_key]
    observed = {k: v.value for k, v in observations[0].metadata.items()}
    assert observed == {
        "iceberg/table": CRASH_EVENTS.identifier,
        "iceberg/snapshot_id": head.snapshot_id,
        "maintenance/partitions_compacted": 0,
        "maintenance/files_before_compaction": 0,
        "maintenance/files_after_compaction": 0,
        "maintenance/rows_rewritten": 0,
        "maintenance/partitions_skipped_too_large": 0,
        "maintenance/partitions_skipped_with_deletes": 0,
        "maintenance/manifests_before_rewrite": manifests_before,  # too few to re-pack
        "maintenance/manifests_after_rewrite": manifests_before,
        "maintenance/manifest_entries_rewritten": 0,
        "maintenance/expired_snapshots": snapshots_before - 1,
        "maintenance/expired_snapshots_beyond_max": 0,
        "maintenance/expired_branch_leftover_snapshots": 0,
        "maintenance/remaining_snapshots": 1,
        "maintenance/audit_branches_removed": 0,
        "maintenance/audit_branch_snapshots_expired": 0,
        "maintenance/audit_branches_of_live_runs_kept": 0,
        "maintenance/audit_branches_within_retention_kept": 0,
        "maintenance/files_listed": len(disk_before) + 1,  # + the metadata file of the expiry commit
        "maintenance/reachable_files": len(reachable),
        "maintenance/orphan_files_deleted": len(orphans),
        "maintenance/orphan_bytes_deleted": sum(disk_before[p] for p in orphans),
        "maintenance/young_orphans_kept": 0,
        "maintenance/dead_staging_runs": 2,
        "maintenance/dead_staging_files_deleted": len(dead_staging),
        "maintenance/dead_staging_bytes_deleted": sum(disk_before[p] for p in dead_staging),
        "maintenance/committed_staging_files_kept": len(committed_paths),
        "maintenance/live_staging_runs_kept": 1,
        "maintenance/files_deleted": len(deleted),
        "maintenance/bytes_deleted": sum(disk_before[p] for p in deleted),
    }
    outputs = [e for e in result.events_for_node(maintenance_op_name(CRASH_EVENTS)) if e.is_successful_output]
    assert [{k: v.value for k, v in e.step_output_data.metadata.items()} for e in outputs] == [observed]

    # A table that does not exist yet is skipped, not created.
    assert not result.asset_observations_for_node(maintenance_op_name(NEVER_WRITTEN))
    assert not lake.catalog().table_exists(NEVER_WRITTEN.identifier)


def test_expiry_keeps_snapshots_inside_retention_and_what_a_branch_references(lake: IcebergLakeResource) -> None:
    table = _table("expiry_events")
    day = "2024-05-02"
    first = _write(lake, table, day, 10)
    first_rows = _sorted_rows(lake, table)
    for rows in (20, 30):
        _write(lake, table, day, rows)
    all_snapshots = {s.snapshot_id for s in lake.load(table).snapshots()}

    inside_retention = expire_snapshots(lake, table, older_than=timedelta(days=1))
    assert inside_retention.expired_snapshots == 0
    assert {s.snapshot_id for s in lake.load(table).snapshots()} == all_snapshots

    # An audit branch left on the first version, then everything else is past its retention.
    lake.load(table).manage_snapshots().create_branch(snapshot_id=first, branch_name="audit-held").commit()
    current = lake.load(table).current_snapshot()
    assert current is not None
    expired = expire_snapshots(lake, table, older_than=timedelta(0))
    assert {s.snapshot_id for s in lake.load(table).snapshots()} == {first, current.snapshot_id}
    assert expired.expired_snapshots == len(all_snapshots) - 2
    assert expired.remaining_snapshots == 2

    # Orphan removal deletes the other versions' files but not the branch's: both refs still read their rows.
    removed = remove_orphan_files(lake, table, older_than=timedelta(0))
    assert removed.orphan_files_deleted > 0
    assert _sorted_rows(lake, table, ref="audit-held").equals(first_rows)
    assert lake.read_arrow(table).num_rows == 30


def test_orphan_removal_spares_live_staging_and_young_files_but_not_dead_runs_staging(
    lake: IcebergLakeResource,
) -> None:
    table = _table("orphan_events")
    day = "2024-05-03"
    _write(lake, table, day, 10)
    live_run, dead_run = uuid.uuid4().hex, uuid.uuid4().hex
    live = _stage(lake, table, live_run, day, [5, 5])
    dead = _stage(lake, table, dead_run, day, [5])  # written just now: a dead run's staging goes whatever its age
    data_folder = local_path(lake.load(table).location()) / "data"
    old_orphan, young_orphan = data_folder / "old-orphan.parquet", data_folder / "young-orphan.parquet"
    old_orphan.write_bytes(b"x" * 100)
    young_orphan.write_bytes(b"y" * 10)
    os.utime(old_orphan, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    live_folder = local_path(lake.run_staging_uri(table, live_run))
    live_before = {p: p.read_bytes() for p in live_folder.rglob("*") if p.is_file()}

    result = remove_orphan_files(lake, table, older_than=timedelta(days=1), live_run_ids={live_run})

    assert {p: p.read_bytes() for p in live_folder.rglob("*") if p.is_file()} == live_before
    assert len(live_before) == len(live.files) + 1  # part files and _SUCCESS
    assert not local_path(lake.run_staging_uri(table, dead_run)).exists()
    assert not old_orphan.exists()
    assert young_orphan.exists()
    assert (result.live_staging_runs_kept, result.dead_staging_runs) == (1, 1)
    assert result.dead_staging_files_deleted == len(dead.files) + 1
    assert (result.orphan_files_deleted, result.orphan_bytes_deleted) == (1, 100)
    assert result.young_orphans_kept == 1
    assert lake.read_arrow(table).num_rows == 10


def test_compaction_rewrites_a_partition_of_small_files_as_one_and_leaves_the_others(
    lake: IcebergLakeResource,
) -> None:
    table = _table("compaction_events")
    many, few, single = "2024-06-03", "2024-06-04", "2024-06-05"
    lake.table(table)
    _commit_staged(lake, table, many, [10, 20, 30, 40, 50, 60])
    _commit_staged(lake, table, few, [7, 8])
    _write(lake, table, single, 9)
    rows_before = _sorted_rows(lake, table)
    few_files, single_files = _partition_files(lake, table, few), _partition_files(lake, table, single)
    assert len(_partition_files(lake, table, many)) == 6

    too_small_target = compact_partitions(lake, table, target_file_bytes=1, min_files=2)
    assert (too_small_target.partitions_compacted, too_small_target.partitions_skipped_too_large) == (0, 2)

    result = compact_partitions(lake, table, min_files=3, run_id="maintenance-run")

    assert (result.partitions_compacted, result.files_before, result.files_after) == (1, 6, 1)
    assert result.rows_rewritten == 210
    assert len(_partition_files(lake, table, many)) == 1
    assert _partition_files(lake, table, few) == few_files and _partition_files(lake, table, single) == single_files
    assert _sorted_rows(lake, table).equals(rows_before)
    head = lake.load(table).current_snapshot()
    assert head is not None and head.summary is not None
    assert head.summary.get(SUMMARY_MAINTENANCE) == "compaction"
    assert head.summary.get(SUMMARY_RUN_ID) == "maintenance-run"


def test_maintenance_job_runs_each_table_in_its_pool_and_its_schedule_starts_running(
    lake: IcebergLakeResource,
) -> None:
    tables = [_table("pool_a"), _table("pool_b")]
    job = build_maintenance_job(tables, name="lake_maintenance")
    schedule = build_maintenance_schedule(job, timezone="Europe/London")

    assert {n.name: n.pool for n in job.graph.node_defs} == {maintenance_op_name(t): t.pool for t in tables}
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.execution_timezone == "Europe/London"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    defs = dg.Definitions(jobs=[job], schedules=[schedule], resources={"lake": lake})
    assert defs.get_job_def("lake_maintenance").name == "lake_maintenance"
    with pytest.raises(ValueError, match="more than once"):
        build_maintenance_job([tables[0], tables[0]])


@pytest.fixture
def s3_lake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> Iterator[tuple[IcebergLakeResource, str]]:
    """A lake whose warehouse is a bucket on a moto S3 server (SQLite catalog), and that bucket's name."""
    endpoint = moto_endpoint
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"  # the moto server is shared by the module's tests
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield (
        IcebergLakeResource(
            data_dir=str(tmp_path / "catalog"),
            warehouse=f"s3://{bucket}/warehouse",
            s3_endpoint=endpoint,
            region="us-east-1",
        ),
        endpoint,
    )


def test_orphan_removal_lists_and_deletes_through_s3(s3_lake: tuple[IcebergLakeResource, str]) -> None:
    lake, endpoint = s3_lake
    table = _table("s3_events")
    day = "2024-07-01"
    for rows in (10, 20, 30):
        _write(lake, table, day, rows)
    location = lake.load(table).location()
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    dead_staged = f"{prefix}/data/_staging/{uuid.uuid4().hex}/write/part-00000.parquet"
    s3.put_object(Bucket=bucket, Key=dead_staged, Body=b"staged by a run that died")

    def keys() -> set[str]:
        """Object keys under the table, without the empty "folder/" markers pyarrow leaves when emptying a folder."""
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        objects = [o for page in pages for o in page.get("Contents", [])]
        return {f"s3://{bucket}/{o['Key']}" for o in objects if not (o["Key"].endswith("/") and o["Size"] == 0)}

    keys_before = keys()
    expire_snapshots(lake, table, older_than=timedelta(0))
    result = remove_orphan_files(lake, table, older_than=timedelta(0))

    current = lake.load(table)
    reachable = {current.metadata_location, *(e.metadata_file for e in current.metadata.metadata_log)}
    reachable |= {s.manifest_list for s in current.snapshots()}
    reachable |= set(current.inspect.all_manifests()["path"].to_pylist())
    reachable |= set(current.inspect.all_files()["file_path"].to_pylist())
    assert keys() == reachable
    assert result.dead_staging_files_deleted == 1
    assert result.files_deleted == len(keys_before) + 1 - len(reachable)  # + the expiry's metadata file
    assert lake.read_arrow(table).num_rows == 30
