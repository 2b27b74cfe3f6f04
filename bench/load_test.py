"""A class at once: N students against one real `streamlit run app.py` on 127.0.0.1.

Each simulated student is a websocket client speaking Streamlit's own protocol, as a browser tab does: it opens
the Learn, Reconstruct, Codebook and Train pages, presses "Start training" (a run on the digits with a time
budget), then watches it as the browser would: every live fragment is rerun at the interval the server asks for
(`auto_rerun`), until the run ends. Nothing leaves this machine: the server listens on 127.0.0.1 only (with
`--backend ray`, so does the Ray cluster it starts), sessions (at most 300) and time are bounded.

The students are threads of this one process, arriving one after another over `--ramp` seconds (0: all at once);
what they cost this machine is printed beside the server's figures. With `--backend ray` the bench simulates
separate machines on one: a Ray head with no CPUs and one worker node with `--ray-cpus` CPUs (token
authentication on), the web server pinned to the first core with `taskset`, the Ray processes and the students
to the others, so training never competes with the web server. It stops only the Ray processes it started.

Prints: sessions, how the clients ran, which cores each side had, the queue's concurrency limit and the most runs
seen training at once (from the runs folder), peak memory and CPU use of the web server's own process (its
workers are separate processes), page response times (median, 95th percentile, slowest, per kind), students
refused and why, students who waited in the queue and for how long, and whether every run's files belong to the
student who started it.
Run: python bench/load_test.py [--sessions 30] [--seconds 20] [--timeout 900] [--max-jobs 2] [--ramp 0]
     [--backend ray [--ray-cpus 1]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from ui import identity  # noqa: E402

PAGES = ["learn", "reconstruct", "codebook", "train"]
MAX_SESSIONS = 300   # a lecture hall; more is a typo, and each is a thread and a websocket here
FINAL = ("done", "stopped", "failed", "interrupted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (not its children: the job workers are counted apart)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cores_of(pid: int) -> str:
    """The cores a process may run on, as taskset lists them ("0", "1-3")."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((line.split()[1] for line in f if line.startswith("Cpus_allowed_list:")), "?")
    except OSError:
        return "?"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Server:
    """`streamlit run app.py` on 127.0.0.1 with its own runs folder; stopped on exit. `prefix` goes before the
    command (`taskset -c 0`: the web server on a core of its own)."""

    def __init__(self, runs_dir: Path, max_jobs: int | None = None, extra_env: dict[str, str] | None = None,
                 prefix: list[str] | None = None):
        self.port = free_port()
        env = {**os.environ, "VQDEMO_RUNS_DIR": str(runs_dir), "PYTHONPATH": str(ROOT), "VQDEMO_BACKEND": "local",
               "VQDEMO_JOBS_PER_ADDRESS": "0",   # every simulated student connects from 127.0.0.1
               **(extra_env or {})}
        if max_jobs:
            env["VQDEMO_MAX_JOBS"] = str(max_jobs)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the server log lives as long as the server
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
             "--server.address", "127.0.0.1", "--server.port", str(self.port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not come up")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(20)


@dataclass
class Tab:
    """One browser tab: a websocket session, its URL query string, what the last run drew."""

    index: int
    port: int
    query: dict[str, str] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)       # url pathname -> page_script_hash
    page_hash: str = ""
    buttons: dict[str, str] = field(default_factory=dict)     # widget key suffix -> widget id
    selectboxes: dict[str, list[str]] = field(default_factory=dict)
    fragments: dict[str, float] = field(default_factory=dict)  # live fragments' ids -> the interval the server asked
    times: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    turnaround: float | None = None                           # Start pressed -> its run ended (queue + training)
    clicked_at: float | None = None                           # time.time() when Start was pressed
    place: int | None = None                                  # its place in the class queue, as the page showed it
    refused: str = ""                                         # why Start was refused, as the page said it
    run: Path | None = None                                   # its run folder, once found
    unfinished: str = ""
    secret: str = field(default_factory=identity.new_secret)  # this browser's cookie: one student per session
    ws: object = None

    @property
    def me(self) -> str:
        return identity.public_id(self.secret)

    def connect(self, timeout: float) -> None:
        self._conn = connect(f"ws://127.0.0.1:{self.port}/_stcore/stream", subprotocols=["streamlit"],
                             max_size=None, open_timeout=min(60.0, timeout), ping_interval=None,   # as browsers
                             additional_headers={"Cookie": f"{identity.COOKIE}={self.secret}"})
        self.ws = self._conn.__enter__()

    def close(self) -> None:
        if self.ws is not None:
            self._conn.__exit__(None, None, None)

    def rerun(self, name: str, timeout: float, widgets: list | None = None, fragment: str = "") -> None:
        """Send what a browser sends for a page load, a click or a fragment tick; wait for the run to finish."""
        msg = BackMsg()
        rs = msg.rerun_script
        rs.query_string = urlencode(self.query)
        rs.page_script_hash = self.page_hash
        if fragment:
            rs.fragment_id, rs.is_auto_rerun = fragment, True
        for w in widgets or []:
            rs.widget_states.widgets.append(w)
        if not fragment:
            self.buttons, self.selectboxes, self.alerts, self.infos, self.fragments = {}, {}, [], [], {}
        start = time.perf_counter()
        self.ws.send(msg.SerializeToString())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{name}: no answer in {timeout:.0f} s")
            fwd = ForwardMsg.FromString(self.ws.recv(timeout=left))
            kind = fwd.WhichOneof("type")
            if kind == "delta":
                self._element(fwd)
            elif kind == "navigation":
                self.pages = {p.url_pathname or p.page_name: p.page_script_hash for p in fwd.navigation.app_pages}
                self.page_hash = self.page_hash or fwd.navigation.page_script_hash
            elif kind == "page_info_changed":
                self.query = {k: v[-1] for k, v in parse_qs(fwd.page_info_changed.query_string).items()}
            elif kind == "auto_rerun":
                self.fragments[fwd.auto_rerun.fragment_id] = fwd.auto_rerun.interval
            elif kind == "script_finished" and fwd.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                break
        self.times.setdefault(name, []).append(time.perf_counter() - start)

    def _element(self, fwd: ForwardMsg) -> None:
        delta = fwd.delta
        if delta.WhichOneof("type") != "new_element":
            return
        el = delta.new_element
        kind = el.WhichOneof("type")
        if kind == "exception":
            self.errors.append(f"{el.exception.type}: {el.exception.message[:200]}")
        elif kind == "alert" and el.alert.format == Alert.ERROR:
            self.alerts.append(el.alert.body[:200])
        elif kind == "alert" and el.alert.format == Alert.INFO:
            self.infos.append(el.alert.body[:300])
        elif kind == "button":
            self.buttons[el.button.id.rsplit("-", 1)[-1]] = el.button.id
        elif kind == "selectbox":
            self.selectboxes[el.selectbox.id.rsplit("-", 1)[-1]] = list(el.selectbox.options)

    def open(self, page: str, timeout: float) -> None:
        self.page_hash = self.pages.get(page, self.page_hash)
        self.rerun(page, timeout)

    def click(self, key: str, name: str, timeout: float) -> None:
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        if key not in self.buttons:
            raise KeyError(f"no button {key!r} on the page (buttons: {sorted(self.buttons)})")
        w = WidgetState(id=self.buttons[key], trigger_value=True)
        self.rerun(name, timeout, widgets=[w])


