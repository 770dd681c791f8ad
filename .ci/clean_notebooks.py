"""Strip what changes on every run of a notebook without changing what it shows, so that a re-run
(`make notebooks`) diffs only where an output really changed.

- cell metadata ``execution`` (JupyterLab's and nbconvert's iopub/shell timestamps) and ``ExecuteTime``
  (the classic notebook's execute-time extension);
- the random ids of the stored ipywidgets models (notebook metadata ``widgets`` and the outputs that
  show a widget), replaced by ids derived from the notebook's name and the model's place in a fixed
  walk: the widgets the outputs show, in cell order, then the models each one refers to.

Everything else is kept as it is, key order and layout included: tags, ``jupyter.source_hidden``
(hidden solutions), ``collapsed``/``scrolled``, kernelspec and language_info, the outputs themselves.
Idempotent; writes only the notebooks it changes.

Usage: python .ci/clean_notebooks.py NOTEBOOK.ipynb...   (`make notebooks` runs it after each notebook)
tests/test_notebook_hygiene.py fails when a committed notebook still carries timestamps.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

TIMING_KEYS = ("execution", "ExecuteTime")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
REFERENCE = re.compile(r"IPY_MODEL_([0-9a-f]+)")


def strip_timing(notebook: dict) -> None:
    for cell in notebook["cells"]:
        for key in TIMING_KEYS:
            cell.get("metadata", {}).pop(key, None)


def widget_order(notebook: dict, state: dict) -> list[str]:
    """The stored models' ids in an order that does not depend on the ids themselves: the models the
    outputs show (cell order), each followed depth-first by the models its state refers to (attributes
    in name order); then any model nothing reaches, by its type and state."""
    shown = [output["data"][WIDGET_VIEW]["model_id"]
             for cell in notebook["cells"] for output in cell.get("outputs", [])
             if WIDGET_VIEW in output.get("data", {})]
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in order or model_id not in state:
            return
        order.append(model_id)
        model_state = state[model_id].get("state", {})
        for key in sorted(model_state):
            for reference in REFERENCE.findall(json.dumps(model_state[key])):
                visit(reference)

    for model_id in shown:
        visit(model_id)
    rest = [model_id for model_id in state if model_id not in order]
    masked = {model_id: REFERENCE.sub("IPY_MODEL_", json.dumps(state[model_id], sort_keys=True)) for model_id in rest}
    for model_id in sorted(rest, key=lambda model_id: masked[model_id]):
        visit(model_id)
    return order


def stable_widget_ids(notebook: dict, name: str) -> dict:
    """The notebook with each stored widget model's random id replaced by a stable one."""
    state = notebook.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    renames = {old: hashlib.md5(f"{name}:widget {index}".encode()).hexdigest()
               for index, old in enumerate(widget_order(notebook, state))}
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return notebook
    # ids are 32 hex digits and appear as JSON strings ("<id>" or "IPY_MODEL_<id>"): swap them in one pass
    pattern = re.compile(r'(?<=["_])(' + "|".join(map(re.escape, renames)) + r')(?=")')
    notebook = json.loads(pattern.sub(lambda match: renames[match[1]], json.dumps(notebook, ensure_ascii=False)))
    # in the order of the new ids, as nbformat writes them: the position no longer depends on chance
    widgets = notebook["metadata"]["widgets"][WIDGET_STATE]
    widgets["state"] = dict(sorted(widgets["state"].items()))
    return notebook


def clean(path: Path) -> bool:
    """Clean one notebook in place, keeping its layout (one-space indent, key order); True when it changed."""
    before = path.read_text(encoding="utf-8")
    notebook = json.loads(before)
    strip_timing(notebook)
    notebook = stable_widget_ids(notebook, path.name)
    after = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if after == before:
        return False
    path.write_text(after, encoding="utf-8")
    return True


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python .ci/clean_notebooks.py NOTEBOOK.ipynb...", file=sys.stderr)
        return 2
    for path in map(Path, paths):
        print(f"{path}: {'cleaned' if clean(path) else 'clean already'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
