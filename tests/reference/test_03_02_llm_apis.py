"""03.02's from-scratch pieces against the libraries: full-jitter backoff and the retry loop against tenacity and
the openai client, the SSE parser against openai's decoder and client, the minimal endpoint against the official
client and the course server's response shape, Retry-After parsing against openai's, the token bucket against an
independent algorithm (GCRA), and the backoff experiment against its expected value.

The notebook's servers run here as they do there: FastAPI apps in a thread of this process, on 127.0.0.1 only.
"""

from __future__ import annotations

import email.utils
import json
import random
import time

import httpx
import numpy as np
import openai
import pytest
import tenacity
from openai._streaming import SSEDecoder

from utils.notebooks import notebook_definitions
from utils.runtime import repo_root

NOTEBOOK = repo_root() / "03_llm_apps" / "02_llm_apis.ipynb"
HELLO = [{"role": "user", "content": "Hello, endpoint!"}]


@pytest.fixture(scope="module")
def nb():
    ns = notebook_definitions(NOTEBOOK, solutions=True)
    assert not ns["__skipped__"], ns["__skipped__"]
    return ns


@pytest.fixture(scope="module")
def flaky(nb):
    """The notebook's flaky server, running; the namespace's send_chat and measure_attempts talk to it."""
    plan = nb["Flaky"]()
    with nb["serve_in_thread"](nb["create_flaky_app"](plan)) as url, httpx.Client() as http:
        nb["flaky"], nb["flaky_url"], nb["hello"], nb["http"] = plan, url, HELLO, http
        yield plan


@pytest.fixture(scope="module")
def echo_url(nb):
    with nb["serve_in_thread"](nb["create_echo_app"]()) as url:
        yield url


def _response(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, request=httpx.Request("POST", "http://127.0.0.1:9/v1"))


def _scripted(statuses: list[int]):
    """A send() that answers the statuses in turn, without any network; counts its calls."""
    calls = []

    def send() -> httpx.Response:
        calls.append(len(calls))
        return _response(statuses[len(calls) - 1])

    return send, calls


# ------------------------------------------------------------------------------ backoff and the retry loop
@pytest.mark.parametrize(("base", "cap", "seed"), [(0.5, 8.0, 0), (0.1, 1.0, 3), (2.0, 60.0, 11)])
def test_full_jitter_equals_tenacity_draw_for_draw(nb, base, cap, seed):
    rng = random.Random(seed)
    ours = [nb["backoff_delay"](k, base, cap, rng) for k in range(12)]
    wait = tenacity.wait_random_exponential(multiplier=base, max=cap)
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    random.seed(seed)
    theirs = []
    for attempt in range(1, 13):
        state.attempt_number = attempt
        theirs.append(wait(state))
    assert ours == theirs
    assert all(0 <= w <= min(cap, base * 2**k) for k, w in enumerate(ours))


def test_full_jitter_waits_half_the_window_on_average(nb):
    rng = random.Random(0)
    for k, window in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 8.0]):
        waits = np.array([nb["backoff_delay"](k, 0.5, 8.0, rng) for _ in range(4000)])
        assert abs(waits.mean() - window / 2) < 4 * window / np.sqrt(12 * 4000)  # 4 standard errors
        assert waits.min() >= 0 and waits.max() <= window


@pytest.mark.parametrize("seed", range(8))
def test_the_retry_loop_sleeps_what_tenacity_sleeps_on_random_5xx_scripts(nb, seed):
    script_rng = random.Random(seed)
    failures = script_rng.randint(0, 5)
    statuses = [script_rng.choice([500, 502, 503, 504]) for _ in range(failures)] + [200]
    send, calls = _scripted(statuses)
    ours = []
    result = nb["call_with_retries"](send, max_attempts=7, base=0.25, cap=2.0, sleep=ours.append,
                                     rng=random.Random(seed))
    assert result.status_code == 200 and len(calls) == failures + 1

    send, calls = _scripted(statuses)
    theirs = []
    random.seed(seed)
    tenacity.Retrying(wait=tenacity.wait_random_exponential(multiplier=0.25, max=2.0),
                      stop=tenacity.stop_after_attempt(7), sleep=theirs.append,
                      retry=tenacity.retry_if_result(lambda r: r.status_code >= 500))(send)
    assert ours == theirs


def test_the_retry_loop_gives_up_after_max_attempts_and_raises_the_last_error(nb):
    send, calls = _scripted([503] * 10)
    slept = []
    with pytest.raises(httpx.HTTPStatusError, match="503"):
        nb["call_with_retries"](send, max_attempts=4, sleep=slept.append, rng=random.Random(0))
    assert len(calls) == 4 and len(slept) == 3  # no sleep after the last attempt


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_a_client_error_is_raised_at_once(nb, status):
    send, calls = _scripted([status, 200])
    slept = []
    with pytest.raises(httpx.HTTPStatusError, match=str(status)):
        nb["call_with_retries"](send, sleep=slept.append)
    assert len(calls) == 1 and slept == []


