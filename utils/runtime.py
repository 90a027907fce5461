"""Where and how a notebook runs: preset, offline mode, device, seeds, secrets, environment report.

Every notebook starts with these. Nothing here runs at import time; torch is imported inside the
functions that need it so that `import utils.runtime` stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import random
import re
import sys
from pathlib import Path
from typing import Any, Mapping, TypeVar

PRESETS = ("smoke", "laptop", "full")
"""The three sizes of every notebook: seconds on CPU (CI), minutes on a laptop, a GPU run."""

DEVICES = ("cpu", "cuda", "mps")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

T = TypeVar("T")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


SETTINGS = ("COURSE_PRESET", "COURSE_OFFLINE", "COURSE_CACHE", "COURSE_DEVICE", "COURSE_LLM_PROVIDER",
            "COURSE_LLM_MODEL")
"""The course's switches: each is read from the environment first, then from the .env file."""


def dotenv_path() -> Path:
    """The .env file read for settings and secrets: $COURSE_DOTENV if set, else .env at the repo root."""
    raw = os.environ.get("COURSE_DOTENV", "").strip()
    return Path(raw).expanduser() if raw else repo_root() / ".env"


def _setting_source(name: str) -> str:
    """Where setting `name` comes from: "environment", ".env" or "" (not set)."""
    if os.environ.get(name, "").strip():
        return "environment"
    path = dotenv_path()
    return ".env" if path.is_file() and _read_dotenv(path).get(name) else ""


def setting(name: str) -> str:
    """The course switch `name` (one of SETTINGS): the environment wins, then .env; "" when neither sets it."""
    if name not in SETTINGS:
        raise ValueError(f"{name!r} is not a course setting. Allowed: {', '.join(SETTINGS)}.")
    value = os.environ.get(name, "").strip()
    path = dotenv_path()
    if not value and path.is_file():
        value = _read_dotenv(path).get(name, "")
    return value


def _named(name: str, value: str) -> str:
    """'NAME=value', plus where it was set when that was the .env file (so the learner finds it)."""
    where = f" (set in {dotenv_path()})" if _setting_source(name) == ".env" else ""
    return f"{name}={value!r}{where}"


def resolve_preset(value: str | None = None) -> str:
    """The preset to run at: `value`, else $COURSE_PRESET (or .env), else full with CUDA and laptop without."""
    if value is None:
        value = setting("COURSE_PRESET")
    name = value.strip().lower()
    if not name:
        return "full" if _cuda_available() else "laptop"
    if name not in PRESETS:
        raise ValueError(
            f"{_named('COURSE_PRESET', value)} is not a preset. Allowed: {', '.join(PRESETS)} "
            "(or unset: full when a CUDA GPU is present, else laptop)."
        )
    return name


def _env_flag(name: str) -> bool:
    raw = setting(name)
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{_named(name, raw)} is not a yes/no value. Allowed: 1/0, true/false, yes/no, on/off.")


def is_offline() -> bool:
    """True when $COURSE_OFFLINE (or COURSE_OFFLINE in .env) asks for offline stand-ins at every preset."""
    return _env_flag("COURSE_OFFLINE")


def use_standins(preset: str | None = None) -> bool:
    """True when datasets and models should be the offline stand-ins: the smoke preset, or offline."""
    return resolve_preset(preset) == "smoke" or is_offline()


def choose(presets: Mapping[str, T], preset: str | None = None) -> T:
    """Pick this run's config from `{"smoke": ..., "laptop": ..., "full": ...}` and print it."""
    if set(presets) != set(PRESETS):
        raise ValueError(f"choose() needs exactly the presets {PRESETS}; got {tuple(presets)}.")
    name = resolve_preset(preset)
    config = presets[name]
    source = "argument" if preset else {"environment": "COURSE_PRESET", ".env": ".env"}.get(
        _setting_source("COURSE_PRESET"), "default")
    print(f"preset: {name} (from {source}){_standin_mode(name)}")
    if dataclasses.is_dataclass(config):
        width = max(len(f.name) for f in dataclasses.fields(config))
        for field in dataclasses.fields(config):
            print(f"  {field.name:<{width}} = {getattr(config, field.name)!r}")
    else:
        print(f"  {config!r}")
    return config


