"""A sensor that alerts when a step has waited on a concurrency pool for too long, naming the pool and the runs
holding its slots with their status.

Each lake table is a pool of one writer (``iceberg-<namespace>-<table>``): a step waiting on it waits for whichever
run holds the slot. A live holder is normal for a while; a holder that has ended (failed, canceled, crashed) means
its slot was not freed, which the instance does only after ``run_monitoring.free_slots_after_run_end_seconds``. The
sensor reads the pools' pending steps and claimed slots from the instance, and when each step started waiting from
its run's event log ("Step blocked by limit for pool ..."); it alerts once per blocked step.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from batch_platform.alerts import Alert, AlertSeverity, AlertsResource

DEFAULT_BLOCKED_THRESHOLD = timedelta(minutes=15)
BLOCKED_MESSAGE = "blocked by limit for pool"
# A holder in one of these will never release its slot itself (UNKNOWN: a run this instance does not know).
ENDED_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED", "UNKNOWN"})


@dataclass(frozen=True)
class SlotHolder:
    run_id: str
    step_key: str
    status: str  # the run's status, e.g. FAILURE; "UNKNOWN" if the run is not in this instance

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES


@dataclass(frozen=True)
class BlockedStep:
    pool: str
    limit: int | None
    run_id: str
    step_key: str
    since: datetime
    holders: tuple[SlotHolder, ...]

    @property
    def key(self) -> str:
        return f"{self.pool}|{self.run_id}|{self.step_key}"


def _blocked_since(instance: dg.DagsterInstance, run_id: str, step_key: str, pool: str, enqueued: datetime) -> datetime:
    """When the step first logged that the pool blocked it; the pool's own enqueue time if it never did."""
    logged = [
        event.timestamp
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if event.step_key == step_key and f"{BLOCKED_MESSAGE} {pool}" in event.message
    ]
    return datetime.fromtimestamp(min(logged), UTC) if logged else enqueued


def blocked_steps(
    instance: dg.DagsterInstance, threshold: timedelta = DEFAULT_BLOCKED_THRESHOLD, now: datetime | None = None
) -> list[BlockedStep]:
    """Steps of live runs that have waited on a pool for at least ``threshold``, with the pool's slot holders."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    now = now or datetime.now(UTC)
    statuses: dict[str, str] = {}

    def status(run_id: str) -> str:
        if run_id not in statuses:
            run = instance.get_run_by_id(run_id)
            statuses[run_id] = run.status.value if run is not None else "UNKNOWN"
        return statuses[run_id]

    found = []
    for pool, info in sorted(storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items()):
        waiting = [step for step in info.pending_steps if step.assigned_timestamp is None]
        if not waiting:
            continue
        holders = tuple(SlotHolder(s.run_id, s.step_key, status(s.run_id)) for s in info.claimed_slots)
        for step in waiting:
            if status(step.run_id) != dg.DagsterRunStatus.STARTED.value:
                continue  # a waiter that is not running blocks nobody; its entry goes with its run
            since = _blocked_since(instance, step.run_id, step.step_key, pool, step.enqueued_timestamp)
            if now - since >= threshold:
                found.append(BlockedStep(pool, info.limit, step.run_id, step.step_key, since, holders))
    return found


def alert_for_blocked_step(blocked: BlockedStep, now: datetime, free_slots_after_seconds: int | None) -> Alert:
    minutes = int((now - blocked.since).total_seconds() // 60)
    held = [f"run {h.run_id} (status {h.status}, step {h.step_key})" for h in blocked.holders] or ["no run"]
    dead = [h for h in blocked.holders if h.ended]
    lines = [
        f"Step {blocked.step_key} of run {blocked.run_id} has waited {minutes} min (since "
        f"{blocked.since.isoformat(timespec='seconds')}) for pool {blocked.pool} (limit {blocked.limit}).",
        f"Slot held by: {'; '.join(held)}.",
    ]
    if dead:
        ids = ", ".join(h.run_id for h in dead)
        freeing = (
            f"the instance frees the slots of ended runs {free_slots_after_seconds} s after they end "
            "(run_monitoring.free_slots_after_run_end_seconds): if this lasts, the daemon's monitoring is down"
            if free_slots_after_seconds
            else "run_monitoring.free_slots_after_run_end_seconds is not set, so they are never freed"
        )
        action = (
            f"The holder {ids} has ended but still holds the slot; {freeing}. Free it by hand: Deployment > "
            f"Concurrency > {blocked.pool} > free the slots of run {ids}."
        )
    else:
        action = (
            "The holder is still running: wait for it, or terminate it (Runs > <run id> > Terminate) if it hangs; "
            "its max runtime (tag dagster/max_runtime) ends it anyway."
        )
    return Alert(
        title=f"Step blocked on pool {blocked.pool} for {minutes} min",
        error_message="\n".join(lines),
        severity=AlertSeverity.ERROR if dead else AlertSeverity.WARNING,
        run_id=blocked.run_id,
        action=action,
    )


def build_blocked_pool_alert_sensor(
    name: str = "blocked_pool_alerts",
    alerts_resource_key: str = "alerts",
    threshold: timedelta = DEFAULT_BLOCKED_THRESHOLD,
    minimum_interval_seconds: int = 60,
) -> dg.SensorDefinition:
    """A running-by-default sensor sending one alert per step blocked on a pool for ``threshold`` or longer.

    The cursor keeps the blocked steps already alerted; a step that unblocks and blocks again alerts again.
    """

    def alert_on_blocked_steps(context: dg.SensorEvaluationContext, **resources: AlertsResource) -> dg.SkipReason:
        now = datetime.now(UTC)
        blocked = blocked_steps(context.instance, threshold, now)
        alerted = set(json.loads(context.cursor)) if context.cursor else set()
        free_after = context.instance.run_monitoring_settings.get("free_slots_after_run_end_seconds")
        new = [b for b in blocked if b.key not in alerted]
        for step in new:
            resources[alerts_resource_key].send(alert_for_blocked_step(step, now, free_after))
        context.update_cursor(json.dumps(sorted(b.key for b in blocked)))
        return dg.SkipReason(f"{len(blocked)} steps blocked on a pool for {threshold} or longer, {len(new)} new")

    alert_on_blocked_steps.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dg.SensorEvaluationContext
            ),
            inspect.Parameter(alerts_resource_key, inspect.Parameter.KEYWORD_ONLY, annotation=AlertsResource),
        ],
        return_annotation=dg.SkipReason,
    )
    return dg.sensor(
        name=name,
        description=f"Alerts when a step has waited on a concurrency pool for {threshold} or longer.",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )(alert_on_blocked_steps)