def my_runs(runs_dir: Path, me: str) -> list[Path]:
    out = []
    for d in runs_dir.iterdir() if runs_dir.is_dir() else []:
        try:
            if json.loads((d / "job.json").read_text()).get("owner") == me:
                out.append(d)
        except (OSError, ValueError):
            continue
    return out


def state_of(run: Path) -> str:
    try:
        return json.loads((run / "status.json").read_text()).get("state", "")
    except (OSError, ValueError):
        return ""


PLACE = re.compile(r"class queue at place (\d+)")


def student(tab: Tab, runs_dir: Path, seconds: int, deadline: float, arrive: float,
            pages: list[str] = PAGES) -> None:
    """Arrive at `arrive` (monotonic), every page once, Start a run of `seconds`, then watch it as the browser does
    until it ends."""
    def left() -> float:
        if time.monotonic() >= deadline:
            raise TimeoutError("the bench's deadline came first")
        return deadline - time.monotonic()

    try:
        time.sleep(max(0.0, min(arrive - time.monotonic(), left())))
        tab.connect(left())
        tab.rerun("first load", left())
        for page in [*pages, "train"] if "train" not in pages else pages:
            if page == "train":
                tab.query.update(data="digits", budget="seconds", secs=str(seconds), batch="16")
            tab.open(page, left())
        tab.clicked_at = time.time()
        tab.click("tr_start", "start training", left())
        if tab.alerts:
            tab.refused = " ".join(tab.alerts)
            return
        places = [int(m.group(1)) for i in tab.infos if (m := PLACE.search(i))]
        tab.place = places[0] if places else None
        me = tab.me
        clicked = time.monotonic()
        due = {f: clicked + every for f, every in tab.fragments.items()}
        while True:   # as the browser does: each live fragment, its interval after its last answer
            tab.run = tab.run or next(iter(my_runs(runs_dir, me)), None)   # found once: no scan of every folder
            if tab.run is not None and state_of(tab.run) in FINAL:
                break
            if not tab.fragments:
                time.sleep(1.0)
                tab.rerun("train page reload", left())
                due = {f: time.monotonic() + every for f, every in tab.fragments.items()}
                continue
            frag = min(due, key=due.get)
            time.sleep(max(0.0, min(due[frag] - time.monotonic(), left())))
            tab.rerun("live panel tick", left(), fragment=frag)
            due[frag] = time.monotonic() + tab.fragments.get(frag, 1.0)
        tab.turnaround = time.monotonic() - clicked
        tab.rerun("train page reload", left())   # the finished run, drawn once more
    except TimeoutError as e:
        tab.unfinished = str(e)
    except Exception as e:  # noqa: BLE001 - a session's failure is a figure, not the end of the bench
        tab.errors.append(f"{type(e).__name__}: {e}")


