"""Self-serve dataset specs: a YAML file per daily Spark SQL dataset, loaded by one Dagster Component.

Modules, one concern each: ``model`` (the file format), ``columns`` (type names), ``sql`` (what the SQL reads and
outputs), ``catalog`` (what a domain lends its specs), ``load`` (files -> checked LakeDatasets), ``assets``
(datasets -> multi-assets), ``component`` (the Dagster Component), ``errors`` (file: field: what is wrong).
"""

from batch_platform.specs.assets import spec_assets
from batch_platform.specs.catalog import SpecCatalog
from batch_platform.specs.component import LakeDatasetSpecs
from batch_platform.specs.errors import SpecError, SpecProblem
from batch_platform.specs.load import load_specs

__all__ = ["LakeDatasetSpecs", "SpecCatalog", "SpecError", "SpecProblem", "load_specs", "spec_assets"]
