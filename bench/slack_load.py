#!/usr/bin/env python3
"""Slack load benchmark: the real bot server (`supportbot serve`, its own process) under
concurrent Slack conversations, against the fake Slack Web API on loopback.

Usage: bench/slack_load.py [--seconds 60] [--conversations 20] [--generator template]
                           [--data-dir D] [--no-chaos] [--json]

`policies/` is copied and ingested into a data directory (a temporary one unless
--data-dir, which a second run reuses). Each conversation is a closed loop: it mentions the
bot with a question in a new thread of its channel, waits for the answer, asks a follow-up
in the same thread, waits, and starts again. Channels are customer (public), Slack Connect
(shared), internal (listed) and DMs, a quarter each. Every request is signed as Slack signs.

Run 1 is clean. Run 2 injects Slack's failure modes: 20% of events are delivered again as
Slack retries them (X-Slack-Retry-Num, a fresh signature, some at once, some later) and
10% of Web API calls answer 429 with Retry-After: 1.

Checked after each run, once the server is quiet: every delivery acknowledged (2xx), every
question answered exactly once (one reply message per question in its thread, one audit
reply record per question), every button's audit id in the trail, no refused Web API call
besides the injected 429s, no error replies, no errors counted in /metrics.

Figures: ack latency p50/p99 (target p99 <= 200 ms), reply latency (question sent to the
answer visible in Slack) p50/p99, questions per second, server start-to-ready time (target
<= 10 s), server peak RSS (target <= 2 GB). Baselines from the same run: /healthz latency
over the same HTTP path while idle, and `Orchestrator.handle` latency without Slack, in this
process, on the same questions.

The machine is shared (2 cores, other jobs running): run it with `nice` and read the
figures with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

from tests.fakes.slack_api import (
    FakeSlackAPI,
    SlackSender,
    app_mention,
    buttons,
    event_callback,
)

REPO = Path(__file__).resolve().parents[1]
BOT_TOKEN = "xoxb-bench-0000-b3nchT0ken"
SIGNING_SECRET = "bench-signing-secret-0123456789ab"
ESCALATION = "C0ESCALATE"

# Written from our sample policies (policies/*.md), one per topic; not from any eval set.
CUSTOMER_QUESTIONS = [
    "How long do I have to return an item?",
    "How do I return something I bought online?",
    "When will I get my refund after returning an item?",
    "How much does Northwind Plus cost?",
    "What do I get with a Northwind Plus membership?",
    "Do you deliver to Norway?",
    "Will I pay customs charges on an order to Switzerland?",
    "How do I reset my password?",
    "What should I do if I lose my two-step verification device?",
    "Which payment methods do you accept?",
    "I was charged twice for one order, what happens now?",
    "Can I cancel an order after it has been dispatched?",
    "Can I change the delivery address on my order?",
    "Where can I collect a click and collect order?",
    "What do I need to bring to collect my order?",
    "How quickly do you reply to emails?",
    "How do I make a complaint?",
    "My item arrived damaged, what should I do?",
    "Do gift cards expire?",
    "How do I check my gift card balance?",
    "Is my Northwind Travel Kettle affected by the recall?",
    "Do you match a competitor's lower price?",
    "How do I ask you to delete my account and data?",
    "When do Rewards points expire?",
    "How much is next-day delivery in the UK?",
    "What is the cut-off time for next-day delivery?",
    "Is my blender covered by a warranty?",
    "Can I get a discount for a bulk business order?",
    "Can I order documents in large print?",
]
INTERNAL_QUESTIONS = [
    "What refund amount can a team lead approve without a manager?",
    "When must I escalate a ticket to tier 2?",
    "What are the signals of a fraudulent order?",
    "Who approves customer messages during an outage?",
    "Which reason code do I use for a goodwill credit?",
]
FOLLOW_UPS = [
    "And if I'm a Plus member?",
    "What about international orders?",
    "How long does that take?",
    "Is there any cost for that?",
    "What if it was a gift?",
    "Can you tell me more?",
]
KINDS = ("customer", "shared", "internal", "dm")


@dataclass
class Asked:
    """One question a conversation sent, and what became of it."""

    channel: str
    thread_ts: str
    ts: str
    text: str
    kind: str
    sent_at: float
    ack_ms: float
    status: int
    answered_at: float | None = None


@dataclass
class RunResult:
    name: str
    seconds: float
    asked: list[Asked] = field(default_factory=list)
    retries_sent: int = 0
    retry_acks_ms: list[float] = field(default_factory=list)
    retry_statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    first_call: int = 0  # the fake's calls of this run: [first_call:last_call]
    last_call: int = 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- setup -------------------------------------------------------------------------------


def prepare_data(data_dir: Path) -> float:
    """Ingest a copy of policies/ into `data_dir` (skipped when already there)."""
    from bot.factory import ingest_policies
    from bot.settings import load_settings

    folder = data_dir / "policies"
    if not folder.exists():
        shutil.copytree(REPO / "policies", folder)
    started = time.perf_counter()
    report = ingest_policies(load_settings(data_dir=data_dir), folder)
    if report.failed:
        raise SystemExit(f"ingest failed: {report.failed}")
    return time.perf_counter() - started


def baseline_handle(
    data_dir: Path, generator: str, questions: list[str]
) -> tuple[list[float], list[float]]:
    """`Orchestrator.handle` latency (ms) without Slack, in this process, with an audit
    trail of its own: each question asked for the first time, then asked again (the load
    repeats its questions, so both matter)."""
    from bot.factory import build_audit_log, build_orchestrator
    from bot.messages import Message
    from bot.orchestrator import Orchestrator
    from bot.settings import load_settings
    from retrieval.types import Audience

    scratch = Path(tempfile.mkdtemp(prefix="slack-bench-audit-"))
    built = build_orchestrator(load_settings(data_dir=data_dir, generator=generator))
    orch = Orchestrator(
        built.retriever,
        built.generator,
        build_audit_log(load_settings(data_dir=scratch)),
        built.rules,
        max_facts=built.max_facts,
        min_similarity=built.min_similarity,
    )
    orch.warm_up()
    passes: list[list[float]] = [[], []]
    for times in passes:
        for q in questions:
            audience = Audience.INTERNAL if q in INTERNAL_QUESTIONS else Audience.CUSTOMER
            started = time.perf_counter()
            orch.handle(Message(q, audience=audience, platform="bench"))
            times.append((time.perf_counter() - started) * 1000)
    shutil.rmtree(scratch, ignore_errors=True)
    return passes[0], passes[1]


class Server:
    """`supportbot serve` in its own process, pointed at the fake Slack API."""

    def __init__(
        self, data_dir: Path, fake: FakeSlackAPI, generator: str, internal: list[str]
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        env = {
            **os.environ,
            "SUPPORTBOT_DATA_DIR": str(data_dir),
            "SUPPORTBOT_GENERATOR": generator,
            "SUPPORTBOT_HOST": "127.0.0.1",
            "SUPPORTBOT_PORT": str(self.port),
            "SUPPORTBOT_SLACK_BOT_TOKEN": BOT_TOKEN,
            "SUPPORTBOT_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SUPPORTBOT_SLACK_API_URL": fake.api_url,
            "SUPPORTBOT_SLACK_INTERNAL_CHANNELS": ",".join(internal),
            "SUPPORTBOT_SLACK_ESCALATION_CHANNEL": ESCALATION,
            "HF_HUB_OFFLINE": "1",
        }
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "supportbot"), "serve"],
            env=env,
            cwd=str(data_dir),  # no stray .env from the checkout
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.perf_counter() + timeout
        with httpx.Client(timeout=2) as http:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"server exited: {self.log_path.read_text()[-2000:]}")
                try:
                    if http.get(f"{self.url}/readyz").status_code == 200:
                        ready = time.perf_counter() - self.started
                        self._sampler.start()
                        return ready
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise SystemExit(f"server not ready after {timeout} s")

    def _sample(self) -> None:
        while not self._sampling.wait(0.5):
            try:
                self.peak_rss = max(self.peak_rss, self.rss())
            except psutil.Error:
                return

    def rss(self) -> int:
        procs = [self.ps, *self.ps.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def stop(self) -> int:
        self._sampling.set()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


# --- load ------------------------------------------------------------------------------


def final_replies(fake: FakeSlackAPI, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    """The bot's finished replies in a thread: its messages with blocks (a placeholder has
    only text until it is updated with the answer)."""
    bot = fake.workspace.bot_id
    return [
        m
        for m in fake.thread(channel, thread_ts)
        if m.get("bot_id") == bot and m["ts"] != thread_ts and m.get("blocks")
    ]


class Conversation(threading.Thread):
    """One person asking in one channel: question, answer, follow-up, answer, again."""

    def __init__(
        self,
        n: int,
        channel: str,
        kind: str,
        run: RunResult,
        fake: FakeSlackAPI,
        app_url: str,
        deadline: float,
        chaos: bool,
        lock: threading.Lock,
    ) -> None:
        super().__init__(name=f"conversation-{n}", daemon=True)
        self.rand = random.Random(n * 7919 + (1 if chaos else 0))
        self.channel, self.kind, self.run_result = channel, kind, run
        self.fake = fake
        self.sender = SlackSender(fake, app_url, SIGNING_SECRET, timeout=30)
        self.deadline, self.chaos, self.lock = deadline, chaos, lock
        self.user = f"U0P{n:04d}"
        self.late: list[threading.Thread] = []

    def run(self) -> None:
        pool = INTERNAL_QUESTIONS + CUSTOMER_QUESTIONS[:5] if self.kind == "internal" else []
        questions = pool or CUSTOMER_QUESTIONS
        try:
            while time.monotonic() < self.deadline:
                root = self.ask(self.rand.choice(questions), None)
                if root is None or not self.wait(root, 1):
                    continue
                follow = self.ask(self.rand.choice(FOLLOW_UPS), root.ts)
                if follow is not None:
                    self.wait(follow, 2)
        finally:
            for t in self.late:
                t.join()
            self.sender.close()

    def ask(self, question: str, thread_ts: str | None) -> Asked | None:
        ws = self.fake.workspace
        text = question if self.kind == "dm" else f"{ws.mention} {question}"
        msg = self.fake.user_message(self.channel, text, user=self.user, thread_ts=thread_ts)
        if self.kind == "dm":
            event = {**msg, "type": "message", "channel_type": "im", "event_ts": msg["ts"]}
        else:
            event = app_mention(msg)
        envelope = event_callback(event, ws, is_ext_shared_channel=self.kind == "shared")
        stamp = int(time.time())
        sent_at = time.monotonic()
        try:
            response = self.sender.deliver(envelope, timestamp=stamp)
            status = response.status_code
        except httpx.HTTPError as exc:
            status = 0
            with self.lock:
                self.run_result.problems.append(f"delivery failed: {type(exc).__name__}")
        ack_ms = (time.monotonic() - sent_at) * 1000
        asked = Asked(
            self.channel,
            thread_ts or msg["ts"],
            msg["ts"],
            question,
            self.kind,
            sent_at,
            ack_ms,
            status,
        )
        with self.lock:
            self.run_result.asked.append(asked)
        if self.chaos and self.rand.random() < 0.20:
            self.retry_later(envelope, stamp, delay=self.rand.choice((0.0, 0.0, 0.5, 2.0)))
        return asked if status == 200 else None

    def retry_later(self, envelope: dict[str, Any], first_stamp: int, delay: float) -> None:
        """Slack re-delivers an event it believes timed out: the same body, signed again
        with the time of the new attempt (always later than the first one's)."""

        def deliver() -> None:
            time.sleep(delay)
            stamp = max(int(time.time()), first_stamp + 1)
            started = time.monotonic()
            try:
                response = self.sender.deliver(envelope, retry_num=1, timestamp=stamp)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            with self.lock:
                self.run_result.retries_sent += 1
                self.run_result.retry_statuses[status] += 1
                self.run_result.retry_acks_ms.append((time.monotonic() - started) * 1000)

        t = threading.Thread(target=deliver, daemon=True)
        t.start()
        self.late.append(t)

    def wait(self, asked: Asked, count: int, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(final_replies(self.fake, self.channel, asked.thread_ts)) >= count:
                asked.answered_at = time.monotonic()
                return True
            time.sleep(0.02)
        return False


def channels_for(run: str, conversations: int, fake: FakeSlackAPI) -> list[tuple[str, str]]:
    out = []
    for n in range(conversations):
        kind = KINDS[n % len(KINDS)]
        if kind == "dm":
            channel = f"D{run}{n:03d}"
            fake.seed_channel(channel, is_im=True, user=f"U0P{n:04d}")
        else:
            channel = f"C{run}{kind[:3].upper()}{n:03d}"
            fake.seed_channel(channel, name=f"{kind}-{n}", is_ext_shared=kind == "shared")
        out.append((channel, kind))
    return out


def load(
    name: str,
    fake: FakeSlackAPI,
    server: Server,
    channels: list[tuple[str, str]],
    seconds: float,
    chaos: bool,
) -> RunResult:
    result = RunResult(name, seconds)
    result.first_call = len(fake.calls())
    lock = threading.Lock()
    if chaos:
        fake.rate_limit_share(0.10, retry_after=1, seed=11)
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    workers = [
        Conversation(n, ch, kind, result, fake, server.url, deadline, chaos, lock)
        for n, (ch, kind) in enumerate(channels)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    fake.rate_limit_share(0)
    result.figures["wall_s"] = time.monotonic() - started
    settle(fake)
    result.last_call = len(fake.calls())
    return result


# --- checks ----------------------------------------------------------------------------


def settle(fake: FakeSlackAPI, quiet_s: float = 3.0, timeout: float = 120.0) -> None:
    """Wait until the fake has seen no call for `quiet_s` (late answers, handoffs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = fake.calls()
        last = calls[-1].at if calls else 0.0
        if time.monotonic() - last >= quiet_s:
            return
        time.sleep(0.2)


def check(result: RunResult, fake: FakeSlackAPI, audit_records: list[dict[str, Any]]) -> None:
    channels = {a.channel for a in result.asked}
    per_thread: Counter[tuple[str, str]] = Counter((a.channel, a.thread_ts) for a in result.asked)
    replies = [
        r for r in audit_records if r.get("kind") == "reply" and r.get("channel") in channels
    ]
    audit_ids = {r["audit_id"] for r in replies}
    recorded: Counter[tuple[str, str]] = Counter((r["channel"], r["thread"]) for r in replies)
    shown: Counter[tuple[str, str]] = Counter()
    missing_ids = 0
    for channel, thread_ts in per_thread:
        msgs = final_replies(fake, channel, thread_ts)
        shown[(channel, thread_ts)] = len(msgs)
        for m in msgs:
            for b in buttons(m["blocks"]):
                if b.get("value") not in audit_ids:
                    missing_ids += 1
    duplicates = sum(max(0, shown[k] - n) for k, n in per_thread.items())
    lost = sum(max(0, n - shown[k]) for k, n in per_thread.items())
    rec_dup = sum(max(0, recorded[k] - n) for k, n in per_thread.items())
    rec_lost = sum(max(0, n - recorded[k]) for k, n in per_thread.items())
    outcomes = Counter(r["decision"]["outcome"] for r in replies)
    calls = fake.calls()[result.first_call : result.last_call]
    refused = Counter(c.error for c in calls if not c.ok and c.error != "ratelimited")
    bad_acks = sum(1 for a in result.asked if a.status != 200)
    result.figures.update(
        questions=len(result.asked),
        threads=len(per_thread),
        answered_in_slack=sum(shown.values()),
        duplicate_replies=duplicates,
        lost_replies=lost,
        audit_replies=len(replies),
        audit_duplicates=rec_dup,
        audit_missing=rec_lost,
        buttons_without_audit_record=missing_ids,
        outcomes=dict(outcomes),
        refused_api_calls=dict(refused),
        non_2xx_acks=bad_acks,
        rate_limited_calls=sum(1 for c in calls if c.error == "ratelimited"),
        api_calls=len(calls),
    )
    for label, value in (
        ("duplicate replies", duplicates),
        ("lost replies", lost),
        ("duplicate audit records", rec_dup),
        ("questions without an audit record", rec_lost),
        ("buttons whose audit id is not in the trail", missing_ids),
        ("deliveries not acknowledged with 200", bad_acks),
        ("error replies", outcomes.get("error", 0)),
        ("refused Web API calls", sum(refused.values())),
    ):
        if value:
            result.problems.append(f"{label}: {value}")


def latency_figures(result: RunResult) -> None:
    acks = [a.ack_ms for a in result.asked]
    replies = [
        (a.answered_at - a.sent_at) * 1000 for a in result.asked if a.answered_at is not None
    ]
    result.figures.update(
        ack_p50_ms=pct(acks, 50),
        ack_p99_ms=pct(acks, 99),
        ack_max_ms=max(acks) if acks else float("nan"),
        reply_p50_ms=pct(replies, 50),
        reply_p99_ms=pct(replies, 99),
        questions_per_s=len(replies) / result.figures["wall_s"],
    )
    if result.retry_acks_ms:
        result.figures.update(
            retries_sent=result.retries_sent,
            retry_statuses=dict(result.retry_statuses),
            retry_ack_p99_ms=pct(result.retry_acks_ms, 99),
        )
        if set(result.retry_statuses) - {200}:
            result.problems.append(f"retries not acknowledged: {dict(result.retry_statuses)}")


def errors_in_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(("supportbot_errors_total", "supportbot_slack_api_errors_total")):
            name, _, value = line.rpartition(" ")
            if float(value):
                out[name] = float(value)
    return out


def healthz_baseline(url: str, n: int = 200) -> list[float]:
    times = []
    with httpx.Client(timeout=5) as http:
        for _ in range(n):
            started = time.monotonic()
            http.get(f"{url}/healthz")
            times.append((time.monotonic() - started) * 1000)
    return times


# --- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--generator", default="template", choices=["template", "tone", "cohere"])
    parser.add_argument("--data-dir", type=Path, help="reuse an ingested data dir")
    parser.add_argument("--no-chaos", action="store_true", help="skip the retries/429 run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    from bot.errors import SupportbotError

    try:
        out = measure(args)
    except SupportbotError as exc:  # e.g. no tone adapter trained yet: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        report(out)
    return 0 if out["ok"] else 1


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, run the load (clean, then with Slack's failure modes), check, and collect
    every figure into one dict."""
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="slack-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(data_dir / "audit", ignore_errors=True)  # this run's records only
    ingest_s = prepare_data(data_dir)
    sample = (CUSTOMER_QUESTIONS + INTERNAL_QUESTIONS)[:24]
    first_ms, again_ms = baseline_handle(data_dir, args.generator, sample)

    out: dict[str, Any] = {
        "generator": args.generator,
        "conversations": args.conversations,
        "seconds": args.seconds,
        "ingest_s": round(ingest_s, 1),
        "baseline_handle_first_p50_ms": round(pct(first_ms, 50), 1),
        "baseline_handle_first_p99_ms": round(pct(first_ms, 99), 1),
        "baseline_handle_again_p50_ms": round(pct(again_ms, 50), 1),
        "baseline_handle_again_p99_ms": round(pct(again_ms, 99), 1),
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
    }
    runs: list[RunResult] = []
    with FakeSlackAPI(bot_token=BOT_TOKEN) as fake:
        fake.seed_channel(ESCALATION, name="support-escalations")
        plan = [("1", False)] + ([] if args.no_chaos else [("2", True)])
        all_channels = {run: channels_for(run, args.conversations, fake) for run, _ in plan}
        internal = [c for chs in all_channels.values() for c, kind in chs if kind == "internal"]
        server = Server(data_dir, fake, args.generator, internal)
        try:
            out["start_to_ready_s"] = round(server.wait_ready(), 2)
            out["rss_ready_mb"] = round(server.rss() / 2**20, 1)
            health = healthz_baseline(server.url)
            out["baseline_healthz_p50_ms"] = round(pct(health, 50), 2)
            out["baseline_healthz_p99_ms"] = round(pct(health, 99), 2)
            for run, chaos in plan:
                name = "retries 20% + 429 10%" if chaos else "clean"
                result = load(name, fake, server, all_channels[run], args.seconds, chaos)
                latency_figures(result)
                runs.append(result)
            records = read_audit(data_dir)
            for result in runs:
                check(result, fake, records)
            out["metrics_errors"] = errors_in_metrics(server.metrics())
            out["peak_rss_mb"] = round(max(server.peak_rss, server.rss()) / 2**20, 1)
        finally:
            out["exit_code"] = server.stop()
        log_text = server.log_path.read_text(errors="replace")
        out["secret_in_server_log"] = BOT_TOKEN in log_text or SIGNING_SECRET in log_text
        out["server_log_error_lines"] = sum(
            1 for line in log_text.splitlines() if '"level": "error"' in line
        )
    out["runs"] = [
        {"name": r.name, **{k: _round(v) for k, v in r.figures.items()}, "problems": r.problems}
        for r in runs
    ]
    out["load_avg_after"] = os.getloadavg()
    out["ok"] = (
        all(not r.problems for r in runs)
        and not out["metrics_errors"]
        and not out["secret_in_server_log"]
    )
    return out


def read_audit(data_dir: Path) -> list[dict[str, Any]]:
    from bot.factory import build_audit_log
    from bot.settings import load_settings

    return build_audit_log(load_settings(data_dir=data_dir)).records()


def _round(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def report(out: dict[str, Any]) -> None:
    print(
        f"supportbot Slack load: {out['conversations']} conversations x {out['seconds']:.0f} s, "
        f"generator={out['generator']}, {out['cpus']} CPUs (shared; load before "
        f"{out['load_avg_before'][0]:.2f}, after {out['load_avg_after'][0]:.2f})"
    )
    print(
        f"server: start-to-ready {out['start_to_ready_s']} s (target <= 10), "
        f"RSS ready {out['rss_ready_mb']} MB, peak {out['peak_rss_mb']} MB (target <= 2048)"
    )
    print(
        f"baselines: /healthz p50 {out['baseline_healthz_p50_ms']} ms p99 "
        f"{out['baseline_healthz_p99_ms']} ms (idle server); Orchestrator.handle without "
        f"Slack, one at a time: new question p50 {out['baseline_handle_first_p50_ms']} ms "
        f"p99 {out['baseline_handle_first_p99_ms']} ms, repeated question p50 "
        f"{out['baseline_handle_again_p50_ms']} ms p99 {out['baseline_handle_again_p99_ms']} ms"
    )
    for run in out["runs"]:
        print(f"\nrun: {run['name']}")
        print(
            f"  questions {run['questions']} in {run['threads']} threads, "
            f"{run['questions_per_s']} answered/s; outcomes {run['outcomes']}"
        )
        print(
            f"  ack p50 {run['ack_p50_ms']} ms, p99 {run['ack_p99_ms']} ms (target <= 200), "
            f"max {run['ack_max_ms']} ms; reply p50 {run['reply_p50_ms']} ms, "
            f"p99 {run['reply_p99_ms']} ms"
        )
        print(
            f"  replies in Slack {run['answered_in_slack']}, duplicates "
            f"{run['duplicate_replies']}, lost {run['lost_replies']}; audit reply records "
            f"{run['audit_replies']} (duplicates {run['audit_duplicates']}, missing "
            f"{run['audit_missing']}), buttons without a record "
            f"{run['buttons_without_audit_record']}"
        )
        print(
            f"  Web API calls {run['api_calls']}, 429s injected {run['rate_limited_calls']}, "
            f"refused {run['refused_api_calls'] or 0}, non-200 acks {run['non_2xx_acks']}"
        )
        if "retries_sent" in run:
            print(
                f"  Slack retries sent {run['retries_sent']}, acks {run['retry_statuses']}, "
                f"retry ack p99 {run['retry_ack_p99_ms']} ms"
            )
        print(f"  problems: {'; '.join(run['problems']) or 'none'}")
    print(
        f"\n/metrics errors: {out['metrics_errors'] or 'none'}; server log error lines: "
        f"{out['server_log_error_lines']}; secrets in server log: "
        f"{out['secret_in_server_log']}; exit code after SIGTERM: {out['exit_code']}"
    )
    print("OK" if out["ok"] else "FAILED")


if __name__ == "__main__":
    sys.exit(main())
