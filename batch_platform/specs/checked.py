"""Checked specs: the result of checking a folder of specs, kept beside it and reused while nothing it depends on
changed, as Python keeps bytecode beside a module (and dbt a manifest beside a project).

Checking a spec parses its YAML and its SQL (sqlglot) and checks both against the catalog and the other specs:
most of a large location's load. What the check produces for each file (the validated spec, its table, its SQL
template) is stored under ``<folder>/.checked_specs/`` with a key of everything the check read:

- every spec file's path and bytes (one edited, added or removed file changes the key: the whole folder is checked
  again, since specs read each other's tables);
- the catalog: each table's identifier, schema and partition column, each partitions definition by name;
- the compute profiles, the loader's own source and the versions of the libraries that parse and build.

A load whose key matches builds the datasets from the stored checks without parsing anything; any other load checks
everything, and only a folder with no problem is stored (problems are reported every time). The store is written
atomically and only where the folder is writable; a store that cannot be read is ignored. Build images run
``batch-platform specs check`` once, as they compile bytecode, so that a code location starts from checked specs.
``BATCH_PLATFORM_CHECKED_SPECS=off`` turns the store off.

The store is a pickle: it is read only from inside the spec folder, which whoever can write can also write the
location's Python code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from batch_platform.lake import LakeTable
from batch_platform.specs.catalog import SpecCatalog
from batch_platform.specs.model import DatasetSpec

STORE_FOLDER = ".checked_specs"
STORE_FILE = "checked.pickle"
SWITCH = "BATCH_PLATFORM_CHECKED_SPECS"
FORMAT = 1
# The code whose behaviour decides what a check concludes: a change to any of it invalidates every store.
_LOADER_SOURCES = (
    "specs",
    "inputs.py",
    "compute.py",
    "audit.py",
    "datasets.py",
    "lake/tables.py",
    "lake/spark_io.py",
)
_LIBRARIES = ("sqlglot", "pydantic", "pyarrow", "pyyaml", "dagster", "pyspark")


@dataclass(frozen=True)
class CheckedSpec:
    """What checking one spec file produced: enough to build its dataset without parsing anything again."""

    shown: str  # the file as messages and metadata name it
    spec: DatasetSpec
    table: LakeTable
    template: str  # the SQL with each input as a ``{name}`` placeholder


def enabled() -> bool:
    return os.environ.get(SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


def store_path(folder: Path) -> Path:
    return folder / STORE_FOLDER / STORE_FILE


_loader_digest: str | None = None


def _loader() -> str:
    """The platform's loader source and the parsing libraries' versions, hashed once per process."""
    global _loader_digest
    if _loader_digest is None:
        digest = hashlib.sha256(f"format {FORMAT} python {sys.version}".encode())
        package = Path(__file__).resolve().parents[1]
        for name in _LOADER_SOURCES:
            root = package / name
            for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
                digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
        for library in _LIBRARIES:
            try:
                digest.update(f"{library}=={metadata.version(library)}\0".encode())
            except metadata.PackageNotFoundError:
                digest.update(f"{library} missing\0".encode())
        _loader_digest = digest.hexdigest()
    return _loader_digest


def _catalog(catalog: SpecCatalog, profiles: Sequence[str]) -> bytes:
    parts = [
        f"{identifier}|{table.partition_column}|{table.schema.to_string(show_schema_metadata=False)}"
        for identifier, table in sorted(catalog.tables.items())
    ]
    parts += [f"partitions {name}={type(p).__name__}:{p}" for name, p in sorted(catalog.partitions.items())]
    parts.append("profiles " + ",".join(sorted(profiles)))
    return "\n".join(parts).encode()


def key(contents: Sequence[tuple[str, bytes]], catalog: SpecCatalog, profiles: Sequence[str]) -> str:
    """The key of a check: the loader, the catalog and profiles, and every file by its path and bytes."""
    digest = hashlib.sha256(_loader().encode() + b"\0" + _catalog(catalog, profiles) + b"\0")
    for shown, data in contents:
        digest.update(shown.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def read(folder: Path, wanted: str) -> list[CheckedSpec] | None:
    """The stored checks of ``folder`` if they were made under key ``wanted``; None otherwise."""
    path = store_path(folder)
    try:
        with path.open("rb") as f:
            stored_key, stored = pickle.load(f)  # written by this module, inside the spec folder
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
        return None
    if stored_key != wanted or not isinstance(stored, list):
        return None
    return stored


def write(folder: Path, made_under: str, checked: Sequence[CheckedSpec]) -> bool:
    """Store the checks of ``folder`` (atomically: a reader sees the old store or the new one); False where the
    folder cannot be written (a read-only image), which only costs the next load a full check."""
    target = store_path(folder)
    try:
        target.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    except OSError:
        return False
    try:
        with os.fdopen(handle, "wb") as f:
            pickle.dump((made_under, list(checked)), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        return False
    return True
