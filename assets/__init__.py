"""Domain assets. Each module exposes a list of asset definitions; the composition root collects them."""

from assets.lending.core import core_assets
from assets.lending.dataset_specs import lending_spec_tables
from assets.lending.raw import raw_assets
from assets.lending.reporting import reporting_assets
from assets.lending.tables import (
    CORE_TABLES,
    RAW_QUARANTINE,
    RAW_TABLES,
    REPORTING_MERCHANT_PERFORMANCE,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from assets.platform_demo import CARD_TRANSACTIONS, DAILY_TRANSACTION_TOTALS, demo_assets

lending_assets = [*raw_assets, *core_assets, *reporting_assets]
all_assets = [*demo_assets, *lending_assets]
# Every lake table an asset writes, for table maintenance (tests/test_definitions.py checks none is missing).
all_lake_tables = [
    CARD_TRANSACTIONS,
    DAILY_TRANSACTION_TOTALS,
    *RAW_TABLES.values(),
    RAW_QUARANTINE,
    *CORE_TABLES,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
    REPORTING_MERCHANT_PERFORMANCE,
    *lending_spec_tables,
]
