"""Prometheus metrics of the published CRLs, read from the registry at scrape time.

Reading the `crl_state` table (rather than counting in the generating process) makes runs of
`jpki crl generate` visible too. One series per (kind, generation, partition): about 3,500 per
live generation at national scale (1,741 municipalities x 2 kinds), within what one Prometheus
scrape handles.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from registry import crl_state
from registry.clock import Clock, epoch
from registry.store import DB_NAME, Store

LABELS = ["kind", "generation", "partition"]


class CRLCollector(Collector):
    def __init__(self, data_dir: Path, clock: Clock, registry_url: str = "") -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.registry_url = registry_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily("jpki_crl_size_bytes", "DER size of the published CRL;"
                                 " verifiers download it daily, keep partitions small",
                                 labels=LABELS)
        entries = GaugeMetricFamily("jpki_crl_entries", "revoked entries in the published CRL",
                                    labels=LABELS)
        duration = GaugeMetricFamily("jpki_crl_generation_seconds", "time to stream, sign and"
                                     " publish the CRL; the daily run must end well within"
                                     " the grace period", labels=LABELS)
        age = GaugeMetricFamily("jpki_crl_age_seconds", "seconds since thisUpdate; alert above"
                                " 24 h (a daily run was missed)", labels=LABELS)
        until = GaugeMetricFamily("jpki_crl_next_update_seconds", "seconds until nextUpdate;"
                                  " negative means verifiers hold an expired CRL", labels=LABELS)
        if self.registry_url or (self.data_dir / DB_NAME).exists():
            store = Store.open(self.data_dir, self.registry_url)
            try:
                rows = crl_state.published_with_generation(store)
            finally:
                store.close()
            now = epoch(self.clock())
            for row in rows:
                labels = [row["kind"], str(row["generation"]), row["partition"]]
                size.add_metric(labels, row["size"])
                entries.add_metric(labels, row["entries"])
                duration.add_metric(labels, row["duration_ms"] / 1000)
                age.add_metric(labels, now - row["this_update"])
                until.add_metric(labels, row["next_update"] - now)
        yield from (size, entries, duration, age, until)


_installed: list[CRLCollector] = []


def install(data_dir: Path, clock: Clock, registry_url: str = "") -> CRLCollector:
    """Register the collector with the default registry, replacing an earlier one."""
    while _installed:
        REGISTRY.unregister(_installed.pop())
    collector = CRLCollector(data_dir, clock, registry_url)
    REGISTRY.register(collector)
    _installed.append(collector)
    return collector
