"""The landing zone: versioned daily drops of Parquet files, each sealed by a manifest written last.

Layout, relative to the landing root::

    <DATASET_VERSION>/business_date=YYYY-MM-DD/v<N>/<dataset>.parquet
    <DATASET_VERSION>/business_date=YYYY-MM-DD/v<N>/_manifest.json

A drop is complete when its manifest exists; a version, once complete, is never rewritten (a restatement is the
next version). The zone is a ``pyarrow.fs.FileSystem`` plus a root path, so a local folder and an S3 prefix
(``s3://bucket/prefix``) take the same code path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field

from batch_platform.listing import LocalObjects, ObjectStore, S3Objects
from batch_platform.settings import data_dir

DATASET_VERSION = "pos-lending-v1"
MANIFEST_NAME = "_manifest.json"
_VERSION_FOLDER = re.compile(r"^v([1-9][0-9]*)$")


class LandingZone:
    """Bytes stored under keys relative to a root on a pyarrow filesystem (local folder or S3 prefix)."""

    def __init__(self, filesystem: pafs.FileSystem, root: str) -> None:
        self.filesystem = filesystem
        self.root = root.rstrip("/")

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> LandingZone:
        return cls(pafs.LocalFileSystem(), str(Path(path).expanduser().resolve()))

    @classmethod
    def from_uri(cls, uri: str, *, s3_endpoint: str | None = None, region: str | None = None) -> LandingZone:
        """``s3://bucket/prefix`` (or any URI pyarrow knows), else a local path.

        For S3, an endpoint override or region (the platform's S3 settings) is applied; without them pyarrow uses
        AWS's endpoint and asks the bucket for its region.
        """
        if "://" not in uri:
            return cls.local(uri)
        if uri.startswith("s3://") and (s3_endpoint or region):
            s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint or None, region=region or None)
            return cls(s3, uri[len("s3://") :])
        filesystem, root = pafs.FileSystem.from_uri(uri)
        return cls(filesystem, root)

    @property
    def _is_local(self) -> bool:
        return self.filesystem.type_name == "local"

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        self.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if not self._is_local:
            # An object store PUT is atomic already; a rename there would be a copy.
            with self.filesystem.open_output_stream(target) as out:
                out.write(data)
            return
        # Locally, write aside and rename so a reader never sees half a file.
        staging = f"{target}.{uuid.uuid4().hex}.partial"
        with self.filesystem.open_output_stream(staging) as out:
            out.write(data)
        self.filesystem.move(staging, target)

    def read_bytes(self, key: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(key)) as stream:
            return bytes(stream.read())

    def exists(self, key: str) -> bool:
        return self.filesystem.get_file_info(self.path(key)).type != pafs.FileType.NotFound

    def list_names(self, key: str) -> list[str]:
        """Names directly under a folder key, sorted; empty when it does not exist."""
        selector = pafs.FileSelector(self.path(key), allow_not_found=True)
        return sorted(info.base_name for info in self.filesystem.get_file_info(selector))


def default_landing_dir() -> Path:
    """The local landing root when none is configured: ``<data dir>/landing``, read when called."""
    return data_dir() / "landing"


class LandingZoneResource(dg.ConfigurableResource):
    """The landing zone: a local folder or ``s3://bucket/prefix``, the one configuration of where drops land.

    The raw load reads drops through ``zone()`` (a pyarrow filesystem); the sensors list it through
    ``object_store()`` (boto3 for S3, pages of keys with sizes and modification times). Both use the same root,
    endpoint and region.

    Unset, it is ``<data dir>/landing``, where the simulator's ``main`` writes by default; the data dir is read when
    a run asks for the zone, never at import, so a code server needs no local folder.
    """

    uri: str | None = Field(
        default=None, description="landing root: a folder or s3://bucket/prefix; default <data dir>/landing"
    )
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint override for an s3:// root; empty: AWS's")
    region: str | None = Field(default=None, description="AWS region of an s3:// root's bucket; empty: asked from S3")

    def location(self) -> str:
        """The landing root as configured, or the default folder: for messages naming where a drop was sought."""
        return self.uri or str(default_landing_dir())

    def zone(self) -> LandingZone:
        if not self.uri:
            return LandingZone.local(default_landing_dir())
        return LandingZone.from_uri(self.uri, s3_endpoint=self.s3_endpoint, region=self.region)

    def s3_client(self) -> Any:
        """A boto3 S3 client with this zone's endpoint and region (empty: AWS's, and the default chain's region)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.s3_endpoint or None,
            region_name=self.region or None,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def object_store(self, page_size: int = 1000) -> ObjectStore:
        """The zone as the sensors list it; a local folder never creates an S3 client."""
        location = self.location()
        if location.startswith("s3://"):
            return S3Objects.from_uri(self.s3_client(), location, page_size=page_size)
        return LocalObjects(location)


@dataclass(frozen=True)
class FileInfo:
    dataset: str
    key: str  # relative to the landing root
    rows: int
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class DropInfo:
    business_date: date
    version: int
    prefix: str  # the drop folder, relative to the landing root
    covers_from: date  # first calendar day whose events the drop carries
    covers_to: date  # = business_date
    files: tuple[FileInfo, ...]
    # The producer's word that a dataset's volume is unusual on purpose (a genuinely empty day): dataset -> reason,
    # from the manifest's "expected_anomalies"; the raw load's volume check lets those datasets through.
    expected_anomalies: tuple[tuple[str, str], ...] = ()

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}/{MANIFEST_NAME}"

    def rows(self, dataset: str) -> int:
        return next(f.rows for f in self.files if f.dataset == dataset)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> DropInfo:
        business_date = date.fromisoformat(manifest["business_date"])
        version = int(manifest["version"])
        prefix = drop_prefix(business_date, version)
        return cls(
            business_date=business_date,
            version=version,
            prefix=prefix,
            covers_from=date.fromisoformat(manifest["covers"]["from"]),
            covers_to=date.fromisoformat(manifest["covers"]["to"]),
            files=tuple(
                FileInfo(f["dataset"], f"{prefix}/{f['path']}", int(f["rows"]), f["sha256"], int(f["bytes"]))
                for f in manifest["files"]
            ),
            expected_anomalies=_expected_anomalies(manifest.get("expected_anomalies") or {}),
        )