@pytest.mark.parametrize("status", [408, 409, 429, 500, 501, 502, 503, 504, 599])
def test_the_loop_retries_what_the_openai_client_retries(nb, status):
    send, calls = _scripted([status, 200])
    assert nb["call_with_retries"](send, sleep=lambda s: None).status_code == 200 and len(calls) == 2
    client = openai.OpenAI(api_key="unused")
    assert client._should_retry(_response(status)), f"openai does not retry {status}; neither should we"


def test_retry_after_overrides_the_backoff_and_agrees_with_openai(nb):
    client = openai.OpenAI(api_key="unused")
    for value in ["0", "1", "2.5", "30", "120"]:
        assert nb["retry_after_seconds"](_response(429, value)) == client._parse_retry_after_header(
            httpx.Headers({"retry-after": value}))
    assert nb["retry_after_seconds"](_response(429)) is None and nb["retry_after_seconds"](None) is None
    statuses = iter([_response(429, "7"), _response(503, "2"), _response(200)])
    slept = []
    nb["call_with_retries"](lambda: next(statuses), sleep=slept.append)
    assert slept == [7.0, 2.0]


def test_timeouts_and_lost_connections_are_retried_then_raised(nb):
    errors = iter([httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), _response(200)])

    def send():
        item = next(errors)
        if isinstance(item, Exception):
            raise item
        return item

    assert nb["call_with_retries"](send, sleep=lambda s: None).status_code == 200

    def never():
        raise httpx.ConnectTimeout("no route")

    with pytest.raises(httpx.ConnectTimeout):
        nb["call_with_retries"](never, max_attempts=3, sleep=lambda s: None)


@pytest.mark.parametrize(("script", "max_attempts", "outcome"), [
    ([500, 200], 3, 200), ([429, 200], 3, 200), ([400, 200], 3, 400), ([503, 503, 503, 200], 3, 503)])
def test_the_loop_and_the_openai_client_make_the_same_attempts_on_a_real_server(nb, flaky, script, max_attempts,
                                                                              outcome):
    flaky.reset(script=script, retry_after="1")
    try:
        ours = nb["call_with_retries"](nb["send_chat"], max_attempts=max_attempts, sleep=lambda s: None).status_code
    except httpx.HTTPStatusError as error:
        ours = error.response.status_code
    our_attempts = len(flaky.log)

    flaky.reset(script=script, retry_after="1")
    client = openai.OpenAI(base_url=f"{nb['flaky_url']}/v1", api_key="unused", max_retries=max_attempts - 1)
    try:
        client.chat.completions.create(model="flaky-1", messages=HELLO)
        theirs = 200
    except openai.APIStatusError as error:
        theirs = error.status_code
    assert (ours, our_attempts) == (theirs, len(flaky.log)) == (outcome, our_attempts)


def test_a_request_slower_than_the_timeout_is_retried(nb, flaky):
    flaky.reset(script=["slow", 200], delay=1.0)
    assert nb["call_with_retries"](lambda: nb["send_chat"](0.2), sleep=lambda s: None).status_code == 200
    assert len(flaky.log) == 2


# ------------------------------------------------------------------------------ Retry-After as a date (Exercise 1)
def test_parse_retry_after_agrees_with_the_openai_client(nb):
    client = openai.OpenAI(api_key="unused")
    now = time.time()
    values = ["0", "17", "2.75", "soon", "", "Wed, 99 Foo 2026", "12 seconds"]
    values += [email.utils.formatdate(now + delta, usegmt=True) for delta in (-3600, -5, 30, 7200)]
    for value in values:
        ours = nb["parse_retry_after"](value)
        theirs = client._parse_retry_after_header(httpx.Headers({"retry-after": value}))
        if theirs is None:
            assert ours is None, value
        else:
            assert ours == pytest.approx(theirs, abs=0.5), value


# ------------------------------------------------------------------------------ SSE and the minimal endpoint
def test_parse_sse_reads_what_openais_decoder_reads(nb):
    events = [{"choices": [{"delta": {"content": f"piece {i}"}}]} for i in range(4)]
    text = ": keep-alive\n\n" + "".join(
        f"event: message\nid: {i}\ndata: {json.dumps(e)}\n\n" for i, e in enumerate(events)) + "data: [DONE]\n\n"
    ours = nb["parse_sse"](text.splitlines())
    theirs = [json.loads(sse.data) for sse in SSEDecoder().iter_bytes(iter([text.encode()])) if sse.data != "[DONE]"]
    assert ours == theirs == events
    assert nb["parse_sse"](["data: {\"a\": 1}", "data: [DONE]", "data: {\"b\": 2}"]) == [{"a": 1}]


