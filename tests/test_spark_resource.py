"""The Spark resource's preconditions and defaults."""

from __future__ import annotations

import pytest

from batch_platform.lake import JavaNotFoundError
from batch_platform.spark import (
    PATH_LISTING_THRESHOLD,
    REQUIRED_SPARK_CONFIG,
    SPARK_DEFAULT_PATH_LISTING_THRESHOLD,
    SparkResource,
    ensure_java,
)
from resources import prod_spark_config


def test_missing_java_gives_a_clear_message_not_a_stack_trace_from_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(JavaNotFoundError, match="Spark needs Java 17 or newer"):
        ensure_java()


def test_a_java_home_without_java_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(JavaNotFoundError):
        ensure_java()


def test_local_default_is_local_star() -> None:
    assert SparkResource().spark_config["spark.master"] == "local[*]"


def test_the_lake_settings_apply_whatever_the_configured_settings_say() -> None:
    # Iceberg refuses INT96 timestamps and the lake's dates are UTC: no configuration may switch either off.
    configured = dict.fromkeys(REQUIRED_SPARK_CONFIG, "overridden")
    settings = SparkResource(spark_config=configured, jar_groups=[]).session_settings()
    assert {key: settings[key] for key in REQUIRED_SPARK_CONFIG} == REQUIRED_SPARK_CONFIG


def test_local_sessions_look_up_the_files_a_read_names_on_the_driver_and_production_ones_in_a_spark_job() -> None:
    # A stat of a local file costs microseconds, a task milliseconds; on S3 each lookup is a request.
    local = SparkResource().session_settings()
    assert int(local[PATH_LISTING_THRESHOLD]) >= 10_000
    assert prod_spark_config()[PATH_LISTING_THRESHOLD] == SPARK_DEFAULT_PATH_LISTING_THRESHOLD
