"""utils.runtime: presets, offline switch, config choice, device, seeds, secrets, environment report."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from utils import runtime


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("COURSE_PRESET", "COURSE_OFFLINE", "COURSE_DEVICE", "COURSE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSE_DOTENV", str(tmp_path / "no.env"))  # no .env unless a test writes one


@pytest.fixture
def dotenv(monkeypatch, tmp_path):
    """A .env file of the test's own; returns a function that writes its lines."""
    path = tmp_path / "course.env"
    monkeypatch.setenv("COURSE_DOTENV", str(path))

    def write(*lines: str) -> None:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    return write


@dataclasses.dataclass(frozen=True)
class Config:
    steps: int  # training steps
    lr: float  # learning rate


PRESETS = {"smoke": Config(5, 1e-3), "laptop": Config(500, 1e-3), "full": Config(5000, 3e-4)}


@pytest.mark.parametrize("raw, expected", [("smoke", "smoke"), (" Laptop ", "laptop"), ("FULL", "full")])
def test_preset_names_are_read_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("COURSE_PRESET", raw)
    assert runtime.resolve_preset() == expected


def test_unset_preset_is_full_with_cuda_else_laptop(monkeypatch):
    monkeypatch.setattr(runtime, "_cuda_available", lambda: True)
    assert runtime.resolve_preset() == "full"
    monkeypatch.setattr(runtime, "_cuda_available", lambda: False)
    assert runtime.resolve_preset() == "laptop"


def test_bad_preset_names_the_allowed_values(monkeypatch):
    monkeypatch.setenv("COURSE_PRESET", "tiny")
    with pytest.raises(ValueError, match=r"'tiny' is not a preset\. Allowed: smoke, laptop, full"):
        runtime.resolve_preset()


def test_offline_flag_forces_standins_at_any_preset(monkeypatch):
    assert runtime.use_standins("smoke") and not runtime.use_standins("laptop")
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    assert runtime.is_offline() and runtime.use_standins("full")
    monkeypatch.setenv("COURSE_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="COURSE_OFFLINE='maybe' is not a yes/no value"):
        runtime.is_offline()


def test_choose_returns_the_presets_config_and_prints_every_field(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PRESET", "smoke")
    assert runtime.choose(PRESETS) == Config(5, 1e-3)
    out = capsys.readouterr().out
    assert "preset: smoke (from COURSE_PRESET) · stand-ins for downloads: on (smoke preset)" in out
    assert "steps = 5" in out and "lr    = 0.001" in out
    assert runtime.choose(PRESETS, "full") == Config(5000, 3e-4)


def test_choose_states_the_standin_mode_only_when_it_is_on(monkeypatch, capsys):
    # choose() cannot know whether the notebook downloads anything: it states a mode, and only when it is on.
    runtime.choose(PRESETS, "laptop")
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "preset: laptop (from argument)"
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    runtime.choose(PRESETS, "laptop")
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "preset: laptop (from argument) · stand-ins for downloads: on (COURSE_OFFLINE=1)"
    assert "offline stand-ins" not in first  # the old wording claimed the notebook used some


def test_settings_are_read_from_dotenv_when_the_environment_does_not_set_them(dotenv, tmp_path, capsys):
    dotenv("# my settings", "COURSE_PRESET=smoke      # smoke | laptop | full", "COURSE_OFFLINE='yes'",
           f"export COURSE_CACHE={tmp_path / 'from-dotenv'}", "COURSE_DEVICE=cpu")
    assert runtime.resolve_preset() == "smoke"
    assert runtime.is_offline() and runtime.use_standins("full")
    assert runtime.cache_dir() == tmp_path / "from-dotenv"
    assert runtime.get_device().type == "cpu"
    runtime.choose(PRESETS)
    assert capsys.readouterr().out.startswith("preset: smoke (from .env)")


def test_the_environment_wins_over_dotenv(dotenv, monkeypatch, tmp_path):
    dotenv("COURSE_PRESET=smoke", "COURSE_OFFLINE=1", f"COURSE_CACHE={tmp_path / 'from-dotenv'}")
    monkeypatch.setenv("COURSE_PRESET", "full")
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "from-env"))
    assert runtime.resolve_preset() == "full" and not runtime.is_offline()
    assert runtime.cache_dir() == tmp_path / "from-env"


