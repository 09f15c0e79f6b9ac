"""Domains and their composition: the framework side of "a domain stands alone".

A ``Domain`` declares everything of one business domain: its assets, checks, sensors, schedules and jobs, the
resources only it uses, freshness deadlines per *layer*, its ``batch-platform`` subcommands, how to land demo data,
and the lake tables it writes (for maintenance). A ``Platform`` composes a list of domains into one code location
with the platform's own automation (run-failure and blocked-pool alerts, partition freshness checks, table
maintenance). The framework imports no domain: a composition module outside ``batch_platform/`` lists them, and
adding a domain is new files plus one line there.

Layers are what an asset module calls its groups (``raw``, ``core``, ``reporting``; ``lake_asset`` defaults the group
to the table's namespace). At registration every group becomes the domain's own, ``<domain>_<layer>``
(``lending_core``), so two domains never share a group, a group's freshness policy or its deadline. Domain code that
selects its own layers uses ``layer_group``/``layer_selection`` with its name, never a bare layer.

Composition fails, naming both domains, when two domains declare the same asset key, lake table, group, pool,
sensor/schedule/job name, ``batch-platform`` subcommand, or a resource key bound to different values.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg

from batch_platform.failure_sensor import build_run_failure_alert_sensor
from batch_platform.freshness import apply_freshness_policies, build_partition_freshness_checks
from batch_platform.lake import build_maintenance_job, build_maintenance_schedule
from batch_platform.lake.tables import LakeTable
from batch_platform.pool_alerts import build_blocked_pool_alert_sensor

Command = Callable[[Sequence[str]], int]
"""A ``batch-platform`` subcommand: the arguments after its name in, an exit status out; its docstring is its help."""
ResourceFactory = Callable[[str], Mapping[str, Any]]
"""Resources for a deployment environment (``LOCAL``, ``PROD``), built when the definitions load."""
AssetLike = dg.AssetsDefinition | dg.AssetSpec | dg.SourceAsset

# Subcommands of `batch-platform` that the platform itself defines (batch_platform/cli.py); no domain may take them.
PLATFORM_COMMANDS = frozenset({"demo", "spark-jars", "backfill", "specs"})
# The composition module that `batch-platform` loads: it defines PLATFORM (a Platform). Dagster loads its `defs`.
DEFINITIONS_MODULE_ENV = "BATCH_PLATFORM_DEFINITIONS"
DEFAULT_DEFINITIONS_MODULE = "definitions"
# Optional domains of the composition registered in this process, comma separated (e.g. "platform_demo").
EXTRA_DOMAINS_ENV = "BATCH_PLATFORM_EXTRA_DOMAINS"
DEFAULT_GROUP = "default"
_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

DEFAULT_DEADLINE_HOURS = 24.0
# Assets of no domain deadline: warn after a day without a materialization, fail after 36 h.
DEFAULT_FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=36), warn_window=timedelta(hours=24)
)


class DomainCollisionError(ValueError):
    """Two domains (or a domain and the platform) declare the same thing."""


def layer_group(domain: str, layer: str) -> str:
    """The asset group of ``domain``'s ``layer``: ``layer_group("lending", "core") == "lending_core"``."""
    if layer == domain or layer.startswith(f"{domain}_"):
        return layer  # already the domain's own
    if layer == DEFAULT_GROUP:
        return domain
    return f"{domain}_{layer}"


def layer_selection(domain: str, *layers: str) -> dg.AssetSelection:
    """The assets of the given layers of ``domain``, for its own sensors and jobs."""
    return dg.AssetSelection.groups(*(layer_group(domain, layer) for layer in layers))


def domain_pool(domain: str, name: str) -> str:
    """A concurrency pool of ``domain`` that is not a lake table's (those are ``LakeTable.pool``)."""
    return f"{domain}-{name}"


def _pools(asset: AssetLike) -> set[str]:
    if not isinstance(asset, dg.AssetsDefinition) or not asset.is_executable:
        return set()
    return set(getattr(asset.node_def, "pools", set()) or set())


def _keys(asset: AssetLike) -> list[dg.AssetKey]:
    if isinstance(asset, dg.AssetsDefinition):
        return sorted(asset.keys)
    return [asset.key]


def _written_tables(asset: AssetLike) -> set[str]:
    if not isinstance(asset, dg.AssetsDefinition) or not asset.is_materializable:
        return set()
    return {str(spec.metadata["iceberg/table"]) for spec in asset.specs if "iceberg/table" in spec.metadata}


