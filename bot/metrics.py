"""Prometheus metrics of one bot server, in a registry of its own (so two servers in one
process, as in tests, never share counters)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Seconds. Steps take milliseconds (prepare) to seconds (the tone model's generation).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Everything `/metrics` shows: requests by platform and decision, latency per step,
    errors, Slack API retries and failures, answers in flight, the process's memory and CPU."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ns = "supportbot"
        self.requests = Counter(
            "requests",
            "Questions answered, by platform and decision (answer, clarify, abstain, error).",
            ["platform", "decision"],
            namespace=ns,
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "step_seconds",
            "Time per step of answering (the Reply's timings_ms keys; 'total' is all steps).",
            ["step"],
            namespace=ns,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.reply_seconds = Histogram(
            "reply_seconds",
            "From receiving a question to the reply being sent, by platform.",
            ["platform"],
            namespace=ns,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "errors",
            "Failures while serving, by platform and kind (answer, slack_api, handoff, ...).",
            ["platform", "kind"],
            namespace=ns,
            registry=self.registry,
        )
        self.slack_api_retries = Counter(
            "slack_api_retries",
            "Slack Web API calls retried, by reason (rate_limited, server_error, connection).",
            ["reason"],
            namespace=ns,
            registry=self.registry,
        )
        self.slack_api_errors = Counter(
            "slack_api_errors",
            "Slack Web API calls that failed after their retries, by method.",
            ["method"],
            namespace=ns,
            registry=self.registry,
        )
        self.rejected = Counter(
            "rejected_requests",
            "Requests refused before any work: bad signature, stale or replayed, malformed.",
            ["platform", "reason"],
            namespace=ns,
            registry=self.registry,
        )
        self.duplicates = Counter(
            "duplicate_events",
            "Platform retries of events already taken (not answered twice).",
            ["platform"],
            namespace=ns,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "answers_in_flight",
            "Questions being answered right now (queued for a worker or running).",
            namespace=ns,
            registry=self.registry,
        )
        self.ready = Gauge(
            "ready",
            "1 once the models are warm and the store is open.",
            namespace=ns,
            registry=self.registry,
        )
        # Resident memory, CPU seconds, open files of this process (Linux /proc).
        ProcessCollector(namespace=ns, registry=self.registry)

    def observe_answer(self, platform: str, decision: str, timings_ms: Mapping[str, float]) -> None:
        self.requests.labels(platform=platform, decision=decision).inc()
        for step, ms in timings_ms.items():
            self.step_seconds.labels(step=step).observe(ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