def test_a_bad_value_in_dotenv_says_where_it_was_set(dotenv):
    dotenv("COURSE_PRESET=tiny", "COURSE_OFFLINE=maybe")
    with pytest.raises(ValueError, match=r"COURSE_PRESET='tiny' \(set in .*course\.env\) is not a preset"):
        runtime.resolve_preset()
    with pytest.raises(ValueError, match=r"COURSE_OFFLINE='maybe' \(set in .*course\.env\)"):
        runtime.is_offline()


def test_setting_rejects_unknown_names():
    with pytest.raises(ValueError, match="'COURSE_SIZE' is not a course setting. Allowed: COURSE_PRESET"):
        runtime.setting("COURSE_SIZE")


def test_choose_needs_all_three_presets():
    with pytest.raises(ValueError, match="exactly the presets"):
        runtime.choose({"smoke": 1, "laptop": 2})


def test_device_is_cpu_here_and_can_be_forced(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.get_device(allow_mps=False).type == expected
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.get_device().type == "cpu"
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="Allowed: cpu, cuda, mps"):
        runtime.get_device()


def test_asking_for_a_missing_device_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="this machine has no cuda"):
        runtime.get_device()


def test_seed_everything_repeats_python_numpy_and_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    runtime.seed_everything(7)
    first = draw()
    runtime.seed_everything(7)
    assert draw() == first
    for bad in (-1, 1.5, "7", True):
        with pytest.raises(ValueError, match="seed must be an int"):
            runtime.seed_everything(bad)


def test_seed_everything_does_not_import_torch():
    # Notebooks without torch (most of module 00) must not pay seconds for importing it.
    code = "import sys; from utils.runtime import seed_everything; seed_everything(1); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_secrets_come_from_env_then_dotenv_and_are_never_in_the_error(monkeypatch, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nexport DEMO_KEY='from-file'\nEMPTY_KEY=\n")
    assert runtime.get_secret("DEMO_KEY", dotenv) == "from-file"
    monkeypatch.setenv("DEMO_KEY", "from-env")
    assert runtime.get_secret("DEMO_KEY", dotenv) == "from-env"
    with pytest.raises(runtime.MissingSecretError, match=r"EMPTY_KEY is not set.*\.env"):
        runtime.get_secret("EMPTY_KEY", dotenv)
    with pytest.raises(ValueError, match="secret names"):
        runtime.get_secret("not a name", dotenv)


def test_secrets_are_found_in_the_dotenv_that_settings_use(dotenv, monkeypatch):
    monkeypatch.delenv("DEMO_KEY", raising=False)
    dotenv('DEMO_KEY="sk-123 # not a comment inside quotes"', "OTHER_KEY=abc  # a comment")
    assert runtime.get_secret("DEMO_KEY") == "sk-123 # not a comment inside quotes"
    assert runtime.get_secret("OTHER_KEY") == "abc"


def test_environment_report_names_versions_device_and_threads(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PRESET", "smoke")
    report = runtime.print_environment_report()
    assert report["torch"] == importlib.metadata.version("torch")
    assert report["preset"] == "smoke" and report["offline stand-ins"] is True
    assert report["device"] in ("cpu", "cuda") and report["torch threads"] >= 1
    assert "python" in capsys.readouterr().out


def test_importing_utils_has_no_side_effects(tmp_path):
    # A fresh interpreter: importing every utils module must not pull in the heavy optional
    # libraries (they are imported inside the functions that need them) nor create the cache.
    code = (
        "import sys, pkgutil, importlib, utils\n"
        "for m in pkgutil.iter_modules(utils.__path__):\n"
        "    importlib.import_module('utils.' + m.name)\n"
        "heavy = ('transformers', 'diffusers', 'datasets', 'sklearn', 'skimage', 'sentence_transformers')\n"
        "print(','.join(n for n in heavy if n in sys.modules))\n"
    )
    env = {**os.environ, "COURSE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "", f"importing utils imported heavy libraries: {out.stdout}"
    assert not (tmp_path / "cache").exists(), "importing utils created the cache folder"
