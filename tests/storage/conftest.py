"""One real CloudLand per test module with an access key, and boto3 clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.conftest import Running, start_cloudland


@pytest.fixture(scope="module")
def s3_cloudland(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_cloudland(tmp_path_factory.mktemp("s3") / "home")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def access_key(s3_cloudland: Running) -> tuple[str, str]:
    result = s3_cloudland.cli("keys", "create", "-o", "json")
    assert result.exit_code == 0, result.output
    key = result.json()
    return key["accessKeyId"], key["secretAccessKey"]


def client(running: Running, key: tuple[str, str] | None, **config: Any) -> Any:
    """A boto3 S3 client for this CloudLand (unsigned when `key` is None)."""
    from botocore import UNSIGNED

    settings = Config(signature_version=UNSIGNED if key is None else "s3v4",
                      retries={"max_attempts": 1}, **config)
    return boto3.client(
        "s3", endpoint_url=str(running.state["s3"]), region_name="us-east-1",
        aws_access_key_id=key[0] if key else "", aws_secret_access_key=key[1] if key else "",
        config=settings)


@pytest.fixture(scope="module")
def s3(s3_cloudland: Running, access_key: tuple[str, str]) -> Any:
    return client(s3_cloudland, access_key)


def home(running: Running) -> Path:
    return running.home


@pytest.fixture(scope="module")
def plain(s3_cloudland: Running, access_key: tuple[str, str]) -> Any:
    """A client that sends no checksum unless told to (boto3 sends CRC32 by default)."""
    return client(s3_cloudland, access_key, request_checksum_calculation="when_required")