def check_files(tabs: list[Tab], runs_dir: Path) -> list[str]:
    """Each student has exactly one run folder; its config, job and status files name that student and run, and
    the Train page listed that run and no other."""
    problems = []
    for tab in tabs:
        me = tab.me
        mine = my_runs(runs_dir, me)
        if tab.refused and not mine:
            continue   # refused at Start: no folder is right (counted as refused)
        if len(mine) != 1:
            problems.append(f"session {tab.index} ({me}): {len(mine)} run folders")
            continue
        if tab.unfinished:
            continue   # its page was not drawn after the run ended
        run = mine[0]
        meta = json.loads((run / "config.json").read_text())
        if (meta.get("owner"), meta.get("job")) != (me, run.name):
            problems.append(f"{run.name}: config says owner {meta.get('owner')} job {meta.get('job')}, expected {me}")
        listed = tab.selectboxes.get("tr_job")   # "Your run": titles of this student's runs
        if listed is None or len(listed) != 1:
            problems.append(f"session {tab.index}: its Train page lists {listed} as its runs, expected one")
    owners = [json.loads((d / "job.json").read_text()).get("owner")
              for d in runs_dir.iterdir() if (d / "job.json").is_file()]
    if len(owners) != len(set(owners)):
        problems.append("two run folders claim the same student")
    return problems


def check_sessions(sessions: int) -> None:
    if not 1 <= sessions <= MAX_SESSIONS:
        raise ValueError(f"sessions must be in [1, {MAX_SESSIONS}]")


