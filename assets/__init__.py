"""Domain assets. Each module exposes a list of asset definitions; the composition root collects them."""

from assets.platform_demo import demo_assets

all_assets = [*demo_assets]
