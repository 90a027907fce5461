"""The offline stand-ins of utils.hub: a tiny model of the SAME architecture class as each real one.

Each builder trains a tokenizer of the real class on Python's own docs (a real algorithm, a tiny vocabulary),
makes the model from a small config with random weights, saves both into `folder` like a hub repo, and
returns the parameter count. utils.hub builds each one once into the course cache, atomically.
Nothing runs at import; transformers and diffusers are imported inside the builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from utils.data import offline_text

VOCAB_SIZE = 1000
"""Vocabulary of every locally trained tokenizer: real subwords, yet trained in under a second."""


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


BUILDERS: dict[str, Callable[[Path], int]] = {
    "gpt2": _build_gpt2, "bert": _build_bert, "distilbert": _build_distilbert, "t5": _build_t5,
    "tiny_llama": _build_tiny_llama, "clip": _build_clip, "stable_diffusion": _build_stable_diffusion,
    "ddpm": _build_ddpm,
}
"""Stand-ins built locally: each builder saves into a folder and returns its parameter count."""

