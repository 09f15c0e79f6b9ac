"""Shared fixtures: one local Spark session for the whole test process, a throwaway lake per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from moto.server import ThreadedMotoServer
from pg_server import PostgresServer, postgres_for_tests
from pyspark.sql import SparkSession

from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource

# Small settings for CI's 2 cores: fewer shuffle tasks, no UI port.
TEST_SPARK_CONFIG = {
    "spark.master": "local[2]",
    "spark.app.name": "batch_platform_tests",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
}


@pytest.fixture(scope="session")
def spark_resource() -> SparkResource:
    # Both jar groups: the same session serves the S3A tests and Spark SQL over the lake.
    return SparkResource(spark_config=dict(TEST_SPARK_CONFIG), jar_groups=["iceberg", "s3"])


@pytest.fixture(scope="session")
def spark(spark_resource: SparkResource) -> Iterator[SparkSession]:
    session = spark_resource.session
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path: Path) -> IcebergLakeResource:
    return IcebergLakeResource(data_dir=str(tmp_path / "lake"))


# An S3 (and Glue) endpoint on 127.0.0.1 for the production-path tests: a moto server, reached over real HTTP.
@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


# A PostgreSQL server for the production-path tests, started once per test session in a temporary folder and
# stopped at its end (or an existing one: BATCH_PLATFORM_TEST_POSTGRES, see tests/pg_server.py).
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with postgres_for_tests() as server:
        yield server


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped (with any connection left open) afterwards."""
    with postgres_server.database() as name:
        yield name


@pytest.fixture
def postgres_instance(
    postgres_server: PostgresServer, pg_database: str, tmp_path: Path
) -> Iterator[dg.DagsterInstance]:
    """A DagsterInstance whose run, event-log and schedule storage are on the test PostgreSQL, configured the way
    production's dagster.yaml configures one."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    password = f"\n      password: {postgres_server.password}" if postgres_server.password else ""
    (home / "dagster.yaml").write_text(
        f"""
storage:
  postgres:
    postgres_db:
      username: {postgres_server.user}{password}
      hostname: {postgres_server.host}
      port: {postgres_server.port}
      db_name: {pg_database}
      # SQLAlchemy 2.1 needs the driver named (Dagster issue 33958).
      scheme: postgresql+psycopg2
telemetry:
  enabled: false
"""
    )
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


# Test tiers. `make test` runs all of them; `make test-unit` only `unit`, for a quick loop. A test's tier follows
# from what it uses (its fixtures, transitively), so a new test lands in the right tier without remembering a
# marker; tests that start Spark or a Dagster stack in a subprocess mark their module explicitly.
TIER_FIXTURES = {
    "e2e": {"lending_backfill", "recovery"},  # a real dagster-webserver + dagster-daemon (tests/dagster_stack.py)
    "postgres": {"postgres_server"},
    "spark": {"spark", "spark_resource"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        tiers = {tier for tier, fixtures in TIER_FIXTURES.items() if used & fixtures}
        tiers |= {tier for tier in TIER_FIXTURES if item.get_closest_marker(tier)}
        for tier in sorted(tiers):
            item.add_marker(tier)
        if not tiers:
            item.add_marker("unit")