def test_the_echo_endpoint_answers_the_official_client(nb, echo_url):
    client = openai.OpenAI(base_url=f"{echo_url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two words"}]
    reply = client.chat.completions.create(model="echo-1", messages=messages)
    assert reply.choices[0].message.content == "You said: two words"
    assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (4, 4, 8)
    chunks = list(client.chat.completions.create(model="echo-1", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "You said: two words"
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    with httpx.stream("POST", f"{echo_url}/v1/chat/completions",
                      json={"model": "echo-1", "messages": messages, "stream": True}) as stream:
        ours = nb["parse_sse"](list(stream.iter_lines()))
    assert [c.model_dump(exclude_none=True)["choices"] for c in chunks] == \
        [[{k: v for k, v in choice.items() if v is not None} for choice in c["choices"]] for c in ours]


def test_the_echo_endpoint_has_the_course_servers_response_shape(nb):
    from utils.llm_server import _chunk, _usage

    ours = nb["completion_body"]("hi", "echo-1", 3, 1)
    assert ours["usage"] == _usage(3, 1)
    assert set(ours) == {"id", "object", "created", "model", "choices", "usage"}
    assert set(ours["choices"][0]) == {"index", "message", "finish_reason", "logprobs"}
    meta = {"id": "chatcmpl-echo", "created": 0, "model": "echo-1"}
    theirs = json.loads(_chunk(meta, {"content": "x"}).removeprefix("data: "))
    mine = json.loads(nb["chunk_event"]("echo-1", {"content": "x"}).removeprefix("data: "))
    assert set(mine) == set(theirs) and mine["choices"][0].keys() == theirs["choices"][0].keys()
    assert nb["chunk_event"]("m", {}).endswith("\n\n")


def test_cost_of_a_million_tokens_is_the_price(nb):
    from types import SimpleNamespace

    usage = SimpleNamespace(prompt_tokens=1_000_000, completion_tokens=250_000)
    assert nb["cost_usd"](usage, 0.75, 4.5) == pytest.approx(0.75 + 1.125)
    reply = SimpleNamespace(usage=usage)
    table = nb["cost_table"]([("a", [], reply), ("b", [], reply)], 0.75, 4.5)
    assert table[-1] == {"call": "total", "in": 2_000_000, "out": 500_000, "usd": pytest.approx(3.75)}


# ------------------------------------------------------------------------------ the token bucket (Exercise 3)
def _gcra(rate: float, capacity: int, times: list[float]) -> list[float]:
    """The generic cell rate algorithm, equivalent to a token bucket: the wait of each arrival (0 = allowed)."""
    interval, tolerance, tat, waits = 1 / rate, (capacity - 1) / rate, times[0], []
    for t in times:
        if t < tat - tolerance:
            waits.append(tat - tolerance - t)
        else:
            tat = max(t, tat) + interval
            waits.append(0.0)
    return waits


@pytest.mark.parametrize("seed", range(10))
def test_the_token_bucket_equals_gcra_on_random_arrivals(nb, seed):
    rng = random.Random(seed)
    rate, capacity = rng.choice([0.5, 2.0, 5.0, 10.0]), rng.randint(1, 6)
    times = sorted(rng.uniform(0, 20 / rate) for _ in range(60))
    now = [times[0]]
    bucket = nb["TokenBucket"](rate, capacity, clock=lambda: now[0])
    ours = []
    for t in times:
        now[0] = t
        ours.append(bucket.take())
    assert ours == pytest.approx(_gcra(rate, capacity, times), abs=1e-9)
    assert any(w > 0 for w in ours) or capacity * 1.0 >= len(times)  # the random bursts do hit the limit


def test_the_limited_endpoint_refuses_a_burst_and_the_client_gets_through(nb):
    bucket = nb["TokenBucket"](rate=4.0, capacity=2)
    with nb["serve_in_thread"](nb["create_limited_app"](bucket)) as url:
        burst = [httpx.post(f"{url}/v1/chat/completions", json={"model": "echo-1", "messages": HELLO})
                 for _ in range(4)]
        assert [r.status_code for r in burst] == [200, 200, 429, 429]
        assert burst[2].headers["retry-after"] == "1"


# ------------------------------------------------------------------------------ the experiment (Exercise 2)
@pytest.mark.parametrize("p", [0.0, 0.5, 0.9])
def test_measured_attempts_match_the_expected_value(nb, flaky, p):
    n, M = 300, 4
    mean_attempts, success = nb["measure_attempts"](p, M, n, seed=1)
    assert len(flaky.log) == round(mean_attempts * n)
    expected = (1 - p**M) / (1 - p)
    probs = [p**(k - 1) * (1 - p) for k in range(1, M)] + [p**(M - 1)]
    sd = np.sqrt(sum((k - expected) ** 2 * q for k, q in zip(range(1, M + 1), probs)))
    assert abs(mean_attempts - expected) <= 4 * sd / np.sqrt(n) + 1e-12
    assert abs(success - (1 - p**M)) <= 4 * np.sqrt(p**M * (1 - p**M) / n) + 1e-12
