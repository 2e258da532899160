"""The ``genai`` command.

    genai train jobs/lm-tiny.yaml --set train.max_steps=200      # embedded local Ray
    genai train jobs/lm-gpt2-small.yaml --address auto            # a node of a running cluster
    genai tune jobs/tune-lm-lr.yaml                               # Ray Tune sweep; best -> runs/<sweep>/best
    genai import smollm2 --out models/smollm2                      # a pretrained LM, offline
    genai serve runs/lm-tiny/checkpoints/latest --port 8000       # foreground; Ctrl-C stops it
    genai query "def fibonacci(" --max-tokens 64
    genai submit jobs/lm-tiny.yaml --address http://HEAD:8265     # through the Ray Jobs API
    genai data dedup stdlib --out dedup.parquet                   # Ray Data; also ls/show/diff
    genai demo                                                    # the whole path, briefly

Errors in user input print one line (``genai: error: ...``) and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from genai.config import load_job

    spec = load_job(args.spec, args.set)  # before the heavy imports: bad specs fail fast
    if args.print_spec:
        print(json.dumps(spec.model_dump(mode="json"), indent=2))
        return 0
    from genai import timeline
    from genai.train.run import train

    timeline.mark("imports done")
    path = train(spec, address=args.address, resume=args.resume, fresh=args.fresh)
    print(f"checkpoint: {path}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from genai.tune.spec import load_sweep

    sweep = load_sweep(args.spec, args.set)  # before Ray starts: bad specs fail fast
    if args.print_spec:
        print(json.dumps(sweep.spec.model_dump(mode="json"), indent=2, default=str))
        return 0
    from genai.tune.run import SweepFailed, clear, tune_sweep

    if args.fresh:
        clear(sweep)
    try:
        tune_sweep(sweep, address=args.address, resume=args.resume)  # prints the best checkpoint
    except SweepFailed as exc:
        print(f"genai: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from genai.serve.spec import load_serve

    overrides = list(args.set)
    if args.host:
        overrides.append(f"host={args.host}")
    if args.port:
        overrides.append(f"port={args.port}")
    if args.watch:
        overrides.append("watch=true")
    adapters = {}
    for entry in args.adapter:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--adapter {entry!r}: expected NAME=DIR")
        adapters[name] = path
    spec = load_serve(args.config, overrides)
    if adapters:
        spec = spec.model_copy(update={"adapters": {**spec.adapters, **adapters}})
    checkpoints = args.checkpoints or spec.checkpoints
    if not checkpoints:
        raise ValueError(
            "no checkpoints: name them on the command line or in the serve config's checkpoints"
        )
    from genai.checkpoint import resolve

    for c in [*checkpoints, *spec.adapters.values()]:
        resolve(c)  # fail before Ray starts, with the path in the message
    from genai.serve.run import serve_forever

    # the config's list is watched only when the checkpoints came from it
    config_file = args.config if not args.checkpoints else None
    serve_forever(spec, checkpoints, address=args.address, config_file=config_file)
    return 0


def _import(args: argparse.Namespace) -> int:
    from genai.families.lm.importer import import_model

    path = import_model(args.source, args.out, name=args.name, dtype=args.dtype, force=args.force)
    print(f"checkpoint: {path}")
    return 0


def _query(args: argparse.Namespace) -> int:
    from genai import client

    key = os.environ.get(args.api_key_env, "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    if args.model:
        body["model"] = args.model
    if args.seed is not None:
        body["seed"] = args.seed
    if not args.stream:
        data = client.complete(args.url, body, headers, args.timeout)
        print(json.dumps(data, indent=2) if args.json else args.prompt + data["choices"][0]["text"])
        return 0
    if not args.json:
        print(args.prompt, end="", flush=True)
    for event in client.stream(args.url, body, headers, args.timeout):
        text = json.dumps(event) + "\n" if args.json else event["choices"][0]["text"]
        print(text, end="", flush=True)
    if not args.json:
        print()
    return 0


def _submit(args: argparse.Namespace) -> int:
    from genai import cluster
    from genai.config import load_job

    load_job(args.spec, args.set)  # validate here, before shipping anything
    # `python -m genai`: the node's PATH decides which python, not whether `genai` is on it
    entry = ["python", "-m", "genai", "train", args.spec, "--address", "auto"]
    for s in args.set:
        entry += ["--set", s]
    if args.resume:
        entry.append("--resume")
    job_id = cluster.submit(" ".join(shlex.quote(e) for e in entry), args.address)
    print(f"submitted: {job_id}\n  genai jobs logs {job_id} --follow --address {args.address}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from genai import cluster

    client = cluster.jobs_client(args.address)
    if args.action == "list":
        for job in client.list_jobs():
            print(f"{job.submission_id}\t{job.status}\t{job.entrypoint}")
    elif args.action == "status":
        info = client.get_job_info(args.job_id)
        print(f"{args.job_id}\t{info.status}")
        if str(info.status) == "FAILED":
            # Ray's message says only that the entrypoint exited non-zero; the cause is the
            # job's own last error line
            print(f"error: {_job_error(client.get_job_logs(args.job_id)) or info.message}")
            return 1
    elif args.action == "logs":
        if args.follow:
            import asyncio

            async def tail() -> None:
                async for chunk in client.tail_job_logs(args.job_id):
                    print(chunk, end="", flush=True)

            asyncio.run(tail())
        else:
            print(client.get_job_logs(args.job_id), end="")
    elif args.action == "stop":
        print("stopped" if client.stop_job(args.job_id) else "not running")
    return 0


def _job_error(logs: str) -> str | None:
    """The last line of a failed job's log that names an error."""
    for line in reversed(logs.strip().splitlines()):
        if "error" in line.lower() or "Error" in line:
            return line.strip()
    return None


