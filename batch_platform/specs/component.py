"""The Dagster Component: ONE instance loads MANY spec files from a folder.

Component loading grows quadratically with the number of component instances (docs/benchmarks.md), so a spec is
not a component instance; a folder of specs is. Declare it in a ``defs.yaml``::

    type: batch_platform.specs.LakeDatasetSpecs
    attributes:
      path: specs                                    # relative to this defs.yaml's folder
      catalog: assets.lending.dataset_specs:LENDING_SPEC_CATALOG
      name: lending_specs

or in Python, for a code location that is not a components project: ``dg.build_defs_for_component(
LakeDatasetSpecs(path=..., catalog=...))``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from batch_platform.datasets import LakeDataset
from batch_platform.specs.assets import DEFAULT_MAX_PER_ASSET, spec_assets
from batch_platform.specs.catalog import resolve_catalog
from batch_platform.specs.load import load_specs


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while specs become assets.

    That builds about a million small objects (specs, tables, Dagster definitions) that all live as long as the
    code location; each automatic collection meanwhile walks all of them and frees nothing, which was a third of a
    5,000-spec load (docs/benchmarks.md). Reference counting still frees what dies; the collector resumes after.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class LakeDatasetSpecs(dg.Component, dg.Resolvable, dg.Model):
    """Lake datasets from a folder of YAML spec files (format: batch_platform.specs.model)."""

    path: str = Field(description="folder of spec files (*.yaml), relative to the defs.yaml's folder or absolute")
    catalog: str = Field(description="'module:attribute' of the domain's SpecCatalog (tables and partitions)")
    name: str = Field(default="lake_specs", description="prefix of the multi-assets' op names (unique per location)")
    max_datasets_per_asset: int = Field(default=DEFAULT_MAX_PER_ASSET, ge=1)

    def folder(self, context: dg.ComponentLoadContext | None = None) -> Path:
        path = Path(self.path)
        return path if path.is_absolute() or context is None else context.path / path

    def load_datasets(self, context: dg.ComponentLoadContext | None = None) -> list[LakeDataset]:
        """The folder's specs as LakeDatasets; a SpecError naming file, field and problem for every wrong one."""
        return load_specs(self.folder(context), resolve_catalog(self.catalog))

    def build_assets(
        self, context: dg.ComponentLoadContext | None = None, datasets: Sequence[LakeDataset] | None = None
    ) -> list[dg.AssetsDefinition]:
        with collector_paused():
            loaded = self.load_datasets(context) if datasets is None else datasets
            return spec_assets(self.name, loaded, self.max_datasets_per_asset)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(assets=self.build_assets(context))
