"""What the course's LLM server does on this machine: start-up, latency, throughput, JSON validity.

    python benchmarks/llm_server.py                 # the whole table (about 10 minutes on 2 cores)
    python benchmarks/llm_server.py --json-prompts 10 --clients 1 4 --tokens 32     # a quick look

It starts `python -m utils.llm_server` (the smoke preset's real SmolLM2-135M-Instruct unless --preset says
otherwise) and talks to it with the official `openai` client, as a learner would:
- start-up: seconds until /health answers (the model already converted in the course cache; the first
  conversion is measured by `benchmarks/instruct_llm.py packaged`);
- time to first token: a streamed request, until its first text arrives (median of 5);
- tokens/s for one stream, and in aggregate for N concurrent clients (all completion tokens / wall time);
- JSON validity: `--json-prompts` requests that ask for a JSON object matching a schema, answered once
  freely and once with `response_format` (constrained decoding): the share that parses and validates.
Results are printed as JSON lines and as a markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import jsonschema
import openai

from utils.llm_server import serve_llm

STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "city", "hobbies"],
          "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"},
                         "city": {"type": "string", "maxLength": 40},
                         "hobbies": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 30}}}}
PEOPLE = ["a retired sailor", "a young painter", "a baker", "a chess champion", "a nurse", "a farmer",
          "a software engineer", "a marathon runner", "a librarian", "a beekeeper"]


def _person_prompt(i: int) -> list[dict[str, str]]:
    who = PEOPLE[i % len(PEOPLE)]
    return [{"role": "user", "content": f"Invent {who} (person {i + 1}). Answer with only a JSON object with the "
                                        f"keys name, age, city and hobbies (a list of strings)."}]


def _valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


async def time_to_first_token(client: openai.AsyncOpenAI, model: str, repeats: int = 5) -> float:
    """Median seconds from sending a streamed request to its first piece of text."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        stream = await client.chat.completions.create(model=model, messages=STORY, stream=True, max_tokens=8,
                                                      temperature=0)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.perf_counter() - start)
                break
        await stream.close()
    return statistics.median(times)


async def throughput(client: openai.AsyncOpenAI, model: str, clients: int, tokens: int) -> dict:
    """N clients at once, each a `tokens`-token story: aggregate and per-client tokens/s."""
    async def one(seed: int) -> int:
        reply = await client.chat.completions.create(model=model, messages=STORY, max_tokens=tokens,
                                                     temperature=0.8, seed=seed)
        return reply.usage.completion_tokens

    start = time.perf_counter()
    counts = await asyncio.gather(*[one(seed) for seed in range(clients)])
    seconds = time.perf_counter() - start
    return {"clients": clients, "tokens": sum(counts), "seconds": round(seconds, 2),
            "aggregate_tokens_per_s": round(sum(counts) / seconds, 1),
            "per_client_tokens_per_s": round(sum(counts) / seconds / clients, 1)}


async def json_validity(client: openai.AsyncOpenAI, model: str, prompts: int, tokens: int) -> dict:
    """Share of answers that parse and validate, asked freely vs with response_format (16 at a time)."""
    gate = asyncio.Semaphore(16)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}

    async def one(i: int, constrained: bool) -> bool:
        async with gate:
            extra = {"response_format": fmt} if constrained else {}
            reply = await client.chat.completions.create(model=model, messages=_person_prompt(i), max_tokens=tokens,
                                                         temperature=0.7, seed=i, **extra)
        return _valid(reply.choices[0].message.content or "")

    free = await asyncio.gather(*[one(i, False) for i in range(prompts)])
    forced = await asyncio.gather(*[one(i, True) for i in range(prompts)])
    return {"prompts": prompts, "valid_unconstrained": sum(free), "valid_constrained": sum(forced)}


async def measure(base_url: str, model: str, args: argparse.Namespace) -> list[dict]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=1200)
    results = [{"what": "time_to_first_token_s", "value": round(await time_to_first_token(client, model), 3)}]
    for n in args.clients:
        results.append({"what": "throughput", **await throughput(client, model, n, args.tokens)})
    results.append({"what": "json_validity", **await json_validity(client, model, args.json_prompts, 200)})
    await client.close()
    return results


def table(startup: float, results: list[dict]) -> str:
    """The results as the markdown rows of benchmarks/README.md."""
    rows = [f"| start-up until /health answers (model already in the cache) | {startup:.1f} s |"]
    for r in results:
        if r["what"] == "time_to_first_token_s":
            rows.append(f"| time to first token (streamed, median of 5) | {r['value'] * 1000:.0f} ms |")
        elif r["what"] == "throughput":
            rows.append(f"| {r['clients']} concurrent client(s), {r['tokens']} tokens in {r['seconds']} s | "
                        f"{r['aggregate_tokens_per_s']} tokens/s in all, {r['per_client_tokens_per_s']} each |")
        else:
            n = r["prompts"]
            rows.append(f"| valid JSON for the schema, {n} prompts, free / constrained | "
                        f"{r['valid_unconstrained']}/{n} / {r['valid_constrained']}/{n} |")
    return "\n".join(["| measure | result |", "|---|---|", *rows])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke", help="which instruct model the server loads (default smoke)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients to try")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per client in the throughput runs")
    parser.add_argument("--json-prompts", type=int, default=50, help="prompts for the JSON validity rates")
    args = parser.parse_args(argv)
    if min(args.clients) < 1 or args.tokens < 1 or args.json_prompts < 1:
        parser.error("--clients, --tokens and --json-prompts must be positive")
    start = time.perf_counter()
    with serve_llm(args.preset, max_batch=max(16, max(args.clients))) as server:
        startup = time.perf_counter() - start
        results = asyncio.run(measure(server.base_url, server.model, args))
    results.insert(0, {"what": "startup_s", "value": round(startup, 1)})
    for r in results:
        print(json.dumps(r))
    print(table(startup, results[1:]))
    return results


if __name__ == "__main__":
    main()
