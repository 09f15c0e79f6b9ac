"""A benchmark-only code location: this project's definitions with the core assets' BackfillPolicy removed.

Without a policy, Dagster's asset backfill launches one run per partition (Dagster's default), which is what
``benchmarks/backfill.py`` compares the chosen policy against. Everything else (assets, checks, sensors, schedules,
resources, the in-process executor) is what ``definitions.build_definitions()`` returns. Loaded only
through the temporary workspace file the benchmark writes; never part of the real deployment.
"""

from __future__ import annotations

import dagster as dg

from assets.lending.domain import lending
from definitions import build_definitions

CORE_GROUP = lending.group("core")  # lending_core


def without_backfill_policy(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The same assets definition with no BackfillPolicy.

    ``with_attributes(backfill_policy=None)`` keeps the existing policy (None means "unchanged" there), so this
    rebuilds the definition from its attributes the way ``with_attributes`` itself does, with the policy cleared.
    """
    attributes = {**assets_def.get_attributes_dict(), "backfill_policy": None}
    return dg.AssetsDefinition.dagster_internal_init(**attributes)


def in_group(assets_def: dg.AssetsDefinition, group: str) -> bool:
    return set(assets_def.group_names_by_key.values()) == {group}


def build_per_partition_definitions(group: str = CORE_GROUP) -> dg.Definitions:
    """The project's definitions, the assets of ``group`` without BackfillPolicy (one run per partition)."""
    defs = build_definitions()
    assets = [
        without_backfill_policy(a) if isinstance(a, dg.AssetsDefinition) and in_group(a, group) else a
        for a in defs.assets or []
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=defs.asset_checks,
        schedules=defs.schedules,
        sensors=defs.sensors,
        jobs=defs.jobs,
        resources=defs.resources,
        executor=defs.executor,
        loggers=defs.loggers,
        metadata=defs.metadata,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_per_partition_definitions()
