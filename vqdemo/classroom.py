"""What the Class page plots: every run on the server as one point (K, beta, validation PSNR, codebook use).

Finished runs come from their folders (status.json's best validation row, config.json's model); live ones from the
job queue's views, so a point moves while its run trains. No streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import runs
from .quantize import QuantizerConfig
from .settings import accepts, finite


@dataclass
class RunPoint:
    id: str
    title: str
    owner: str
    kind: str            # vq | rq
    state: str
    step: int
    k: int               # codebook size (RQ: first depth's)
    beta: float
    psnr: float | None   # best validation PSNR so far
    perplexity: float | None

    @property
    def use(self) -> float | None:
        """Perplexity / K: 1 when every code is used evenly, near 0 when the codebook has collapsed."""
        return None if self.perplexity is None else self.perplexity / self.k


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _from_folder(info: runs.RunInfo) -> RunPoint | None:
    """A finished (or interrupted) run's point from its config and status files; None for VAEs and junk."""
    model = info.meta.get("model") if isinstance(info.meta.get("model"), dict) else {}
    kind = model.get("kind", info.meta.get("kind"))
    vq = model.get("vq") if isinstance(model.get("vq"), dict) else {}
    rq = model.get("rq") if isinstance(model.get("rq"), dict) else {}
    sizes = rq.get("codebook_sizes") if isinstance(rq.get("codebook_sizes"), list) else []
    k = _int(sizes[0]) if kind == "rq" and sizes else _int(vq.get("k"))
    beta = finite(vq.get("beta"))
    if kind not in ("vq", "rq") or not accepts(QuantizerConfig, "k", k) or not accepts(QuantizerConfig, "beta", beta):
        return None   # a planted K of 10^400 would overflow the chart's log axis: the library's bounds hold here too
    best = info.status.get("best") if isinstance(info.status.get("best"), dict) else {}
    ppl = finite(best.get("perplexity"))
    return RunPoint(info.id, str(info.meta.get("title") or info.id)[:80], str(info.meta.get("owner") or "")[:64], kind,
                    str(info.state), _int(info.status.get("step")) or 0, k, beta, finite(best.get("psnr")),
                    ppl if ppl is not None and 0 <= ppl <= k else None)   # perplexity lies in [1, K]


def live_point(view) -> RunPoint | None:
    """The point of a run the queue is training (a `jobs.JobView`): its K and beta as they are now."""
    if view.task != "train" or view.kind not in ("vq", "rq") or "beta" not in view.knobs:
        return None
    k = int(view.knobs["k"]) if "k" in view.knobs else view.model_cfg.rq.codebook_sizes[0]
    ppl = next((r["perplexity"] for r in reversed(view.val) if finite(r.get("perplexity")) is not None), None)
    return RunPoint(view.id, view.title, view.owner, view.kind, view.state, view.step, k, float(view.knobs["beta"]),
                    view.best_psnr, ppl)


def run_points(runs_dir: Path, live: dict[str, RunPoint] | None = None, limit: int = 500) -> list[RunPoint]:
    """One point per VQ / RQ run in `runs_dir`, newest first; a run the queue is training now is taken from `live`
    (its current K, beta and scores), so its point moves while it trains."""
    live = live or {}
    out = []
    for info in runs.list_runs(runs_dir)[:limit]:
        point = live.get(info.id) or _from_folder(info)
        if point is not None:
            out.append(point)
    return out


def summary(points: list[RunPoint]) -> str | None:
    """One sentence on what the class's runs show so far, computed from them (None before any has a score)."""
    scored = [p for p in points if p.psnr is not None]
    if not scored:
        return None
    best = max(scored, key=lambda p: p.psnr)
    text = (f"{len(scored)} of {len(points)} runs have a validation score; the best so far is {best.psnr:.1f} dB "
            f"at K = {best.k}, beta = {best.beta:g}.")
    used = [p for p in scored if p.use is not None]
    if len(used) >= 2:
        low = min(used, key=lambda p: p.use)
        high = max(used, key=lambda p: p.use)
        text += (f" Codebook use (perplexity / K) ranges from {low.use:.0%} (K = {low.k}, beta = {low.beta:g}) "
                 f"to {high.use:.0%} (K = {high.k}, beta = {high.beta:g}).")
    return text
