"""The bot server itself: health, readiness, metrics, graceful shutdown, `supportbot serve`,
and requests Slack would never send (unsigned, stale, replayed, malformed), all over real
HTTP on 127.0.0.1 against the real orchestrator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from structlog.testing import capture_logs

from bot.audit import AuditLog
from bot.factory import build_audit_log
from bot.orchestrator import Orchestrator
from bot.settings import Settings, load_settings
from models.base import Draft, DraftRequest
from models.template import TemplateGenerator
from tests.adapters.conftest import BOT_TOKEN, SIGNING_SECRET, SUPPORT
from tests.adapters.harness import ServerHandle, running_server, sign
from tests.conftest import link_models
from tests.fakes.slack_api import FakeSlackAPI, SlackSender, bot_messages, event_callback

REPO = Path(__file__).resolve().parents[2]
RETURNS = "How long do I have to return an item?"


def _kind(record: Mapping[str, Any]) -> Any:
    return record.get("kind", record.get("event"))


def _replies(audit: AuditLog) -> list[dict[str, Any]]:
    return [r for r in audit.records() if _kind(r) == "reply"]


def _wait(condition: Any, timeout: float = 20.0, what: str = "a condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus exposition `text` (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


@pytest.fixture
def plain_settings(policy_data: Path) -> Settings:
    """A server without Slack: health, readiness and metrics only."""
    return load_settings(data_dir=policy_data, generator="template", port=0)


def test_health_readiness_and_metrics(
    plain_settings: Settings, bot_orchestrator: Orchestrator
) -> None:
    """/healthz and /readyz answer 200 once warm; /metrics is Prometheus text with the
    server's own gauges and the process's memory; no Slack endpoint when unconfigured."""
    with running_server(plain_settings, bot_orchestrator) as server, httpx.Client() as http:
        assert http.get(f"{server.url}/healthz").json() == {"status": "ok"}
        ready = http.get(f"{server.url}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}
        metrics = http.get(f"{server.url}/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert _metric(metrics.text, "supportbot_ready") == 1.0
        rss = _metric(metrics.text, "supportbot_process_resident_memory_bytes")
        assert 0 < rss < 2 * 1024**3
        assert http.post(f"{server.url}/slack/events", content=b"{}").status_code == 404
        assert http.get(f"{server.url}/nowhere").status_code == 404


def test_readyz_says_why_it_is_not_ready(tmp_path: Path, model_cache: Path) -> None:
    """An empty index never becomes ready: /readyz is 503 with the reason, /healthz is 200."""
    link_models(model_cache, tmp_path)
    settings = load_settings(data_dir=tmp_path, generator="template", port=0)
    with running_server(settings, wait_ready=False) as server, httpx.Client() as http:
        assert http.get(f"{server.url}/healthz").status_code == 200

        def failed() -> dict[str, Any] | None:
            body: dict[str, Any] = http.get(f"{server.url}/readyz").json()
            return body if "failed" in str(body.get("reason")) else None

        body = _wait(failed, 60, "the warm-up to fail")
        assert http.get(f"{server.url}/readyz").status_code == 503
        assert "ingest" in body["reason"]
        with pytest.raises(Exception, match="ingest"):
            server.call(server.server.wait_ready(1))


def test_forged_stale_replayed_and_malformed_requests_are_refused(
    server: ServerHandle, slack_api: FakeSlackAPI
) -> None:
    """Unsigned, wrongly signed, stale (> 5 min), replayed requests get 401 with a security
    log line that never holds the secret; malformed bodies 400; unknown events 200; the
    server keeps serving."""
    url = f"{server.url}/slack/events"
    event = event_callback(
        {"type": "reaction_added", "user": "U0CUSTOMER", "reaction": "tada"}, slack_api.workspace
    )
    body = json.dumps(event).encode()
    json_type = {"Content-Type": "application/json"}
    with capture_logs() as logs, httpx.Client() as http:
        assert http.post(url, content=body, headers=json_type).status_code == 401
        forged = sign(body, "not-the-secret")
        assert http.post(url, content=body, headers=forged | json_type).status_code == 401
        stale = sign(body, SIGNING_SECRET, int(time.time()) - 600)
        assert http.post(url, content=body, headers=stale | json_type).status_code == 401
        bad_ts = sign(body, SIGNING_SECRET) | {"X-Slack-Request-Timestamp": "soon"}
        assert http.post(url, content=body, headers=bad_ts | json_type).status_code == 401

        good = sign(body, SIGNING_SECRET)
        first = http.post(url, content=body, headers=good | json_type)
        assert first.status_code == 200  # an event we do not use: acknowledged, ignored
        assert http.post(url, content=body, headers=good | json_type).status_code == 401

        garbage = b'{"type": "event_callback", '
        signed = sign(garbage, SIGNING_SECRET)
        assert http.post(url, content=garbage, headers=signed | json_type).status_code == 400
        listed = b"[1, 2]"
        signed = sign(listed, SIGNING_SECRET)
        assert http.post(url, content=listed, headers=signed | json_type).status_code == 400

        challenge = json.dumps({"type": "url_verification", "challenge": "abc123"}).encode()
        verified = http.post(
            url, content=challenge, headers=sign(challenge, SIGNING_SECRET) | json_type
        )
        assert verified.status_code == 200
        assert verified.json() == {"challenge": "abc123"}

        assert http.get(f"{server.url}/healthz").status_code == 200
        metrics = http.get(f"{server.url}/metrics").text

    rejected = [e for e in logs if e["event"] == "slack request rejected"]
    assert [e["reason"] for e in rejected] == [
        "missing signature headers",
        "bad signature",
        "stale timestamp",
        "malformed timestamp",
        "replayed request",
        "malformed body",
        "malformed body",
    ]
    assert all(e["path"] == "/slack/events" and e["remote"] == "127.0.0.1" for e in rejected)
    everything = repr(logs)
    assert SIGNING_SECRET not in everything
    assert BOT_TOKEN not in everything
    assert "Traceback" not in everything
    labels = {"platform": "slack", "reason": "bad signature"}
    assert _metric(metrics, "supportbot_rejected_requests_total", **labels) == 1.0
    assert not slack_api.calls("chat.postMessage")


def test_answers_are_counted_by_platform_decision_and_step(
    server: ServerHandle, slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """After one answered mention, /metrics counts it under slack/answer and has latency
    histograms for every step of the Reply's timings."""
    msg, _, response = slack.mention(SUPPORT, RETURNS)
    assert response.status_code == 200
    record = _wait(lambda: _replies(audit_log), what="the reply record")[0]
    _wait(
        lambda: any(m.get("blocks") for m in bot_messages(slack_api, SUPPORT, msg["ts"])),
        what="the answer in the thread",
    )
    text = httpx.get(f"{server.url}/metrics").text
    decision = record["decision"]["outcome"]
    assert _metric(text, "supportbot_requests_total", platform="slack", decision=decision) == 1
    for step in (*record["timings_ms"], "total"):
        assert _metric(text, "supportbot_step_seconds_count", step=step) == 1, step
    assert _metric(text, "supportbot_reply_seconds_count", platform="slack") == 1
    assert _metric(text, "supportbot_answers_in_flight") == 0


