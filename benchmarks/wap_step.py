"""Benchmark: one write-audit-publish step, auditing the staged files (now) against auditing an Iceberg branch (before).

Both flows write the same day of synthetic payments (``benchmarks.lake_write.generate``) into their own table, day
after day, with the same two audits (a unique key and a row rule), through ``dg.materialize`` of one partitioned
asset each, in one Spark session:

- **staged**: ``batch_platform.audit.write_audit_publish``: stage the Parquet files, audit them, one commit;
- **branch**: the flow it replaced, rebuilt from the same lake methods: create an audit branch, write to it, read
  the branch back and audit it, publish the branch's files to main, drop the branch.

The two alternate day by day so that both see the same machine. Measured per step: wall time of the WAP part (the
asset body), the catalog commits it made (a spy on the SQL catalog's ``commit_table``) and the table's metadata
file size at the end. Run from the repository root: ``.venv/bin/python -m benchmarks.wap_step --write-docs``.
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyspark
from pyiceberg.catalog.sql import SqlCatalog
from pyspark.sql import functions as F

from batch_platform.audit import Audit, audit_check_specs, rows_satisfy, unique, write_audit_publish
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.partitions import partition_keys
from batch_platform.spark import SparkResource
from benchmarks.lake_write import TABLE, generate
from benchmarks.markdown import update_section

START, END = "<!-- wap_step:start -->", "<!-- wap_step:end -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
FIRST_DAY = date(2024, 1, 1)
STAGED = LakeTable("bench", "wap_staged", TABLE.schema, TABLE.partition_column)
BRANCH = LakeTable("bench", "wap_branch", TABLE.schema, TABLE.partition_column)
AUDITS: list[Audit] = [
    unique("payment_id"),
    rows_satisfy("amount_positive", "payments are positive", lambda: F.col("amount") > 0),
]
PARTITIONS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY.isoformat())

timings: dict[str, list[float]] = {"staged": [], "branch": []}
commits: dict[str, list[int]] = {"staged": [], "branch": []}
_commit_count = [0]


class Rows(dg.Config):
    rows: int = 200_000


def _day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


@dg.asset(key=STAGED.asset_key, partitions_def=PARTITIONS, check_specs=audit_check_specs(STAGED, AUDITS))
def wap_staged(
    context: dg.AssetExecutionContext, config: Rows, lake: IcebergLakeResource, spark: SparkResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    df = generate(spark.session, config.rows, _day(context))
    before, start = _commit_count[0], time.perf_counter()
    yield from write_audit_publish(context, lake, spark, STAGED, df, AUDITS)
    timings["staged"].append(time.perf_counter() - start)
    commits["staged"].append(_commit_count[0] - before)


@dg.asset(key=BRANCH.asset_key, partitions_def=PARTITIONS, check_specs=audit_check_specs(BRANCH, AUDITS))
def wap_branch(
    context: dg.AssetExecutionContext, config: Rows, lake: IcebergLakeResource, spark: SparkResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The previous write_audit_publish, step for step (git history of batch_platform/audit.py)."""
    df = generate(spark.session, config.rows, _day(context))
    before, start = _commit_count[0], time.perf_counter()
    keys = partition_keys(context)
    lineage = Lineage.from_context(context)
    branch = lake.create_audit_branch(BRANCH, lineage)
    lake.write_spark(spark.session, BRANCH, df, partition_keys=keys, lineage=lineage, branch=branch)
    on_branch = lake.read_spark(spark.session, BRANCH, keys, ref=branch).cache()
    results = [(audit, audit.evaluate(on_branch)) for audit in AUDITS]
    on_branch.unpersist()
    assert all(outcome.passed for _, outcome in results)
    published = lake.publish(BRANCH, branch, partition_keys=keys, lineage=lineage)
    for audit, outcome in results:
        yield dg.AssetCheckResult(asset_key=BRANCH.asset_key, check_name=audit.name, passed=outcome.passed)
    yield dg.MaterializeResult(metadata=published.materialize_result().metadata)
    timings["branch"].append(time.perf_counter() - start)
    commits["branch"].append(_commit_count[0] - before)


