"""Access keys as the S3 server sees them: Secrets in the store, followed as they change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudland.api.service import ResourceService
from cloudland.daemon.storage import AccessKeys
from cloudland.model.accesskeys import KEY_LABEL, KEYS_NAMESPACE, key_secret_name
from cloudland.storage.sigv4 import Credentials, signing_key
from cloudland.store import Store

KEY_ID, SECRET = "CLTESTKEY00000000001", "s" * 40


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ResourceService]:
    store = Store(tmp_path / "store.db")
    yield ResourceService(store)
    store.close()


def key_secret(labelled: bool = True) -> dict[str, object]:
    return {"apiVersion": "cloudland/v1", "kind": "Secret",
            "metadata": {"name": key_secret_name(KEY_ID), "namespace": KEYS_NAMESPACE,
                         "labels": {KEY_LABEL: "true"} if labelled else {}},
            "stringData": {"accessKeyId": KEY_ID, "secretAccessKey": SECRET}}


def test_a_deleted_key_is_forgotten_with_its_day_keys(service: ResourceService) -> None:
    keys = AccessKeys(service)
    keys.start()
    try:
        service.create(key_secret())
        assert keys(KEY_ID) == Credentials(KEY_ID, SECRET)
        signing_key(SECRET, "20261207", "us-east-1")  # what verifying a request caches
        assert signing_key.cache_info().currsize > 0
        service.delete("Secret", KEYS_NAMESPACE, key_secret_name(KEY_ID))
        assert keys(KEY_ID) is None
        assert signing_key.cache_info().currsize == 0  # nothing derived from it is kept
    finally:
        keys.stop()


def test_only_labelled_secrets_are_keys(service: ResourceService) -> None:
    keys = AccessKeys(service)
    keys.start()
    try:
        service.create(key_secret(labelled=False))
        assert keys(KEY_ID) is None
        assert keys("") is None and keys("X" * 200) is None
    finally:
        keys.stop()
