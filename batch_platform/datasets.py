"""Lake datasets: a table, the inputs it reads, a plain transform and its audits, declared once.

From a ``LakeDataset`` the framework derives everything else, so none of it can drift from the rest:
- the Dagster asset: key, group, pool, compute profile, catalog metadata, and one dependency per declared input
  with the partition mapping of its window (``batch_platform.inputs``), so lineage, backfills and restatements
  follow what is read;
- the asset checks: one per audit (``batch_platform.audit``);
- the step: read each input for the step's partitions through its window, call the transform with the inputs as
  DataFrames (by name), then write-audit-publish the result.

A transform is a plain function: DataFrames in, a DataFrame out. It may also take ``step`` (a ``Step``: the
partition keys, the Spark session and the resources it asked for), for the rare transform that needs more than its
inputs (the day-chained loan book computes its days in order; customers are tokenized with the PII key).

Two builders: ``lake_dataset_asset`` gives one asset (and one op) per dataset, with its own pool and compute
profile; ``lake_datasets_multi_asset`` gives one subsettable multi-asset for many datasets (self-serve specs by the
thousand), whose step runs the selected datasets in dependency order.
"""

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from graphlib import TopologicalSorter
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from pyspark.sql import DataFrame, SparkSession

from batch_platform.assets import column_schema
from batch_platform.audit import Audit, AuditedWrite, audit_and_commit, audit_check_specs, report_writes
from batch_platform.compute import (
    COMPUTE_PROFILE_TAG,
    DAY_CHAIN_TAG,
    DEFAULT_PROFILE,
    ENGINE_TAG,
    SPARK_ENGINE,
    get_profile,
    largest,
    profile_tags,
)
from batch_platform.inputs import LakeInput
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.spark_io import spark_schema
from batch_platform.partitions import in_writes_of, partition_keys
from batch_platform.spark import SparkResource

STEP_PARAMETER = "step"
LAKE_RESOURCES = ("lake", "spark")


class DatasetDeclarationError(ValueError):
    """A dataset's declaration contradicts itself (raised when the definitions load)."""


@dataclass(frozen=True)
class Step:
    """What a transform may ask for besides its inputs."""

    partition_keys: list[str]
    session: SparkSession
    resources: Any  # the step's resources, e.g. ``step.resources.pii``


Transform = Callable[..., DataFrame]


