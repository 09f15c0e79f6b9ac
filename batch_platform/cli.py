"""`batch-platform`: operator commands that Dagster's own CLI does not have."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, timedelta


def _demo(args: argparse.Namespace) -> int:
    import dagster as dg

    from assets.platform_demo import DEMO_START_DATE, demo_assets
    from resources import local_resources

    start = date.fromisoformat(args.start or DEMO_START_DATE)
    keys = [(start + timedelta(days=i)).isoformat() for i in range(args.days)]
    instance = dg.DagsterInstance.get()  # the instance in $DAGSTER_HOME, so the UI shows these runs
    resources = local_resources()
    for key in keys:
        result = dg.materialize(demo_assets, partition_key=key, instance=instance, resources=resources)
        if not result.success:
            print(f"demo: materialization of {key} failed", file=sys.stderr)
            return 1
        print(f"demo: materialized {len(demo_assets)} assets for {key} (run {result.run_id})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batch-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="materialize the demo lake into the local Dagster instance")
    demo.add_argument("--days", type=int, default=7, help="how many daily partitions to materialize")
    demo.add_argument("--start", help="first partition (ISO date); default: the demo's start date")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
