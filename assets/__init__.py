"""Domain assets. Each module exposes a list of asset definitions; the composition root collects them."""

from assets.lending.core import core_assets
from assets.lending.raw import raw_assets
from assets.lending.reporting import reporting_assets
from assets.platform_demo import demo_assets

lending_assets = [*raw_assets, *core_assets, *reporting_assets]
all_assets = [*demo_assets, *lending_assets]
