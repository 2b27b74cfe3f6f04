"""The Class page and what it plots: one point per VQ / RQ run (live values win over the folder's), a summary
computed from the points, sweep cells (in turn for a teacher's pinned sweep, by hash otherwise, and never
moved by other visitors), and the page under AppTest. Also the small helpers of
ui/jobs.py that keep live panels cheap (thinned rows, titles that follow a live K)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from thread_backend import ThreadBackend

from ui.charts import thin
from vqdemo import classroom, files, jobs
from vqdemo.jobs import JobQueue, retitle

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def fake_run(root: Path, name: str, kind: str, k: int, beta: float, psnr: float | None, ppl: float | None,
             state: str = "done") -> Path:
    path = root / name
    model = {"kind": kind, "vq": {"k": k, "beta": beta}, "rq": {"codebook_sizes": [k, 8]}}
    files.write_json(path / "config.json", {"kind": kind, "title": f"run {name}", "owner": "o", "model": model})
    best = {"psnr": psnr, "perplexity": ppl} if psnr is not None else {}
    files.write_json(path / "status.json", {"state": state, "step": 100, "best": best})
    return path


def test_points_come_from_folders_and_live_views_win(tmp_path):
    fake_run(tmp_path, "a", "vq", 64, 0.25, 22.0, 32.0)
    fake_run(tmp_path, "b", "rq", 16, 1.0, 25.0, 4.0)
    fake_run(tmp_path, "c", "vae", 0, 0.0, 15.0, None)           # no codebook: not on the board
    fake_run(tmp_path, "d", "vq", 8, float("nan"), 10.0, 2.0)    # junk beta: skipped, not a crash
    live = classroom.RunPoint("a", "live a", "o", "vq", "running", 7, 128, 0.5, 12.0, None)
    points = {p.id: p for p in classroom.run_points(tmp_path, {"a": live})}
    assert set(points) == {"a", "b"}
    assert (points["a"].k, points["a"].beta, points["a"].state) == (128, 0.5, "running")
    assert (points["b"].k, points["b"].use) == (16, 0.25)
    text = classroom.summary(list(points.values()))
    assert "best so far is 25.0 dB at K = 16, beta = 1" in text
    assert classroom.summary([classroom.RunPoint("x", "x", "o", "vq", "queued", 0, 8, 0.25, None, None)]) is None


def test_a_pinned_sweep_hands_cells_out_in_turn_and_keeps_them_across_a_restart(tmp_path):
    q = JobQueue(1, tmp_path / "runs", backend=ThreadBackend())
    q.pin_sweep("s")
    cells = [q.sweep_cell("s", f"student{i}", 4) for i in range(6)]
    assert cells == [0, 1, 2, 3, 0, 1]
    assert q.sweep_cell("s", "student2", 4) == 2          # the same cell on every visit
    again = JobQueue(1, tmp_path / "runs", backend=ThreadBackend())   # a restarted server
    assert again.pinned("s") and again.sweep_cell("s", "student2", 4) == 2 and again.sweep_cell("s", "new", 4) == 2


def test_an_unpinned_sweep_cell_is_a_function_of_the_sweep_and_the_student_alone(tmp_path):
    q = JobQueue(1, tmp_path / "runs", backend=ThreadBackend())
    first = [q.sweep_cell("k-vs-beta", f"student{i}", 9) for i in range(9)]
    for i in range(2000):   # a flood of made-up students and other sweep names
        q.sweep_cell("k-vs-beta", f"fake{i}", 9)
        q.sweep_cell(f"other-{i}", "student0", 9)
    assert [q.sweep_cell("k-vs-beta", f"student{i}", 9) for i in range(9)] == first
    fresh = JobQueue(1, tmp_path / "other-runs", backend=ThreadBackend())
    assert [fresh.sweep_cell("k-vs-beta", f"student{i}", 9) for i in range(9)] == first


def test_no_visitor_moves_a_cell_of_a_pinned_sweep(tmp_path):
    """Hardening round 3, item 13: 64 other sweep names or 2,000 made-up ids moved 8 of 9 students' cells."""
    q = JobQueue(1, tmp_path / "runs", backend=ThreadBackend())
    q.pin_sweep("lesson")
    given = {f"student{i}": q.sweep_cell("lesson", f"student{i}", 9) for i in range(9)}
    assert sorted(given.values()) == list(range(9))   # nine students, nine different cells
    for i in range(jobs.MAX_SWEEP_OWNERS + 10):
        q.sweep_cell("lesson", f"fake{i}", 9)
    for i in range(100):
        q.sweep_cell(f"sweep-{i}", "student0", 9)
    assert {s: q.sweep_cell("lesson", s, 9) for s in given} == given
    assert len(q._sweeps.given["lesson"]) == jobs.MAX_SWEEP_OWNERS
    late = q.sweep_cell("lesson", "latecomer", 9)
    assert q.sweep_cell("lesson", "latecomer", 9) == late   # past the bound: by hash, still the same every visit


def test_pinned_sweeps_stay_bounded(tmp_path):
    q = JobQueue(1, tmp_path / "runs", backend=ThreadBackend())
    for i in range(jobs.MAX_PINNED_SWEEPS + 5):
        q.pin_sweep(f"sweep-{i}")
    assert len(q._sweeps.given) == jobs.MAX_PINNED_SWEEPS and not q.pinned("sweep-0")


def test_thin_keeps_the_ends_and_bounds_the_rows():
    rows = [{"step": i} for i in range(1, 2001)]
    out = thin(rows, 400)
    assert len(out) <= 401 and out[0]["step"] == 1 and out[-1]["step"] == 2000
    assert thin(rows[:10], 400) == rows[:10]


def test_a_live_change_retitles_the_run():
    assert retitle("VQ-VAE K=64 beta=0.25 on mnist", {"k": 128}) == "VQ-VAE K=128 beta=0.25 on mnist"
    assert retitle("VQ-VAE K=64 beta=0.25 on mnist", {"beta": 0.5, "lr": 1e-3}) == "VQ-VAE K=64 beta=0.5 on mnist"
    assert retitle("my run", {"k": 16}) == "my run (K=16)"


@pytest.mark.integration
def test_class_page_plots_the_runs_and_offers_a_sweep_link(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    fake_run(root, "20260101-000000-aaaaaa", "vq", 64, 0.25, 22.0, 32.0)
    fake_run(root, "20260101-000001-bbbbbb", "vq", 256, 1.0, 24.0, 100.0)
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    monkeypatch.setenv("VQDEMO_BACKEND", "thread")
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/classroom.py").run()
    assert not at.exception
    assert at.title[0].value == "Class"
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    assert any("best so far is 24.0 dB at K = 256" in m.value for m in at.markdown)
    assert any("sweep=k-vs-beta" in c.value and "ks=16%2C64%2C256" in c.value for c in at.code)


