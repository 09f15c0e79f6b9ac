"""The composition root: the code location's domains, registered in one place.

``batch_platform`` (the framework) imports no domain; this module joins them. Adding a domain is its own files plus
one line in ``DOMAINS``. Loaded by Dagster as ``definitions:defs`` (workspace.yaml, the image's code server) and by
``batch-platform`` through ``BATCH_PLATFORM_DEFINITIONS`` (default: this module's name, ``definitions``).
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from assets.lending.domain import lending
from assets.platform_demo import platform_demo
from batch_platform.domain import Domain, Platform
from resources import deployment_environment, resources_for

DOMAINS: list[Domain] = [lending]
# Registered only when BATCH_PLATFORM_EXTRA_DOMAINS names them: never part of the production definitions.
OPTIONAL_DOMAINS: list[Domain] = [platform_demo]

PLATFORM = Platform(
    domains=DOMAINS,
    optional_domains=OPTIONAL_DOMAINS,
    shared_resources=resources_for,
    environment=deployment_environment,
)


def build_definitions(env: str | None = None, extra_domains: Iterable[str] | None = None) -> dg.Definitions:
    return PLATFORM.build_definitions(env, extra_domains)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
