"""Runs on disk: `runs/<id>/` with config.json, metrics.jsonl, status.json and safetensors weights.

Every write is atomic (`files`: temp file in the same folder, then os.replace), so a crash mid-write leaves
the previous file intact. Loading never unpickles: weights come from safetensors, configs from JSON, and a
checkpoint whose tensors do not fit its config is refused with a clear message.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .files import atomic_write_bytes
from .models import ModelConfig, build_model, parameter_count
from .settings import finite

WEIGHTS = "model.safetensors"   # the best checkpoint by validation score
LAST = "last.safetensors"       # the latest good checkpoint
CONFIG = "config.json"          # model, data and train configs, title and owner: what the run is
STATUS = "status.json"          # state, step, best scores and reason: how the run is going, rewritten as it goes
METRICS = "metrics.jsonl"       # one JSON row per logged step or validation: the curves
JOB = "job.json"                # owner and title from the job queue, written once at submit
IMAGES = "val_images.safetensors"  # a run on the user's images: the validation images its pages show (run_images)
MAX_CONFIG_BYTES = 1 << 20
MAX_PARAMS = 50_000_000         # refuse configs that would build absurdly large models
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMS  # float32 parameters plus as many buffers (EMA codebooks): nothing real is bigger
MAX_WEIGHT = 1e6                # |weight| of a trained model is far below this; 1e30 overflows float32 on the way
MAX_BUFFER = 1e12               # running sums (EMA codebooks, usage counts) grow with batch x positions
MAX_METRICS_BYTES = 32 << 20    # metrics.jsonl: a 600 s app run writes under 2 MB; a longer file is read up to here
MAX_TEXT_CHARS = 200            # a title, owner or reason longer than this is cut (they are shown on every page)
STATES = ("queued", "running", "paused", "done", "stopped", "failed", "interrupted", "unknown")
LOCK_FILE = ".server.lock"
RETRY_S = 5.0                   # how often a final write the disk refused is tried again


class CheckpointError(ValueError):
    """A checkpoint or run folder that cannot be used; the message says why and what to do."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("VQDEMO_RUNS_DIR", "runs"))


def read_capped(path: Path, limit: int, *, truncate: bool = False) -> bytes:
    """The bytes of a regular file, at most `limit` of them; never blocks on a FIFO nor reads a device.

    st_size is not trusted (a /proc file says 0, a device says anything): at most limit + 1 bytes are read. Over the
    limit the file is refused, or with `truncate` its first `limit` bytes are returned."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path} is not a regular file (a pipe, device or folder); delete it")
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        if not truncate:
            raise CheckpointError(f"{path} is larger than {limit:,} bytes: not a vqdemo file")
        data = data[:limit]
    return data


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(read_capped(path, MAX_CONFIG_BYTES).decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); delete the run or restore the file") from None
    except RecursionError:  # '[[[[...' nested deeper than Python's stack: hostile or corrupt, never a config
        raise CheckpointError(f"{path} nests JSON too deeply to be a vqdemo config; delete the run") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return obj


def weights_bytes(module: torch.nn.Module, meta: dict) -> bytes:
    """Weights as safetensors bytes, with the JSON config in the header so the file stands on its own."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return save(tensors, metadata={"vqdemo": json.dumps(meta)})


