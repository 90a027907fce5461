"""utils.models.gpt_chat: our tokenizer with ChatML, and the course GPT saved as a model folder that transformers,
utils.chat and the course's OpenAI-compatible server load."""

import pytest
import torch

from utils.models.gpt import GPT, GPTConfig
from utils.models.gpt_chat import IM_END, SPECIAL_TOKENS, save_chat_model, train_chat_tokenizer

TEXTS = ["The pass statement does nothing. It is useful as a placeholder when a statement is required.",
         "A for loop iterates over the items of any sequence, in the order that they appear — déjà vu, 数字."] * 20
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does pass do?"}]


@pytest.fixture(scope="module")
def tokenizer():
    return train_chat_tokenizer(TEXTS, 300)


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    """A tiny GPT whose final LayerNorm bias points at <|im_end|>: it ends its turn at once, greedily."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        row = model.transformer.wte.weight[tokenizer.eos_token_id]
        model.transformer.ln_f.bias.copy_(50.0 * row / row.norm())
    return model, save_chat_model(model, tokenizer, tmp_path_factory.mktemp("gpt_chat"))


def test_special_tokens_come_first_and_stay_whole(tokenizer):
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2]
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token_id == 0
    text = TEXTS[1]
    assert tokenizer.decode(tokenizer(text).input_ids) == text, "byte-level BPE encodes any text losslessly"
    assert not {0, 1, 2} & set(tokenizer(text).input_ids)


def test_chat_template_is_chatml(tokenizer):
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat does pass do?<|im_end|>\n"
                      "<|im_start|>assistant\n")
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert ids[0] == 1 and ids.count(2) == 2, "<|im_start|> and <|im_end|> are single tokens"


def test_saved_folder_loads_with_the_same_logits_and_stop_token(saved, tokenizer):
    from utils.chat import chat_reply, load_chat_model

    model, folder = saved
    hf, hf_tokenizer = load_chat_model(path=str(folder), device="cpu")
    assert hf.generation_config.eos_token_id == tokenizer.eos_token_id == 2
    ids = hf_tokenizer(hf_tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                       return_tensors="pt", add_special_tokens=False).input_ids
    torch.testing.assert_close(hf(ids).logits, model(ids)[0], rtol=1e-5, atol=1e-5)
    assert chat_reply(hf, hf_tokenizer, MESSAGES, max_new_tokens=5) == "", "the turn ends at <|im_end|>"
    assert model.generate(ids, 5, temperature=0, stop_tokens=(2,))[0, -1].item() == 2


def test_the_course_server_serves_it(saved):
    from openai import OpenAI

    from utils.llm_server import serve_llm

    with serve_llm(model=str(saved[1]), timeout=120) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.api_key)
        reply = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=5, temperature=0)
    assert reply.choices[0].finish_reason == "stop", "the server must stop at the model's <|im_end|>"
    assert reply.usage.prompt_tokens > 10


def test_bad_arguments_are_refused(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_chat_tokenizer(TEXTS, 100)
    with pytest.raises(ValueError, match="vocab_size"):
        save_chat_model(GPT(GPTConfig(vocab_size=len(tokenizer) + 1, block_size=8, n_layer=1, n_head=1, n_embd=8)),
                        tokenizer, tmp_path)
