"""Tests for the `supportbot` console script, run as a real subprocess on the sample policies."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.audit import AuditLog

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SUPPORTBOT = Path(sys.executable).parent / "supportbot"
RETURN_QUESTION = "How long do I have to return an item?"
INTERNAL_DOCS = {
    "escalation-procedure",
    "refund-approval-limits",
    "fraud-handling",
    "outage-communication",
}
POLICY_COUNT = sum(1 for p in POLICIES.glob("*.md") if not p.name.lower().startswith("readme"))
SUMMARY = re.compile(
    r"^ingested (?P<folder>.+): added (?P<added>\d+), changed (?P<changed>\d+), "
    r"removed (?P<removed>\d+), unchanged (?P<unchanged>\d+), failed (?P<failed>\d+) "
    r"\((?P<embedded>\d+) passages embedded\) in (?P<seconds>\d+\.\d) s$",
    re.MULTILINE,
)
HIT_LINE = re.compile(
    r"^(?P<rank>\d+)\. \[(?P<doc_id>[a-z0-9._-]+) v(?P<version>\d+)\] (?P<section>.+?)  "
    r"\(score (?P<score>\d+\.\d{3})\)$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class CLI:
    """Runs the console script against one data directory, from a clean working directory."""

    data: Path
    cwd: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")}
        env["SUPPORTBOT_DATA_DIR"] = str(self.data)
        env["SUPPORTBOT_POLICIES_DIR"] = str(POLICIES)
        # The plain wording: fast; the tone model has its own tests, and the demo test below.
        env["SUPPORTBOT_GENERATOR"] = "template"
        return env

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(SUPPORTBOT), *args],
            input=stdin,
            env=self.env(),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=300,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stdout, proc.stdout
        return proc

    def search(self, question: str, *args: str) -> dict:
        proc = self.run("search", question, "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def copy(self, target: Path) -> CLI:
        """The same setup on a copy of the data directory, for tests that change it."""
        shutil.copytree(self.data, target / "data", symlinks=True)
        return CLI(target / "data", self.cwd)


def fresh_data(root: Path, model_cache: Path) -> Path:
    """An empty data directory whose model cache links to the session's exported model."""
    data = root / "data"
    (data / "models").mkdir(parents=True)
    for f in model_cache.glob("*.onnx"):
        (data / "models" / f.name).symlink_to(f)
    return data


