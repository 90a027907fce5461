"""The course's chatbot app: a small web page that streams answers, a FastAPI backend, on 127.0.0.1 only.

    python -m utils.chatbot_app --port 8001        # or `make chat`: starts the course's LLM server too
    python -m utils.chatbot_app --llm-base-url URL --llm-model NAME   # any OpenAI-compatible API; its key is
                                                   # read from $CHATBOT_LLM_API_KEY (--llm-api-key-env names another)

    page (HTML + JS) --POST /api/chat-->  this app  --openai client, stream=True-->  LLM API
                     <--server-sent events--        <--chunks--

The backend keeps every conversation (per session id) with its system prompt, applies the memory policy of
utils.chat_memory within a token budget counted by the model's tokenizer, and streams the answer to the page
as server-sent events, one JSON object per event: `data: {"type": "memory" | "token" | "done" | "error", ...}`.
Errors of the LLM API (down, too slow, refused) become one readable "error" event that the page shows.
When the LLM API reports the model's context (/v1/models' `max_model_len`, as the course's server and vLLM do) and
the budget and max_tokens do not fit in it together, the app lowers them to fit, and says so when it starts.
Endpoints: GET / (the page), GET /health, POST /api/sessions, GET /api/sessions/{id}, POST /api/chat.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from utils.chat_memory import POLICIES, Conversation, prompt_messages, summary_request
from utils.servers import HOST, exit_when_orphaned

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly and clearly."
API_KEY_VARIABLE = "CHATBOT_LLM_API_KEY"
PAGE = files("utils") / "chatbot_page"  # index.html, chat.js, chat.css: package data, no build step


@dataclass(frozen=True)
class Settings:
    """Where the LLM API is and how the app talks to it."""

    llm_base_url: str  # e.g. http://127.0.0.1:8000/v1 (the course's server) or a hosted provider's /v1
    llm_model: str
    llm_api_key: str = field(default="none", repr=False)  # never printed
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # for new chats; the page can change it per chat
    policy: str = "window"  # memory policy, one of utils.chat_memory.POLICIES
    budget: int = 1024  # prompt tokens the memory policy may send per request
    max_tokens: int = 256  # answer tokens per request
    temperature: float | None = None  # None: the LLM server's default
    timeout: float = 60.0  # seconds to wait for the LLM API before reporting an error
    max_sessions: int = 100  # the least recently used conversation is forgotten beyond this

    def __post_init__(self) -> None:
        if not self.llm_base_url.startswith(("http://", "https://")):
            raise ValueError(f"llm_base_url must start with http:// or https://; got {self.llm_base_url!r}.")
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is not a memory policy. Allowed: {', '.join(POLICIES)}.")
        for name in ("budget", "max_tokens", "max_sessions"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int ≥ 1; got {getattr(self, name)!r}.")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be in [0, 2] (or None); got {self.temperature!r}.")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {self.timeout!r}.")


class Problem(Exception):
    """A request the app refuses: an HTTP status and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class NewSession(BaseModel):
    """The body of POST /api/sessions."""

    system: str | None = Field(None, max_length=4000)  # None: the app's default system prompt


class ChatTurn(BaseModel):
    """The body of POST /api/chat: one user message in one chat."""

    session: str = Field(min_length=1, max_length=100)
    message: str = Field(min_length=1, max_length=8000)


def describe_llm_error(error: Exception, settings: Settings) -> str:
    """One sentence for the page: what went wrong between this app and the LLM API."""
    import openai

    where = f"The LLM server at {settings.llm_base_url}"
    if isinstance(error, openai.APITimeoutError):  # a subclass of APIConnectionError: test it first
        return f"{where} did not answer within {settings.timeout:g} s. Try again, or raise --llm-timeout."
    if isinstance(error, openai.APIConnectionError):
        return f"{where} is not reachable (is it running?). Start it again, then resend your message."
    if isinstance(error, openai.AuthenticationError):
        return f"{where} refused the API key (401). Set it in ${API_KEY_VARIABLE}."
    if isinstance(error, openai.APIStatusError):  # its message reads "Error code: 500 - <the server's message>"
        return f"{where} answered {error.status_code}: {error.message.split(' - ', 1)[-1]}"
    if isinstance(error, openai.APIError):
        return f"{where} reported an error: {error.message}"
    if isinstance(error, ValueError):  # the memory policy: a message longer than the budget
        return f"This message does not fit: {error}"
    return f"Unexpected error ({type(error).__name__}); see the app's log."


