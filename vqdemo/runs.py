"""Runs on disk: `runs/<id>/` with config.json, metrics.jsonl, status.json and safetensors weights.

Every write is atomic (temp file in the same folder, then os.replace), so a crash mid-write leaves the
previous file intact. Loading never unpickles: weights come from safetensors, configs from JSON, and a
checkpoint whose tensors do not fit its config is refused with a clear message.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .models import ModelConfig, build_model, parameter_count

WEIGHTS = "model.safetensors"   # the best checkpoint by validation score
LAST = "last.safetensors"       # the latest good checkpoint
MAX_CONFIG_BYTES = 1 << 20
MAX_PARAMS = 50_000_000         # refuse configs that would build absurdly large models
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMS  # float32 parameters plus as many buffers (EMA codebooks): nothing real is bigger


class CheckpointError(ValueError):
    """A checkpoint or run folder that cannot be used; the message says why and what to do."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("VQDEMO_RUNS_DIR", "runs"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes: not a vqdemo config")
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
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
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:  # refused before a byte of it is read into memory
        raise CheckpointError(f"{path} is {path.stat().st_size / 2**20:,.0f} MiB, larger than any model this app "
                              f"can load ({MAX_WEIGHTS_BYTES / 2**20:,.0f} MiB); pick another file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vqdemo", "{}"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({str(e)[:120]}); retrain or pick another file") from None
    return tensors, meta


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with the mismatch spelled out: missing keys, extra keys, wrong shapes or dtypes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} {tensors[k].dtype}, model {tuple(v.shape)} {v.dtype}"
             for k, v in own.items() if k in tensors and (tensors[k].shape != v.shape or tensors[k].dtype != v.dtype)]
    if missing or extra or wrong:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "", "; ".join(wrong[:3])]
        raise CheckpointError(f"{source} does not fit its config: " + "; ".join(p for p in parts if p))
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: tensor {k} holds NaN or inf; the run diverged before this save")
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


def data_config(meta: dict, source: str):
    """The DataConfig a run's meta records, with downloads off: a checkpoint from elsewhere must never make the
    app fetch files, nor write them where its config points."""
    from .data import DataConfig

    try:
        return DataConfig(**{**meta.get("data", {}), "download": False})
    except TypeError as e:
        raise CheckpointError(f"{source} has no usable data config ({e})") from None


def load_model(path: Path | str, which: str = WEIGHTS):
    """A run folder or a .safetensors file -> (model in eval mode, meta dict)."""
    path = Path(path)
    file = path / which if path.is_dir() else path
    tensors, meta = read_weights(file)
    if not meta and path.is_dir():
        meta = read_json(path / "config.json")
    model = model_from_meta(meta, str(file))
    load_state(model, tensors, str(file))
    return model.eval(), meta


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
        return (self.path / WEIGHTS).is_file()


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
    """metrics.jsonl rows; a torn last line (crash mid-write) is skipped, not fatal."""
    rows = []
    try:
        with open(Path(path) / "metrics.jsonl", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except (json.JSONDecodeError, RecursionError):
                    continue
    except FileNotFoundError:
        pass
    return rows


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run folder with a readable config, newest first; broken ones are skipped."""
    root = Path(root or default_runs_dir())
    out = []
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir(), reverse=True):
        if not p.is_dir() or not (p / "config.json").is_file():
            continue
        try:
            meta = read_json(p / "config.json")
        except CheckpointError:
            continue
        try:
            status = read_json(p / "status.json")
        except CheckpointError:
            status = {"state": "unknown"}
        out.append(RunInfo(p, meta, status))
    return out


class RunStore:
    """The one writer of a run folder: config.json, status.json, metrics.jsonl and the weights, each atomically.

    The training loop calls it directly in the CLI; for the app's jobs the loop runs in a worker process (or on a
    Ray node) and a forwarding store sends the same calls back here, so one class writes every run folder.
    """

    def __init__(self, path: Path, meta: dict | None = None):
        self.path = Path(path)
        self.meta = dict(meta or {})
        self.rows: list[dict] = []
        self._status: dict[str, Any] = {}

    def open(self, meta: dict) -> None:
        """The run's config (model, data, training settings); fields given at construction (title, owner) stay."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = {**meta, **self.meta}
        write_json(self.path / "config.json", self.meta)

    def status(self, state: str, reason: str, step: int, **extra: Any) -> None:
        self._status = {"state": state, "reason": reason, "step": step, "updated": time.time(), **extra}
        write_json(self.path / "status.json", self._status)

    def metrics(self, rows: list[dict]) -> None:
        """New metric rows since the last call; the file is rewritten whole (atomic), never appended in place."""
        self.rows.extend(rows)
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))

    def checkpoint(self, model_meta: dict, blob: bytes, improved: bool, step: int) -> None:
        """The latest weights (safetensors bytes), also as the best ones when `improved`. K may have changed live,
        so the model config is rewritten with them; status.json's step follows, so a killed run says where it got."""
        self.meta["model"] = model_meta
        write_json(self.path / "config.json", self.meta)
        atomic_write_bytes(self.path / LAST, blob)
        if improved:
            atomic_write_bytes(self.path / WEIGHTS, blob)
        if self._status:
            self._status.update(step=step, updated=time.time())
            write_json(self.path / "status.json", self._status)
