"""Sample libraries: names, default soundfonts, and mini-IRMAS's manifest (which library made each file)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from irmas_lib import libraries
from irmas_lib.errors import IrmasError
from irmas_lib.libraries import (MANIFEST_FILE, UNKNOWN, default_soundfonts, file_libraries, library_name,
                                 manifest_path, missing_library_message, read_manifest)

CELLO = "IRMAS-TrainingData/cel/[cel][nod][cla]0001__1.wav"
CELLO_2 = "IRMAS-TrainingData/cel/[cel][nod][cla]0002__1.wav"
SONG = "IRMAS-TestingData-Part1/Part1/01 - mini-IRMAS song 1-1.wav"
UNLISTED = "IRMAS-TrainingData/voi/[voi][nod][pop_roc]0003__1.wav"
FILES = {CELLO: "TimGM6mb", CELLO_2: "FluidR3_GM", SONG: "FluidR3_GM"}


def make_tree(root: Path, manifest: dict | str | None = None) -> Path:
    """An IRMAS-like tree (empty .wav files) with, unless None, a manifest at its top."""
    for relpath in (CELLO, CELLO_2, SONG, UNLISTED):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(b"")
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (root / MANIFEST_FILE).write_text(text, encoding="utf-8")
    return root


def a_manifest(files: dict = FILES) -> dict:
    return {"format_version": 1, "seed": 0, "libraries": {"TimGM6mb": {"soundfont": "TimGM6mb.sf2", "files": 1},
                                                          "FluidR3_GM": {"soundfont": "FluidR3_GM.sf2", "files": 2}},
            "missing_libraries": [], "files": files}


def test_library_name_is_the_soundfont_file_name_without_extension():
    assert library_name("FluidR3_GM.sf2") == "FluidR3_GM"
    assert library_name(Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")) == "FluidR3_GM"
    assert library_name("~/fonts/MuseScore_General.sf3") == "MuseScore_General"
    assert library_name("GeneralUser GS v1.471.sf2") == "GeneralUser GS v1.471"   # only the last suffix goes


def test_without_a_manifest_every_file_is_of_an_unknown_library(tmp_path):
    root = make_tree(tmp_path / "IRMAS")                                # the real IRMAS: no manifest
    assert manifest_path(root) is None and read_manifest(root) is None
    paths = [root / CELLO, root / SONG, CELLO]
    assert file_libraries(root, paths) == [UNKNOWN] * 3 == ["unknown"] * 3
    assert file_libraries(root, []) == []


def test_relative_and_absolute_paths_read_the_manifest(tmp_path):
    root = make_tree(tmp_path / "mini_irmas", a_manifest())
    assert manifest_path(root) == (root / MANIFEST_FILE).resolve()
    assert read_manifest(root)["root"] == str(root.resolve())
    relative = [CELLO, SONG, CELLO_2, UNLISTED]
    assert file_libraries(root, relative) == ["TimGM6mb", "FluidR3_GM", "FluidR3_GM", UNKNOWN]
    assert file_libraries(root, [root / p for p in relative]) == ["TimGM6mb", "FluidR3_GM", "FluidR3_GM", UNKNOWN]
    assert file_libraries(root, [str(root / SONG)]) == ["FluidR3_GM"]      # str as well as Path
    elsewhere = make_tree(tmp_path / "elsewhere")
    assert file_libraries(root, [elsewhere / CELLO]) == [UNKNOWN]           # absolute, outside the tree


def test_a_folder_or_file_below_the_manifest_finds_it(tmp_path):
    root = make_tree(tmp_path / "mini_irmas", a_manifest())
    part = root / "IRMAS-TestingData-Part1"
    assert manifest_path(part) == manifest_path(root / SONG) == (root / MANIFEST_FILE).resolve()
    assert file_libraries(part, [root / SONG, root / CELLO]) == ["FluidR3_GM", "TimGM6mb"]
    assert file_libraries(part / "Part1", [SONG]) == ["FluidR3_GM"]     # relative to the manifest's folder


def test_a_symlinked_root_reads_the_same_libraries(tmp_path):
    root = make_tree(tmp_path / "mini_irmas", a_manifest())
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    assert file_libraries(link, [link / CELLO, link / SONG, CELLO_2]) == ["TimGM6mb", "FluidR3_GM", "FluidR3_GM"]


@pytest.mark.parametrize("content", [
    "{not json",                                                     # corrupt
    "[1, 2, 3]",                                                     # JSON, but not an object
    json.dumps({"format_version": 1, "files": ["a.wav"]}),           # files not a mapping
    json.dumps({"format_version": 2, "files": {}}),                  # another format
    json.dumps({"name": "some other tool's mini_irmas.json"}),       # foreign
])
def test_a_corrupt_or_foreign_manifest_is_an_error_naming_the_file(tmp_path, content):
    root = make_tree(tmp_path / "mini_irmas", content)
    expected = re.escape(str((root / MANIFEST_FILE).resolve()))
    with pytest.raises(IrmasError, match=expected):
        read_manifest(root)
    with pytest.raises(IrmasError, match=expected):
        file_libraries(root / "IRMAS-TrainingData", [root / CELLO])


def test_default_soundfonts_with_and_without_fluidr3(tmp_path, monkeypatch):
    bundled = libraries.bundled_soundfont()
    assert bundled.name == "TimGM6mb.sf2" and bundled.is_file()
    fake = tmp_path / "sf2" / "FluidR3_GM.sf2"
    fake.parent.mkdir()
    fake.write_bytes(b"")
    monkeypatch.setattr(libraries, "FLUIDR3_PATHS", (str(tmp_path / "nowhere.sf2"), str(fake)))
    assert default_soundfonts() == ([bundled, fake], [])                # the first place that has it

    fake.unlink()
    soundfonts, missing = default_soundfonts()
    assert soundfonts == [bundled]
    assert missing == [{"name": "FluidR3_GM", "looked_in": [str(tmp_path / "nowhere.sf2"), str(fake)],
                        "install": libraries.FLUIDR3_INSTALL}]
    message = missing_library_message(missing)
    assert message.startswith("WARNING: the sample library FluidR3_GM is not installed")
    assert str(fake) in message and "apt-get install fluid-soundfont-gm" in message
    assert missing_library_message([]) == ""
