"""Object metadata, conditions and the small value types every kind shares."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

API_VERSION = "cloudland/v1"
DEFAULT_NAMESPACE = "default"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")


def check_dns_label(value: str) -> str:
    """A DNS-1123 label: what Kubernetes requires of names and namespaces."""
    if len(value) > 63:
        raise ValueError(f"'{value[:20]}...' is {len(value)} characters; names are at most 63")
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"'{value}' is not a valid name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (DNS-1123 label)"
        )
    return value


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not all(_DNS_LABEL.match(p) for p in prefix.split("."))):
        raise ValueError(f"label key '{key}': prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"label key '{key}': name must be 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _check_label_key(key)
        if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            raise ValueError(
                f"label '{key}': value '{value}' must be at most 63 letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit"
            )
    return labels


def check_duration(value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f"'{value}' is not a duration; write it like 500ms, 30s, 5m or 1h30m")
    return value


def parse_duration(value: str) -> float:
    """'1h30m' -> 5400.0 seconds."""
    total = 0.0
    for number, _, unit in re.findall(r"(\d+(\.\d+)?)(ms|s|m|h)", value):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


Name = Annotated[str, AfterValidator(check_dns_label)]
Labels = Annotated[dict[str, str], AfterValidator(check_labels)]
Duration = Annotated[str, AfterValidator(check_duration)]


class Strict(BaseModel):
    """Base for user-written parts: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectMeta(Strict):
    name: Name
    namespace: Name = DEFAULT_NAMESPACE
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    # Server-owned; accepted on input (resourceVersion for optimistic concurrency)
    # and overwritten by the store.
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class Status(BaseModel):
    """Written only by controllers; later issues add kind-specific fields."""

    model_config = ConfigDict(extra="allow")
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