def error_line(stderr: str) -> str:
    """The single `error: ...` line of stderr, in supportbot's own one-line format."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def doc_ids(result: dict) -> list[str]:
    return [h["doc_id"] for h in result["hits"]]


@pytest.fixture(scope="module")
def first_ingest(tmp_path_factory, model_cache, embedder):
    """The sample policies ingested once, with the default folder; shared by this module."""
    root = tmp_path_factory.mktemp("cli")
    cli = CLI(fresh_data(root, model_cache), root)
    proc = cli.run("ingest")
    return cli, proc


@pytest.fixture
def cli(first_ingest) -> CLI:
    """The console script on the shared, already ingested data directory (do not change it)."""
    return first_ingest[0]


@pytest.fixture
def empty_cli(tmp_path, model_cache, embedder) -> CLI:
    """The console script on a data directory nothing was ever ingested into."""
    return CLI(fresh_data(tmp_path, model_cache), tmp_path)


# --- ingest ----------------------------------------------------------------------------


def test_ingest_prints_a_summary_with_counts_and_time(first_ingest):
    """A first ingest of the policies folder prints every count and the time, and exits 0."""
    _, proc = first_ingest
    assert proc.returncode == 0, proc.stderr
    match = SUMMARY.search(proc.stdout)
    assert match, proc.stdout
    assert Path(match["folder"]).resolve() == POLICIES
    assert int(match["added"]) == POLICY_COUNT
    assert match["changed"] == match["removed"] == match["unchanged"] == match["failed"] == "0"
    assert int(match["embedded"]) > POLICY_COUNT
    assert float(match["seconds"]) > 0


def test_second_ingest_reports_everything_unchanged(cli):
    """Ingesting the same folder again embeds nothing and reports every document unchanged."""
    proc = cli.run("ingest", str(POLICIES))
    assert proc.returncode == 0, proc.stderr
    match = SUMMARY.search(proc.stdout)
    assert match, proc.stdout
    assert int(match["unchanged"]) == POLICY_COUNT
    assert match["added"] == match["changed"] == match["removed"] == match["embedded"] == "0"


def test_ingest_json_output_parses(cli):
    """`ingest --json` prints one JSON object listing the documents by key."""
    proc = cli.run("ingest", str(POLICIES), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["unchanged"]) == POLICY_COUNT
    assert {"refunds@v2", "refunds@v3", "fraud-handling@v1"} <= set(report["unchanged"])
    assert report["added"] == report["changed"] == report["removed"] == report["failed"] == []
    assert report["kept"] == []
    assert report["passages_embedded"] == 0
    assert isinstance(report["seconds"], float)


def test_ingest_reports_binary_and_oversized_files_and_keeps_going(tmp_path, empty_cli):
    """A binary file and a 50 MB file are each reported with their field; good files still load."""
    folder = tmp_path / "policies"
    folder.mkdir()
    shutil.copy(POLICIES / "shipping-uk.md", folder)
    (folder / "logo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with (folder / "huge.md").open("w", encoding="utf-8") as fh:
        fh.write("---\nid: huge\ntitle: Huge\nversion: 1\naudience: customer\n---\n")
        fh.write("word " * 10_000_000)

    proc = empty_cli.run("ingest", str(folder))
    assert proc.returncode == 1
    failed = sorted(ln for ln in proc.stderr.splitlines() if ln.startswith("failed: "))
    assert len(failed) == 2, proc.stderr
    assert failed[0].startswith(f"failed: {folder / 'huge.md'}: size: file is 50.0 MB")
    assert "SUPPORTBOT_MAX_DOCUMENT_BYTES" in failed[0]
    assert failed[1] == f"failed: {folder / 'logo.md'}: encoding: binary file, not text"
    match = SUMMARY.search(proc.stdout)
    assert match, proc.stdout
    assert (match["added"], match["failed"]) == ("1", "2")

    again = empty_cli.run("ingest", str(folder), "--json")
    assert again.returncode == 1
    report = json.loads(again.stdout)
    assert sorted((f["path"], f["field"]) for f in report["failed"]) == [
        (str(folder / "huge.md"), "size"),
        (str(folder / "logo.md"), "encoding"),
    ]
    assert report["unchanged"] == ["shipping-uk@v2"]


def test_ingest_of_a_folder_that_is_not_there_is_an_error(tmp_path, empty_cli):
    """Ingesting a folder that does not exist is a one-line error."""
    path = tmp_path / "nowhere"
    proc = empty_cli.run("ingest", str(path))
    assert proc.returncode == 2
    assert error_line(proc.stderr) == f"error: {path}: path: no such folder"


# --- search ----------------------------------------------------------------------------


def test_search_lists_current_refunds_policy_first(cli):
    """The return-window question finds refunds v3 at the top, with id, version, section, score."""
    proc = cli.run("search", RETURN_QUESTION)
    assert proc.returncode == 0, proc.stderr
    hits = list(HIT_LINE.finditer(proc.stdout))
    assert len(hits) == 5, proc.stdout
    assert [int(h["rank"]) for h in hits] == [1, 2, 3, 4, 5]
    assert (hits[0]["doc_id"], hits[0]["version"]) == ("refunds", "3")
    assert hits[0]["section"].startswith("Refunds and returns > ")
    assert "45 days" in proc.stdout
    scores = [float(h["score"]) for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert ("refunds", "2") not in {(h["doc_id"], h["version"]) for h in hits}


def test_search_json_carries_the_same_fields(cli):
    """`search --json` gives each hit its doc id, version, section, score and text."""
    result = cli.search(RETURN_QUESTION, "--top-k", "3")
    assert result["query"] == RETURN_QUESTION
    assert len(result["hits"]) == 3
    top = result["hits"][0]
    assert (top["doc_id"], top["version"]) == ("refunds", 3)
    assert top["section"] == "Refunds and returns > Return window"
    assert "45 days" in top["text"]
    assert top["chunk_id"].startswith("refunds@v3#")
    assert 0 < top["score"] <= 1


def test_as_of_an_earlier_day_returns_the_version_then_in_force(cli):
    """On 2025-06-01 the return question finds refunds v2 (30 days), never v3 or future docs."""
    result = cli.search(RETURN_QUESTION, "--as-of", "2025-06-01", "--top-k", "20")
    top = result["hits"][0]
    assert (top["doc_id"], top["version"]) == ("refunds", 2)
    assert "30 days" in top["text"]
    versions = {(h["doc_id"], h["version"]) for h in result["hits"]}
    assert ("refunds", 3) not in versions
    assert "plus-price-change-2027" not in doc_ids(result)


@pytest.mark.parametrize(("as_of", "visible"), [("2026-06-01", False), ("2027-06-01", True)])
def test_future_policy_is_found_only_once_in_force(cli, as_of, visible):
    """The 2027 Plus price change is hidden before 1 March 2027 and found after it."""
    result = cli.search(
        "What will Northwind Plus cost from March 2027?", "--as-of", as_of, "--top-k", "20"
    )
    assert ("plus-price-change-2027" in doc_ids(result)) is visible


@pytest.mark.parametrize(
    ("question", "internal_doc"),
    [
        ("what is the refund approval limit for a team lead", "refund-approval-limits"),
        ("how do we handle suspected fraud", "fraud-handling"),
    ],
)
def test_internal_documents_reach_staff_but_never_customers(cli, question, internal_doc):
    """Questions aimed at internal documents show none to customers, and find them for staff."""
    customer = cli.search(question, "--top-k", "20")
    assert not set(doc_ids(customer)) & INTERNAL_DOCS
    staff = cli.search(question, "--audience", "internal")
    assert internal_doc in doc_ids(staff)


def test_history_text_carries_the_conversation(cli):
    """A follow-up with --history-text is searched in context and finds international returns."""
    result = cli.search(
        "what about international orders?", "--history-text", "Can I return a kettle?"
    )
    assert result["context"] == "Can I return a kettle?"
    assert "international-orders" in doc_ids(result)
    assert any("return" in h["section"].lower() for h in result["hits"][:3])


def test_history_file_carries_the_conversation(cli, tmp_path):
    """A --history JSON file supplies the earlier turns: the user's, then the reply's opening."""
    history = tmp_path / "history.json"
    history.write_text(
        json.dumps(
            [
                {"role": "user", "text": "Can I return a kettle?"},
                {"role": "assistant", "text": "Yes, within 45 days."},
            ]
        ),
        encoding="utf-8",
    )
    result = cli.search("what about international orders?", "--history", str(history))
    assert result["context"] == "Can I return a kettle? Yes, within 45 days."
    assert "international-orders" in doc_ids(result)


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["", " \t\n ", "\x07\x1b\x7f?!"])
def test_question_without_words_is_an_error(cli, question):
    """An empty, blank, or control-and-punctuation-only question is a one-line error."""
    proc = cli.run("search", question)
    assert proc.returncode == 2
    assert error_line(proc.stderr) == "error: the question is empty: ask something in words"
    assert proc.stdout == ""


def test_control_characters_are_cleaned_from_a_question(cli):
    """Control characters inside a question are dropped and the question is still answered."""
    result = cli.search("How long\x07 do I have\x1b[31m to return\tan item?\x0b")
    assert result["query"] == "How long do I have [31m to return an item?"
    assert "refunds" in doc_ids(result)


def test_very_long_question_is_cut_not_refused(cli):
    """A 100 KB question is cut to the question limit and still answered."""
    question = (RETURN_QUESTION + " ") * (100_000 // (len(RETURN_QUESTION) + 1))
    assert len(question) > 99_000
    result = cli.search(question)
    assert len(result["query"]) == 4000
    assert doc_ids(result)[0] == "refunds"


@pytest.mark.parametrize(
    "question",
    [
        "Сколько дней у меня есть, чтобы вернуть товар?",  # noqa: RUF001 - Cyrillic on purpose
        "退货期限是多久？",  # noqa: RUF001 - a full-width question mark on purpose
    ],
)
def test_question_in_another_script_gives_a_sensible_result(cli, question):
    """A question in another script is searched: at most top-k customer passages, no crash."""
    result = cli.search(question)
    assert result["query"] == question
    assert len(result["hits"]) <= 5
    assert not set(doc_ids(result)) & INTERNAL_DOCS


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cannot read"),
        ('{"role": "user", "text": "hi"}', "expected a JSON list"),
    ],
)
def test_bad_history_file_is_an_error(cli, tmp_path, content, problem):
    """Malformed history JSON, or JSON that is not a list of turns, is a one-line error."""
    history = tmp_path / "history.json"
    history.write_text(content, encoding="utf-8")
    proc = cli.run("search", "what about international orders?", "--history", str(history))
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert "--history" in line
    assert problem in line
    assert proc.stdout == ""


def test_search_before_any_ingest_is_an_error(empty_cli):
    """Searching before anything was ingested says to run ingest, and creates no index."""
    proc = empty_cli.run("search", RETURN_QUESTION)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert "no index" in line
    assert "supportbot ingest" in line
    assert not (empty_cli.data / "index").exists()


def test_search_of_an_empty_index_is_an_error(tmp_path, empty_cli):
    """Searching an index that holds no passages says to run ingest instead of finding nothing."""
    folder = tmp_path / "empty-policies"
    folder.mkdir()
    assert empty_cli.run("ingest", str(folder)).returncode == 0
    proc = empty_cli.run("search", RETURN_QUESTION)
    assert proc.returncode == 2
    assert "is empty" in error_line(proc.stderr)


def _garble_manifests(index: Path) -> None:
    for manifest in index.rglob("*.manifest"):
        manifest.write_bytes(b"\x00garbage" * 8)


def _garble_data(index: Path) -> None:
    for data in (index / "chunks.lance" / "data").glob("*.lance"):
        data.write_bytes(b"\x00garbage" * 100)


@pytest.mark.parametrize("damage", [_garble_manifests, _garble_data])
def test_search_of_a_corrupted_index_is_an_error(cli, tmp_path, damage):
    """A damaged index gives a one-line error naming the problem, never a traceback."""
    broken = cli.copy(tmp_path)
    damage(broken.data / "index")
    proc = broken.run("search", RETURN_QUESTION)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert "index" in line or "search failed" in line
    assert proc.stdout == ""


# --- ask, chat and demo ----------------------------------------------------------------

AUDIT_ID = re.compile(r"audit id (?P<id>[0-9a-f]{32})$", re.MULTILINE)


def audit_records(cli: CLI) -> dict[str, dict]:
    folder = cli.data / "audit"
    records = AuditLog(folder).records() if folder.exists() else []
    return {r["audit_id"]: r for r in records if "audit_id" in r}


def ask(cli: CLI, question: str, *args: str) -> dict:
    proc = cli.run("ask", question, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_ask_prints_the_reply_its_sources_and_audit_id(cli):
    """`ask` prints a cited answer, the sources it cites and an audit id that is on record."""
    proc = cli.run("ask", RETURN_QUESTION)
    assert proc.returncode == 0, proc.stderr
    assert "[1]" in proc.stdout
    assert "Sources:" in proc.stdout
    assert "Refunds and returns" in proc.stdout
    assert "decision: answer" in proc.stdout
    found = AUDIT_ID.search(proc.stdout)
    assert found, proc.stdout
    record = audit_records(cli)[found["id"]]
    assert record["question"] == RETURN_QUESTION
    assert record["decision"]["outcome"] == "answer"


def test_ask_json_has_text_decision_citations_and_audit_id(cli):
    """`ask --json` is one object whose citations name document, version, section and url."""
    reply = ask(cli, RETURN_QUESTION)
    assert reply["decision"] == "answer"
    assert re.fullmatch(r"[0-9a-f]{32}", reply["audit_id"])
    assert reply["citations"]
    first = reply["citations"][0]
    assert first["doc_id"] == "refunds"
    assert first["version"] == 3
    assert first["url"].startswith("https://")
    assert first["section"]
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", reply["text"])}
    assert numbers == {c["number"] for c in reply["citations"]}


def test_ask_with_a_history_file_answers_the_follow_up(cli, tmp_path):
    """A history file in the eval sets' format makes a follow-up answerable."""
    history = tmp_path / "history.json"
    history.write_text(
        json.dumps(
            [
                {"role": "user", "text": RETURN_QUESTION},
                {"role": "assistant", "text": "You can return most items within 45 days."},
            ]
        ),
        encoding="utf-8",
    )
    reply = ask(cli, "what about international orders?", "--history", str(history))
    assert reply["decision"] == "answer"
    assert "international-orders" in {c["doc_id"] for c in reply["citations"]}


