"""Every kind CloudLand knows: its spec, its names, and how `get` prints it.

The registry `KINDS` is the single list; the store, API, controllers and CLI
all read it rather than naming kinds themselves.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from cloudland.model.meta import Duration, Name, ObjectMeta, Status, Strict, parse_duration
from cloudland.model.regex import check_re2
from cloudland.model.workload import Autoscale, EnvVar, Probe, Strategy, Workload

# ---- Service -------------------------------------------------------------------

# Every Service is reachable in the mesh as NAME.NAMESPACE.svc.cloudland.local.
INTERNAL_DOMAIN = "svc.cloudland.local"


def internal_host(namespace: str, name: str) -> str:
    """The stable in-mesh name of a Service: 'web.default.svc.cloudland.local'."""
    return f"{name}.{namespace}.{INTERNAL_DOMAIN}"


class ServiceSpec(Workload):
    replicas: int = Field(1, ge=0, le=10000)
    port: int | None = Field(None, ge=1, le=65535)
    readinessProbe: Probe | None = None
    livenessProbe: Probe | None = None
    strategy: Strategy = Field(default_factory=Strategy)
    autoscale: Autoscale | None = None
    mtls: Literal["permissive", "strict"] = "permissive"


# ---- Function ------------------------------------------------------------------


class EventTrigger(Strict):
    broker: Name = "default"
    filter: dict[str, str] = Field(default_factory=dict)


class FunctionTriggers(Strict):
    http: bool = True
    events: list[EventTrigger] = Field(default_factory=list)
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)


class FunctionScale(Strict):
    minScale: int = Field(0, ge=0)
    maxScale: int = Field(10, ge=1)
    concurrency: int = Field(10, ge=1)
    scaleToZeroAfter: Duration = "30s"


class FunctionSpec(Strict):
    handler: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    source: str | None = None
    command: list[str] | None = None
    env: list[EnvVar] = Field(default_factory=list)
    runtime: Literal["process", "sandbox", "container"] = "process"
    timeout: Duration = "30s"
    triggers: FunctionTriggers = Field(default_factory=FunctionTriggers)
    scale: FunctionScale = Field(default_factory=FunctionScale)

    @model_validator(mode="after")
    def _entry(self) -> FunctionSpec:
        if (self.handler is None) == (self.command is None):
            raise ValueError("set exactly one of handler ('module:function') or command")
        return self


# ---- Route ---------------------------------------------------------------------


class PathMatch(Strict):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"

    @model_validator(mode="after")
    def _path(self) -> PathMatch:
        if self.type == "RegularExpression":
            check_re2(self.value)
        elif not self.value.startswith("/"):
            raise ValueError(f"path '{self.value}' must start with '/'")
        elif "?" in self.value or "#" in self.value:
            raise ValueError(f"path '{self.value}' must not contain '?' or '#' (match query "
                             "parameters with queryParams)")
        return self


HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class HeaderMatch(Strict):
    name: str = Field(min_length=1, pattern=HEADER_NAME.pattern)
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"

    @model_validator(mode="after")
    def _regex(self) -> HeaderMatch:
        if self.type == "RegularExpression":
            check_re2(self.value)
        return self


class RouteMatch(Strict):
    path: PathMatch = Field(default_factory=PathMatch)
    method: str | None = Field(None, pattern=r"^[A-Z]+$")
    headers: list[HeaderMatch] = Field(default_factory=list)
    queryParams: list[HeaderMatch] = Field(default_factory=list)


class BackendRef(Strict):
    kind: Literal["Service", "Function"] = "Service"
    name: Name
    namespace: Name | None = None
    weight: int = Field(1, ge=0, le=1000)


RetryOn = Literal["5xx", "reset", "connect-failure", "retriable-4xx", "gateway-error"]
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("5xx", "reset", "connect-failure")


class RetryBackoff(Strict):
    """Jittered exponential back-off between attempts (Envoy: retry_back_off)."""

    base: Duration = "25ms"
    max: Duration | None = None  # default: 10 x base

    @model_validator(mode="after")
    def _order(self) -> RetryBackoff:
        if self.max is not None and parse_duration(self.max) < parse_duration(self.base):
            raise ValueError(f"max ({self.max}) must not be shorter than base ({self.base})")
        if parse_duration(self.base) <= 0:
            raise ValueError("base must be longer than 0")
        return self


class RetryBudget(Strict):
    """At most `percent` of active requests may be retries, with a floor (Envoy: retry_budget)."""

    percent: float = Field(20.0, gt=0, le=100)
    minConcurrency: int = Field(3, ge=0)


class Retries(Strict):
    attempts: int = Field(2, ge=0, le=10)
    retryOn: list[RetryOn] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    perTryTimeout: Duration | None = None
    backoff: RetryBackoff = Field(default_factory=RetryBackoff)
    budget: RetryBudget | None = None


class CircuitBreaker(Strict):
    """Limits per backend; past them Envoy fails fast with 503 (flag UO) instead of queueing."""

    maxConnections: int | None = Field(None, ge=1)
    maxPendingRequests: int | None = Field(None, ge=1)
    maxRequests: int | None = Field(None, ge=1)
    maxRetries: int | None = Field(None, ge=0)


class OutlierDetection(Strict):
    """Eject an endpoint that keeps failing, for a while (Envoy: outlier_detection)."""

    consecutive5xx: int = Field(5, ge=1)
    consecutiveGatewayErrors: int | None = Field(None, ge=1)
    interval: Duration = "10s"
    baseEjectionTime: Duration = "30s"
    maxEjectionPercent: int = Field(50, ge=0, le=100)


class RateLimit(Strict):
    """A token bucket in front of the rule: `requests` per `per`, bursts up to `burst`.

    Local to this gateway (one machine); over the limit the answer is 429.
    """

    requests: int = Field(ge=1)
    per: Duration = "1s"
    burst: int | None = Field(None, ge=1)  # default: requests

    @field_validator("per")
    @classmethod
    def _per(cls, value: str) -> str:
        if parse_duration(value) < 0.05:
            raise ValueError(f"per ({value}) must be at least 50ms (the gateway refills its "
                             "token bucket no faster)")
        return value


class HeaderChanges(Strict):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> HeaderChanges:
        for name in [*self.set, *self.add, *self.remove]:
            if not HEADER_NAME.match(name):
                raise ValueError(f"'{name}' is not a header name (letters, digits and "
                                 "!#$%&'*+.^_`|~-)")
            if name.lower() == "host" or name.startswith(":"):
                raise ValueError(f"header '{name}' cannot be changed here; to change the "
                                 "host, use rewrite.host")
        return self


class HeaderRewrites(Strict):
    request: HeaderChanges = Field(default_factory=HeaderChanges)
    response: HeaderChanges = Field(default_factory=HeaderChanges)


class Rewrite(Strict):
    """Rewrite the request before it reaches the backend (Gateway API URLRewrite)."""

    pathPrefix: str | None = Field(None, pattern=r"^/")
    host: str | None = Field(None, min_length=1)


class Cors(Strict):
    allowOrigins: list[str] = Field(min_length=1)  # exact origins, or "*"
    allowMethods: list[str] = Field(default_factory=lambda: ["GET", "POST"])
    allowHeaders: list[str] = Field(default_factory=list)
    exposeHeaders: list[str] = Field(default_factory=list)
    maxAge: Duration | None = None
    allowCredentials: bool = False


class RouteRule(Strict):
    matches: list[RouteMatch] = Field(default_factory=lambda: [RouteMatch()])
    backends: list[BackendRef] = Field(min_length=1)
    timeout: Duration | None = None
    retries: Retries | None = None
    circuitBreaker: CircuitBreaker | None = None
    outlierDetection: OutlierDetection | None = None
    rateLimit: RateLimit | None = None
    headers: HeaderRewrites | None = None
    rewrite: Rewrite | None = None
    cors: Cors | None = None

    @model_validator(mode="after")
    def _rewrite_needs_a_prefix(self) -> RouteRule:
        if self.rewrite is not None and self.rewrite.pathPrefix is not None and any(
                m.path.type == "RegularExpression" for m in self.matches):
            raise ValueError("rewrite.pathPrefix replaces the matched prefix, so every match "
                             "of the rule needs an Exact or PathPrefix path, not a regex")
        return self


class RouteSpec(Strict):
    hosts: list[str] = Field(default_factory=lambda: ["*"])
    rules: list[RouteRule] = Field(min_length=1)


# ---- Bucket --------------------------------------------------------------------


class NotificationFilter(Strict):
    prefix: str = ""
    suffix: str = ""


class Sink(Strict):
    uri: str | None = None
    broker: Name | None = None

    @model_validator(mode="after")
    def _one(self) -> Sink:
        if (self.uri is None) == (self.broker is None):
            raise ValueError("a sink needs exactly one of uri or broker")
        return self


class Notification(Strict):
    events: list[str] = Field(default_factory=lambda: ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"])
    filter: NotificationFilter = Field(default_factory=NotificationFilter)
    sink: Sink


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token
_ORIGIN = re.compile(r"[\x21-\x7e]*")


def _each(values: list[str], shape: re.Pattern[str], what: str) -> list[str]:
    for value in values:
        if not shape.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
    return values


class BucketCorsRule(Strict):
    """One of S3's CORSRules, with S3's limits (storage/cors.py checks the same ones on a
    PutBucketCors)."""

    id: str | None = Field(None, max_length=255)
    allowedOrigins: list[str] = Field(min_length=1)  # exact, "*", or with one "*" inside
    allowedMethods: list[Literal["GET", "PUT", "POST", "DELETE", "HEAD"]] = Field(min_length=1)
    allowedHeaders: list[str] = Field(default_factory=list)  # case ignored; one "*" each
    exposeHeaders: list[str] = Field(default_factory=list)
    maxAgeSeconds: int | None = Field(None, ge=0)

    @field_validator("allowedOrigins", "allowedHeaders")
    @classmethod
    def _one_wildcard(cls, values: list[str]) -> list[str]:
        for value in values:
            if value.count("*") > 1:
                raise ValueError(f"'{value}' has {value.count('*')} wildcards; S3 allows one "
                                 "'*' in each (like https://*.example.com or x-amz-*)")
        return values

    @field_validator("exposeHeaders")
    @classmethod
    def _no_wildcard(cls, values: list[str]) -> list[str]:
        for value in values:
            if "*" in value:
                raise ValueError(f"'{value}': S3 takes no wildcard in exposeHeaders; name each "
                                 "header (ETag, x-amz-request-id, ...)")
        return values

    # Echoed into answers' headers: each must be a header name, or printable ASCII.
    @field_validator("allowedHeaders", "exposeHeaders")
    @classmethod
    def _header_names(cls, values: list[str]) -> list[str]:
        return _each(values, _HEADER_NAME, "a header name (letters, digits and !#$%&'*+-.^_`|~)")

    @field_validator("allowedOrigins")
    @classmethod
    def _printable(cls, values: list[str]) -> list[str]:
        return _each(values, _ORIGIN, "an origin (printable ASCII, like https://app.example)")


class BucketSpec(Strict):
    access: Literal["private", "public-read"] = "private"
    versioning: bool = False
    deletionPolicy: Literal["retain", "delete"] = "retain"
    notifications: list[Notification] = Field(default_factory=list)
    # Left out: the bucket's CORS configuration is whatever S3 clients set. Given (even
    # []): the controller makes the bucket's rules these, replacing a PutBucketCors.
    cors: list[BucketCorsRule] | None = Field(None, max_length=100)

    @field_validator("versioning")
    @classmethod
    def _one_version(cls, value: bool) -> bool:
        # Accepting `true` and keeping one version anyway would be a promise not kept.
        if value:
            raise ValueError("CloudLand's object store keeps one version of each object "
                             "(version id 'null', as S3 with versioning never enabled); "
                             "remove 'versioning' or set it to false")
        return value


# ---- Broker and Trigger --------------------------------------------------------


class Delivery(Strict):
    retry: int = Field(3, ge=0, le=100)
    backoffPolicy: Literal["exponential", "linear"] = "exponential"
    backoffDelay: Duration = "200ms"
    timeout: Duration = "10s"
    deadLetterSink: Sink | None = None


class BrokerSpec(Strict):
    retention: Duration = "168h"
    maxBytes: int | None = Field(None, ge=1)
    delivery: Delivery = Field(default_factory=Delivery)


class SubscriberRef(Strict):
    kind: Literal["Service", "Function"]
    name: Name
    namespace: Name | None = None


class Subscriber(Strict):
    ref: SubscriberRef | None = None
    uri: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Subscriber:
        if (self.ref is None) == (self.uri is None):
            raise ValueError("a subscriber needs exactly one of ref or uri")
        return self


class TriggerSpec(Strict):
    broker: Name = "default"
    filter: dict[str, str] = Field(default_factory=dict)
    subscriber: Subscriber
    delivery: Delivery | None = None


# ---- Policy --------------------------------------------------------------------


class Validation(Strict):
    expression: str = Field(min_length=1)
    message: str | None = None
    reason: Literal["Invalid", "Forbidden"] = "Invalid"


Action = Literal["Deny", "Warn", "Audit"]
DENY: tuple[Action, ...] = ("Deny",)


class PolicySpec(Strict):
    matchKinds: list[str] = Field(min_length=1)
    validations: list[Validation] = Field(min_length=1)
    failurePolicy: Literal["Fail", "Ignore"] = "Fail"
    validationActions: list[Action] = Field(
        default_factory=lambda: list(DENY)
    )


# ---- Job and CronJob -----------------------------------------------------------


class JobSpec(Workload):
    completions: int = Field(1, ge=1, le=10000)
    parallelism: int = Field(1, ge=1, le=10000)
    backoffLimit: int = Field(6, ge=0)
    activeDeadlineSeconds: float | None = Field(None, gt=0)
    ttlSecondsAfterFinished: float | None = Field(None, ge=0)


def check_cron(value: str) -> str:
    from croniter import croniter  # deferred: only manifests with schedules pay for it

    if not croniter.is_valid(value):
        raise ValueError(
            f"'{value}' is not a cron schedule; use five fields like '*/5 * * * *' "
            "(minute hour day-of-month month day-of-week)"
        )
    return value


class CronJobSpec(Strict):
    schedule: str
    timeZone: str | None = None
    concurrencyPolicy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    suspend: bool = False
    successfulJobsHistoryLimit: int = Field(3, ge=0)
    failedJobsHistoryLimit: int = Field(1, ge=0)
    jobTemplate: JobSpec

    _cron = field_validator("schedule")(lambda cls, v: check_cron(v))


# ---- Objects -------------------------------------------------------------------


class Object(Strict):
    apiVersion: Literal["cloudland/v1"] = "cloudland/v1"
    kind: str
    metadata: ObjectMeta
    status: Status | None = None


def _spec_object(kind: str, spec_model: type[BaseModel]) -> type[Object]:
    return type(
        kind,
        (Object,),
        {
            "__annotations__": {"kind": Literal[kind], "spec": spec_model},
            "__module__": __name__,
            "__doc__": f"A CloudLand {kind}.",
        },
    )


Service = _spec_object("Service", ServiceSpec)
Function = _spec_object("Function", FunctionSpec)
Route = _spec_object("Route", RouteSpec)
Bucket = _spec_object("Bucket", BucketSpec)
Broker = _spec_object("Broker", BrokerSpec)
Trigger = _spec_object("Trigger", TriggerSpec)
Policy = _spec_object("Policy", PolicySpec)
Job = _spec_object("Job", JobSpec)
CronJob = _spec_object("CronJob", CronJobSpec)


class ConfigMap(Object):
    kind: Literal["ConfigMap"]
    data: dict[str, str] = Field(default_factory=dict)
    immutable: bool = False


class Secret(Object):
    """Kubernetes-shaped: `stringData` is folded into base64 `data` on write."""

    kind: Literal["Secret"]
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    stringData: dict[str, str] = Field(default_factory=dict)
    immutable: bool = False

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str]) -> dict[str, str]:
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"data.{key} is not base64; put plain text under stringData") from None
        return data

    @model_validator(mode="after")
    def _fold(self) -> Secret:
        for key, value in self.stringData.items():
            self.data[key] = base64.b64encode(value.encode()).decode()
        self.stringData = {}
        return self


class ObjectReference(Strict):
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None


class Event(Object):
    """A Kubernetes-style event record about another object."""

    kind: Literal["Event"]
    involvedObject: ObjectReference
    type: Literal["Normal", "Warning"] = "Normal"
    reason: str
    message: str = ""
    count: int = 1
    firstTimestamp: str | None = None
    lastTimestamp: str | None = None
    source: str = ""


# ---- Registry ------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    path: str  # dotted path into the object, or a/b, a..b (see cli/columns.py)
    wide: bool = False


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    model: type[Object]
    short_names: tuple[str, ...] = ()
    # Top-level fields whose change is a change of intent (bumps generation).
    spec_fields: tuple[str, ...] = ("spec",)
    columns: tuple[Column, ...] = field(default_factory=tuple)
    user_writable: bool = True

    @property
    def singular(self) -> str:
        return self.kind.lower()


_READY = Column("READY", "status.conditions[Ready]")

KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo(
            "Service", "services", Service, ("svc",),
            columns=(Column("READY", "status.readyReplicas/spec.replicas"),
                     Column("UP-TO-DATE", "status.updatedReplicas"),
                     Column("AVAILABLE", "status.availableReplicas"),
                     Column("RUNTIME", "spec.runtime", wide=True)),
        ),
        KindInfo(
            "Function", "functions", Function, ("fn",),
            columns=(Column("HANDLER", "spec.handler"), _READY,
                     Column("MIN", "spec.scale.minScale", wide=True),
                     Column("MAX", "spec.scale.maxScale", wide=True)),
        ),
        KindInfo("Route", "routes", Route, ("rt",),
                 columns=(Column("HOSTS", "spec.hosts"), _READY)),
        KindInfo("Bucket", "buckets", Bucket, ("bkt",),
                 columns=(Column("ACCESS", "spec.access"), _READY,
                          Column("DELETION", "spec.deletionPolicy", wide=True))),
        KindInfo("Broker", "brokers", Broker, (), columns=(_READY,)),
        KindInfo("Trigger", "triggers", Trigger, (),
                 columns=(Column("BROKER", "spec.broker"), _READY,
                          Column("FILTER", "spec.filter", wide=True))),
        KindInfo("Secret", "secrets", Secret, (),
                 spec_fields=("type", "data", "stringData", "immutable"),
                 columns=(Column("TYPE", "type"), Column("DATA", "data#"))),
        KindInfo("ConfigMap", "configmaps", ConfigMap, ("cm",),
                 spec_fields=("data", "immutable"), columns=(Column("DATA", "data#"),)),
        KindInfo("Policy", "policies", Policy, ("pol",),
                 columns=(Column("KINDS", "spec.matchKinds"), _READY)),
        KindInfo("Job", "jobs", Job, (),
                 columns=(Column("STATUS", "status.conditions[Ready].reason"),
                          Column("COMPLETIONS", "status.succeeded/spec.completions"),
                          Column("DURATION", "status.startTime..status.completionTime"))),
        KindInfo("CronJob", "cronjobs", CronJob, ("cj",),
                 columns=(Column("SCHEDULE", "spec.schedule"),
                          Column("SUSPEND", "spec.suspend"), _READY)),
        KindInfo("Event", "events", Event, ("ev",),
                 spec_fields=("involvedObject", "type", "reason", "message"),
                 columns=(Column("TYPE", "type"), Column("REASON", "reason"),
                          Column("OBJECT", "involvedObject"), Column("MESSAGE", "message")),
                 user_writable=False),
    )
}

_ALIASES: dict[str, str] = {}
for _info in KINDS.values():
    for _alias in (_info.kind.lower(), _info.plural, *_info.short_names):
        _ALIASES[_alias] = _info.kind


def kind_info(name: str) -> KindInfo | None:
    """Look a kind up by its name, plural or short name, in any case."""
    kind = _ALIASES.get(name.lower())
    return KINDS[kind] if kind else None


def kind_by_plural(plural: str) -> KindInfo | None:
    for info in KINDS.values():
        if info.plural == plural:
            return info
    return None