def _expected_anomalies(declared: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(declared, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in declared.items()
    ):
        raise TypeError(f"expected_anomalies must map dataset names to non-empty reasons, not {declared!r}")
    return tuple(sorted(declared.items()))


def drop_prefix(business_date: date, version: int) -> str:
    return f"{DATASET_VERSION}/business_date={business_date.isoformat()}/v{version}"


def parquet_bytes(table: pa.Table) -> bytes:
    """Parquet bytes that depend only on the table (and the pyarrow version, which is in the footer)."""
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        row_group_size=1 << 20,
        write_statistics=True,
        store_schema=True,
    )
    return sink.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_drop(
    landing: LandingZone,
    business_date: date,
    version: int,
    covers_from: date,
    tables: Mapping[str, pa.Table],
    extra: Mapping[str, Any] | None = None,
) -> DropInfo:
    """Write one file per dataset, then the manifest; refuses to touch a version that is already complete."""
    prefix = drop_prefix(business_date, version)
    if landing.exists(f"{prefix}/{MANIFEST_NAME}"):
        raise FileExistsError(f"drop {prefix} is complete and immutable; write a new version instead")
    entries = []
    for dataset, table in tables.items():
        data = parquet_bytes(table)
        name = f"{dataset}.parquet"
        landing.write_bytes(f"{prefix}/{name}", data)
        entries.append(
            {"dataset": dataset, "path": name, "rows": table.num_rows, "sha256": sha256_hex(data), "bytes": len(data)}
        )
    manifest: dict[str, Any] = {
        "dataset_version": DATASET_VERSION,
        "business_date": business_date.isoformat(),
        "version": version,
        "supersedes": version - 1 if version > 1 else None,
        "covers": {"from": covers_from.isoformat(), "to": business_date.isoformat()},
        "files": entries,
        **(extra or {}),
    }
    landing.write_bytes(f"{prefix}/{MANIFEST_NAME}", manifest_bytes(manifest))
    return DropInfo.from_manifest(manifest)


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def read_manifest(landing: LandingZone, business_date: date, version: int) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(landing.read_bytes(f"{drop_prefix(business_date, version)}/{MANIFEST_NAME}"))
    return manifest


def complete_versions(landing: LandingZone, business_date: date) -> list[int]:
    """Versions of a business date's drop that have a manifest, ascending."""
    folder = f"{DATASET_VERSION}/business_date={business_date.isoformat()}"
    versions = [int(m.group(1)) for name in landing.list_names(folder) if (m := _VERSION_FOLDER.match(name))]
    return sorted(v for v in versions if landing.exists(f"{drop_prefix(business_date, v)}/{MANIFEST_NAME}"))


def read_drop(
    landing: LandingZone, business_date: date, version: int | None = None, *, verify: bool = True
) -> dict[str, pa.Table]:
    """The tables of a complete drop (the latest version unless given), checked against the manifest."""
    if version is None:
        versions = complete_versions(landing, business_date)
        if not versions:
            raise FileNotFoundError(f"no complete drop for business date {business_date}")
        version = versions[-1]
    info = DropInfo.from_manifest(read_manifest(landing, business_date, version))
    tables = {}
    for entry in info.files:
        data = landing.read_bytes(entry.key)
        if verify and sha256_hex(data) != entry.sha256:
            raise ValueError(f"{entry.key}: checksum does not match the manifest")
        table = pq.read_table(pa.BufferReader(data))
        if verify and table.num_rows != entry.rows:
            raise ValueError(f"{entry.key}: {table.num_rows} rows, the manifest says {entry.rows}")
        tables[entry.dataset] = table
    return tables
