"""A real multi-node Ray cluster on this machine (genai.testing.localcluster: one `ray start` per
node, token auth on), started once for the module and stopped by pid:

- job submission through the Jobs API: the working dir is shipped, the workers span two
  nodes, checkpoints commit; status, logs, stop and a failed job's error; no token, one line;
- checkpoint.dir that is not shared by all nodes fails with the clear error;
- a corpus larger than a memory-capped node (a kernel cgroup limit) trains through
  data.streaming there, and a reader goes through all of it under the same cap;
- a node lost mid-run (its raylet SIGKILLed): the LM (scaling.min_workers=1) shrinks to the
  remaining worker, re-sharding ZeRO-2 state; the GAN (fixed workers) waits for a node to
  come back and continues on it;
- nothing of the cluster is left running afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genai import checkpoint as ckpt
from genai.config import parse_job
from genai.testing.localcluster import LocalCluster, memory_stats, session_pids
from tests.conftest import TINY, merge
from tests.support import token_corpus
from tests.test_images_e2e import GAN, _spec

pytestmark = [pytest.mark.e2e, pytest.mark.full]

TRAINER = {"trainer": 1}  # only worker nodes offer it: training workers never land on the head


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    c.up(3, worker_resources=TRAINER)
    leaders = []
    try:
        yield c
    finally:
        leaders = [n.pid for n in c.nodes.values()]
        c.down()
    # the suite leaves no Ray process of this cluster behind
    assert not [p for sid in leaders for p in session_pids(sid)]


def _env(c: LocalCluster, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return {**env, **c.client_env(), **extra}


def _genai(c: LocalCluster, *args: str, cwd: Path | None = None, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "genai", *args],
        cwd=cwd,
        env=env or _env(c),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _project(tmp_path: Path, corpus_dir: Path, **over) -> tuple[Path, dict]:
    """A user's working dir: a spec and its data, nothing else (no genai source)."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    for f in sorted(corpus_dir.glob("*.py"))[:20]:
        (proj / "data" / f.name).write_bytes(f.read_bytes())
    raw = merge(
        TINY,
        {
            "name": "cluster-lm",
            "data": {"source": "data", "cache_dir": ".genai_cache"},
            "deepspeed": {"precision": "fp32"},
            "scaling": {"resources_per_worker": TRAINER},
            "train": {"max_failures": 0},
            "checkpoint": {"dir": str(tmp_path / "ckpt")},
        },
    )
    raw = merge(raw, over)
    (proj / "job.json").write_text(json.dumps(raw))
    return proj, raw


def _wait_status(c: LocalCluster, job: str, want: set[str], timeout: float = 420) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = _genai(c, "jobs", "status", job, "--address", c.dashboard_url)
        status = r.stdout.split("\t")[-1].split()[0] if "\t" in r.stdout else ""
        if status in want:
            return r.stdout + r.stderr
        time.sleep(1)
    raise AssertionError(f"job {job} not {want} after {timeout}s: {r.stdout} {r.stderr}")


def _node_id(c: LocalCluster, name: str) -> str:
    """A node's Ray id, from its raylet's command line."""
    pid = c.nodes[name].raylet_pid()
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))


def _submit(c: LocalCluster, proj: Path, *sets: str) -> str:
    args = ["submit", "job.json", "--address", c.dashboard_url]
    for s in sets:
        args += ["--set", s]
    r = _genai(c, *args, cwd=proj)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()[1]  # "submitted: <id>"


