"""Resources keyed by deployment environment: LOCAL (the default, needs nothing running) and PROD."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource

ENV_VAR = "BATCH_PLATFORM_ENV"
ENVIRONMENTS = ("LOCAL", "PROD")


def deployment_environment() -> str:
    """LOCAL unless BATCH_PLATFORM_ENV says otherwise; read when definitions load, never at import time."""
    env = os.environ.get(ENV_VAR, "LOCAL").upper()
    if env not in ENVIRONMENTS:
        raise ValueError(f"{ENV_VAR}={env!r} is not one of {ENVIRONMENTS}")
    return env


def local_resources() -> dict[str, Any]:
    return {"lake": IcebergLakeResource(), "spark": SparkResource()}


def prod_resources() -> dict[str, Any]:
    # Every value comes from the run's environment when the run starts (EnvVar), never from this file.
    return {
        "lake": IcebergLakeResource(
            catalog_type="sql",
            catalog_uri=dg.EnvVar("BATCH_PLATFORM_CATALOG_URI"),
            warehouse=dg.EnvVar("BATCH_PLATFORM_WAREHOUSE"),
        ),
        "spark": SparkResource(),
    }


def resources_for(env: str) -> dict[str, Any]:
    return {"LOCAL": local_resources, "PROD": prod_resources}[env]()
