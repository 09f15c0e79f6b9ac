"""Tokenizing personal data: a keyed HMAC, so tokens join across tables but cannot be reversed or guessed."""

from __future__ import annotations

import hashlib
import hmac

import dagster as dg
import pyarrow as pa
from pydantic import Field
from pyspark.sql import Column
from pyspark.sql import functions as F

MIN_KEY_BYTES = 32


class PiiTokenizer(dg.ConfigurableResource):
    """HMAC-SHA256 tokens of PII values. The key comes from a secret (``dg.EnvVar``), never from code.

    A plain hash of an email or a national id can be reversed by hashing every candidate; a keyed HMAC cannot
    without the key. Values are normalized (trimmed, lower-cased) first so the same person gets the same token.
    """

    key: str = Field(description="secret HMAC key, at least 32 characters; set it from an environment variable")

    def _key_bytes(self) -> bytes:
        key = self.key.encode()
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the PII HMAC key must be at least {MIN_KEY_BYTES} bytes; got {len(key)}")
        return key

    def token(self, value: str | None) -> str | None:
        if value is None:
            return None
        digest = hmac.new(self._key_bytes(), value.strip().lower().encode(), hashlib.sha256).hexdigest()
        return f"tok_{digest}"

    def tokenize_arrow(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        return pa.array([self.token(v) for v in values.cast(pa.string()).to_pylist()], pa.string())

    def tokenize_spark(self, column: Column) -> Column:
        """Spark SQL has no HMAC function; a Python UDF also keeps the key out of the logged query plan."""
        key = self._key_bytes()

        @F.udf("string")
        def _token(value: str | None) -> str | None:
            if value is None:
                return None
            return "tok_" + hmac.new(key, value.strip().lower().encode(), hashlib.sha256).hexdigest()

        return _token(column.cast("string"))
