"""The platform's shared resources keyed by deployment environment: LOCAL (the default, needs nothing running) and
PROD. A domain binds the resources only it uses itself (``batch_platform.domain.Domain.resources``; the loan
domain's landing zone: ``assets.lending.domain``), reading the same variables.

PROD reads every setting from the run's environment when the run starts (``dg.EnvVar``), never when this module is
imported or the definitions load, so a code server loads PROD definitions without any of these variables. A run
whose environment lacks one fails at resource initialisation with Dagster's message naming the variable.

====================================  =========================================================================
Variable                              Meaning (all must be present in the run's environment; empty = not used)
====================================  =========================================================================
``BATCH_PLATFORM_CATALOG_TYPE``       ``glue``, ``sql`` or ``rest``
``BATCH_PLATFORM_CATALOG_URI``        SQLAlchemy URI (``postgresql+psycopg2://...``) for sql, endpoint for rest
                                      (must not be empty for these two); empty for glue
``BATCH_PLATFORM_WAREHOUSE``          ``s3://bucket/prefix`` (must not be empty)
``BATCH_PLATFORM_AWS_REGION``         region of the Glue catalog and the bucket, e.g. ``eu-west-1``
``BATCH_PLATFORM_S3_ENDPOINT``        S3 endpoint override for S3-compatible stores; empty on AWS
``BATCH_PLATFORM_GLUE_ENDPOINT``      Glue endpoint override; empty on AWS
``BATCH_PLATFORM_LANDING_URI``        landing zone of the loan drops, ``s3://bucket/prefix`` (must not be empty;
                                      read by the loan domain's ``landing`` resource)
``BATCH_PLATFORM_PII_KEY``            secret HMAC key for PII tokens (LOCAL too; from a Kubernetes Secret in PROD)
``BATCH_PLATFORM_ALERT_WEBHOOK_URL``  Slack-compatible incoming webhook for alerts (a Secret; the code server that
                                      evaluates sensors needs it too)
====================================  =========================================================================

AWS credentials are not configured anywhere here: pyiceberg (boto3 and Arrow's S3 client) and Spark's S3A use the
default AWS credential chain of the run's pod (IRSA web identity, environment, instance profile).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from batch_platform.alerts import LogFileAlerts, WebhookAlerts
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import (
    LOCAL_SPARK_CONFIG,
    PATH_LISTING_THRESHOLD,
    SPARK_DEFAULT_PATH_LISTING_THRESHOLD,
    LakeSparkResource,
)

ENV_VAR = "BATCH_PLATFORM_ENV"
ENVIRONMENTS = ("LOCAL", "PROD")

CATALOG_TYPE_ENV = "BATCH_PLATFORM_CATALOG_TYPE"
CATALOG_URI_ENV = "BATCH_PLATFORM_CATALOG_URI"
WAREHOUSE_ENV = "BATCH_PLATFORM_WAREHOUSE"
AWS_REGION_ENV = "BATCH_PLATFORM_AWS_REGION"
S3_ENDPOINT_ENV = "BATCH_PLATFORM_S3_ENDPOINT"
GLUE_ENDPOINT_ENV = "BATCH_PLATFORM_GLUE_ENDPOINT"
LANDING_URI_ENV = "BATCH_PLATFORM_LANDING_URI"
PII_KEY_ENV = "BATCH_PLATFORM_PII_KEY"
ALERT_WEBHOOK_URL_ENV = "BATCH_PLATFORM_ALERT_WEBHOOK_URL"
# Read from Secret batch-platform-secrets in production, not from the ConfigMap.
SECRET_ENV_VARS = (PII_KEY_ENV, ALERT_WEBHOOK_URL_ENV)
PROD_ENV_VARS = (
    CATALOG_TYPE_ENV,
    CATALOG_URI_ENV,
    WAREHOUSE_ENV,
    AWS_REGION_ENV,
    S3_ENDPOINT_ENV,
    GLUE_ENDPOINT_ENV,
    LANDING_URI_ENV,
    PII_KEY_ENV,
    ALERT_WEBHOOK_URL_ENV,
)

PROD_SPARK_JAR_GROUPS = ("iceberg", "s3")
# The AWS SDK v2 default chain: environment, web identity (IRSA), profile, container and instance roles.
AWS_DEFAULT_CREDENTIALS_PROVIDER = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"


def deployment_environment() -> str:
    """LOCAL unless BATCH_PLATFORM_ENV says otherwise; read when definitions load, never at import time."""
    env = os.environ.get(ENV_VAR, "LOCAL").upper()
    if env not in ENVIRONMENTS:
        raise ValueError(f"{ENV_VAR}={env!r} is not one of {ENVIRONMENTS}")
    return env


def prod_spark_config() -> dict[str, str]:
    """Spark settings for production: the local defaults plus S3A, with the S3 settings read when the run starts.

    pyiceberg names warehouse objects ``s3://``; the lake's Spark path rewrites them to ``s3a://``. With an endpoint
    override, ``SparkResource`` also turns on path-style access (``batch_platform.spark.with_s3a_endpoint_settings``),
    since the value is only known when the run starts. The S3A jars
    (``batch_platform.spark_jars``, groups ``s3`` and ``iceberg``) are baked into the image's Spark jars folder
    rather than fetched with ``spark.jars.packages``, so a run never depends on Maven being reachable.
    """
    return {
        **LOCAL_SPARK_CONFIG,
        # Each file's status is an S3 request: many files are looked up in parallel, by a Spark job.
        PATH_LISTING_THRESHOLD: SPARK_DEFAULT_PATH_LISTING_THRESHOLD,
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.aws.credentials.provider": AWS_DEFAULT_CREDENTIALS_PROVIDER,
        "spark.hadoop.fs.s3a.endpoint.region": dg.EnvVar(AWS_REGION_ENV),
        # Empty means the AWS endpoint of the region.
        "spark.hadoop.fs.s3a.endpoint": dg.EnvVar(S3_ENDPOINT_ENV),
    }


def local_resources() -> dict[str, Any]:
    # The PII key is a secret even on a laptop: `make setup` writes a random one to .data/ and exports it.
    lake = IcebergLakeResource()
    return {
        "lake": lake,
        # Spark SQL's catalog "lake" is derived from this same resource: the two engines share one catalog.
        "spark": LakeSparkResource(lake=lake),
        "pii": PiiTokenizer(key=dg.EnvVar(PII_KEY_ENV)),
        "alerts": LogFileAlerts(),  # <data dir>/alerts/alerts.jsonl
    }


def prod_resources() -> dict[str, Any]:
    """Every value comes from the run's environment when the run starts (EnvVar), never from this file."""
    lake = IcebergLakeResource(
        catalog_type=dg.EnvVar(CATALOG_TYPE_ENV),
        catalog_uri=dg.EnvVar(CATALOG_URI_ENV),
        warehouse=dg.EnvVar(WAREHOUSE_ENV),
        region=dg.EnvVar(AWS_REGION_ENV),
        s3_endpoint=dg.EnvVar(S3_ENDPOINT_ENV),
        glue_endpoint=dg.EnvVar(GLUE_ENDPOINT_ENV),
        # An empty warehouse or SQL catalog URI is an error, never a silent SQLite catalog on the pod's disk.
        allow_local_defaults=False,
    )
    return {
        "lake": lake,
        # The session's catalog "lake" comes from the same lake resource, resolved from the same variables.
        "spark": LakeSparkResource(spark_config=prod_spark_config(), jar_groups=list(PROD_SPARK_JAR_GROUPS), lake=lake),
        "pii": PiiTokenizer(key=dg.EnvVar(PII_KEY_ENV)),
        "alerts": WebhookAlerts(url=dg.EnvVar(ALERT_WEBHOOK_URL_ENV)),
    }


def resources_for(env: str) -> dict[str, Any]:
    return {"LOCAL": local_resources, "PROD": prod_resources}[env]()
