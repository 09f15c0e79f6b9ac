"""Writing a benchmark's results into docs/benchmarks.md: each benchmark owns the section between its markers."""

from __future__ import annotations

import re
from pathlib import Path


def update_section(path: Path, section: str, start_marker: str, end_marker: str) -> None:
    """Replace the section between the markers (``section`` includes them), or append it; the rest is kept."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start_marker) + r".*?" + re.escape(end_marker), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
