"""The chatbot app (utils/chatbot_app.py) and its memory policies (utils/chat_memory.py).

Most tests put the app in front of a small fake OpenAI-compatible server in this process, which records what it
is sent and can be told to answer slowly, fail, or break off mid-stream: that makes every path of the app
testable in a second. The last tests run the real thing: `python -m utils.chatbot_app` as a learner starts it,
with the course's LLM server and the real SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from utils import chat_memory
from utils.chat_memory import Conversation, full_history, prompt_messages, sliding_window, summary_memory
from utils.chatbot_app import PAGE, Settings, create_app, main
from utils.servers import background_server, free_port, non_loopback_address, port_is_free

ROOT = Path(__file__).resolve().parent.parent
REPLY = "Ingrid is a lovely name for a dog."


# ------------------------------------------------------------------------------ memory policies, no model
def words(messages: list[dict]) -> int:
    """A stand-in token counter: words plus 3 per message (like a template's framing)."""
    return sum(len(m["content"].split()) + 3 for m in messages)


def exchanges(n: int, size: int = 5) -> list[dict]:
    turns = []
    for i in range(n):
        turns += [{"role": "user", "content": " ".join([f"q{i}"] * size)},
                  {"role": "assistant", "content": " ".join([f"a{i}"] * size)}]
    return turns


def test_full_history_sends_everything_in_order():
    turns = exchanges(3)
    assert full_history("sys", turns, "new") == [{"role": "system", "content": "sys"}, *turns,
                                                 {"role": "user", "content": "new"}]


@pytest.mark.parametrize("budget", [8, 23, 24, 39, 40, 60, 1000])
def test_the_window_keeps_the_newest_whole_exchanges_that_fit(budget):
    turns = exchanges(6)  # each exchange: 2 x (5 + 3) = 16; system "sys" 4, new message 4
    messages = sliding_window("sys", turns, "new", budget, words)
    kept = messages[1:-1]
    assert words(messages) <= budget
    assert kept == turns[len(turns) - len(kept):] and len(kept) % 2 == 0  # a suffix of whole exchanges
    if len(kept) < len(turns):  # maximal: one more exchange would not fit
        assert words(full_history("sys", turns[len(turns) - len(kept) - 2:], "new")) > budget
    assert len(kept) // 2 == min(6, (budget - 8) // 16)


def test_the_window_refuses_what_cannot_fit_and_half_exchanges():
    with pytest.raises(ValueError, match="alone take 13 tokens, more than the budget of 12"):
        sliding_window("sys", exchanges(2), "a much longer message than that", 12, words)
    with pytest.raises(ValueError, match="whole exchanges"):
        sliding_window("sys", exchanges(2)[:3], "new", 100, words)


def test_the_summary_folds_what_falls_out_of_the_window_and_rides_in_the_system_prompt():
    calls = []

    def summarise(summary: str, turns: list[dict]) -> str:
        calls.append((summary, [m["content"].split()[0] for m in turns]))
        return f"S{len(calls)}"

    conversation = Conversation("sys")
    sent = []
    for i in range(6):
        sent.append(summary_memory(conversation, f"q{i} " * 5, 40, words, summarise))
        conversation.add_exchange(f"q{i} " * 5, f"a{i} " * 5)
    assert all(words(messages) <= 40 for messages in sent)
    # the window holds one exchange (16) beside system (4 + summary) and the new message (8): each turn from
    # the third folds the oldest exchange it can no longer send, exactly once
    assert calls == [("", ["q0", "a0"]), ("S1", ["q1", "a1"]), ("S2", ["q2", "a2"]), ("S3", ["q3", "a3"])]
    assert conversation.summary == "S4" and conversation.summarised == 8
    assert sent[-1][0] == {"role": "system", "content": f"sys\n\n{chat_memory.SUMMARY_HEADER} S4"}
    assert [m["content"].split()[0] for m in sent[-1][1:]] == ["q4", "a4", "q5"]


def test_a_summary_that_grows_makes_the_window_fold_again():
    long_summary = lambda summary, turns: "word " * 20  # noqa: E731 (a summary of 20 "tokens")
    conversation = Conversation("sys")
    for i in range(3):
        conversation.add_exchange(f"q{i} " * 5, f"a{i} " * 5)
    messages = summary_memory(conversation, "new", 50, words, long_summary)
    assert words(messages) <= 50
    assert conversation.summarised == 4  # one exchange fell out; the long summary then pushed out a second


def test_prompt_messages_checks_its_arguments():
    conversation = Conversation("sys", exchanges(2))
    assert prompt_messages(conversation, "x", "full", 1, words) == full_history("sys", conversation.turns, "x")
    with pytest.raises(ValueError, match="not a memory policy"):
        prompt_messages(conversation, "x", "everything", 100, words)
    with pytest.raises(ValueError, match="positive number of tokens"):
        prompt_messages(conversation, "x", "window", 0, words)
    with pytest.raises(ValueError, match="needs a summarise"):
        prompt_messages(conversation, "x", "summary", 100, words)


def test_the_summary_request_shows_the_model_the_summary_and_the_turns():
    request = chat_memory.summary_request("Earlier.", [{"role": "user", "content": "My dog is Ingrid."},
                                                       {"role": "assistant", "content": "Nice!"}])
    text = request[-1]["content"]
    assert "Summary so far: Earlier." in text and "User: My dog is Ingrid.\nAssistant: Nice!" in text


# ------------------------------------------------------------------------------ a fake LLM API
class FakeLLM:
    """An OpenAI-compatible /v1/chat/completions in a thread: it records requests and answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.mode, self.delay, self.reply = "ok", 0.0, REPLY
        self.context: int | None = None  # the max_model_len /v1/models lists, if any
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = FastAPI()
        app.post("/v1/chat/completions")(self.complete)
        app.get("/v1/models")(lambda: {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0,
                                       "owned_by": "x", **({"max_model_len": self.context} if self.context else {})}]})
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=1))

    async def complete(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        if self.mode == "slow":
            await asyncio.sleep(5)
        if self.mode in ("500", "401"):
            return JSONResponse({"error": {"message": "fake failure", "type": "x", "param": None, "code": None}},
                                status_code=int(self.mode))
        if not body.get("stream"):  # a summary request
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": f"summary {len(self.requests)}"},
                                 "finish_reason": "stop"}]}
        return StreamingResponse(self.chunks(body["model"]), media_type="text/event-stream")

    async def chunks(self, model: str):
        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model,
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for i, piece in enumerate(re.findall(r"\S+\s*", self.reply)):
            if self.mode == "break" and i == 3:
                yield 'data: {"error": {"message": "the model crashed", "type": "server_error"}}\n\n'
                return
            await asyncio.sleep(self.delay)
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        yield "data: [DONE]\n\n"

    def __enter__(self) -> "FakeLLM":
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from utils.hub import model_path

    return AutoTokenizer.from_pretrained(model_path("instruct_llm", "smoke"))


@pytest.fixture
def llm():
    with FakeLLM() as fake:
        yield fake


def app_client(tokenizer, base_url: str, **settings) -> TestClient:
    app = create_app(Settings(base_url, "fake-model", **settings), tokenizer)
    return TestClient(app, base_url="http://127.0.0.1")


def events_of(text: str) -> list[dict]:
    return [json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]


def new_session(client, **body) -> str:
    return client.post("/api/sessions", json=body).json()["session"]


# ------------------------------------------------------------------------------ the app, against the fake
def test_a_message_gets_memory_then_tokens_then_done_and_joins_the_history(tokenizer, llm):
    with app_client(tokenizer, llm.base_url) as client:
        session = new_session(client)
        events = events_of(client.post("/api/chat", json={"session": session, "message": " My dog? "}).text)
        history = client.get(f"/api/sessions/{session}").json()
    assert [e["type"] for e in events] == ["memory"] + ["token"] * len(REPLY.split()) + ["done"]
    assert "".join(e["text"] for e in events if e["type"] == "token") == REPLY
    sent = llm.requests[0]["messages"]
    assert events[0]["prompt_tokens"] == len(tokenizer.apply_chat_template(sent, add_generation_prompt=True)["input_ids"])
    assert events[-1] == {"type": "done", "finish_reason": "stop",
                          "completion_tokens": len(tokenizer(REPLY, add_special_tokens=False)["input_ids"])}
    assert history["turns"] == [{"role": "user", "content": "My dog?"}, {"role": "assistant", "content": REPLY}]
    assert sent[0] == {"role": "system", "content": history["system"]} and sent[-1]["content"] == "My dog?"


def test_each_session_has_its_own_system_prompt_and_history(tokenizer, llm):
    with app_client(tokenizer, llm.base_url, system_prompt="Default.") as client:
        pirate, plain = new_session(client, system="Talk like a pirate."), new_session(client)
        client.post("/api/chat", json={"session": pirate, "message": "Hi"})
        client.post("/api/chat", json={"session": plain, "message": "Hello"})
        client.post("/api/chat", json={"session": pirate, "message": "Again"})
    first, second, third = (r["messages"] for r in llm.requests)
    assert first == [{"role": "system", "content": "Talk like a pirate."}, {"role": "user", "content": "Hi"}]
    assert second == [{"role": "system", "content": "Default."}, {"role": "user", "content": "Hello"}]
    assert [m["content"] for m in third] == ["Talk like a pirate.", "Hi", REPLY, "Again"]


@pytest.mark.parametrize("policy", ["window", "summary"])
def test_the_memory_policy_keeps_every_request_within_the_budget(tokenizer, llm, policy):
    from utils.chat import count_tokens

    with app_client(tokenizer, llm.base_url, policy=policy, budget=120) as client:
        session = new_session(client)
        memory = [events_of(client.post("/api/chat", json={"session": session, "message": f"Question {i}?"}).text)[0]
                  for i in range(8)]
    chats = [r for r in llm.requests if r.get("stream")]
    assert all(count_tokens(tokenizer, r["messages"]) <= 120 for r in chats)
    assert [m["prompt_tokens"] for m in memory] == [count_tokens(tokenizer, r["messages"]) for r in chats]
    assert memory[-1]["sent_turns"] < memory[-1]["total_turns"] == 14  # older turns were left out
    assert chats[-1]["messages"][-1]["content"] == "Question 7?" and chats[-1]["messages"][-3]["content"] == "Question 6?"
    summaries = [r for r in llm.requests if not r.get("stream")]
    if policy == "summary":
        assert summaries and memory[-1]["summary"] == f"summary {llm.requests.index(summaries[-1]) + 1}"
        assert chats[-1]["messages"][0]["content"].endswith(memory[-1]["summary"])
    else:
        assert not summaries and memory[-1]["summary"] is None


@pytest.mark.parametrize("mode, message", [
    ("down", "is not reachable (is it running?)"),
    ("slow", "did not answer within 1 s"),
    ("500", "answered 500: fake failure"),
    ("401", "refused the API key (401)"),
    ("break", "reported an error: the model crashed"),
])
def test_llm_failures_become_one_error_event_and_leave_the_history_as_it_was(tokenizer, llm, mode, message):
    llm.mode = mode
    base_url = f"http://127.0.0.1:{free_port()}/v1" if mode == "down" else llm.base_url
    with app_client(tokenizer, base_url, timeout=1.0) as client:
        session = new_session(client)
        started = time.monotonic()
        events = events_of(client.post("/api/chat", json={"session": session, "message": "Hello?"}).text)
        waited = time.monotonic() - started
        turns = client.get(f"/api/sessions/{session}").json()["turns"]
    assert events[-1]["type"] == "error" and message in events[-1]["message"], events[-1]
    assert [e["type"] for e in events].count("error") == 1 and "done" not in [e["type"] for e in events]
    assert turns == [] and waited < 4  # nothing half-finished is kept, and nobody waits for the 5 s answer
    if mode == "break":
        assert [e["text"] for e in events if e["type"] == "token"] == ["Ingrid ", "is ", "a "]


def test_bad_requests_are_refused_with_a_readable_message(tokenizer, llm):
    with app_client(tokenizer, llm.base_url, max_sessions=2) as client:
        first, _, _ = new_session(client), new_session(client), new_session(client)  # the first is forgotten
        cases = {
            "unknown": client.post("/api/chat", json={"session": first, "message": "Hi"}),
            "empty": client.post("/api/chat", json={"session": new_session(client), "message": "   "}),
            "too long": client.post("/api/chat", json={"session": "x", "message": "a" * 8001}),
            "not json": client.post("/api/chat", content="session=x&message=hi",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"}),
        }
        other_host = client.get("/health", headers={"Host": "evil.example"})
    assert {name: r.status_code for name, r in cases.items()} == {"unknown": 404, "empty": 400, "too long": 422,
                                                                  "not json": 415}
    assert "start a new chat" in cases["unknown"].json()["error"]["message"]
    assert "message" in cases["too long"].json()["error"]["message"]
    assert other_host.status_code == 400 and llm.requests == []


def test_a_second_message_while_one_streams_is_refused(tokenizer, llm):
    llm.delay = 0.2
    app = create_app(Settings(llm.base_url, "fake-model"), tokenizer)
    with serve_in_thread(app) as url:
        session = httpx.post(f"{url}/api/sessions", json={}).json()["session"]
        with httpx.stream("POST", f"{url}/api/chat", json={"session": session, "message": "Hi"}) as first:
            lines = first.iter_lines()
            next(line for line in lines if '"token"' in line)  # the first answer is being written
            busy = httpx.post(f"{url}/api/chat", json={"session": session, "message": "And?"})
            list(lines)
        after = httpx.post(f"{url}/api/chat", json={"session": session, "message": "And?"})
    assert busy.status_code == 409 and after.status_code == 200


@contextlib.contextmanager
def serve_in_thread(app):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_tokens_reach_the_client_as_the_llm_writes_them(tokenizer, llm):
    llm.delay = 0.15  # seconds between the fake model's tokens
    app = create_app(Settings(llm.base_url, "fake-model"), tokenizer)
    with serve_in_thread(app) as url:
        session = httpx.post(f"{url}/api/sessions", json={}).json()["session"]
        start, arrivals = time.monotonic(), []
        with httpx.stream("POST", f"{url}/api/chat", json={"session": session, "message": "Hi"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if '"token"' in line:
                    arrivals.append(time.monotonic() - start)
    assert len(arrivals) == len(REPLY.split())
    assert arrivals[-1] - arrivals[0] > 0.1 * (len(arrivals) - 1)  # spread out, not delivered at the end


def test_the_page_is_three_local_files_under_a_strict_content_policy(tokenizer, llm):
    with app_client(tokenizer, llm.base_url) as client:
        responses = {path: client.get(path) for path in ("/", "/static/chat.js", "/static/chat.css")}
    assert all(r.status_code == 200 for r in responses.values())
    assert all(r.headers["content-security-policy"] == "default-src 'self'" for r in responses.values())
    html = responses["/"].text
    assert '<script src="/static/chat.js"' in html and '<link rel="stylesheet" href="/static/chat.css">' in html
    for path in PAGE.iterdir():  # nothing fetched from elsewhere, no inline script or style
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://|//cdn|<script>|style=", text), path.name
    assert {p.name for p in PAGE.iterdir()} == {"index.html", "chat.js", "chat.css"}


def test_the_page_files_are_package_data():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"chatbot_page/\*"', pyproject.split("[tool.setuptools.package-data]")[1])


def test_budget_and_answer_are_fitted_into_a_small_models_context(llm):
    from dataclasses import replace

    from utils.chatbot_app import fit_context, model_context

    settings = Settings(llm.base_url, "fake-model")  # budget 1024 + max_tokens 256
    assert model_context(settings) is None  # the API lists no context (as hosted providers)
    llm.context = 128  # a course GPT of 05.04, served by the course's server
    assert model_context(settings) == 128 and model_context(replace(settings, llm_model="other")) is None
    assert model_context(replace(settings, llm_base_url=f"http://127.0.0.1:{free_port()}/v1")) is None  # down
    fitted = fit_context(settings, 128)
    assert (fitted.budget, fitted.max_tokens) == (64, 64) and fitted.llm_model == "fake-model"
    small = fit_context(replace(settings, budget=50, max_tokens=200), 128)
    assert (small.budget, small.max_tokens) == (50, 64)  # the answer gets at most half the context
    fits = replace(settings, budget=100, max_tokens=28)
    assert fit_context(fits, 128) is fits and fit_context(settings, 8192) is settings
    assert fit_context(settings, None) is settings


def test_settings_refuse_bad_values():
    for bad, match in [(dict(llm_base_url="127.0.0.1:8000"), "http://"), (dict(policy="all"), "memory policy"),
                       (dict(budget=0), "budget"), (dict(max_tokens=1.5), "max_tokens"),
                       (dict(temperature=3), "temperature"), (dict(timeout=0), "timeout")]:
        with pytest.raises(ValueError, match=match):
            Settings(**{"llm_base_url": "http://127.0.0.1:1/v1", "llm_model": "m", **bad})
    assert "secret" not in repr(Settings("http://127.0.0.1:1/v1", "m", "secret"))


@pytest.mark.parametrize("argv, message", [
    (["--llm-base-url", "http://127.0.0.1:1/v1"], "--llm-model is required"),
    (["--port", "0"], "--port must be 1-65535"),
    (["--llm-base-url", "localhost:1", "--llm-model", "m"], "must start with http"),
])
def test_the_command_line_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_chat_runs_the_app():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "-n", "chat", "VENV=" + sys.prefix, "CHAT_ARGS=--port 8123"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"/bin/python -m utils\.chatbot_app --port 8123\s*$", dry.stdout, re.MULTILINE), dry.stdout
    helped = subprocess.run(["make", "help"], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    assert re.search(r"^make chat\s", helped, re.MULTILINE)


# ------------------------------------------------------------------------------ the real app, one command
def _llm_servers_started_by(pid: int) -> list[int]:
    """Process ids of `utils.llm_server` processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid and "utils.llm_server" in cmdline:
                    found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the LLM server process")
def test_one_command_serves_the_real_model_on_loopback_and_stops_its_llm_server():
    port = free_port()
    argv = [sys.executable, "-m", "utils.chatbot_app", "--port", str(port), "--preset", "smoke",
            "--temperature", "0", "--max-tokens", "24"]
    with background_server(argv, port, timeout=300) as process:
        llm_servers = _llm_servers_started_by(process.pid)
        url = f"http://127.0.0.1:{port}"
        session = httpx.post(f"{url}/api/sessions", json={}).json()["session"]
        ask = partial(httpx.post, f"{url}/api/chat", timeout=300)
        ask(json={"session": session, "message": "The secret word is Marisol."})
        answer = "".join(e["text"] for e in events_of(ask(json={"session": session, "message":
                                                                "What is the secret word?"}).text) if e["type"] == "token")
        address = non_loopback_address()
        if address:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{address}:{port}/health", timeout=2)
    assert len(llm_servers) == 1 and "marisol" in answer.lower()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{llm_servers[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{llm_servers[0]}").exists(), "stopping the app must stop the LLM server it started"
    assert port_is_free(port)
