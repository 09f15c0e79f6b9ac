"""Benchmark: one tick of the landing sensor over years of daily drops, on a local folder and an S3 prefix.

    .venv/bin/python -m benchmarks.landing_sensor [--years 3] [--repeats 5] [--s3] [--write-docs]

1. The simulator writes every business day's v1 drop (nine Parquet files and the manifest) from 2023-01-03 for
   ``--years`` years into a temporary landing folder, plus a restated v2 of about 2% of the days. With ``--s3`` the
   same objects are copied to a bucket on a moto server (``ThreadedMotoServer`` on 127.0.0.1, in a child process).
2. The history is recorded as loaded in one Dagster instance (one ``raw/loans`` materialization per day carrying
   ``landing/drop_versions``, what the raw load records); another instance has nothing loaded.
3. Ticks, each ``--repeats`` times after one untimed warm-up, with ``evaluate_landing`` (the sensor's body) on a
   real SQLite instance: the first tick (empty cursor) with nothing loaded and with every day loaded, a steady tick
   (the cursor of a first tick: nothing new), and a tick after the next business day's drop landed.

Each tick's time is split by wrappers around the sensor module's own steps (creating the store, ``scan_landing``,
the instance queries); the rest is the decision. S3 requests are counted with a botocore hook on the sensor's own
client. Prints a table; ``--write-docs`` rewrites this benchmark's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial, wraps
from importlib.metadata import version as package_version
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import dagster as dg
from moto.server import ThreadedMotoServer

import sensors.lending as lending_sensors
from assets.lending.contract import LENDING_START, business_days
from assets.lending.domain import lending
from assets.lending.landing import LandingZone, LandingZoneResource, drop_prefix
from assets.lending.simulator import simulate, write_correction
from assets.lending.tables import LENDING_PARTITIONS
from assets.lending.world import SimulationConfig
from batch_platform.alerts import LogFileAlerts
from batch_platform.lake import IcebergLakeResource
from batch_platform.listing import LocalObjects
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource
from benchmarks.markdown import update_section
from sensors.lending import LOADED_VERSION_ASSET, SENSOR_INTERVAL_SECONDS, SETTLE_SECONDS, LandingScan, landing_store

MARKER_START = "<!-- landing_sensor:start -->"
MARKER_END = "<!-- landing_sensor:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
WORLD_START = date.fromisoformat(LENDING_START)
DEFAULT_SCALE = 0.01  # about ten applications a day: the object count, not the file size, drives a tick
RESTATED_SHARE = 0.02
SEED = 11
S3_BUCKET = "landing"
S3_PREFIX = "drops"
S3_REGION = "eu-west-1"
S3_PAGE_SIZE = 1000  # S3Objects' default, what the sensor lists with
TICKS = (
    ("first", "first tick, nothing loaded"),
    ("first_loaded", "first tick, every day loaded"),
    ("steady", "steady tick, nothing new"),
    ("new_drop", "tick after one new drop"),
)


# -- counting the sensor's S3 requests ------------------------------------------------------------------------------

MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "benchmark", "AWS_SECRET_ACCESS_KEY": "benchmark"}
S3_REQUESTS: Counter[str] = Counter()  # operation name -> calls, over the clients CountingLandingZone made


def _count_request(model: Any, **_: Any) -> None:
    S3_REQUESTS[model.name] += 1


class CountingLandingZone(LandingZoneResource):
    """The landing zone resource, whose S3 clients count their requests (a botocore event hook; the requests are
    real)."""

    def s3_client(self) -> Any:
        client = super().s3_client()
        client.meta.events.register("before-call.s3", _count_request)
        return client


# -- the landing zone -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    root: Path
    config: SimulationConfig
    days: list[date]
    restated: list[date]
    new_day: date  # the business day after the history, landed later
    simulate_s: float
    restate_s: float

    def versions(self) -> dict[str, int]:
        restated = set(self.restated)
        return {str(day): 2 if day in restated else 1 for day in self.days}


def land_history(root: Path, years: int, scale: float) -> History:
    config = SimulationConfig(seed=SEED, start=WORLD_START, scale=scale)
    last = date(WORLD_START.year + years, WORLD_START.month, WORLD_START.day) - timedelta(days=1)
    days = list(business_days(WORLD_START, last))
    new_day = next(business_days(last + timedelta(days=1), last + timedelta(days=7)))
    if not LENDING_PARTITIONS.has_partition_key(str(new_day)):
        raise SystemExit(f"{new_day} is not yet a partition of the loan pipeline on this clock; use fewer --years")
    zone = LandingZone.local(root)
    started = time.perf_counter()
    simulate(config, WORLD_START, last, zone)
    simulated = time.perf_counter() - started
    restated = sorted(random.Random(SEED).sample(days, max(1, round(len(days) * RESTATED_SHARE))))
    started = time.perf_counter()
    for day in restated:
        write_correction(config, day, zone)
    return History(root, config, days, restated, new_day, simulated, time.perf_counter() - started)


def land_new_drop(history: History) -> None:
    simulate(history.config, history.new_day, history.new_day, LandingZone.local(history.root))


def _serve_moto(ports: Queue[int], stop: EventType) -> None:
    """A moto server in its own process, so its CPU is not counted as the sensor's (and not under its GIL)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    ports.put(server.get_host_and_port()[1])
    stop.wait()
    server.stop()


