"""Spec datasets -> Dagster assets: a few subsettable multi-assets, not one op per dataset.

Datasets are grouped by what one step must share (partitions, compute profile, backfill policy), and each group is
cut, in dependency order, into multi-assets of at most ``max_per_asset`` datasets (``lake_datasets_multi_asset``
runs the selected ones in that order). A group of one dataset becomes an ordinary ``lake_dataset_asset``, with its
own op and its table's concurrency pool, exactly as if it had been written in Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from graphlib import TopologicalSorter

import dagster as dg

from batch_platform.datasets import LakeDataset, lake_dataset_asset, lake_datasets_multi_asset

DEFAULT_MAX_PER_ASSET = 500


def _dependency_order(datasets: Sequence[LakeDataset]) -> list[LakeDataset]:
    by_key = {d.asset_key: d for d in datasets}
    graph = {
        key: [i.table.asset_key for i in d.inputs if i.table.asset_key in by_key and i.table.asset_key != key]
        for key, d in by_key.items()
    }
    return [by_key[k] for k in TopologicalSorter(graph).static_order()]


def _group_key(dataset: LakeDataset) -> tuple[str, str, str]:
    partitions = "" if dataset.partitions_def is None else str(id(dataset.partitions_def))
    policy = dataset.backfill_policy
    backfill = "" if policy is None else f"{policy.policy_type}:{policy.max_partitions_per_run}"
    return partitions, dataset.compute, backfill


def spec_assets(
    name: str, datasets: Sequence[LakeDataset], max_per_asset: int = DEFAULT_MAX_PER_ASSET
) -> list[dg.AssetsDefinition]:
    """The assets of ``datasets``: multi-assets named ``{name}_{n}``, or single assets for groups of one."""
    groups: dict[tuple[str, str, str], list[LakeDataset]] = defaultdict(list)
    for dataset in _dependency_order(datasets):
        groups[_group_key(dataset)].append(dataset)
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