def _count_commits() -> None:
    commit_table = SqlCatalog.commit_table

    def counted(catalog: SqlCatalog, table: Any, *args: Any, **kwargs: Any) -> Any:
        _commit_count[0] += 1
        return commit_table(catalog, table, *args, **kwargs)

    SqlCatalog.commit_table = counted  # type: ignore[method-assign,assignment]


def _metadata_bytes(lake: IcebergLakeResource, table: LakeTable) -> int:
    location = lake.load(table).metadata_location
    return os.path.getsize(location.removeprefix("file://"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per day")
    parser.add_argument("--days", type=int, default=20, help="days written by each flow, one after another")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    _count_commits()
    with tempfile.TemporaryDirectory(prefix="wap_step_") as tmp:
        lake = IcebergLakeResource(data_dir=tmp)
        resources = {"lake": lake, "spark": SparkResource()}
        instance = dg.DagsterInstance.ephemeral()
        config = {"config": {"rows": args.rows}}
        for n in range(args.days + 1):  # day 0 warms the Spark session up for both; not counted
            key = (FIRST_DAY + timedelta(days=n)).isoformat()
            order = [wap_staged, wap_branch] if n % 2 == 0 else [wap_branch, wap_staged]
            for asset in order:
                name = asset.op.name
                run_config = {"ops": {name: config}}
                result = dg.materialize(
                    [asset], partition_key=key, resources=resources, instance=instance, run_config=run_config
                )
                assert result.success
            if n == 0:
                for flow in timings:
                    timings[flow].clear()
                    commits[flow].clear()
            print(f"day {key}: staged {timings['staged'][-1:]}, branch {timings['branch'][-1:]}", flush=True)
        sizes = {"staged": _metadata_bytes(lake, STAGED), "branch": _metadata_bytes(lake, BRANCH)}
        rows = {flow: lake.read_arrow(t).num_rows for flow, t in (("staged", STAGED), ("branch", BRANCH))}
    assert rows["staged"] == rows["branch"] == args.rows * (args.days + 1), rows
    section = render(args, sizes)
    print(section)
    if args.write_docs:
        update_section(DOCS, section, START, END)
    return 0


def render(args: argparse.Namespace, sizes: dict[str, int]) -> str:
    def row(flow: str) -> str:
        t = timings[flow]
        return (
            f"| {flow} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) | "
            f"{statistics.median(commits[flow]):.0f} | {sizes[flow] / 1024:.0f} |"
        )

    ratio = statistics.median(timings["staged"]) / statistics.median(timings["branch"])
    per_day = [s / b for s, b in zip(timings["staged"], timings["branch"], strict=True)]
    return f"""{START}
## Write-audit-publish: one step auditing the staged files against auditing a branch

Generated by `benchmarks/wap_step.py`; re-running it with `--write-docs` replaces this section.

Reproduce: `.venv/bin/python -m benchmarks.wap_step --rows {args.rows} --days {args.days} --write-docs`

Measured {datetime.now(UTC):%Y-%m-%d} on {platform.machine()}, {os.cpu_count()} cores, Python
{platform.python_version()}, pyspark {pyspark.__version__}, dagster {dg.__version__}, Spark `local[*]`, SQL catalog on
local disk. Each flow writes {args.days} days of {args.rows:,} payments into its own table, one day after another
(the flows alternate day by day; a first day warms Spark up and is not counted), with the same two audits. Time is
the asset body's write-audit-publish, median (min-max) in seconds; commits are catalog commits per step; metadata
is the table's current metadata file after the last day.

| flow | WAP s per step | catalog commits per step | metadata KiB |
|---|---:|---:|---:|
{row("staged")}
{row("branch")}

Staged / branch: {ratio:.2f} (median step times); per day {", ".join(f"{r:.2f}" for r in per_day)}.
{END}"""


if __name__ == "__main__":
    raise SystemExit(main())
