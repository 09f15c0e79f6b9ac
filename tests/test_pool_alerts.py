"""The blocked-pool alert: a step waiting on a lake table's pool whose only slot a dead run still holds, on a real
Dagster instance's concurrency tables, evaluated through the real sensor."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEvent
from dagster._core.events.log import EventLogEntry
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring import execute_concurrency_slots_iteration

from batch_platform.alerts import LogFileAlerts
from batch_platform.pool_alerts import blocked_steps, build_blocked_pool_alert_sensor

ROOT = Path(__file__).resolve().parents[1]
POOL = "iceberg-core-payments"
STEP = "core__payments"
FREE_AFTER_S = 60


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    overrides = {
        "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}},
        "run_monitoring": {"enabled": True, "free_slots_after_run_end_seconds": FREE_AFTER_S},
    }
    with dg.instance_for_test(overrides=overrides) as test_instance:
        yield test_instance


def dead_holder_and_waiter(instance: dg.DagsterInstance) -> tuple[str, str]:
    """A run that took the pool's slot and was then killed (marked failed from outside, slot kept), and a running
    retry whose step waits for that slot."""
    storage = instance.event_log_storage
    storage.set_concurrency_slots(POOL, 1)
    dead = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    assert storage.claim_concurrency_slot(POOL, dead.run_id, STEP).is_claimed
    instance.report_run_failed(dead)
    waiter = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    assert not storage.claim_concurrency_slot(POOL, waiter.run_id, STEP).is_claimed
    return dead.run_id, waiter.run_id


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_step_waiting_past_the_threshold_is_reported_with_the_dead_run_holding_the_slot(
    instance: dg.DagsterInstance,
) -> None:
    dead, waiter = dead_holder_and_waiter(instance)
    now = datetime.now(UTC)
    assert blocked_steps(instance, timedelta(minutes=15), now + timedelta(minutes=14)) == []
    (blocked,) = blocked_steps(instance, timedelta(minutes=15), now + timedelta(minutes=16))
    assert (blocked.pool, blocked.run_id, blocked.step_key, blocked.limit) == (POOL, waiter, STEP, 1)
    assert [(h.run_id, h.step_key, h.status, h.ended) for h in blocked.holders] == [(dead, STEP, "FAILURE", True)]


def test_the_sensor_alerts_once_naming_the_pool_the_holder_and_its_status(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    dead, waiter = dead_holder_and_waiter(instance)
    alerts_file = tmp_path / "alerts.jsonl"
    sensor = build_blocked_pool_alert_sensor(threshold=timedelta(0))
    resources = {"alerts": LogFileAlerts(path=str(alerts_file))}

    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        sensor.evaluate_tick(context)
        cursor = context.cursor
    (alert,) = lines(alerts_file)
    assert alert["title"].startswith(f"Step blocked on pool {POOL}")
    assert alert["run_id"] == waiter and alert["severity"] == "error"
    assert f"Step {STEP} of run {waiter}" in alert["text"]
    assert f"Slot held by: run {dead} (status FAILURE, step {STEP})" in alert["text"]
    assert f"frees the slots of ended runs {FREE_AFTER_S} s after they end" in alert["text"]
    assert f"Deployment > Concurrency > {POOL}" in alert["text"]

    # The next tick remembers it; once the slot is freed the step is no longer blocked and nothing is sent.
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        sensor.evaluate_tick(context)
    instance.event_log_storage.free_concurrency_slots_for_run(dead)
    assert blocked_steps(instance, timedelta(0)) == []
    assert len(lines(alerts_file)) == 1


def test_a_step_behind_a_live_run_is_a_warning_to_wait(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    storage = instance.event_log_storage
    storage.set_concurrency_slots(POOL, 1)
    live = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    assert storage.claim_concurrency_slot(POOL, live.run_id, STEP).is_claimed
    waiter = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    assert not storage.claim_concurrency_slot(POOL, waiter.run_id, STEP).is_claimed
    alerts_file = tmp_path / "alerts.jsonl"
    with dg.build_sensor_context(
        instance=instance, resources={"alerts": LogFileAlerts(path=str(alerts_file))}
    ) as context:
        build_blocked_pool_alert_sensor(threshold=timedelta(0)).evaluate_tick(context)
    (alert,) = lines(alerts_file)
    assert alert["severity"] == "warning"
    assert f"run {live.run_id} (status STARTED, step {STEP})" in alert["text"]
    assert "still running" in alert["text"]


def fail_as_of(instance: dg.DagsterInstance, run: dg.DagsterRun, seconds_ago: float) -> None:
    """The run failure the code server records for a killed run worker, as recorded ``seconds_ago``."""
    event = DagsterEvent(event_type_value=dg.DagsterEventType.RUN_FAILURE.value, job_name=run.job_name)
    entry = EventLogEntry(
        error_info=None,
        level=logging.ERROR,
        user_message="",
        run_id=run.run_id,
        timestamp=time.time() - seconds_ago,
        dagster_event=event,
        job_name=run.job_name,
    )
    instance.handle_new_event(entry)


@pytest.mark.parametrize("frees", [True, False], ids=["project-config", "without-free-slots"])
def test_the_instance_frees_a_dead_runs_slot_and_the_blocked_step_then_claims_it(frees: bool) -> None:
    monitoring = dict(yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_monitoring"])
    delay = monitoring["free_slots_after_run_end_seconds"]
    if not frees:
        del monitoring["free_slots_after_run_end_seconds"]  # the instance as the issue found it
    overrides = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}, "run_monitoring": monitoring}
    with dg.instance_for_test(overrides=overrides) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 1)
        dead = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
        assert storage.claim_concurrency_slot(POOL, dead.run_id, STEP).is_claimed
        fail_as_of(instance, dead, seconds_ago=delay + 5)
        retry = create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
        assert not storage.claim_concurrency_slot(POOL, retry.run_id, STEP).is_claimed

        # One pass of the daemon's monitoring loop, which frees the slots of runs ended longer ago than the delay.
        workspace = cast(Any, SimpleNamespace(instance=instance))
        list(execute_concurrency_slots_iteration(workspace, logging.getLogger("test_pool_alerts")))

        assert storage.claim_concurrency_slot(POOL, retry.run_id, STEP).is_claimed is frees
        holders = [slot.run_id for slot in storage.get_concurrency_info(POOL).claimed_slots]
        assert holders == ([retry.run_id] if frees else [dead.run_id])
