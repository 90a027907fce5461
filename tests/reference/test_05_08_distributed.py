"""05.08's distributed training against the library, with real torchrun workers (gloo on 127.0.0.1):
the from-scratch ring and naive all-reduce == `dist.all_reduce` on 2 and 3 ranks (tensor lengths the world size
does not divide included) with the bytes each rank sends; DDP's first gradients (both ranks, DDP's own hook and the
notebook's recording hook) == the single-process gradients of the concatenated batch; DDP and FSDP2 runs == the
single-process run; FSDP2 ranks hold half of the parameters, gradients and Adam state; and, in one process,
gradient accumulation == the large batch and the exercise solutions (traffic formulas == the counted bytes,
accumulation over unequal micro-batches, DDP's gap on unequal shards)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from utils.distributed import load_script, run_launcher, torchrun_command
from utils.notebooks import notebook_definitions, read_notebook
from utils.servers import free_port

NOTEBOOK = Path(__file__).resolve().parents[2] / "05_frontier" / "08_distributed_training.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True) if NOTEBOOK.exists() else {}
pytestmark = pytest.mark.skipif(not ns, reason="notebook not found")

HIDDEN, BATCH, STEPS, LR, SEED = 48, 24, 4, 1e-2, 3
SIZES = (5, 6, 1_000, 4_097)  # 5, 1_000 and 4_097 are not divisible by 3; 5 and 4_097 not by 2


def worker_script(folder: Path) -> Path:
    """The worker script exactly as the notebook's %%writefile cells write it."""
    pieces = [cell.source.split("\n", 1)[1] for cell in read_notebook(NOTEBOOK).cells
              if cell.cell_type == "code" and cell.source.startswith("%%writefile")]
    script = folder / "dist_lesson.py"
    script.write_text("\n".join(pieces) + "\n")
    return script


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict:
    """One 2-process launch (all checks and training runs) and one 3-process launch (all-reduce only)."""
    folder = tmp_path_factory.mktemp("dist")
    script = worker_script(folder)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 64, generator=gen), torch.randint(0, 10, (200,), generator=gen)
    torch.save({"x": x, "y": y}, folder / "data.pt")
    args = ["--data", folder / "data.pt", "--out", folder, "--hidden", HIDDEN, "--batch-size", BATCH,
            "--steps", STEPS, "--lr", LR, "--seed", SEED, "--bucket-mb", 0.001, "--sizes", ",".join(map(str, SIZES))]
    run_launcher(torchrun_command(script, 2, free_port(), args), timeout=240)
    run_launcher(torchrun_command(script, 3, free_port(), [*args, "--only-all-reduce"]), timeout=240)
    load = lambda world, rank: torch.load(folder / f"torchrun_world{world}_rank{rank}.pt", weights_only=True)  # noqa: E731
    return {"x": x, "y": y, "script": script, 2: [load(2, r) for r in range(2)], 3: [load(3, r) for r in range(3)]}


@pytest.mark.parametrize("world", [2, 3])
def test_all_reduce_from_scratch_equals_dist_all_reduce(launched, world):
    for rank, result in enumerate(launched[world]):
        rows = result["all_reduce"]
        assert [row["n"] for row in rows] == list(SIZES)
        for row in rows:
            assert row["ring_error"] < 1e-5 and row["naive_error"] < 1e-5, (world, rank, row)


@pytest.mark.parametrize("world", [2, 3])
def test_bytes_sent_follow_the_ring_and_naive_schemes(launched, world):
    """Ring: every rank sends 2(N-1) chunks; naive: rank 0 sends N-1 tensors, the others one (4 bytes a float)."""
    for rank, result in enumerate(launched[world]):
        for row in result["all_reduce"]:
            n = row["n"]
            chunks = [len(c) for c in torch.arange(n).tensor_split(world)]
            sent_chunks = [(rank - s) % world for s in range(world - 1)] + [(rank + 1 - s) % world
                                                                             for s in range(world - 1)]
            assert row["ring_sent"] == 4 * sum(chunks[i] for i in sent_chunks)
            assert row["naive_sent"] == 4 * n * ((world - 1) if rank == 0 else 1)
            if n % world == 0:  # the exercise's formulas hold where the chunks are equal
                assert row["ring_sent"] == ns["ring_bytes"](n, world)
                assert row["naive_sent"] == ns["naive_bytes"](n, world, rank)


def single_process_run(launched) -> dict:
    lesson = load_script(launched["script"], name="dist_lesson_reference")
    model = lesson.make_model(HIDDEN, SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    return lesson.train(model, opt, launched["x"], launched["y"], steps=STEPS, batch_size=BATCH, seed=SEED)


def test_ddp_gradients_equal_single_process_gradients_of_the_concatenated_batch(launched):
    single = single_process_run(launched)
    for result in launched[2]:
        for key in ("first_grads", "hook_first_grads"):
            for ours, reference in zip(result["ddp"][key], single["first_grads"], strict=True):
                torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_data_parallel_training_equals_single_process_training(launched, kind):
    single = single_process_run(launched)
    for result in launched[2]:
        torch.testing.assert_close(torch.tensor(result[kind]["losses"]), torch.tensor(single["losses"]),
                                   rtol=1e-5, atol=1e-6)
        for ours, reference in zip(result[kind]["params"], single["params"], strict=True):
            torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)
    assert single["losses"][-1] < single["losses"][0]  # it trained: the comparison is not of two still models


def test_ddp_buckets_hold_every_parameter_once(launched):
    buckets = launched[2][0]["ddp"]["buckets"]
    names = [name for params, _ in buckets for name in params]
    assert sorted(names) == sorted(n for n, _ in ns["make_model"](HIDDEN, SEED).named_parameters())
    assert len(buckets) > 1 and "4.weight" in buckets[0][0]  # 1 kB buckets: several; the last layer's first


def test_fsdp_ranks_hold_half_of_what_ddp_holds(launched):
    for result in launched[2]:
        for kind in ("params", "grads", "optimizer"):
            assert result["fsdp"]["held"][kind] / result["ddp"]["held"][kind] == pytest.approx(0.5, abs=0.02)


def small_model_and_batch(rows: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return ns["make_model"](32, seed), torch.rand(rows, 64, generator=gen), torch.randint(0, 10, (rows,), generator=gen)


@pytest.mark.parametrize("rows, micro", [(64, 4), (12, 3), (8, 8)])
def test_gradient_accumulation_equals_the_large_batch(rows, micro):
    model, x, y = small_model_and_batch(rows, rows)
    for ours, reference in zip(ns["accumulated_grads"](model, x, y, micro), ns["batch_grads"](model, x, y)):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rows, micro", [(50, 4), (37, 5), (9, 2), (7, 7)])
def test_exercise_accumulation_over_unequal_micro_batches(rows, micro):
    model, x, y = small_model_and_batch(rows, rows + micro)
    for ours, reference in zip(ns["accumulated_grads_any"](model, x, y, micro), ns["batch_grads"](model, x, y)):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


def test_exercise_ddp_gap_is_zero_for_equal_shards_and_not_otherwise():
    model, x, y = small_model_and_batch(64, 5)
    assert ns["ddp_gap"](model, x, y, (32, 32)) < 1e-5
    assert ns["ddp_gap"](model, x, y, (16, 16, 16, 16)) < 1e-5
    assert ns["ddp_gap"](model, x, y, (60, 4)) > 1e-2