def test_submitted_job_spans_nodes_commits_and_reports(cluster, tmp_path, corpus_dir):
    proj, raw = _project(tmp_path, corpus_dir)
    job = _submit(cluster, proj)
    assert "SUCCEEDED" in _wait_status(cluster, job, {"SUCCEEDED", "FAILED", "STOPPED"})
    logs = _genai(cluster, "jobs", "logs", job, "--address", cluster.dashboard_url).stdout
    final = ckpt.find_latest(Path(raw["checkpoint"]["dir"]))
    meta = ckpt.read_meta(final)
    assert meta.step == raw["train"]["max_steps"] and meta.world_size == 2
    # two workers on two different worker nodes (the head offers no `trainer` resource)
    head_id = _node_id(cluster, "node0")
    assert len(set(meta.node_ids)) == 2 and head_id not in meta.node_ids, meta.node_ids
    assert f"checkpoint: {final}" in logs
    listed = _genai(cluster, "jobs", "list", "--address", cluster.dashboard_url).stdout
    assert job in listed


def test_failed_job_shows_its_error_and_stop_stops(cluster, tmp_path, corpus_dir):
    proj, _ = _project(tmp_path, corpus_dir)
    # exists where it is submitted, excluded from what ships (.genai_cache is never shipped)
    (proj / ".genai_cache" / "corpus").mkdir(parents=True)
    (proj / ".genai_cache" / "corpus" / "a.py").write_text("x = 1\n")
    bad = _submit(cluster, proj, "data.source=.genai_cache/corpus")
    out = _wait_status(cluster, bad, {"SUCCEEDED", "FAILED", "STOPPED"})
    assert "FAILED" in out and "error: genai: error: data.source" in out, out

    long = _submit(cluster, proj, "train.max_steps=5000", "train.warmup_steps=10")
    _wait_status(cluster, long, {"RUNNING"})
    time.sleep(5)
    r = _genai(cluster, "jobs", "stop", long, "--address", cluster.dashboard_url)
    assert r.returncode == 0 and "stopped" in r.stdout
    assert "STOPPED" in _wait_status(cluster, long, {"STOPPED", "FAILED", "SUCCEEDED"}, 60)
    # stopped while its worker group may be starting: the run's placement group must not
    # stay behind holding the trainers' CPUs (the next test could not start)
    deadline = time.time() + 60
    while (held := _placement_groups(cluster)) and time.time() < deadline:
        time.sleep(1)
    assert not held, held