def _generations(args: argparse.Namespace) -> int:
    from genai.serve import genlog_view

    table = genlog_view.select(
        Path(args.dir),
        args.model,
        args.since,
        args.min_score,
        args.max_score,
        args.limit,
        args.key_file,
    )
    if args.action == "export" and not (args.out or args.dataset):
        raise ValueError("generations export: give --out FILE or --dataset DIR")
    if args.dataset:
        n = genlog_view.export_dataset(table, Path(args.dataset))
        print(f"wrote {n} generations as a synthetic corpus to {args.dataset} (data.synthetic)")
    elif args.out:
        genlog_view.export(table, Path(args.out))
        print(f"wrote {table.num_rows} generations to {args.out}")
    else:
        genlog_view.show(table.to_pylist(), args.width)
    return 0


def _data(args: argparse.Namespace) -> int:
    from genai.data import ops

    if args.action == "ls":
        ops.ls(args.cache_dir)
    elif args.action == "show":
        ops.show(args.version, args.cache_dir, args.files)
    elif args.action == "diff":
        return ops.diff(args.a, args.b, args.cache_dir)
    else:
        ops.dedup(args.source, args.set, args.address, args.out)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from genai.demo import run_demo

    run_demo(steps=args.steps)
    return 0


def _set_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """The repeatable ``--set dotted.key=value`` override every spec-taking command has."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def build_parser() -> argparse.ArgumentParser:
    """The command table (declarative: one block per subcommand, read top to bottom)."""
    p = argparse.ArgumentParser(
        prog="genai", description="Train and serve generative models on Ray."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run a job spec with Ray Train + DeepSpeed")
    t.add_argument("spec", help="job spec YAML (jobs/*.yaml)")
    _set_option(t, "override a field, e.g. train.lr=3e-4")
    t.add_argument(
        "--address",
        help="Ray cluster address ('auto' on a cluster node); default: embedded local Ray",
    )
    g = t.add_mutually_exclusive_group()
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in checkpoint.dir",
    )
    g.add_argument(
        "--fresh", action="store_true", help="delete existing checkpoints in checkpoint.dir first"
    )
    t.add_argument("--print-spec", action="store_true", help="print the validated spec and exit")
    t.set_defaults(func=_train)

    tu = sub.add_parser("tune", help="run a Ray Tune sweep (jobs/tune-*.yaml) over Ray Train runs")
    tu.add_argument("spec", help="sweep spec YAML (jobs/tune-*.yaml)")
    _set_option(tu, "override a sweep field")
    tu.add_argument("--address", help="Ray cluster address; default: embedded local Ray")
    g = tu.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    g.add_argument("--fresh", action="store_true", help="delete an earlier sweep's results first")
    tu.add_argument("--print-spec", action="store_true", help="print the validated sweep and exit")
    tu.set_defaults(func=_tune)

    s = sub.add_parser("serve", help="serve checkpoints over HTTP with Ray Serve (foreground)")
    s.add_argument(
        "checkpoints",
        nargs="*",
        help="checkpoint dirs (a step dir, 'latest' or a checkpoints root)",
    )
    s.add_argument("--config", default=None, help="serve config YAML (serve/lm.yaml)")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    _set_option(s)
    s.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve a LoRA adapter checkpoint over its base (one of the checkpoints) as "
        "model NAME; repeat for more",
    )
    s.add_argument(
        "--watch",
        action="store_true",
        help="swap in a new checkpoint (a moved `latest`, an edited --config list) without a restart",
    )
    s.add_argument("--address", help="Ray cluster address; default: embedded local Ray")
    s.set_defaults(func=_serve)

    im = sub.add_parser(
        "import", help="make a pretrained LM (a GGUF file, a local HF dir) a genai checkpoint"
    )
    im.add_argument(
        "source", help="a .gguf file, a Hugging Face model dir, or 'smollm2' (make smollm2)"
    )
    im.add_argument("--out", required=True, help="the checkpoint directory to write")
    im.add_argument("--name", default=None, help="the model's name (default: the out dir's)")
    im.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="stored weight dtype (a GGUF is dequantized to it)",
    )
    im.add_argument("--force", action="store_true", help="replace an existing --out")
    im.set_defaults(func=_import)

    g = sub.add_parser("generations", help="read the generation log (with feedback scores)")
    g.add_argument(
        "action",
        nargs="?",
        default="show",
        choices=["show", "export"],
        help="show a table (default) or export (--out FILE, --dataset DIR)",
    )
    g.add_argument("--dir", default="runs/generations", help="the log (serve's generation_log.dir)")
    g.add_argument("--model", help="only this model")
    g.add_argument("--since", help="30m, 1h, 2d ago, or an ISO 8601 time")
    g.add_argument("--min-score", type=float, help="only scored generations, score >= this")
    g.add_argument("--max-score", type=float, help="only scored generations, score <= this")
    g.add_argument("--limit", type=int, default=0, help="only the newest N")
    g.add_argument("--out", help="write .parquet or .csv instead of printing a table")
    g.add_argument(
        "--dataset",
        help="write the generations' text as a synthetic corpus (JSONL) for data.synthetic",
    )
    g.add_argument("--width", type=int, default=40, help="prompt/output characters shown")
    g.add_argument("--key-file", help="an encrypted log's key (base64; default: $GENAI_LOG_KEY)")
    g.set_defaults(func=_generations)

    q = sub.add_parser("query", help="ask a served model for a completion")
    q.add_argument("prompt")
    q.add_argument("--url", default=os.environ.get("GENAI_URL", "http://127.0.0.1:8000"))
    q.add_argument("--model", default=None)
    q.add_argument("--max-tokens", type=int, default=64)
    q.add_argument("--temperature", type=float, default=0.8)
    q.add_argument("--top-p", type=float, default=0.95)
    q.add_argument("--seed", type=int, default=None)
    q.add_argument(
        "--api-key-env",
        default="GENAI_API_KEY",
        help="env var holding the API key (keys never go on a command line, where ps shows them)",
    )
    q.add_argument("--timeout", type=float, default=120)
    q.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    q.add_argument(
        "--json", action="store_true", help="print the whole response (with --stream: each event)"
    )
    q.set_defaults(func=_query)

    sb = sub.add_parser(
        "submit", help="submit a training job to a cluster through the Ray Jobs API"
    )
    sb.add_argument("spec")
    sb.add_argument("--address", required=True, help="dashboard address, e.g. http://HEAD:8265")
    _set_option(sb)
    sb.add_argument("--resume", action="store_true")
    sb.set_defaults(func=_submit)

    j = sub.add_parser("jobs", help="list / status / logs / stop submitted jobs")
    j.add_argument("action", choices=["list", "status", "logs", "stop"])
    j.add_argument("job_id", nargs="?")
    j.add_argument("--address", required=True, help="dashboard address, e.g. http://HEAD:8265")
    j.add_argument("--follow", "-f", action="store_true", help="logs: stream until the job ends")
    j.set_defaults(func=_jobs)

    da = sub.add_parser("data", help="dataset versions (ls, show, diff) and corpus dedup")
    dsub = da.add_subparsers(dest="action", required=True)
    cache = {"default": ".genai_cache", "help": "the data.cache_dir the datasets were prepared in"}
    x = dsub.add_parser("ls", help="list the stored dataset versions")
    x.add_argument("--cache-dir", **cache)
    x = dsub.add_parser("show", help="a version's summary (and documents, with --files)")
    x.add_argument("version", help="a version id (or a unique prefix), or a checkpoint dir")
    x.add_argument("--files", action="store_true", help="list every document and its split")
    x.add_argument("--cache-dir", **cache)
    x = dsub.add_parser("diff", help="the documents that differ between two versions")
    x.add_argument("a", help="a version id or a checkpoint dir")
    x.add_argument("b", help="a version id or a checkpoint dir")
    x.add_argument("--cache-dir", **cache)
    x = dsub.add_parser("dedup", help="deduplicate a corpus on a Ray cluster (Ray Data)")
    x.add_argument("source", help="'stdlib', a directory, a file or a glob (as data.source)")
    _set_option(x, "a data field, e.g. dedup.threshold=0.8 or include=['*.md']")
    x.add_argument("--out", help="write the manifest (kept: train, the rest: dropped) here")
    x.add_argument("--address", help="Ray cluster address; default: embedded local Ray")
    da.set_defaults(func=_data)

    d = sub.add_parser("demo", help="train, serve and query a small LM on an embedded local Ray")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the spec's)")
    d.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "jobs" and args.action in ("status", "logs", "stop") and not args.job_id:
        build_parser().error(f"jobs {args.action} needs a job id")
    from genai.checkpoint import CheckpointError
    from genai.config import SpecError

    try:
        return args.func(args)
    except (SpecError, CheckpointError, ValueError, ConnectionError, OSError) as exc:
        print(f"genai: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"genai: {exc or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
