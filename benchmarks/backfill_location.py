"""Benchmark-only code locations for benchmarks/backfill.py: this project's definitions without the automation that
would race the backfill, with or without the lending assets' BackfillPolicy.

The benchmark lands every day's drops first and then submits one backfill from raw to reporting, so the landing and
restatement sensors and the daily schedule are left out: they would request the same raw partitions themselves.
Everything else (assets, checks, the other sensors, resources, the in-process executor) is what
``definitions.build_definitions()`` returns. Loaded only through the temporary workspace file the benchmark writes;
never part of the real deployment.

- ``policy_defs``: the assets as they are (raw, core and reporting take a month of days per run).
- ``per_partition_defs``: the lending assets without BackfillPolicy, which makes Dagster's asset backfill launch one
  run per partition (its default): what the chosen policy is compared against.
"""

from __future__ import annotations

import dagster as dg

from assets.lending.domain import lending
from definitions import build_definitions
from sensors.lending import lending_daily_schedule, lending_landing_sensor, lending_restatement_sensor

LENDING_GROUPS = frozenset(lending.group(layer) for layer in ("raw", "core", "reporting"))
RACING_SENSORS = frozenset({lending_landing_sensor.name, lending_restatement_sensor.name})


def without_backfill_policy(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The same assets definition with no BackfillPolicy.

    ``with_attributes(backfill_policy=None)`` keeps the existing policy (None means "unchanged" there), so this
    rebuilds the definition from its attributes the way ``with_attributes`` itself does, with the policy cleared.
    """
    attributes = {**assets_def.get_attributes_dict(), "backfill_policy": None}
    return dg.AssetsDefinition.dagster_internal_init(**attributes)


def in_groups(assets_def: dg.AssetsDefinition, groups: frozenset[str]) -> bool:
    return set(assets_def.group_names_by_key.values()) <= groups


def benchmark_definitions(*, per_partition: bool) -> dg.Definitions:
    """The project's definitions without the racing automation; with ``per_partition``, the lending assets
    without BackfillPolicy."""
    defs = build_definitions()
    assets = [
        without_backfill_policy(a)
        if per_partition and isinstance(a, dg.AssetsDefinition) and in_groups(a, LENDING_GROUPS)
        else a
        for a in defs.assets or []
    ]
    sensors = [s for s in defs.sensors or [] if s.name not in RACING_SENSORS]
    schedules = [s for s in defs.schedules or [] if s.name != lending_daily_schedule.name]
    return dg.Definitions(
        assets=assets,
        asset_checks=defs.asset_checks,
        schedules=schedules,
        sensors=sensors,
        jobs=defs.jobs,
        resources=defs.resources,
        executor=defs.executor,
        loggers=defs.loggers,
        metadata=defs.metadata,
    )


@dg.definitions
def policy_defs() -> dg.Definitions:
    return benchmark_definitions(per_partition=False)


@dg.definitions
def per_partition_defs() -> dg.Definitions:
    return benchmark_definitions(per_partition=True)