def _event(kind: str, **data: Any) -> str:
    """One server-sent event: `data: <JSON>` and a blank line."""
    return f"data: {json.dumps({'type': kind, **data})}\n\n"


class ChatState:
    """What the running app holds: settings, tokenizer, LLM clients and the conversations."""

    def __init__(self, settings: Settings, tokenizer: Any) -> None:
        import openai

        from utils.chat import count_tokens

        self.settings, self.tokenizer = settings, tokenizer
        self.count = partial(count_tokens, tokenizer)  # tokens of a templated conversation
        options = dict(base_url=settings.llm_base_url, api_key=settings.llm_api_key, timeout=settings.timeout,
                       max_retries=0)  # fail fast: the page shows the error and the learner resends
        self.client, self.sync_client = openai.AsyncOpenAI(**options), openai.OpenAI(**options)
        self.sessions: OrderedDict[str, Conversation] = OrderedDict()
        self.busy: set[str] = set()  # sessions with an answer being streamed

    def new_session(self, system: str | None) -> str:
        """Start a conversation; forget the least recently used one beyond max_sessions."""
        session = secrets.token_urlsafe(12)
        self.sessions[session] = Conversation(self.settings.system_prompt if system is None else system)
        while len(self.sessions) > self.settings.max_sessions:
            self.sessions.popitem(last=False)
        return session

    def conversation(self, session: str) -> Conversation:
        """The conversation of `session`, marked as recently used; 404 if the app does not know it."""
        if session not in self.sessions:
            raise Problem(404, "This chat is not on the server (it was restarted or forgot it): start a new chat.")
        self.sessions.move_to_end(session)
        return self.sessions[session]

    def summarise(self, summary: str, turns: list[dict[str, str]]) -> str:
        """The model folds `turns` into the running summary (one blocking, non-streamed request)."""
        reply = self.sync_client.chat.completions.create(
            model=self.settings.llm_model, messages=summary_request(summary, turns), temperature=0,
            max_tokens=max(16, self.settings.budget // 4))  # a quarter of the budget at most
        return reply.choices[0].message.content or ""

    def sampling(self) -> dict[str, Any]:
        """The request's decoding settings."""
        temperature = self.settings.temperature
        return dict(max_tokens=self.settings.max_tokens, **({} if temperature is None else
                                                            {"temperature": temperature}))


async def stream_answer(state: ChatState, session: str, text: str) -> AsyncIterator[str]:
    """Events for one user message: memory, then tokens as they arrive, then done (or error)."""
    conversation, settings, stream = state.conversation(session), state.settings, None
    try:
        messages = await run_in_threadpool(prompt_messages, conversation, text, settings.policy,
                                           settings.budget, state.count, state.summarise)
        yield _event("memory", policy=settings.policy, budget=settings.budget,
                     prompt_tokens=state.count(messages), sent_turns=len(messages) - 2,
                     total_turns=len(conversation.turns), summary=conversation.summary or None)
        stream = await state.client.chat.completions.create(model=settings.llm_model, messages=messages,
                                                            stream=True, **state.sampling())
        pieces, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                finish = chunk.choices[0].finish_reason or finish
                if chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    yield _event("token", text=pieces[-1])
        answer = "".join(pieces)
        conversation.add_exchange(text, answer)  # only a complete answer joins the history
        completion = len(state.tokenizer(answer, add_special_tokens=False)["input_ids"])
        yield _event("done", finish_reason=finish, completion_tokens=completion)
    except Exception as error:  # noqa: BLE001 (every failure becomes a message on the page)
        yield _event("error", message=describe_llm_error(error, settings))
    finally:  # also when the browser goes away mid-answer: stop the LLM's generation, free the session
        state.busy.discard(session)
        if stream is not None:
            await stream.close()


def _guard(app: FastAPI) -> None:
    """Errors as {"error": {"message"}}; this machine's host names and JSON bodies only; a strict page policy."""
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message}}, status_code=status)

    app.add_exception_handler(Problem, lambda request, exc: error(exc.status, exc.message))
    app.add_exception_handler(RequestValidationError, lambda request, exc: error(422, "; ".join(
        f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())))
    # A web page elsewhere cannot reach the app through a DNS name rebound to 127.0.0.1 ...
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        # ... nor post to it with a form: a cross-site request cannot send JSON without the app's consent (CORS)
        if request.method == "POST" and request.headers.get("content-type", "").split(";")[0] != "application/json":
            return error(415, "Send JSON (Content-Type: application/json).")
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = "default-src 'self'"  # no inline or outside scripts
        return response


