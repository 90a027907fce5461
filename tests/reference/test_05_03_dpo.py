"""05.03's from-scratch DPO and GRPO pieces against trl 1.16, on the same batches.

DPO: trl's DPOTrainer builds a batch (prompt + chosen / prompt + rejected, padded, with its completion mask)
from a small preference set; its `_compute_loss` gives the loss and the metrics rewards/chosen, /rejected,
/accuracies, /margins. The from-scratch `sequence_logprobs` (loss masking) + `dpo_loss` + `reward_metrics` must
give the same numbers from the same model, reference model and batch. The reference is a perturbed copy of the
policy, so the log-ratios are not zero and the metrics are not trivially equal.

GRPO: a GRPOTrainer generates groups of completions for a prompt batch; a programmatic reward function records
the rewards it hands back; `grpo_advantages` on those rewards must equal the advantages trl computed, for every
`scale_rewards` option. The models are tiny random Llamas with the real SmolLM2 tokenizer: the numbers being
compared do not depend on the weights being trained.

The comparisons reach into private trainer internals (trl 1.16 and transformers 5.23 are pinned in
requirements.txt): DPOTrainer._compute_loss and ._metrics, Trainer._prepare_inputs, and
GRPOTrainer._generate_and_score_completions. `_private` fails with a message naming the pins when an upgrade
moves one of them, instead of an AttributeError deep in a test.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from utils.preference import dpo_loss, grpo_advantages, reward_metrics, sequence_logprobs


def _private(obj, name: str):
    """obj.name, or a test failure that says which pinned private API an upgrade removed."""
    if not hasattr(obj, name):
        import transformers
        import trl

        pytest.fail(f"{type(obj).__name__}.{name} is gone in trl {trl.__version__} / transformers "
                    f"{transformers.__version__}: this check reads a PRIVATE trainer internal of the pinned trl==1.16.0 "
                    f"and transformers==5.23.0 (requirements.txt); find its new name before bumping the pins",
                    pytrace=False)
    return getattr(obj, name)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from utils.hub import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path("instruct_llm", "smoke"))
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tiny_llama(tok, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(config)


def _preference_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Random prompt/chosen/rejected strings of different lengths (so padding and masking matter)."""
    rng = random.Random(seed)
    words = "the a list dict key value loop function return error print sort string int float".split()
    def text(lo, hi):
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))
    return [{"prompt": text(2, 9), "chosen": " " + text(1, 7), "rejected": " " + text(1, 7)} for _ in range(n)]


def _dpo_trainer(tok, tmp_path, beta: float, seed: int):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model = _tiny_llama(tok, seed)
    ref = copy.deepcopy(model)
    with torch.no_grad():  # a reference that differs from the policy: non-zero log-ratios
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, per_device_train_batch_size=6, report_to=[],
                     use_cpu=True, loss_type=["sigmoid"], max_length=64)
    return DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tok,
                      train_dataset=Dataset.from_list(_preference_rows(12, seed)))


@pytest.mark.parametrize("beta,seed", [(0.1, 0), (0.5, 1)])
def test_dpo_loss_and_metrics_match_trl(tok, tmp_path, beta, seed):
    trainer = _dpo_trainer(tok, tmp_path, beta, seed)
    # _prepare_inputs (transformers), _compute_loss and _metrics (trl) are private: pinned versions, see _private
    inputs = _private(trainer, "_prepare_inputs")(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with torch.no_grad():
        trl_loss = _private(trainer, "_compute_loss")(trainer.model, inputs, return_outputs=False)
    trl_metrics = {k: v[-1] for k, v in _private(trainer, "_metrics")["train"].items() if k.startswith("rewards/")}

    ids, attn, mask = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
    assert mask.sum(1).min() > 0 and (mask.sum(1) < attn.sum(1)).all()  # every row has a prompt and an answer
    with torch.no_grad():
        logps = sequence_logprobs(trainer.model(input_ids=ids, attention_mask=attn).logits, ids, mask)
        ref_logps = sequence_logprobs(trainer.ref_model(input_ids=ids, attention_mask=attn).logits, ids, mask)
    chosen, rejected = logps.chunk(2)          # trl's batch is [chosen rows, rejected rows]
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    loss, r_chosen, r_rejected = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta)
    ours = reward_metrics(r_chosen, r_rejected)

    assert abs(ours["rewards/margins"]) > 1e-4  # the comparison is not between two zeros
    torch.testing.assert_close(loss, trl_loss, atol=1e-5, rtol=1e-5)
    assert ours.keys() == trl_metrics.keys()
    for key in ours:
        assert ours[key] == pytest.approx(trl_metrics[key], abs=1e-5), key


