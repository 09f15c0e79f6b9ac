"""Maintenance removes the audit branches (and their staged files) of runs that ended, after the retention, and
never a branch of a run still in progress: a real lake, real staged Parquet files, a real Dagster instance."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test
from test_lake_crash_safety import ASSET_KEY, local_path, rows_for
from test_lake_maintenance import _stage, _table

from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.audit_branches import audit_branch_run_id, remove_dead_audit_branches
from batch_platform.lake.maintenance import build_maintenance_job, live_run_ids, maintenance_run_config

KEY = "2024-03-04"
RETENTION = timedelta(hours=72)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def audited_write(lake: IcebergLakeResource, table: LakeTable, run_id: str) -> tuple[str, Path]:
    """What write_audit_publish does up to the audits: a branch, and staged files committed to it."""
    lineage = Lineage(run_id, ASSET_KEY, (KEY,))
    branch = lake.create_audit_branch(table, lineage)
    staged = _stage(lake, table, run_id, KEY, [3, 4])
    write_id = local_path(staged.staging_uri).name
    lake.commit_staged(table, write_id, staged, partition_keys=[KEY], lineage=lineage, branch=branch)
    return branch, local_path(lake.run_staging_uri(table, run_id))


@pytest.fixture
def table_with_branches(
    lake: IcebergLakeResource, instance: dg.DagsterInstance
) -> tuple[LakeTable, dict[str, tuple[str, Path]]]:
    """Main with one partition; the audit branches of a run that died mid-step and of one still running."""
    table = _table(f"audited_{uuid.uuid4().hex[:6]}")
    lake.write_arrow(table, rows_for(KEY, 5, "main"), partition_keys=[KEY], lineage=Lineage("main", ASSET_KEY, (KEY,)))
    dead = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    live = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    branches = {"dead": audited_write(lake, table, dead.run_id), "live": audited_write(lake, table, live.run_id)}
    instance.report_run_failed(dead)  # the code server's verdict on a killed run worker
    return table, branches


def test_audit_branch_names_carry_the_run_id() -> None:
    run_id = str(uuid.uuid4())
    assert audit_branch_run_id(f"audit-{run_id}-0123abcd") == run_id
    assert audit_branch_run_id("main") is None and audit_branch_run_id("audit-x") is None


def test_a_dead_runs_branch_is_kept_within_the_retention_and_removed_after_it(
    lake: IcebergLakeResource,
    instance: dg.DagsterInstance,
    table_with_branches: tuple[LakeTable, dict[str, tuple[str, Path]]],
) -> None:
    table, branches = table_with_branches
    main_before = lake.read_arrow(table)
    soon = remove_dead_audit_branches(lake, table, instance, RETENTION, now=datetime.now(UTC) + timedelta(hours=71))
    assert (soon.branches_removed, soon.recent_branches_kept, soon.live_branches_kept) == (0, 1, 1)
    assert {branches["dead"][0], branches["live"][0]} <= set(lake.load(table).metadata.refs)

    later = remove_dead_audit_branches(lake, table, instance, RETENTION, now=datetime.now(UTC) + timedelta(hours=73))
    assert (later.branches_removed, later.live_branches_kept) == (1, 1)
    assert later.snapshots_expired >= 1  # the branch's own commits, not main's history
    refs = set(lake.load(table).metadata.refs)
    assert branches["dead"][0] not in refs and branches["live"][0] in refs
    assert lake.read_arrow(table).equals(main_before)
    assert lake.read_arrow(table, ref=branches["live"][0]).num_rows == 7


def test_maintenance_deletes_the_dead_runs_staged_files_and_keeps_the_live_runs(
    lake: IcebergLakeResource,
    instance: dg.DagsterInstance,
    table_with_branches: tuple[LakeTable, dict[str, tuple[str, Path]]],
) -> None:
    table, branches = table_with_branches
    dead_staging, live_staging = branches["dead"][1], branches["live"][1]
    assert list(dead_staging.rglob("*.parquet")) and list(live_staging.rglob("*.parquet"))
    main_before = lake.read_arrow(table)

    job = build_maintenance_job([table])
    config = maintenance_run_config([table], audit_branch_retention_hours=0, compact=False)
    result = job.execute_in_process(run_config=config, resources={"lake": lake}, instance=instance)
    assert result.success
    (observation,) = result.asset_observations_for_node(f"maintain__{table.namespace}__{table.name}")
    assert observation.metadata["maintenance/audit_branches_removed"].value == 1
    assert observation.metadata["maintenance/audit_branches_of_live_runs_kept"].value == 1
    refs = set(lake.load(table).metadata.refs)
    assert branches["dead"][0] not in refs and branches["live"][0] in refs
    assert not dead_staging.exists() or not list(dead_staging.rglob("*.parquet"))
    assert len(list(live_staging.rglob("*.parquet"))) == 2
    assert lake.read_arrow(table).equals(main_before)
    assert lake.read_arrow(table, ref=branches["live"][0]).num_rows == 7
    assert live_run_ids(instance) >= {audit_branch_run_id(branches["live"][0])}