@dataclass(frozen=True)
class LakeDataset:
    """A lake table computed from declared inputs by a transform, checked by audits before it is published."""

    table: LakeTable
    transform: Transform
    inputs: Sequence[LakeInput] = ()
    audits: Sequence[Audit] = ()
    partitions_def: dg.PartitionsDefinition | None = None
    description: str = ""
    compute: str = DEFAULT_PROFILE
    owners: Sequence[str] = ()
    group_name: str | None = None
    backfill_policy: dg.BackfillPolicy | None = None
    resources: Sequence[str] = ()  # resource keys the transform reads through ``step.resources``
    tags: Mapping[str, str] = field(default_factory=dict)
    freshness_policy: dg.FreshnessPolicy | None = None
    kinds: Sequence[str] = ("spark", "iceberg")
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)
    # Assets that must be materialized first but are not read (a barrier); never a table the transform reads.
    ordering_deps: Sequence[dg.AssetDep] = ()
    # A run over more partitions computes and commits them this many at a time, in order, each write reading what
    # the one before committed: a day chain's backfill then needs few runs (each a launch, a Spark start and a
    # daemon tick between links) with the memory of one write (docs/benchmarks.md, "Backfill").
    max_partitions_per_write: int | None = None

    def __post_init__(self) -> None:
        where = self.table.identifier
        if (self.partitions_def is None) != (self.table.partition_column is None):
            raise DatasetDeclarationError(
                f"{where}: a partitioned table needs partitions and an unpartitioned one none "
                f"(partition column {self.table.partition_column!r})"
            )
        tables = [i.table.identifier for i in self.inputs]
        twice = sorted({t for t in tables if tables.count(t) > 1})
        if twice:
            raise DatasetDeclarationError(
                f"{where}: {twice} are declared as two inputs; Dagster takes one dependency (one window) per table, so "
                "declare one input whose window covers both (e.g. last(2) for a day and the one before) and split it"
            )
        names = [i.key for i in self.inputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DatasetDeclarationError(f"{where}: inputs {duplicates} are declared twice; name them apart")
        for declared in self.inputs:
            declared.validate(self.table, self.partitions_def)
        if self.max_partitions_per_write is not None and (
            self.max_partitions_per_write < 1 or self.partitions_def is None
        ):
            raise DatasetDeclarationError(
                f"{where}: max_partitions_per_write must be a positive number of partitions of a partitioned table "
                f"(got {self.max_partitions_per_write!r})"
            )
        get_profile(self.compute)  # an unknown profile fails here, naming the profiles there are
        parameters = inspect.signature(self.transform).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        unknown = sorted(set(parameters) - set(names) - {STEP_PARAMETER}) if not takes_all else []
        if unknown:
            raise DatasetDeclarationError(
                f"{where}: the transform takes {unknown}, which are no declared input (inputs: {names})"
            )
        read_by_audits = {name for audit in self.audits for name in audit.reads}
        undeclared = sorted(read_by_audits - set(names))
        if undeclared:
            raise DatasetDeclarationError(f"{where}: audits read {undeclared}, which are no declared input")
        unread = sorted(set(names) - set(parameters) - read_by_audits) if not takes_all else []
        if unread:
            raise DatasetDeclarationError(
                f"{where}: inputs {unread} are declared but neither transform nor audit reads them"
            )

    @property
    def asset_key(self) -> dg.AssetKey:
        return self.table.asset_key

    @property
    def deps(self) -> list[dg.AssetDep]:
        return [*self.ordering_deps, *(i.dep(self.partitions_def is not None) for i in self.inputs)]

    @property
    def check_specs(self) -> list[dg.AssetCheckSpec]:
        return audit_check_specs(self.table, self.audits)

    def metadata(self) -> dict[str, Any]:
        return {
            "iceberg/table": self.table.identifier,
            "dagster/table_name": self.table.identifier,
            "dagster/column_schema": column_schema(self.table),
            "iceberg/partition_column": self.table.partition_column or "",
            "batch_platform/inputs": dg.MetadataValue.json(
                {i.key: f"{i.table.identifier}: {i.window.describe()}" for i in self.inputs}
            ),
            **self.extra_metadata,
        }

    @property
    def reads_own_past(self) -> bool:
        """A day chain: the dataset reads its own earlier partitions, so day N waits for day N-1."""
        return any(i.table == self.table for i in self.inputs)

    def op_tags(self) -> dict[str, str]:
        tags = profile_tags(get_profile(self.compute))
        if SPARK_ENGINE in self.kinds:
            tags[ENGINE_TAG] = SPARK_ENGINE
        if self.reads_own_past:
            tags[DAY_CHAIN_TAG] = "true"
        return tags

    def spec(self, *, skippable: bool = False) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.asset_key,
            deps=self.deps,
            description=self.description or self.table.description or None,
            metadata=self.metadata(),
            group_name=self.group_name or self.table.namespace,
            owners=list(self.owners),
            tags={**self.tags, COMPUTE_PROFILE_TAG: get_profile(self.compute).name},
            kinds=set(self.kinds),
            partitions_def=self.partitions_def,
            freshness_policy=self.freshness_policy,
            skippable=skippable,
        )


def check_required_inputs(
    instance: dg.DagsterInstance, lake: IcebergLakeResource, dataset: LakeDataset, keys: Sequence[str]
) -> None:
    """Fail, naming the partitions, when a required input's window reads partitions never materialized while the
    input table holds data up to them: there was something to carry from. A table with nothing up to them is at
    the first day of its chain (a new lender, a new dataset) and starts empty."""
    for declared in dataset.inputs:
        if not declared.required:
            continue
        selection = declared.selection(dataset.table, dataset.partitions_def, keys)
        wanted = list(selection) if isinstance(selection, list) else []
        if isinstance(selection, dg.PartitionKeyRange):
            wanted = [selection.start, selection.end]
        materialized = instance.get_materialized_partitions(declared.table.asset_key)
        missing = [k for k in wanted if k not in materialized]
        first = (
            declared.partitions_def or dataset.partitions_def or dg.StaticPartitionsDefinition([])
        ).get_first_partition_key()
        if missing and first and lake.has_rows(declared.table, dg.PartitionKeyRange(first, max(missing))):
            raise dg.Failure(
                description=(
                    f"{dataset.table.identifier} reads {declared.window.describe()} of {declared.table.identifier}, "
                    f"and {', '.join(missing[:5])} {'is' if len(missing) == 1 else 'are'} not materialized while "
                    f"{declared.table.identifier} holds data up to them: materialize those partitions first (a "
                    "backfill runs them in order)."
                )
            )


