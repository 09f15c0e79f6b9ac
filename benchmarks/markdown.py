"""Writing a benchmark's results into docs/benchmarks.md: each benchmark owns the section between its markers."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from importlib.metadata import version as package_version
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


def environment(packages: list[str], setting: str = "") -> str:
    """The "Environment:" block a section ends with: date, machine, versions of ``packages``, and the load average."""
    load = os.getloadavg()[0]
    versions = ", ".join([f"Python {platform.python_version()}", *(f"{p} {package_version(p)}" for p in packages)])
    return "\n".join(
        [
            "Environment:",
            "",
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {os.cpu_count()} CPUs, {platform.system()}",
            f"- versions: {versions}{', ' + setting if setting else ''}",
            f"- load: 1-minute load average {load:.1f} at the end, on {os.cpu_count()} CPUs",
        ]
    )