def _standin_mode(preset: str) -> str:
    """' · stand-ins for downloads: on (why)' when they are on, else ''.

    Worded as a mode, not a claim: choose() cannot know whether this notebook downloads anything.
    """
    if is_offline():
        return " · stand-ins for downloads: on (COURSE_OFFLINE=1)"
    if preset == "smoke":
        return " · stand-ins for downloads: on (smoke preset)"
    return ""


def get_device(allow_mps: bool = True) -> "torch.device":  # noqa: F821 (torch imported lazily)
    """The best device here: $COURSE_DEVICE (or .env) if set, else CUDA, else Apple MPS (if allowed), else CPU.

    Pass `allow_mps=False` in a notebook whose operations are known to give wrong results on MPS.
    """
    import torch

    wanted = setting("COURSE_DEVICE").lower()
    if wanted:
        if wanted not in DEVICES:
            allowed = ", ".join(DEVICES)
            raise ValueError(f"{_named('COURSE_DEVICE', wanted)} is not a device. Allowed: {allowed}.")
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
        if not available[wanted]:
            raise ValueError(f"{_named('COURSE_DEVICE', wanted)} was asked for, but this machine has no "
                             f"{wanted}.")
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if allow_mps and _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run repeats; returns the seed.

    Call it after the imports: torch is seeded only when it is already imported, so a notebook that
    never uses torch does not pay seconds to import it.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32); got {seed!r}.")
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def is_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def repo_root() -> Path:
    """The course checkout this package lives in (the folder holding pyproject.toml)."""
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where downloads and stand-ins are kept: $COURSE_CACHE (or .env), else ~/.cache/genai-course."""
    raw = setting("COURSE_CACHE")
    path = Path(raw).expanduser() if raw else Path.home() / ".cache" / "genai-course"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read_dotenv(path: Path) -> dict[str, str]:
    """KEY=value lines of a .env file; `export`, quotes and trailing ` # comments` are allowed."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value[0] in value[1:]:
            value = value[1:value.index(value[0], 1)]  # quoted: everything up to the closing quote
        else:
            value = re.split(r"\s#", value, maxsplit=1)[0].strip()  # `COURSE_PRESET=smoke  # a note`
        values[key.strip()] = value
    return values


class MissingSecretError(LookupError):
    """An API key the notebook needs is neither in the environment nor in .env."""


def get_secret(name: str, dotenv: Path | None = None) -> str:
    """An API key from the environment, else from the .env file (see dotenv_path). Never print the result."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"secret names are letters, digits and '_'; got {name!r}.")
    value = os.environ.get(name, "").strip()
    dotenv = dotenv or dotenv_path()
    if not value and dotenv.is_file():
        value = _read_dotenv(dotenv).get(name, "")
    if not value:
        raise MissingSecretError(
            f"{name} is not set. Put it in the environment (export {name}=...) or in {dotenv} "
            f"(copy .env.example to .env and fill it in). It is never printed or committed."
        )
    return value


REPORT_PACKAGES = ("torch", "torchvision", "transformers", "diffusers", "datasets", "numpy", "pandas",
                   "matplotlib", "scikit-learn")


def environment_report(packages: tuple[str, ...] = REPORT_PACKAGES) -> dict[str, Any]:
    """Python, package versions, device, threads, preset and offline mode, as a plain dict."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "colab": is_colab(),
        "preset": resolve_preset(),
        "offline stand-ins": use_standins(),
        "cpu cores": os.cpu_count(),
        **versions,
    }
    try:
        import torch

        device = get_device()
        report["device"] = str(device)
        if device.type == "cuda":
            report["gpu"] = torch.cuda.get_device_name(device)
        report["torch threads"] = torch.get_num_threads()
    except ImportError:
        report["device"] = "cpu (torch not installed)"
    return report


def print_environment_report() -> dict[str, Any]:
    """Print `environment_report()` as an aligned table and return it."""
    report = environment_report()
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return report
