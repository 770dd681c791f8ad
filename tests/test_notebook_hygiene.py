"""The committed notebooks stay readable and diffable: no execution timestamps, each at most 1 MB,
`# NBVAL_IGNORE_OUTPUT` on at most a fifth of the code cells; and .ci/clean_notebooks.py, which
`make notebooks` runs after executing each notebook, strips what changes on every run."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 1_000_000
IGNORE_MARKER = "# NBVAL_IGNORE_OUTPUT"
CLEAN = "python .ci/clean_notebooks.py notebooks/*.ipynb"


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_notebooks_are_there():
    assert len(NOTEBOOKS) >= 7, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_no_execution_timestamps(path):
    stamped = [index for index, cell in enumerate(load(path)["cells"])
               if "ExecuteTime" in cell.get("metadata", {})
               or any(key.startswith(("iopub.", "shell.")) for key in cell.get("metadata", {}).get("execution", {}))]
    assert not stamped, (f"{path.name}: cells {stamped} carry execution timestamps (cell metadata 'execution'); "
                         f"strip them with `{CLEAN}`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_at_most_1_mb(path):
    size = path.stat().st_size
    assert size <= MAX_BYTES, (f"{path.name} is {size / 1e6:.2f} MB (at most 1 MB): smaller figures "
                               "(irmas_lib.course.setup_plots: dpi, 'jpeg'), shorter audio, fewer outputs")


def code_cells() -> list[tuple[str, str]]:
    return [(path.name, "".join(cell["source"])) for path in NOTEBOOKS
            for cell in load(path)["cells"] if cell["cell_type"] == "code"]


def test_nbval_ignore_output_is_the_exception():
    cells = code_cells()
    ignored = [name for name, source in cells if IGNORE_MARKER in source]
    per_notebook = {name: ignored.count(name) for name in dict.fromkeys(ignored)}
    assert len(ignored) * 5 <= len(cells), (f"{len(ignored)} of {len(cells)} code cells are `{IGNORE_MARKER}` "
                                            f"(at most a fifth, {len(cells) // 5}): {per_notebook}")


# .ci/clean_notebooks.py

def clean_notebooks():
    spec = importlib.util.spec_from_file_location("clean_notebooks", REPO / ".ci" / "clean_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STATE = "application/vnd.jupyter.widget-state+json"
VIEW = "application/vnd.jupyter.widget-view+json"


def notebook_with_widgets(box: str, button: str, layout: str, timestamps: bool) -> dict:
    """A two-cell notebook: a VBox (box) holding a Button (button), both with the Layout (layout)."""
    timing = {"execution": {"iopub.execute_input": "2026-12-03T10:00:00.0Z", "shell.execute_reply": "2026-12-03T10:00:01.0Z"}}
    state = {
        layout: {"model_name": "LayoutModel", "state": {"width": None}},
        button: {"model_name": "ButtonModel", "state": {"description": "go", "layout": f"IPY_MODEL_{layout}"}},
        box: {"model_name": "VBoxModel", "state": {"children": [f"IPY_MODEL_{button}"], "layout": f"IPY_MODEL_{layout}"}},
    }
    return {
        "cells": [
            {"cell_type": "code", "execution_count": 1, "id": "a1", "source": ["print(1)"],
             "metadata": {"tags": ["x"], "jupyter": {"source_hidden": True}, **(timing if timestamps else {})},
             "outputs": [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]},
            {"cell_type": "code", "execution_count": 2, "id": "a2", "source": ["box"],
             "metadata": dict(timing) if timestamps else {},
             "outputs": [{"output_type": "execute_result", "execution_count": 2, "metadata": {},
                          "data": {VIEW: {"model_id": box, "version_major": 2, "version_minor": 0},
                                   "text/plain": ["VBox()"]}}]},
        ],
        "metadata": {"kernelspec": {"name": "python3"}, "widgets": {STATE: {"state": state, "version_major": 2}}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def test_clean_notebooks_strips_timestamps_and_fixes_widget_ids(tmp_path):
    module = clean_notebooks()
    first, second = tmp_path / "a" / "demo.ipynb", tmp_path / "b" / "demo.ipynb"
    for path, ids in ((first, ("1" * 32, "2" * 32, "3" * 32)), (second, ("f" * 32, "e" * 32, "d" * 32))):
        path.parent.mkdir()
        path.write_text(json.dumps(notebook_with_widgets(*ids, timestamps=True), indent=1) + "\n", encoding="utf-8")
        assert module.clean(path) is True
    # two runs with different random ids give the same file; a clean file stays as it is
    assert first.read_text(encoding="utf-8") == second.read_text(encoding="utf-8")
    assert module.clean(first) is False
    cleaned = load(first)
    assert cleaned["cells"][0]["metadata"] == {"tags": ["x"], "jupyter": {"source_hidden": True}}
    assert cleaned["cells"][1]["metadata"] == {}
    state = cleaned["metadata"]["widgets"][STATE]["state"]
    box = cleaned["cells"][1]["outputs"][0]["data"][VIEW]["model_id"]
    assert state[box]["model_name"] == "VBoxModel" and len(state) == 3
    button = state[box]["state"]["children"][0].removeprefix("IPY_MODEL_")
    assert state[button]["model_name"] == "ButtonModel"
    assert state[button]["state"]["layout"] == state[box]["state"]["layout"]


def test_clean_notebooks_leaves_a_clean_notebook_byte_identical(tmp_path):
    """The cleaner keeps a notebook's layout (key order, indent): on a committed notebook without
    timestamps and with its widgets' ids already made stable (as ``make notebooks`` leaves them) it
    changes no byte, so running it never makes a diff of its own."""
    module = clean_notebooks()
    for source in NOTEBOOKS:
        copy_path = tmp_path / source.name
        copy_path.write_bytes(source.read_bytes())
        notebook = load(copy_path)
        if any("execution" in cell.get("metadata", {}) for cell in notebook["cells"]):
            continue   # test_no_execution_timestamps reports it
        assert module.clean(copy_path) is False, source.name
        assert copy_path.read_bytes() == source.read_bytes()
