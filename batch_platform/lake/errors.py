"""Errors the lake layer raises. Each names the table and what was wrong, for the operator reading a failed run."""


class LakeError(Exception):
    """Base class of every error raised by the lake layer."""


class SchemaEvolutionError(LakeError):
    """The declared schema cannot be applied to the existing table without rewriting data."""


class DataContractError(LakeError):
    """The data handed to a write does not match the table declaration (columns, types, partition values)."""


class PartitionWriteConflict(LakeError):
    """Another writer committed to the same partitions while this write was in flight."""


class UnsupportedScanError(LakeError):
    """A scan needs a feature the read path cannot honour (for example row-level delete files)."""


class JavaNotFoundError(LakeError):
    """Spark needs a Java runtime and none was found."""