@dataclass(frozen=True, eq=False)
class Domain:
    """Everything one domain registers with the platform. Only ``name`` is required.

    ``deadline_hours`` and ``freshness_policies`` are keyed by layer (``"raw"``, ``"core"``...): the hours after a
    partition's window closes by which it must be materialized (the ``partition_freshness`` checks), and the policy
    Dagster's daemon evaluates per asset. ``resources`` is a mapping for every environment, or a function of the
    environment name. ``commands`` and ``prepare_demo`` are tools: they should import what they need when called,
    so the code location never loads them.
    """

    name: str
    assets: Sequence[AssetLike] = ()
    asset_checks: Sequence[dg.AssetChecksDefinition] = ()
    sensors: Sequence[dg.SensorDefinition] = ()
    schedules: Sequence[dg.ScheduleDefinition] = ()
    jobs: Sequence[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = ()
    resources: Mapping[str, Any] | ResourceFactory = field(default_factory=dict)
    deadline_hours: Mapping[str, float] = field(default_factory=dict)
    freshness_policies: Mapping[str, dg.FreshnessPolicy] = field(default_factory=dict)
    commands: Mapping[str, Command] = field(default_factory=dict)
    prepare_demo: Callable[[int], None] | None = None
    lake_tables: Sequence[LakeTable] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"domain name {self.name!r}: lower case letters and digits, words joined by '_'")
        layers = {s.group_name or DEFAULT_GROUP for a in self.assets for s in _specs(a)}
        groups = {layer_group(self.name, layer) for layer in layers}
        by_layer = {"deadline_hours": self.deadline_hours, "freshness_policies": self.freshness_policies}
        for what, declared in by_layer.items():
            unknown = sorted(layer for layer in declared if layer_group(self.name, layer) not in groups)
            if unknown:
                raise ValueError(f"domain {self.name!r}: {what} names layers with no asset: {unknown}")
        declared_tables = {t.identifier for t in self.lake_tables}
        unmaintained = sorted({t for a in self.assets for t in _written_tables(a)} - declared_tables)
        if unmaintained:
            raise ValueError(
                f"domain {self.name!r}: assets write lake tables missing from lake_tables (never maintained): "
                f"{unmaintained}"
            )
        reserved = sorted(PLATFORM_COMMANDS & set(self.commands))
        if reserved:
            raise DomainCollisionError(f"domain {self.name!r}: the platform's own batch-platform commands {reserved}")

    def group(self, layer: str) -> str:
        return layer_group(self.name, layer)

    def selection(self, *layers: str) -> dg.AssetSelection:
        return layer_selection(self.name, *layers)

    def registered_assets(self) -> list[AssetLike]:
        """The domain's assets with their groups made the domain's own (``core`` -> ``<name>_core``)."""

        def own_group(spec: dg.AssetSpec) -> dg.AssetSpec:
            return spec.replace_attributes(group_name=self.group(spec.group_name or DEFAULT_GROUP))

        mappable = [a for a in self.assets if isinstance(a, dg.AssetsDefinition | dg.AssetSpec)]
        mapped = iter(dg.map_asset_specs(own_group, mappable))
        return [next(mapped) if isinstance(a, dg.AssetsDefinition | dg.AssetSpec) else a for a in self.assets]

    def resources_for(self, env: str) -> dict[str, Any]:
        return dict(self.resources(env) if callable(self.resources) else self.resources)

    def groups(self) -> set[str]:
        return {s.group_name or DEFAULT_GROUP for a in self.registered_assets() for s in _specs(a)}

    def deadline_hours_by_group(self) -> dict[str, float]:
        return {self.group(layer): hours for layer, hours in self.deadline_hours.items()}

    def freshness_policies_by_group(self) -> dict[str, dg.FreshnessPolicy]:
        return {self.group(layer): policy for layer, policy in self.freshness_policies.items()}


def _specs(asset: AssetLike) -> list[dg.AssetSpec]:
    if isinstance(asset, dg.AssetsDefinition):
        return list(asset.specs)
    if isinstance(asset, dg.AssetSpec):
        return [asset]
    return [dg.AssetSpec(asset.key, group_name=asset.group_name)]


def _claim(owners: dict[Any, str], what: str, item: Any, domain: str) -> None:
    first = owners.setdefault(item, domain)
    if first != domain:
        label = item.to_user_string() if isinstance(item, dg.AssetKey) else item
        raise DomainCollisionError(f"{what} {label!r} is declared by domains {first!r} and {domain!r}")


