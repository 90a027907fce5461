"""Which LLM a notebook talks to: the course's local server (the default, no key) or a hosted provider.

Every provider below speaks OpenAI's chat-completions API, so ONE client class (`openai.OpenAI`) reaches all
of them; only three things change: the base URL, the API key, and the model name.

    from utils.llm_server import start_llm_server
    from utils.providers import chosen_provider, client_for

    server = start_llm_server()                                  # the local server: no key, no network
    llm = client_for(chosen_provider(), server=server, fallback=True)
    llm.client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": "Hi!"}])

The provider is picked by the environment variable COURSE_LLM_PROVIDER (or the same line in .env): local
(default), openai, anthropic or gemini. A hosted provider needs its key (OPENAI_API_KEY, ANTHROPIC_API_KEY,
GEMINI_API_KEY) in the environment or in .env; keys are read with utils.runtime.get_secret and never printed.
COURSE_LLM_MODEL overrides a hosted provider's default model (the local server serves one model only).

Introduced in 03_llm_apps/02_llm_apis.ipynb; used again by the chatbot app (03.03), RAG (03.06) and agents (03.09).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from utils.runtime import MissingSecretError, get_secret, setting

PROVIDER_VARIABLE = "COURSE_LLM_PROVIDER"  # local | openai | anthropic | gemini
MODEL_VARIABLE = "COURSE_LLM_MODEL"        # a hosted provider's model, instead of its default


@dataclass(frozen=True)
class Provider:
    """One OpenAI-compatible endpoint: where it is, which variable holds its key, which model to ask for."""

    name: str
    base_url: str | None      # None for the local server: it picks a free port when it starts
    key_variable: str | None  # the environment / .env variable of the API key; None: no key needed
    default_model: str | None  # None for the local server: it serves exactly one model (server.model)
    docs: str                 # where the base URL and the model name were looked up
    notes: str = ""           # how its OpenAI compatibility differs (read before comparing providers)


# Base URLs and model names as documented by each provider (looked up in their docs for this notebook).
# Model names age fast: COURSE_LLM_MODEL overrides them without editing this file.
PROVIDERS: dict[str, Provider] = {
    "local": Provider("local", None, None, None, "utils/llm_server.py",
                      "the course's server: SmolLM2 on this machine; seed and temperature are honoured exactly"),
    "openai": Provider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "gpt-5.4-mini",
                       "https://developers.openai.com/docs/models",
                       "the reference API; `seed` is best effort (same seed: usually, not always, the same text)"),
    "anthropic": Provider("anthropic", "https://api.anthropic.com/v1/", "ANTHROPIC_API_KEY", "claude-haiku-4-5",
                          "https://docs.anthropic.com/en/api/openai-sdk",
                          "a compatibility layer for testing: `seed` and `response_format` are ignored, "
                          "temperature is capped at 1, system messages are hoisted to the start"),
    "gemini": Provider("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY",
                       "gemini-2.5-flash", "https://ai.google.dev/gemini-api/docs/openai",
                       "Gemini's OpenAI-compatible endpoint; usage is counted by Gemini's own tokenizer"),
}


class MissingKeyError(MissingSecretError):
    """A hosted provider was chosen, but its API key is neither in the environment nor in .env."""


class Connection(NamedTuple):
    """What a notebook needs to chat: the client, the model name to send, and which provider answers."""

    client: Any  # an openai.OpenAI
    model: str
    provider: str


def _variable(name: str) -> str:
    """A course setting from the environment, else from .env (utils.runtime.setting); "" when neither sets it."""
    return setting(name).strip()


def get_provider(name: str | Provider) -> Provider:
    """The registry entry of `name` (a Provider passes through, for endpoints the registry does not know)."""
    if isinstance(name, Provider):
        return name
    key = str(name).strip().lower()
    if key not in PROVIDERS:
        raise ValueError(f"unknown LLM provider {name!r}. Allowed: {', '.join(PROVIDERS)}.")
    return PROVIDERS[key]


def chosen_provider(value: str | None = None) -> str:
    """The provider to use: `value`, else $COURSE_LLM_PROVIDER (or .env), else "local"."""
    raw = value if value is not None else _variable(PROVIDER_VARIABLE)
    name = raw.strip().lower() or "local"
    if name not in PROVIDERS:
        where = "argument" if value is not None else PROVIDER_VARIABLE
        raise ValueError(f"{where}={raw!r} is not an LLM provider. Allowed: {', '.join(PROVIDERS)} "
                         f"(unset means local).")
    return name


def missing_key_message(provider: Provider) -> str:
    """What to do when `provider`'s key is missing: set it, or go back to the local server."""
    return (f"The {provider.name} provider needs an API key in {provider.key_variable}, which is not set. "
            f"Either export {provider.key_variable}=... (or put it in .env, never in a notebook), or use the "
            f"course's local server, which needs no key: unset {PROVIDER_VARIABLE} or set "
            f"{PROVIDER_VARIABLE}=local.")


def client_for(provider: str | Provider = "local", *, server: Any = None, model: str | None = None,
               fallback: bool = False, **options: Any) -> Connection:
    """A Connection (client, model, provider) to `provider`; `options` go to openai.OpenAI (timeout, max_retries).

    local needs `server` (a running utils.llm_server.LocalServer). A hosted provider reads its key with
    get_secret; a missing key raises MissingKeyError, or with `fallback=True` prints why and connects to
    `server` instead.
    """
    import openai

    spec = get_provider(provider)
    if spec.base_url is None:  # the local server
        if server is None:
            raise ValueError("the local provider needs the running server: server = start_llm_server(), then "
                             "client_for('local', server=server).")
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, **options)
        return Connection(client, model or server.model, spec.name)
    try:
        key = get_secret(spec.key_variable) if spec.key_variable else "none"
    except MissingSecretError:
        if fallback and server is not None:
            print(f"{missing_key_message(spec)}\n-> staying on the local server.")
            return client_for("local", server=server, model=None, **options)
        raise MissingKeyError(missing_key_message(spec)) from None
    name = model or _variable(MODEL_VARIABLE) or spec.default_model
    if not name:
        raise ValueError(f"no model for provider {spec.name!r}: pass model=... or set {MODEL_VARIABLE}.")
    return Connection(openai.OpenAI(base_url=spec.base_url, api_key=key, **options), name, spec.name)
