"""The composition root: the one place that joins the framework with the domain assets, resources and sensors."""

from __future__ import annotations

import dagster as dg

from assets import all_assets
from resources import deployment_environment, resources_for
from sensors import all_sensors


def build_definitions(env: str | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=all_assets,
        sensors=all_sensors,
        resources=resources_for(env or deployment_environment()),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
