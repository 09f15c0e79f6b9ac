"""Why a run died and what the operator can do, read from the run's event log and tags.

A run whose worker is killed (OOM, SIGKILL, a lost pod) records no step failure: only an engine event of whoever
noticed (the code server: "... was terminated by signal 9 (SIGKILL)"; run monitoring: "Detected run worker status
..."; the max runtime: "Exceeded maximum runtime ...") and a run failure "marked as failed from outside the
execution context". This module finds the steps that were running, that explanation, and the way to resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

# Dagster's run tags (dagster._core.storage.tags).
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
# Phrases of the messages Dagster writes when it finds a run's worker gone or a run over its limits
# (dagster._utils.get_run_crash_explanation, _daemon/monitoring/run_monitoring.py).
CRASH_PHRASES = (
    "terminated by signal",
    "unexpectedly exited with code",
    "Detected run worker status",
    "Exceeded maximum runtime",
    "exceeding maximum runtime",
    "timed out due to taking longer than",
    "forcibly marked as failed",
)
GENERIC_FAILURE = "marked as failed from outside the execution context"
_STEP_ENDED = {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
}


@dataclass(frozen=True)
class RunDeath:
    """What a failed run was doing and why it stopped, as far as the event log tells."""

    running_steps: tuple[str, ...]  # started and never finished: the steps the run died in
    causes: tuple[str, ...]  # crash explanations, oldest first; empty if the log has none

    @property
    def crashed(self) -> bool:
        return bool(self.causes)


def diagnose(instance: dg.DagsterInstance, run_id: str) -> RunDeath:
    started = [e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START) if e.step_key]
    ended = {e.step_key for e in instance.all_logs(run_id, of_type=_STEP_ENDED)}
    running = tuple(dict.fromkeys(key for key in started if key not in ended))
    causes = []
    for event in instance.all_logs(run_id, of_type={dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.RUN_FAILURE}):
        message = (event.dagster_event.message if event.dagster_event else None) or event.user_message or ""
        if any(phrase in message for phrase in CRASH_PHRASES) and message not in causes:
            causes.append(message.strip())
    return RunDeath(running_steps=running, causes=tuple(causes))


def retry_note(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """How Dagster itself will resume the run, if it will: run retries set ``dagster/will_retry`` on failure."""
    if run.tags.get(WILL_RETRY_TAG) != "true":
        return None
    attempt = int(run.tags.get(RETRY_NUMBER_TAG, "0")) + 1
    return (
        f"Dagster is retrying this run automatically from the failed step (retry {attempt} of "
        f"{instance.run_retries_max_retries}); nothing to do unless the retry fails too."
    )


def operator_action(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    death: RunDeath,
    *,
    failed_assets: tuple[str, ...],
    partition_range: tuple[str, str] | None,
) -> str:
    """What the operator can do: wait for the automatic retry, or re-execute from failure (UI path and command)."""
    lines = []
    note = retry_note(instance, run)
    if note:
        lines.append(note)
    elif death.crashed:
        lines.append("The run worker died: the tables keep their last published state, so re-executing is safe.")
    else:
        lines.append("Fix the cause in the error above first: re-executing unchanged fails the same way.")
    lines.append(f"Re-execute by hand in the UI: Runs > {run.run_id} > Re-execute > From failure.")
    if failed_assets and partition_range:
        selection = " or ".join(f"key:{key}" for key in failed_assets)
        start, end = partition_range
        lines.append(
            f"Or from a shell, the same assets, partitions and everything downstream: batch-platform backfill "
            f"'{selection}' --from {start} --to {end} --downstream"
        )
    return "\n".join(lines)