@contextmanager
def moto_s3() -> Iterator[tuple[str, Any]]:
    """The endpoint of a moto S3 server with the landing bucket, and a client for it."""
    spawn = multiprocessing.get_context("spawn")
    ports: Queue[int] = spawn.Queue()
    stop = spawn.Event()
    process = spawn.Process(target=_serve_moto, args=(ports, stop), daemon=True)
    process.start()
    try:
        endpoint = f"http://127.0.0.1:{ports.get(timeout=120)}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_REGION,
            aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=S3_BUCKET, CreateBucketConfiguration={"LocationConstraint": S3_REGION})
        yield endpoint, client
    finally:
        stop.set()
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()


def upload(client: Any, root: Path, keys: Sequence[str]) -> None:
    """Copy local landing objects to the bucket, each drop's manifest after its files (as a producer uploads)."""
    ordered = sorted(keys, key=lambda k: (k.rsplit("/", 1)[0], k.endswith("_manifest.json")))
    by_folder: dict[str, list[str]] = {}
    for key in ordered:
        by_folder.setdefault(key.rsplit("/", 1)[0], []).append(key)

    def put_folder(folder_keys: list[str]) -> None:
        for key in folder_keys:
            client.put_object(Bucket=S3_BUCKET, Key=f"{S3_PREFIX}/{key}", Body=(root / key).read_bytes())

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(put_folder, by_folder.values()))


# -- the Dagster side -----------------------------------------------------------------------------------------------


def repository() -> dg.RepositoryDefinition:
    """The loan pipeline's repository, as the sensor sees it (it resolves the pipeline's assets from it)."""
    defs = dg.Definitions(
        assets=lending.registered_assets(),
        # Nothing runs here; the repository only needs its resource keys bound.
        resources={
            "lake": IcebergLakeResource(),
            "spark": SparkResource(),
            "landing": LandingZoneResource(),
            "pii": PiiTokenizer(key="benchmark-never-tokenizes"),
            "alerts": LogFileAlerts(),
        },
    )
    return defs.get_repository_def()


def record_loaded(instance: dg.DagsterInstance, versions: dict[str, int]) -> None:
    """What a raw load records for each day: the sensor reads only ``raw/loans``' drop versions."""
    for day, drop_version in versions.items():
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                LOADED_VERSION_ASSET,
                partition=day,
                metadata={"landing/drop_versions": dg.MetadataValue.json({day: drop_version})},
            )
        )


