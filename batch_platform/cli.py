"""`batch-platform`: operator commands that Dagster's own CLI does not have."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import dagster as dg


def _demo(args: argparse.Namespace) -> int:
    """Land the demo drops, then materialize every asset for the first days of its partitions, one run per
    partitions definition, as one run of a backfill would."""
    from batch_platform.domain import load_platform

    platform = load_platform()
    platform.prepare_demo(args.days)
    defs = platform.build_definitions()
    instance = dg.DagsterInstance.get()  # the instance in $DAGSTER_HOME, so the UI shows these runs
    by_partitioning: dict[str, list[dg.AssetsDefinition]] = {}
    partitioning: dict[str, dg.PartitionsDefinition] = {}
    for asset in defs.assets or []:
        if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def is not None:
            name = str(asset.partitions_def)
            by_partitioning.setdefault(name, []).append(asset)
            partitioning[name] = asset.partitions_def
    for name, assets in by_partitioning.items():
        keys = partitioning[name].get_partition_keys()[: args.days]
        result = dg.materialize(
            assets,
            instance=instance,
            resources=defs.resources,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
            raise_on_error=False,
        )
        status = "materialized" if result.success else "FAILED"
        print(f"demo: {status} {len(assets)} asset definitions for {keys[0]}..{keys[-1]} (run {result.run_id})")
        if not result.success:
            return 1
    return 0


def _spark_jars(args: argparse.Namespace) -> int:
    from batch_platform import spark_jars

    groups = args.group or sorted(spark_jars.GROUPS)
    if args.action == "fetch":
        paths = spark_jars.fetch(groups, into=args.into)
        print(f"spark-jars: {len(paths)} jars of {', '.join(groups)} in {args.into or spark_jars.cache_dir()}")
    else:
        print(":".join(str(p) for p in spark_jars.classpath(groups, search=[args.into] if args.into else [])))
    return 0


def _specs(args: argparse.Namespace) -> int:
    """Check a folder of dataset specs and store its checks beside it (batch_platform.specs.checked), as an image
    build compiles bytecode: the code location then starts without parsing them. Every problem is printed."""
    from batch_platform.specs import SpecError, load_specs
    from batch_platform.specs.catalog import resolve_catalog
    from batch_platform.specs.checked import store_path

    try:
        datasets = load_specs(args.folder, resolve_catalog(args.catalog))
    except SpecError as e:
        print(e, file=sys.stderr)
        return 1
    store = store_path(args.folder)
    where = f"checks stored in {store}" if store.is_file() else "checks NOT stored (the folder cannot be written)"
    print(f"specs: {len(datasets)} specs in {args.folder} passed; {where}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Beta parameters (backfill_policy, pools) are deliberate; their warnings would drown the command's output.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from batch_platform.domain import load_platform

    # The registered domains' subcommands (a Domain cannot take the platform's own: PLATFORM_COMMANDS).
    commands = load_platform().commands()
    parser = argparse.ArgumentParser(prog="batch-platform", description=__doc__)
    subcommands = parser.add_subparsers(dest="command", required=True)
    demo = subcommands.add_parser("demo", help="land demo drops and materialize the demo lake into $DAGSTER_HOME")
    demo.add_argument("--days", type=int, default=25, help="how many partitions of each asset to materialize")
    jars = subcommands.add_parser(
        "spark-jars", help="fetch the pinned jars Spark needs beyond pyspark (S3A, Iceberg's runtime), or list them"
    )
    jars.add_argument("action", choices=["fetch", "classpath"])
    jars.add_argument("--group", action="append", choices=["iceberg", "s3"], help="default: every group")
    jars.add_argument("--into", type=Path, help="folder to fetch into (default: the shared cache)")
    specs = subcommands.add_parser("specs", help="check a folder of dataset specs and store the checks beside it")
    specs.add_argument("action", choices=["check"])
    specs.add_argument("folder", type=Path, help="the folder of spec files")
    specs.add_argument("--catalog", required=True, help="'module:attribute' of the domain's SpecCatalog")
    subcommands.add_parser("backfill", help="submit one asset backfill over a date range and follow it", add_help=False)
    for name, command in commands.items():
        subcommands.add_parser(name, help=(command.__doc__ or "").strip().splitlines()[0], add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "backfill":
        from batch_platform.backfill_cli import main as backfill

        return backfill(rest)
    if args.command in commands:
        return commands[args.command](rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "spark-jars":
        return _spark_jars(args)
    if args.command == "specs":
        return _specs(args)
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
