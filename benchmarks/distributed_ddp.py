"""When does data parallelism pay on this machine? DDP on 2 CPU processes vs 1 process, per MLP width (05.08).

For each width, one `torchrun` launch with `--nproc` processes and one with a single process train the same MLP
(64 -> width -> width -> 10, Adam) for `--steps` steps on random data, global batch `--batch` split over the ranks,
one thread per process; the workers time their steps after `--warmup` steps. Also reported: the wall time of each
launch (process start-up, imports, rendezvous and the run), the fixed cost a notebook pays per launch.

    python benchmarks/distributed_ddp.py --widths 128 512 1024 --steps 50

Prints one JSON line per row and a Markdown table (for benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

WORKER = '''
import sys, time, torch, torch.distributed as dist, torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
width, batch, steps, warmup, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 10))
model = DDP(model) if world > 1 else model
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.rand(batch // world, 64), torch.randint(0, 10, (batch // world,))  # this rank's share
for step in range(warmup + steps):
    if step == warmup:
        start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
ms = torch.tensor([(time.perf_counter() - start) / steps * 1e3])
dist.all_reduce(ms, op=dist.ReduceOp.MAX)  # a step ends when the slowest rank is done
if rank == 0:
    open(out, "w").write(str(ms.item()))
dist.destroy_process_group()
'''


def measure(width: int, batch: int, steps: int, warmup: int, nproc: int, folder: Path) -> tuple[float, float]:
    """(ms per step of the slowest rank, seconds of the whole launch) for one torchrun launch."""
    from utils.distributed import run_launcher, torchrun_command
    from utils.servers import free_port

    script, out = folder / "worker.py", folder / f"ms_{width}_{nproc}.txt"
    script.write_text(WORKER)
    start = time.perf_counter()
    run_launcher(torchrun_command(script, nproc, free_port(), [width, batch, steps, warmup, out]), timeout=600)
    return float(out.read_text()), time.perf_counter() - start


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table: ms per step with 1 and N processes, the speed-up, the launch times."""
    n = rows[0]["nproc"]
    lines = [f"| width | parameters | batch | 1 process ms/step | {n} processes ms/step | speed-up (ideal {n}×) "
             f"| launch s (1 · {n}) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['width']} | {r['parameters']:,} | {r['batch']} | {r['ms_one']:.2f} | {r['ms_ddp']:.2f} "
                     f"| {r['ms_one'] / r['ms_ddp']:.2f}× | {r['launch_one_s']:.1f} · {r['launch_ddp_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--batch", type=int, default=256, help="global batch per step (split over the ranks)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for width in args.widths:
            ms_one, launch_one = measure(width, args.batch, args.steps, args.warmup, 1, Path(tmp))
            ms_ddp, launch_ddp = measure(width, args.batch, args.steps, args.warmup, args.nproc, Path(tmp))
            row = dict(width=width, parameters=64 * width + width + width * width + width + 10 * width + 10,
                       batch=args.batch, nproc=args.nproc, ms_one=ms_one, ms_ddp=ms_ddp, launch_one_s=launch_one,
                       launch_ddp_s=launch_ddp)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
