"""What sensors and schedules need to decide safely: what is in flight, what a restatement must recompute, and the
asset backfill that recomputes it.

Dagster's eager automation ignores restated old partitions, and a sensor that emits one run per partition gets
unordered runs for a day-chained asset. A restatement here is one asset backfill over the restated partitions and
everything downstream of them, computed through the assets' partition mappings (so a day-chained asset gets every
later day), which the backfill daemon runs in dependency order and with each asset's BackfillPolicy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

# Runs that have been submitted and have not finished: they will still write.
PENDING_OR_RUNNING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# A backfill in these states may still launch runs.
ACTIVE_BACKFILL = [BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING]
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class InFlight:
    """A run or backfill that has not finished and writes some of the assets asked about."""

    kind: str  # "run" or "backfill"
    id: str
    assets: frozenset[dg.AssetKey]

    def describe(self) -> str:
        names = ", ".join(sorted(k.to_user_string() for k in self.assets)[:3])
        more = f" and {len(self.assets) - 3} more" if len(self.assets) > 3 else ""
        return f"{self.kind} {self.id} (writing {names}{more})"


def in_flight(
    instance: dg.DagsterInstance,
    asset_keys: Collection[dg.AssetKey],
    job_assets: Callable[[str], Collection[dg.AssetKey]] | None = None,
) -> list[InFlight]:
    """Unfinished runs and backfills that write any of ``asset_keys``.

    A run launched as a whole job has no asset selection; ``job_assets`` maps its job name to the assets it writes
    (e.g. from the repository), else such runs are not seen.
    """
    wanted = frozenset(asset_keys)
    found = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=PENDING_OR_RUNNING)):
        assets = set(run.asset_selection or ()) or set(job_assets(run.job_name) if job_assets else ())
        if hit := frozenset(assets) & wanted:
            found.append(InFlight("run", run.run_id, hit))
    for backfill in instance.get_backfills(filters=BulkActionsFilter(statuses=ACTIVE_BACKFILL)):
        if hit := frozenset(backfill.asset_selection or ()) & wanted:
            found.append(InFlight("backfill", backfill.backfill_id, hit))
    return found


def downstream_closure(
    asset_graph: BaseAssetGraph,
    roots: Mapping[dg.AssetKey, Collection[str]],
    existing: Callable[[dg.AssetKey], Collection[str]],
) -> dict[dg.AssetKey, set[str]]:
    """The roots' partitions and every partition downstream of them that ``existing`` says has been built.

    Follows each child's partition mapping, so a day-chained asset (depending on its own previous partition)
    reaches every later day. Downstream partitions that were never built are left out: a restatement recomputes
    what exists, it does not build ahead of the data.
    """
    targets: dict[dg.AssetKey, set[str]] = {key: set(keys) for key, keys in roots.items()}
    built: dict[dg.AssetKey, frozenset[str]] = {}
    queue = deque((key, frozenset(keys)) for key, keys in roots.items())
    while queue:
        parent, keys = queue.popleft()
        parent_def = asset_graph.get(parent).partitions_def
        if parent_def is None:
            raise ValueError(f"{parent.to_user_string()} is not partitioned; restatements are per partition")
        for child in sorted(asset_graph.get(parent).child_keys):
            child_def = asset_graph.get(child).partitions_def
            if child_def is None:
                continue  # unpartitioned children are rebuilt by their own automation, not by a partition backfill
            mapped = asset_graph.get_partition_mapping(child, parent).get_downstream_partitions_for_partitions(
                parent_def.empty_subset().with_partition_keys(sorted(keys)), parent_def, child_def
            )
            if child not in built:
                built[child] = frozenset(existing(child))
            new = (set(mapped.get_partition_keys()) & built[child]) - targets.get(child, set())
            if new:
                targets.setdefault(child, set()).update(new)
                queue.append((child, frozenset(new)))
    return targets


def asset_graph_subset(asset_graph: BaseAssetGraph, targets: Mapping[dg.AssetKey, Collection[str]]) -> AssetGraphSubset:
    subsets = {}
    for key, keys in targets.items():
        partitions_def = asset_graph.get(key).partitions_def
        if partitions_def is None:
            raise ValueError(f"{key.to_user_string()} is not partitioned")
        subsets[key] = partitions_def.empty_subset().with_partition_keys(sorted(keys))
    return AssetGraphSubset(subsets, set())  # type: ignore[call-arg]  # the serdes decorator hides its fields


def backfill_request(
    asset_graph: BaseAssetGraph, targets: Mapping[dg.AssetKey, Collection[str]], tags: Mapping[str, str]
) -> dg.RunRequest:
    """A sensor's request for ONE asset backfill over ``targets``: the backfill daemon orders it by dependencies and
    splits it into runs by each asset's BackfillPolicy, exactly like a backfill launched from the UI."""
    # RunRequest.for_asset_graph_subset is the (private) constructor the sensor daemon turns into a backfill.
    return dg.RunRequest.for_asset_graph_subset(asset_graph_subset(asset_graph, targets), tags=dict(tags))


def run_partition_keys(tags: Mapping[str, str], partitions_def: dg.PartitionsDefinition) -> list[str]:
    """The partition keys a run targets, from its single-partition or range tags."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        return list(
            partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG]))
        )
    return []


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_keys: Collection[str]
) -> dict[str, dg.AssetMaterialization]:
    """The latest materialization of each given partition that has one (one query)."""
    if not partition_keys:
        return {}
    latest: dict[str, dg.AssetMaterialization] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(partition_keys)),
            limit=1000,
            cursor=cursor,
        )
        for record in result.records:  # newest first
            materialization = record.asset_materialization
            if materialization is not None and materialization.partition is not None:
                latest.setdefault(materialization.partition, materialization)
        if not result.has_more or len(latest) == len(set(partition_keys)):
            return latest
        cursor = result.cursor
