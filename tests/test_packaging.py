"""`pip install .` installs the library alone with requirements.txt's pins: the two lists cannot drift apart."""

import importlib
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, str]:
    """name -> its version spec, from requirement lines (comments and blank lines skipped)."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()
            out[name.lower()] = spec.replace(" ", "")
    return out


def test_the_packages_dependencies_carry_requirements_txts_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    deps = pins(project["dependencies"] + project["optional-dependencies"]["ray"])
    assert deps["torch"] == "==2.13.0"   # any other spec lets pip pull CUDA wheels (gigabytes) on this machine
    assert {name: required.get(name) for name in deps} == deps
    assert "streamlit" not in deps        # the app's dependency, not the library's


def test_the_command_and_the_version_resolve():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    module, _, attr = config["project"]["scripts"]["vqdemo"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["vqdemo", "vqdemo.*"]   # no ui/, views/
    assert re.fullmatch(r"\d+\.\d+\.\d+", importlib.import_module("vqdemo").__version__)