def validate_domains(
    domains: Sequence[Domain], env: str, shared_resources: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Refuse two domains that declare the same thing; the resources of ``env`` bound by the domains and shared."""
    claims: dict[str, dict[Any, str]] = {}
    for domain in domains:
        _claim(claims.setdefault("domain", {}), "domain", domain.name, domain.name)
        for asset in domain.assets:
            for asset_key in _keys(asset):
                _claim(claims.setdefault("asset key", {}), "asset key", asset_key, domain.name)
            for pool in _pools(asset):
                _claim(claims.setdefault("pool", {}), "pool", pool, domain.name)
        for table in {t.identifier for t in domain.lake_tables}:
            _claim(claims.setdefault("lake table", {}), "lake table", table, domain.name)
        for group in domain.groups():
            _claim(claims.setdefault("group", {}), "group", group, domain.name)
        for kind, definitions in (("sensor", domain.sensors), ("schedule", domain.schedules), ("job", domain.jobs)):
            for definition in definitions:
                _claim(claims.setdefault(kind, {}), kind, definition.name, domain.name)
        for command in domain.commands:
            _claim(claims.setdefault("command", {}), "batch-platform command", command, domain.name)

    resources = dict(shared_resources or {})
    owner = dict.fromkeys(resources, "the platform's shared resources")
    for domain in domains:
        for key, value in domain.resources_for(env).items():
            if key in resources and resources[key] != value:
                raise DomainCollisionError(
                    f"resource key {key!r} is bound to different values by {owner[key]!r} and domain {domain.name!r}"
                )
            resources.setdefault(key, value)
            owner.setdefault(key, domain.name)
    return resources


@dataclass(frozen=True)
class Platform:
    """The code location: ``domains`` always, ``optional_domains`` when ``$BATCH_PLATFORM_EXTRA_DOMAINS`` names them,
    shared resources per environment, and the platform's own automation."""

    domains: Sequence[Domain]
    shared_resources: ResourceFactory
    environment: Callable[[], str]
    optional_domains: Sequence[Domain] = ()
    default_deadline_hours: float = DEFAULT_DEADLINE_HOURS
    default_freshness_policy: dg.FreshnessPolicy = DEFAULT_FRESHNESS_POLICY

    def selected_domains(self, extra: Iterable[str] | None = None) -> list[Domain]:
        """The registered domains plus the optional ones named in ``extra`` (default: the environment's setting)."""
        if extra is None:
            extra = [n.strip() for n in os.environ.get(EXTRA_DOMAINS_ENV, "").split(",") if n.strip()]
        optional = {d.name: d for d in self.optional_domains}
        unknown = sorted(set(extra) - set(optional))
        if unknown:
            raise ValueError(f"{EXTRA_DOMAINS_ENV}: no optional domain {unknown}; there are {sorted(optional)}")
        return [*self.domains, *(optional[name] for name in optional if name in set(extra))]

    def commands(self) -> dict[str, Command]:
        """Every domain's ``batch-platform`` subcommands (optional domains' too: tools, not definitions)."""
        domains = [*self.domains, *self.optional_domains]
        owners: dict[Any, str] = {}
        commands: dict[str, Command] = {}
        for domain in domains:
            for name, command in domain.commands.items():
                _claim(owners, "batch-platform command", name, domain.name)
                commands[name] = command
        return commands

    def prepare_demo(self, days: int, extra: Iterable[str] | None = None) -> None:
        """Land what the demo's assets read, domain by domain."""
        for domain in self.selected_domains(extra):
            if domain.prepare_demo is not None:
                domain.prepare_demo(days)

    def build_definitions(self, env: str | None = None, extra: Iterable[str] | None = None) -> dg.Definitions:
        env = env or self.environment()
        domains = self.selected_domains(extra)
        resources = validate_domains(domains, env, self.shared_resources(env))
        assets = [a for d in domains for a in d.registered_assets()]
        deadline_hours = {g: h for d in domains for g, h in d.deadline_hours_by_group().items()}
        policies = {g: p for d in domains for g, p in d.freshness_policies_by_group().items()}
        freshness_checks, freshness_sensor = build_partition_freshness_checks(
            assets, deadline_hours_by_group=deadline_hours, default_deadline_hours=self.default_deadline_hours
        )
        maintenance = build_maintenance_job([t for d in domains for t in d.lake_tables])
        defs = dg.Definitions(
            assets=assets,
            asset_checks=[*(c for d in domains for c in d.asset_checks), *freshness_checks],
            sensors=[
                *(s for d in domains for s in d.sensors),
                build_run_failure_alert_sensor(),
                build_blocked_pool_alert_sensor(),
                freshness_sensor,
            ],
            schedules=[*(s for d in domains for s in d.schedules), build_maintenance_schedule(maintenance)],
            jobs=[*(j for d in domains for j in d.jobs), maintenance],
            resources=resources,
            # The steps of a run share one process and so one Spark session: the default multiprocess executor
            # would start a JVM per step (minutes per run on a small machine), and Spark parallelizes within a step.
            executor=dg.in_process_executor,
        )
        # One policy for every materializable asset, the domains' group policies on top (evaluated per asset).
        return apply_freshness_policies(defs, default=self.default_freshness_policy, by_group=policies)


def load_platform(module_name: str | None = None) -> Platform:
    """The ``PLATFORM`` of the composition module: ``module_name``, else ``$BATCH_PLATFORM_DEFINITIONS``, else
    ``definitions``. How the framework's commands find the domains without importing any of them by name."""
    name = module_name or os.environ.get(DEFINITIONS_MODULE_ENV) or DEFAULT_DEFINITIONS_MODULE
    platform = getattr(importlib.import_module(name), "PLATFORM", None)
    if not isinstance(platform, Platform):
        raise TypeError(f"module {name!r} ({DEFINITIONS_MODULE_ENV}) defines no PLATFORM = Platform(...)")
    return platform
