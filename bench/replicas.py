"""A class against several web processes: N students through bench/proxy.py to R `streamlit run app.py` replicas that
share one job queue (a Ray actor, VQDEMO_QUEUE=ray-actor) and one runs folder, on a Ray head on 127.0.0.1.

Each student is bench/load_test.py's simulated browser tab and does what it does there (every page, Start a run,
watch it until it ends); only the server side differs. Prints the page response times, every run's outcome, and
each replica's CPU and memory (the web processes only: the queue actor and the training run in Ray's processes).
Run: python bench/replicas.py [--replicas 2] [--sessions 30] [--seconds 20] [--timeout 900] [--max-jobs N]
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
from vqdemo.jobs.ray_head import local_head  # noqa: E402


def start_proxy(ports: list[int], timeout: float = 60.0) -> tuple[subprocess.Popen, int]:
    port = load.free_port()
    proc = subprocess.Popen([sys.executable, str(load.ROOT / "bench" / "proxy.py"), "--port", str(port),
                             *(a for p in ports for a in ("--replica", str(p)))], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5):
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the proxy did not come up")


def run(replicas: int, sessions: int, seconds: int, timeout_s: float, max_jobs: int | None) -> dict:
    if not 1 <= sessions <= load.MAX_SESSIONS:
        raise ValueError(f"sessions must be in [1, {load.MAX_SESSIONS}]")
    if not 1 <= replicas <= 8:
        raise ValueError("replicas must be in [1, 8]")
    runs_dir = Path(tempfile.mkdtemp(prefix="vqdemo-replicas-"))
    with local_head(num_cpus=len(os.sched_getaffinity(0))) as head:
        env = {**head.env, "VQDEMO_QUEUE": "ray-actor", "VQDEMO_BACKEND": "ray",
               "STREAMLIT_SERVER_COOKIE_SECRET": secrets.token_hex(16)}
        servers = [load.Server(runs_dir, max_jobs, env) for _ in range(replicas)]
        proxy = None
        try:
            for server in servers:
                server.wait_ready(300)
            proxy, port = start_proxy([s.port for s in servers])
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
            threads = [threading.Thread(target=load.student, args=(t, runs_dir, seconds, deadline, started),
                                        daemon=True) for t in tabs]   # every student arrives at once
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
    p.add_argument("--max-jobs", type=int, help="VQDEMO_MAX_JOBS for the shared queue (default: half the cores)")
    a = p.parse_args()
    f = run(a.replicas, a.sessions, a.seconds, a.timeout, a.max_jobs)
    print(f"sessions:        {a.sessions} websocket clients through bench/proxy.py to {a.replicas} replicas "
          f"(127.0.0.1, one queue on a local Ray head), {len(os.sched_getaffinity(0))} CPU cores")
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
