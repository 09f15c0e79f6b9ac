"""Declared inputs: a lake table and the window of its partitions a dataset reads for each of its own partitions.

One declaration serves three readers, so they cannot drift apart:
- Dagster: the input becomes an ``AssetDep`` with a built-in partition mapping (only built-in mappings reach the
  daemon and the UI), so the lineage graph, asset backfills and the restatement closure follow it;
- the read: the partitions read are the ones that mapping gives for the step's partitions, nothing else;
- the docs: ``describe()`` is what the asset's metadata shows.

Windows (for a daily dataset over daily inputs of the same calendar):
- ``this_partition()``: the same day;
- ``previous(n)``: the n partitions before this one (a day-chained balance reads ``previous(1)`` of itself);
- ``last(n)``: this partition and the n - 1 before it (Dagster takes one window per input table);
- ``up_to_this_partition()``: every partition up to and including this one (a versioned dimension, a history);
- ``before_this_partition()``: every partition before this one (what earlier loads decided, e.g. a quarantine);
- ``pinned(snapshot_id=... | ref=...)``: the whole table at one Iceberg snapshot or tag, whatever lands later;
- ``whole_table()``: the whole current table (an unpartitioned input, or a small table read in full).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from batch_platform.lake.selection import PartitionSelection
from batch_platform.lake.tables import LakeTable
from batch_platform.partition_offsets import install_fast_partition_offsets

# The windows below reach back thousands of partitions: every process that maps them walks the calendar once per
# mapping, not once per partition (batch_platform.partition_offsets).
install_fast_partition_offsets()

# "Everything up to this partition" is a TimeWindowPartitionMapping reaching this many partitions back: ten years
# of business days. Mapping walks the calendar this far (one walk, batch_platform.partition_offsets), so its cost
# grows with this bound, not with the table's age. A read that would need more fails loudly rather than silently
# reading a shorter history.
HISTORY_PARTITIONS = 2600


class InputWindowError(ValueError):
    """A window cannot be used with the tables it is declared on."""


@dataclass(frozen=True)
class Window:
    """Which partitions of an input one partition of the dataset reads."""

    def partition_mapping(self) -> dg.PartitionMapping | None:
        """The built-in mapping Dagster follows; None for Dagster's default (the same partition)."""
        return None

    def describe(self) -> str:
        raise NotImplementedError

    @property
    def reads_everything(self) -> bool:
        """Whether the read ignores the step's partitions (the whole table, at a snapshot or now)."""
        return False


@dataclass(frozen=True)
class ThisPartition(Window):
    def describe(self) -> str:
        return "this partition"


@dataclass(frozen=True)
class PreviousPartitions(Window):
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise InputWindowError(f"previous(n) needs n >= 1, got {self.count}")

    def partition_mapping(self) -> dg.PartitionMapping:
        return dg.TimeWindowPartitionMapping(start_offset=-self.count, end_offset=-1)

    def describe(self) -> str:
        return "the previous partition" if self.count == 1 else f"the previous {self.count} partitions"


@dataclass(frozen=True)
class LastPartitions(Window):
    count: int = 2

    def __post_init__(self) -> None:
        if self.count < 1:
            raise InputWindowError(f"last(n) needs n >= 1, got {self.count}")

    def partition_mapping(self) -> dg.PartitionMapping:
        return dg.TimeWindowPartitionMapping(start_offset=-(self.count - 1), end_offset=0)

    def describe(self) -> str:
        return f"this partition and the {self.count - 1} before it"


@dataclass(frozen=True)
class UpToThisPartition(Window):
    def partition_mapping(self) -> dg.PartitionMapping:
        return dg.TimeWindowPartitionMapping(start_offset=-HISTORY_PARTITIONS, end_offset=0)

    def describe(self) -> str:
        return "every partition up to this one"


@dataclass(frozen=True)
class EarlierPartitions(Window):
    def partition_mapping(self) -> dg.PartitionMapping:
        return dg.TimeWindowPartitionMapping(start_offset=-HISTORY_PARTITIONS, end_offset=-1)

    def describe(self) -> str:
        return "every partition before this one"


@dataclass(frozen=True)
class Pinned(Window):
    snapshot_id: int | None = None
    ref: str | None = None

    def __post_init__(self) -> None:
        if (self.snapshot_id is None) == (self.ref is None):
            raise InputWindowError("pinned() takes exactly one of snapshot_id= or ref= (an Iceberg tag or branch)")

    def partition_mapping(self) -> dg.PartitionMapping:
        # The read is every partition as of the pin, so that is what the dataset depends on.
        return dg.AllPartitionMapping()

    def describe(self) -> str:
        return (
            f"the whole table at snapshot {self.snapshot_id}"
            if self.ref is None
            else f"the whole table at {self.ref!r}"
        )

    @property
    def reads_everything(self) -> bool:
        return True


