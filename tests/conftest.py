"""Settings shared by every test run: the tests never read a developer's own .env file.

utils.runtime reads COURSE_PRESET, COURSE_OFFLINE, COURSE_CACHE and COURSE_DEVICE from the repo's .env when
the environment does not set them. Pointing COURSE_DOTENV at nothing makes the test suite (and the notebook
kernels it starts, which inherit this environment) behave the same on every machine. Tests of the .env
reading point COURSE_DOTENV at their own temporary file.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def pytest_configure(config) -> None:  # noqa: ARG001 (pytest's hook signature)
    """Runs once, before collection: ignore any .env in this process and every process it starts."""
    os.environ["COURSE_DOTENV"] = os.devnull


@pytest.fixture(scope="session")
def chat_model() -> tuple[Any, Any]:
    """(model, tokenizer): the real SmolLM2-135M-Instruct of the smoke preset, loaded once per test process."""
    from utils.chat import load_chat_model

    return load_chat_model("smoke", device="cpu")
