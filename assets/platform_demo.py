"""A small partitioned pipeline that proves the lake path end to end, on nothing but Spark: the optional ``demo``
domain. It is not in the production definitions; the composition root registers it only when
``BATCH_PLATFORM_EXTRA_DOMAINS`` names it (a deployment smoke check, the lake-path tests).

``demo/card_transactions`` is generated on Spark (deterministic per day) and written through the Spark path;
``demo/daily_transaction_totals`` reads it back through Spark and writes a small aggregate through the Arrow path.
"""

from datetime import timedelta

import dagster as dg
import pyarrow as pa
from pyspark.sql import functions as F

from batch_platform.assets import lake_asset
from batch_platform.domain import Domain
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.partitions import daily_partitions, partition_keys
from batch_platform.spark import SparkResource

DEMO_START_DATE = "2024-01-01"
DEMO_PARTITIONS = daily_partitions(DEMO_START_DATE)

CARD_TRANSACTIONS = LakeTable(
    namespace="demo",
    name="card_transactions",
    description="Synthetic card transactions, generated per day on Spark.",
    partition_column="transaction_date",
    schema=pa.schema(
        [
            pa.field("transaction_date", pa.date32(), nullable=False),
            pa.field("transaction_id", pa.string(), nullable=False),
            pa.field("account_id", pa.int64(), nullable=False),
            pa.field("amount", pa.decimal128(18, 2), nullable=False),
            pa.field("merchant_category", pa.string()),
            pa.field("authorized_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
)

DAILY_TRANSACTION_TOTALS = LakeTable(
    namespace="demo",
    name="daily_transaction_totals",
    description="Per day and merchant category: transaction count and amount.",
    partition_column="transaction_date",
    schema=pa.schema(
        [
            pa.field("transaction_date", pa.date32(), nullable=False),
            pa.field("merchant_category", pa.string()),
            pa.field("transactions", pa.int64(), nullable=False),
            pa.field("amount", pa.decimal128(18, 2), nullable=False),
        ]
    ),
)

TRANSACTIONS_PER_DAY = 20_000
_CATEGORIES = ["electronics", "furniture", "travel", "apparel", "health"]


class CardTransactionsConfig(dg.Config):
    rows_per_day: int = TRANSACTIONS_PER_DAY


@lake_asset(
    CARD_TRANSACTIONS,
    partitions_def=DEMO_PARTITIONS,
    kinds=("spark", "iceberg"),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=31),
    compute="medium",
)
def card_transactions(
    context: dg.AssetExecutionContext,
    config: CardTransactionsConfig,
    lake: IcebergLakeResource,
    spark: SparkResource,
) -> dg.MaterializeResult:
    session = spark.session_for(context)
    keys = partition_keys(context)
    days = session.createDataFrame([(k,) for k in keys], "day string").select(F.to_date("day").alias("day"))
    seq = session.range(config.rows_per_day).withColumnRenamed("id", "seq")
    # Deterministic per (day, seq): re-running a day produces the same rows.
    rows = days.crossJoin(seq).select(
        F.col("day").alias("transaction_date"),
        F.concat_ws("-", F.date_format("day", "yyyyMMdd"), F.col("seq").cast("string")).alias("transaction_id"),
        (F.abs(F.xxhash64("day", "seq")) % 5000).alias("account_id"),
        ((F.abs(F.xxhash64("seq", "day")) % 50_000) / 100 + 1).cast("decimal(18,2)").alias("amount"),
        F.element_at(
            F.array(*[F.lit(c) for c in _CATEGORIES]),
            (F.abs(F.hash("seq")) % len(_CATEGORIES)).cast("int") + 1,
        ).alias("merchant_category"),
        (F.col("day").cast("timestamp") + F.make_interval(secs=(F.col("seq") % 86_400).cast("int"))).alias(
            "authorized_at"
        ),
    )
    result = lake.write_spark(
        session, CARD_TRANSACTIONS, rows, partition_keys=keys, lineage=Lineage.from_context(context)
    )
    return result.materialize_result()


@lake_asset(
    DAILY_TRANSACTION_TOTALS,
    partitions_def=DEMO_PARTITIONS,
    deps=[CARD_TRANSACTIONS.asset_key],
    kinds=("spark", "iceberg"),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=31),
)
def daily_transaction_totals(
    context: dg.AssetExecutionContext, lake: IcebergLakeResource, spark: SparkResource
) -> dg.MaterializeResult:
    keys = partition_keys(context)
    transactions = lake.read_spark(spark.session_for(context), CARD_TRANSACTIONS, keys)
    totals = transactions.groupBy("transaction_date", "merchant_category").agg(
        F.count("*").alias("transactions"), F.sum("amount").cast("decimal(18,2)").alias("amount")
    )
    # A few rows per day: small enough to collect and write through the Arrow path.
    table = pa.Table.from_pylist([r.asDict() for r in totals.collect()], schema=DAILY_TRANSACTION_TOTALS.schema)
    result = lake.write_arrow(
        DAILY_TRANSACTION_TOTALS, table, partition_keys=keys, lineage=Lineage.from_context(context)
    )
    return result.materialize_result()


demo_assets = [card_transactions, daily_transaction_totals]

platform_demo = Domain(
    name="demo",  # its one layer is "demo", so its group stays "demo"
    assets=demo_assets,
    deadline_hours={"demo": 24.0},
    freshness_policies={
        "demo": dg.FreshnessPolicy.cron(
            "0 0 * * *", lower_bound_delta=timedelta(hours=24), timezone=DEMO_PARTITIONS.timezone
        )
    },
    lake_tables=[CARD_TRANSACTIONS, DAILY_TRANSACTION_TOTALS],
)
