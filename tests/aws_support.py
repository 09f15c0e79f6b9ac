"""AWS for the production-path tests: the moto server of conftest, reached through the default credential chain."""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

REGION = "eu-west-1"


def isolated_aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An emptied moto server and dummy credentials through the environment, cut off from any real AWS setup
    (profiles, web identity, config files, instance metadata)."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)


def new_bucket(moto_endpoint: str, prefix: str = "lake") -> str:
    """A bucket of its own in REGION, named uniquely (a moto server may be shared by a module's tests)."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return bucket