def _placement_groups(c: LocalCluster) -> list[str]:
    """The cluster's placement groups not removed, from Ray's state API."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    cmd = [ray_cli, "list", "placement-groups", "--address", c.dashboard_url, "--format", "json"]
    r = subprocess.run(cmd, env=_env(c), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return [g["placement_group_id"] for g in json.loads(r.stdout) if g["state"] != "REMOVED"]


def test_submission_without_the_token_says_what_to_set(cluster, tmp_path, corpus_dir):
    proj, _ = _project(tmp_path, corpus_dir)
    env = _env(cluster)
    env.pop("RAY_AUTH_TOKEN_PATH")
    env["RAY_AUTH_TOKEN"] = "not-the-token"
    r = _genai(cluster, "submit", "job.json", "--address", cluster.dashboard_url, cwd=proj, env=env)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "RAY_AUTH_TOKEN" in r.stderr and "refused" in r.stderr


def _train_until_checkpoint(cluster, spec_path: Path, root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "genai", "train", str(spec_path), "--address", cluster.address],
        # a lost node's resources stay in the cluster's view for a while after its workers
        # died, so the first restart may wait for them until this timeout (Ray's default 60 s)
        env=_env(cluster, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while ckpt.find_latest(root) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if ckpt.find_latest(root) is None:
        proc.kill()
        raise AssertionError(f"no checkpoint committed: {proc.communicate()[0][-3000:]}")
    return proc


def _assert_recovered(proc: subprocess.Popen, root: Path, max_steps: int, every: int) -> str:
    out = proc.communicate(timeout=400)[0]
    assert proc.returncode == 0, out[-4000:]
    metas = [ckpt.read_meta(p) for p in ckpt.list_checkpoints(root)]
    assert metas[-1].step == max_steps
    assert len({m.run_id for m in metas}) == 1  # recovered in place, no --resume
    assert [m.step for m in metas] == list(range(every, max_steps + 1, every))
    assert not [p for p in root.iterdir() if p.name.startswith((".step-", ".reshard-"))]
    assert out.count("recovered from a failure: continuing from") >= 1, out[-4000:]
    return out


def test_node_loss_lm_shrinks_to_the_remaining_worker(cluster, tmp_path, corpus_dir):
    proj, raw = _project(
        tmp_path,
        corpus_dir,
        name="node-loss-lm",
        train={"max_steps": 30, "log_every": 5, "eval_every": 15, "max_failures": 3},
        scaling={"min_workers": 1},
        checkpoint={"every_steps": 5, "keep": 10},
    )
    raw["data"]["source"] = str(proj / "data")
    spec_path = proj / "job.json"
    spec_path.write_text(json.dumps(raw))
    root = parse_job(raw).checkpoint_dir
    proc = _train_until_checkpoint(cluster, spec_path, root)
    lost = max(n for n in cluster.nodes if n != "node0")
    cluster.kill_raylet(lost)
    try:
        out = _assert_recovered(proc, root, 30, 5)
    finally:
        cluster.stop_node(lost)  # what is left of it
        cluster.add_node(resources=TRAINER)  # back to three nodes for the next test
    assert "re-sharding" in out and "from 2 to 1 workers" in out, out[-4000:]
    assert "keeps the global batch at 8" in out
    assert ckpt.read_meta(ckpt.find_latest(root)).world_size == 1
    assert [h["step"] for h in ckpt.read_meta(ckpt.find_latest(root)).history] == [0, 15, 30]


def test_node_loss_gan_waits_for_a_node_and_continues_both_engines(cluster, tmp_path, cache_dir):
    raw = merge(
        _spec(GAN, tmp_path, cache_dir),
        {
            "name": "node-loss-gan",
            "train": {"max_steps": 30, "log_every": 5, "eval_every": 15, "max_failures": 3},
            "scaling": {"resources_per_worker": TRAINER},
            "checkpoint": {"every_steps": 5, "keep": 10},
        },
    )
    spec_path = tmp_path / "gan.json"
    spec_path.write_text(json.dumps(raw))
    root = parse_job(raw).checkpoint_dir
    proc = _train_until_checkpoint(cluster, spec_path, root)
    lost = max(n for n in cluster.nodes if n != "node0")
    cluster.kill_raylet(lost)
    time.sleep(5)  # the run waits: two workers no longer fit
    cluster.stop_node(lost)
    cluster.add_node(resources=TRAINER)  # a replacement machine joins
    out = _assert_recovered(proc, root, 30, 5)
    final = ckpt.find_latest(root)
    assert ckpt.read_meta(final).world_size == 2
    for engine in ("generator", "discriminator"):
        tag = (final / "deepspeed" / engine / "latest").read_text().strip()
        assert tag == ckpt.step_name(30)
    assert "re-sharding" not in out


CAP_MB = 2000  # the capped node's whole memory: Ray's own processes, object store, workers
FILE_TOKENS = 16_000_000  # 64 MB of int32 per file
N_FILES = 36  # 2.3 GB

# Runs on the capped node: every micro-batch of the whole corpus, as a worker streams it
READ_ALL = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(resources={"capped": 1}, num_cpus=0)
def read_all(shards):
    from genai.data.stream import StreamSampler
    s = StreamSampler(shards, 1024, 256, 1, 0, 1, 0)
    t, n, anon = time.time(), 0, 0
    for i in range(s.micro_per_epoch):
        n += s.batch(i, 0).numel()
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
        anon = max(anon, int(status["RssAnon"].split()[0]) >> 10)
    s.close()
    return {"tokens": n, "seconds": time.time() - t, "peak_anon_mb": anon}

print("READ_ALL", json.dumps(ray.get(read_all.remote(json.loads(sys.argv[2])))))
"""


