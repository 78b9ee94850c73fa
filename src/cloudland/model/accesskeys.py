"""How S3 access keys live in the store: Secrets in one namespace, labelled, named
after the key id. The CLI writes them (`cloudland keys`), the S3 server reads them."""

from __future__ import annotations

KEYS_NAMESPACE = "cloudland-system"
KEY_LABEL = "cloudland.io/access-key"
KEY_TYPE = "cloudland.io/access-key"
_PREFIX = "s3-"


def key_secret_name(access_key: str) -> str:
    """The Secret holding an access key: 's3-' and the key id, lower-cased (a DNS name)."""
    return _PREFIX + access_key.lower()


def key_id_of(secret_name: str) -> str:
    """The access key id a Secret named by `key_secret_name` holds (ids are upper-case)."""
    return secret_name.removeprefix(_PREFIX).upper()
