"""The course's OpenAI-compatible LLM server: FastAPI + uvicorn, on 127.0.0.1 only.

    python -m utils.llm_server --port 8000                     # or: with serve_llm() as server: ...
    python -m utils.llm_server --model <folder> --served-model-name course-gpt   # a model you trained, by a name
    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct",
                                   messages=[{"role": "user", "content": "Hello!"}])

The same client code works against a hosted provider: change `base_url`, the model name and the key.
The chat model's name (what /v1/models lists and requests must name) is the preset's hub id, or the `--model`
folder or hub id; `--served-model-name NAME` (`served_model_name=` of serve_llm and start_llm_server) gives it
another, e.g. a short name for a model in a temporary folder (vLLM's option of the same name does the same).
- GET  /v1/models            the chat model (with its context length, `max_model_len`, as vLLM) and the embedding model
- POST /v1/chat/completions  chat; `stream=true` sends server-sent events in OpenAI's chunk format; max_tokens,
                             temperature, top_p, stop, seed; usage counted by the model's tokenizer;
                             `response_format` (a JSON schema, or any JSON object) and `tools`/`tool_choice`,
                             both enforced by constrained decoding (utils.constrained)
- POST /v1/embeddings        the real all-MiniLM-L6-v2 (384 dimensions)
- GET  /health               200 once the model is loaded, with the engine's counters
Many clients share one model: utils.llm_engine batches the requests in flight. A bad request gets OpenAI's
error shape {"error": {"message", "type", "param", "code"}} with the right status, never a stack trace
(utils/openai_api.py reads and checks the requests).
With an API key (from the environment variable COURSE_LLM_API_KEY, never the command line), /v1 needs
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from utils.llm_engine import Engine, Event, SamplingParams
from utils.openai_api import (APIError, ChatRequest, EmbeddingRequest, make_constraint, render_messages,
                              sampling_params, validation_error)
from utils.servers import HOST, background_server, exit_when_orphaned, free_port, keep_open

API_KEY_VARIABLE = "COURSE_LLM_API_KEY"
MAX_BODY_BYTES = 1_000_000  # a chat request is text: 1 MB is generous, and a bigger body is refused (413)
log = logging.getLogger("utils.llm_server")


# ------------------------------------------------------------------------------------------ the model side
@dataclass
class Backend:
    """What the app serves: the engine (chat model + tokenizer), its name, and the embedding model."""

    engine: Engine
    model_id: str
    embedding_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    _embedder: Any = None
    _embed_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def embed(self, texts: list[str]) -> tuple[Any, int]:
        """(embeddings (N, 384) float32, tokens counted by the embedding model's tokenizer)."""
        with self._embed_lock:  # loaded on first use; one encode at a time
            if self._embedder is None:
                from sentence_transformers import SentenceTransformer

                from utils.hub import model_path

                self._embedder = SentenceTransformer(model_path("embedding"), device="cpu")
            vectors = self._embedder.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
            tokens = sum(len(ids) for ids in self._embedder.tokenizer(texts)["input_ids"])
        return vectors.astype("float32"), tokens


# ------------------------------------------------------------------------------------------ responses
def _chunk(meta: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> str:
    """One server-sent event holding a chat.completion.chunk."""
    body = {**meta, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    return f"data: {json.dumps(body)}\n\n"


def _tool_calls(calls: list[dict[str, str]]) -> list[dict[str, Any]]:
    """OpenAI's tool_calls list: an id per call, arguments as a JSON string."""
    return [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"]}} for call in calls]


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Submitted:
    """A request handed to the engine, its events arriving on this event loop's queue."""

    def __init__(self, engine: Engine, prompt: list[int], params: SamplingParams, constraint: Any) -> None:
        loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        self.handle = engine.submit(prompt, params, constraint,
                                    on_event=lambda event: loop.call_soon_threadsafe(self.queue.put_nowait, event))

    async def events(self) -> AsyncIterator[Event]:
        """Events until (and including) the final one."""
        while True:
            event = await self.queue.get()
            yield event
            if event.finish_reason is not None:
                return


async def _complete(job: _Submitted, meta: dict[str, Any], prompt_tokens: int, tools_on: bool) -> dict:
    """Wait for the whole answer and build the chat.completion object."""
    from utils.tool_calls import parse_tool_calls

    text, last = "", Event("")
    async for last in job.events():
        text += last.text
    if last.finish_reason == "error":
        raise APIError(500, f"generation failed ({last.error})", kind="server_error")
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = last.finish_reason
    calls = parse_tool_calls(text) if tools_on else None
    if calls:
        message, finish = {"role": "assistant", "content": None, "tool_calls": _tool_calls(calls)}, "tool_calls"
    return {**meta, "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(prompt_tokens, last.completion_tokens)}


async def _stream(job: _Submitted, meta: dict[str, Any], prompt_tokens: int, tools_on: bool,
                  forced_call: bool, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content chunks, a final chunk (and usage), then [DONE].

    With tools, text is held back while it may still be a tool call, and a call is sent whole at the end.
    """
    from utils.tool_calls import TRIGGER, parse_tool_calls

    held, hold = "", tools_on
    try:
        yield _chunk(meta, {"role": "assistant", "content": ""})
        async for event in job.events():
            if event.finish_reason == "error":
                yield f"data: {json.dumps(APIError(500, event.error, kind='server_error').body())}\n\n"
                return
            held += event.text
            if hold and not forced_call and not TRIGGER.startswith(held[:len(TRIGGER)]):
                hold = False  # the model writes text, not a call: stream it from here on
            if not hold and held:
                yield _chunk(meta, {"content": held})
                held = ""
            if event.finish_reason is not None:
                finish, calls = event.finish_reason, parse_tool_calls(held) if hold else None
                if calls:
                    yield _chunk(meta, {"tool_calls": [{"index": i, **call} for i, call in
                                                       enumerate(_tool_calls(calls))]})
                    finish = "tool_calls"
                elif held:
                    yield _chunk(meta, {"content": held})
                yield _chunk(meta, {}, finish)
                if include_usage:
                    usage = {**meta, "object": "chat.completion.chunk", "choices": [],
                             "usage": _usage(prompt_tokens, event.completion_tokens)}
                    yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
    finally:  # the client went away (or we are done): free the batch slot
        job.handle.cancel()


# ------------------------------------------------------------------------------------------ the app
def create_app(backend: Backend, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `backend`; with `api_key`, /v1 asks for it."""
    app = FastAPI(title="Generative AI course — local LLM server", docs_url=None, redoc_url=None)
    app.add_exception_handler(APIError, lambda request, exc: exc.response())
    app.add_exception_handler(RequestValidationError, lambda request, exc: validation_error(exc))
    app.add_exception_handler(StarletteHTTPException, lambda request, exc: APIError(
        exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None).response())

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        """Refuse oversized bodies (413) and, with a key, requests without it (401); hide crashes (500)."""
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return APIError(413, f"The request body is larger than {MAX_BODY_BYTES:,} bytes.").response()
        if api_key and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return APIError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>' "
                                "(the OpenAI client does this with api_key=...).", code="invalid_api_key").response()
        try:
            return await call_next(request)
        except Exception:  # logged here with its traceback; the client gets a plain message
            log.exception("unhandled error for %s %s", request.method, request.url.path)
            return APIError(500, "The server had an error while processing your request.",
                            kind="server_error").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": backend.model_id, "active": backend.engine.active,
                **backend.engine.stats}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        chat = {"max_model_len": backend.engine.max_context}  # its context in tokens, named as vLLM names it
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "course", **extra}
                                           for name, extra in [(backend.model_id, chat), (backend.embedding_id, {})]]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Any:
        return await _chat(backend, body)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        return await _embeddings(backend, body)

    return app


def _known_model(backend: Backend, name: str, kind: str) -> None:
    expected = backend.model_id if kind == "chat" else backend.embedding_id
    if name != expected:
        raise APIError(404, f"The model {name!r} does not exist on this server. Its {kind} model is "
                       f"{expected!r} (GET /v1/models lists them).", param="model", code="model_not_found")


async def _chat(backend: Backend, request: ChatRequest) -> Any:
    from utils.chat import chat_prompt

    _known_model(backend, request.model, "chat")
    if request.logprobs:
        raise APIError(400, "logprobs are not supported by this server.", param="logprobs")
    constraint = make_constraint(request, backend.tokenizer)  # first: it checks tools and response_format
    try:
        prompt = backend.tokenizer(chat_prompt(backend.tokenizer, render_messages(request)),
                                   add_special_tokens=False).input_ids
    except ValueError as error:
        raise APIError(400, str(error), param="messages") from None
    params = sampling_params(request, len(prompt), backend.engine.max_context)
    tools_on = bool(request.tools) and request.tool_choice != "none"
    job = _Submitted(backend.engine, prompt, params, constraint)
    meta = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": backend.model_id}
    if not request.stream:
        try:
            return await _complete(job, meta, len(prompt), tools_on)
        finally:
            job.handle.cancel()
    forced = tools_on and (request.tool_choice == "required" or isinstance(request.tool_choice, dict))
    usage = bool((request.stream_options or {}).get("include_usage"))
    return StreamingResponse(_stream(job, meta, len(prompt), tools_on, forced, usage),
                             media_type="text/event-stream")


async def _embeddings(backend: Backend, request: EmbeddingRequest) -> dict[str, Any]:
    from starlette.concurrency import run_in_threadpool

    _known_model(backend, request.model, "embedding")
    if request.dimensions not in (None, 384):
        raise APIError(400, f"{backend.embedding_id} has 384 dimensions; got dimensions={request.dimensions}.",
                       param="dimensions")
    texts = [request.input] if isinstance(request.input, str) else request.input
    vectors, tokens = await run_in_threadpool(backend.embed, texts)
    encode = ((lambda v: base64.b64encode(v.astype("<f4").tobytes()).decode()) if request.encoding_format == "base64"
              else (lambda v: v.tolist()))
    return {"object": "list", "model": backend.embedding_id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]}


# ------------------------------------------------------------------------------------------ running it
def check_served_model_name(name: str | None) -> None:
    """ValueError unless `name` is None (the default name) or a non-empty name without surrounding spaces."""
    if name is not None and (not isinstance(name, str) or not name.strip() or name != name.strip()):
        raise ValueError(f"served_model_name must be a non-empty name without leading or trailing spaces (or None "
                         f"for the model's own name); got {name!r}.")


def load_backend(model: str | None = None, preset: str | None = None, max_batch: int = 16,
                 served_model_name: str | None = None) -> Backend:
    """Load the chat model (the preset's instruct model, or `model`: a local folder or hub id) into an engine,
    served as `served_model_name` (default: the hub id or `model`)."""
    import gc

    from utils.chat import load_chat_model
    from utils.constrained import TokenVocabulary
    from utils.hub import model_info

    check_served_model_name(served_model_name)
    loaded, tokenizer = load_chat_model(preset, path=model)
    TokenVocabulary.from_tokenizer(tokenizer)  # index the vocabulary now, not during the first JSON request
    gc.freeze()  # the model's many objects leave the garbage collector's scans: no 0.2 s pauses mid-stream
    name = served_model_name or model or model_info("instruct_llm").at_preset(preset).hub_id
    return Backend(Engine(loaded, tokenizer, max_batch=max_batch), name)


def main(argv: list[str] | None = None) -> int:
    """`python -m utils.llm_server --port N`: load the model, then serve until Ctrl-C / SIGTERM."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m utils.llm_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    parser.add_argument("--preset", choices=("smoke", "laptop", "full"), default=None,
                        help="which instruct model (default: $COURSE_PRESET, as the notebooks)")
    parser.add_argument("--model", default=None, help="serve this local folder or hub id instead")
    parser.add_argument("--served-model-name", default=None,
                        help="the name /v1/models lists and requests must use (default: the hub id or --model)")
    parser.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default 16)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535; got {args.port}")
    try:
        check_served_model_name(args.served_model_name)
    except ValueError as error:
        parser.error(str(error).replace("served_model_name", "--served-model-name"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    backend = load_backend(args.model, args.preset, args.max_batch, args.served_model_name)
    api_key = os.environ.get(API_KEY_VARIABLE, "").strip() or None
    print(f"serving {backend.model_id} on http://{HOST}:{args.port}/v1 "
          f"({'API key required' if api_key else 'no API key'})", flush=True)
    exit_when_orphaned()  # started by a notebook whose kernel died: stop too, never linger
    uvicorn.run(create_app(backend, api_key), host=HOST, port=args.port, log_level="warning")
    backend.engine.close()
    return 0


@dataclass(frozen=True)
class LocalServer:
    """A running server: where it listens, the model it serves, and the key it wants (if any)."""

    base_url: str  # e.g. http://127.0.0.1:51234/v1 — what OpenAI(base_url=...) takes
    model: str
    api_key: str  # "none" when the server asks for no key (the OpenAI client still wants a string)
    pid: int
    stop: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)  # see start_llm_server


@contextlib.contextmanager
def serve_llm(preset: str | None = None, *, model: str | None = None, api_key: str | None = None,
              max_batch: int = 16, timeout: float = 300, served_model_name: str | None = None) -> Iterator[LocalServer]:
    """Start `python -m utils.llm_server` on a free port, wait until it is ready, stop it afterwards."""
    check_served_model_name(served_model_name)  # before a process starts: the error names the argument
    port = free_port()
    argv = [sys.executable, "-m", "utils.llm_server", "--port", str(port), "--max-batch", str(max_batch)]
    argv += ["--preset", preset] if preset else []
    argv += ["--model", model] if model else []
    argv += ["--served-model-name", served_model_name] if served_model_name else []
    env = {API_KEY_VARIABLE: api_key or ""}
    with background_server(argv, port, "/health", env=env, timeout=timeout) as process:
        import httpx

        name = httpx.get(f"http://{HOST}:{port}/health", timeout=10).json()["model"]
        yield LocalServer(f"http://{HOST}:{port}/v1", name, api_key or "none", process.pid)


def start_llm_server(preset: str | None = None, **options: Any) -> LocalServer:
    """`serve_llm` for a notebook: start the server and return it; `server.stop()` ends it (so does the kernel's
    exit). Options as for serve_llm: model, served_model_name, api_key, max_batch, timeout."""
    server, stop = keep_open(serve_llm(preset, **options))
    return dataclasses.replace(server, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
