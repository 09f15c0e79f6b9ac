"""The run coordinator named in dagster.yaml is the only project code the daemon's process creates: creating it
installs the platform's fixes to Dagster there (batch_platform.compute.ComputeProfileRunCoordinator)."""

from __future__ import annotations

from types import ModuleType

import dagster as dg
import pytest
from dagster._core.definitions.partitions.mapping import time_window as time_window_mapping
from dagster._core.execution import asset_backfill

from batch_platform import backfill_completion, partition_offsets

COORDINATOR = {"module": "batch_platform.compute", "class": "ComputeProfileRunCoordinator"}


@pytest.mark.parametrize(
    ("module", "name", "dagsters", "platforms"),
    [
        (
            asset_backfill,
            "backfill_runs_are_complete",
            backfill_completion._dagsters_check,
            backfill_completion.backfill_runs_are_complete,
        ),
        (
            time_window_mapping,
            "_offsetted_datetime",
            partition_offsets.dagsters_offsetted_datetime,
            partition_offsets.offsetted_datetime,
        ),
    ],
    ids=["backfill completion guard", "one-walk partition offsets"],
)
def test_the_run_coordinator_installs_the_fix_in_the_process_that_creates_it(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, dagsters: object, platforms: object
) -> None:
    monkeypatch.setattr(module, name, dagsters)
    with dg.instance_for_test(overrides={"run_coordinator": COORDINATOR}) as instance:
        assert getattr(module, name) is dagsters
        instance.get_required_daemon_types()  # what dagster-daemon asks first: it creates the run coordinator
    assert getattr(module, name) is platforms
