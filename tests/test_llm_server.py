"""The course's LLM server as a learner uses it: a real process on 127.0.0.1, called with the official client.

One server (the real SmolLM2-135M-Instruct, offline) serves most tests; a second one is started with an API
key. Every test could fail: answers are checked against the tokenizer, the schema, the other clients'
answers, or the status and shape OpenAI documents.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from utils.llm_server import MAX_BODY_BYTES, serve_llm
from utils.servers import non_loopback_address, port_is_free

pytestmark = pytest.mark.slow
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def server():
    with serve_llm("smoke", max_batch=16) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(server):
    from transformers import AutoTokenizer

    from utils.hub import model_path

    return AutoTokenizer.from_pretrained(model_path("instruct_llm", "smoke"))


def _health(server) -> dict:
    return httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=10).json()


# ------------------------------------------------------------------------------ the happy paths
def test_models_lists_the_chat_and_the_embedding_model(client, server):
    ids = [m.id for m in client.models.list()]
    assert ids == [server.model, "sentence-transformers/all-MiniLM-L6-v2"]
    assert server.model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_chat_completion_answers_and_counts_tokens_like_the_tokenizer(client, server, tokenizer):
    from utils.chat import count_tokens

    reply = client.chat.completions.create(model=server.model, messages=CAPITAL, temperature=0)
    answer = reply.choices[0].message.content
    assert "Paris" in answer and reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.usage.prompt_tokens == count_tokens(tokenizer, CAPITAL)
    assert reply.usage.completion_tokens == len(tokenizer(answer, add_special_tokens=False).input_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_sends_the_same_text_in_openai_chunks(client, server):
    whole = client.chat.completions.create(model=server.model, messages=CAPITAL, temperature=0, max_tokens=30)
    stream = client.chat.completions.create(model=server.model, messages=CAPITAL, temperature=0, max_tokens=30,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2, "not streamed"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)


def test_async_clients_are_served_side_by_side(server):
    async def ask_all() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        questions = ["Name a colour.", "Name a fruit.", "Name an animal.", "Name a country."]
        replies = await asyncio.gather(*[client.chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=12)
            for q in questions])
        await client.close()
        return [r.choices[0].message.content for r in replies]

    answers = asyncio.run(ask_all())
    assert len(answers) == 4 and all(answers) and len(set(answers)) > 1


def test_max_tokens_stop_and_seed(client, server):
    short = client.chat.completions.create(model=server.model, messages=CAPITAL, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    cut = client.chat.completions.create(model=server.model, messages=CAPITAL, temperature=0, stop=["Paris"])
    assert cut.choices[0].finish_reason == "stop" and "Paris" not in cut.choices[0].message.content
    story = [{"role": "user", "content": "Tell me a short story about a cat."}]
    a, b, c = (client.chat.completions.create(model=server.model, messages=story, temperature=1.0, seed=s,
                                              max_tokens=24).choices[0].message.content for s in (1, 1, 2))
    assert a == b and a != c


# ------------------------------------------------------------------------------ structured output and tools
Short = Annotated[str, Field(max_length=40)]


class City(BaseModel):
    """Every string and list is bounded, so a complete answer always fits in max_tokens (one token ≥ 1 char)."""

    name: Short
    country: Short
    population_millions: float
    landmarks: list[Short] = Field(max_length=3)
    kind: Literal["capital", "other"]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_structured_output_always_parses_and_validates(client, server, temperature):
    schema = City.model_json_schema()
    for i, town in enumerate(["Paris", "Tokyo", "Lagos"]):
        reply = client.chat.completions.parse(
            model=server.model, temperature=temperature, seed=i, max_tokens=600, response_format=City,
            messages=[{"role": "user", "content": f"Describe {town} as JSON."}])
        content = reply.choices[0].message.content
        jsonschema.validate(json.loads(content), schema)
        assert isinstance(reply.choices[0].message.parsed, City), content


def test_json_object_mode_gives_json_objects_whenever_the_model_finishes(client, server):
    # Free-form JSON has no bounds: a 135M model may nest or ramble until max_tokens ("length"), and a cut
    # document cannot parse. Every answer that finished must be a JSON object, and most of these do finish.
    ask = [{"role": "user", "content": "Reply in JSON: an object with the keys name and age of a dog called "
                                       "Rex, aged 3."}]
    finished = 0
    for seed in range(4):
        reply = client.chat.completions.create(model=server.model, temperature=0.7, seed=seed, max_tokens=150,
                                               response_format={"type": "json_object"}, messages=ask)
        if reply.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(reply.choices[0].message.content), dict)
            finished += 1
    assert finished >= 2


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}},
                   "required": ["zone"]}}}


@pytest.mark.parametrize("stream", [False, True])
def test_required_and_named_tool_calls_parse_against_their_schemas(client, server, stream):
    asks = [("required", "What's the weather in Paris?"),
            ({"type": "function", "function": {"name": "get_time"}}, "What time is it in Tokyo?")]
    for choice, question in asks:
        reply = client.chat.completions.create(model=server.model, temperature=0, max_tokens=120, stream=stream,
                                               tools=[WEATHER, TIME], tool_choice=choice,
                                               messages=[{"role": "user", "content": question}])
        if stream:
            chunks = list(reply)
            calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
            finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason][-1]
        else:
            calls, finish = reply.choices[0].message.tool_calls, reply.choices[0].finish_reason
            assert reply.choices[0].message.content is None
        assert calls and finish == "tool_calls"
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
        for call in calls:
            assert call.id.startswith("call_") and call.type == "function"
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
        if isinstance(choice, dict):
            assert {c.function.name for c in calls} == {"get_time"}


def test_auto_tools_answer_in_text_or_in_valid_calls_and_a_tool_result_can_be_sent_back(client, server):
    messages = [{"role": "user", "content": "What's the weather in Paris, in celsius?"}]
    reply = client.chat.completions.create(model=server.model, temperature=0, max_tokens=80, tools=[WEATHER],
                                           messages=messages)
    message = reply.choices[0].message
    if message.tool_calls:
        json.loads(message.tool_calls[0].function.arguments)
        assert reply.choices[0].finish_reason == "tool_calls"
    else:
        assert message.content and reply.choices[0].finish_reason in ("stop", "length")
    call_id = "call_abc123"
    follow_up = messages + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    final = client.chat.completions.create(model=server.model, temperature=0, max_tokens=60, tools=[WEATHER],
                                           tool_choice="none", messages=follow_up)
    assert final.choices[0].message.content and final.choices[0].finish_reason in ("stop", "length")


# ------------------------------------------------------------------------------ embeddings
def test_embeddings_are_minilm_as_floats_and_base64(client, server):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from utils.hub import model_path

    texts = ["The cat sat on the mat.", "A feline rested on the rug.", "Stock prices fell sharply."]
    default = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=texts)  # base64
    floats = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=texts,
                                      encoding_format="float")
    ours = np.array([d.embedding for d in default.data])
    assert ours.shape == (3, 384) and np.allclose(ours, [d.embedding for d in floats.data], atol=1e-6)
    reference = SentenceTransformer(model_path("embedding"), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.allclose(ours, reference, atol=1e-5)
    assert ours[0] @ ours[1] > ours[0] @ ours[2] + 0.3  # the paraphrase is nearer than the unrelated one
    assert default.usage.prompt_tokens > 3 * 5


# ------------------------------------------------------------------------------ bad requests
def _status_and_error(call) -> tuple[int, dict]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    body = caught.value.response.json()
    assert set(body) == {"error"} and body["error"]["message"] and "Traceback" not in caught.value.response.text
    return caught.value.status_code, body["error"]


def test_bad_requests_get_openai_shaped_errors(client, server):
    chat = client.chat.completions.create
    status, error = _status_and_error(lambda: chat(model="gpt-17", messages=CAPITAL))
    assert status == 404 and error["code"] == "model_not_found" and server.model in error["message"]
    status, error = _status_and_error(lambda: chat(model=server.model, messages=[{"role": "wizard", "content": "hi"}]))
    assert status == 400 and "role" in error["message"] and "user" in error["message"]
    status, error = _status_and_error(lambda: chat(model=server.model, messages=[]))
    assert status == 400 and error["param"] == "messages"
    status, error = _status_and_error(lambda: chat(model=server.model, messages=CAPITAL, max_tokens=100_000))
    assert status == 400 and error["code"] == "context_length_exceeded" and "8192" in error["message"]
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"}}}}}
    status, error = _status_and_error(lambda: chat(model=server.model, messages=CAPITAL, response_format=bad_schema))
    assert status == 400 and error["param"] == "response_format" and "format" in error["message"]
    status, error = _status_and_error(lambda: chat(model=server.model, messages=CAPITAL, n=2))
    assert status == 400 and "n=1" in error["message"]
    status, error = _status_and_error(lambda: chat(model=server.model, messages=CAPITAL, tools=[{"type": "nope"}]))
    assert status == 400 and error["param"] == "tools"
    status, error = _status_and_error(lambda: client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2",
                                                                        input=[1, 2, 3]))
    assert status == 400 and "token-id arrays" in error["message"]


def test_raw_http_errors_keep_the_shape_too(server):
    base = server.base_url
    for response, status in [
        (httpx.post(f"{base}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (httpx.post(f"{base}/chat/completions", content=b"x" * (MAX_BODY_BYTES + 1)), 413),
        (httpx.get(f"{base}/no/such/route"), 404),
    ]:
        assert response.status_code == status and set(response.json()) == {"error"}, response.text


# ------------------------------------------------------------------------------ keys, load, cancellation, cleanup
def test_a_server_with_a_key_refuses_requests_without_it():
    with serve_llm("smoke", api_key="sk-course-test") as server:
        for key in ("wrong", "none"):
            bad = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                bad.models.list()
            assert caught.value.status_code == 401 and "sk-course-test" not in caught.value.response.text
        assert httpx.get(f"{server.base_url}/models").status_code == 401  # no Authorization header at all
        good = openai.OpenAI(base_url=server.base_url, api_key="sk-course-test", max_retries=0)
        assert [m.id for m in good.models.list()][0] == server.model


CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid",
            "England": "London", "Russia": "Moscow", "China": "Beijing"}


def test_32_concurrent_clients_each_get_their_own_answer_and_a_leaver_harms_nobody(server):
    # Half the clients ask for a capital: the answer depends on the model's own computation for that row,
    # so rows mixed up in the batch would name another capital. The other half get a ticket number forced
    # by their own JSON schema: answers delivered to the wrong client would carry another ticket.
    async def capital(client, country: str) -> str:
        reply = await client.chat.completions.create(
            model=server.model, temperature=0, max_tokens=12,
            messages=[{"role": "user", "content": f"What is the capital of {country}? Answer in one word."}])
        return reply.choices[0].message.content

    async def ticket(client, i: int) -> str:
        schema = {"type": "object", "properties": {"ticket": {"const": f"T{i:03d}"}}, "required": ["ticket"]}
        reply = await client.chat.completions.create(
            model=server.model, temperature=1.0, seed=i, max_tokens=30,
            messages=[{"role": "user", "content": f"Repeat your ticket number: T{i:03d}."}],
            response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}})
        return json.loads(reply.choices[0].message.content)["ticket"]

    async def leaver(client) -> int:
        stream = await client.chat.completions.create(
            model=server.model, stream=True, max_tokens=2000, temperature=1.0,
            messages=[{"role": "user", "content": "Write a very long essay about the sea."}])
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.close()  # hang up mid-stream
        return seen

    async def everyone() -> tuple[list[str], list[str], int]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=300)
        countries = list(CAPITALS) * 2
        results = await asyncio.gather(leaver(client), *[capital(client, c) for c in countries],
                                       *[ticket(client, i) for i in range(16)])
        await client.close()
        return results[1:17], results[17:], results[0]

    before = _health(server)
    answers, tickets, seen = asyncio.run(everyone())
    assert tickets == [f"T{i:03d}" for i in range(16)]  # none lost, none swapped
    for country, answer in zip(list(CAPITALS) * 2, answers):
        named = {city for city in CAPITALS.values() if city in answer}
        assert named == {CAPITALS[country]}, f"asked about {country}, got {answer!r}"
    assert seen == 3
    deadline = time.monotonic() + 30
    while (health := _health(server))["active"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health["active"] == 0, "a request was still being decoded after every client had left"
    assert health["cancelled"] == before["cancelled"] + 1  # the leaver was dropped, not decoded to 2000 tokens
    assert health["max_rows"] >= 8, "the clients were not batched together"


def test_the_server_listens_on_loopback_only_and_leaves_no_process_or_port_behind():
    with serve_llm("smoke") as server:
        port = int(server.base_url.split(":")[2].split("/")[0])
        assert not port_is_free(port)
        outside = non_loopback_address()
        if outside is not None:  # this machine's own address on its network: nothing may answer there
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((outside, port)) != 0, "the server listens beyond 127.0.0.1"
        pid = server.pid
    assert port_is_free(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_transformers_serve_gives_the_same_answers_to_the_same_client_code(server):
    """Hugging Face's own `transformers serve` is the reference: only base_url and the model name change."""
    from utils.hub import model_path
    from utils.servers import background_server, free_port

    folder, port = model_path("instruct_llm", "smoke"), free_port()
    cli = Path(sys.executable).with_name("transformers")  # the console script beside this Python
    argv = [str(cli), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    questions = ["What is the capital of France? Answer in one word.", "Name three primary colours.",
                 "Write a haiku about the sea."]

    def ask(base_url: str, model: str) -> list[tuple]:  # the client code a learner writes, unchanged
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
        answers = []
        for question in questions:
            messages = [{"role": "user", "content": question}]
            reply = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
            stream = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24,
                                                    stream=True)
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            answers.append((reply.choices[0].message.content, streamed, reply.usage.prompt_tokens))
        return answers

    with background_server(argv, port, "/health", timeout=240):
        theirs = ask(f"http://127.0.0.1:{port}/v1", folder)
    ours = ask(server.base_url, server.model)
    assert ours == theirs
    assert all(text == streamed for text, streamed, _ in ours)