def test_a_corpus_larger_than_the_nodes_memory_streams_through_it(cluster, tmp_path):
    files, tok = token_corpus(tmp_path, [FILE_TOKENS] * N_FILES + [50_000], vocab_size=512)
    corpus_mb = sum(f.stat().st_size for f in files.iterdir()) >> 20
    assert corpus_mb > CAP_MB + 100  # plain int32 on disk: as big as in memory
    try:
        node = cluster.add_node(resources={"capped": 1}, memory_mb=CAP_MB)
    except RuntimeError as exc:  # no writable cgroup filesystem here
        pytest.skip(f"cannot cap a node's memory: {str(exc).splitlines()[-1]}")
    try:
        raw = merge(
            TINY,
            {
                "name": "stream-capped",
                "data": {
                    "source": str(files),
                    "format": "tokens",
                    "include": ["*.parquet"],
                    "tokenizer": {"path": str(tok)},
                    "streaming": True,
                    "val_fraction": 0.001,  # only the small file is held out
                    "cache_dir": str(tmp_path / "cache"),
                },
                "deepspeed": {"precision": "fp32"},
                "scaling": {"num_workers": 1, "resources_per_worker": {"capped": 1}},
                "train": {"max_steps": 6, "max_failures": 0},
                "checkpoint": {"dir": str(tmp_path / "ckpt")},
            },
        )
        spec_path = tmp_path / "job.json"
        spec_path.write_text(json.dumps(raw))
        r = _genai(cluster, "train", str(spec_path), "--address", cluster.address, timeout=400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert f"streaming {N_FILES} token shard(s)" in r.stdout
        final = ckpt.find_latest(parse_job(raw).checkpoint_dir)
        meta = ckpt.read_meta(final)
        assert meta.step == 6 and meta.node_ids == [_node_id(cluster, node.name)]
        # then the whole corpus, every micro-batch of it, through a reader on that node
        shards = json.loads((next((tmp_path / "cache").glob("text-*")) / "meta.json").read_text())
        r = subprocess.run(
            [sys.executable, "-c", READ_ALL, cluster.address, json.dumps(shards["train_shards"])],
            env=_env(cluster),
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        # (the raylet may print warnings to stdout too)
        read = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("READ_ALL "))[9:])
        stats = memory_stats(node.cgroup)
    finally:
        cluster.stop_node(node.name)
        shutil.rmtree(files)
    print(f"corpus {corpus_mb} MB, node cap {CAP_MB} MB: {read}, cgroup {stats}")
    assert read["tokens"] == (N_FILES * FILE_TOKENS // (1024 * 256)) * 1024 * 256
    # the kernel enforced the cap and never had to kill for it
    assert stats["limit"] == CAP_MB << 20 and stats["oom_kills"] == 0
    assert read["peak_anon_mb"] < CAP_MB // 2


def test_checkpoint_dir_not_shared_by_all_nodes_fails_clearly(cluster, tmp_path, corpus_dir):
    # last in the module: it replaces a worker node by one whose /tmp/genai-private-* is its
    # own (a mount namespace), so the run's two workers are on shared and unshared storage
    private = Path(f"/tmp/genai-private-{os.getpid()}")
    cluster.stop_node(max(n for n in cluster.nodes if n != "node0"))
    try:
        cluster.add_node(resources=TRAINER, private_dir=str(private))
    except RuntimeError as exc:  # no mount namespaces here (an unprivileged container)
        pytest.skip(f"cannot give a node private storage: {str(exc).splitlines()[-1]}")
    proj, _ = _project(tmp_path, corpus_dir, name="unshared", checkpoint={"dir": str(private)})
    try:
        r = _genai(
            cluster,
            "train",
            str(proj / "job.json"),
            "--address",
            cluster.address,
            "--set",
            f"data.source={proj / 'data'}",
            "--set",
            "train.max_steps=3",
            timeout=300,
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)
    assert r.returncode != 0
    assert "checkpoint.dir must be on storage shared by all nodes" in r.stdout + r.stderr, (
        r.stdout[-3000:] + r.stderr[-3000:]
    )
