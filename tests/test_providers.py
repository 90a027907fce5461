"""utils.providers: the registry, the COURSE_LLM_PROVIDER switch, the missing-key path, the clients it builds.

Nothing here reaches the internet: a hosted client is only built (with a fake key) and its base URL checked.
The local path talks to a stand-in server object; 03.02's notebook and tests/test_llm_server.py use the real one.
"""

from __future__ import annotations

from types import SimpleNamespace

import openai
import pytest

from utils.providers import (MODEL_VARIABLE, PROVIDER_VARIABLE, PROVIDERS, Connection, MissingKeyError, Provider,
                             chosen_provider, client_for, get_provider)
from utils.runtime import MissingSecretError

FAKE_KEY = "sk-test-0123456789abcdef"  # never sent anywhere: no request is made in these tests
SERVER = SimpleNamespace(base_url="http://127.0.0.1:9/v1", api_key="none", model="HuggingFaceTB/SmolLM2-135M-Instruct")
KEY_VARIABLES = [p.key_variable for p in PROVIDERS.values() if p.key_variable]


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    """Every test starts with no provider key, no switch and an empty .env of its own."""
    for name in [*KEY_VARIABLES, PROVIDER_VARIABLE, MODEL_VARIABLE]:
        monkeypatch.delenv(name, raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text("")
    monkeypatch.setenv("COURSE_DOTENV", str(dotenv))
    return dotenv


# ------------------------------------------------------------------------------ the registry
def test_the_registry_holds_the_documented_openai_compatible_endpoints():
    assert list(PROVIDERS) == ["local", "openai", "anthropic", "gemini"]
    expected = {"openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
                "anthropic": ("https://api.anthropic.com/v1/", "ANTHROPIC_API_KEY"),
                "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY")}
    for name, (url, variable) in expected.items():
        spec = PROVIDERS[name]
        assert (spec.name, spec.base_url, spec.key_variable) == (name, url, variable)
        assert spec.default_model and spec.docs.startswith("https://")
    local = PROVIDERS["local"]
    assert (local.base_url, local.key_variable, local.default_model) == (None, None, None)


def test_the_example_env_file_lists_every_provider_key():
    from utils.runtime import repo_root

    example = (repo_root() / ".env.example").read_text()
    for variable in KEY_VARIABLES:
        assert f"\n{variable}=\n" in example, f".env.example has no empty {variable}= line"


def test_get_provider_accepts_names_in_any_case_and_provider_objects():
    assert get_provider("OpenAI") is PROVIDERS["openai"]
    custom = Provider("vllm", "http://127.0.0.1:8001/v1", None, "my-model", "local vLLM")
    assert get_provider(custom) is custom
    with pytest.raises(ValueError, match=r"unknown LLM provider 'mistral'.*local, openai, anthropic, gemini"):
        get_provider("mistral")


# ------------------------------------------------------------------------------ the switch
def test_the_default_provider_is_the_local_server():
    assert chosen_provider() == "local"


def test_the_switch_is_read_from_the_environment_then_from_dotenv(monkeypatch, no_keys):
    no_keys.write_text(f"{PROVIDER_VARIABLE}=gemini\n")
    assert chosen_provider() == "gemini"
    monkeypatch.setenv(PROVIDER_VARIABLE, " Anthropic ")
    assert chosen_provider() == "anthropic"  # the environment wins over .env
    assert chosen_provider("openai") == "openai"  # and an explicit argument over both


def test_an_unknown_switch_value_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(PROVIDER_VARIABLE, "gpt")
    with pytest.raises(ValueError, match=rf"{PROVIDER_VARIABLE}='gpt' is not an LLM provider.*unset means local"):
        chosen_provider()


# ------------------------------------------------------------------------------ clients
def test_the_local_client_points_at_the_running_server():
    llm = client_for("local", server=SERVER, max_retries=0, timeout=7)
    assert isinstance(llm, Connection) and isinstance(llm.client, openai.OpenAI)
    assert str(llm.client.base_url) == "http://127.0.0.1:9/v1/"
    assert (llm.model, llm.provider, llm.client.max_retries, llm.client.timeout) == (SERVER.model, "local", 0, 7)


def test_the_local_provider_without_a_server_says_how_to_start_one():
    with pytest.raises(ValueError, match=r"start_llm_server\(\)"):
        client_for("local")


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
def test_a_missing_key_names_the_variable_and_the_way_back_to_local(name):
    variable = PROVIDERS[name].key_variable
    with pytest.raises(MissingKeyError) as error:
        client_for(name, server=SERVER)
    message = str(error.value)
    assert variable in message and f"{PROVIDER_VARIABLE}=local" in message and ".env" in message
    assert isinstance(error.value, MissingSecretError)  # code that catches utils.runtime's error still works


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
def test_a_hosted_client_gets_the_documented_base_url_the_key_and_the_default_model(monkeypatch, name):
    spec = PROVIDERS[name]
    monkeypatch.setenv(spec.key_variable, FAKE_KEY)
    llm = client_for(name, max_retries=4)
    assert str(llm.client.base_url).rstrip("/") == spec.base_url.rstrip("/")
    assert llm.client.api_key == FAKE_KEY and llm.client.max_retries == 4
    assert (llm.model, llm.provider) == (spec.default_model, name)


def test_the_key_can_come_from_dotenv(no_keys):
    no_keys.write_text(f"ANTHROPIC_API_KEY={FAKE_KEY}\n")
    assert client_for("anthropic").client.api_key == FAKE_KEY


def test_the_model_comes_from_the_argument_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv(MODEL_VARIABLE, "gpt-from-env")
    assert client_for("openai").model == "gpt-from-env"
    assert client_for("openai", model="gpt-from-arg").model == "gpt-from-arg"
    # the local server serves one model: COURSE_LLM_MODEL is for hosted providers only
    assert client_for("local", server=SERVER).model == SERVER.model


def test_fallback_stays_on_the_local_server_and_says_why(capsys):
    llm = client_for("gemini", server=SERVER, fallback=True, model="gemini-x")
    assert (llm.provider, llm.model, str(llm.client.base_url)) == ("local", SERVER.model, "http://127.0.0.1:9/v1/")
    out = capsys.readouterr().out
    assert "GEMINI_API_KEY" in out and "staying on the local server" in out


def test_fallback_without_a_server_still_raises_the_clear_error():
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        client_for("openai", fallback=True)


def test_a_custom_provider_object_works_like_a_registered_one(monkeypatch):
    custom = Provider("together", "https://example.invalid/v1", "COURSE_TEST_CUSTOM_KEY", "some-model", "test")
    with pytest.raises(MissingKeyError, match="COURSE_TEST_CUSTOM_KEY"):
        client_for(custom)
    monkeypatch.setenv("COURSE_TEST_CUSTOM_KEY", FAKE_KEY)
    assert str(client_for(custom).client.base_url) == "https://example.invalid/v1/"


def test_the_key_is_never_printed_or_put_in_an_error(monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    llm = client_for("openai")
    texts = [repr(llm), str(llm), repr(llm.client), capsys.readouterr().out]
    with pytest.raises(ValueError) as error:
        client_for(Provider("broken", "https://example.invalid/v1", "OPENAI_API_KEY", None, "test"))
    texts.append(str(error.value))
    assert not [text for text in texts if FAKE_KEY in text]


def test_importing_the_module_stays_cheap():
    import subprocess
    import sys

    code = "import sys, utils.providers; print(sorted({'openai', 'httpx', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import utils.providers loaded {out.strip()}"