def test_sequence_logprobs_ignores_prompt_and_padding(tok):
    """Changing a prompt-only or padding position's *target* must not change the sum; an answer token must."""
    model = _tiny_llama(tok, 3)
    ids = torch.randint(0, len(tok), (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.long)
    mask[:, 4:8] = 1  # answer = tokens 4..7; 8, 9 are padding
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    base = sequence_logprobs(logits, ids, mask)
    for t, should_change in [(2, False), (3, False), (4, True), (7, True), (8, False), (9, False)]:
        ids2 = ids.clone()
        ids2[:, t] = (ids2[:, t] + 1) % len(tok)
        changed = not torch.allclose(sequence_logprobs(logits, ids2, mask), base)
        assert changed == should_change, t


def _grpo_advantages_from_trl(tok, tmp_path, scale: str, seed: int):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    recorded = []
    rng = random.Random(seed)

    def reward(completions, **kwargs):  # a programmatic reward: random ints, with a tie-only group sometimes
        values = [float(rng.randint(0, 3)) for _ in completions]
        recorded.extend(values)
        return values

    prompts = [{"prompt": f"Count to {i}:"} for i in range(8)]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=4, report_to=[], use_cpu=True, scale_rewards=scale,
                      generation_batch_size=8)
    trainer = GRPOTrainer(model=_tiny_llama(tok, seed), reward_funcs=reward, args=args,
                          processing_class=tok, train_dataset=Dataset.from_list(prompts))
    batch = next(iter(trainer.get_train_dataloader()))
    out = _private(trainer, "_generate_and_score_completions")(batch)  # private in trl 1.16 (pinned)
    return torch.tensor(recorded), out["advantages"]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_match_trl(tok, tmp_path, scale):
    rewards, trl_adv = _grpo_advantages_from_trl(tok, tmp_path, scale, seed=7)
    assert rewards.std() > 0
    torch.testing.assert_close(grpo_advantages(rewards, 4, scale=scale), trl_adv.float(), atol=1e-5, rtol=1e-5)


def test_notebook_functions_equal_utils():
    """The notebook teaches the functions that utils.preference holds: same outputs on random inputs."""
    from utils.notebooks import notebook_definitions
    from utils.runtime import repo_root

    nb = notebook_definitions(repo_root() / "05_frontier" / "03_direct_preference_optimization.ipynb")
    gen = torch.Generator().manual_seed(0)
    logits, ids = torch.randn(3, 7, 11, generator=gen), torch.randint(0, 11, (3, 7), generator=gen)
    mask = (torch.rand(3, 7, generator=gen) > 0.4).long()
    torch.testing.assert_close(nb["sequence_logprobs"](logits, ids, mask), sequence_logprobs(logits, ids, mask))
    logps = [torch.randn(5, generator=gen) * 5 for _ in range(4)]
    for a, b in zip(nb["dpo_loss"](*logps, beta=0.3), dpo_loss(*logps, beta=0.3)):
        torch.testing.assert_close(a, b)
    _, rc, rr = dpo_loss(*logps, beta=0.3)
    assert nb["reward_metrics"](rc, rr) == pytest.approx(reward_metrics(rc, rr))
    rewards = torch.randint(0, 3, (12,), generator=gen).float()
    for scale in ("group", "batch", "none"):
        torch.testing.assert_close(nb["grpo_advantages"](rewards, 4, scale), grpo_advantages(rewards, 4, scale))


def test_a_removed_private_method_fails_with_a_clear_message():
    """If a trl upgrade renames a private method the checks use, the failure names it and the pins."""
    class Renamed:  # a trainer whose _compute_loss was renamed
        def compute_loss_v2(self):
            return 0

    with pytest.raises(pytest.fail.Exception, match=r"Renamed\._compute_loss is gone .* PRIVATE .*trl==1\.16\.0"):
        _private(Renamed(), "_compute_loss")
    assert _private(Renamed(), "compute_loss_v2")() == 0
