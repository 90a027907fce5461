"""The OpenAI wire format as the course's server (utils/llm_server.py) reads it: errors, request bodies, and
how a chat request becomes a prompt, a grammar and the engine's sampling settings.

Everything here is checked before the model runs, and every problem becomes an `APIError` in OpenAI's shape
{"error": {"message", "type", "param", "code"}} with the right HTTP status, never a stack trace.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from utils.llm_engine import SamplingParams

DEFAULT_MAX_TOKENS = 512  # when a request names none; never more than the context leaves
# Used when a request omits them: the settings SmolLM2's model card recommends (OpenAI's own default of
# temperature 1 makes a 135M model ramble). vLLM does the same with a model's generation_config.
DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.2, 0.9


# ------------------------------------------------------------------------------------------ errors
class APIError(Exception):
    """An error the client should see, in OpenAI's shape: status, message, param, code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI sends for this error."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        return JSONResponse(self.body(), status_code=self.status)


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """Pydantic's complaint about a request, as one readable 400 naming the field."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    if first.get("type") == "json_invalid":
        return APIError(400, "The request body is not valid JSON.").response()
    message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return APIError(400, message, param=where or None).response()


# ------------------------------------------------------------------------------------------ requests
class Message(BaseModel):
    """One chat message; content is text or a list of text parts (images are not supported)."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The content as one string."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {part.get("type") for part in self.content} - {"text"}
        if kinds:
            raise APIError(400, f"content parts of type {sorted(map(str, kinds))} are not supported; this "
                           "server takes text only.", param="messages")
        return "".join(str(part.get("text", "")) for part in self.content)


class ChatRequest(BaseModel):
    """The body of POST /v1/chat/completions (OpenAI's fields; unknown ones are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"only n=1 is supported; got {n}")
        return n


class EmbeddingRequest(BaseModel):
    """The body of POST /v1/embeddings."""

    model_config = ConfigDict(extra="ignore")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise ValueError("input must be a non-empty string or a non-empty list of non-empty strings "
                             "(token-id arrays are not supported)")
        if len(texts) > 2048:
            raise ValueError(f"at most 2048 inputs per request; got {len(texts)}")
        return value


# ------------------------------------------------------------------------------------------ request -> engine
def render_messages(request: ChatRequest) -> list[dict[str, str]]:
    """The request's messages as plain {"role", "content"} for the chat template (tools included)."""
    from utils.tool_calls import render_tool_messages, tools_prompt

    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(),
                 **({"tool_calls": m.tool_calls} if m.tool_calls else {}),
                 **({"tool_call_id": m.tool_call_id} if m.tool_call_id else {})} for m in request.messages]
    if request.tools and request.tool_choice != "none":
        guide = tools_prompt(request.tools)
        if messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{guide}".strip()}
        else:
            messages.insert(0, {"role": "system", "content": guide})
    return render_tool_messages(messages)


def make_constraint(request: ChatRequest, tokenizer: Any) -> Any:
    """The grammar the output must follow (response_format or tools), or None for free text."""
    from utils.constrained import JsonConstraint, TokenVocabulary
    from utils.json_grammar import compile_schema
    from utils.tool_calls import tool_constraint

    fmt = request.response_format or {"type": "text"}
    tools_on = bool(request.tools) and request.tool_choice != "none"
    if tools_on and fmt.get("type") != "text":
        raise APIError(400, "use either tools or response_format in one request, not both.",
                       param="response_format")
    vocab = TokenVocabulary.from_tokenizer(tokenizer)  # built once per tokenizer (~0.5 s), then cached
    try:
        if request.tools:  # checked even with tool_choice="none", as OpenAI does
            return tool_constraint(request.tools, request.tool_choice or "auto", vocab,
                                   parallel=request.parallel_tool_calls is not False)
        if fmt.get("type") == "text":
            return None
        if fmt.get("type") == "json_object":  # any JSON object
            return JsonConstraint(compile_schema({"type": "object"}), vocab)
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise ValueError("response_format.json_schema.schema must be a JSON Schema object.")
            return JsonConstraint(compile_schema(schema), vocab)
        raise ValueError(f"response_format.type must be 'text', 'json_object' or 'json_schema'; got "
                         f"{fmt.get('type')!r}.")
    except ValueError as error:
        raise APIError(400, str(error), param="tools" if request.tools else "response_format") from None


def sampling_params(request: ChatRequest, prompt_tokens: int, context: int) -> SamplingParams:
    """The engine's settings for this request; 400 when the prompt and max_tokens do not fit the context."""
    room = context - prompt_tokens
    if room < 1:
        raise APIError(400, f"This model's maximum context length is {context} tokens, but the messages have "
                       f"{prompt_tokens} tokens.", param="messages", code="context_length_exceeded")
    wanted = request.max_completion_tokens or request.max_tokens
    if wanted is not None and wanted > room:
        raise APIError(400, f"This model's maximum context length is {context} tokens. The messages have "
                       f"{prompt_tokens} tokens and max_tokens is {wanted}: lower max_tokens to {room} or less.",
                       param="max_tokens", code="context_length_exceeded")
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    try:
        return SamplingParams(max_tokens=wanted or min(DEFAULT_MAX_TOKENS, room),
                              temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
                              top_p=DEFAULT_TOP_P if request.top_p is None else request.top_p,
                              stop=stop, seed=request.seed)
    except ValueError as error:
        raise APIError(400, str(error), param="stop" if "stop" in str(error) else None) from None
