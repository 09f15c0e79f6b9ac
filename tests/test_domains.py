"""Domains stand alone: a second domain, built here from nothing but the framework, composes with the loan domain
without a change to ``batch_platform/``; its groups, deadlines, pools and commands are its own; two domains that
declare the same thing are refused, naming both."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from assets.lending.domain import lending
from batch_platform import cli
from batch_platform.assets import lake_asset
from batch_platform.domain import (
    DEFINITIONS_MODULE_ENV,
    Domain,
    DomainCollisionError,
    Platform,
    domain_pool,
    layer_selection,
)
from batch_platform.lake import LakeTable
from batch_platform.partitions import daily_partitions
from resources import resources_for

ROOT = Path(__file__).resolve().parents[1]
CARDS_DAYS = daily_partitions("2024-01-01")

# -- a small second domain: a raw table, a core table, a sensor and a command -----------------------------------------

CARD_SWIPES = LakeTable(
    namespace="raw",
    name="card_swipes",
    partition_column="swipe_date",
    schema=pa.schema([pa.field("swipe_date", pa.date32(), nullable=False), pa.field("amount", pa.int64())]),
)
CARD_BALANCES = LakeTable(  # in the core namespace, like the loan domain's core tables
    namespace="core",
    name="card_balances",
    partition_column="swipe_date",
    schema=pa.schema([pa.field("swipe_date", pa.date32(), nullable=False), pa.field("balance", pa.int64())]),
)


@lake_asset(CARD_SWIPES, partitions_def=CARDS_DAYS)
def card_swipes() -> None: ...


@lake_asset(CARD_BALANCES, partitions_def=CARDS_DAYS, deps=[CARD_SWIPES.asset_key])
def card_balances() -> None: ...


@dg.asset(key=["cards", "settlement_file"], group_name="core", pool=domain_pool("cards", "settlement"))
def settlement_file() -> None: ...


@dg.sensor(name="cards_swipe_sensor", asset_selection=layer_selection("cards", "raw", "core"))
def cards_swipe_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    return dg.SkipReason("nothing new")


COMMAND_CALLS: list[list[str]] = []


def cards_report(argv: Sequence[str]) -> int:
    """Print the cards domain's report."""
    COMMAND_CALLS.append(list(argv))
    return 0


cards = Domain(
    name="cards",
    assets=[card_swipes, card_balances, settlement_file],
    sensors=[cards_swipe_sensor],
    resources={"card_processor": dg.ResourceDefinition.hardcoded_resource("processor")},
    deadline_hours={"raw": 2.0, "core": 3.0},
    freshness_policies={
        "core": dg.FreshnessPolicy.cron("0 3 * * *", lower_bound_delta=timedelta(hours=3), timezone="UTC")
    },
    commands={"cards-report": cards_report},
    lake_tables=[CARD_SWIPES, CARD_BALANCES],
)

# This module is a composition root too: `batch-platform` finds it through BATCH_PLATFORM_DEFINITIONS.
PLATFORM = Platform(domains=[lending, cards], shared_resources=resources_for, environment=lambda: "LOCAL")


@pytest.fixture(scope="module")
def composed() -> dg.Definitions:
    return PLATFORM.build_definitions("LOCAL")


def _deadlines(defs: dg.Definitions) -> dict[str, float]:
    return {
        spec.asset_key.to_user_string(): float(spec.metadata["deadline_hours"])
        for checks in defs.asset_checks or []
        if isinstance(checks, dg.AssetChecksDefinition)
        for spec in checks.check_specs
        if spec.name == "partition_freshness"
    }


def test_a_second_domain_composes_with_lending_in_its_own_groups(composed: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(composed)
    graph = composed.get_repository_def().asset_graph
    assert graph.get(CARD_BALANCES.asset_key).group_name == "cards_core"
    assert graph.get(dg.AssetKey(["cards", "settlement_file"])).group_name == "cards_core"
    assert graph.get(CARD_SWIPES.asset_key).group_name == "cards_raw"
    assert graph.get(dg.AssetKey(["core", "loans"])).group_name == "lending_core"
    # Each domain's selection of its own layers is its own assets only.
    assert set(layer_selection("cards", "core").resolve(graph)) == {
        CARD_BALANCES.asset_key,
        dg.AssetKey(["cards", "settlement_file"]),
    }
    assert CARD_BALANCES.asset_key not in set(lending.selection("core").resolve(graph))


def test_each_domain_keeps_its_own_freshness_deadlines_and_policies(composed: dg.Definitions) -> None:
    deadlines = _deadlines(composed)
    assert deadlines["core/card_balances"] == 3.0 and deadlines["raw/card_swipes"] == 2.0
    assert deadlines["core/loans"] == 8.0 and deadlines["raw/loans"] == 6.0
    graph = composed.get_repository_def().asset_graph
    assert graph.get(CARD_BALANCES.asset_key).freshness_policy == cards.freshness_policies["core"]
    assert graph.get(dg.AssetKey(["core", "loans"])).freshness_policy == lending.freshness_policies["core"]


def test_the_domains_pools_do_not_collide(composed: dg.Definitions) -> None:
    graph = composed.get_repository_def().asset_graph

    def pools(domain: Domain) -> set[str]:
        return {
            p
            for a in domain.assets
            if isinstance(a, dg.AssetsDefinition)
            for k in a.keys
            for p in graph.get(k).pools or ()
        }

    assert pools(cards) == {"iceberg-raw-card_swipes", "iceberg-core-card_balances", "cards-settlement"}
    assert not pools(cards) & pools(lending)


def test_the_second_domain_brings_its_sensor_resources_and_maintained_tables(composed: dg.Definitions) -> None:
    repo = composed.get_repository_def()
    assert repo.has_sensor_def("cards_swipe_sensor") and repo.has_sensor_def("lending_landing_sensor")
    assert {"card_processor", "landing", "lake"} <= set(composed.resources or {})
    maintained = {n.name for n in repo.get_job("iceberg_maintenance").nodes}
    assert {"maintain__core__card_balances", "maintain__core__loans"} <= maintained


def test_batch_platform_finds_the_domains_commands_through_the_composition_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DEFINITIONS_MODULE_ENV, __name__)
    COMMAND_CALLS.clear()
    assert cli.main(["cards-report", "--month", "2024-01"]) == 0
    assert COMMAND_CALLS == [["--month", "2024-01"]]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_framework_imports_no_domain_so_a_new_domain_changes_nothing_in_it() -> None:
    domain_packages = {"assets", "sensors", "resources", "definitions"}
    offending = {
        str(path.relative_to(ROOT)): sorted(m for m in _imported_modules(path) if m.split(".")[0] in domain_packages)
        for path in sorted((ROOT / "batch_platform").rglob("*.py"))
    }
    assert {path: modules for path, modules in offending.items() if modules} == {}


