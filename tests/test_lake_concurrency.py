"""Concurrent writers on one Iceberg table, as separate OS processes against a real catalog and real files.

Every writer is a separate process with its own catalog connection, exactly as parallel Dagster runs are. The writers
import and connect first, then wait on a barrier, so their commits really race instead of running one after another.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pg_server import PostgresServer
from pyiceberg.table import Table

from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage, PartitionWriteConflict
from batch_platform.lake.commit import SUMMARY_PARTITIONS, SUMMARY_RUN_ID, commit_replace

EVENTS = LakeTable(
    namespace="test",
    name="concurrent_events",
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
ASSET_KEY = EVENTS.asset_key.to_user_string()
# The same table with pyiceberg's own commit retries off: a failed commit reaches the lake's outer retry loop at
# once, which is where it arrives anyway once pyiceberg's retries are exhausted under heavy contention.
NO_PYICEBERG_RETRY_EVENTS = LakeTable(
    namespace="test",
    name="no_pyiceberg_retry_events",
    schema=EVENTS.schema,
    partition_column="event_date",
    properties={"commit.retry.num-retries": "0"},
)
FIRST_DAY = date(2024, 3, 1)
# Generous: 8 processes importing dagster and pyiceberg at once on 2 cores take a while to reach the barrier.
WRITER_TIMEOUT_S = 240.0
PYICEBERG_RETRY_MESSAGE = "Commit failed due to a concurrent update"


@dataclass(frozen=True)
class WriterOutcome:
    """What one writer process reports back: its result, or the error it raised."""

    run_id: str
    partition_key: str
    rows: int
    snapshot_id: int | None = None
    result_rows: int | None = None
    lake_attempts: int | None = None  # attempts of the lake's own outer loop (WriteResult.attempts)
    pyiceberg_retries: int = 0  # retries inside pyiceberg's commit loop, counted from its log
    started_at: float = 0.0
    finished_at: float = 0.0
    error_type: str | None = None
    error: str | None = None


class _RetryCounter(logging.Handler):
    """Counts pyiceberg's "retrying" warnings: the commit retries WriteResult.attempts does not see."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(PYICEBERG_RETRY_MESSAGE):
            self.count += 1


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


def make_lake(data_dir: str, catalog_uri: str | None) -> IcebergLakeResource:
    if catalog_uri is None:
        return IcebergLakeResource(data_dir=data_dir)
    return IcebergLakeResource(data_dir=data_dir, catalog_uri=catalog_uri)


def write_partition_process(
    data_dir: str,
    catalog_uri: str | None,
    partition_key: str,
    rows: int,
    run_id: str,
    barrier: Barrier,
    results: mp.Queue[WriterOutcome],
) -> None:
    """Body of one writer process: connect, prepare the rows, wait for the others, then write."""
    counter = _RetryCounter()
    pyiceberg_log = logging.getLogger("pyiceberg.table")
    pyiceberg_log.addHandler(counter)
    pyiceberg_log.setLevel(logging.WARNING)
    started = 0.0
    try:
        lake = make_lake(data_dir, catalog_uri)
        lake.load(EVENTS)  # connect to the catalog now, so the race after the barrier is on the commit only
        data = rows_for(partition_key, rows, run_id)
        barrier.wait(timeout=WRITER_TIMEOUT_S)
        started = time.time()
        result = lake.write_arrow(
            EVENTS,
            data,
            partition_keys=[partition_key],
            lineage=Lineage(run_id=run_id, asset_key=ASSET_KEY, partition_keys=(partition_key,)),
        )
        outcome = WriterOutcome(
            run_id=run_id,
            partition_key=partition_key,
            rows=rows,
            snapshot_id=result.snapshot_id,
            result_rows=result.rows,
            lake_attempts=result.attempts,
            pyiceberg_retries=counter.count,
            started_at=started,
            finished_at=time.time(),
        )
    except BaseException as exc:
        if not started:
            barrier.abort()  # release the others now rather than at the barrier timeout
        outcome = WriterOutcome(
            run_id=run_id,
            partition_key=partition_key,
            rows=rows,
            pyiceberg_retries=counter.count,
            started_at=started,
            finished_at=time.time(),
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error="".join(traceback.format_exception(exc)),
        )
    results.put(outcome)


