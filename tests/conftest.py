"""Shared test settings: one torch thread (the suite shares 2 cores), runs in a temp folder, and jobs on the
in-process thread backend, so a test can monkeypatch what a job runs. The real worker processes and Ray are
tested on purpose (tests/test_jobs_process.py, tests/test_jobs_ray.py), and every server a test starts (browser
tests, the load test) runs the app's default backend."""

import pytest

from vqdemo import runtime

runtime.configure()  # first: OpenMP and malloc options before torch loads
import torch  # noqa: E402

torch.set_num_threads(1)

from thread_backend import ThreadBackend  # noqa: E402

from vqdemo.jobs import backends  # noqa: E402


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setitem(backends.BACKENDS, "thread", ThreadBackend)
    monkeypatch.setenv("VQDEMO_BACKEND", "thread")
