"""The watchdog's Prometheus metrics, or stand-ins that count in memory when the exporter is off (then
prometheus_client is not even imported)."""

from __future__ import annotations

from typing import Any


class _Value:
    """Stands in for a prometheus_client metric when the exporter is off (it is not even imported)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.children: dict[str, _Value] = {}

    def labels(self, *values: str) -> _Value:
        return self.children.setdefault("/".join(values), _Value())

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class Metrics:
    checks: Any
    findings: Any
    skips: Any
    requests: Any
    fast_retakes: Any
    duration: Any

    def __init__(self, port: int, address: str):
        if not port:
            self.checks, self.findings, self.skips, self.requests = _Value(), _Value(), _Value(), _Value()
            self.fast_retakes, self.duration = _Value(), _Value()
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.checks = Counter("pubip_watchdog_checks", "Checks run", ["trigger"], registry=self.registry)
        self.findings = Counter("pubip_watchdog_findings", "Findings by rule", ["rule"], registry=self.registry)
        self.skips = Counter("pubip_watchdog_skips", "Checks skipped", ["reason"], registry=self.registry)
        self.requests = Counter("pubip_watchdog_requests", "Takeover run requests", ["outcome"],
                                registry=self.registry)
        self.fast_retakes = Counter("pubip_watchdog_fast_retakes", "IPs re-added by the fast path",
                                    registry=self.registry)
        self.duration = Gauge("pubip_watchdog_last_check_seconds", "Duration of the last check",
                              registry=self.registry)
        if port:
            start_http_server(port, addr=address, registry=self.registry)
