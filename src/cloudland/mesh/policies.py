"""Route traffic policies as Envoy config: retries, timeouts' durations, circuit
breaking, outlier detection, header edits, rewrites, CORS and local rate limits.

Pure functions from the model's policy blocks to Envoy v3 JSON; `render` places
their output in routes, clusters and per-route filter configs.
"""

from __future__ import annotations

from typing import Any

from cloudland.model.kinds import (
    CircuitBreaker,
    Cors,
    HeaderChanges,
    OutlierDetection,
    RateLimit,
    Retries,
    Rewrite,
    RouteMatch,
    RouteRule,
)
from cloudland.model.meta import parse_duration

Json = dict[str, Any]

CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
RATELIMIT_TYPE = ("type.googleapis.com/envoy.extensions.filters.http."
                  "local_ratelimit.v3.LocalRateLimit")
CORS_FILTER = "envoy.filters.http.cors"
RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
ALWAYS = {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
          "runtime_key": "cloudland.local_rate_limit"}


def duration(text: str) -> str:
    """A CloudLand duration ('1m30s', '250ms') as a protobuf JSON Duration ('90s', '0.25s')."""
    return seconds(parse_duration(text))


def seconds(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def cluster_thresholds(breaker: CircuitBreaker | None, retries: Retries | None) -> Json | None:
    limits: Json = {}
    if breaker is not None:
        for field, key in (("maxConnections", "max_connections"),
                           ("maxPendingRequests", "max_pending_requests"),
                           ("maxRequests", "max_requests"), ("maxRetries", "max_retries")):
            value = getattr(breaker, field)
            if value is not None:
                limits[key] = value
    if retries is not None and retries.budget is not None:
        limits["retry_budget"] = {
            "budget_percent": {"value": retries.budget.percent},
            "min_retry_concurrency": retries.budget.minConcurrency}
    return {"thresholds": [limits]} if limits else None


def outlier_detection(od: OutlierDetection) -> Json:
    out: Json = {"consecutive_5xx": od.consecutive5xx, "interval": duration(od.interval),
                 "base_ejection_time": duration(od.baseEjectionTime),
                 "max_ejection_percent": od.maxEjectionPercent}
    if od.consecutiveGatewayErrors is not None:
        out["consecutive_gateway_failure"] = od.consecutiveGatewayErrors
        out["enforcing_consecutive_gateway_failure"] = 100
    return out


def retry_policy(retries: Retries) -> Json:
    base = parse_duration(retries.backoff.base)
    top = parse_duration(retries.backoff.max) if retries.backoff.max else 10 * base
    policy: Json = {
        "retry_on": ",".join(retries.retryOn), "num_retries": retries.attempts,
        "retry_back_off": {"base_interval": seconds(base), "max_interval": seconds(top)},
        # Try another endpoint than the one that just failed, when there is one.
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                  "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                   "retry.host.previous_hosts.v3."
                                                   "PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": "3",
    }
    if retries.perTryTimeout is not None:
        policy["per_try_timeout"] = duration(retries.perTryTimeout)
    return policy


def re2_escape(text: str) -> str:
    """`text` as an RE2 literal."""
    return "".join(f"\\{c}" if not (c.isalnum() or c in "/_-") else c for c in text)


def segments(prefix: str) -> str:
    """A path prefix without trailing slashes ('/' stays '/')."""
    return prefix.rstrip("/") or "/"


def path_rewrite(m: RouteMatch, rewrite: Rewrite | None) -> Json:
    """Gateway API's ReplacePrefixMatch: the matched segments become the new prefix
    (/api/x with /api -> /v2 is /v2/x; with / it is /x), for Exact and PathPrefix."""
    if rewrite is None or rewrite.pathPrefix is None or m.path.type == "RegularExpression":
        return {}
    matched, target = segments(m.path.value), segments(rewrite.pathPrefix)
    if target == "/" and matched != "/":  # a plain prefix swap would leave '//x'
        return {"regex_rewrite": {"pattern": {"regex": f"^{re2_escape(matched)}/*"},
                                  "substitution": "/"}}
    return {"prefix_rewrite": target}


def _header_options(changes: HeaderChanges) -> list[Json]:
    return ([{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
             for k, v in sorted(changes.set.items())]
            + [{"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
               for k, v in sorted(changes.add.items())])


def header_edits(rule: RouteRule) -> Json:
    out: Json = {}
    if rule.headers is None:
        return out
    for side, changes in (("request", rule.headers.request), ("response", rule.headers.response)):
        if changes.set or changes.add:
            out[f"{side}_headers_to_add"] = _header_options(changes)
        if changes.remove:
            out[f"{side}_headers_to_remove"] = sorted(h.lower() for h in changes.remove)
    return out


def _cors(cors: Cors) -> Json:
    origins = [{"safe_regex": {"regex": ".*"}} if o == "*" else {"exact": o}
               for o in cors.allowOrigins]
    policy: Json = {"@type": CORS_POLICY_TYPE, "allow_origin_string_match": origins,
                    "allow_methods": ",".join(cors.allowMethods),
                    "allow_credentials": cors.allowCredentials}
    if cors.allowHeaders:
        policy["allow_headers"] = ",".join(cors.allowHeaders)
    if cors.exposeHeaders:
        policy["expose_headers"] = ",".join(cors.exposeHeaders)
    if cors.maxAge is not None:
        policy["max_age"] = str(int(parse_duration(cors.maxAge)))
    return policy


def _rate_limit(limit: RateLimit, stat_prefix: str) -> Json:
    return {"@type": RATELIMIT_TYPE, "stat_prefix": stat_prefix.replace(".", "_"),
            "token_bucket": {"max_tokens": limit.burst or limit.requests,
                             "tokens_per_fill": limit.requests,
                             "fill_interval": duration(limit.per)},
            "filter_enabled": ALWAYS, "filter_enforced": ALWAYS,
            "response_headers_to_add": [{"header": {"key": "x-cloudland-rate-limited",
                                                    "value": "true"},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}


def per_filter_config(rule: RouteRule, stat_prefix: str) -> Json:
    per: Json = {}
    if rule.cors is not None:
        per[CORS_FILTER] = _cors(rule.cors)
    if rule.rateLimit is not None:
        per[RATELIMIT_FILTER] = _rate_limit(rule.rateLimit, stat_prefix)
    return {"typed_per_filter_config": per} if per else {}
