"""A lecture hall on one machine: a Ray cluster on 127.0.0.1 of a head with no CPUs (the web server's machine) and
two worker nodes of one CPU each, token authentication on, each node in a process session of its own. Jobs sent
through the app's queue train on the worker nodes, never on the head; their files come back to the app's runs
folder; killing one node (every process of its session, SIGKILL: a machine that dies) fails only the job it held,
with a reason a student can read, its last checkpoint kept and loadable, while the job on the other node finishes.
The queue runs as many jobs at once as the cluster has CPUs, and follows it down when the node goes.
Only the head and nodes started here are stopped. README, "A lecture hall", runs the same cluster by hand."""

from __future__ import annotations

import pytest

from helpers import wait_for
from tests.test_jobs import DATA, budget, tiny
from tests.test_ray_cluster import DEADLINE_S, finished, use_cluster
from vqdemo import runs
from vqdemo.jobs import JobQueue
from vqdemo.jobs.ray_backend import RayBackend
from vqdemo.jobs.ray_head import start_head, start_node, wait_nodes

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SURVIVOR_STEPS = 300   # the job on the node that stays: paused well before its end, resumed after the other node dies


def test_jobs_run_on_worker_nodes_and_a_lost_node_fails_only_its_own_job(tmp_path, monkeypatch):
    head = start_head(num_cpus=0)
    nodes = []
    try:
        nodes = [start_node(head, num_cpus=1), start_node(head, num_cpus=1)]
        wait_nodes(head, nodes, timeout_s=DEADLINE_S)
        use_cluster(monkeypatch, head.env)
        monkeypatch.delenv("VQDEMO_MAX_JOBS", raising=False)
        q = JobQueue(None, tmp_path / "runs", threads=1, backend=RayBackend())   # as many as the cluster has CPUs
        try:
            wait_for(lambda: q.max_running == 2, "the queue to learn the cluster's two CPUs", timeout=DEADLINE_S)
            placed = {}   # job -> the node that holds its actor: each job is sent once the last one is placed
            for title, steps in (("on the node that dies", 10**6), ("on the node that stays", SURVIVOR_STEPS)):
                job = q.submit("s", title, tiny(), DATA, budget(steps=steps))
                wait_for(lambda job=job: job.step_count >= 12 and (job.run_dir / runs.LAST).is_file(),
                         f"a checkpoint of the run {title!r}", timeout=DEADLINE_S, every=0.2)
                if steps == SURVIVOR_STEPS:
                    job.pause()   # so it cannot finish before the other node dies
                new = [n for n in nodes if n.actor_pids() and n not in placed.values()]
                assert len(new) == 1, [n.actor_pids() for n in nodes]
                placed[job] = new[0]
            assert not head.actor_pids()   # the head has no CPUs: nothing trains on the web server's machine
            (lost, dying), (kept, _) = placed.items()
            assert lost.state == "running"

            dying.kill()
            view = finished(lost)
            assert view.state == "failed", view.reason
            assert "machine running this run stopped" in view.reason and "checkpoint" in view.reason, view.reason
            runs.load_model(lost.run_dir, runs.LAST)   # kept, and it loads
            assert runs.read_json(lost.run_dir / runs.STATUS)["state"] == "failed"

            assert kept.state == "paused"   # untouched by the other node's death
            wait_for(lambda: q.max_running == 1, "the queue to follow the cluster down to one CPU", timeout=DEADLINE_S)
            kept.resume()
            view = finished(kept)
            assert view.state == "done", view.reason
            assert {r["step"] for r in runs.read_metrics(kept.run_dir) if r["type"] == "val"} >= {10, SURVIVOR_STEPS}
            runs.load_model(kept.run_dir)
        finally:
            q.close()
    finally:
        for node in nodes:
            node.stop()
        head.stop()
