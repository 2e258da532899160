"""A multi-node Ray cluster on this machine: one ``ray start --block`` process per node.

Each node is started in its own session (``setsid``), so every process of the node, its
raylet's workers included, carries the session id of that one ``ray start`` process. That
is how it is stopped: by that pid and its session, never with ``ray stop`` (which stops
every Ray on the machine). Each node gets its own temp dir and ports, a custom resource
named after it (``node0`` is the head) to place work on it, and the cluster its own auth
token (token authentication on, as Ray 2.60 defaults to).

    python -m genai.testing.localcluster up 3 --dir runs/local-cluster   # head + 2 worker nodes
    python -m genai.testing.localcluster down --dir runs/local-cluster
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from genai.cluster import free_port

READY = "Ray runtime started."


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is ``sid`` (a node's whole process tree)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp session ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@dataclass
class Node:
    name: str
    pid: int  # the `ray start --block` process; leader of the node's session
    temp_dir: str
    log: str
    cgroup: str = ""  # the node's memory cgroup, when it was given a memory limit

    def alive(self) -> bool:
        return bool(session_pids(self.pid))

    def raylet_pid(self) -> int | None:
        for pid in session_pids(self.pid):
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"/raylet"):
                return pid
        return None


class LocalCluster:
    """Start with ``up(n)``; ``address`` for drivers, ``dashboard_url`` for the Jobs API."""

    def __init__(self, workdir: str | Path, *, cpus_per_node: int = 1) -> None:
        self.workdir = Path(workdir).absolute()
        self.cpus_per_node = cpus_per_node
        self.nodes: dict[str, Node] = {}
        self.port = 0
        self.dashboard_port = 0
        self.token_path = self.workdir / "auth_token"

    # -- what clients need --------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """Environment a driver or ``genai submit`` needs to authenticate to this cluster."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    # -- lifecycle ----------------------------------------------------------------------
    def up(
        self,
        n_nodes: int,
        *,
        worker_resources: dict | None = None,
        worker_memory_mb: int | None = None,
        timeout_s: float = 120.0,
    ) -> LocalCluster:
        """Start the head and ``n_nodes - 1`` worker nodes; ``worker_resources`` are extra
        resources of every worker node (the head never has them), ``worker_memory_mb``
        each worker node's memory (a cgroup limit, see ``add_node``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.token_path.exists():
            self.token_path.write_text(secrets.token_hex(32))
            self.token_path.chmod(0o600)
        self.port, self.dashboard_port = free_port(), free_port()
        try:
            self.add_node(head=True, timeout_s=timeout_s)
            for _ in range(n_nodes - 1):
                self.add_node(
                    resources=worker_resources, memory_mb=worker_memory_mb, timeout_s=timeout_s
                )
        except BaseException:
            self.down()
            raise
        self._save()
        return self

    def add_node(
        self,
        *,
        head: bool = False,
        resources: dict | None = None,
        private_dir: str | None = None,
        memory_mb: int | None = None,
        timeout_s: float = 120.0,
    ) -> Node:
        """Start one more node (or the head); also how a lost node comes back.

        ``private_dir``: this node sees its own empty tmpfs there (a mount namespace), as a
        machine whose disk the other nodes cannot see would.
        ``memory_mb``: the node's whole process tree (raylet, object store, workers) runs in
        a memory cgroup of that limit, enforced by the kernel as a smaller machine's RAM
        would be; Ray is told the same (``--memory``, a quarter of it for the object store).
        """
        name = f"node{len(self.nodes)}" if not head else "node0"
        while name in self.nodes:
            name = f"node{int(name[4:]) + 1}"
        # socket paths live under the temp dir and must stay short (Unix sockets: 107 bytes)
        temp_dir = tempfile.mkdtemp(prefix=f"genai-{name}-", dir="/tmp")
        cmd = self._ray_start(name, head, resources, temp_dir)
        cgroup = ""
        if memory_mb:
            cgroup = memory_cgroup(f"genai-{name}-{os.getpid()}", memory_mb)
            cmd += [
                f"--memory={memory_mb << 20}",
                f"--object-store-memory={memory_mb << 18}",
            ]
            # the shell joins the cgroup, then becomes the node: everything it starts is in it
            cmd = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *cmd]
        if private_dir:
            # `unshare` and `exec` keep the pid: it still leads the node's session
            mount = f"mkdir -p {private_dir} && mount -t tmpfs genai-private {private_dir}"
            inner = f"{mount} && exec {' '.join(shlex.quote(c) for c in cmd)}"
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]
        log = self.workdir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._node_env(),
                start_new_session=True,
            )
        node = Node(name=name, pid=proc.pid, temp_dir=temp_dir, log=str(log), cgroup=cgroup)
        self.nodes[name] = node
        deadline = time.time() + timeout_s
        while READY not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                tail = log.read_text()[-2000:]
                self.stop_node(name)  # what did start of it
                raise RuntimeError(f"ray node {name} did not start (see {log}):\n{tail}")
            time.sleep(0.3)
        self._save()
        return node

    def _ray_start(self, name: str, head: bool, resources: dict | None, temp_dir: str) -> list[str]:
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--block",
            f"--num-cpus={self.cpus_per_node}",
            f"--resources={json.dumps({name: 1, **(resources or {})})}",
            f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
        ]
        if not head:
            return [*cmd, f"--address={self.address}"]
        return [
            *cmd,
            "--head",
            f"--port={self.port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            # Ray refuses a client server port inside its worker port range (10002-19999)
            f"--ray-client-server-port={self._client_port()}",
        ]

    def _node_env(self) -> dict[str, str]:
        # the node's PATH is its jobs' PATH: this interpreter's bin dir first, as an image
        # with genai installed would have it
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        return {
            **os.environ,
            **self.client_env(),
            "PATH": path,
            # several nodes starting on a loaded 2-core machine: Ray's 30 s for a raylet to
            # register was seen to run out
            "RAY_raylet_start_wait_time_s": os.environ.get(
                "RAY_raylet_start_wait_time_s",  # noqa: SIM112 (Ray spells it so)
                "120",
            ),
        }

    def _client_port(self) -> int:
        for port in range(23000, 24000):
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", port))
                except OSError:
                    continue
                return port
        raise RuntimeError("no free port for the Ray client server in 23000-23999")

    def kill_raylet(self, name: str) -> int:
        """SIGKILL a node's raylet: the node dies as a lost machine would (its workers with
        it); its ``ray start`` process then tears down the rest. Returns the raylet's pid."""
        pid = self.nodes[name].raylet_pid()
        if pid is None:
            raise RuntimeError(f"{name} has no raylet running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop_node(self, name: str, grace_s: float = 15.0) -> None:
        node = self.nodes.pop(name)
        _stop_session(node.pid, grace_s)
        shutil.rmtree(node.temp_dir, ignore_errors=True)
        with contextlib.suppress(ChildProcessError):  # reap it if it is our child: a
            os.waitpid(node.pid, os.WNOHANG)  # zombie would keep its cgroup busy
        if node.cgroup:
            for _ in range(50):
                try:
                    os.rmdir(node.cgroup)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy until the kernel has let go of its last process
                    time.sleep(0.1)
        self._save()

    def down(self) -> None:
        """Stop every node this cluster started (worker nodes first), by pid."""
        for name in sorted(self.nodes, key=lambda n: n == "node0"):
            self.stop_node(name)
        (self.workdir / "cluster.json").unlink(missing_ok=True)

    def leftovers(self) -> list[int]:
        """Processes of nodes this cluster started that are still alive (should be none)."""
        return [pid for node in self.nodes.values() for pid in session_pids(node.pid)]

    # -- state, for `down` from another process ---------------------------------------------
    def _save(self) -> None:
        state = {
            "port": self.port,
            "dashboard_port": self.dashboard_port,
            "nodes": {n: asdict(node) for n, node in self.nodes.items()},
        }
        (self.workdir / "cluster.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, workdir: str | Path) -> LocalCluster:
        c = cls(workdir)
        state = json.loads((c.workdir / "cluster.json").read_text())
        c.port, c.dashboard_port = state["port"], state["dashboard_port"]
        c.nodes = {n: Node(**v) for n, v in state["nodes"].items()}
        return c


def memory_cgroup(name: str, limit_mb: int) -> str:
    """A child of this process's own memory cgroup (v1 or v2), limited to ``limit_mb``."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            parent, limit_file = (
                Path("/sys/fs/cgroup/memory") / path.lstrip("/"),
                "memory.limit_in_bytes",
            )
            break
    else:  # cgroup v2: one unified hierarchy
        path = Path("/proc/self/cgroup").read_text().split("::", 1)[-1].strip()
        parent, limit_file = Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max"
    group = parent / name
    try:
        group.mkdir(exist_ok=True)
        (group / limit_file).write_text(str(limit_mb << 20))
    except OSError as e:
        raise RuntimeError(
            f"cannot create a memory cgroup at {group} ({e}): a memory-limited node needs "
            "write access to the cgroup filesystem (root, or a delegated cgroup)"
        ) from None
    return str(group)


def memory_stats(cgroup: str) -> dict[str, int]:
    """What the kernel counted for a node's cgroup: ``limit``, ``peak`` (page cache
    included), ``rss`` now, and ``oom_kills`` (processes it killed for memory)."""
    g = Path(cgroup)
    if (g / "memory.limit_in_bytes").exists():  # v1
        stat = dict(line.split() for line in (g / "memory.stat").read_text().splitlines())
        oom = dict(line.split() for line in (g / "memory.oom_control").read_text().splitlines())
        return {
            "limit": int((g / "memory.limit_in_bytes").read_text()),
            "peak": int((g / "memory.max_usage_in_bytes").read_text()),
            "rss": int(stat["total_rss"]) + int(stat.get("total_shmem", 0)),
            "oom_kills": int(oom.get("oom_kill", 0)),
        }
    stat = dict(line.split() for line in (g / "memory.stat").read_text().splitlines())
    events = dict(line.split() for line in (g / "memory.events").read_text().splitlines())
    peak = g / "memory.peak"
    return {
        "limit": int((g / "memory.max").read_text()),
        "peak": int(peak.read_text()) if peak.exists() else -1,
        "rss": int(stat["anon"]) + int(stat.get("shmem", 0)),
        "oom_kills": int(events.get("oom_kill", 0)),
    }


def _stop_session(sid: int, grace_s: float) -> None:
    """SIGTERM the node's ``ray start`` (it stops its own processes), then SIGKILL whatever
    of its session is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(sid, signal.SIGTERM)
    deadline = time.time() + grace_s
    while session_pids(sid) and time.time() < deadline:
        time.sleep(0.2)
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10  # SIGKILL is not instant: wait until they are gone
    while session_pids(sid) and time.time() < deadline:
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="genai.testing.localcluster", description=__doc__.split("\n")[0]
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("nodes", nargs="?", type=int, default=3, help="nodes, head included (up)")
    p.add_argument("--dir", default="runs/local-cluster", help="state, logs and auth token")
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument(
        "--worker-memory-mb",
        type=int,
        help="each worker node's memory, enforced by the kernel (a cgroup; needs root)",
    )
    args = p.parse_args(argv)
    state = Path(args.dir) / "cluster.json"
    if args.action == "up":
        if state.exists():
            print(f"a cluster is already up ({state}); `down` it first", file=sys.stderr)
            return 1
        try:
            c = LocalCluster(args.dir, cpus_per_node=args.cpus_per_node).up(
                args.nodes, worker_memory_mb=args.worker_memory_mb
            )
        except RuntimeError as exc:
            print(f"cluster up failed: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        env = " ".join(f"{k}={v}" for k, v in c.client_env().items())
        print(
            f"cluster up: {len(c.nodes)} nodes ({', '.join(c.nodes)}), token auth on\n"
            f"  export {env}\n"
            f"  genai train jobs/lm-tiny.yaml --address {c.address}\n"
            f"  genai submit jobs/lm-tiny.yaml --address {c.dashboard_url}\n"
            f"  dashboard {c.dashboard_url}"
        )
        return 0
    if not state.exists():
        print(f"no cluster recorded in {state}", file=sys.stderr)
        return 1
    c = LocalCluster.load(args.dir)
    if args.action == "status":
        for node in c.nodes.values():
            print(f"{node.name}: pid {node.pid} {'up' if node.alive() else 'gone'}")
        return 0
    c.down()
    print(f"cluster down: stopped {args.dir}'s nodes by pid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
