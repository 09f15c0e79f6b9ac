"""Spec datasets -> Dagster assets: a few subsettable multi-assets, not one op per dataset.

Datasets are grouped by what one step must share (partitions, compute profile, backfill policy) and by their level
in the graph (the longest chain of spec datasets under them); each group is cut into multi-assets of at most
``max_per_asset`` datasets. Levels keep the multi-assets free of cycles: a dataset only reads datasets of lower
levels, so no multi-asset both feeds and reads another. (Cutting by profile alone does make such cycles, and Dagster
then splits the multi-assets apart again when it builds a job: 2 multi-assets of 250 became 181 nodes, and
``dagster definitions validate`` took longer than with one ``@asset`` per dataset; docs/benchmarks.md.)

A group of one dataset becomes an ordinary ``lake_dataset_asset``, with its own op and its table's concurrency pool,
exactly as if it had been written in Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from graphlib import TopologicalSorter

import dagster as dg

from batch_platform.datasets import LakeDataset, lake_dataset_asset, lake_datasets_multi_asset

DEFAULT_MAX_PER_ASSET = 500


def levels(datasets: Sequence[LakeDataset]) -> dict[dg.AssetKey, int]:
    """0 for a dataset reading no other dataset of ``datasets``, else 1 + the highest level among those it reads."""
    by_key = {d.asset_key: d for d in datasets}
    upstream = {
        key: [i.table.asset_key for i in d.inputs if i.table.asset_key in by_key and i.table.asset_key != key]
        for key, d in by_key.items()
    }
    level: dict[dg.AssetKey, int] = {}
    for key in TopologicalSorter(upstream).static_order():
        level[key] = 1 + max((level[u] for u in upstream[key]), default=-1)
    return level


def _group_key(dataset: LakeDataset, level: int) -> tuple[str, str, str, int]:
    partitions = "" if dataset.partitions_def is None else str(id(dataset.partitions_def))
    policy = dataset.backfill_policy
    backfill = "" if policy is None else f"{policy.policy_type}:{policy.max_partitions_per_run}"
    return partitions, dataset.compute, backfill, level


def spec_assets(
    name: str, datasets: Sequence[LakeDataset], max_per_asset: int = DEFAULT_MAX_PER_ASSET
) -> list[dg.AssetsDefinition]:
    """The assets of ``datasets``: multi-assets named ``{name}_{n}``, or single assets for groups of one."""
    level = levels(datasets)
    groups: dict[tuple[str, str, str, int], list[LakeDataset]] = defaultdict(list)
    for dataset in sorted(datasets, key=lambda d: level[d.asset_key]):
        groups[_group_key(dataset, level[dataset.asset_key])].append(dataset)
    assets = []
    for members in groups.values():
        if len(members) == 1:
            assets.append(lake_dataset_asset(members[0]))
            continue
        for start in range(0, len(members), max_per_asset):
            chunk = members[start : start + max_per_asset]
            assets.append(
                lake_datasets_multi_asset(f"{name}_{len(assets)}", chunk, backfill_policy=chunk[0].backfill_policy)
            )
    return assets
