"""A small class at once against a real `streamlit run` on 127.0.0.1 (bench/load_test.py with 6 students): the
queue holds its limit, every page answers, memory stays bounded, each run's files are its student's own.
The 30-student figures come from `python bench/load_test.py`."""

import pytest

from bench import load_test
from bench.load_test import run_load

SESSIONS, MAX_JOBS = 6, 3


@pytest.mark.slow
@pytest.mark.integration
def test_six_students_at_once(tmp_path):
    f = run_load(SESSIONS, seconds=5, timeout_s=300, runs_dir=tmp_path / "runs", max_jobs=MAX_JOBS,
                 pages=["learn", "codebook", "train"])
    assert f["server_alive"]
    assert f["errors"] == [] and f["unfinished"] == 0
    assert f["runs"] == SESSIONS and f["done"] == SESSIONS
    assert f["max_running"] == MAX_JOBS and 1 <= f["peak_running"] <= MAX_JOBS
    assert f["file_problems"] == []
    assert f["responses"] >= SESSIONS * 6          # first load, 3 pages, Start, the finished run
    assert f["peak_rss_mb"] < 3000, f"the server grew to {f['peak_rss_mb']} MB"
    assert f["server_cores"] < 1.0, "the web process itself must leave training to the workers"


@pytest.mark.parametrize("sessions", ["0", "301"])
def test_the_bench_refuses_a_class_past_its_bound_before_starting_anything(sessions, monkeypatch, capsys):
    def started(*args, **kwargs):
        raise AssertionError("the bench started a server for a class it should refuse")

    monkeypatch.setattr(load_test, "Server", started)
    monkeypatch.setattr(load_test, "run_load", started)
    with pytest.raises(SystemExit) as stop:
        load_test.main(["--sessions", sessions, "--backend", "ray"])
    assert stop.value.code == 2 and "sessions must be in [1, 300]" in capsys.readouterr().err