@dataclass(frozen=True)
class Race:
    """The outcomes of one set of racing writers, and when their processes were started."""

    outcomes: list[WriterOutcome]
    spawned_at: float

    def report(self) -> str:
        """Commit attempts and commit windows per writer, relative to the moment the barrier opened."""
        t0 = min((o.started_at for o in self.outcomes if o.started_at), default=self.spawned_at)
        lines = [f"writers reached the barrier {t0 - self.spawned_at:.1f}s after spawn; commit attempts per writer:"]
        for o in sorted(self.outcomes, key=lambda o: (o.partition_key, o.rows)):
            line = (
                f"  {o.partition_key} ({o.rows} rows, run {o.run_id[:8]}): lake attempts={o.lake_attempts}, "
                f"pyiceberg retries={o.pyiceberg_retries}, commit {o.started_at - t0:.3f}-{o.finished_at - t0:.3f}s"
            )
            lines.append(line + (f", FAILED {o.error_type}" if o.error_type else ""))
        return "\n".join(lines)


def run_writers(data_dir: str, catalog_uri: str | None, writes: Sequence[tuple[str, int, str]]) -> Race:
    """Run one process per (partition key, rows, run id), all released at the same moment."""
    # A fork server that has imported the lake once starts 8 writers in seconds instead of 8 fresh interpreters
    # importing dagster and pyiceberg (a minute on 2 busy cores); each writer still opens its own catalog.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["batch_platform.lake"])
    barrier = ctx.Barrier(len(writes))
    results: mp.Queue[WriterOutcome] = ctx.Queue()
    procs = [
        ctx.Process(
            target=write_partition_process,
            args=(data_dir, catalog_uri, key, rows, run_id, barrier, results),
            name=f"writer-{key}-{run_id[:8]}",
        )
        for key, rows, run_id in writes
    ]
    spawned_at = time.time()
    for proc in procs:
        proc.start()
    outcomes: list[WriterOutcome] = []
    deadline = time.monotonic() + WRITER_TIMEOUT_S + 60
    try:
        while len(outcomes) < len(procs) and time.monotonic() < deadline:
            try:
                outcomes.append(results.get(timeout=1.0))
            except queue.Empty:  # check whether a writer died without reporting
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    exit_codes = {p.name: p.exitcode for p in procs}
    assert len(outcomes) == len(procs), f"{len(outcomes)} of {len(procs)} writers reported; exit codes {exit_codes}"
    return Race(outcomes, spawned_at)


def seed_partition(lake: IcebergLakeResource, partition_key: str, rows: int, table: LakeTable = EVENTS) -> str:
    """An earlier version of the partition, so the racing writers really replace data files."""
    run_id = uuid.uuid4().hex
    lake.write_arrow(
        table,
        rows_for(partition_key, rows, run_id),
        partition_keys=[partition_key],
        lineage=Lineage(run_id, ASSET_KEY),
    )
    return run_id