def run_load(sessions: int = 30, seconds: int = 20, timeout_s: float = 900.0, runs_dir: Path | None = None,
             max_jobs: int | None = None, pages: list[str] = PAGES, extra_env: dict[str, str] | None = None,
             ramp_s: float = 0.0, server_prefix: list[str] | None = None, cluster_cpus: int | None = None) -> dict:
    """Start a server, drive `sessions` students arriving over `ramp_s` seconds, stop the server; returns the
    figures. `cluster_cpus`: the Ray cluster's, which the queue's limit follows unless `max_jobs` is given."""
    check_sessions(sessions)
    runs_dir = Path(runs_dir or tempfile.mkdtemp(prefix="vqdemo-load-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    server = Server(runs_dir, max_jobs, extra_env, server_prefix)
    try:
        server.wait_ready()
        rss_idle = rss_mb(server.proc.pid)
        cpu_start = cpu_seconds(server.proc.pid)
        peak = {"running": 0, "rss": rss_idle}
        began: dict[str, float] = {}    # run folder -> time.time() it was first seen training (or already ended)
        stop = threading.Event()

        def monitor() -> None:   # four times a second, reading only the runs that have not ended
            ended: set[str] = set()
            while not stop.is_set():
                running = 0
                for d in runs_dir.iterdir():
                    if d.name in ended or not d.is_dir():
                        continue
                    state = state_of(d)
                    if state in ("running", "paused") or state in FINAL:
                        began.setdefault(d.name, time.time())
                    running += state in ("running", "paused")
                    if state in FINAL:
                        ended.add(d.name)
                peak["running"] = max(peak["running"], running)
                peak["rss"] = max(peak["rss"], rss_mb(server.proc.pid))
                stop.wait(0.25)

        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        started = time.monotonic()
        client_cpu = resource.getrusage(resource.RUSAGE_SELF)
        deadline = started + timeout_s
        tabs = [Tab(i, server.port) for i in range(sessions)]
        arrive = [started + ramp_s * i / sessions for i in range(sessions)]
        threads = [threading.Thread(target=student, args=(t, runs_dir, seconds, deadline, at, pages), daemon=True,
                                    name=f"student-{t.index}") for t, at in zip(tabs, arrive, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 10)
        wall = time.monotonic() - started
        server_cpu = cpu_seconds(server.proc.pid) - cpu_start
        used = resource.getrusage(resource.RUSAGE_SELF)
        clients_cpu = used.ru_utime + used.ru_stime - client_cpu.ru_utime - client_cpu.ru_stime
        stop.set()
        watcher.join()
        for tab in tabs:
            tab.close()
        limit = (int(os.environ.get("VQDEMO_MAX_JOBS") or max_jobs or 0) or cluster_cpus
                 or max(1, len(os.sched_getaffinity(0)) // 2))
        times = {name: [x for t in tabs for x in t.times.get(name, [])] for name in
                 ("first load", *PAGES, "start training", "live panel tick", "train page reload")}
        every = [x for v in times.values() for x in v]
        states = [state_of(d) for d in runs_dir.iterdir() if (d / "job.json").is_file()]
        refused = [t.refused for t in tabs if t.refused]
        waited = [t for t in tabs if t.place]
        waits = [began[t.run.name] - t.clicked_at for t in waited if t.run is not None and t.run.name in began]
        return {
            "sessions": sessions,
            "max_running": limit,
            "peak_running": peak["running"],
            "runs": len(states),
            "done": states.count("done"),
            "rss_idle_mb": round(rss_idle),
            "peak_rss_mb": round(peak["rss"]),
            "responses": len(every),
            "slowest_response_s": round(max(every), 2) if every else None,
            "median_response_s": round(statistics.median(every), 2) if every else None,
            "p95_response_s": round(statistics.quantiles(every, n=20)[-1], 2) if len(every) > 1 else None,
            "server_cores": round(server_cpu / wall, 2),
            "server_ms_per_response": round(1000 * server_cpu / len(every)) if every else None,
            "slowest_by_kind_s": {k: round(max(v), 2) for k, v in times.items() if v},
            "median_by_kind_s": {k: round(statistics.median(v), 2) for k, v in times.items() if v},
            "wall_s": round(wall, 1),
            "turnaround_s": sorted(round(t.turnaround, 1) for t in tabs if t.turnaround is not None),
            "unfinished": sum(bool(t.unfinished) for t in tabs),
            "errors": [f"session {t.index}: {e}" for t in tabs for e in t.errors],
            "refused": len(refused),
            "refusals": sorted({re.sub(r"\d+", "N", r) for r in refused}),
            "waited": len(waited),
            "most_waiting_place": max((t.place for t in waited), default=0),
            "wait_median_s": round(statistics.median(waits), 1) if waits else None,
            "wait_max_s": round(max(waits), 1) if waits else None,
            "started_training": len(began),
            "clients_cores": round(clients_cpu / wall, 2),
            "clients_threads": sessions,
            "ramp_s": ramp_s,
            "server_cores_allowed": cores_of(server.proc.pid),
            "clients_cores_allowed": cores_of(os.getpid()),
            "file_problems": check_files(tabs, runs_dir),
            "server_alive": server.proc.poll() is None,
            "runs_dir": str(runs_dir),
        }
    finally:
        server.stop()


def pinned_cluster(ray_cpus: int):
    """The cores for each side: the web server gets the first core this process may use, the Ray head, its
    worker node and the students the rest. Raises SystemExit when that cannot be done honestly."""
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        raise SystemExit("--backend ray needs taskset (Debian: apt-get install util-linux) to pin each side")
    if len(cores) < 2:
        raise SystemExit("--backend ray needs two cores: one for the web server, one for the Ray worker node")
    return [cores[0]], cores[1:]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=30, help=f"students, 1 to {MAX_SESSIONS}")
    p.add_argument("--seconds", type=int, default=20, help="each student's training budget (batch 16, digits)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before the bench gives up")
    p.add_argument("--ramp", type=float, default=0.0, help="students arrive one after another over this many seconds")
    p.add_argument("--max-jobs", type=int, help="VQDEMO_MAX_JOBS for the server (default: half the cores; with "
                   "--backend ray: the queue follows the cluster's CPUs)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="ray: a Ray head without CPUs and one worker node on 127.0.0.1, the web server on its own core")
    p.add_argument("--ray-cpus", type=int, default=1, help="CPUs the Ray worker node offers (--backend ray)")
    a = p.parse_args(argv)
    try:
        check_sessions(a.sessions)
    except ValueError as e:
        p.error(str(e))   # before anything starts
    if not (0 <= a.ramp <= a.timeout and a.seconds >= 1 and a.timeout > 0 and 1 <= a.ray_cpus <= 64):
        p.error("need 0 <= --ramp <= --timeout, --seconds >= 1, --timeout > 0 and --ray-cpus in [1, 64]")
    # a `timeout` or Ctrl-C ends the bench through its finally blocks: the server and the Ray processes it started stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"load average before: {load_average()}", flush=True)
    if a.backend == "ray":
        web, rest = pinned_cluster(a.ray_cpus)
        from vqdemo.jobs.ray_head import start_head, start_node, wait_nodes

        others = ["taskset", "-c", ",".join(map(str, rest))]
        os.sched_setaffinity(0, rest)   # the students are browsers elsewhere: never on the web server's core
        head = start_head(num_cpus=0, prefix=others)
        try:
            node = start_node(head, a.ray_cpus, prefix=others)
            try:
                wait_nodes(head, [node])
                print(f"ray cluster:       head (0 CPUs) and one worker node ({a.ray_cpus} CPUs) on 127.0.0.1, token "
                      f"authentication on; head on cores {cores_of(head.proc.pid)}, worker node on cores "
                      f"{cores_of(node.proc.pid)}", flush=True)
                f = run_load(a.sessions, a.seconds, a.timeout, max_jobs=a.max_jobs, ramp_s=a.ramp,
                             extra_env={**head.env, "VQDEMO_BACKEND": "ray"}, cluster_cpus=a.ray_cpus,
                             server_prefix=["taskset", "-c", ",".join(map(str, web))])
            finally:
                node.stop()
        finally:
            head.stop()
    else:
        f = run_load(a.sessions, a.seconds, a.timeout, max_jobs=a.max_jobs, ramp_s=a.ramp)
    report(f, a)


def report(f: dict, a: argparse.Namespace) -> None:
    print(f"sessions:          {f['sessions']} websocket clients on one `streamlit run` (127.0.0.1), "
          f"{os.cpu_count()} CPU cores on the machine")
    print(f"clients:           {f['clients_threads']} threads of this one process, arriving over {f['ramp_s']:g} s, on "
          f"cores {f['clients_cores_allowed']}; they used {f['clients_cores']} cores on average")
    print(f"web server:        on cores {f['server_cores_allowed']}")
    print(f"runs:              {f['runs']} started, {f['done']} done ({a.seconds} s budget each, backend {a.backend})")
    print(f"concurrent jobs:   peak {f['peak_running']} training at once (limit {f['max_running']})")
    print(f"server memory:     {f['rss_idle_mb']} MB idle, peak {f['peak_rss_mb']} MB RSS")
    print(f"server CPU:        {f['server_cores']} cores on average (the web process alone; jobs run in workers), "
          f"{f['server_ms_per_response']} ms per response on average (page loads, clicks and live ticks together)")
    print(f"page responses:    {f['responses']}; median {f['median_response_s']} s, 95th percentile "
          f"{f['p95_response_s']} s, slowest {f['slowest_response_s']} s")
    print("slowest by kind:   " + ", ".join(f"{k} {v} s" for k, v in f["slowest_by_kind_s"].items()))
    print("median by kind:    " + ", ".join(f"{k} {v} s" for k, v in f["median_by_kind_s"].items()))
    turn = f["turnaround_s"]
    if turn:
        print(f"Start -> run ended: fastest {turn[0]} s, median {statistics.median(turn)} s, slowest {turn[-1]} s "
              f"({f['unfinished']} sessions still waiting at the deadline)")
    print(f"wall time:         {f['wall_s']} s; server still up: {f['server_alive']}")
    own = "each run folder is its own student's, and only theirs"
    print(f"run files:         {f['file_problems'] or own}")
    print(f"refused:           {f['refused']} students" + (f"; messages: {f['refusals']}" if f["refusals"] else ""))
    print(f"waited:            {f['waited']} students shown a place in the class queue (up to place "
          f"{f['most_waiting_place']}); Start -> training began: median {f['wait_median_s']} s, max "
          f"{f['wait_max_s']} s; {f['started_training']} runs began training")
    print(f"session errors:    {f['errors'] or 'none'}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
