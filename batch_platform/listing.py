"""Listing a folder or an S3 prefix for what arrived since the last look, for sensors that watch a landing zone.

A sensor keeps a ``ListingCursor`` (a settled modification time plus the keys of recent objects already handled);
``ListingCursor.select_new`` keeps only objects it has not handled, so a tick reads (opens, parses) only what is
new. Listing itself still walks the whole prefix: neither a
folder nor an S3 prefix can be listed by modification time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class ListedObject:
    key: str  # relative to the store's root, "/"-separated
    modified: float  # epoch seconds
    size: int


class ObjectStore(Protocol):
    """A root (local folder or S3 prefix) whose objects can be listed and read by key."""

    def location(self) -> str: ...

    def list(self, prefix: str = "") -> Iterator[ListedObject]: ...

    def read(self, key: str) -> bytes: ...


class LocalObjects:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def location(self) -> str:
        return str(self.root)

    def list(self, prefix: str = "") -> Iterator[ListedObject]:
        start = self.root / prefix if prefix else self.root
        if not start.is_dir():
            return
        stack = [start]
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        stat = entry.stat()
                        key = Path(entry.path).relative_to(self.root).as_posix()
                        yield ListedObject(key, stat.st_mtime, stat.st_size)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


class S3Objects:
    """An S3 prefix listed with ``list_objects_v2`` pages (1,000 keys each), through a boto3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", page_size: int = 1000) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.page_size = page_size

    @classmethod
    def from_uri(cls, client: Any, uri: str, page_size: int = 1000) -> S3Objects:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return cls(client, bucket, prefix, page_size)

    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str = "") -> Iterator[ListedObject]:
        full_prefix = self._full(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=full_prefix, PaginationConfig={"PageSize": self.page_size}
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield ListedObject(item["Key"][strip:], item["LastModified"].timestamp(), int(item["Size"]))

    def read(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()


@dataclass(frozen=True)
class ListingCursor:
    """What a watcher has seen: everything modified up to ``settled_before``, plus the keys in ``recent``.

    Modification times are not arrival times: a local file renamed into place keeps the time it was written, and
    S3's LastModified of a multipart upload is when it began. So the cursor never assumes that nothing older than
    the newest object it saw can still appear: it settles only what is older than ``settle_seconds`` before the
    tick, and remembers the keys of the recent objects it has already handled.
    """

    settled_before: float = 0.0
    recent: frozenset[str] = field(default_factory=frozenset)

    def is_new(self, obj: ListedObject) -> bool:
        return obj.modified > self.settled_before and obj.key not in self.recent

    def select_new(self, objects: Iterable[ListedObject]) -> list[ListedObject]:
        return [o for o in objects if self.is_new(o)]

    def advanced(self, listed: Iterable[ListedObject], now: float, settle_seconds: float) -> ListingCursor:
        """The cursor after a tick at ``now`` that handled every object of ``listed`` (a full listing)."""
        settled = max(self.settled_before, now - settle_seconds)
        return ListingCursor(settled, frozenset(o.key for o in listed if o.modified > settled))

    def to_json(self) -> dict[str, Any]:
        return {"settled_before": self.settled_before, "recent": sorted(self.recent)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ListingCursor:
        if not data:
            return cls()
        return cls(float(data["settled_before"]), frozenset(data.get("recent", [])))


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
