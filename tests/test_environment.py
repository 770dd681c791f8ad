"""The install: pyproject.toml's core and extras, environment.yml (conda) and the Makefile's conventions."""
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = ("course", "test", "panns", "synth")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_core_and_every_extra_of_pyproject():
    optional = PROJECT["optional-dependencies"]
    expected = set(PROJECT["dependencies"]).union(*(optional[extra] for extra in EXTRAS))
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "conda-forge" in environment["channels"]
    assert "python=3.11" in conda and "fluidsynth" in conda
    assert pip[-1] == "-e ."
    assert set(pip[:-1]) == expected


def test_extras_are_split_by_use_and_the_core_is_slim():
    """Issue 13: no pytorch-lightning[extra] (bitsandbytes, hydra, tensorboardX...), nothing of Jupyter or
    pytest at run time, each extra holding what its use needs, dev all four."""
    core = {_name(r) for r in PROJECT["dependencies"]}
    optional = PROJECT["optional-dependencies"]
    assert "pytorch-lightning" in core and not any("[extra]" in r for r in PROJECT["dependencies"])
    assert any(r.startswith("jsonargparse[signatures]") for r in PROJECT["dependencies"])
    assert not core & {"jupyterlab", "ipywidgets", "seaborn", "nbval", "pytest", "panns-inference",
                       "pretty-midi", "pyfluidsynth", "pedalboard", "bitsandbytes", "hydra-core", "tensorboardx"}
    assert {_name(r) for r in optional["course"]} == {"jupyterlab", "ipywidgets", "seaborn"}
    assert {"pytest", "nbval"} <= {_name(r) for r in optional["test"]}
    assert {_name(r) for r in optional["panns"]} == {"panns-inference"}
    assert {_name(r) for r in optional["synth"]} == {"pretty-midi", "pyfluidsynth", "pedalboard"}
    assert optional["dev"] == [f"irmas_lib[{','.join(EXTRAS)}]"]


def test_makefile_torch_pins_are_pyprojects():
    """`make ... TORCH_INDEX_URL=...` installs the torch and torchaudio that pyproject.toml pins."""
    pins = re.findall(r'"(torch(?:audio)?==[^"]+)"', (REPO / "pyproject.toml").read_text())
    assert sorted(pins) == sorted(r for r in PROJECT["dependencies"] if _name(r) in ("torch", "torchaudio"))
    assert len(pins) == 2


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args], capture_output=True,
                          text=True, timeout=60)


def _makefile_rules() -> tuple[set[str], set[str]]:
    """(.PHONY names, names that have a rule), read from the Makefile's text."""
    text = (REPO / "Makefile").read_text()
    phony = set(" ".join(re.findall(r"^\.PHONY:(.*)$", text, re.M)).split())
    rules = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))
    return phony, rules


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def test_every_phony_target_has_a_rule():
    phony, rules = _makefile_rules()
    assert {"help", "demo", "test", "unit", "nbval", "mini", "lab", "bench", "env", "clean"} <= phony
    assert phony - rules == set(), f"phony targets without a rule: {sorted(phony - rules)}"


@needs_make
def test_make_help_is_the_default_goal_and_lists_every_target():
    phony, _ = _makefile_rules()
    alone, helped = _make(), _make("help")
    assert alone.returncode == 0 and helped.returncode == 0, alone.stderr + helped.stderr
    assert alone.stdout == helped.stdout
    listed = set(re.findall(r"^  ([a-z][a-z-]*) ", helped.stdout, re.M))
    assert listed == phony, f"not in `make help`: {sorted(phony - listed)}; not phony: {sorted(listed - phony)}"


@needs_make
def test_make_targets_install_what_they_need_and_the_torch_index_knob(tmp_path):
    """Dry runs (make -n) in a venv folder that does not exist: what each target would install."""
    venv = str(tmp_path / "venv")

    def dry(*args):
        result = _make("-n", f"VENV={venv}", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def installs(extras):  # uv, from the venv, installs the library with these extras into the venv
        return f"{venv}/bin/uv pip install -q --compile-bytecode --python {venv}/bin/python -e '.[{extras}]'"

    demo = dry("demo")
    assert f"{venv}/bin/pip install -q 'uv>=" in demo  # uv itself comes from pip, into the new venv
    assert installs("synth") in demo and "irmas fit --config configs/default.yaml" in demo
    test = dry("test")
    assert installs("dev") in test and "pytest -q -n auto --dist loadfile --no-loadscope-reorder tests" in test and "--nbval" in test
    assert installs("course,panns,synth") in dry("lab")
    assert installs("synth") in dry("env") and installs("course,synth") in dry("env", "EXTRAS=course+synth")
    assert "download.pytorch.org" not in test and "--index-url" not in test  # PyPI by default
    cpu = dry("demo", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
    first_torch = cpu.index('--index-url "https://download.pytorch.org/whl/cpu"')
    assert first_torch < cpu.index(installs("synth"))  # torch from that index first, then the rest
    assert f"|| {{ rm -rf {venv}; exit 1; }}" in cpu[first_torch:cpu.index(installs("synth"))]  # or no venv


@needs_make
@pytest.mark.parametrize("uv", ["installs", "fails", "missing"])
def test_pip_installs_what_uv_could_not(tmp_path, uv):
    """An extra's install goes through uv; where uv fails (a private index only pip.conf names, say) or is
    missing (pip could not install it, offline with a venv made before uv), pip installs the same packages.
    Run for real with stand-ins for the venv's uv, pip and python."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    scripts = {  # each logs its arguments; pip cannot install uv when uv is "missing", the packages go in
        "pip": f'case "$*" in *"uv>="*) exit {int(uv == "missing")};; esac\nexit 0\n',
        "python": "exit 0\n",
        "uv": None if uv == "missing" else f"exit {int(uv == 'fails')}\n",
    }
    for tool, script in scripts.items():
        if script is not None:
            (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n' + script)
            (bin_dir / tool).chmod(0o755)
    result = _make(f"VENV={tmp_path / 'venv'}", str(tmp_path / "venv" / ".installed-synth"))
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    said = re.search(r"^== uv could not install -e '\.\[synth\]': pip tries ==$", result.stdout, re.M)  # not make's echo
    if uv == "missing":
        assert calls[0].startswith("pip install -q uv>=")  # the venv is given uv, which fails
        assert re.search(r"^== uv could not be installed: pip installs the packages ==$", result.stdout, re.M)
        assert calls[1] == "pip install -q -e .[synth]" and not said
    else:
        assert calls[0] == f"uv pip install -q --compile-bytecode --python {bin_dir}/python -e .[synth]"
        if uv == "installs":
            assert not any(call.startswith("pip") for call in calls) and not said
        else:
            assert calls[1] == "pip install -q -e .[synth]" and said
    assert calls[-1].startswith("python -c import irmas_lib")
    assert (tmp_path / "venv" / ".installed-synth").exists()


def test_a_command_whose_extra_is_missing_says_which_extra(tmp_path, monkeypatch, capsys):
    """Without the synth extra (pretty_midi missing), `irmas synth` names the extra to install."""
    import sys

    from irmas_lib.cli import main

    monkeypatch.setitem(sys.modules, "pretty_midi", None)  # `import pretty_midi` now fails as if not installed
    assert main(["synth", str(tmp_path / "mini")]) == 1
    err = capsys.readouterr().err
    assert "needs the Python package 'pretty_midi', of the 'synth' extra: pip install -e '.[synth]'" in err
