"""Sample libraries: names, default soundfonts, and mini-IRMAS's manifest (which library made each file)."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from irmas_lib import libraries
from irmas_lib.errors import IrmasError
from irmas_lib.libraries import (MANIFEST_FILE, UNKNOWN, bundled_soundfont, default_soundfonts, file_libraries,
                                 library_name, manifest_path, missing_library_message, program_recordings,
                                 read_manifest, recordings_shared_between, shared_recordings,
                                 shared_recordings_message)

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


# ------------------------------------------------------------------------------ shared recordings

def chunk(chunk_id: bytes, payload: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def write_sf2(path: Path, programs: dict[int, list[bytes]], banks: dict[int, int] | None = None) -> Path:
    """A minimal SoundFont 2: one preset per program (bank 0, or ``banks[program]``), each with one
    instrument that plays the given samples (16-bit PCM bytes), one zone per sample. A sample listed
    twice is stored twice."""
    samples, phdr, pbag, pgen, inst, ibag, igen, shdr = b"", b"", b"", b"", b"", b"", b"", b""
    n_samples = n_ibags = 0
    for n, (program, pcm_list) in enumerate(sorted(programs.items())):
        bank = (banks or {}).get(program, 0)
        phdr += struct.pack("<20sHHHIII", f"preset {program}".encode(), program, bank, n, 0, 0, 0)
        pbag += struct.pack("<HH", n, 0)
        pgen += struct.pack("<HH", 41, n)                             # instrument n
        inst += struct.pack("<20sH", f"inst {program}".encode(), n_ibags)
        for pcm in pcm_list:
            start = len(samples) // 2
            samples += pcm + b"\0" * 92                               # 46 zero points after each sample
            shdr += struct.pack("<20sIIIIIBbHH", b"s", start, start + len(pcm) // 2, start, start, 22050, 60, 0, 0, 1)
            ibag += struct.pack("<HH", n_ibags, 0)
            igen += struct.pack("<HH", 53, n_samples)                 # sample n_samples
            n_samples, n_ibags = n_samples + 1, n_ibags + 1
    n = len(programs)
    phdr += struct.pack("<20sHHHIII", b"EOP", 0, 0, n, 0, 0, 0)
    pbag += struct.pack("<HH", n, 0)
    pgen += struct.pack("<HH", 0, 0)
    inst += struct.pack("<20sH", b"EOI", n_ibags)
    ibag += struct.pack("<HH", n_ibags, 0)
    igen += struct.pack("<HH", 0, 0)
    shdr += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    pdta = b"pdta" + b"".join(chunk(name, table) for name, table in (
        (b"phdr", phdr), (b"pbag", pbag), (b"pmod", b"\0" * 10), (b"pgen", pgen), (b"inst", inst),
        (b"ibag", ibag), (b"imod", b"\0" * 10), (b"igen", igen), (b"shdr", shdr)))
    body = b"sfbk" + chunk(b"LIST", b"INFO" + chunk(b"ifil", struct.pack("<HH", 2, 1))) \
        + chunk(b"LIST", b"sdta" + chunk(b"smpl", samples)) + chunk(b"LIST", pdta)
    path.write_bytes(chunk(b"RIFF", body))
    return path


def pcm(seed: int, points: int = 200) -> bytes:
    return struct.pack(f"<{points}h", *((seed * 7919 + i * 31) % 20000 - 10000 for i in range(points)))


CELLO_PROGRAM, VIOLIN_PROGRAM, FLUTE_PROGRAM = 42, 40, 73   # General-MIDI, 0-based


def test_shared_recordings_counts_identical_samples_per_instrument(tmp_path):
    a = write_sf2(tmp_path / "LibA.sf2", {CELLO_PROGRAM: [pcm(1), pcm(2), pcm(1)], VIOLIN_PROGRAM: [pcm(3)], FLUTE_PROGRAM: [pcm(4)]})
    b = write_sf2(tmp_path / "LibB.sf2", {CELLO_PROGRAM: [pcm(2), pcm(5)], VIOLIN_PROGRAM: [pcm(6)], FLUTE_PROGRAM: [pcm(4)[:-2]]})
    assert {program: len(s) for program, s in program_recordings(a).items()} == {CELLO_PROGRAM: 2, VIOLIN_PROGRAM: 1, FLUTE_PROGRAM: 1}
    assert list(program_recordings(a, [VIOLIN_PROGRAM])) == [VIOLIN_PROGRAM]
    table = shared_recordings(a, b)
    assert list(table.columns) == ["LibA", "LibB", "shared"] and len(table) == 11
    assert table.loc["cello"].tolist() == [2, 2, 1]          # pcm(1) stored twice is one recording; pcm(2) shared
    assert table.loc["violin"].tolist() == [1, 1, 0]
    assert table.loc["flute"].tolist() == [1, 1, 0]          # one point shorter: another recording
    assert table.loc["trumpet"].tolist() == [0, 0, 0]        # a program neither library defines
    assert shared_recordings(a, a)["shared"].tolist() == shared_recordings(a, a)["LibA"].tolist()


def test_only_bank_0_presets_are_general_midi_programs(tmp_path):
    a = write_sf2(tmp_path / "LibA.sf2", {CELLO_PROGRAM: [pcm(1)], VIOLIN_PROGRAM: [pcm(3)]}, banks={VIOLIN_PROGRAM: 8})
    b = write_sf2(tmp_path / "LibB.sf2", {CELLO_PROGRAM: [pcm(1)], VIOLIN_PROGRAM: [pcm(3)]})
    assert list(program_recordings(a)) == [CELLO_PROGRAM]     # bank 8: a variation, not General MIDI's violin
    assert recordings_shared_between([a, b]) == {"LibA & LibB": {"cello": 1}}


def test_recordings_shared_between_names_only_the_pairs_and_instruments_that_share(tmp_path):
    a = write_sf2(tmp_path / "LibA.sf2", {CELLO_PROGRAM: [pcm(1)], VIOLIN_PROGRAM: [pcm(3)]})
    b = write_sf2(tmp_path / "LibB.sf2", {CELLO_PROGRAM: [pcm(1)], VIOLIN_PROGRAM: [pcm(6)]})
    c = write_sf2(tmp_path / "LibC.sf2", {CELLO_PROGRAM: [pcm(7)], VIOLIN_PROGRAM: [pcm(8)]})
    shared = recordings_shared_between([a, b, c])
    assert shared == {"LibA & LibB": {"cello": 1}}
    assert recordings_shared_between([a, c]) == {} and shared_recordings_message({}) == ""
    message = shared_recordings_message(shared)
    assert "LibA & LibB" in message and "cello (1 shared sample)" in message and "violin" not in message


def test_an_unreadable_soundfont_is_an_error_naming_the_file(tmp_path):
    good = write_sf2(tmp_path / "Good.sf2", {CELLO_PROGRAM: [pcm(1)]})
    truncated = tmp_path / "Truncated.sf2"
    truncated.write_bytes(good.read_bytes()[:-40])                   # cut inside the pdta tables
    one_record_short = tmp_path / "OneRecordShort.sf2"
    one_record_short.write_bytes(good.read_bytes()[:-46])            # the whole last shdr record: still parses
    junk = tmp_path / "Junk.sf2"
    junk.write_bytes(b"RIFF\0\0\0\0WAVEfmt " * 10)
    for bad in (tmp_path / "Missing.sf2", truncated, one_record_short, junk):
        with pytest.raises(IrmasError, match=re.escape(str(bad))):
            shared_recordings(good, bad)


CSOUND = Path("/usr/share/sounds/sf2/sf_GMbank.sf2")
FLUIDR3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


@pytest.mark.skipif(not (CSOUND.is_file() and FLUIDR3.is_file()),
                    reason="needs Debian's csound-soundfont and fluid-soundfont-gm")
def test_csound_library_plays_timgm6mb_recordings_and_fluidr3_plays_none(tmp_path):
    tim_csound = shared_recordings(bundled_soundfont(), CSOUND)
    for name in ("cello", "clarinet", "acoustic guitar", "electric guitar", "violin"):   # every sample shared
        assert tim_csound.loc[name, "shared"] == tim_csound.loc[name, "TimGM6mb"] > 0
    for name in ("flute", "piano", "trumpet", "voice"):
        assert tim_csound.loc[name, "shared"] == 0
    assert recordings_shared_between([bundled_soundfont(), FLUIDR3]) == {}
    assert recordings_shared_between([FLUIDR3, CSOUND]) == {}
