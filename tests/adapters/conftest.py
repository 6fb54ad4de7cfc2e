"""Slack app fixtures: the fake Slack Web API (a real loopback server), Settings pointing
the real slack_sdk client at it, the real server (tests/adapters/harness.py) over the real
orchestrator with an audit log of its own, and Slack's side that sends signed requests.

Channels of the fake workspace, by audience:

    C0SUPPORT   a public channel of our workspace, not listed as internal  -> customer
    C0SHARED    a Slack Connect channel shared with a customer             -> customer
    C0AGENTS    the support agents' channel, listed as internal            -> internal
    C0AGENTSX   listed as internal but shared with another organisation    -> customer
    C0ESCALATE  where handoffs go
    D0CUSTOMER  a direct message with the bot                              -> customer
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.audit import AuditLog
from bot.factory import build_audit_log
from bot.orchestrator import Orchestrator
from bot.settings import Settings, load_settings
from tests.fakes.slack_api import FakeSlackAPI, SlackSender

BOT_TOKEN = "xoxb-1111-2222-t3stT0kenN0tReal"
SIGNING_SECRET = "5ecret5ign1ngKeyForTests0nly9f3a"
SUPPORT, SHARED, AGENTS, AGENTS_SHARED = "C0SUPPORT", "C0SHARED", "C0AGENTS", "C0AGENTSX"
ESCALATION, DM = "C0ESCALATE", "D0CUSTOMER"
CUSTOMER, AGENT = "U0CUSTOMER", "U0AGENT"


@pytest.fixture
def slack_api() -> Iterator[FakeSlackAPI]:
    """The fake Slack Web API with the workspace's channels seeded."""
    with FakeSlackAPI(bot_token=BOT_TOKEN) as fake:
        fake.seed_channel(SUPPORT, name="support")
        fake.seed_channel(SHARED, name="acme-shared", is_ext_shared=True)
        fake.seed_channel(AGENTS, name="support-agents")
        fake.seed_channel(AGENTS_SHARED, name="agents-with-partner", is_ext_shared=True)
        fake.seed_channel(ESCALATION, name="support-escalations")
        fake.seed_channel(DM, is_im=True, user=CUSTOMER)
        yield fake


@pytest.fixture
def slack_settings(slack_api: FakeSlackAPI, policy_data: Path) -> Settings:
    """Settings of a Slack-enabled server whose Web API client talks to the fake."""
    return load_settings(
        data_dir=policy_data,
        generator="template",
        port=0,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack_api.api_url,
        slack_internal_channels=[AGENTS, AGENTS_SHARED],
        slack_escalation_channel=ESCALATION,
        shutdown_grace_s=10,
    )


@pytest.fixture
def audit_log(tmp_path: Path) -> AuditLog:
    """An empty audit log of this test's own."""
    return build_audit_log(load_settings(data_dir=tmp_path / "bot"))


@pytest.fixture
def bot_orchestrator(orchestrator: Orchestrator, audit_log: AuditLog) -> Orchestrator:
    """The session's real orchestrator parts, writing to this test's audit log."""
    return Orchestrator(
        orchestrator.retriever,
        orchestrator.generator,
        audit_log,
        orchestrator.rules,
        max_facts=orchestrator.max_facts,
        min_similarity=orchestrator.min_similarity,
    )


@pytest.fixture
def server(slack_settings: Settings, bot_orchestrator: Orchestrator) -> Iterator[Any]:
    """The real bot server on 127.0.0.1, ready (auth.test answered by the fake)."""
    from tests.adapters.harness import running_server

    with running_server(slack_settings, bot_orchestrator) as running:
        yield running


@pytest.fixture
def slack(server: Any, slack_api: FakeSlackAPI) -> Iterator[SlackSender]:
    """Slack's side: signed events, slash commands and button clicks to the server."""
    from tests.adapters.harness import sign

    sender = SlackSender(slack_api, server.url, SIGNING_SECRET, signer=sign)
    yield sender
    sender.close()