def read_inputs(
    dataset: LakeDataset, lake: IcebergLakeResource, session: SparkSession, keys: Sequence[str]
) -> dict[str, DataFrame]:
    """Each declared input, read for the step's partitions through its window (an empty DataFrame if none)."""
    frames = {}
    for declared in dataset.inputs:
        selection = declared.selection(dataset.table, dataset.partitions_def, keys)
        if selection == []:
            frames[declared.key] = session.createDataFrame([], spark_schema(declared.table.schema))
            continue
        if declared.table == dataset.table:
            lake.table(declared.table)  # a dataset reading its own past creates itself on first use
        snapshot_id, ref = declared.snapshot()
        frames[declared.key] = lake.read_spark(session, declared.table, selection, snapshot_id=snapshot_id, ref=ref)
    return frames


def run_transform(dataset: LakeDataset, frames: Mapping[str, DataFrame], step: Step) -> DataFrame:
    parameters = inspect.signature(dataset.transform).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    arguments: dict[str, Any] = dict(frames) if takes_all else {n: frames[n] for n in parameters if n in frames}
    if STEP_PARAMETER in parameters:
        arguments[STEP_PARAMETER] = step
    return dataset.transform(**arguments).select(*dataset.table.schema.names)


def materialize_dataset(
    context: dg.AssetExecutionContext, dataset: LakeDataset
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Read, transform, write-audit-publish: the step of one dataset."""
    lake: IcebergLakeResource = context.resources.lake
    spark: SparkResource = context.resources.spark
    session = spark.session_for(context)
    keys = partition_keys(context)
    # Checked once for the run: a later write of it reads the partitions the run's earlier writes just committed.
    check_required_inputs(context.instance, lake, dataset, keys)
    lineage = Lineage.from_context(context, dataset.asset_key)
    writes: list[AuditedWrite] = []
    for write_keys in in_writes_of(keys, dataset.max_partitions_per_write):
        frames = read_inputs(dataset, lake, session, write_keys)
        result = run_transform(dataset, frames, Step(write_keys, session, context.resources))
        write = audit_and_commit(
            lake,
            session,
            dataset.table,
            result,
            dataset.audits,
            partition_keys=write_keys,
            lineage=replace(lineage, partition_keys=tuple(write_keys)),
            inputs=frames,
        )
        writes.append(write)
        if write.published is None:
            break
        if len(write_keys) < len(keys):
            context.log.info(f"{dataset.table.identifier}: committed {write_keys[0]}..{write_keys[-1]}")
    yield from report_writes(dataset.table, writes, asset_key=dataset.asset_key)


def lake_dataset_asset(dataset: LakeDataset) -> dg.AssetsDefinition:
    """One asset for one dataset: its own op, pool (one writer per table) and compute profile."""
    spec = dataset.spec()

    @dg.multi_asset(
        name=dataset.table.asset_key.to_python_identifier(),
        specs=[spec],
        check_specs=dataset.check_specs,
        pool=dataset.table.pool,
        op_tags=dataset.op_tags(),
        backfill_policy=dataset.backfill_policy,
        required_resource_keys={*LAKE_RESOURCES, *dataset.resources},
    )
    def _dataset(context: AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield from materialize_dataset(context, dataset)

    return _dataset


def lake_datasets_multi_asset(
    name: str, datasets: Sequence[LakeDataset], *, backfill_policy: dg.BackfillPolicy | None = None
) -> dg.AssetsDefinition:
    """One subsettable multi-asset for many datasets of the same partitions; a run materializes the selected ones
    in dependency order within one step, one Spark session. Its pod takes the largest profile among them."""
    if not datasets:
        raise DatasetDeclarationError(f"{name}: no datasets")
    partitions = {d.partitions_def for d in datasets}
    if len(partitions) > 1:
        raise DatasetDeclarationError(f"{name}: datasets of one multi-asset share their partitions")
    by_key = {d.asset_key: d for d in datasets}
    order = list(
        TopologicalSorter(
            {
                key: [i.table.asset_key for i in d.inputs if i.table.asset_key in by_key and i.table.asset_key != key]
                for key, d in by_key.items()
            }
        ).static_order()
    )
    profile = largest(get_profile(d.compute) for d in datasets)
    op_tags = profile_tags(profile) if profile is not None else {}
    op_tags[ENGINE_TAG] = SPARK_ENGINE
    if any(d.reads_own_past for d in datasets):
        op_tags[DAY_CHAIN_TAG] = "true"

    @dg.multi_asset(
        name=name,
        specs=[d.spec(skippable=True) for d in datasets],
        check_specs=[spec for d in datasets for spec in d.check_specs],
        can_subset=True,
        op_tags=op_tags,
        backfill_policy=backfill_policy,
        required_resource_keys={*LAKE_RESOURCES, *{r for d in datasets for r in d.resources}},
    )
    def _datasets(context: AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        for key in order:
            if key in context.selected_asset_keys:
                yield from materialize_dataset(context, by_key[key])

    return _datasets