def test_ask_with_an_empty_history_file_is_a_plain_question(cli, tmp_path):
    """An empty history file means no earlier turns, not an error."""
    history = tmp_path / "history.json"
    history.write_text("", encoding="utf-8")
    reply = ask(cli, RETURN_QUESTION, "--history", str(history))
    assert reply["decision"] == "answer"


def test_ask_with_a_malformed_history_file_is_an_error(cli, tmp_path):
    """A malformed history is a one-line error, and nothing is answered."""
    history = tmp_path / "history.json"
    history.write_text('[{"role": "robot", "text": 3}]', encoding="utf-8")
    proc = cli.run("ask", RETURN_QUESTION, "--history", str(history))
    assert proc.returncode == 2
    assert "expected a JSON list" in error_line(proc.stderr)
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("question", "decision"),
    [
        ("Do you offer interior design consultations?", "abstain"),
        ("🙂🙂🙂", "clarify"),
        ("<@U0123ABC>", "clarify"),
        ("", "clarify"),
        ("How long does it take?", "clarify"),
    ],
)
def test_ask_abstains_or_clarifies_and_records_it(cli, question, decision):
    """Uncovered, wordless and vague messages get a safe reply and an audit record."""
    reply = ask(cli, question)
    assert reply["decision"] == decision
    assert reply["citations"] == []
    assert reply["handoff"] is (decision == "abstain")
    assert audit_records(cli)[reply["audit_id"]]["decision"]["outcome"] == decision