class SlowGenerator:
    """The template wording, after a pause: keeps an answer in flight during a shutdown."""

    name = "slow-template"
    provenance: Mapping[str, str] = {}

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.started = threading.Event()
        self._plain = TemplateGenerator()

    def warm_up(self) -> None:
        """Nothing to load."""

    def write(self, request: DraftRequest) -> Draft:
        self.started.set()
        time.sleep(self.pause_s)
        return Draft(self._plain.write(request).text, self.name)


def test_shutdown_lets_answers_in_flight_finish(
    slack_settings: Settings,
    slack_api: FakeSlackAPI,
    orchestrator: Orchestrator,
    tmp_path: Path,
) -> None:
    """Stopping while an answer is being computed: new connections are refused, the answer
    is still posted to Slack and its audit record written before the server is gone."""
    slow = SlowGenerator(pause_s=1.5)
    audit = build_audit_log(load_settings(data_dir=tmp_path / "bot"))
    bot = Orchestrator(orchestrator.retriever, slow, audit, orchestrator.rules)
    with running_server(slack_settings, bot) as server:
        sender = SlackSender(slack_api, server.url, SIGNING_SECRET, signer=sign)
        try:
            msg, _, response = sender.mention(SUPPORT, RETURNS)
            assert response.status_code == 200
            assert slow.started.wait(20), "the answer never started"
            assert not _replies(audit)  # still in flight
            server.stop()
        finally:
            sender.close()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz")
        # Both happened before stop() returned: no waiting here.
        assert len(_replies(audit)) == 1
        posted = bot_messages(slack_api, SUPPORT, msg["ts"])
        assert len(posted) == 1
        assert posted[0].get("blocks"), "the placeholder was never replaced by the answer"


@pytest.fixture
def serve_env(policy_data: Path) -> dict[str, str]:
    """Environment for `supportbot serve` over the session's index, no Slack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")}
    env |= {
        "SUPPORTBOT_DATA_DIR": str(policy_data),
        "SUPPORTBOT_GENERATOR": "template",
        "SUPPORTBOT_PORT": "0",
        "HF_HUB_OFFLINE": "1",
    }
    return env


def test_serve_is_ready_within_10_s_under_2_gb_and_stops_on_sigterm(
    serve_env: dict[str, str],
) -> None:
    """`supportbot serve` listens at once, is ready within 10 s with models cached, stays
    under 2 GB resident, and exits 0 on SIGTERM."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("supportbot")), "serve"],
        cwd=REPO,
        env=serve_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            if '"listening"' in line:
                url = json.loads(line)["url"]
                break
        assert url, "the server never said where it listens"
        with httpx.Client() as http:

            def ready() -> bool:
                return http.get(f"{url}/readyz").status_code == 200

            _wait(ready, 30, "readiness")
            seconds = time.monotonic() - started
            rss = psutil.Process(proc.pid).memory_info().rss
            print(f"supportbot serve: ready after {seconds:.2f} s, {rss / 2**20:.0f} MiB resident")
        assert seconds <= 10, f"ready after {seconds:.1f} s"
        assert rss < 2 * 1024**3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        rest = proc.stderr.read()
        assert '"stopped"' in rest
        assert "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
