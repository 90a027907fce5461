"""The chatbot page in a real browser: Debian's Chromium, headless, driven by Selenium.

It starts the course's LLM server (the real SmolLM2-135M-Instruct) and the app on free 127.0.0.1 ports, types a
question, watches the answer grow in pieces, sends a follow-up that needs memory, reloads the page, then stops
the LLM server and the app in turn and checks the page says so each time. A second test serves a course GPT saved
as 05.04 saves it, starts the app with the command 05.04 prints, and checks the page shows the served GPT's reply
and counts the budget with the GPT's tokenizer. Screenshots go to
build/test-artifacts/ (git-ignored). Without Chromium and chromedriver the test is skipped with one line, except
in CI (CI=true), where it must run: .ci/run installs them.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from utils.llm_server import serve_llm
from utils.servers import background_server, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"

# Records the length of the newest answer at every change of the conversation (the page adds each token
# as it arrives), so the test sees the text grow without polling it.
WATCH_GROWTH = """
window.growth = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll("#log .msg.assistant .text");
  if (answers.length) window.growth.push(answers[answers.length - 1].textContent.length);
}).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser(chromium):
    """The shared headless Chromium (tests/conftest.py: skipped without it, except in CI), chat-window sized."""
    chromium.set_window_size(900, 1000)
    return chromium


def _wait(driver, condition, timeout: float = 180):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def _send(driver, text: str) -> None:
    """Type `text` and press Enter, as a person would; wait until the page is ready for the next one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "message")
    box.send_keys(text + Keys.ENTER)
    _wait(driver, lambda d: d.find_element(By.ID, "send").is_enabled()
          and not d.find_elements(By.CSS_SELECTOR, "#log .msg.streaming"))


def _answers(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, "#log .msg.assistant .text")]


def _error(driver) -> str:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, "error")
    return element.text if element.is_displayed() else ""


def test_the_page_streams_remembers_and_shows_errors(browser):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as servers:
        llm = servers.enter_context(contextlib.ExitStack())  # closed on its own below, to take the LLM down
        model = llm.enter_context(serve_llm("smoke"))
        port = free_port()
        argv = [sys.executable, "-m", "utils.chatbot_app", "--port", str(port), "--llm-base-url", model.base_url,
                "--llm-model", model.model, "--temperature", "0", "--max-tokens", "48"]
        app = servers.enter_context(contextlib.ExitStack())
        app.enter_context(background_server(argv, port))
        browser.get(f"http://127.0.0.1:{port}/")
        _wait(browser, lambda d: "Model" in d.find_element(By.ID, "info").text, timeout=30)
        assert browser.find_element(By.ID, "log").get_attribute("role") == "log"
        assert browser.find_element(By.ID, "error").get_attribute("role") == "alert"

        browser.execute_script(WATCH_GROWTH)
        _send(browser, "The secret word is Marisol.")
        growth = [n for n in browser.execute_script("return window.growth;") if n > 0]
        assert len(set(growth)) >= 3 and growth == sorted(growth), f"the answer should grow in pieces: {growth}"
        assert _answers(browser)[-1] and not _error(browser)

        _send(browser, "What is the secret word?")  # needs the first exchange, which the backend resends
        assert "marisol" in _answers(browser)[-1].lower(), _answers(browser)
        assert "prompt tokens" in browser.find_element(By.ID, "status").text
        browser.save_screenshot(str(ARTIFACTS / "chatbot.png"))

        browser.refresh()  # the tab keeps its session id; the backend still has the conversation
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log .msg")) == 4, timeout=30)

        llm.close()  # the LLM server goes away; the app stays
        _send(browser, "Are you still there?")
        assert "is not reachable" in _error(browser), _error(browser)
        browser.save_screenshot(str(ARTIFACTS / "chatbot-llm-down.png"))

        app.close()  # now the app itself is gone
        _send(browser, "Hello?")
        assert "Cannot reach the chatbot server" in _error(browser), _error(browser)
    assert (ARTIFACTS / "chatbot.png").stat().st_size > 10_000


# The command 05.04 prints for the learner (its last cell), with this test's free port added; {folder} is the saved
# course GPT, {base_url} and {model} the server's.
NOTEBOOK_COMMAND = ("python -m utils.chatbot_app --llm-base-url {base_url} --llm-model {model} --tokenizer {folder} "
                    "--temperature 0")
QUESTION = "What does the pass statement do?"
GPT_TEXTS = ["The pass statement does nothing. It is useful as a placeholder when a statement is required.",
             "A for loop iterates over the items of any sequence, in the order that they appear.",
             "You are a helpful assistant. Answer briefly and clearly.", QUESTION] * 20


def _course_gpt_folder(folder: Path) -> Path:
    """A random course GPT saved as 05.04 saves its chat model (plumbing only: its words are noise), with the
    smoke preset's context of 128 tokens."""
    import torch

    from utils.models.gpt import GPT, GPTConfig
    from utils.models.gpt_chat import save_chat_model, train_chat_tokenizer

    tokenizer = train_chat_tokenizer(GPT_TEXTS, 400)  # whole words: the prompt fits the 64 tokens the app allows
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()
    return save_chat_model(model, tokenizer, folder)


def test_the_page_chats_with_the_served_course_gpt_as_05_04_tells_the_learner(browser, tmp_path):
    import shlex

    from openai import OpenAI
    from selenium.webdriver.common.by import By
    from transformers import AutoTokenizer

    from utils.chat import count_tokens
    from utils.chatbot_app import DEFAULT_SYSTEM_PROMPT
    from utils.hub import model_path

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    folder = _course_gpt_folder(tmp_path / "course_gpt")
    question = QUESTION
    with serve_llm(model=str(folder), served_model_name="course-gpt", timeout=120) as server:
        port = free_port()
        command = NOTEBOOK_COMMAND.format(base_url=server.base_url, model=server.model, folder=folder)
        argv = [sys.executable, *shlex.split(command)[1:], "--port", str(port)]
        with background_server(argv, port, timeout=60):
            browser.get(f"http://127.0.0.1:{port}/")
            _wait(browser, lambda d: "Model course-gpt" in d.find_element(By.ID, "info").text, timeout=30)
            _send(browser, question)
            shown = browser.find_element(By.CSS_SELECTOR, "#log .msg.assistant .text").get_attribute("textContent")
            status = browser.find_element(By.ID, "status").text
            assert not _error(browser), _error(browser)
            browser.save_screenshot(str(ARTIFACTS / "chatbot-course-gpt.png"))
        # the same conversation, asked directly with the official client: the page showed the served GPT's reply
        client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
        direct = client.chat.completions.create(model="course-gpt", messages=messages, temperature=0,
                                                max_tokens=64)  # half the context: what the app fits in
    assert direct.choices[0].message.content and shown == direct.choices[0].message.content, (shown, direct)
    # the budget is counted by the GPT's own tokenizer (the server's count), not by the course's SmolLM2's
    smol_count = count_tokens(AutoTokenizer.from_pretrained(model_path("instruct_llm")), messages)
    assert smol_count != direct.usage.prompt_tokens, "the check below could not tell the two tokenizers apart"
    # 64 of the GPT's 128 tokens: the app fitted its budget (1024 by default) into the model's context
    assert status.startswith(f"Sent {direct.usage.prompt_tokens} of 64 prompt tokens"), status
    assert (ARTIFACTS / "chatbot-course-gpt.png").stat().st_size > 5_000
