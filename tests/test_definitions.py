"""The code location loads and validates the way Dagster's own tooling loads it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets import all_lake_tables
from batch_platform.definitions import build_definitions, defs

ROOT = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate_passes_on_the_workspace(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "BATCH_PLATFORM_DATA_DIR": str(tmp_path / "data")}
    dagster_cli = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster_cli), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location batch_platform" in result.stdout + result.stderr


def test_asset_keys_are_iceberg_namespace_and_table() -> None:
    repo = defs().get_repository_def()
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {"demo/card_transactions", "demo/daily_transaction_totals"} <= keys
    spec = repo.asset_graph.get(dg.AssetKey(["demo", "card_transactions"]))
    assert spec.metadata["iceberg/table"] == "demo.card_transactions"


def test_lake_assets_share_their_tables_concurrency_pool() -> None:
    repo = build_definitions("LOCAL").get_repository_def()
    node = repo.asset_graph.get(dg.AssetKey(["demo", "card_transactions"]))
    assert node.pools == {"iceberg-demo-card_transactions"}


def test_local_environment_is_the_default_and_needs_no_cloud(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("BATCH_PLATFORM_ENV", raising=False)
    resources = defs().resources
    lake = resources["lake"]
    assert lake.catalog_type == "sql" and lake.catalog_uri is None and lake.warehouse is None


def test_every_lake_table_an_asset_writes_is_maintained() -> None:
    repo = build_definitions("LOCAL").get_repository_def()
    written = {
        str(node.metadata["iceberg/table"])
        for node in repo.asset_graph.asset_nodes
        if node.is_materializable and "iceberg/table" in node.metadata
    }
    assert written == {table.identifier for table in all_lake_tables}
    maintenance = repo.get_job("iceberg_maintenance")
    assert len(maintenance.nodes) == len(all_lake_tables)


def test_the_automation_the_platform_relies_on_is_running_by_default() -> None:
    repo = build_definitions("LOCAL").get_repository_def()
    sensors = {s.name: s.default_status for s in repo.sensor_defs}
    schedules = {s.name: s.default_status for s in repo.schedule_defs}
    assert set(sensors) == {
        "lending_landing_sensor",
        "lending_restatement_sensor",
        "partition_freshness_sensor",
        "run_failure_alerts",
        "blocked_pool_alerts",
    }
    assert set(sensors.values()) == {dg.DefaultSensorStatus.RUNNING}
    assert set(schedules) == {"lending_daily_schedule", "iceberg_maintenance_schedule"}
    assert set(schedules.values()) == {dg.DefaultScheduleStatus.RUNNING}


def test_both_environments_bind_every_resource_the_sensors_need() -> None:
    for env in ("LOCAL", "PROD"):
        resources = build_definitions(env).resources
        assert {"landing", "s3", "alerts", "lake", "spark", "pii"} <= set(resources), env
