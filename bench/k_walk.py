"""How many times K is checked on its way in: from the Train form to the quantizer for a new run, and from the live
slider to the codebook for a live change. Counts every check of the field's Spec (`settings.accepts` on
QuantizerConfig.k) and of the app's cap on K (`fit.check_app_settings`), through the app's queue with the
in-process backend of the tests. Prints each count with where it happened.
Run: python bench/k_walk.py
"""

import collections
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from vqdemo import runtime  # noqa: E402

runtime.configure()

from vqdemo import fit, settings  # noqa: E402
from vqdemo.quantize import QuantizerConfig  # noqa: E402

counts: collections.Counter = collections.Counter()
spec_accepts, app_cap = settings.accepts, fit.check_app_settings


def where(depth: int) -> str:
    frame = traceback.extract_stack()[-depth]
    return f"{frame.name} ({Path(frame.filename).name}:{frame.lineno})"


def counted_accepts(cls, name, value):
    if cls is QuantizerConfig and name == "k":
        counts["Spec of K, in " + where(5)] += 1
    return spec_accepts(cls, name, value)


def counted_cap(*args, **kwargs):
    counts["app's cap on K, in " + where(3)] += 1
    return app_cap(*args, **kwargs)


def report(what: str) -> None:
    print(f"{what}: {sum(counts.values())} checks")
    for place, n in counts.items():
        print(f"  {n} x {place}")
    counts.clear()


def main() -> None:
    from thread_backend import ThreadBackend

    from vqdemo.data import DataConfig
    from vqdemo.jobs import FINISHED, JobQueue
    from vqdemo.train_settings import SETTINGS, model_config
    from vqdemo.trainer import TrainConfig

    settings.accepts, fit.check_app_settings = counted_accepts, counted_cap   # after the page's options were read
    v = {name: p.default for name, p in SETTINGS.items()} | {"k": 128, "kind": "vq", "data": "digits", "batch": 16}
    q = JobQueue(1, tempfile.mkdtemp(), threads=1, backend=ThreadBackend(), app_limits=True)
    try:
        job = q.submit("s", "walk", model_config(v, 1, 28), DataConfig(name="digits"),
                       TrainConfig(steps=2, batch_size=16))
        while job.state not in FINISHED:
            time.sleep(0.05)
        report(f"a new run's K, from the form to the quantizer ({job.state})")
        counts.clear()
        job = q.submit("s", "live", model_config(v, 1, 28), DataConfig(name="digits"),
                       TrainConfig(steps=400, batch_size=16))
        while job.step_count < 1:
            time.sleep(0.05)
        counts.clear()
        job.set(k=64)
        while job.view().knobs.get("k") != 64 and job.state not in FINISHED:
            time.sleep(0.05)
        report("a live K change, from the slider to the codebook")
        job.stop()
    finally:
        q.close()


if __name__ == "__main__":
    main()