def save_weights(path: Path, module: torch.nn.Module, meta: dict) -> None:
    atomic_write_bytes(path, weights_bytes(module, meta))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a safetensors file; anything else is refused, never unpickled."""
    path = Path(path)
    if not path.is_file():   # follows links: a FIFO or /dev/zero is not a file, and safetensors maps what it opens
        raise CheckpointError(f"{path} does not exist or is not a regular file")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:  # refused before a byte of it is read into memory
        raise CheckpointError(f"{path} is {path.stat().st_size / 2**20:,.0f} MiB, larger than any model this app "
                              f"can load ({MAX_WEIGHTS_BYTES / 2**20:,.0f} MiB); pick another file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vqdemo", "{}"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({str(e)[:120]}); "
                              "retrain or pick another file") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} carries a config that is a JSON {type(meta).__name__}, not an object; retrain")
    return tensors, meta


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with the mismatch spelled out: missing keys, extra keys, wrong shapes or dtypes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} {tensors[k].dtype}, model {tuple(v.shape)} {v.dtype}"
             for k, v in own.items() if k in tensors and (tensors[k].shape != v.shape or tensors[k].dtype != v.dtype)]
    if missing or extra or wrong:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                 "; ".join(wrong[:3])]
        raise CheckpointError(f"{source} does not fit its config: " + "; ".join(p for p in parts if p))
    params = dict(module.named_parameters())
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: tensor {k} holds NaN or inf; the run diverged before this save")
        limit = MAX_WEIGHT if k in params else MAX_BUFFER
        if v.is_floating_point() and v.numel() and float(v.abs().max()) > limit:
            raise CheckpointError(f"{source}: tensor {k} holds values over {limit:.0e} in size, which no trained model "
                                  "has (its outputs would overflow); retrain or pick another file")
    module.load_state_dict(tensors)


def model_from_meta(meta: dict, source: str):
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        cfg.validate()
        size = parameter_count(cfg)  # on the meta device: a huge config is refused before any allocation
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{source} has no usable model config ({e})") from None
    if size > MAX_PARAMS:
        raise CheckpointError(f"{source} describes a model of {size:,} parameters, over the {MAX_PARAMS:,} "
                              "this app allows: too large")
    return build_model(cfg)


def load_model(path: Path | str, which: str = WEIGHTS):
    """A run folder or a .safetensors file -> (model in eval mode, meta dict)."""
    path = Path(path)
    file = path / which if path.is_dir() else path
    tensors, meta = read_weights(file)
    if not meta and path.is_dir():
        meta = read_json(path / CONFIG)
    model = model_from_meta(meta, str(file))
    load_state(model, tensors, str(file))
    return model.eval(), meta


def check_fits(model: torch.nn.Module, data: Any, source: str) -> None:
    """Refuse a model whose input is not the data's (3 channels on MNIST, 64 pixels on 28): a clear message
    instead of a convolution's shape error on every page."""
    cfg = model.config
    got = (data.channels, data.image_size)
    if (cfg.channels, cfg.image_size) != got:
        raise CheckpointError(f"{source} takes {cfg.channels}-channel {cfg.image_size}x{cfg.image_size} images but its "
                              f"data ({data.name}) is {got[0]}-channel {got[1]}x{got[1]}: "
                              "the config does not fit the run")


def _text(value: Any, default: str = "") -> str:
    return value[:MAX_TEXT_CHARS] if isinstance(value, str) else default


def clean_status(raw: Any) -> dict:
    """status.json as its readers expect it, whatever the file says: state one of STATES, reason a short string,
    step an int >= 0, updated a finite float or absent, best a dict of finite floats (its step an int).

    A run folder is anybody's to plant; every page and the job queue read these fields without checks."""
    raw = raw if isinstance(raw, dict) else {}
    state = raw.get("state") if raw.get("state") in STATES else "unknown"
    out: dict[str, Any] = {"state": state, "reason": _text(raw.get("reason")), "step": _count(raw.get("step"))}
    if (updated := finite(raw.get("updated"))) is not None:
        out["updated"] = updated
    best = raw.get("best")
    if isinstance(best, dict):
        out["best"] = {str(k)[:40]: v for k, v in ((k, finite(v)) for k, v in best.items()) if v is not None}
        if "step" in out["best"]:
            out["best"]["step"] = _count(out["best"]["step"])
    if raw.get("was") in STATES:
        out["was"] = raw["was"]
    return out


def _count(value: Any) -> int:
    """A step count: an int >= 0 (a whole float is taken, anything else is 0)."""
    v = finite(value)
    return int(v) if v is not None and v >= 0 and v == int(v) and v < 2**62 else 0


