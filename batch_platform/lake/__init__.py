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

# Table maintenance (compaction, snapshot expiry, manifest rewrite, orphan and dead-run staging cleanup) and its
# Dagster job.
from batch_platform.lake.maintenance import (
    CompactionResult,
    ExpireResult,
    MaintenanceConfig,
    OrphanResult,
    build_maintenance_job,
    build_maintenance_schedule,
    compact_partitions,
    expire_snapshots,
    maintain_table,
    maintenance_run_config,
    remove_orphan_files,
)
from batch_platform.lake.manifests import ManifestRewriteResult, rewrite_manifests

__all__ += [
    "CompactionResult",
    "ExpireResult",
    "MaintenanceConfig",
    "ManifestRewriteResult",
    "OrphanResult",
    "build_maintenance_job",
    "build_maintenance_schedule",
    "compact_partitions",
    "expire_snapshots",
    "maintain_table",
    "maintenance_run_config",
    "remove_orphan_files",
    "rewrite_manifests",
]
