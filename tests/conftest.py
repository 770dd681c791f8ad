"""Shared fixtures: the IRMAS reference material beside the repository, and a tree built from it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "irmas_reference"

# The longest test files go first. `make unit` runs pytest-xdist with --dist loadfile and
# --no-loadscope-reorder, which hands whole files to the two workers in collection order: the browser
# test (it renders mini-IRMAS and trains the notebooks' course model on one thread in a fresh clone,
# 4-5 minutes) then starts at once on one worker while the other takes everything else, instead of
# starting last (xdist's own order is by number of tests per file, and that file has one).
RUN_FIRST = ("test_browser_demo.py", "test_solutions.py")


def pytest_collection_modifyitems(config, items):
    """Move the files of ``RUN_FIRST`` to the front, in that order; the rest keep theirs."""
    rank = {name: position for position, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(RUN_FIRST)))


@pytest.fixture(scope="session")
def irmas_reference() -> Path:
    """The folder ../shared/irmas_reference (file list, README, three real samples), or skip."""
    if not (REFERENCE_DIR / "irmas_files.csv").is_file():
        pytest.skip(f"IRMAS reference material not found at {REFERENCE_DIR} "
                    "(it lives beside the repository, not in it; only the project's own machines have it)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_files(irmas_reference) -> pd.DataFrame:
    """irmas_files.csv: columns split, path, labels (';'-separated codes); 9,579 rows."""
    return pd.read_csv(irmas_reference / "irmas_files.csv", keep_default_na=False)


@pytest.fixture(scope="session")
def reference_tree(reference_files, tmp_path_factory) -> Path:
    """Every path of the real IRMAS release as a tiny valid WAV (10 frames, 44.1 kHz, 16-bit, stereo,
    hard links to one file), each test excerpt with its label file in the real format (code + TAB per line)."""
    root = tmp_path_factory.mktemp("irmas_tree")
    tiny = root.parent / "tiny.wav"
    sf.write(tiny, np.zeros((10, 2), dtype=np.int16), 44100, subtype="PCM_16")
    for folder in {os.path.dirname(p) for p in reference_files["path"]}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, path, labels in reference_files.itertuples(index=False):
        target = root / path
        try:
            os.link(tiny, target)
        except OSError:
            shutil.copyfile(tiny, target)
        if split == "test":
            target.with_suffix(".txt").write_text("".join(f"{code}\t\n" for code in labels.split(";")),
                                                  encoding="utf-8")
    return root


@pytest.fixture
def call_at_once():
    """``call(function, times=2)``: call ``function`` from ``times`` threads at once (notebooks asking at the
    same moment) and return the answers in the order they came. A caller still waiting after a minute, or
    one that raised, fails the test instead of hanging it or being lost in its thread."""
    import threading

    def call(function, times: int = 2) -> list:
        answers, errors = [], []

        def ask():
            try:
                answers.append(function())
            except BaseException as error:
                errors.append(error)

        callers = [threading.Thread(target=ask) for _ in range(times)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=60)
        assert not any(caller.is_alive() for caller in callers), "a caller is stuck"
        assert not errors, errors
        return answers

    return call
