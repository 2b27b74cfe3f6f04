"""Steps per second of a run started through the app's job API against the same run from the CLI.

Same settings as the Train page's default (MNIST, VQ-VAE K=64, batch 64), same thread count, same budget, back to
back on one machine: the CLI (`python -m vqdemo train`, its own process) and a job of `vqdemo.jobs.JobQueue` (the
app's path: a worker process, events and checkpoints sent back to this process, which writes the run folder). Then
both again while a hog keeps every core busy. Training steps per second come from each run's own files.

    python bench/train_speed.py [--seconds 15] [--threads 2] [--backend local|ray]

Each figure is the mean of two runs, interleaved CLI, job, job, CLI.

Targets (the class issue): job API / CLI >= 0.9 on a quiet machine, >= 0.7 with every core busy.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqdemo import runtime  # noqa: E402

runtime.configure()

from vqdemo import runs  # noqa: E402
from vqdemo.data import DataConfig, load_data  # noqa: E402
from vqdemo.fit import default_model_config  # noqa: E402
from vqdemo.jobs import FINISHED, JobQueue, make_backend  # noqa: E402
from vqdemo.trainer import TrainConfig  # noqa: E402

TARGETS = {"quiet": 0.9, "busy": 0.7}


def steps_per_second(run: Path) -> float:
    """Steps over training seconds, from the run's last logged training row (pauses and start-up not counted)."""
    rows = [r for r in runs.read_metrics(run) if r.get("type") == "train"]
    last = rows[-1]
    return last["step"] / last["time"]


def cli_run(out: Path, seconds: float, threads: int) -> float:
    subprocess.run([sys.executable, "-m", "vqdemo", "train", "--dataset", "mnist", "--model", "vq", "--k", "64",
                    "--seconds", str(seconds), "--threads", str(threads), "--out", str(out)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return steps_per_second(out)


def job_run(queue: JobQueue, seconds: float) -> float:
    data_cfg = DataConfig(name="mnist")
    model_cfg = default_model_config(load_data(data_cfg), "vq")
    train_cfg = TrainConfig(seconds=seconds, val_every=250, log_every=10, snapshot_every=50)
    job = queue.submit("bench", "bench K=64", model_cfg, data_cfg, train_cfg)
    while job.state not in FINISHED:
        time.sleep(0.2)
    assert job.state == "done", job.view().reason
    return steps_per_second(job.run_dir)


def _spin() -> None:
    while True:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vqdemo-speed-"))
    queue = JobQueue(1, root / "jobs", threads=a.threads, backend=make_backend(a.backend))
    time.sleep(5)   # let the warm worker load torch, as it has long done on a server that has been up a while
    results = {}
    for load in ("quiet", "busy"):
        hogs = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(runtime_cores())] \
            if load == "busy" else []
        for h in hogs:
            h.start()
        try:   # interleaved (CLI, job, job, CLI) so a drift in the machine's load hits both alike
            cli = [cli_run(root / f"cli-{load}-0", a.seconds, a.threads)]
            job = [job_run(queue, a.seconds), job_run(queue, a.seconds)]
            cli.append(cli_run(root / f"cli-{load}-1", a.seconds, a.threads))
        finally:
            for h in hogs:
                h.kill()
        results[load] = (sum(cli) / 2, sum(job) / 2)
    queue.close()
    print(f"\nMNIST VQ-VAE K=64 (the Train page's default), {a.seconds:.0f} s each, {a.threads} threads, "
          f"job backend {a.backend}, {runtime_cores()} cores\n")
    print(f"{'machine':<8} {'CLI steps/s':>12} {'job steps/s':>12} {'ratio':>7} {'target':>7}")
    for load, (cli, job) in results.items():
        ratio = job / cli
        verdict = "met" if ratio >= TARGETS[load] else "NOT met"
        print(f"{load:<8} {cli:>12.1f} {job:>12.1f} {ratio:>7.2f} {'>= ' + str(TARGETS[load]):>7}  {verdict}")


def runtime_cores() -> int:
    from vqdemo.jobs import cpu_count

    return cpu_count()


if __name__ == "__main__":
    main()
