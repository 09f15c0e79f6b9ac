"""Removing the audit branches that runs which ended left behind, once a retention period has passed.

Write-audit-publish (batch_platform/audit.py) writes to a branch ``audit-<run_id>-<suffix>`` and drops it when it
publishes. A run that failed its audits, was canceled, or died mid-step leaves the branch (kept for an operator to
inspect), and because every branch head is kept by snapshot expiry, its files would be kept for ever. Here a branch
whose run has ended longer than the retention ago is removed together with the snapshots only it reached; the
staged files those snapshots held become unreferenced and orphan removal deletes them with the dead run's staging
folder. A branch of a run that is still queued or running is never touched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import ancestors_of

from batch_platform.lake.resource import IcebergLakeResource
from batch_platform.lake.tables import LakeTable

log = logging.getLogger(__name__)

DEFAULT_AUDIT_BRANCH_RETENTION = timedelta(hours=72)
# IcebergLakeResource.create_audit_branch: "audit-<Dagster run id>-<8 hex>".
AUDIT_BRANCH = re.compile(r"^audit-(?P<run_id>.+)-[0-9a-f]{8}$")
# Runs in these states may still write to (or publish from) their branch.
LIVE_RUN_STATUSES = frozenset(
    {
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    }
)
_ATTEMPTS = 5


def audit_branch_run_id(branch: str) -> str | None:
    """The run id an audit branch name carries, or None for any other branch."""
    match = AUDIT_BRANCH.match(branch)
    return match.group("run_id") if match else None


@dataclass(frozen=True)
class AuditBranchResult:
    branches_removed: int
    snapshots_expired: int
    live_branches_kept: int
    recent_branches_kept: int

    def metadata(self) -> dict[str, int]:
        return {
            "maintenance/audit_branches_removed": self.branches_removed,
            "maintenance/audit_branch_snapshots_expired": self.snapshots_expired,
            "maintenance/audit_branches_of_live_runs_kept": self.live_branches_kept,
            "maintenance/audit_branches_within_retention_kept": self.recent_branches_kept,
        }


def _ended_at(instance: dg.DagsterInstance, run_id: str, branch_head_ms: int) -> datetime | None:
    """When the branch's run ended; None while it is live. A run this instance does not know (deleted) counts as
    ended when its branch was last written."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return datetime.fromtimestamp(branch_head_ms / 1000, UTC)
    if record.dagster_run.status in LIVE_RUN_STATUSES:
        return None
    if record.end_time is not None:
        return datetime.fromtimestamp(record.end_time, UTC)
    return record.update_timestamp.astimezone(UTC)


def _reached_from(iceberg_table: Table, heads: Iterable[int]) -> set[int]:
    metadata = iceberg_table.metadata
    reached: set[int] = set()
    for head in heads:
        snapshot = metadata.snapshot_by_id(head)
        if snapshot is not None:
            reached.update(s.snapshot_id for s in ancestors_of(snapshot, metadata))
    return reached


def remove_dead_audit_branches(
    lake: IcebergLakeResource,
    table: LakeTable,
    instance: dg.DagsterInstance,
    older_than: timedelta = DEFAULT_AUDIT_BRANCH_RETENTION,
    *,
    now: datetime | None = None,
) -> AuditBranchResult:
    """Remove audit branches whose run ended more than ``older_than`` ago, and the snapshots only they reached."""
    now = now or datetime.now(UTC)
    for attempt in range(1, _ATTEMPTS + 1):
        iceberg_table = lake.load(table)
        refs = iceberg_table.metadata.refs
        dead: list[str] = []
        live = recent = 0
        for name, ref in refs.items():
            run_id = audit_branch_run_id(name)
            if run_id is None or ref.snapshot_ref_type != SnapshotRefType.BRANCH:
                continue
            head = iceberg_table.metadata.snapshot_by_id(ref.snapshot_id)
            ended = _ended_at(instance, run_id, head.timestamp_ms if head is not None else 0)
            if ended is None:
                live += 1
            elif now - ended < older_than:
                recent += 1
            else:
                dead.append(name)
        if not dead:
            return AuditBranchResult(0, 0, live, recent)
        kept = _reached_from(iceberg_table, (ref.snapshot_id for name, ref in refs.items() if name not in dead))
        only_dead = sorted(_reached_from(iceberg_table, (refs[name].snapshot_id for name in dead)) - kept)
        try:
            with iceberg_table.manage_snapshots() as manage:
                for name in dead:
                    manage.remove_branch(name)
            if only_dead:
                lake.load(table).maintenance.expire_snapshots().by_ids(only_dead).commit()
            break
        except CommitFailedException:
            # Another writer moved the table (it may have branched from one of these snapshots): plan again.
            if attempt == _ATTEMPTS:
                raise
            log.warning("%s: removing audit branches lost a commit race; retrying", table.identifier)
    log.info("%s: removed audit branches %s of ended runs", table.identifier, dead)
    return AuditBranchResult(len(dead), len(only_dead), live, recent)
