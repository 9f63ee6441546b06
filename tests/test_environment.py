"""The pinned files agree with each other, so conda, Binder and run.py build the same course."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            out[match[1].lower().replace("_", "-")] = match[2]
    return out


def requirement_pins(name):
    return pins((ROOT / name).read_text().splitlines())


def conda_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return pins(pip_section)


def test_environment_yml_agrees_with_requirements():
    req, conda = requirement_pins("requirements.txt"), conda_pins()
    shared = set(req) & set(conda)
    assert shared == set(req), f"environment.yml lacks {sorted(set(req) - set(conda))}"
    assert {name: conda[name] for name in shared} == {name: req[name] for name in shared}


def test_constraints_agree_with_requirements():
    req, constraints = requirement_pins("requirements.txt"), requirement_pins("constraints.txt")
    for name, version in req.items():
        assert constraints.get(name) == version, f"{name}: requirements {version}, constraints {constraints.get(name)}"


def test_every_pin_is_exact():
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            assert not line or "==" in line, f"{name}: {line!r} is not pinned with =="
