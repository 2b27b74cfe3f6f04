"""vqdemo.files: a failed write leaves the old file whole and no temp file behind."""

import json
import os

import pytest

from vqdemo import files


def test_atomic_write_leaves_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    files.write_json(target, {"v": 1})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        files.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]   # no temp litter


def test_written_files_get_the_umasks_mode_not_mkstemps(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    files.atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert target.stat().st_mode & 0o777 == files.FILE_MODE
