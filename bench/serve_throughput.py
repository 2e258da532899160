"""Serving throughput: genai serve against plain uvicorn baselines, side by side, one server at a time.

    python bench/serve_throughput.py            # make bench-serve; ~10 min on 2 cores
    python bench/serve_throughput.py --duration 8 --concurrency 1 32

Same checkpoint, same 64-token completions (temperature 1), same closed-loop load
generator (an asyncio + aiohttp client in this process: N connections, each sending
its next request as soon as the last one is answered) at each concurrency:

- **genai**: ``genai serve`` with the shipped default serve config (serve/lm.yaml);
- **plain A**: FastAPI + uvicorn, a sync endpoint calling ``generate`` (bench/plain_server.py);
- **plain B**: the same with one generation at a time;
- **no server**: ``generate`` over a padded batch of 32 prompts, in this process (1 and 2
  threads): what the hardware gives with no HTTP at all.

Then 1-token completions at c=1 (the cost of the hops alone), and the GAN image route
(16 images a request) against plain A/B. Prints a table and the ratios; writes JSON.

``--smollm2`` measures the pretrained SmolLM2-135M-Instruct instead (``make smollm2``):
32-token chat completions at c=1/8/32 from the base, from one LoRA adapter (r=8, all
linear layers, random weights: the cost does not depend on what was learned), and from 4
adapters mixed in one load (request k asks adapter k mod 4, so every decode batch holds
several); against plain A/B serving the same prompts rendered by the chat template on
``/v1/completions``, and the no-server padded batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genai.cluster import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = ["def ", "import ", "class ", "for i in ", "return ", "# ", "if x ", "with open("]


# --------------------------------------------------------------------------- load generator


async def _load(url: str, bodies: list[dict], concurrency: int, duration: float) -> dict:
    import aiohttp

    lat: list[float] = []
    tokens = errors = 0
    stop_at = time.perf_counter() + duration

    async def worker(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal tokens, errors
        k = i
        while time.perf_counter() < stop_at:
            body = bodies[k % len(bodies)]
            k += concurrency
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body) as r:
                    data = await r.json()
                    if r.status != 200:
                        errors += 1
                        continue
            except aiohttp.ClientError:
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)
            tokens += data.get("usage", {}).get("completion_tokens", 0)

    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def warm() -> None:
            async with session.post(url, json=bodies[0]) as r:
                await r.read()

        # warm-up: one request per connection, not counted
        await asyncio.gather(*(warm() for _ in range(concurrency)))
        t0 = time.perf_counter()
        stop_at = t0 + duration
        await asyncio.gather(*(worker(i, session) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    return {
        "c": concurrency,
        "requests": len(lat),
        "errors": errors,
        "req_s": len(lat) / wall,
        "tokens_s": tokens / wall,
        "p50_ms": 1000 * q(0.50),
        "p99_ms": 1000 * q(0.99),
    }


def load(url: str, bodies: list[dict], concurrency: int, duration: float) -> dict:
    return asyncio.run(_load(url, bodies, concurrency, duration))


# --------------------------------------------------------------------------- servers


class Server:
    """A server in its own process group, up once /healthz answers."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        # kept open for the life of the server (closed in stop)
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            "w+", prefix=f"bench-{name}-", suffix=".log"
        )
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import httpx

        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not come up in 300 s")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def genai_server(*checkpoints: str, sets: tuple[str, ...] = ()) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "genai.cli", "serve", *checkpoints, "--config", "serve/lm.yaml"]
    cmd += ["--port", str(port)]
    for s in sets:
        cmd += ["--set", s]
    env = {"PYTHONUNBUFFERED": "1"}
    return Server("genai", cmd, env, port)


