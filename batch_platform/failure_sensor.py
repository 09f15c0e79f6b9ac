"""A sensor that turns every failed run of this code location into an alert naming the step, asset and partition.

It monitors every job of the code location (no ``monitored_jobs``): named jobs, the implicit asset job that UI
materializations and asset backfills run, and backfill runs. Runs of other code locations are not its business.
"""

import inspect

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from batch_platform.alerts import Alert, AlertSeverity, AlertsResource
from batch_platform.run_diagnosis import GENERIC_FAILURE, diagnose, operator_action

# Dagster's system run tags.
PARTITION_TAG = "dagster/partition"
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"
# Dagster wraps an exception raised by user code in this error; the user's exception is its cause.
STEP_WRAPPER_ERROR = "DagsterExecutionStepExecutionError"


def run_partition(tags: dict[str, str]) -> str | None:
    """The run's partition key, or its partition range as ``start...end`` (single-run backfills)."""
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    start, end = tags.get(PARTITION_RANGE_START_TAG), tags.get(PARTITION_RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return None


def error_summary(error: SerializableErrorInfo | None) -> str:
    """The error's message and its causes, without Dagster's wrapper and without stack traces."""
    messages = []
    while error is not None:
        if error.cls_name != STEP_WRAPPER_ERROR or error.cause is None:
            messages.append(error.message.strip())
        error = error.cause
    return "\n  caused by: ".join(messages) if messages else "no error recorded"


def _step_asset_keys(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, tuple[str, ...]]:
    """Asset keys each step of the run materializes, from the run's execution plan."""
    if run.execution_plan_snapshot_id is None:
        return {}
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return {
        step.key: tuple(
            output.properties.asset_key.to_user_string()
            for output in step.outputs
            if output.properties is not None and output.properties.asset_key is not None
        )
        for step in plan.steps
    }


def _partition_range(tags: dict[str, str]) -> tuple[str, str] | None:
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG], tags[PARTITION_TAG]
    start, end = tags.get(PARTITION_RANGE_START_TAG), tags.get(PARTITION_RANGE_END_TAG)
    return (start, end) if start and end else None


def alert_for_failed_run(context: dg.RunFailureSensorContext, webserver_base_url: str | None = None) -> Alert:
    """The alert for the context's failed run: its assets, partition, backfill, each failed step's error, or for a
    run that died, the step it died in and why (signal, exit code, lost pod), and what the operator can do."""
    # Reloaded: run retries tag the run (dagster/will_retry) as it fails, possibly after the sensor's context.
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    assets_by_step = _step_asset_keys(context.instance, run)
    # UI materializations carry their asset selection; other runs materialize everything in their plan.
    run_assets = (
        tuple(key.to_user_string() for key in run.asset_selection)
        if run.asset_selection
        else tuple(key for keys in assets_by_step.values() for key in keys)
    )

    step_errors = []
    failed_steps = []
    for event in context.get_step_failure_events():
        step_key = event.step_key or "?"
        failed_steps.append(step_key)
        assets = ", ".join(assets_by_step.get(step_key, ())) or "no asset"
        failure = event.step_failure_data
        step_errors.append(f"step {step_key} ({assets}): {error_summary(failure.error)}")
    death = diagnose(context.instance, run.run_id)
    if not step_errors:
        # The run failed outside any step: at launch, or its worker died (killed, OOM, pod lost) mid-step.
        for step_key in death.running_steps:
            failed_steps.append(step_key)
            assets = ", ".join(assets_by_step.get(step_key, ())) or "no asset"
            step_errors.append(f"step {step_key} ({assets}) was running when the run died")
        failure_data = context.failure_event.job_failure_data
        run_error = failure_data.error if failure_data is not None else None
        message = context.failure_event.message or ""
        if run_error:
            step_errors.append(error_summary(run_error))
        elif message and GENERIC_FAILURE not in message and message not in death.causes:
            step_errors.append(message)
        step_errors.extend(death.causes)
        if len(step_errors) == len(death.running_steps):
            step_errors.append(message or "run failed")

    # The implicit asset jobs (__ASSET_JOB...) say nothing to a reader; the assets do.
    hidden_job = run.job_name.startswith("__")
    subject = ", ".join(sorted(run_assets)[:3]) + (" ..." if len(run_assets) > 3 else "")
    partition = run_partition(dict(run.tags))
    title = f"Run failed: {subject if hidden_job and run_assets else run.job_name}"
    if partition:
        title += f" [{partition}]"
    return Alert(
        title=title,
        error_message="\n".join(step_errors),
        severity=AlertSeverity.ERROR,
        run_id=run.run_id,
        job_name=run.job_name,
        asset_keys=tuple(sorted(run_assets)),
        partition=partition,
        backfill_id=run.tags.get(BACKFILL_TAG),
        link=f"{webserver_base_url.rstrip('/')}/runs/{run.run_id}" if webserver_base_url else None,
        action=operator_action(
            context.instance,
            run,
            death,
            failed_assets=tuple(dict.fromkeys(k for step in failed_steps for k in assets_by_step.get(step, ()))),
            partition_range=_partition_range(dict(run.tags)),
        ),
    )


def build_run_failure_alert_sensor(
    name: str = "run_failure_alerts",
    alerts_resource_key: str = "alerts",
    webserver_base_url: str | None = None,
) -> dg.SensorDefinition:
    """A running-by-default sensor sending an alert through the ``alerts_resource_key`` resource per failed run.

    A delivery error fails that evaluation; Dagster records it on the sensor tick and on the failed run, and the
    sensor moves on to the next failure.
    """

    def alert_on_run_failure(context: dg.RunFailureSensorContext, **resources: AlertsResource) -> None:
        resources[alerts_resource_key].send(alert_for_failed_run(context, webserver_base_url))

    # Dagster passes a sensor the resources its parameters name and type; the key is only known here.
    alert_on_run_failure.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dg.RunFailureSensorContext
            ),
            inspect.Parameter(alerts_resource_key, inspect.Parameter.KEYWORD_ONLY, annotation=AlertsResource),
        ],
        return_annotation=None,
    )
    return dg.run_failure_sensor(
        name=name,
        description="Sends an alert naming the failed steps, assets, partition and error of every failed run.",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )(alert_on_run_failure)