# -- collisions ------------------------------------------------------------------------------------------------------


def _build(*domains: Domain) -> dg.Definitions:
    return Platform(domains=domains, shared_resources=resources_for, environment=lambda: "LOCAL").build_definitions()


def test_two_domains_declaring_the_same_asset_key_are_refused_naming_both() -> None:
    impostor = Domain(name="impostor", assets=[dg.AssetSpec(["core", "loans"])])
    with pytest.raises(
        DomainCollisionError, match=r"asset key 'core/loans' is declared by domains 'lending' and 'impostor'"
    ):
        _build(lending, impostor)


def test_two_domains_declaring_the_same_lake_table_are_refused_naming_both() -> None:
    copy = Domain(name="copycat", lake_tables=[CARD_BALANCES])
    with pytest.raises(DomainCollisionError, match=r"lake table 'core.card_balances' .* 'cards' and 'copycat'"):
        _build(cards, copy)


def test_two_domains_whose_groups_meet_are_refused_naming_both() -> None:
    a = Domain(name="a", assets=[dg.AssetSpec("x", group_name="b_c")])  # a_b_c
    a_b = Domain(name="a_b", assets=[dg.AssetSpec("y", group_name="c")])  # a_b_c too
    with pytest.raises(DomainCollisionError, match=r"group 'a_b_c' is declared by domains 'a' and 'a_b'"):
        _build(a, a_b)


def test_two_domains_sharing_a_pool_are_refused_naming_both() -> None:
    @dg.asset(pool=domain_pool("cards", "settlement"))
    def borrowed() -> None: ...

    with pytest.raises(
        DomainCollisionError, match=r"pool 'cards-settlement' is declared by domains 'cards' and 'thief'"
    ):
        _build(cards, Domain(name="thief", assets=[borrowed]))


def test_two_domains_declaring_the_same_command_are_refused_naming_both() -> None:
    other = Domain(name="other", commands={"simulate": cards_report})
    with pytest.raises(DomainCollisionError, match=r"command 'simulate' is declared by domains 'lending' and 'other'"):
        _build(lending, other)
    with pytest.raises(DomainCollisionError, match=r"command 'simulate' is declared by domains 'lending' and 'other'"):
        Platform(domains=[lending, other], shared_resources=resources_for, environment=lambda: "LOCAL").commands()


def test_a_domain_cannot_take_a_command_of_the_platform() -> None:
    with pytest.raises(DomainCollisionError, match=r"'greedy'.*\['backfill'\]"):
        Domain(name="greedy", commands={"backfill": cards_report})


def test_a_resource_key_bound_to_different_values_is_refused_naming_both() -> None:
    other_landing = Domain(
        name="other",
        resources={"landing": lending.resources_for("LOCAL")["landing"].model_copy(update={"uri": "/elsewhere"})},
    )
    with pytest.raises(DomainCollisionError, match=r"resource key 'landing' .* 'lending' and domain 'other'"):
        _build(lending, other_landing)
    # The same value from two domains is one binding, not a collision.
    same_landing = Domain(name="same", resources=lending.resources_for)
    assert "landing" in (_build(lending, same_landing).resources or {})


def test_a_domain_writing_a_table_it_does_not_maintain_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'forgetful'.*\['core.card_balances'\]"):
        Domain(name="forgetful", assets=[card_balances])


def test_a_deadline_for_a_layer_the_domain_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'cards2'.*deadline_hours names layers with no asset: \['reporting'\]"):
        Domain(name="cards2", assets=[dg.AssetSpec("z", group_name="core")], deadline_hours={"reporting": 1.0})
