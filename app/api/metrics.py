"""Prometheus metrics of the API process (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ApiMetrics"]


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "actionq_api_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.actions_submitted = Counter(
            "actionq_actions_submitted", "Actions created through the API", registry=self.registry
        )
        self.live_workers = Gauge(
            "actionq_live_workers", "Workers holding a lease (at scrape time)",
            registry=self.registry,
        )  # fmt: skip
        self.conversations = Gauge(
            "actionq_conversations", "Conversations stored (at scrape time)",
            registry=self.registry,
        )  # fmt: skip
        self.sse_clients = Gauge(
            "actionq_sse_clients", "Open event streams", registry=self.registry
        )
        self.ws_clients = Gauge(
            "actionq_ws_clients", "Open event WebSockets (/sockets/events)",
            registry=self.registry,
        )  # fmt: skip
        self.ws_errors = Counter(
            "actionq_ws_errors",
            "Event WebSockets closed (1011) because Redis could not be read",
            registry=self.registry,
        )
        self.sse_errors = Counter(
            "actionq_sse_errors",
            "Event streams cut short because Redis could not be read",
            registry=self.registry,
        )