@dataclass(frozen=True)
class WholeTable(Window):
    def partition_mapping(self) -> dg.PartitionMapping:
        return dg.AllPartitionMapping()

    def describe(self) -> str:
        return "the whole table"

    @property
    def reads_everything(self) -> bool:
        return True


def this_partition() -> Window:
    return ThisPartition()


def previous(count: int = 1) -> Window:
    return PreviousPartitions(count)


def last(count: int) -> Window:
    """This partition and the ``count - 1`` before it (a day's book and the one it started from)."""
    return LastPartitions(count)


def up_to_this_partition() -> Window:
    return UpToThisPartition()


def before_this_partition() -> Window:
    return EarlierPartitions()


def pinned(*, snapshot_id: int | None = None, ref: str | None = None) -> Window:
    return Pinned(snapshot_id=snapshot_id, ref=ref)


def whole_table() -> Window:
    return WholeTable()


@dataclass(frozen=True)
class LakeInput:
    """A table a dataset reads, the window it reads, and the name the transform receives it under."""

    table: LakeTable
    window: Window = ThisPartition()
    name: str = ""
    # The input table's partitions when they differ from the dataset's (Dagster maps between the two).
    partitions_def: dg.PartitionsDefinition | None = None
    # The step fails unless every partition the window reads has been materialized (a day-chained balance must
    # not silently start from an empty yesterday).
    required: bool = False

    @property
    def key(self) -> str:
        return self.name or self.table.name

    def dep(self, partitioned: bool) -> dg.AssetDep:
        """The Dagster dependency; an unpartitioned side has no partition mapping."""
        mapping = self.window.partition_mapping() if partitioned and self.table.partition_column else None
        return dg.AssetDep(self.table.asset_key, partition_mapping=mapping)

    def validate(self, dataset: LakeTable, partitions_def: dg.PartitionsDefinition | None) -> None:
        where = f"{dataset.identifier} input {self.key!r} ({self.table.identifier})"
        if not self.key.isidentifier():
            raise InputWindowError(f"{where}: the input name must be an identifier")
        relative = isinstance(self.window, (PreviousPartitions, UpToThisPartition, EarlierPartitions))
        if relative and (partitions_def is None or self.table.partition_column is None):
            raise InputWindowError(
                f"{where}: {self.window.describe()!r} needs a partitioned dataset and a partitioned input table"
            )
        if relative and not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            raise InputWindowError(f"{where}: {self.window.describe()!r} needs time-window partitions")
        if self.table == dataset and not isinstance(self.window, (PreviousPartitions, EarlierPartitions)):
            raise InputWindowError(f"{where}: a dataset can only read its own earlier partitions")

    def selection(
        self, dataset: LakeTable, partitions_def: dg.PartitionsDefinition | None, keys: Sequence[str]
    ) -> PartitionSelection:
        """The partitions of the input the step reads: the mapping's upstream partitions of the step's keys.

        A day-chained dataset reading itself skips the partitions the step is writing: it computes them, in order.
        """
        if self.window.reads_everything or self.table.partition_column is None:
            return None
        if partitions_def is None or not keys:
            return None
        upstream_def = self.partitions_def or partitions_def
        mapping = self.window.partition_mapping() or (
            dg.TimeWindowPartitionMapping()
            if isinstance(upstream_def, dg.TimeWindowPartitionsDefinition)
            else dg.IdentityPartitionMapping()
        )
        downstream = partitions_def.empty_subset().with_partition_keys(keys)
        mapped = mapping.get_upstream_mapped_partitions_result_for_partitions(
            downstream, partitions_def, upstream_def
        ).partitions_subset
        writing = set(keys) if self.table == dataset else set()
        # A time-window subset lists its keys in time order.
        wanted = [k for k in mapped.get_partition_keys() if k not in writing]
        first = upstream_def.get_first_partition_key()
        history = isinstance(self.window, (UpToThisPartition, EarlierPartitions))
        if history and wanted and wanted[0] != first:
            raise InputWindowError(
                f"{dataset.identifier} input {self.key!r}: the history window reaches {HISTORY_PARTITIONS} partitions "
                f"back, to {wanted[0]}, not to the first partition {first}; raise "
                "batch_platform.inputs.HISTORY_PARTITIONS (and re-measure its mapping cost)"
            )
        if not wanted:
            return []
        if history:
            # A range stays a range in the scan filter: two bounds, not a thousand keys.
            return dg.PartitionKeyRange(wanted[0], wanted[-1])
        return wanted

    def snapshot(self) -> tuple[int | None, str | None]:
        if isinstance(self.window, Pinned):
            return self.window.snapshot_id, self.window.ref
        return None, None
