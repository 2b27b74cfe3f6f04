"""Playground frame rate and server cost: `python bench/playground_fps.py` (targets: >= 10 frames/s in the
browser with 2,000 points and K = 64; a small server cost per frame, so a class of 30 can open the page).

1. Server: time to train and record the default run (2,000 points, K = 64, 400 steps, 101 frames) on one
   thread, per frame; the packed payload per frame; what a page that trained inside a fragment, tick by tick,
   would spend per optimizer step.
2. Browser: starts `streamlit run app.py`, opens the Playground in headless Chromium and counts the frames
   the canvas draws per second while it plays (data-drawn of the player), and the drawing time per frame.

Prints one line per figure; `--no-browser` skips part 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from load_test import free_port  # noqa: E402 - bench's one free-port helper

from vqdemo import playground as pg  # noqa: E402


def server_side(repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    cfg = pg.PlaygroundConfig(n=2000, k=64, steps=400, every=4)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = pg.run(cfg)
        packed = pg.pack(frames)
        times.append(time.perf_counter() - start)
    best = min(times)
    size = len(json.dumps(packed))
    model = pg.ToyAutoencoder(cfg)
    x = pg.toy_data(cfg.data, cfg.n)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = time.perf_counter()
    for _ in range(200):
        loss, *_ = model(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step_ms = (time.perf_counter() - start) / 200 * 1000
    return {"run_s": best, "frames": len(frames.step), "ms_per_frame": best / len(frames.step) * 1000,
            "payload_kb": size / 1024, "payload_kb_per_frame": size / 1024 / len(frames.step), "step_ms": step_ms}


def browser_side(seconds: float = 4.0) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "VQDEMO_RUNS_DIR": "/tmp/vqdemo-bench-runs"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/playground?steps=800")
            page.wait_for_selector("[data-testid=playground][data-state=playing]", timeout=120_000)
            page.select_option(".pg-speed", "30")       # ask for more than the target: what can it draw?
            root = page.locator("[data-testid=playground]")
            page.wait_for_timeout(500)
            d0, t0 = int(root.get_attribute("data-drawn")), time.monotonic()
            page.wait_for_timeout(seconds * 1000)
            d1, t1 = int(root.get_attribute("data-drawn")), time.monotonic()
            draw_ms = float(root.get_attribute("data-draw-ms") or "nan")
            browser.close()
        return {"fps": (d1 - d0) / (t1 - t0), "draw_ms": draw_ms}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    s = server_side()
    print(f"server: default run (2,000 points, K=64, 400 steps) trained and packed in {s['run_s']:.2f} s for "
          f"{s['frames']} frames = {s['ms_per_frame']:.1f} ms per frame, once per setting (cached, shared)")
    print(f"server: payload {s['payload_kb']:.0f} KB = {s['payload_kb_per_frame']:.1f} KB per frame, sent once")
    print(f"server: one optimizer step (full batch of 2,000) {s['step_ms']:.2f} ms")
    if not args.no_browser:
        b = browser_side()
        print(f"browser: {b['fps']:.1f} frames drawn per second at 30 fps asked (target >= 10); "
              f"last frame drawn in {b['draw_ms']:.1f} ms; server work per frame while playing: none")
    print(f"load: {os.getloadavg()[0]:.2f} (1 min average)")


if __name__ == "__main__":
    main()
