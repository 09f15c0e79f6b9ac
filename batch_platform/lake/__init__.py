"""The Iceberg lake layer: table declarations, the lake resource, and its Spark and Arrow read/write paths."""

from batch_platform.lake.commit import Lineage, WriteResult
from batch_platform.lake.errors import (
    DataContractError,
    JavaNotFoundError,
    LakeError,
    PartitionWriteConflict,
    SchemaEvolutionError,
    UnsupportedScanError,
)
from batch_platform.lake.resource import IcebergLakeResource
from batch_platform.lake.tables import LakeTable

__all__ = [
    "DataContractError",
    "IcebergLakeResource",
    "JavaNotFoundError",
    "LakeError",
    "LakeTable",
    "Lineage",
    "PartitionWriteConflict",
    "SchemaEvolutionError",
    "UnsupportedScanError",
    "WriteResult",
]