def create_app(settings: Settings, tokenizer: Any = None) -> FastAPI:
    """The FastAPI app; `tokenizer` counts the budget (default: the course's instruct model's)."""
    state = ChatState(settings, tokenizer if tokenizer is not None else load_tokenizer())
    app = FastAPI(title="Course chatbot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.chat = state
    _guard(app)
    app.mount("/static", StaticFiles(directory=str(PAGE)), name="static")
    about = {"model": settings.llm_model, "policy": settings.policy, "budget": settings.budget}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (PAGE / "index.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **about}

    @app.post("/api/sessions")
    async def new_session(body: NewSession) -> dict[str, Any]:
        session = state.new_session(body.system)
        return {"session": session, "system": state.sessions[session].system, **about}

    @app.get("/api/sessions/{session}")
    async def history(session: str) -> dict[str, Any]:
        conversation = state.conversation(session)
        return {"session": session, "system": conversation.system, "turns": conversation.turns,
                "summary": conversation.summary, **about}

    @app.post("/api/chat")
    async def chat(body: ChatTurn) -> StreamingResponse:
        state.conversation(body.session)  # 404 before the stream starts
        if not body.message.strip():
            raise Problem(400, "The message is empty.")
        if body.session in state.busy:
            raise Problem(409, "An answer is still being written in this chat: wait for it to finish.")
        state.busy.add(body.session)
        return StreamingResponse(stream_answer(state, body.session, body.message.strip()),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def load_tokenizer(path: str | None = None) -> Any:
    """The tokenizer that counts budgets: `path` (a folder or hub id), else the course's instruct model's."""
    from transformers import AutoTokenizer

    from utils.hub import model_path

    return AutoTokenizer.from_pretrained(path or model_path("instruct_llm"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.chatbot_app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (default 8001)")
    parser.add_argument("--llm-base-url", help="an OpenAI-compatible API (default: start the course's LLM server)")
    parser.add_argument("--llm-model", help="the model name to ask for (required with --llm-base-url)")
    parser.add_argument("--llm-api-key-env", default=API_KEY_VARIABLE,
                        help=f"environment variable (or .env entry) holding the API key (default {API_KEY_VARIABLE})")
    parser.add_argument("--preset", choices=("smoke", "laptop", "full"), help="the course server's model size")
    parser.add_argument("--tokenizer", help="tokenizer that counts the budget (default: the course's model's)")
    parser.add_argument("--policy", choices=POLICIES, default="window", help="memory policy (default window)")
    parser.add_argument("--budget", type=int, default=1024, help="prompt tokens per request (default 1024)")
    parser.add_argument("--max-tokens", type=int, default=256, help="answer tokens per request (default 256)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: the LLM server's)")
    parser.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, help="system prompt of new chats")
    parser.add_argument("--llm-timeout", type=float, default=60.0, help="seconds to wait for the LLM (default 60)")
    return parser


def model_context(settings: Settings) -> int | None:
    """The model's context in tokens, if the LLM API's /v1/models reports it (`max_model_len`: the course's server
    and vLLM do, hosted providers do not); None when it does not, or cannot be asked now."""
    import openai

    client = openai.OpenAI(base_url=settings.llm_base_url, api_key=settings.llm_api_key, max_retries=0,
                           timeout=min(settings.timeout, 10.0))
    try:
        listed = {model.id: (model.model_extra or {}).get("max_model_len") for model in client.models.list()}
    except openai.OpenAIError:  # down or no list: the page reports the LLM's errors when it asks
        return None
    context = listed.get(settings.llm_model)
    return context if isinstance(context, int) and context > 0 else None


def fit_context(settings: Settings, context: int | None) -> Settings:
    """`settings` with a budget and max_tokens that fit together in `context` tokens (a small model's 128, say),
    giving the answer at most half; unchanged when they fit or the context is unknown."""
    if context is None or settings.budget + settings.max_tokens <= context:
        return settings
    max_tokens = max(1, min(settings.max_tokens, context // 2))
    return replace(settings, max_tokens=max_tokens, budget=max(1, min(settings.budget, context - max_tokens)))


def serve(settings: Settings, port: int, tokenizer: str | None = None) -> None:
    """Load the tokenizer, print the URL and serve on 127.0.0.1:`port` until Ctrl-C / SIGTERM."""
    import signal

    import uvicorn

    # uvicorn stops on SIGTERM, then raises the signal again; as SystemExit it unwinds the `with serve_llm`
    # of main(), which stops the LLM server too (the default action would kill this process on the spot).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    context = model_context(settings)
    fitted = fit_context(settings, context)
    if fitted != settings:  # else every request would be refused: prompt + answer must fit the model's context
        print(f"{settings.llm_model} reads at most {context} tokens: prompts get {fitted.budget} (--budget) and "
              f"answers {fitted.max_tokens} (--max-tokens)", flush=True)
    settings = fitted
    app = create_app(settings, load_tokenizer(tokenizer))
    print(f"chatbot on http://{HOST}:{port}  (model {settings.llm_model} at {settings.llm_base_url}, memory "
          f"{settings.policy} within {settings.budget} tokens; Ctrl-C stops it)", flush=True)
    exit_when_orphaned()  # started by a notebook whose kernel died: stop too (and so our LLM server)
    uvicorn.run(app, host=HOST, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> int:
    """`python -m utils.chatbot_app`: serve the chatbot, with the course's LLM server unless given a base URL."""
    from utils.runtime import MissingSecretError, get_secret

    args = _parser().parse_args(argv)
    if not 0 < args.port < 65536:
        _parser().error(f"--port must be 1-65535; got {args.port}")
    if args.llm_base_url and not args.llm_model:
        _parser().error("--llm-model is required with --llm-base-url (the name the provider gives the model)")
    options = dict(policy=args.policy, budget=args.budget, max_tokens=args.max_tokens, temperature=args.temperature,
                   system_prompt=args.system_prompt, timeout=args.llm_timeout)
    try:
        if args.llm_base_url:
            try:
                key = get_secret(args.llm_api_key_env)
            except MissingSecretError:
                key = "none"  # a local server without a key
            serve(Settings(args.llm_base_url, args.llm_model, key, **options), args.port, args.tokenizer)
            return 0
        from utils.llm_server import serve_llm

        print("starting the course's LLM server (python -m utils.llm_server) ...", flush=True)
        with serve_llm(args.preset) as server:  # stopped again when the app stops
            serve(Settings(server.base_url, server.model, server.api_key, **options), args.port, args.tokenizer)
    except ValueError as error:
        _parser().error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
