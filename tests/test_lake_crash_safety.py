"""A Spark write killed with SIGKILL between staging and commit leaves the table as it was.

The killed write is a real child process with a real SparkSession (tests/_crash_writer.py): its executor writes
Parquet into the run's staging folder, then the whole process group, JVM included, is killed before the commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.commit import SUMMARY_RUN_ID

CRASH_EVENTS = LakeTable(
    namespace="test",
    name="crash_events",
    schema=pa.schema(
        [
            pa.field("event_date", pa.date32(), nullable=False),
            pa.field("event_id", pa.int64(), nullable=False),
            pa.field("writer_run_id", pa.string(), nullable=False),
            pa.field("amount", pa.float64()),
        ]
    ),
    partition_column="event_date",
)
ASSET_KEY = CRASH_EVENTS.asset_key.to_user_string()
STAGED_MARKER = "CRASH-WRITER-STAGED "
CRASH_WRITER = Path(__file__).with_name("_crash_writer.py")
# Spark needs ~10 s to start on an idle 2-core machine; CI may be busier.
STAGE_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class StagedReport:
    """The marker line of the crash writer: what it staged before it was killed."""

    pid: int
    jvm_pid: int | None
    write_id: str
    staging_uri: str
    files: list[str]


def rows_for(partition_key: str, rows: int, run_id: str) -> pa.Table:
    day = date.fromisoformat(partition_key)
    return pa.table(
        {
            "event_date": pa.array([day] * rows, pa.date32()),
            "event_id": pa.array(range(rows), pa.int64()),
            "writer_run_id": pa.array([run_id] * rows, pa.string()),
            "amount": pa.array([float(i) / 100 for i in range(rows)], pa.float64()),
        }
    )


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme in ("", "file"), f"test warehouse should be local, got {uri}"
    return Path(parsed.path)


def referenced_files(lake: IcebergLakeResource) -> set[str]:
    """Every data file any snapshot of the table references, not only the current one."""
    all_files = lake.load(CRASH_EVENTS).inspect.all_files()
    return {str(local_path(p)) for p in all_files["file_path"].to_pylist()}


def _pump_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def wait_for_marker(proc: subprocess.Popen[str], log_file: Path, timeout: float) -> StagedReport:
    """Read the child's stdout until it reports its staged files; fail with its log if it dies or hangs first."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            break
        if line.startswith(STAGED_MARKER):
            data: dict[str, Any] = json.loads(line[len(STAGED_MARKER) :])
            return StagedReport(**data)
        seen.append(line)
    log_tail = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
    raise AssertionError(
        f"crash writer did not report staged files within {timeout}s (exit code {proc.poll()}).\n"
        f"stdout:\n{''.join(seen)[-2000:]}\nstderr tail:\n{log_tail}"
    )


def live_processes_in_group(pgid: int) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive


def kill_process_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child's whole session (it is the group leader), so the Spark JVM dies with the Python driver."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while live_processes_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.spark  # Spark runs in the child process it kills
def test_spark_write_sigkilled_after_staging_leaves_table_unchanged_and_partition_rewritable(tmp_path: Path) -> None:
    key = "2024-03-01"
    lake = IcebergLakeResource(data_dir=str(tmp_path))
    lake.table(CRASH_EVENTS)

    # Version 1 of the partition, which the killed write was going to replace.
    first_run = uuid.uuid4().hex
    first = lake.write_arrow(
        CRASH_EVENTS, rows_for(key, 200, first_run), partition_keys=[key], lineage=Lineage(first_run, ASSET_KEY)
    )
    before = lake.load(CRASH_EVENTS)
    before_snapshot = before.current_snapshot()
    assert before_snapshot is not None and before_snapshot.snapshot_id == first.snapshot_id
    before_snapshot_ids = [s.snapshot_id for s in before.metadata.snapshots]
    before_rows = lake.read_arrow(CRASH_EVENTS, [key])
    before_referenced = referenced_files(lake)

    killed_run = uuid.uuid4().hex
    log_file = tmp_path / "crash_writer.stderr"
    with log_file.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(CRASH_WRITER),
                "--data-dir",
                str(tmp_path),
                "--partition",
                key,
                "--rows",
                "500",
                "--run-id",
                killed_run,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: killpg reaches the JVM that pyspark starts
        )
        try:
            staged = wait_for_marker(proc, log_file, STAGE_TIMEOUT_S)
            group_before_kill = {p.pid for p in live_processes_in_group(proc.pid)}
        finally:
            kill_process_group(proc)

    assert proc.returncode == -signal.SIGKILL
    assert staged.jvm_pid is None or staged.jvm_pid in group_before_kill, "the Spark JVM was not in the killed group"
    survivors = live_processes_in_group(proc.pid)
    assert not survivors, f"processes of the killed writer survived SIGKILL: {survivors}"

    # The table is exactly as before: same metadata file, same snapshots, same rows.
    after = lake.load(CRASH_EVENTS)
    assert after.metadata_location == before.metadata_location
    assert [s.snapshot_id for s in after.metadata.snapshots] == before_snapshot_ids
    assert after.current_snapshot() == before_snapshot
    assert lake.read_arrow(CRASH_EVENTS, [key]).equals(before_rows)
    assert killed_run not in {
        s.summary.additional_properties.get(SUMMARY_RUN_ID) for s in after.metadata.snapshots if s.summary
    }

    # The staged files are on disk, in the killed run's own staging folder, and no snapshot references them.
    run_staging_uri = lake.run_staging_uri(CRASH_EVENTS, killed_run)
    run_staging = local_path(run_staging_uri)
    assert run_staging.name == killed_run, f"staging folder {run_staging_uri} is not named by the run id"
    assert staged.staging_uri == lake.staging_uri(CRASH_EVENTS, killed_run, staged.write_id)
    assert staged.staging_uri.startswith(run_staging_uri + "/")
    staged_paths = {str(local_path(f)) for f in staged.files}
    assert staged_paths, "the crash writer staged no Parquet files"
    on_disk = {str(p) for p in run_staging.rglob("*.parquet")}
    assert on_disk == staged_paths, f"staging folder holds {sorted(on_disk)}, writer reported {sorted(staged_paths)}"
    assert all(Path(p).stat().st_size > 0 for p in staged_paths)
    assert not staged_paths & referenced_files(lake)
    assert referenced_files(lake) == before_referenced

    # A new run replaces the partition: exactly its rows, once; the killed run's files stay unreferenced.
    retry_run = uuid.uuid4().hex
    retry = lake.write_arrow(
        CRASH_EVENTS, rows_for(key, 300, retry_run), partition_keys=[key], lineage=Lineage(retry_run, ASSET_KEY)
    )
    final = lake.load(CRASH_EVENTS)
    final_snapshot = final.current_snapshot()
    assert final_snapshot is not None and final_snapshot.snapshot_id == retry.snapshot_id
    part = lake.read_arrow(CRASH_EVENTS, [key])
    assert part.num_rows == 300
    assert pc.unique(part["writer_run_id"]).to_pylist() == [retry_run]
    assert sorted(part["event_id"].to_pylist()) == list(range(300))
    assert not staged_paths & referenced_files(lake)