def clean_meta(raw: dict) -> dict:
    """config.json with the fields pages read as plain types: title, owner, kind, command strings; model, data,
    train objects. Anything else of the wrong type is dropped, so a planted config is listed, not fatal."""
    out = dict(raw)
    for key in ("title", "owner", "kind", "command", "role"):
        if key in out and not isinstance(out[key], str):
            del out[key]
        elif key in out and key != "command":
            out[key] = out[key][:MAX_TEXT_CHARS]
    for key in ("model", "data", "train"):
        if key in out and not isinstance(out[key], dict):
            del out[key]
    return out


@dataclass
class RunInfo:
    path: Path
    meta: dict
    status: dict

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")

    @property
    def has_weights(self) -> bool:
        try:
            return (self.path / WEIGHTS).is_file()
        except OSError:
            return False


def read_status(run: Path) -> dict:
    """A run's status, cleaned (see clean_status); missing or unreadable reads as state "unknown"."""
    try:
        return clean_status(read_json(Path(run) / STATUS))
    except CheckpointError:
        return clean_status({})


_INFO_CACHE: dict[Path, tuple[tuple, RunInfo]] = {}
_INFO_CACHE_MAX = 4096


def file_stamp(path: Path) -> tuple | None:
    """What changes when a file is replaced or rewritten (the writers replace files atomically, so the inode moves)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def run_info(run: Path) -> RunInfo:
    """One run folder, its config and status cleaned; CheckpointError when its config cannot be read.

    Read again only when config.json or status.json changed: every page, and every student's live run list, asks
    for every run folder several times a second under a class, and the files change far less often. The RunInfo
    returned is shared: read it, never change it.
    """
    run = Path(run)
    stamp = (file_stamp(run / CONFIG), file_stamp(run / STATUS))
    hit = _INFO_CACHE.get(run)
    if hit is not None and hit[0] == stamp and stamp[0] is not None:
        return hit[1]
    info = RunInfo(run, clean_meta(read_json(run / CONFIG)), read_status(run))
    if len(_INFO_CACHE) >= _INFO_CACHE_MAX:
        _INFO_CACHE.clear()
    _INFO_CACHE[run] = (stamp, info)
    return info


def new_run_dir(root: Path | None = None, prefix: str = "") -> Path:
    """A fresh, unique run folder: time-ordered id plus random suffix, so parallel runs never collide."""
    root = Path(root or default_runs_dir())
    root.mkdir(parents=True, exist_ok=True)
    while True:
        run_id = f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        path = root / run_id
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl rows: objects with an int step >= 0, a string type if any, and every other value
    a number (NaN kept: it marks a diverged run). A torn last line (crash mid-write), a non-object line or a row with
    a wrong-typed type or step is skipped; a file that is not regular reads as empty, a huge one is read up to
    MAX_METRICS_BYTES."""
    try:
        text = read_capped(Path(path) / METRICS, MAX_METRICS_BYTES, truncate=True).decode("utf-8", "replace")
    except CheckpointError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if (not isinstance(row, dict) or not isinstance(row.get("type", ""), str)
                or _count(row.get("step")) != row.get("step")):
            continue
        rows.append({k: v for k, v in row.items()
                     if k == "type" or (isinstance(v, (int, float)) and not isinstance(v, bool))})
    return rows


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run folder with a readable config, newest first. A folder that is broken, unreadable, or holds a pipe
    or device where a file should be is skipped: one planted run never breaks the list for the class. A link to a
    folder is skipped too: the app writes into listed runs (a restart marks them interrupted, a prior goes inside)."""
    root = Path(root or default_runs_dir())
    out = []
    try:
        entries = sorted(root.iterdir(), reverse=True) if root.is_dir() else []
    except OSError:
        return out
    for p in entries:
        try:
            if p.name.startswith(".") or p.is_symlink() or not p.is_dir():
                continue   # a run folder is always a real folder: a link would point the app's writes elsewhere
            out.append(run_info(p))
        except (CheckpointError, OSError):
            continue
    return out
