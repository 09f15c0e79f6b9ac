"""The production storage path without a cloud: Dagster's run, event-log and schedule storage and the Iceberg
catalog both on a real PostgreSQL, with a demo partition materialized on Spark.

Each test gets a database of its own (created with a random name, dropped afterwards) on the throwaway PostgreSQL
server that the test session starts (tests/pg_server.py).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from pg_server import PostgresServer

from assets.platform_demo import (
    CARD_TRANSACTIONS,
    DAILY_TRANSACTION_TOTALS,
    card_transactions,
    daily_transaction_totals,
)
from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource

PARTITION = "2024-03-05"
ROWS_PER_DAY = 300


def test_partition_run_on_postgres_instance_records_run_events_and_iceberg_catalog_in_postgres(
    postgres_server: PostgresServer,
    pg_database: str,
    postgres_instance: dg.DagsterInstance,
    spark_resource: SparkResource,
    tmp_path: Path,
) -> None:
    assert isinstance(postgres_instance.run_storage, PostgresRunStorage)
    assert isinstance(postgres_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(postgres_instance.schedule_storage, PostgresScheduleStorage)
    lake = IcebergLakeResource(catalog_uri=postgres_server.sqlalchemy_uri(pg_database), data_dir=str(tmp_path / "lake"))

    result = dg.materialize(
        [card_transactions, daily_transaction_totals],
        instance=postgres_instance,
        resources={"lake": lake, "spark": spark_resource},
        partition_key=PARTITION,
        run_config=dg.RunConfig(
            ops={"demo__card_transactions": {"config": {"rows_per_day": ROWS_PER_DAY}}},
        ),
    )

    assert result.success
    materializations = {
        event.materialization.asset_key.to_user_string(): event.materialization
        for event in result.get_asset_materialization_events()
    }
    assert set(materializations) == {"demo/card_transactions", "demo/daily_transaction_totals"}
    transactions = materializations["demo/card_transactions"]
    assert transactions.partition == PARTITION
    assert transactions.metadata["dagster/row_count"].value == ROWS_PER_DAY
    # The snapshot the event names is the table's current snapshot, read back through the Postgres catalog.
    transactions_table = lake.load(CARD_TRANSACTIONS)
    current = transactions_table.current_snapshot()
    assert current is not None
    assert transactions.metadata["iceberg/snapshot_id"].value == current.snapshot_id
    assert lake.read_arrow(CARD_TRANSACTIONS, [PARTITION]).num_rows == ROWS_PER_DAY
    totals = materializations["demo/daily_transaction_totals"]
    totals_rows = lake.read_arrow(DAILY_TRANSACTION_TOTALS, [PARTITION])
    assert totals.metadata["dagster/row_count"].value == totals_rows.num_rows > 0
    assert sum(totals_rows["transactions"].to_pylist()) == ROWS_PER_DAY

    # The instance really is Postgres: the run, its materializations and the catalog rows are in that database.
    engine = sa.create_engine(postgres_server.sqlalchemy_uri(pg_database), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT run_id, status FROM runs")).all()
        materialized = conn.execute(
            sa.text(
                "SELECT asset_key, partition FROM event_logs "
                "WHERE run_id = :run_id AND dagster_event_type = 'ASSET_MATERIALIZATION'"
            ),
            {"run_id": result.run_id},
        ).all()
        catalog_rows = conn.execute(
            sa.text(
                "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = 'lake'"
            )
        ).all()
        schedule_tables = conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_name IN ('jobs', 'job_ticks')")
        ).all()
    engine.dispose()
    assert (result.run_id, "SUCCESS") in [tuple(r) for r in runs]
    assert sorted((r.asset_key, r.partition) for r in materialized) == [
        ('["demo", "card_transactions"]', PARTITION),
        ('["demo", "daily_transaction_totals"]', PARTITION),
    ]
    locations = {(r.table_namespace, r.table_name): r.metadata_location for r in catalog_rows}
    assert set(locations) == {("demo", "card_transactions"), ("demo", "daily_transaction_totals")}
    assert locations[("demo", "card_transactions")] == transactions_table.metadata_location
    assert {r.table_name for r in schedule_tables} == {"jobs", "job_ticks"}
    # And Dagster reads its own records back from there.
    latest = postgres_instance.get_latest_materialization_event(CARD_TRANSACTIONS.asset_key)
    assert latest is not None and latest.run_id == result.run_id