@dataclass(frozen=True)
class Store:
    """One landing zone under test, and the tick clock for it."""

    name: str
    landing: LandingZoneResource
    alerts: LogFileAlerts
    newest_history: float  # the newest modification time of the history, as listed

    @property
    def now(self) -> float:
        # A tick well after the history settled (as in production, where only the latest drop is recent), so a
        # cursor settles the whole history and keeps no recent keys; a drop landed later is still new to it.
        return self.newest_history + SETTLE_SECONDS + 1


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float  # this process only: with --s3 the moto server runs in another process
    client_s: float  # landing_store: for S3, creating the boto3 client
    scan_s: float  # scan_landing: listing, parsing keys, reading and checking new manifests
    instance_s: float  # loaded_versions and pipeline_in_flight: the instance queries
    listed: int
    manifests_read: int
    list_pages: int | None
    gets: int | None
    cursor_bytes: int
    outcome: str

    @property
    def other_s(self) -> float:
        """The decision (runnable days, the run or backfill request) and the cursor."""
        return self.wall_s - self.client_s - self.scan_s - self.instance_s


class SensorTimers:
    """Times the sensor module's own steps inside a real tick: each is replaced by a wrapper that calls it.

    ``evaluate_landing`` looks these functions up in its module on every call, so the tick runs unchanged and its
    time splits into parts that add up (timing them in separate calls would not, on a shared machine).
    """

    STEPS = ("landing_store", "scan_landing", "loaded_versions", "pipeline_in_flight")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last_scan: LandingScan | None = None

    def _timed(self, name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(step)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = step(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            if isinstance(result, LandingScan):
                self.last_scan = result
            return result

        return timed

    @contextmanager
    def installed(self) -> Iterator[SensorTimers]:
        originals = {name: getattr(lending_sensors, name) for name in self.STEPS}
        for name, step in originals.items():
            setattr(lending_sensors, name, self._timed(name, step))
        try:
            yield self
        finally:
            for name, step in originals.items():
                setattr(lending_sensors, name, step)

    def reset(self) -> None:
        self.seconds.clear()
        self.last_scan = None


def describe(result: dg.SensorResult) -> str:
    requests = result.run_requests or []
    if not requests:
        message = result.skip_reason.skip_message if result.skip_reason else ""
        return f"skip: {message}"
    parts = []
    for request in requests:
        subset = request.asset_graph_subset
        if subset is not None:
            days = {k for s in subset.partitions_subsets_by_asset_key.values() for k in s.get_partition_keys()}
            parts.append(f"1 backfill: {len(subset.partitions_subsets_by_asset_key)} assets x {len(days)} days")
        else:
            parts.append(f"1 run: {len(request.asset_selection or [])} assets, {request.partition_key}")
    return "; ".join(parts)


def tick(
    timers: SensorTimers,
    instance: dg.DagsterInstance,
    repo: dg.RepositoryDefinition,
    store: Store,
    cursor: str | None,
) -> Sample:
    """One evaluation of the landing sensor's body, as the daemon's tick calls it (a fresh context and client)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repo)
    timers.reset()
    S3_REQUESTS.clear()
    started, started_cpu = time.perf_counter(), time.process_time()
    result = lending_sensors.evaluate_landing(context, store.landing, store.alerts, now=store.now)
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    scan = timers.last_scan
    if scan is None:
        raise RuntimeError("the tick did not scan the landing zone")
    on_s3 = store.landing.location().startswith("s3://")
    return Sample(
        wall_s=wall_s,
        cpu_s=cpu_s,
        client_s=timers.seconds.get("landing_store", 0.0),
        scan_s=timers.seconds.get("scan_landing", 0.0),
        instance_s=timers.seconds.get("loaded_versions", 0.0) + timers.seconds.get("pipeline_in_flight", 0.0),
        listed=len(scan.listed),
        manifests_read=scan.manifests_read,
        list_pages=S3_REQUESTS["ListObjectsV2"] if on_s3 else None,
        gets=S3_REQUESTS["GetObject"] if on_s3 else None,
        cursor_bytes=len(result.cursor or ""),
        outcome=describe(result),
    )


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def text(self, digits: int = 3) -> str:
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


@dataclass(frozen=True)
class Result:
    store: str
    tick: str
    samples: list[Sample]

    def spread(self, part: Callable[[Sample], float]) -> Spread:
        return Spread.of([part(s) for s in self.samples])

    @property
    def wall(self) -> Spread:
        return self.spread(lambda s: s.wall_s)

    def median(self, part: Callable[[Sample], float]) -> float:
        return self.spread(part).median

    @property
    def last(self) -> Sample:
        return self.samples[-1]


def measure(store: str, tick_name: str, repeats: int, run_once: Callable[[], Sample]) -> Result:
    """``repeats`` timed ticks after an untimed warm-up; every repeat must decide the same."""
    label = f"{store}, {dict(TICKS)[tick_name]}"
    run_once()  # warm-up: first queries, imports and caches are not what a running sensor pays every tick
    samples = [run_once() for _ in range(repeats)]
    outcomes = {(s.outcome, s.listed, s.manifests_read, s.list_pages, s.gets) for s in samples}
    if len(outcomes) != 1:
        raise RuntimeError(f"{label}: the repeats differ: {outcomes}")
    last = samples[-1]
    if last.gets is not None and last.gets != last.manifests_read:
        raise RuntimeError(f"{label}: {last.gets} S3 GETs for {last.manifests_read} manifests read")
    result = Result(store, tick_name, samples)
    print(
        f"  {label}: {result.wall.text()} s, listed {last.listed:,}, manifests {last.manifests_read:,}, {last.outcome}",
        file=sys.stderr,
    )
    return result


# -- reporting ------------------------------------------------------------------------------------------------------

HEADER = (
    "store",
    "tick",
    "wall s",
    "CPU s",
    "client s",
    "list + read s",
    "instance s",
    "decision s",
    "objects listed",
    "list pages",
    "manifests read",
    "cursor bytes",
    "decision",
)


def _row(result: Result) -> list[str]:
    last = result.last
    return [
        result.store,
        dict(TICKS)[result.tick],
        result.wall.text(),
        f"{result.median(lambda s: s.cpu_s):.3f}",
        f"{result.median(lambda s: s.client_s):.3f}",
        result.spread(lambda s: s.scan_s).text(),
        f"{result.median(lambda s: s.instance_s):.3f}",
        f"{result.median(lambda s: s.other_s):.3f}",
        f"{last.listed:,}",
        "-" if last.list_pages is None else f"{last.list_pages}",
        f"{last.manifests_read:,}",
        f"{last.cursor_bytes:,}",
        last.outcome.replace("|", "/"),
    ]


def markdown_table(results: Sequence[Result]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join([":---", ":---", *["---:"] * (len(HEADER) - 3), ":---"]) + "|",
    ]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(load_before: float, load_after: float) -> dict[str, str]:
    versions = ", ".join(f"{name} {package_version(name)}" for name in ("dagster", "boto3", "moto", "pyarrow"))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.system()}",
        "versions": f"Python {platform.python_version()}, {versions}",
        "load": f"1-minute load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs",
    }


def _find(results: Sequence[Result], store: str, tick_name: str) -> Result | None:
    return next((r for r in results if r.store == store and r.tick == tick_name), None)


def findings(results: Sequence[Result]) -> list[str]:
    """The table's story per store, computed from the medians (so a re-run cannot leave stale numbers)."""
    lines = []
    for store in dict.fromkeys(r.store for r in results):
        first, first_loaded, steady, new = (_find(results, store, t) for t, _ in TICKS)
        if not (first and first_loaded and steady and new):
            continue
        steady_scan = steady.median(lambda s: s.scan_s)
        per_object_us = steady_scan / steady.last.listed * 1e6
        manifests = first_loaded.last.manifests_read
        per_manifest_ms = (first_loaded.median(lambda s: s.scan_s) - steady_scan) / manifests * 1e3
        pages = f" in {steady.last.list_pages} list pages" if steady.last.list_pages is not None else ""
        client = steady.median(lambda s: s.client_s)
        client_text = f", creating the boto3 client {client:.3f} s" if steady.last.list_pages is not None else ""
        lines.append(
            f"- **{store}**: the steady tick lists all {steady.last.listed:,} objects{pages} and reads no manifest "
            f"in {steady.wall.median:.3f} s: listing {steady_scan:.3f} s ({per_object_us:.0f} µs per object)"
            f"{client_text}; no instance query is made when nothing is new. At one tick every "
            f"{SENSOR_INTERVAL_SECONDS} s that is {steady.median(lambda s: s.cpu_s) / SENSOR_INTERVAL_SECONDS:.1%} "
            "of one core (CPU s). One new drop costs "
            f"{new.wall.median:.3f} s: the same listing, one manifest read, the instance queries "
            f"({new.median(lambda s: s.instance_s):.3f} s) and the run request "
            f"({new.median(lambda s: s.other_s):.3f} s). Reading all {manifests:,} manifests costs "
            f"{per_manifest_ms:.2f} ms a manifest beyond the listing (first tick, every day loaded: "
            f"{first_loaded.wall.median:.3f} s). With nothing loaded the first tick also decides one backfill over "
            f"every day: {first.wall.median:.3f} s, of which instance queries "
            f"{first.median(lambda s: s.instance_s):.3f} s and deciding (which days can run, the backfill request) "
            f"{first.median(lambda s: s.other_s):.3f} s."
        )
    return lines


def markdown_section(
    results: Sequence[Result], history: History, args: argparse.Namespace, env: dict[str, str], setup: dict[str, float]
) -> str:
    reproduce = f".venv/bin/python -m benchmarks.landing_sensor --years {args.years} --repeats {args.repeats}"
    reproduce += " --s3" if args.s3 else ""
    steady_local = _find(results, "local folder", "steady")
    objects = steady_local.last.listed if steady_local else 0
    per_year = objects / max(1, args.years)
    steady_s3 = _find(results, "S3 (moto)", "steady")
    s3_cpu_us = steady_s3.median(lambda s: s.cpu_s) / steady_s3.last.listed * 1e6 if steady_s3 else None
    return "\n".join(
        [
            MARKER_START,
            f"## Landing sensor: one tick over {args.years} years of daily drops",
            "",
            "Generated by `benchmarks/landing_sensor.py`; re-running it replaces this section (between the markers).",
            "",
            f"Reproduce: `{reproduce} --write-docs`",
            "",
            "**Method.** The landing zone holds what a producer would have delivered since the lender's first day: "
            f"{len(history.days):,} business days ({history.days[0]} to {history.days[-1]}) of v1 drops written by "
            f"the real simulator (`simulate`, scale {history.config.scale}, seed {history.config.seed}: nine small "
            "Parquet files and `_manifest.json` per drop, the real layout), plus a v2 restatement "
            f"(`write_correction`) of {len(history.restated)} days chosen at random (~{RESTATED_SHARE:.0%}): "
            f"{objects:,} objects. The file sizes do not matter here: the sensor lists objects and reads manifests, "
            "never the Parquet files."
            + (
                " The same objects are also copied to an S3 bucket on a moto server (`ThreadedMotoServer` on "
                f"127.0.0.1, in a child process) under `s3://{S3_BUCKET}/{S3_PREFIX}`."
                if args.s3
                else ""
            ),
            "",
            "Each tick is `sensors.lending.evaluate_landing` (the body of `lending_landing_sensor`) with a context "
            "from `dg.build_sensor_context` on a real SQLite Dagster instance (`dg.instance_for_test`, on disk) and "
            "the loan pipeline's repository, repeated "
            f"{args.repeats} times after one untimed warm-up; times are the median, (min-max) in brackets. The "
            "tick's clock is set an hour (the cursor's settle window) after the newest history object, as in "
            "production where only the latest drop is recent, so a cursor settles the history and keeps no keys. "
            "The ticks:",
            "",
            "- **first tick, nothing loaded**: empty cursor, an instance with nothing loaded. It reads every "
            "manifest, and the decision is one asset backfill over every day and every pipeline asset (the raw "
            "tables are not loaded here; that is the sensor's cold-start decision, and its cost is measured too).",
            "- **first tick, every day loaded**: empty cursor (a reset cursor or a new sensor), the history recorded "
            "as loaded (one `raw/loans` materialization per day with `landing/drop_versions`, what the raw load "
            "records and all the sensor reads): it reads every manifest and decides nothing is to run.",
            "- **steady tick, nothing new**: the cursor of the previous tick; the common case, every "
            f"{SENSOR_INTERVAL_SECONDS} s.",
            f"- **tick after one new drop**: the steady cursor after the next business day ({history.new_day}) "
            "landed; the previous day is loaded, so the decision is one run of the day's pipeline.",
            "",
            "Columns, all from the same ticks: **wall s** and **CPU s** (this process: the sensor's side; the moto "
            "server runs in a child process) of the whole evaluation, and its parts, timed by wrappers around the "
            "sensor module's own functions: **client s** `landing_store` (for S3, creating the boto3 client, as every "
            "tick does); **list + read s** `scan_landing` (listing, parsing the keys, reading and checking the new "
            "manifests); **instance s** `loaded_versions` + `pipeline_in_flight` (the Dagster instance queries); "
            "**decision s** the rest (which days can run, building the run or backfill request, the cursor). "
            "**list pages** (S3 `ListObjectsV2` calls, "
            f"{S3_PAGE_SIZE:,} keys a page) are counted by a botocore hook on the sensor's own client, which also "
            "checks that the S3 GETs equal the manifests read.",
            "",
            markdown_table(results),
            "",
            "**What it shows.** Listing is O(objects) on every tick; reading is O(new). Neither a folder nor an S3 "
            "prefix can be listed by modification time, so every tick walks the whole landing zone, and the cursor "
            "only spares the manifest reads (and the instance queries) of what it has already seen. At about "
            f"{per_year:,.0f} objects a year (ten per business day, plus restatements) the steady tick grows "
            "linearly with the zone's age, while a day's new drop adds a constant: one manifest read, the instance "
            "queries (loaded versions of two days, runs and backfills in flight) and one run request. Only a first "
            "tick (or a lost cursor) pays for every manifest."
            + (
                f" On S3 the sensor's own CPU is {s3_cpu_us:.0f} µs per listed object on a steady tick (the moto "
                "server's work is in another process), which is botocore parsing the list pages' XML, more than half "
                "of it dateutil parsing each object's LastModified (profiled separately with cProfile); that cost "
                "stays with real "
                "S3, which adds a network round trip per page and per manifest GET on top."
                if s3_cpu_us is not None
                else ""
            ),
            "",
            *findings(results),
            "",
            "Not measured: the daemon's own per-tick work (the gRPC call to the code server, storing the tick and "
            "cursor, launching the run or backfill), PostgreSQL as the instance storage (production), and real S3 "
            "latency. moto is a Python server (werkzeug) on 127.0.0.1 with its objects in memory: the S3 wall times "
            "measure its speed as much as the sensor's, and are no estimate of S3's; with real S3, take the "
            "sensor's CPU s plus one round trip per list page and per manifest GET (the pages and manifests "
            "columns). The local folder was written "
            "just before, so its listing ran from a warm page cache. The machine was shared (load below), which "
            "stretches wall times; CPU s is the steadier number.",
            "",
            f"Setup, not counted: simulating the history {setup['simulate_s']:.0f} s, the restatements "
            f"{setup['restate_s']:.0f} s, recording the loaded days {setup['record_s']:.1f} s"
            + (f", uploading to moto {setup['upload_s']:.0f} s" if "upload_s" in setup else "")
            + ".",
            "",
            "Environment:",
            "",
            *(f"- {key}: {value}" for key, value in env.items()),
            MARKER_END,
        ]
    )


# -- main -----------------------------------------------------------------------------------------------------------


def newest_modification(store: Store) -> float:
    return max(o.modified for o in landing_store(store.landing).list())


def run(args: argparse.Namespace, scratch: Path) -> int:
    load_before = os.getloadavg()[0]
    repo = repository()
    print(f"landing {args.years} years of drops at scale {args.scale} ...", file=sys.stderr)
    history = land_history(scratch / "landing", args.years, args.scale)
    setup = {"simulate_s": history.simulate_s, "restate_s": history.restate_s}
    alerts = LogFileAlerts(path=str(scratch / "alerts.jsonl"))
    results: list[Result] = []

    with ExitStack() as stack:
        empty = stack.enter_context(dg.instance_for_test(temp_dir=str(_mkdir(scratch / "empty-instance"))))
        loaded = stack.enter_context(dg.instance_for_test(temp_dir=str(_mkdir(scratch / "loaded-instance"))))
        started = time.perf_counter()
        record_loaded(loaded, history.versions())
        setup["record_s"] = time.perf_counter() - started

        stores = [Store("local folder", LandingZoneResource(uri=str(history.root)), alerts, 0.0)]
        s3_client = None
        if args.s3:
            endpoint, s3_client = stack.enter_context(moto_s3())
            started = time.perf_counter()
            upload(s3_client, history.root, [o.key for o in LocalObjects(history.root).list()])
            setup["upload_s"] = time.perf_counter() - started
            # The landing resource reads credentials from the default chain, as in production: moto's here.
            stack.enter_context(mock.patch.dict(os.environ, MOTO_CREDENTIALS))
            s3_landing = CountingLandingZone(
                uri=f"s3://{S3_BUCKET}/{S3_PREFIX}", s3_endpoint=endpoint, region=S3_REGION
            )
            stores.append(Store("S3 (moto)", s3_landing, alerts, 0.0))
        stores = [replace(s, newest_history=newest_modification(s)) for s in stores]  # each store's own clock
        timers = stack.enter_context(SensorTimers().installed())

        steady_cursors: dict[str, str | None] = {}
        for store in stores:
            results.append(measure(store.name, "first", args.repeats, partial(tick, timers, empty, repo, store, None)))
            context = dg.build_sensor_context(instance=loaded, cursor=None, repository_def=repo)
            steady_cursors[store.name] = lending_sensors.evaluate_landing(
                context, store.landing, alerts, now=store.now
            ).cursor
            for tick_name, cursor in (("first_loaded", None), ("steady", steady_cursors[store.name])):
                run_once = partial(tick, timers, loaded, repo, store, cursor)
                results.append(measure(store.name, tick_name, args.repeats, run_once))

        # The new drop must be newer than what the steady cursors settled (S3 times have whole seconds).
        while time.time() < max(s.newest_history for s in stores) + 2.5:
            time.sleep(0.5)
        land_new_drop(history)
        if s3_client is not None:
            new_keys = [o.key for o in LocalObjects(history.root).list(drop_prefix(history.new_day, 1))]
            upload(s3_client, history.root, new_keys)
        print(f"the drop of {history.new_day} landed", file=sys.stderr)
        for store in stores:
            run_once = partial(tick, timers, loaded, repo, store, steady_cursors[store.name])
            results.append(measure(store.name, "new_drop", args.repeats, run_once))

    tick_order = [name for name, _ in TICKS]
    results.sort(key=lambda r: ([s.name for s in stores].index(r.store), tick_order.index(r.tick)))
    print()
    print(markdown_table(results))
    print()
    for line in findings(results):
        print(line)
    if args.write_docs:
        env = environment(load_before, os.getloadavg()[0])
        update_section(args.output, markdown_section(results, history, args, env, setup), MARKER_START, MARKER_END)
        print(f"\nwrote the landing_sensor section of {args.output}", file=sys.stderr)
    return 0


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.landing_sensor",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--years", type=int, default=3, help=f"years of business-day drops since {LENDING_START}")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each tick (after one warm-up)")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="simulator scale (rows, not objects)")
    parser.add_argument("--s3", action="store_true", help="also measure an S3 prefix on a moto server")
    parser.add_argument("--write-docs", action="store_true", help="rewrite this benchmark's section of --output")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.years < 1 or args.repeats < 1:
        parser.error("--years and --repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    with tempfile.TemporaryDirectory(prefix="landing-sensor-bench-") as scratch:
        return run(args, Path(scratch))


if __name__ == "__main__":
    raise SystemExit(main())
