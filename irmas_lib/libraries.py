"""Sample libraries: which General-MIDI soundfonts render mini-IRMAS, and which one made each file.

A model trained on one sample library learns that library's samples as much as the instruments:
mini-IRMAS is therefore rendered from several libraries, and its manifest, ``mini_irmas.json`` at the
top of the tree, records the library of every file, so that training and evaluation can be split by
library (train on one, test on the other: notebook 04).

The default libraries, and where they come from:

* ``TimGM6mb``: ``TimGM6mb.sf2`` (6 MB), bundled with pretty_midi, always there;
* ``FluidR3_GM``: ``FluidR3_GM.sf2`` (148 MB), Debian/Ubuntu package ``fluid-soundfont-gm``
  (``/usr/share/sounds/sf2/``; Fedora and Arch put it in ``/usr/share/soundfonts/``). The setup scripts
  install it; where it is missing, mini-IRMAS is rendered from TimGM6mb alone, with a loud warning, and
  the manifest lists it under ``missing_libraries``.

The manifest (JSON)::

    {"format_version": 1, "seed": 0,
     "libraries": {"TimGM6mb": {"soundfont": "TimGM6mb.sf2", "files": 780}, "FluidR3_GM": {...}},
     "missing_libraries": [{"name": "FluidR3_GM", "looked_in": [...], "install": "..."}],
     "files": {"IRMAS-TrainingData/cel/[cel][nod][cla]0001__1.wav": "TimGM6mb", ...}}

A tree without a manifest (the real IRMAS) is "one unknown library": :func:`file_libraries` gives
:data:`UNKNOWN` for every file, and nothing else changes.

Notebook: 01_data_exploration.ipynb (which library made a clip), 03_basic_cnn.ipynb (domain shift)
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Iterable

from irmas_lib.errors import IrmasError

MANIFEST_FILE = "mini_irmas.json"
MANIFEST_VERSION = 1
UNKNOWN = "unknown"   # the library of a file in a tree without a manifest (real IRMAS)
BUNDLED_LIBRARY = "TimGM6mb"
FLUIDR3_LIBRARY = "FluidR3_GM"
FLUIDR3_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2")
FLUIDR3_INSTALL = ("Debian/Ubuntu: sudo apt-get install fluid-soundfont-gm; Fedora: sudo dnf install "
                   "fluid-soundfont-gm; Arch: sudo pacman -S soundfont-fluid")


def library_name(soundfont: str | Path) -> str:
    """A library's name: its soundfont's file name without the extension ('FluidR3_GM.sf2' -> 'FluidR3_GM').

    Notebook: 01_data_exploration.ipynb
    """
    return Path(soundfont).stem


def bundled_soundfont() -> Path:
    """pretty_midi's General-MIDI soundfont, ``<site-packages>/pretty_midi/TimGM6mb.sf2`` (found
    without importing pretty_midi, which would load FluidSynth).

    Notebook: 01_data_exploration.ipynb
    """
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        # as an import would fail: the command line names the extra to install (irmas_lib.cli)
        raise ModuleNotFoundError("pretty_midi is not installed, so its TimGM6mb.sf2 is missing", name="pretty_midi")
    return Path(list(spec.submodule_search_locations)[0]).resolve() / "TimGM6mb.sf2"


def fluidr3_soundfont() -> Path | None:
    """FluidR3_GM.sf2 where the system's package put it, or None when it is not installed.

    Notebook: 01_data_exploration.ipynb
    """
    for candidate in FLUIDR3_PATHS:
        if os.path.isfile(candidate):
            return Path(candidate)
    return None


def default_soundfonts() -> tuple[list[Path], list[dict]]:
    """The soundfonts mini-IRMAS is rendered from by default, and the default libraries that are missing.

    Returns:
        (soundfonts: [TimGM6mb.sf2, FluidR3_GM.sf2] or [TimGM6mb.sf2] alone,
         missing: [] or [{"name", "looked_in", "install"}] for FluidR3_GM).

    Notebook: 01_data_exploration.ipynb
    """
    soundfonts, missing = [bundled_soundfont()], []
    fluid = fluidr3_soundfont()
    if fluid is None:
        missing.append({"name": FLUIDR3_LIBRARY, "looked_in": list(FLUIDR3_PATHS), "install": FLUIDR3_INSTALL})
    else:
        soundfonts.append(fluid)
    return soundfonts, missing


def missing_library_message(missing: Iterable[dict]) -> str:
    """The loud warning printed when a default library is missing (one paragraph per library).

    Notebook: 01_data_exploration.ipynb
    """
    lines = []
    for entry in missing:
        lines.append(f"WARNING: the sample library {entry['name']} is not installed (looked in "
                     f"{', '.join(entry['looked_in'])}). mini-IRMAS is rendered from the other libraries only, "
                     f"so models trained on it hear fewer sample libraries and generalise worse, and "
                     f"per-library evaluation has nothing to compare. Install it ({entry['install']}) "
                     f"and render again.")
    return "\n".join(lines)


def manifest_path(path: str | Path) -> Path | None:
    """The manifest that covers ``path`` (a data root or any folder or file inside one): the first
    ``mini_irmas.json`` in ``path`` or a folder above it, or None (real IRMAS).

    Notebook: 01_data_exploration.ipynb, 04_generalisation.ipynb
    """
    here = Path(path).expanduser().resolve()
    for folder in ([here] if here.is_dir() else []) + list(here.parents):
        candidate = folder / MANIFEST_FILE
        if candidate.is_file():
            return candidate
    return None


def read_manifest(path: str | Path) -> dict | None:
    """The manifest covering ``path`` (see :func:`manifest_path`) as a dict, with ``"root"`` added
    (the folder it describes), or None when there is none.

    Raises:
        IrmasError: a manifest that cannot be read or is not one (names the file).

    Notebook: 04_generalisation.ipynb
    """
    found = manifest_path(path)
    if found is None:
        return None
    try:
        manifest = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IrmasError(f"{found}: unreadable sample-library manifest ({error})") from None
    if (not isinstance(manifest, dict) or manifest.get("format_version") != MANIFEST_VERSION
            or not isinstance(manifest.get("files"), dict)):
        raise IrmasError(f"{found}: not a mini-IRMAS manifest of format {MANIFEST_VERSION} "
                         "(render the tree again with irmas synth)")
    manifest["root"] = str(found.parent.resolve())
    return manifest


def file_libraries(root: str | Path, paths: Iterable[str | Path]) -> list[str]:
    """The sample library of each file: its manifest entry, or :data:`UNKNOWN` (no manifest, or a
    file the manifest does not list).

    Args:
        root: the data root the files belong to (or any folder inside it).
        paths: absolute paths, or paths relative to the manifest's folder.

    Returns:
        one library name per path, in order.

    Notebook: 01_data_exploration.ipynb, 04_generalisation.ipynb
    """
    paths = list(paths)
    manifest = read_manifest(root)
    if manifest is None:
        return [UNKNOWN] * len(paths)
    top = Path(manifest["root"])
    files = manifest["files"]
    names = []
    for path in paths:
        path = Path(path)
        if path.is_absolute():
            try:
                path = path.resolve().relative_to(top)
            except ValueError:
                names.append(UNKNOWN)
                continue
        names.append(files.get(path.as_posix(), UNKNOWN))
    return names
