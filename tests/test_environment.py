"""environment.yml (conda, for GPU users) and pyproject.toml must name the same packages and versions."""
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _reqs(lines):
    out = {}
    for line in lines:
        r = Requirement(line)
        out[canonicalize_name(r.name)] = str(r.specifier)
    return out


def pip_requirements_of_environment(env: dict) -> dict:
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip: section"
    return _reqs([line for line in pip[0] if not line.startswith("-")])


def test_environment_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"]
    deps = env["dependencies"]
    assert any(isinstance(d, str) and d.startswith("python=") for d in deps), "python must be pinned"
    assert "pip" in deps
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pip_requirements_of_environment(env) == _reqs(project["dependencies"])


def test_the_check_catches_a_version_mismatch():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pip[:] = [line.replace("omegaconf==2.4.0", "omegaconf==2.3.1") for line in pip]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pip_requirements_of_environment(env) != _reqs(project["dependencies"])
