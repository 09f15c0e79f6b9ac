"""What a domain lends its specs: the lake tables they may read and the partitions they may name.

The framework knows no domain; a domain builds one ``SpecCatalog`` and names it in the component's ``catalog``
attribute as ``module:attribute`` (the form a YAML attribute can carry).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from batch_platform.lake import LakeTable


@dataclass(frozen=True)
class SpecCatalog:
    tables: Mapping[str, LakeTable]  # by identifier (namespace.name)
    partitions: Mapping[str, dg.PartitionsDefinition]  # by the name specs use
    # The Dagster group of a spec that names none; by default the table's namespace (as for LakeDatasets).
    group_of: Callable[[LakeTable], str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, tables: list[LakeTable], partitions: Mapping[str, dg.PartitionsDefinition]) -> SpecCatalog:
        return cls({t.identifier: t for t in tables}, dict(partitions))


def resolve_catalog(reference: str) -> SpecCatalog:
    """``"assets.lending.dataset_specs:LENDING_SPEC_CATALOG"`` -> that object."""
    module, _, attribute = reference.partition(":")
    if not attribute:
        raise ValueError(f"catalog {reference!r}: expected 'module:attribute'")
    catalog = getattr(importlib.import_module(module), attribute)
    if not isinstance(catalog, SpecCatalog):
        raise TypeError(f"catalog {reference!r} is a {type(catalog).__name__}, not a SpecCatalog")
    return catalog
