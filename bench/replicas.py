"""A class against several web processes: N students through bench/proxy.py to R `streamlit run app.py` replicas that
share one job queue (a Ray actor, VQDEMO_QUEUE=ray-actor) and one runs folder, on a Ray cluster on 127.0.0.1.

Each student is bench/load_test.py's simulated browser tab and does what it does there (every page, Start a run,
watch it until it ends), arriving over `--ramp` seconds; only the server side differs. The machine is split as
`load_test.py --backend ray` splits it: every replica on the first core (`taskset`), the Ray head (no CPUs: it
holds the queue actor), one worker node with `--ray-cpus` CPUs, the proxy and the students on the others. So one
replica here is that bench's web server behind a proxy, and R replicas share its one core: what R replicas on R
machines would each have is one R-th of what is measured. Prints the page response times, every run's outcome,
and each replica's CPU and memory (the web processes only: the queue actor and the training run in Ray's).
Run: python bench/replicas.py [--replicas 2] [--sessions 30] [--seconds 20] [--timeout 900] [--ramp 0]
     [--ray-cpus 1] [--max-jobs N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.load_test as load  # noqa: E402
from vqdemo.jobs.ray_head import start_head, start_node, wait_nodes  # noqa: E402


def start_proxy(ports: list[int], timeout: float = 60.0,
                prefix: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    port = load.free_port()
    proc = subprocess.Popen([*(prefix or []), sys.executable, str(load.ROOT / "bench" / "proxy.py"),
                             "--port", str(port), *(a for p in ports for a in ("--replica", str(p)))],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5):
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the proxy did not come up")


def run(replicas: int, sessions: int, seconds: int, timeout_s: float, max_jobs: int | None, ramp_s: float = 0.0,
        ray_cpus: int = 1) -> dict:
    if not 1 <= sessions <= load.MAX_SESSIONS:
        raise ValueError(f"sessions must be in [1, {load.MAX_SESSIONS}]")
    if not 1 <= replicas <= 8:
        raise ValueError("replicas must be in [1, 8]")
    web, rest = load.pinned_cluster(ray_cpus)
    others = ["taskset", "-c", ",".join(map(str, rest))]
    os.sched_setaffinity(0, rest)   # the students are browsers elsewhere: never on the web servers' core
    runs_dir = Path(tempfile.mkdtemp(prefix="vqdemo-replicas-"))
    head = start_head(num_cpus=0, prefix=others)
    node = None
    try:
        node = start_node(head, ray_cpus, prefix=others)
        wait_nodes(head, [node])
        return _drive(replicas, sessions, seconds, timeout_s, max_jobs, ramp_s, runs_dir, head.env,
                      ["taskset", "-c", ",".join(map(str, web))], others)
    finally:
        if node is not None:
            node.stop()
        head.stop()


def _drive(replicas: int, sessions: int, seconds: int, timeout_s: float, max_jobs: int | None, ramp_s: float,
           runs_dir: Path, ray_env: dict[str, str], web: list[str], others: list[str]) -> dict:
    env = {**ray_env, "VQDEMO_QUEUE": "ray-actor", "VQDEMO_BACKEND": "ray",
           "STREAMLIT_SERVER_COOKIE_SECRET": secrets.token_hex(16)}
    servers = [load.Server(runs_dir, max_jobs, env, prefix=web) for _ in range(replicas)]
    proxy = None
    try:
        for server in servers:
            server.wait_ready(300)
        proxy, port = start_proxy([s.port for s in servers], prefix=others)
        pids = [s.proc.pid for s in servers]
        cpu_start, peak_rss = [load.cpu_seconds(p) for p in pids], [load.rss_mb(p) for p in pids]
        stop = threading.Event()

        def monitor() -> None:
            while not stop.wait(0.2):
                for i, pid in enumerate(pids):
                    peak_rss[i] = max(peak_rss[i], load.rss_mb(pid))

        threading.Thread(target=monitor, daemon=True).start()
        started = time.monotonic()
        deadline = started + timeout_s
        tabs = [load.Tab(i, port) for i in range(sessions)]
        threads = [threading.Thread(target=load.student, daemon=True,
                                    args=(t, runs_dir, seconds, deadline, started + ramp_s * t.index / sessions))
                   for t in tabs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 10)
        wall = time.monotonic() - started
        cores = [round((load.cpu_seconds(p) - c) / wall, 2) for p, c in zip(pids, cpu_start)]
        stop.set()
        for tab in tabs:
            tab.close()
        every = [x for t in tabs for v in t.times.values() for x in v]
        by_kind: dict[str, list[float]] = {}
        for t in tabs:
            for name, values in t.times.items():
                by_kind.setdefault(name, []).extend(values)
        states = [load.state_of(d) for d in runs_dir.iterdir() if (d / "job.json").is_file()]
        return {
            "replica_cores": cores, "replica_peak_rss_mb": [round(r) for r in peak_rss],
            "runs": len(states), "done": states.count("done"), "responses": len(every),
            "median_s": round(statistics.median(every), 2) if every else None,
            "p95_s": round(statistics.quantiles(every, n=20)[-1], 2) if len(every) > 1 else None,
            "slowest_s": round(max(every), 2) if every else None,
            "median_by_kind_s": {k: round(statistics.median(v), 2) for k, v in by_kind.items()},
            "wall_s": round(wall, 1), "unfinished": sum(bool(t.unfinished) for t in tabs),
            "errors": [f"session {t.index}: {e}" for t in tabs for e in t.errors],
            "file_problems": load.check_files(tabs, runs_dir),
            "replicas_alive": all(s.proc.poll() is None for s in servers),
        }
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(30)
        for server in servers:
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--seconds", type=int, default=20, help="each student's training budget (batch 16, digits)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before the bench gives up")
    p.add_argument("--ramp", type=float, default=0.0, help="students arrive one after another over this many seconds")
    p.add_argument("--ray-cpus", type=int, default=1, help="CPUs the Ray worker node offers")
    p.add_argument("--max-jobs", type=int, help="VQDEMO_MAX_JOBS for the shared queue (default: the cluster's CPUs)")
    a = p.parse_args()
    f = run(a.replicas, a.sessions, a.seconds, a.timeout, a.max_jobs, a.ramp, a.ray_cpus)
    print(f"sessions:        {a.sessions} websocket clients through bench/proxy.py to {a.replicas} replicas "
          f"(127.0.0.1, one queue on a local Ray head) arriving over {a.ramp:g} s; replicas on one core, the Ray head "
          f"(0 CPUs), one worker node ({a.ray_cpus} CPUs), the proxy and the students on the others")
    print(f"runs:            {f['runs']} started, {f['done']} done ({a.seconds} s budget each); "
          f"{f['unfinished']} sessions still waiting at the deadline")
    print(f"replicas:        CPU {f['replica_cores']} cores each on average, peak RSS {f['replica_peak_rss_mb']} MB; "
          f"all still up: {f['replicas_alive']}")
    print(f"page responses:  {f['responses']}; median {f['median_s']} s, 95th percentile {f['p95_s']} s, "
          f"slowest {f['slowest_s']} s")
    print("median by kind:  " + ", ".join(f"{k} {v} s" for k, v in f["median_by_kind_s"].items()))
    print(f"wall time:       {f['wall_s']} s")
    own = "each run folder is its own student's, and only theirs"
    print(f"run files:       {f['file_problems'] or own}")
    print(f"session errors:  {f['errors'] or 'none'}")


if __name__ == "__main__":
    main()
