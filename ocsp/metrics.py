"""Prometheus metrics of the responder; one per layer of the stack."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "jpki_ocsp_requests_total",
    "OCSP requests by outcome (good/revoked/unknown/multi or an error status) and issuer kind;"
    " a rise in try_later means the live signing pool is saturated (ocsp.sign_queue_limit)",
    ["outcome", "issuer_kind"],
)
CACHE = Counter(
    "jpki_ocsp_cache_total",
    "Pre-signed cache lookups: hit, miss, or stale (older than its refresh point or nextUpdate)",
    ["result"],
)
SIGNING = Histogram(
    "jpki_ocsp_signing_seconds",
    "Time to build and sign one response on the worker pool; RSA-2048 costs about 0.25 ms",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
RESPONSE_AGE = Gauge(
    "jpki_ocsp_response_age_seconds",
    "Age (now - thisUpdate) of the oldest pre-signed response (sampled each minute); stays"
    " below response_validity_hours * refresh_fraction plus a minute when refresh keeps up",
)
CACHED = Gauge("jpki_ocsp_cached_responses", "Pre-signed responses held in memory")
INVALIDATIONS = Counter(
    "jpki_ocsp_invalidations_total",
    "Cached answers dropped because their certificate changed state",
)
SIGNER_SECONDS_LEFT = Gauge(
    "jpki_ocsp_signer_seconds_left",
    "Seconds until each responder certificate expires; renewal starts ocsp.renew_before_days"
    " before",
    ["ca"],
)
QUEUE = Gauge("jpki_ocsp_sign_queue", "Signatures in flight or queued on the live pool")