def test_ask_from_a_customer_never_shows_internal_policies(cli):
    """An internal-only question asked as a customer cites no internal document."""
    question = "What refund amount can an agent approve without a manager?"
    customer = ask(cli, question)
    assert not {c["doc_id"] for c in customer["citations"]} & INTERNAL_DOCS
    staff = ask(cli, question, "--audience", "internal")
    assert "refund-approval-limits" in {c["doc_id"] for c in staff["citations"]}


def test_ask_on_a_corrupted_index_is_an_error(cli, tmp_path):
    """A damaged index gives a one-line error, never a traceback."""
    broken = cli.copy(tmp_path)
    _garble_manifests(broken.data / "index")
    proc = broken.run("ask", RETURN_QUESTION)
    assert proc.returncode == 2
    assert "index" in error_line(proc.stderr)


def test_chat_keeps_the_conversation(cli):
    """`chat` answers a follow-up from the turns before it, and /quit ends it."""
    proc = cli.run(
        "chat", stdin=f"{RETURN_QUESTION}\nwhat about international orders?\n/quit\nnever asked\n"
    )
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.split("bot> ")[1:]
    assert len(replies) == 2
    assert "Refunds and returns" in replies[0]
    assert "International orders" in replies[1]
    ids = AUDIT_ID.findall(proc.stdout)
    assert len(ids) == 2
    second = audit_records(cli)[ids[1]]
    assert second["history"][0]["text"] == RETURN_QUESTION


def test_demo_plays_every_kind_of_reply(cli):
    """`supportbot demo` shows an answer, a follow-up, an abstention, a clarification and
    keeps internal policies from the customer; every reply is on record."""
    proc = cli.run("demo")
    assert proc.returncode == 0, proc.stderr
    decisions = re.findall(r"^decision: (\w+)", proc.stdout, re.MULTILINE)
    assert decisions[:5] == ["answer", "answer", "abstain", "clarify", "abstain"]
    sections = proc.stdout.split("── ")
    customer_internal = next(s for s in sections if "asked by a customer" in s)
    assert "Agent refund approval limits" not in customer_internal
    staff = next(s for s in sections if "from a support agent" in s)
    assert "Agent refund approval limits" in staff
    records = audit_records(cli)
    assert all(i in records for i in AUDIT_ID.findall(proc.stdout))
