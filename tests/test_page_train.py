"""The Train page under AppTest: controls, URL state, Start -> a job in the shared queue, page buttons -> job
controls, clear messages for bad input. AppTest does not drive the 1 s live fragment; tests/test_jobs.py
covers the job machinery itself and tests/browser/test_train_browser.py the live panel in Chromium.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from helpers import open_page, secret_of, student_of, wait_for
from ui.jobs import job_queue
from vqdemo import files, runs
from vqdemo.app_limits import KS
from vqdemo.jobs import FINISHED, JobError
from vqdemo.train_settings import LRS
from vqdemo.trainer import TrainConfig

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT_S = 120


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(tmp_path / "runs"))
    yield tmp_path / "runs"
    for job in job_queue().list_jobs():  # the queue this folder got; leave no trainer running
        job.stop()
    deadline = time.monotonic() + TIMEOUT_S
    while any(j.state not in FINISHED for j in job_queue().list_jobs()) and time.monotonic() < deadline:
        time.sleep(0.05)


def open_train(query: dict | None = None) -> AppTest:
    return open_page("train", query)


def keys(at: AppTest) -> set[str]:
    return {w.key for kind in ("selectbox", "radio", "select_slider", "slider", "button", "toggle", "number_input",
                               "text_input", "multiselect") for w in getattr(at, kind) if w.key}


def start_small(at: AppTest, steps: int) -> AppTest:
    at.selectbox(key="tr_data").set_value("digits")
    at.radio(key="tr_budget").set_value("steps").run()
    at.number_input(key="tr_steps").set_value(steps)
    at.select_slider(key="tr_batch").set_value(16)
    return at.button(key="tr_start").click().run()


def test_renders_its_controls_and_a_default_view(runs_dir):
    at = open_train()
    assert at.title[0].value == "Train" and not at.error
    assert {"tr_preset", "tr_data", "tr_kind", "tr_arch", "tr_down", "tr_k", "tr_d", "tr_beta", "tr_lr", "tr_batch",
            "tr_budget", "tr_secs", "tr_cb", "tr_init", "tr_restart", "tr_cosine", "tr_ste", "tr_start"} <= keys(at)
    assert any("Nothing of yours is training" in i.value for i in at.info)
    assert len(student_of(at)) == 12
    assert "7×7 grid of 16-vectors" in " ".join(c.value for c in at.caption)


def test_start_queues_a_job_with_its_own_folder_and_shows_it(runs_dir):
    at = start_small(open_train(), steps=20)
    assert not at.exception and not at.error
    me = student_of(at)
    [job] = job_queue().list_jobs(me)
    view = job.view()
    assert (view.data_cfg.name, view.train_cfg.steps, view.train_cfg.batch_size, view.kind) == ("digits", 20, 16, "vq")
    assert job.run_dir.parent == runs_dir
    assert at.selectbox(key="tr_job").value == job.id
    assert [m.label for m in at.metric][:2] == ["Step", "Val PSNR"]
    assert (at.query_params["data"], at.query_params["budget"], at.query_params["steps"]) == ("digits", "steps", "20")
    wait_for(lambda: job.state in FINISHED, "the run to finish", TIMEOUT_S)
    at.run()
    assert job.state == "done" and runs.read_json(job.run_dir / "config.json")["owner"] == me
    assert f"{20:,}" in [m.value for m in at.metric]
    assert any(r.id == job.id and r.has_weights for r in runs.list_runs(runs_dir))
    usage = next(c.value for c in at.caption if "running usage" in c.value)   # from the run's own quantizer
    assert "below 0.5, the quantizer's own test" in usage and "Restarts are on: so far" in usage


def test_pause_and_stop_buttons_control_the_job(runs_dir):
    at = start_small(open_train(), steps=100_000)
    [job] = job_queue().list_jobs(student_of(at))
    wait_for(lambda: job.step_count >= 1, "training to start", TIMEOUT_S)
    at.run()
    at.button(key="tr_pause").click().run()
    assert job.state == "paused"
    assert at.button(key="tr_play") is not None and not at.exception
    at.button(key="tr_stop").click().run()
    wait_for(lambda: job.state == "stopped", "the stop", TIMEOUT_S)


def test_a_link_with_the_students_secret_finds_the_same_runs_and_leaves_the_url(runs_dir):
    first = start_small(open_train(), steps=5)
    me = student_of(first)
    [job] = job_queue().list_jobs(me)
    assert "me" not in first.query_params   # nothing about the student in the address bar (or on a projector)
    again = open_train({"me": secret_of(first), "data": "digits"})
    assert student_of(again) == me and again.selectbox(key="tr_job").value == job.id
    assert "me" not in again.query_params
    stranger = open_train()
    assert student_of(stranger) != me and "tr_job" not in keys(stranger)


def test_an_id_seen_on_a_screen_controls_nothing(runs_dir):
    """The public id (shown in tables, stored in run folders) in a link is not the student: no runs, no control."""
    first = start_small(open_train(), steps=100_000)
    me = student_of(first)
    [job] = job_queue().list_jobs(me)
    spy = open_train({"me": me})
    assert student_of(spy) != me and "tr_job" not in keys(spy)
    with pytest.raises(JobError, match="not yours"):
        job.check_control(student_of(spy))
    job.check_control(me)
    job.stop()


@pytest.mark.parametrize("recipe", ["far", "healthy"])
def test_live_sliders_send_nothing_unless_a_person_moves_them(runs_dir, recipe):
    """Issue 17, item 1: a run started with K = 64, beta = 0.25 trained with K = 2, beta = 0, lr = 1e-4 (each live
    slider's lowest value) although nobody touched them. A slider the browser draws anew reports the value it was
    created with; the sliders used to be created at their lowest stop and only moved to the run's value by session
    state, so a re-created slider sent its lowest value as a change. Here each live slider reports the value its
    element was created with, as a re-created one does, over many reruns: no change may reach the run."""
    at = open_train({"preset": recipe} if recipe != "healthy" else None)
    if recipe == "far":
        at.radio(key="tr_preset").set_value("far").run()
    at = start_small(at, steps=100_000)
    [job] = job_queue().list_jobs(student_of(at))
    submitted = job.view().knobs
    for _ in range(6):
        at.run()
        live = [w for kind in ("slider", "select_slider") for w in getattr(at, kind) if "tr_live_" in (w.key or "")]
        assert {w.label for w in live} >= {"beta (live)", "learning rate (live)", "K (live)"}
        for w in live:   # the value each element was created with: a stop's index for a select slider
            stops = {"learning rate (live)": LRS, "K (live)": KS}.get(w.label)
            w.set_value(stops[int(w.proto.default[0])] if stops else w.proto.default[0])
        at.run()
        assert not at.exception
    view = job.view()
    assert view.knobs == submitted and not view.pending and not view.changes
    wait_for(lambda: (job.run_dir / "config.json").is_file(), "the run's config", TIMEOUT_S)
    assert runs.read_json(job.run_dir / "config.json")["model"]["vq"]["k"] == submitted["k"]
    job.stop()


def test_a_person_moving_a_live_slider_changes_the_run_once(runs_dir):
    at = start_small(open_train(), steps=100_000)
    [job] = job_queue().list_jobs(student_of(at))
    beta = next(w for w in at.slider if (w.key or "").startswith("tr_live_beta_"))
    beta.set_value(0.5).run()
    view = job.view()
    assert {**view.knobs, **view.pending}["beta"] == 0.5
    wait_for(lambda: job.view().changes, "the change to be applied", TIMEOUT_S)
    assert [c.get("beta") for c in job.view().changes] == [0.5]
    at.run()
    moved = next(w for w in at.slider if (w.key or "").startswith("tr_live_beta_"))
    assert moved.value == 0.5 and moved.key != beta.key   # drawn anew at the run's new value
    job.stop()


def test_the_far_init_preset_sets_the_collapsing_recipe(runs_dir):
    at = open_train()
    at.radio(key="tr_preset").set_value("far").run()
    assert (at.radio(key="tr_cb").value, at.radio(key="tr_init").value, at.toggle(key="tr_restart").value) == (
        "grad", "normal", False)
    assert (at.query_params["cb"], at.query_params["init"], at.query_params["restart"]) == ("grad", "normal", "0")
    assert "N(0,1) init" in at.text_input(key="tr_title").placeholder
    assert "seed" not in " ".join(at.radio(key="tr_preset").options).lower()
    at.radio(key="tr_preset").set_value("near").run()
    assert (at.radio(key="tr_cb").value, at.radio(key="tr_init").value, at.toggle(key="tr_restart").value) == (
        "grad", "uniform", False)
    at.radio(key="tr_preset").set_value("healthy").run()
    assert at.radio(key="tr_cb").value == "ema" and "cb" not in at.query_params


def test_the_model_kind_changes_the_controls(runs_dir):
    at = open_train()
    at.radio(key="tr_kind").set_value("rq").run()
    assert {"tr_depth", "tr_sizes", "tr_shared", "tr_norm", "tr_prog"} <= keys(at)
    at.radio(key="tr_kind").set_value("vae").run()
    assert "tr_k" not in keys(at) and "tr_beta" not in keys(at) and "tr_kl" in keys(at)
    assert "(no codebook)" in " ".join(c.value for c in at.caption)
    at.radio(key="tr_arch").set_value("patch").run()
    assert at.selectbox(key="tr_down").options == ["2", "4", "7", "8"]
    at.selectbox(key="tr_down").set_value(7).run()      # a patch size that a conv net refuses: the caption's grid
    assert not at.exception and "a 4×4 grid" in " ".join(c.value for c in at.caption)


def test_settings_come_from_the_url_and_junk_falls_back(runs_dir):
    at = open_train({"kind": "rq", "k": "8", "lr": "0.003", "beta": "9", "batch": "banana", "data": "../../etc"})
    assert not at.exception and not at.error
    assert (at.radio(key="tr_kind").value, at.select_slider(key="tr_k").value) == ("rq", 8)
    assert at.select_slider(key="tr_lr").value == 0.003
    assert at.slider(key="tr_beta").value == 2.0              # clamped to the slider's range
    assert at.select_slider(key="tr_batch").value == TrainConfig().batch_size  # junk -> default
    assert at.selectbox(key="tr_data").value == "mnist"


def test_an_uploaded_zip_trains_as_the_folder_dataset(runs_dir, tmp_path):
    zip_path = tmp_path / "mine.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        for i in range(12):
            buf = io.BytesIO()
            Image.new("RGB", (20, 20), (20 * i, 255 - 20 * i, 128)).save(buf, format="PNG")
            z.writestr(f"{'warm' if i % 2 else 'cool'}/{i}.png", buf.getvalue())
    at = open_train({"data": "folder", "budget": "steps", "steps": "5", "batch": "16"})
    assert len(at.get("file_uploader")) == 1
    stored = runs_dir / "uploads" / "mine.zip"   # where the page keeps an upload (AppTest cannot upload a file)
    files.atomic_write_bytes(stored, zip_path.read_bytes())
    at.session_state["tr_upload_path"] = str(stored)
    at.button(key="tr_start").click().run()
    assert not at.exception and not at.error
    [job] = job_queue().list_jobs(student_of(at))
    assert job.view().data_cfg.name == "folder" and Path(job.view().data_cfg.path) == job.run_dir / "data.zip"
    wait_for(lambda: job.state in FINISHED, "the run to finish", TIMEOUT_S)
    assert job.state == "done", job.view().reason


def test_bad_input_gets_a_message_not_a_traceback(runs_dir):
    at = open_train({"kind": "rq", "data": "digits"})
    at.text_input(key="tr_sizes").set_value("64,lots").run()
    at.button(key="tr_start").click().run()
    assert not at.exception
    assert any("K per depth" in e.value for e in at.error)
    at.text_input(key="tr_sizes").set_value("64,64").run()   # depth is 4
    at.button(key="tr_start").click().run()
    assert any("one codebook size per depth" in e.value for e in at.error)
    at.selectbox(key="tr_data").set_value("folder").run()
    at.button(key="tr_start").click().run()
    assert any("upload a .zip" in e.value.replace("\\", "") for e in at.error)   # shown as text: markdown-escaped
    assert job_queue().list_jobs() == []


def test_the_example_caption_reads_the_recorded_curve(runs_dir):
    at = open_train()
    rows = runs.read_metrics(Path(__file__).resolve().parents[1] / "checkpoints" / "mnist-vq")
    ppl = [r["perplexity"] for r in rows if r.get("type") == "val"]
    caption = next(c.value for c in at.caption if c.value.startswith("Left: the training loss"))
    word = "rises" if ppl[-1] > ppl[0] * 1.05 else "falls" if ppl[-1] < ppl[0] / 1.05 else "stays level"
    assert f"perplexity {word}, from {ppl[0]:.1f}" in caption and "climbs towards K" not in caption


def test_fsq_is_a_model_kind_with_its_levels_and_no_codebook_options(runs_dir):
    at = open_train()
    at.radio(key="tr_kind").set_value("fsq").run()
    assert not at.exception
    assert at.selectbox(key="tr_levels").value == "8,6,5"
    assert "tr_k" not in keys(at) and "tr_beta" not in keys(at) and "tr_cb" not in keys(at)
    assert "FSQ levels 8,6,5" in at.text_input(key="tr_title").placeholder


def test_the_both_estimator_with_an_ema_codebook_is_warned_about(runs_dir):
    at = open_train({"ste": "both"})
    assert any("EMA codebook takes no gradient" in w.value for w in at.warning)


def test_an_early_perplexity_dip_is_named_for_what_it_turns_out_to_be():
    from vqdemo.analysis import perplexity_dip_note as dip_note

    def rows(values):
        return [{"type": "train", "step": s, "perplexity": p} for s, p in values]
    assert "healthy runs often do" in dip_note(rows([(1, 20.0), (10, 1.5), (40, 2.0)]), 64)
    assert "recovered to 40.0" in dip_note(rows([(1, 20.0), (10, 1.5), (300, 40.0)]), 64)
    assert "that is collapse" in dip_note(rows([(1, 20.0), (10, 1.5), (300, 2.5)]), 64)
    assert dip_note(rows([(1, 20.0), (10, 12.0), (300, 40.0)]), 64) == ""


def test_the_teacher_key_makes_the_teacher_and_leaves_the_url(runs_dir, monkeypatch):
    monkeypatch.setenv("VQDEMO_TEACHER_KEY", "a-key-for-this-test")
    student = open_train()
    assert not any("Start the collapse pair" in (b.label or "") for b in student.button)
    wrong = open_train({"teacher": "not-it"})
    assert "teacher" not in wrong.query_params
    assert [e.value for e in wrong.error if "not this server's teacher key" in e.value]
    teacher = open_train({"teacher": "a-key-for-this-test"})
    assert "teacher" not in teacher.query_params and not teacher.error
    teacher.button(key="tr_pair_start").click().run()
    pair = job_queue().demo()
    assert [j.teacher for j in pair] == [True, True] and {j.view().model_cfg.vq.init for j in pair} == {
        "normal", "kmeans"}
    assert {j.view().budget_steps for j in pair} == {500}
    for job in pair:
        with pytest.raises(JobError, match="not yours"):
            job.check_control(student_of(student))
        job.stop()
