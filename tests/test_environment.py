"""environment.yml (for conda users) must list exactly the dependencies of pyproject.toml."""
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "conda-forge" in environment["channels"]
    assert "python=3.11" in conda and "fluidsynth" in conda
    assert pip[-1] == "-e ."
    assert set(pip[:-1]) == expected
