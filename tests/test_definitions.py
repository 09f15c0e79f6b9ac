"""The code location loads and validates the way Dagster's own tooling loads it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg

from assets.lending.domain import lending
from definitions import DOMAINS, build_definitions, defs

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
    assert {"raw/loans", "core/loans", "reporting/portfolio_daily"} <= keys
    spec = repo.asset_graph.get(dg.AssetKey(["core", "loans"]))
    assert spec.metadata["iceberg/table"] == "core.loans"


def test_lake_assets_share_their_tables_concurrency_pool() -> None:
    repo = build_definitions("LOCAL").get_repository_def()
    node = repo.asset_graph.get(dg.AssetKey(["core", "loans"]))
    assert node.pools == {"iceberg-core-loans"}


def test_the_demo_only_assets_are_registered_only_when_asked_for(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("BATCH_PLATFORM_EXTRA_DOMAINS", raising=False)
    production = build_definitions("LOCAL").get_repository_def().asset_graph.get_all_asset_keys()
    assert not any(key.path[0] == "demo" for key in production)
    monkeypatch.setenv("BATCH_PLATFORM_EXTRA_DOMAINS", "demo")
    repo = defs().get_repository_def()
    node = repo.asset_graph.get(dg.AssetKey(["demo", "card_transactions"]))
    assert node.group_name == "demo" and node.pools == {"iceberg-demo-card_transactions"}
    assert "maintain__demo__card_transactions" in {n.name for n in repo.get_job("iceberg_maintenance").nodes}


def test_the_production_definitions_never_load_the_simulator() -> None:
    """The simulator is a tool (`batch-platform simulate`, the demo's drops), not part of the code location."""
    code = "import sys, definitions; definitions.defs(); print('assets.lending.simulator' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


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
    maintained = [table for domain in DOMAINS for table in domain.lake_tables]
    assert written == {table.identifier for table in maintained}
    maintenance = repo.get_job("iceberg_maintenance")
    assert len(maintenance.nodes) == len(maintained)


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
        assert {"landing", "alerts", "lake", "spark", "pii"} <= set(resources), env
        # One landing store: the sensors list and the raw load reads through the same resource.
        assert resources["landing"] == lending.resources_for(env)["landing"], env
        assert "s3" not in resources, env


def test_lending_groups_and_freshness_are_the_domains_own() -> None:
    repo = build_definitions("LOCAL").get_repository_def()
    groups = {node.key.to_user_string(): node.group_name for node in repo.asset_graph.asset_nodes}
    assert groups["raw/loans"] == "lending_raw"
    assert groups["core/loans"] == "lending_core"
    assert groups["reporting/portfolio_daily"] == "lending_reporting"
    assert repo.asset_graph.get(dg.AssetKey(["raw", "loans"])).pools == {"lending-raw-landing"}
    defs = build_definitions("LOCAL")
    deadlines = {
        spec.asset_key.to_user_string(): spec.metadata["deadline_hours"]
        for checks in defs.asset_checks or []
        if isinstance(checks, dg.AssetChecksDefinition)
        for spec in checks.check_specs
        if spec.name == "partition_freshness"
    }
    assert (deadlines["raw/loans"], deadlines["core/loans"], deadlines["reporting/portfolio_daily"]) == (6, 8, 10)
    policy = repo.asset_graph.get(dg.AssetKey(["core", "loans"])).freshness_policy
    assert policy == dg.FreshnessPolicy.cron(
        "0 8 * * 1-5", lower_bound_delta=timedelta(hours=8), timezone="America/New_York"
    )