def plain_server(
    mode: str, lm: str | None = None, gan: str | None = None, device: str = "cpu"
) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.plain_server:app", "--port", str(port)]
    # keep-alive as long as the slowest answer: uvicorn's 5 s default drops waiting clients
    cmd += ["--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "300"]
    env = {"PLAIN_MODE": mode, "PLAIN_LM": lm or "", "PLAIN_GAN": gan or ""}
    env["PLAIN_DEVICE"] = device
    return Server(f"plain-{mode}", cmd, env, port)


# --------------------------------------------------------------------------- no server


def padded_batch(checkpoint: str, threads: int, batch: int = 32, new_tokens: int = 64) -> dict:
    """``generate`` over a padded batch of prompts, in a subprocess with ``threads`` threads."""
    code = f"""
import json, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads({threads})
m = AutoModelForCausalLM.from_pretrained({checkpoint!r}, use_safetensors=True).eval()
t = AutoTokenizer.from_pretrained({checkpoint!r}); t.padding_side = "left"
prompts = ({PROMPTS!r} * 8)[:{batch}]
x = t(prompts, return_tensors="pt", padding=True)
def run():
    with torch.inference_mode():
        return m.generate(**x, max_new_tokens={new_tokens}, min_new_tokens={new_tokens},
                          do_sample=True, pad_token_id=t.eos_token_id)
run()
times = []
for _ in range(3):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
s = sorted(times)[1]
print(json.dumps({{"threads": {threads}, "seq_s": {batch} / s, "tokens_s": {batch * new_tokens} / s}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def _row(server: str, r: dict) -> str:
    return (
        f"| {server} | {r['c']} | {r['req_s']:.1f} | {r['tokens_s']:.0f} | {r['p50_ms']:.0f} "
        f"| {r['p99_ms']:.0f} | {r['requests']} | {r['errors']} |"
    )


def _servers(starts: dict, wanted: list[str]):
    """(name, started server) for each wanted server, one at a time."""
    for name, start in starts.items():
        if name in wanted:
            print(f"{name}: starting", flush=True)
            yield name, start()


def _measure(rows: list, name: str, url: str, bodies: list, c: int, args) -> None:
    if args.warmup > 0:  # steady state: caches warm and, for genai, autoscaling settled
        load(url, bodies, c, args.warmup)
    r = load(url, bodies, c, args.duration)
    rows.append(r)
    print("  " + _row(name, r), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="runs/lm-tiny/checkpoints/latest")
    p.add_argument("--gan", default="runs/gan-digits/checkpoints/latest")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--duration", type=float, default=15.0, help="seconds of load per row")
    p.add_argument(
        "--warmup",
        type=float,
        default=15.0,
        help="seconds of the same load before each row is measured (Serve's autoscaler "
        "decides on a 12 s window)",
    )
    p.add_argument("--out", default="runs/bench-serve.json")
    p.add_argument(
        "--servers",
        nargs="+",
        default=["genai", "genai hf-forward", "plain A", "plain B"],
        help="rows to run",
    )
    p.add_argument("--no-images", action="store_true")
    p.add_argument("--smollm2", action="store_true", help="the SmolLM2 + adapters rows instead")
    args = p.parse_args()
    if args.smollm2:
        smollm2(args)
        return
    from genai.hardware import machine_line

    print(machine_line(), flush=True)
    lm = str(Path(args.checkpoint).resolve())
    gan = str(Path(args.gan).resolve()) if Path(args.gan).exists() else None
    bodies = [
        {"prompt": pr, "max_tokens": 64, "temperature": 1.0, "seed": i}
        for i, pr in enumerate(PROMPTS)
    ]
    one_token = [{**b, "max_tokens": 1} for b in bodies]
    images = [{"prompt": "", "n": 16, "seed": i} for i in range(8)]
    results: dict = {"lm": {}, "lm_1token": {}, "images": {}, "no_server": []}

    print("no server: generate over a padded batch of 32 prompts, 64 new tokens", flush=True)
    for threads in (1, 2):
        r = padded_batch(lm, threads)
        results["no_server"].append(r)
        print(f"  {threads} thread(s): {r['seq_s']:.1f} seq/s, {r['tokens_s']:.0f} tokens/s")

    lm_servers = {
        "genai": lambda: genai_server(lm),
        # the same server decoding through transformers' forward: what fastpath.py buys
        "genai hf-forward": lambda: genai_server(lm, sets=("lm.lean_forward=false",)),
        "plain A": lambda: plain_server("A", lm=lm),
        "plain B": lambda: plain_server("B", lm=lm),
    }
    for name, server in _servers(lm_servers, args.servers):
        url = f"{server.url}/v1/completions"
        with server:
            for c in args.concurrency:
                _measure(results["lm"].setdefault(name, []), name, url, bodies, c, args)
            if name in ("genai", "plain B"):
                r = load(url, one_token, 1, args.duration)
                results["lm_1token"][name] = r
                print("  1-token " + _row(name, r), flush=True)

    if gan is not None and not args.no_images:
        image_servers = {
            "genai": lambda: genai_server(gan),
            "plain A": lambda: plain_server("A", gan=gan),
            "plain B": lambda: plain_server("B", gan=gan),
        }
        for name, server in _servers(image_servers, args.servers):
            url = f"{server.url}/v1/images/generations"
            with server:
                for c in (1, 8, 32):
                    _measure(results["images"].setdefault(name, []), name, url, images, c, args)
    else:
        print(f"no GAN checkpoint at {args.gan}: image rows skipped (make demo trains one)")

    report(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


SMOLLM2 = ROOT / "models" / "smollm2"
QUESTIONS = [
    "Write a Python function that reverses a string.",
    "Explain what a hash table is.",
    "Give three tips for writing clear code.",
    "What does the Python `with` statement do?",
    "Describe a binary search in two sentences.",
    "Why are unit tests useful?",
    "What is a Python generator?",
    "How do I read a file line by line in Python?",
]


def smollm2(args: argparse.Namespace) -> None:
    """Base, one adapter and 4 mixed adapters of SmolLM2 against plain A/B."""
    from transformers import AutoTokenizer

    from genai.hardware import machine_line
    from genai.testing.adapters import random_adapter

    if not (SMOLLM2 / "meta.json").is_file():
        sys.exit(f"{SMOLLM2} is missing: run `make smollm2` first")
    print(machine_line(), flush=True)
    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    rendered = [
        tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats
    ]
    sample = {"max_tokens": 32, "temperature": 1.0}

    def chat(model: str | None, i: int) -> dict:
        return {"model": model, "messages": chats[i % 8], **sample, "seed": i}

    concurrency = [c for c in args.concurrency if c in (1, 8, 32)] or [1, 8, 32]
    results: dict = {"smollm2": {}, "no_server": []}
    r = padded_batch(str(SMOLLM2), 2, new_tokens=32)
    results["no_server"].append(r)
    print(f"no server, 2 threads: {r['seq_s']:.2f} seq/s, {r['tokens_s']:.0f} tokens/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = [
            random_adapter(SMOLLM2, Path(tmp) / f"a{k}", f"a{k}", seed=k, r=8) for k in range(4)
        ]
        sets = [f"--adapter=a{k}={d}" for k, d in enumerate(adapters)]
        rows = results["smollm2"]
        with genai_server(str(SMOLLM2), *sets) as server:
            url = f"{server.url}/v1/chat/completions"
            loads = {
                "genai base": [chat("smollm2", i) for i in range(8)],
                "genai 1 adapter": [chat("a0", i) for i in range(8)],
                "genai 4 adapters mixed": [chat(f"a{i % 4}", i) for i in range(8)],
            }
            for name, bodies in loads.items():
                for c in concurrency if name != "genai 4 adapters mixed" else (8, 32):
                    _measure(rows.setdefault(name, []), name, url, bodies, c, args)
        plain = [{"prompt": p, **sample, "seed": i} for i, p in enumerate(rendered)]
        for name in ("plain A", "plain B"):
            with plain_server(name[-1], lm=str(SMOLLM2)) as server:
                for c in concurrency:
                    _measure(
                        rows.setdefault(name, []),
                        name,
                        f"{server.url}/v1/completions",
                        plain,
                        c,
                        args,
                    )
    head = "| server | c | req/s | tokens/s | p50 ms | p99 ms | requests | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    print("\nSmolLM2-135M-Instruct, 32-token chat completions\n" + head)
    for name, found in rows.items():
        for r in found:
            print(_row(name, r))
    by = {n: {r["c"]: r for r in found} for n, found in rows.items()}
    print("\nratios (tokens/s at c=32)")
    one, mixed = by["genai 1 adapter"].get(32), by["genai 4 adapters mixed"].get(32)
    if one and mixed:
        print(f"  4 adapters mixed / 1 adapter: {mixed['tokens_s'] / one['tokens_s']:.2f}")
    best = max(by[n][32]["tokens_s"] for n in ("plain A", "plain B") if 32 in by[n])
    if one:
        print(f"  1 adapter / better plain: {one['tokens_s'] / best:.2f}")
        no_server = results["no_server"][0]["tokens_s"]
        print(f"  1 adapter / no-server padded batch: {one['tokens_s'] / no_server:.2f}")
    out = Path(args.out).with_name("bench-serve-smollm2.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def report(results: dict) -> None:
    head = "| server | c | req/s | tokens/s | p50 ms | p99 ms | requests | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    print("\n64-token completions\n" + head)
    for name, rows in results["lm"].items():
        for r in rows:
            print(_row(name, r))
    print("\n1-token completions (the hops alone)\n" + head)
    for name, r in results["lm_1token"].items():
        print(_row(name, r))
    if results["images"]:
        print("\nimages (16 per request)\n" + head)
        for name, rows in results["images"].items():
            for r in rows:
                print(_row(name, r))
    by_c = {n: {r["c"]: r for r in rows} for n, rows in results["lm"].items()}
    g = by_c.get("genai", {})
    best_plain = max(
        (by_c[n][32]["req_s"] for n in ("plain A", "plain B") if 32 in by_c.get(n, {})),
        default=float("nan"),
    )
    no_server = max(r["seq_s"] for r in results["no_server"])
    print("\nratios")
    if 32 in g:
        print(f"  genai c=32 / better plain c=32: {g[32]['req_s'] / best_plain:.2f}")
        print(f"  genai c=32 / no-server padded batch: {g[32]['req_s'] / no_server:.2f}")
    if 1 in g and 1 in by_c.get("plain B", {}):
        d = g[1]["p50_ms"] - by_c["plain B"][1]["p50_ms"]
        print(f"  c=1 p50, genai - plain B (64 tokens): {d:+.1f} ms")
    one = results["lm_1token"]
    if "genai" in one and "plain B" in one:
        d = one["genai"]["p50_ms"] - one["plain B"]["p50_ms"]
        print(f"  c=1 p50, genai - plain B (1 token): {d:+.1f} ms")
    imgs = {n: {r["c"]: r for r in rows} for n, rows in results["images"].items()}
    if imgs.get("genai", {}).get(32) and imgs.get("plain B", {}).get(32):
        best = max(imgs[n][32]["req_s"] for n in ("plain A", "plain B") if 32 in imgs.get(n, {}))
        print(f"  images c=32, genai / better plain: {imgs['genai'][32]['req_s'] / best:.2f}")


if __name__ == "__main__":
    main()
