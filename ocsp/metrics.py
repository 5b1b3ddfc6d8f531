"""Prometheus metrics of the responder; one per layer of the stack."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily


class LoopCounter:
    """A labelled counter incremented only on the event loop: a dict of ints, no lock.

    prometheus_client's Counter takes a lock and validates on every inc (about 1 µs); the cached
    path counts twice per request, so these two families are collected from plain ints.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], int] = {}
        REGISTRY.register(self)

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        yield family


REQUESTS = LoopCounter(
    "jpki_ocsp_requests",
    "OCSP requests by outcome (good/revoked/unknown/multi or an error status) and issuer kind;"
    " a rise in try_later means the live signing pool is saturated (ocsp.sign_queue_limit)",
    ("outcome", "issuer_kind"),
)
CACHE = LoopCounter(
    "jpki_ocsp_cache",
    "Pre-signed cache lookups: hit, miss, or stale (older than its refresh point or nextUpdate)",
    ("result",),
)
SIGNING = Histogram(
    "jpki_ocsp_signing_seconds",
    "Time to build and sign one response on the worker pool; RSA-2048 costs about 0.25 ms",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
ENCODED = Counter(  # on the signing threads, once per answer beside SIGNING: the locked kind
    "jpki_ocsp_encoded_total",
    "Single-CertID answers by how they were encoded: template (ocsp/template.py: only times,"
    " CertID, nonce and signature new) or pyca (the first of each kind, or any doubt)",
    ["by"],
)
RESPONSE_AGE = Gauge(
    "jpki_ocsp_response_age_seconds",
    "Age (now - thisUpdate) of the oldest pre-signed response (sampled each minute); stays"
    " below response_validity_hours * refresh_fraction plus a minute when refresh keeps up",
)
CACHED = Gauge("jpki_ocsp_cached_responses", "Pre-signed responses held in memory")
INVALIDATIONS = Counter(  # rare: the locked prometheus_client counter is fine
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
SIGNED_REQUESTS = LoopCounter(
    "jpki_ocsp_signed_requests",
    "Signed OCSP requests by verdict: verified, or refused before any signature work"
    " (unregistered, expired, key_refused: outside the signer key policy), bad_signature, or"
    " try_later (verification pool full); a rise in unregistered is someone probing",
    ("verdict",),
)
