"""Where the platform keeps its local state. Read when asked, never at import time."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "BATCH_PLATFORM_DATA_DIR"


def data_dir(configured: str | None = None) -> Path:
    """The local data folder: the configured one, else $BATCH_PLATFORM_DATA_DIR, else ./.data."""
    raw = configured or os.environ.get(DATA_DIR_ENV) or ".data"
    return Path(raw).expanduser().resolve()
