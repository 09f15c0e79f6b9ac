"""Spec errors: every problem names the file, the field path inside it and what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# At most this many problems are spelled out; the count says how many more there are.
MAX_REPORTED = 50


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong in one spec file: ``field`` is a dotted path such as ``inputs.status.table``."""

    file: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(ValueError):
    """Dataset specs that cannot be loaded; ``problems`` lists every one found, first the first file's."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = list(problems)
        shown = [str(p) for p in self.problems[:MAX_REPORTED]]
        more = len(self.problems) - len(shown)
        if len(self.problems) == 1:
            text = shown[0]
        else:
            text = f"{len(self.problems)} problems in dataset specs:\n  " + "\n  ".join(shown)
        super().__init__(text + (f"\n  ... and {more} more" if more > 0 else ""))


def dotted(location: Sequence[Any]) -> str:
    """``("inputs", "status", "table")`` -> ``inputs.status.table``; list positions as ``audits.rows_satisfy[0]``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def line_of(path: Path, location: Sequence[Any]) -> int | None:
    """The 1-based line of a field in a YAML file (the deepest key of ``location`` that exists), for messages only:
    composing the file again costs nothing beside an error."""
    try:
        node: Any = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
