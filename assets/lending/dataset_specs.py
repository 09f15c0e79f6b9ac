"""The lending domain's dataset specs: the YAML files in ``specs/`` and the catalog they are checked against.

A team adds a dataset by adding a file to ``specs/`` (README: "Add a dataset with a spec"); nothing here changes.
"""

from pathlib import Path

from assets.lending.tables import (
    CORE_TABLES,
    LENDING_PARTITIONS,
    RAW_QUARANTINE,
    RAW_TABLES,
    REPORTING_MERCHANT_PERFORMANCE,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from batch_platform.specs import LakeDatasetSpecs, SpecCatalog

SPECS_FOLDER = Path(__file__).parent / "specs"

# What specs may read and name: every table of the domain (and each other's tables) and the domain's partitions. A
# spec writing a table declared here (reporting.merchant_performance) must declare exactly its schema.
LENDING_SPEC_CATALOG = SpecCatalog.of(
    [
        *RAW_TABLES.values(),
        RAW_QUARANTINE,
        *CORE_TABLES,
        REPORTING_PORTFOLIO_DAILY,
        REPORTING_VINTAGE_CURVES,
        REPORTING_MERCHANT_PERFORMANCE,
    ],
    {"lending_business_days": LENDING_PARTITIONS},
)

LENDING_SPECS = LakeDatasetSpecs(
    path=str(SPECS_FOLDER), catalog="assets.lending.dataset_specs:LENDING_SPEC_CATALOG", name="lending_specs"
)
LENDING_SPEC_DATASETS = LENDING_SPECS.load_datasets()
lending_spec_assets = LENDING_SPECS.build_assets(datasets=LENDING_SPEC_DATASETS)
# Tables that only a spec declares, for table maintenance (the others are in tables.py already).
lending_spec_tables = [d.table for d in LENDING_SPEC_DATASETS if d.table.identifier not in LENDING_SPEC_CATALOG.tables]
