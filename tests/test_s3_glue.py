"""The production lake path without a cloud: a Glue catalog and an S3 warehouse served by a moto server on
127.0.0.1, reached over real HTTP by the same IcebergLakeResource code, configured by the PROD resource set.

These tests use the lake's Arrow write and read paths; Spark's S3A path against the same kind of server is in
tests/test_spark_s3a.py. Both share the commit code (one delete + add transaction per write).
"""

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pyarrow as pa
import pytest
from aws_support import REGION, isolated_aws_env, new_bucket

from assets.platform_demo import DAILY_TRANSACTION_TOTALS, DEMO_PARTITIONS, card_transactions
from batch_platform.lake import IcebergLakeResource, Lineage
from batch_platform.spark import SparkResource
from definitions import build_definitions
from resources import (
    ALERT_WEBHOOK_URL_ENV,
    AWS_REGION_ENV,
    CATALOG_TYPE_ENV,
    CATALOG_URI_ENV,
    GLUE_ENDPOINT_ENV,
    LANDING_URI_ENV,
    PII_KEY_ENV,
    PROD_ENV_VARS,
    S3_ENDPOINT_ENV,
    WAREHOUSE_ENV,
    prod_resources,
)

PARTITION = "2024-02-10"
TOTALS = DAILY_TRANSACTION_TOTALS


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Dummy credentials through the default AWS chain (environment), isolated from any real AWS configuration."""
    isolated_aws_env(moto_endpoint, monkeypatch, tmp_path)
    bucket = new_bucket(moto_endpoint)
    return {"endpoint": moto_endpoint, "bucket": bucket, "warehouse": f"s3://{bucket}/warehouse"}


def _set_prod_env(monkeypatch: pytest.MonkeyPatch, aws: dict[str, str]) -> None:
    monkeypatch.setenv(CATALOG_TYPE_ENV, "glue")
    monkeypatch.setenv(CATALOG_URI_ENV, "")
    monkeypatch.setenv(WAREHOUSE_ENV, aws["warehouse"])
    monkeypatch.setenv(AWS_REGION_ENV, REGION)
    monkeypatch.setenv(S3_ENDPOINT_ENV, aws["endpoint"])
    monkeypatch.setenv(GLUE_ENDPOINT_ENV, aws["endpoint"])


def _totals(day: str, scale: int) -> pa.Table:
    categories = ["apparel", "electronics", "travel"]
    return pa.Table.from_pylist(
        [
            {
                "transaction_date": date.fromisoformat(day),
                "merchant_category": c,
                "transactions": (i + 1) * scale,
                "amount": Decimal(f"{(i + 1) * scale}.25"),
            }
            for i, c in enumerate(categories)
        ],
        schema=TOTALS.schema,
    )


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["merchant_category"])


def test_glue_lake_on_s3_writes_reads_rewrites_idempotently_and_reads_pinned_snapshot(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_prod_env(monkeypatch, aws)
    lake = prod_resources()["lake"].process_config_and_initialize()  # what a PROD run builds at its start
    assert isinstance(lake, IcebergLakeResource)
    config = lake.catalog_config()
    assert config["type"] == "glue" and config["warehouse"] == aws["warehouse"]
    assert config["glue.endpoint"] == config["s3.endpoint"] == aws["endpoint"]
    assert config["client.region"] == REGION
    assert not any(k.endswith(("access-key-id", "secret-access-key")) for k in config)  # default chain only
    lineage = Lineage(run_id="run-1", asset_key="demo/daily_transaction_totals", partition_keys=(PARTITION,))

    first = lake.write_arrow(TOTALS, _totals(PARTITION, 1), partition_keys=[PARTITION], lineage=lineage)
    assert first.rows == 3 and first.snapshot_id is not None
    assert _rows(lake.read_arrow(TOTALS, [PARTITION])) == _rows(_totals(PARTITION, 1))

    again = lake.write_arrow(TOTALS, _totals(PARTITION, 1), partition_keys=[PARTITION], lineage=lineage)
    assert again.snapshot_id != first.snapshot_id
    assert _rows(lake.read_arrow(TOTALS, [PARTITION])) == _rows(_totals(PARTITION, 1))  # one copy, not two
    live_files = [t.file.file_path for t in lake.load(TOTALS).scan().plan_files()]
    assert len(live_files) == 1 and live_files[0].startswith(f"{aws['warehouse']}/demo")

    lake.write_arrow(TOTALS, _totals(PARTITION, 10), partition_keys=[PARTITION], lineage=lineage)
    assert _rows(lake.read_arrow(TOTALS, [PARTITION])) == _rows(_totals(PARTITION, 10))
    assert _rows(lake.read_arrow(TOTALS, [PARTITION], snapshot_id=first.snapshot_id)) == _rows(_totals(PARTITION, 1))

    # The objects are in the moto bucket, and the table is registered in (moto's) Glue pointing at them.
    s3 = boto3.client("s3", endpoint_url=aws["endpoint"], region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=aws["bucket"])["Contents"]]
    assert any(k.startswith("warehouse/") and k.endswith(".metadata.json") for k in keys)
    assert sum(k.endswith(".parquet") for k in keys) == 3  # each write added one file; none is deleted yet
    assert live_files[0].removeprefix(f"s3://{aws['bucket']}/") in keys
    glue = boto3.client("glue", endpoint_url=aws["endpoint"], region_name=REGION)
    glue_table = glue.get_table(DatabaseName="demo", Name="daily_transaction_totals")["Table"]
    assert glue_table["Parameters"]["table_type"].upper() == "ICEBERG"
    assert glue_table["Parameters"]["metadata_location"] == lake.load(TOTALS).metadata_location
    assert glue_table["Parameters"]["metadata_location"].startswith(f"{aws['warehouse']}/")


@dg.asset(key=TOTALS.asset_key, partitions_def=DEMO_PARTITIONS)
def _arrow_totals(context: dg.AssetExecutionContext, lake: IcebergLakeResource) -> dg.MaterializeResult:
    """A Spark-free stand-in for demo/daily_transaction_totals: the same table through the Arrow path."""
    result = lake.write_arrow(
        TOTALS,
        _totals(context.partition_key, 2),
        partition_keys=[context.partition_key],
        lineage=Lineage.from_context(context),
    )
    return result.materialize_result()


def test_prod_run_resolves_glue_and_s3_settings_from_env_at_run_start(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PROD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    resources = prod_resources()  # built while the variables are unset, as on a code server
    _set_prod_env(monkeypatch, aws)  # present only in the run's environment

    result = dg.materialize([_arrow_totals], resources={"lake": resources["lake"]}, partition_key=PARTITION)

    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["dagster/row_count"].value == 3
    glue = boto3.client("glue", endpoint_url=aws["endpoint"], region_name=REGION)
    glue_table = glue.get_table(DatabaseName="demo", Name="daily_transaction_totals")["Table"]
    metadata_location = glue_table["Parameters"]["metadata_location"]
    assert metadata_location.startswith(f"{aws['warehouse']}/")
    lake = resources["lake"].process_config_and_initialize()
    current = lake.load(TOTALS).current_snapshot()
    assert current is not None and current.snapshot_id == metadata["iceberg/snapshot_id"].value


def test_prod_definitions_load_without_env_and_a_run_fails_naming_the_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    dg.Definitions.validate_loadable(build_definitions("PROD"))
    # With the optional demo domain (a deployment's smoke check): an asset that needs no landing drop.
    defs = build_definitions("PROD", extra_domains=["demo"])
    dg.Definitions.validate_loadable(defs)
    assert defs.get_repository_def().asset_graph.get(card_transactions.key) is not None

    # Dagster resolves the run's config, and so its EnvVars, when the run starts: there it stops, naming each
    # missing variable, before any step (or Spark) starts.
    with pytest.raises(dg.DagsterInvalidConfigError) as failure:
        dg.materialize([card_transactions], resources=defs.resources, partition_key=PARTITION)

    message = str(failure.value)
    # The demo asset uses the lake and Spark resources only; the landing, PII and alert resources are not started.
    for name in set(PROD_ENV_VARS) - {LANDING_URI_ENV, PII_KEY_ENV, ALERT_WEBHOOK_URL_ENV}:
        assert f'environment variable "{name}" which is not set' in message


def test_prod_spark_config_takes_s3a_endpoint_and_region_from_env_at_run_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked as resolved config; tests/test_spark_s3a.py starts Spark with these settings against moto."""
    for name in PROD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    spark = prod_resources()["spark"]
    monkeypatch.setenv(AWS_REGION_ENV, REGION)
    monkeypatch.setenv(S3_ENDPOINT_ENV, "")
    # The session's Iceberg catalog comes from PROD's lake resource (nested), which reads its own variables.
    for name, value in {
        CATALOG_TYPE_ENV: "glue",
        CATALOG_URI_ENV: "",
        WAREHOUSE_ENV: "s3://b/w",
        GLUE_ENDPOINT_ENV: "",
    }.items():
        monkeypatch.setenv(name, value)

    # A resource with a nested resource initialises as a context manager; no session yet: the resource is lazy.
    with spark.process_config_and_initialize_cm() as resolved:
        assert isinstance(resolved, SparkResource) and resolved._spark_session is None
        config = resolved.spark_config
    assert config["spark.hadoop.fs.s3a.endpoint.region"] == REGION
    assert config["spark.hadoop.fs.s3a.endpoint"] == ""  # AWS's own endpoint for the region
    assert config["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("DefaultCredentialsProvider")
    assert not any("access.key" in k or "secret.key" in k for k in config)


def test_prod_run_with_empty_warehouse_fails_instead_of_writing_to_local_files(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_prod_env(monkeypatch, aws)
    monkeypatch.setenv(WAREHOUSE_ENV, "")

    with pytest.raises(dg.DagsterResourceFunctionError) as failure:
        dg.materialize([_arrow_totals], resources={"lake": prod_resources()["lake"]}, partition_key=PARTITION)

    assert "warehouse is empty" in str(failure.value.__cause__)
