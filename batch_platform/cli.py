"""`batch-platform`: operator commands that Dagster's own CLI does not have."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, timedelta


def _demo(args: argparse.Namespace) -> int:
    """Materialize the asset group ``demo`` for the first days of its partitions, one run per day."""
    import dagster as dg

    from batch_platform.definitions import build_definitions

    defs = build_definitions()
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    demo = [a for a in assets if a.group_names_by_key and set(a.group_names_by_key.values()) == {args.group}]
    if not demo:
        print(f"demo: no assets in group {args.group!r}", file=sys.stderr)
        return 2
    partitions_def = demo[0].partitions_def
    first = partitions_def.get_first_partition_key() if partitions_def else None
    start = date.fromisoformat(args.start or first or date.today().isoformat())
    keys = [(start + timedelta(days=i)).isoformat() for i in range(args.days)]
    instance = dg.DagsterInstance.get()  # the instance in $DAGSTER_HOME, so the UI shows these runs
    for key in keys:
        result = dg.materialize(demo, partition_key=key, instance=instance, resources=defs.resources)
        if not result.success:
            print(f"demo: materialization of {key} failed", file=sys.stderr)
            return 1
        print(f"demo: materialized {len(demo)} assets for {key} (run {result.run_id})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batch-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="materialize the demo lake into the local Dagster instance")
    demo.add_argument("--days", type=int, default=7, help="how many daily partitions to materialize")
    demo.add_argument("--start", help="first partition (ISO date); default: the group's first partition")
    demo.add_argument("--group", default="demo", help="asset group to materialize")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