def test_the_server_benchmark_measures_what_it_says(server):
    import argparse
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "llm_server.py"
    spec = importlib.util.spec_from_file_location("llm_server_benchmark", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(clients=[1, 3], tokens=8, json_prompts=3)
    results = asyncio.run(bench.measure(server.base_url, server.model, args))
    ttft, one, three, validity = results
    assert 0 < ttft["value"] < 30
    assert one["clients"] == 1 and three["clients"] == 3 and three["tokens"] <= 3 * 8 and one["tokens"] > 0
    assert validity["valid_constrained"] == 3  # constrained decoding: every answer parses and validates
    assert "| valid JSON for the schema, 3 prompts, free / constrained |" in bench.table(4.2, results)


def test_a_notebook_can_start_the_server_in_one_cell_and_stop_it_in_another():
    from utils.llm_server import start_llm_server

    server = start_llm_server("smoke")
    port = int(server.base_url.split(":")[2].split("/")[0])
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        assert client.models.list().data[0].id == server.model
    finally:
        server.stop()
        server.stop()  # a second stop (a re-run cell) does nothing
    assert port_is_free(port)
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_a_served_model_name_is_the_name_listed_and_the_only_chat_model_name_accepted():
    from utils.llm_server import start_llm_server

    server = start_llm_server("smoke", served_model_name="course-chat")
    try:
        assert server.model == "course-chat"
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120)
        models = client.models.list().data
        assert [m.id for m in models] == ["course-chat", "sentence-transformers/all-MiniLM-L6-v2"]
        assert models[0].model_extra["max_model_len"] == 8192  # SmolLM2's context, named as vLLM names it
        reply = client.chat.completions.create(model="course-chat", messages=CAPITAL, max_tokens=8, temperature=0)
        assert reply.model == "course-chat" and reply.choices[0].message.content
        status, error = _status_and_error(lambda: client.chat.completions.create(
            model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=CAPITAL, max_tokens=8))  # its hub id is not its name now
        assert status == 404 and error["code"] == "model_not_found" and "'course-chat'" in error["message"]
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["", "   ", " course-chat", "course-chat\n", 7])
def test_a_bad_served_model_name_is_refused_before_a_server_starts(name, capsys):
    from utils.llm_server import main, start_llm_server

    with pytest.raises(ValueError, match="served_model_name must be a non-empty name"):
        start_llm_server("smoke", served_model_name=name)
    if isinstance(name, str):
        with pytest.raises(SystemExit) as caught:
            main(["--served-model-name", name])
        assert caught.value.code == 2 and "--served-model-name must be a non-empty name" in capsys.readouterr().err


def test_a_server_whose_notebook_kernel_was_killed_stops_by_itself():
    import subprocess
    import signal

    starter = ("from utils.llm_server import start_llm_server; s = start_llm_server('smoke'); "
               "print(s.pid, s.base_url, flush=True); import time; time.sleep(600)")
    kernel = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    try:
        pid, base_url = kernel.stdout.readline().split()
        port = int(base_url.split(":")[2].split("/")[0])
        assert not port_is_free(port)
    finally:
        kernel.send_signal(signal.SIGKILL)  # no atexit, no clean-up: as when Jupyter kills a stuck kernel
        kernel.wait(timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(int(pid), signal.SIGKILL)
        pytest.fail("the server outlived the process that started it")
    assert port_is_free(port)