def snapshot_run_ids(lake: IcebergLakeResource, table: LakeTable = EVENTS) -> list[str]:
    return [
        s.summary.additional_properties.get(SUMMARY_RUN_ID, "")
        for s in lake.load(table).metadata.snapshots
        if s.summary is not None
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_uri(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the default SQLite catalog; for PostgreSQL, a fresh database dropped after the test."""
    if request.param == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database() as name:
        yield server.sqlalchemy_uri(name)


@pytest.fixture
def race_lake(tmp_path: Path, catalog_uri: str | None) -> Iterator[IcebergLakeResource]:
    resource = make_lake(str(tmp_path), catalog_uri)
    # Create the table before any writer starts: the race under test is on commits, not on table creation.
    resource.table(EVENTS)
    yield resource
    catalog = resource.catalog()
    engine = getattr(catalog, "engine", None)
    if engine is not None:
        engine.dispose()  # release PostgreSQL connections before the database is dropped


def test_eight_processes_writing_different_partitions_at_once_all_commit_exact_rows_with_own_lineage(
    race_lake: IcebergLakeResource, tmp_path: Path, catalog_uri: str | None
) -> None:
    writes = [((FIRST_DAY + timedelta(days=i)).isoformat(), 1000 + i, uuid.uuid4().hex) for i in range(8)]
    # Half the partitions already hold data: those writers delete files as well as add them, the other half only add.
    for key, _, _ in writes[::2]:
        seed_partition(race_lake, key, 10)

    race = run_writers(str(tmp_path), catalog_uri, writes)
    outcomes, report = race.outcomes, race.report()
    print(report)

    failures = [o for o in outcomes if o.error_type]
    assert not failures, "writers failed:\n" + "\n".join(f"{o.partition_key}: {o.error}" for o in failures)
    # The barrier must have made the commits overlap, or this test would prove nothing about races.
    assert max(o.started_at for o in outcomes) < min(o.finished_at for o in outcomes), report

    table = race_lake.load(EVENTS)
    for key, rows, run_id in writes:
        part = race_lake.read_arrow(EVENTS, [key])
        assert part.num_rows == rows, f"partition {key}: {part.num_rows} rows, expected {rows}\n{report}"
        assert pc.unique(part["writer_run_id"]).to_pylist() == [run_id], f"partition {key} holds another run's rows"
        assert sorted(part["event_id"].to_pylist()) == list(range(rows)), f"partition {key} has duplicated rows"
    everything = race_lake.read_arrow(EVENTS)
    assert everything.num_rows == sum(rows for _, rows, _ in writes), report
    assert sorted(d.isoformat() for d in pc.unique(everything["event_date"]).to_pylist()) == [k for k, _, _ in writes]

    committed_run_ids = set(snapshot_run_ids(race_lake))
    for outcome in outcomes:
        assert outcome.run_id in committed_run_ids, f"run {outcome.run_id} is in no snapshot summary\n{report}"
        assert outcome.snapshot_id is not None, f"{outcome.partition_key}: WriteResult has no snapshot id\n{report}"
        snapshot = table.snapshot_by_id(outcome.snapshot_id)
        assert snapshot is not None and snapshot.summary is not None
        summary = snapshot.summary.additional_properties
        assert summary[SUMMARY_RUN_ID] == outcome.run_id, (
            f"{outcome.partition_key}: WriteResult points at another run's snapshot\n{report}"
        )
        assert summary[SUMMARY_PARTITIONS] == outcome.partition_key
        assert outcome.result_rows == outcome.rows, report
    assert len({o.snapshot_id for o in outcomes}) == len(outcomes), "two writers report the same snapshot"


def test_two_processes_replacing_same_partition_at_once_leave_exactly_one_writers_rows(
    race_lake: IcebergLakeResource, tmp_path: Path, catalog_uri: str | None
) -> None:
    key = FIRST_DAY.isoformat()
    seed_run = seed_partition(race_lake, key, 50)
    writes = [(key, 300, uuid.uuid4().hex), (key, 400, uuid.uuid4().hex)]

    race = run_writers(str(tmp_path), catalog_uri, writes)
    outcomes, report = race.outcomes, race.report()
    print(report)

    part = race_lake.read_arrow(EVENTS, [key])
    owners = pc.unique(part["writer_run_id"]).to_pylist()
    winners = [o for o in outcomes if o.run_id in owners]
    assert len(owners) == 1 and len(winners) == 1, (
        f"partition holds rows of runs {owners} (seed {seed_run}), expected exactly one writer's\n{report}\n"
        + "\n".join(o.error or "" for o in outcomes)
    )
    winner = winners[0]
    assert winner.error_type is None, report
    assert part.num_rows == winner.rows, f"{part.num_rows} rows, winner wrote {winner.rows}\n{report}"
    assert sorted(part["event_id"].to_pylist()) == list(range(winner.rows)), "winner's rows are duplicated"

    losers = [o for o in outcomes if o.error_type is not None]
    committed_run_ids = snapshot_run_ids(race_lake)
    for loser in losers:
        # The only acceptable failure is the reported conflict, and the loser must have changed nothing.
        assert loser.error_type == f"{PartitionWriteConflict.__module__}.{PartitionWriteConflict.__qualname__}", (
            loser.error
        )
        assert loser.run_id not in committed_run_ids, "a writer that raised still committed a snapshot"
    if not losers:
        # Both succeeded: legitimate only if the second loaded the table after the first had committed. Then the
        # partition holds the later run's rows, and neither needed the lake's outer retry: with no other writer
        # on the table, an outer retry means one write was re-based over the other's commit (see the test below).
        current = race_lake.load(EVENTS).current_snapshot()
        assert current is not None and current.summary is not None
        assert current.summary.additional_properties[SUMMARY_RUN_ID] == winner.run_id, report
        assert all(o.lake_attempts == 1 for o in outcomes), report


def test_writer_with_stale_view_of_partition_gets_partition_write_conflict_and_commits_nothing(
    race_lake: IcebergLakeResource,
) -> None:
    """The deterministic form of the race above: writer B read the table before writer A replaced the partition."""
    key = FIRST_DAY.isoformat()
    run_a, run_b = uuid.uuid4().hex, uuid.uuid4().hex
    seed_partition(race_lake, key, 50)
    stale = race_lake.load(EVENTS)  # what B sees when it starts
    race_lake.write_arrow(EVENTS, rows_for(key, 300, run_a), partition_keys=[key], lineage=Lineage(run_a, ASSET_KEY))
    after_a = race_lake.load(EVENTS).current_snapshot()

    with pytest.raises(PartitionWriteConflict, match=run_b):
        commit_replace(
            lambda: stale,
            EVENTS,
            partition_keys=[key],
            lineage=Lineage(run_b, ASSET_KEY),
            write_id=uuid.uuid4().hex,
            arrow_data=rows_for(key, 400, run_b).cast(stale.schema().as_arrow()),
        )

    assert race_lake.load(EVENTS).current_snapshot() == after_a
    part = race_lake.read_arrow(EVENTS, [key])
    assert part.num_rows == 300
    assert pc.unique(part["writer_run_id"]).to_pylist() == [run_a]
    assert run_b not in snapshot_run_ids(race_lake)


def test_partition_committed_by_another_run_is_a_conflict_even_when_pyiceberg_commit_retries_are_exhausted(
    race_lake: IcebergLakeResource,
) -> None:
    """Run B read the table, run A then replaced the same partition, B's commit fails and leaves pyiceberg.

    The lake's outer retry must not re-base B on the table that now holds A's rows and silently replace them:
    the docstring of commit_replace promises a PartitionWriteConflict for a race on the same partitions.
    """
    table = NO_PYICEBERG_RETRY_EVENTS
    key = FIRST_DAY.isoformat()
    run_a, run_b = uuid.uuid4().hex, uuid.uuid4().hex
    race_lake.table(table)
    seed_partition(race_lake, key, 50, table)
    stale = race_lake.load(table)  # B starts: the view its transaction is built on
    race_lake.write_arrow(table, rows_for(key, 300, run_a), partition_keys=[key], lineage=Lineage(run_a, ASSET_KEY))
    after_a = race_lake.load(table).current_snapshot()
    b_views = iter([stale])

    def load_for_b() -> Table:
        # First B's stale view, then, on the lake's outer retry, the table as it is now.
        return next(b_views, None) or race_lake.load(table)

    with pytest.raises(PartitionWriteConflict, match=run_b):
        commit_replace(
            load_for_b,
            table,
            partition_keys=[key],
            lineage=Lineage(run_b, ASSET_KEY),
            write_id=uuid.uuid4().hex,
            arrow_data=rows_for(key, 400, run_b).cast(stale.schema().as_arrow()),
        )

    assert race_lake.load(table).current_snapshot() == after_a
    part = race_lake.read_arrow(table, [key])
    assert pc.unique(part["writer_run_id"]).to_pylist() == [run_a], "run A's committed rows were replaced"
    assert part.num_rows == 300
