"""mini-IRMAS rendering: IRMAS's layout, names and format, levels, determinism, sample libraries and
their manifest, the `.complete` marker (up to date, stale and killed renders), safe output folder."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from irmas_lib import libraries, synth
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, INSTRUMENTS
from irmas_lib.libraries import MANIFEST_FILE, bundled_soundfont, file_libraries
from irmas_lib.production import Production, apply_production, draw_production
from irmas_lib.synth import (RENDERER_VERSION, MissingLibraryWarning, SharedRecordingsWarning, read_complete_marker,
                             render_mini_irmas)

CODES_RE = "|".join(CODES)
GENRES_RE = "cla|pop_roc|jaz_blu|cou_fol|lat_sou"
# Matches all 6,705 real training names (checked against ../shared/irmas_reference in a test below).
TRAIN_NAME = re.compile(rf"^(?:\d{{3}}__)?\[({CODES_RE})\](\[(?:dru|nod|---)\])?\[({GENRES_RE})\](\d{{4}})__(\d+)\.wav$")
TEST_NAME = re.compile(r"^.+-\d+\.wav$")
TEST_SONG = re.compile(r"^(\d+) - mini-IRMAS song \d+-\d+\.wav$")
TEST_FOLDERS = {"IRMAS-TestingData-Part1/Part1", "IRMAS-TestingData-Part2/IRTestingData-Part2",
                "IRMAS-TestingData-Part3/Part3"}
TOP_LEVEL = {"IRMAS-TrainingData", "IRMAS-TestingData-Part1", "IRMAS-TestingData-Part2",
             "IRMAS-TestingData-Part3", ".complete", MANIFEST_FILE}
FLUIDR3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TIMGM = bundled_soundfont()
LOUDEST_NOISE = 10 ** (-55 / 20)                 # production noise: at most -55 dBFS RMS
PEAK_CEILING = 10 ** (-1 / 20) + 6 * LOUDEST_NOISE   # -1 dBFS plus six standard deviations of the loudest noise

needs_fluidr3 = pytest.mark.skipif(not FLUIDR3.is_file(),
                                   reason=f"{FLUIDR3} is not installed (apt-get install fluid-soundfont-gm): "
                                          "the two-library renders need it")


def render(out: Path, n: int = 1, m: int = 1, seed: int = 0, workers: int = 1, soundfonts=(TIMGM,),
           **kwargs) -> dict:
    """A tiny render, from TimGM6mb alone unless told (``soundfonts=None``: the default libraries)."""
    return render_mini_irmas(out, train_per_class=n, test_excerpts=m, seed=seed, workers=workers,
                             progress=False, soundfonts=list(soundfonts) if isinstance(soundfonts, tuple)
                             else soundfonts, **kwargs)


def file_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in [root, *root.rglob("*")]}


def wav_relpaths(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    """2 clips per class and 3 test excerpts from TimGM6mb, rendered by two worker processes."""
    root = tmp_path_factory.mktemp("mini") / "mini_irmas"
    return root, render(root, n=2, m=3, seed=0, workers=2)


@pytest.fixture(scope="module")
def duo(tmp_path_factory) -> tuple[Path, dict]:
    """4 clips per class and 6 test excerpts from TimGM6mb and FluidR3_GM, by two worker processes."""
    if not FLUIDR3.is_file():
        pytest.skip(f"{FLUIDR3} is not installed (apt-get install fluid-soundfont-gm): the two-library renders need it")
    root = tmp_path_factory.mktemp("duo") / "mini_irmas"
    return root, render(root, n=4, m=6, seed=0, workers=2, soundfonts=(TIMGM, FLUIDR3))


# ------------------------------------------------------------------------------ layout and format

def test_layout_names_and_summary(mini):
    root, summary = mini
    train = sorted((root / "IRMAS-TrainingData").rglob("*.wav"))
    assert len(train) == 22
    for path in train:
        match = TRAIN_NAME.match(path.name)
        assert match, path.name
        assert match.group(1) == path.parent.name          # folder and first tag agree
    test = sorted(p.relative_to(root).as_posix() for p in root.glob("IRMAS-TestingData-*/*/*.wav"))
    assert len(test) == 3
    assert {str(Path(p).parent.as_posix()) for p in test} == TEST_FOLDERS   # spread over the three parts
    assert all(TEST_NAME.match(Path(p).name) for p in test)
    assert {p.name for p in root.iterdir()} == TOP_LEVEL
    assert summary["train_per_class"] == {code: 2 for code in CODES}
    assert summary["train_clips"] == 22 and summary["test_excerpts"] == 3
    assert summary["test_per_part"] == {"Part1": 1, "IRTestingData-Part2": 1, "Part3": 1}
    assert summary["libraries"] == {"TimGM6mb": 25} and summary["missing_libraries"] == []
    assert summary["soundfonts"] == [str(TIMGM)]
    assert summary["workers"] == 2 and summary["rendered"] is True and summary["seconds"] > 0


def test_complete_marker_holds_the_settings_and_summary(mini):
    root, summary = mini
    marker = json.loads((root / ".complete").read_text())            # the Makefile's `make demo` target
    assert marker["settings"] == {"renderer_version": RENDERER_VERSION, "train_per_class": 2, "test_excerpts": 3,
                                  "seed": 0, "libraries": ["TimGM6mb"], "missing_libraries": [],
                                  "soundfont_bytes": [TIMGM.stat().st_size]}   # another file of the same name re-renders
    run_only = {"out_dir", "rendered", "workers", "seconds"}          # about this call, not about the tree
    assert marker["summary"] == {key: value for key, value in summary.items() if key not in run_only}
    assert read_complete_marker(root) == marker


def test_wav_format_lengths_stereo_and_levels(mini):
    root, _ = mini
    peaks = []
    for path in root.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (44100, 2, "PCM_16", "WAV"), path
        audio = sf.read(path, dtype="int16")[0]                        # (samples, 2)
        if "TrainingData" in path.parts[-3]:
            assert info.frames == 132300, path                       # exactly 3.0 s
        else:
            assert 5.0 <= info.frames / 44100 <= 20.0, path
        assert np.any(audio[:, 0] != audio[:, 1]), f"{path}: both channels identical"
        # Each recording peaks at -12 to -1 dBFS before its noise is added; a clip cut from it may miss
        # that peak, so per file only the ceiling holds: never above -1 dBFS (plus noise), never clipped.
        peak = np.abs(audio.astype(np.int32)).max() / 32767
        assert peak < PEAK_CEILING < 1.0, path
        peaks.append(peak)
        for quarter in np.array_split(audio.astype(np.float64) / 32768, 4):   # music all along, above the noise
            assert np.sqrt(np.mean(quarter ** 2)) > 10 ** (-50 / 20), path
    assert 20 * np.log10(max(peaks) / min(peaks)) > 3.0                  # levels vary between recordings


def test_production_sets_the_peak_then_adds_the_noise():
    """Known answers: a plain chain (no room, flat EQ, no compressor, width 1) peaks exactly at
    ``peak_dbfs``; silence comes out as the noise alone, at ``noise_dbfs`` RMS, white or pink."""
    t = np.arange(44100) / 44100
    mix = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 660 * t)], axis=1)
    plain = Production(room_size=0.5, damping=0.5, reverb_wet=0.0, low_shelf_db=0.0, high_shelf_db=0.0,
                       lowpass_hz=None, compressor_ratio=None, compressor_threshold_db=-20.0, width=1.0,
                       peak_dbfs=-6.0, noise_dbfs=-140.0, noise_pink=False)
    out = apply_production(mix, plain, np.random.default_rng(0))
    assert out.dtype == np.int16 and out.shape == mix.shape
    assert abs(int(np.abs(out.astype(np.int32)).max()) - 32767 * 10 ** (-6 / 20)) <= 1
    for pink in (False, True):
        noise_only = dataclasses.replace(plain, noise_dbfs=-60.0, noise_pink=pink)
        silence = apply_production(np.zeros((44100, 2)), noise_only, np.random.default_rng(1))
        rms = np.sqrt(np.mean((silence.astype(np.float64) / 32767) ** 2))
        assert 20 * np.log10(rms) == pytest.approx(-60.0, abs=0.3), pink
    rng = np.random.default_rng(0)
    drawn = [draw_production(rng) for _ in range(300)]
    assert all(-12.0 <= p.peak_dbfs <= -1.0 and -75.0 <= p.noise_dbfs <= -55.0 for p in drawn)


def test_pink_noise_falls_three_db_per_octave():
    """The production's pink noise: power per hertz halves with each octave (-3 dB/octave, 1/f) across
    the audible range, and white noise stays flat."""
    from scipy.signal import welch

    from irmas_lib.production import _noise

    rng = np.random.default_rng(0)
    for pink, slope in ((True, -3.0), (False, 0.0)):
        noise = _noise(rng, 10 * 44100, pink)
        assert noise.shape == (2, 10 * 44100) and noise.dtype == np.float32
        hz, power = welch(noise[0], fs=44100, nperseg=8192)
        band = (hz >= 40) & (hz <= 16000)
        fitted = np.polyfit(np.log2(hz[band]), 10 * np.log10(power[band]), 1)[0]   # dB per octave
        assert fitted == pytest.approx(slope, abs=0.3), pink


def test_noise_is_cut_from_one_shared_minute_at_a_random_point():
    """Renderer 4: every recording's noise is a cut of one minute of noise (the same in every process,
    read-only), from a point its own generator draws; a recording longer than the minute repeats it."""
    from irmas_lib.production import _noise, noise_recording

    for pink in (False, True):
        minute = noise_recording(pink)
        assert minute is noise_recording(pink) and not minute.flags.writeable
        assert minute.shape == (2, 60 * 44100) and minute.dtype == np.float32
        assert np.sqrt(np.mean(np.square(minute, dtype=np.float64))) == pytest.approx(1.0, rel=1e-5)
        cuts = [_noise(np.random.default_rng(seed), 44100, pink) for seed in range(3)]
        starts = []
        for cut in cuts:
            matches = np.flatnonzero(minute[0] == cut[0, 0])
            start = next((int(m) for m in matches if np.array_equal(minute[:, m:m + 44100], cut)), None)
            assert start is not None, "the noise is not a cut of the shared minute"
            starts.append(start)
        assert len(set(starts)) == 3                                     # three generators, three points
        np.testing.assert_array_equal(_noise(np.random.default_rng(1), 44100, pink), cuts[1])   # same seed, same cut
        long = _noise(np.random.default_rng(0), 61 * 44100, pink)       # longer than the minute
        assert long.shape == (2, 61 * 44100)
        np.testing.assert_array_equal(long[:, :44100], cuts[0])         # from generator 0's point
        np.testing.assert_array_equal(long[:, :44100], long[:, 60 * 44100:])
        past_the_end = _noise(np.random.default_rng(0), 60 * 44100 - starts[0] + 10, pink)   # wraps after 10 less
        np.testing.assert_array_equal(past_the_end[:, :-10], minute[:, starts[0]:])
        np.testing.assert_array_equal(past_the_end[:, -10:], minute[:, :10])
    assert not np.array_equal(noise_recording(False)[:, :100], noise_recording(True)[:, :100])


def test_label_files_real_format(mini):
    root, _ = mini
    wavs = sorted(root.glob("IRMAS-TestingData-*/*/*.wav"))
    for wav in wavs:
        text = wav.with_suffix(".txt").read_bytes().decode()
        assert re.fullmatch(rf"(?:(?:{CODES_RE})\t\n){{1,3}}", text), repr(text)   # "gel\t\nvoi\t\n"
        codes = text.split()
        assert len(set(codes)) == len(codes)
    assert len(list(root.glob("IRMAS-TestingData-*/*/*.txt"))) == len(wavs)


def test_recordings_have_two_to_four_consecutive_clips(mini):
    root, _ = mini
    clips = defaultdict(list)
    for path in (root / "IRMAS-TrainingData").rglob("*.wav"):
        match = TRAIN_NAME.match(path.name)
        clips[(match.group(1), match.group(4))].append(int(match.group(5)))
    assert len(clips) == 11
    assert all(sorted(ks) == list(range(1, len(ks) + 1)) and 2 <= len(ks) <= 4 for ks in clips.values())
    # The plan: 2-4 clips per recording for any N >= 2, one recording of one clip for N == 1.
    rng = np.random.default_rng(0)
    for n in range(1, 60):
        sizes = synth._recording_sizes(rng, n)
        assert sum(sizes) == n
        assert sizes == [1] if n == 1 else all(2 <= s <= 4 for s in sizes), (n, sizes)


def test_scan_of_the_output_reports_no_problems(mini):
    from irmas_lib import irmas_files
    root, _ = mini
    scanned = irmas_files.scan(root)
    assert scanned.problems == []
    clips = scanned.clips
    assert (clips["split"] == "train").sum() == 22 and (clips["split"] == "test").sum() == 3
    train = clips[clips["split"] == "train"]
    assert all(labels == (Path(rel).parent.name,) for labels, rel in zip(train["labels"], train["relpath"]))
    assert train["recording_id"].nunique() == 11


def test_training_name_pattern_matches_real_irmas(reference_files):
    names = reference_files.loc[reference_files["split"] == "train", "path"].str.rsplit("/", n=1).str[-1]
    assert all(TRAIN_NAME.match(name) for name in names)


# ------------------------------------------------------------------------------ determinism

def test_same_seed_byte_identical_whatever_the_workers(mini, tmp_path):
    root, _ = mini
    again = tmp_path / "again"
    render(again, n=2, m=3, seed=0, workers=1)
    assert file_digests(again) == file_digests(root)


@needs_fluidr3
def test_two_libraries_byte_identical_with_one_and_two_workers(duo, tmp_path):
    root, _ = duo
    again = tmp_path / "again"
    summary = render(again, n=4, m=6, seed=0, workers=1, soundfonts=f"{TIMGM},{FLUIDR3}")   # the CLI's form
    assert summary["workers"] == 1
    digests = file_digests(again)
    assert MANIFEST_FILE in digests and ".complete" in digests
    assert digests == file_digests(root)


def test_one_clip_per_class_one_excerpt_and_another_seed_differs(tmp_path):
    first, second = tmp_path / "seed0", tmp_path / "seed1"
    summary = render(first, seed=0)
    render(second, seed=1)
    assert summary["train_per_class"] == {code: 1 for code in CODES} and summary["test_excerpts"] == 1
    assert summary["train_recordings"] == 11
    assert len(list(first.rglob("*.wav"))) == 12 and len(list(first.rglob("*.txt"))) == 1
    assert next(first.rglob("*.txt")).parent.relative_to(first).as_posix() == "IRMAS-TestingData-Part1/Part1"
    wav_digests = lambda root: {d for p, d in file_digests(root).items() if p.endswith(".wav")}   # noqa: E731
    assert not wav_digests(first) & wav_digests(second)


# ------------------------------------------------------------------------------ sample libraries

@needs_fluidr3
def test_manifest_lists_every_wav_once_with_its_library(duo):
    root, summary = duo
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    wavs = wav_relpaths(root)
    assert len(wavs) == 44 + 6
    assert sorted(manifest["files"]) == wavs                          # every file, and nothing else
    per_library = Counter(manifest["files"].values())
    assert set(per_library) == {"TimGM6mb", "FluidR3_GM"}
    assert manifest["libraries"] == {"TimGM6mb": {"soundfont": "TimGM6mb.sf2", "files": per_library["TimGM6mb"]},
                                     "FluidR3_GM": {"soundfont": "FluidR3_GM.sf2",
                                                    "files": per_library["FluidR3_GM"]}}
    assert (manifest["format_version"], manifest["seed"], manifest["missing_libraries"]) == (1, 0, [])
    assert summary["libraries"] == dict(per_library) and summary["shared_recordings"] == {}   # independent libraries
    assert file_libraries(root, wavs) == [manifest["files"][w] for w in wavs]   # what cache and evaluation read
    assert read_complete_marker(root)["settings"]["libraries"] == ["TimGM6mb", "FluidR3_GM"]


@needs_fluidr3
def test_libraries_take_turns_in_the_rendered_tree(duo):
    """Every instrument with two recordings has one in each library; a test song's excerpts share one."""
    root, _ = duo
    files = json.loads((root / MANIFEST_FILE).read_text())["files"]
    recordings = defaultdict(dict)                                     # code -> {NNNN: library}
    for relpath, library in files.items():
        match = TRAIN_NAME.match(Path(relpath).name)
        if match:
            assert recordings[match.group(1)].setdefault(match.group(4), library) == library   # clips of a recording
    assert set(recordings) == set(CODES)
    assert any(len(numbers) >= 2 for numbers in recordings.values())   # the check below has teeth
    for code, numbers in recordings.items():
        assert len(set(numbers.values())) == min(len(numbers), 2), code
    songs = defaultdict(set)
    for relpath, library in files.items():
        match = TEST_SONG.match(Path(relpath).name)
        if match:
            songs[int(match.group(1))].add(library)
    assert len(songs) >= 2 and all(len(libs) == 1 for libs in songs.values())
    order = [next(iter(songs[k])) for k in sorted(songs)]
    assert all(a != b for a, b in zip(order, order[1:]))               # consecutive songs alternate


@pytest.mark.parametrize("names", [("A", "B"), ("A", "B", "C")])
def test_plan_shares_each_instrument_between_the_libraries(names):
    """The plan alone (no rendering): each instrument's recordings, and the test songs, go round the
    libraries in turn, so every library holds every instrument once there are enough recordings."""
    fake = [synth._Library(name, f"{name}.sf2", {}, ()) for name in names]
    for n, m in ((5, 3), (16, 12), (60, 40)):
        tasks = synth._plan(n, m, 0, fake)
        for code in CODES:
            libs = [t.library.name for t in tasks if t.kind == "train" and t.code == code]
            start = names.index(libs[0])
            assert libs == [names[(start + i) % len(names)] for i in range(len(libs))], (code, n)
            if len(libs) >= len(names):
                assert set(libs) == set(names)
        song_library = {}
        for t in tasks:
            if t.kind == "test":
                assert song_library.setdefault(t.name.split(" - ")[0], t.library.name) == t.library.name
        order = [song_library[k] for k in sorted(song_library)]
        start = names.index(order[0])
        assert order == [names[(start + i) % len(names)] for i in range(len(order))]
        assert sum(t.n_clips for t in tasks if t.kind == "train") == 11 * n


def test_missing_default_library_warns_and_is_recorded(tmp_path, monkeypatch, capsys):
    from irmas_lib.cli import main

    nowhere = tmp_path / "nowhere" / "FluidR3_GM.sf2"
    monkeypatch.setattr(libraries, "FLUIDR3_PATHS", (str(nowhere),))
    out = tmp_path / "mini"
    with pytest.warns(MissingLibraryWarning, match=re.escape(str(nowhere))):
        summary = render(out, soundfonts=None)                      # the defaults
    assert summary["libraries"] == {"TimGM6mb": 12}
    assert [entry["name"] for entry in summary["missing_libraries"]] == ["FluidR3_GM"]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["missing_libraries"] == [{"name": "FluidR3_GM", "looked_in": [str(nowhere)],
                                              "install": libraries.FLUIDR3_INSTALL}]
    assert list(manifest["libraries"]) == ["TimGM6mb"] and set(manifest["files"].values()) == {"TimGM6mb"}
    assert read_complete_marker(out)["settings"]["missing_libraries"] == ["FluidR3_GM"]

    # `irmas synth` says it loudly on stderr (once, not also as a Python warning), even when up to date
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["synth", str(out), "--train-per-class", "1", "--test-excerpts", "1"]) == 0
    assert not [w for w in caught if issubclass(w.category, MissingLibraryWarning)]
    stdout, stderr = capsys.readouterr()
    assert "!" * 100 in stderr and "WARNING: the sample library FluidR3_GM is not installed" in stderr
    assert str(nowhere) in stderr and "fluid-soundfont-gm" in stderr
    assert "up to date" in stdout and "WARNING" not in stdout


def test_libraries_that_share_recordings_are_warned_about_and_recorded(tmp_path, capsys):
    from irmas_lib.cli import main

    copy = tmp_path / "TimCopy.sf2"                 # another library name, the same recordings
    copy.write_bytes(TIMGM.read_bytes())
    out = tmp_path / "mini"
    with pytest.warns(SharedRecordingsWarning, match="TimGM6mb & TimCopy play some of the same recordings: cello"):
        summary = render(out, soundfonts=(TIMGM, copy))
    assert list(summary["shared_recordings"]) == ["TimGM6mb & TimCopy"]
    assert list(summary["shared_recordings"]["TimGM6mb & TimCopy"]) == [i.name for i in INSTRUMENTS]
    assert read_complete_marker(out)["summary"]["shared_recordings"] == summary["shared_recordings"]
    with pytest.warns(SharedRecordingsWarning, match="TimGM6mb & TimCopy"):   # said again when up to date
        again = render(out, soundfonts=(TIMGM, copy))
    assert not again["rendered"] and again["shared_recordings"] == summary["shared_recordings"]

    # `irmas synth` says it loudly on stderr, not as a Python warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["synth", str(tmp_path / "again"), "--train-per-class", "1", "--test-excerpts", "1",
                     "--soundfont", f"{TIMGM},{copy}"]) == 0
    assert not [w for w in caught if issubclass(w.category, SharedRecordingsWarning)]
    stdout, stderr = capsys.readouterr()
    assert "!" * 100 in stderr and "WARNING: the sample libraries TimGM6mb & TimCopy" in stderr
    assert "WARNING" not in stdout


def test_a_soundfont_whose_tables_cannot_be_compared_is_still_rendered(tmp_path, monkeypatch):
    def unreadable(soundfonts):
        raise IrmasError("/somewhere/Odd.sf2: not a readable SoundFont (SF2/SF3): test")

    monkeypatch.setattr(synth, "recordings_shared_between", unreadable)
    with pytest.warns(SharedRecordingsWarning, match="could not compare .*Odd.sf2"):
        summary = render(tmp_path / "mini")
    assert summary["rendered"] and summary["shared_recordings"] == {}
    assert read_complete_marker(tmp_path / "mini") is not None


def test_cli_synth_renders_then_is_up_to_date_without_a_banner(tmp_path, capsys):
    from irmas_lib.cli import main

    out = tmp_path / "mini"
    args = ["synth", str(out), "--train-per-class", "1", "--test-excerpts", "1", "--soundfont", str(TIMGM)]
    assert main(args) == 0
    stdout, stderr = capsys.readouterr()
    assert f"mini-IRMAS in {out}: 11 training clips (11 recordings), 1 test excerpts" in stdout
    assert "files per sample library: TimGM6mb 12" in stdout and "WARNING" not in stderr
    assert main(args) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout == f"mini-IRMAS in {out} is up to date (same settings): nothing to render\n" and stderr == ""


# ------------------------------------------------------------------------------ the output folder

def test_same_settings_are_up_to_date_other_settings_refused(tmp_path):
    out = tmp_path / "out"
    first = render(out)
    before = mtimes(out)
    for overwrite in (False, True):                  # a tree with the same settings is kept as it is
        again = render(out, overwrite=overwrite)
        assert again["rendered"] is False and again["workers"] == 0
        assert {k: again[k] for k in ("train_clips", "test_excerpts", "libraries")} == \
               {k: first[k] for k in ("train_clips", "test_excerpts", "libraries")}
    assert mtimes(out) == before
    for other in ({"seed": 1}, {"n": 2}, {"m": 2}):
        with pytest.raises(IrmasError, match=re.escape(str(out)) + ".*not empty"):
            render(out, **other)
    assert mtimes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_tree_of_an_older_renderer_is_not_up_to_date(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / ".complete").write_text(json.dumps({"train_per_class": 1, "test_excerpts": 1, "seed": 0,
                                               "soundfont": "TimGM6mb.sf2"}))   # renderer version 1's marker
    assert read_complete_marker(out) is None
    with pytest.raises(IrmasError, match="not empty"):
        render(out)


def test_non_empty_out_refused_then_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(IrmasError, match=re.escape(str(out))):
        render(out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    summary = render(out, overwrite=True)
    assert not (out / "keep.txt").exists() and summary["train_clips"] == 11 and summary["rendered"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]      # no partial or old tree left


def test_a_symbolic_link_is_rendered_where_it_points_and_kept(tmp_path):
    """`--overwrite` on a linked data folder replaces the tree it points to; the link stays a link (it
    was moved aside as a link, leaving the target untouched). A dangling link gets its target."""
    target, link = tmp_path / "real", tmp_path / "link"
    target.mkdir()
    (target / "old.txt").write_text("old tree")
    link.symlink_to(target)
    assert render(link, overwrite=True)["out_dir"] == str(target)
    assert link.is_symlink() and (link / ".complete").is_file() and not (target / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]       # nothing moved aside and left
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "new")
    render(dangling)
    assert dangling.is_symlink() and (tmp_path / "new" / ".complete").is_file()


def test_a_folder_it_cannot_create_is_named_before_anything_is_rendered(tmp_path, monkeypatch):
    from irmas_lib.cli import main

    def never(task, root):
        raise AssertionError("rendered")

    monkeypatch.setattr(synth, "_render_task", never)
    (tmp_path / "a file").write_text("mine")
    with pytest.raises(IrmasError, match=r"a file/out: cannot create the tree there \(Not a directory: .*a file/"):
        render(tmp_path / "a file" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file"]
    assert main(["synth", str(tmp_path / "a file" / "out"), "--soundfont", str(TIMGM)]) == 1


def test_a_mount_point_is_refused_before_rendering_unless_up_to_date(tmp_path, monkeypatch):
    import errno

    mount = tmp_path / "mount"
    render(mount)
    monkeypatch.setattr(Path, "is_mount", lambda path: path == mount)
    assert render(mount)["rendered"] is False                 # up to date on a mount point: nothing to do
    with pytest.raises(IrmasError, match="mount: a mount point; render into a folder inside it"):
        render(mount, seed=1, overwrite=True)                 # the finished tree could not be renamed onto it
    monkeypatch.setattr(Path, "is_mount", lambda path: False)   # a bind mount is_mount does not see: said at the end

    real_replace = os.replace

    def busy(source, target):   # renaming the mount point itself, away or onto it
        if mount in (Path(source), Path(target)):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(source))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(IrmasError, match=r"mount: cannot put the rendered tree there \(Device or resource busy\)"):
        render(mount, seed=1, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mount"]   # the old tree kept, no partial left


def test_empty_existing_out_is_fine(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert render(out)["test_excerpts"] == 1


def test_failed_render_leaves_nothing(tmp_path, monkeypatch):
    def broken(task, root):
        raise IrmasError("boom")

    monkeypatch.setattr(synth, "_render_task", broken)
    with pytest.raises(IrmasError, match="boom"):
        render(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_a_render_with_two_workers_at_once(tmp_path):
    """Ctrl-C reaches the whole process group (irmas synth and its render processes). The render
    processes ignore it and the main process stops them at once: `irmas: interrupted`, exit 130, no
    traceback, no process left. Before, each worker finished the recordings it had in hand and the
    command took 27 to 55 s to end (2026-12-07, the default render)."""
    out = tmp_path / "mini_irmas"
    process = subprocess.Popen([sys.executable, "-m", "irmas_lib", "synth", str(out), "--soundfont", str(TIMGM)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    partial = tmp_path / f".mini_irmas.partial-{process.pid}"
    deadline = time.monotonic() + 120
    while len(list(partial.rglob("*.wav"))) < 4:                   # both workers under way
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no file rendered within 120 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    interrupted = time.monotonic()
    try:
        _, err = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert time.monotonic() - interrupted < 10, "the render went on after Ctrl-C"
    assert process.returncode == 130 and err.rstrip().endswith("irmas: interrupted") and "Traceback" not in err
    gone = time.monotonic() + 10                 # no render process left behind (reaping a zombie takes a moment)
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < gone, "a render process outlived the command"
        time.sleep(0.1)
    assert not out.exists()


def test_killed_render_is_never_complete_and_the_next_one_cleans_up(tmp_path):
    """SIGKILL in the middle: out_dir does not exist (only the hidden partial folder); the next render
    removes the leftovers of dead processes beside out_dir, and only those."""
    out = tmp_path / "mini_irmas"
    script = ("import time\n"
              "from irmas_lib import synth\n"
              "render = synth._render_task\n"
              "def slow(task, root):\n"
              "    written = render(task, root)\n"
              "    time.sleep(0.5)\n"
              "    return written\n"
              "synth._render_task = slow\n"
              f"synth.render_mini_irmas({str(out)!r}, train_per_class=2, test_excerpts=1, workers=1,"
              f" progress=False, soundfonts=[{str(TIMGM)!r}])\n")
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    partial = tmp_path / f".mini_irmas.partial-{process.pid}"
    deadline = time.monotonic() + 120
    try:
        while len(list(partial.rglob("*.wav"))) < 3:
            assert process.poll() is None, "rendering ended before it could be killed"
            assert time.monotonic() < deadline, "no file rendered within 120 s"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    assert not out.exists() and read_complete_marker(out) is None
    assert partial.is_dir() and not (partial / ".complete").exists() and not (partial / MANIFEST_FILE).exists()

    dead = process.pid                                                  # reaped above: no such process
    old = tmp_path / f".mini_irmas.old-{dead}"
    other = tmp_path / f".other_tree.partial-{dead}"                    # another output's leftover
    live = tmp_path / ".mini_irmas.partial-1"                           # pid 1 is alive: a render under way
    for folder in (old, other, live):
        folder.mkdir()
        (folder / "x.wav").write_bytes(b"x")
    summary = render(out, n=2, m=1)
    assert summary["rendered"] is True and read_complete_marker(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mini_irmas", other.name, live.name])


# ------------------------------------------------------------------------------ arguments

def test_default_sizes_are_the_teaching_ones():
    from irmas_lib.cli import SYNTH_DEFAULTS, build_parser

    defaults = inspect.signature(render_mini_irmas).parameters
    assert (defaults["train_per_class"].default, defaults["test_excerpts"].default) == (120, 120)
    assert SYNTH_DEFAULTS == {"train_per_class": 120, "test_excerpts": 120}
    assert defaults["soundfonts"].default is None                     # the default libraries
    args = build_parser().parse_args(["synth", "out"])
    assert (args.train_per_class, args.test_excerpts, args.seed, args.soundfont) == (120, 120, 0, None)
    args = build_parser().parse_args(["synth", "out", "--soundfont", "a.sf2,b.sf2"])
    assert args.soundfont == "a.sf2,b.sf2"


def test_bad_arguments_and_soundfonts_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.sf2"
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"not a soundfont" * 100)
    for soundfonts, bad in (((missing,), missing), ((TIMGM, missing), missing), (f"{TIMGM},{junk}", junk),
                            ((TIMGM, junk), junk)):
        with pytest.raises(IrmasError, match=re.escape(str(bad))):
            render(tmp_path / "out", soundfonts=soundfonts)
    twin = tmp_path / "other" / "TimGM6mb.sf2"                       # same library name as the bundled one
    with pytest.raises(IrmasError, match="share the library name 'TimGM6mb'"):
        render(tmp_path / "out", soundfonts=(TIMGM, twin))
    with pytest.raises(IrmasError, match="no soundfont"):
        render(tmp_path / "out", soundfonts="")
    with pytest.raises(IrmasError, match="must be >= 1"):
        render(tmp_path / "out", n=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.sf2"]   # nothing written


def test_every_class_program_sounds_in_the_bundled_soundfont():
    programs, drum_kits = synth._sounding_programs(bundled_soundfont())
    assert set(programs) == set(CODES) and all(programs.values())
    assert 0 in drum_kits and set(drum_kits) <= set(synth.DRUM_KITS)   # at least the standard kit


# ------------------------------------------------------------------------------ music and mixing

def test_mix_keeps_the_lead_predominant_in_every_clip():
    """Known answer: lead hard left, accompaniment hard right, loud in one window only."""
    n = 44100
    t = np.arange(2 * n) / 44100
    lead = 0.1 * np.sin(2 * np.pi * 440 * t)
    accompaniment = np.sin(2 * np.pi * 220 * t) * np.where(t < 1.0, 1.0, 0.1)
    windows = [(0, n), (n, 2 * n)]
    mix = synth._mix([(lead, 0.0, -1.0), (accompaniment, -6.0, 1.0)], windows)
    assert mix.dtype == np.float32 and mix.shape == (2 * n, 2)
    left, right = mix[:, 0], mix[:, 1]
    gaps = [20 * np.log10(synth._rms(left[a:b]) / synth._rms(right[a:b])) for a, b in windows]
    assert gaps[0] == pytest.approx(6.0, abs=0.01)        # the window where it is loudest: exactly the level
    assert gaps[1] == pytest.approx(26.0, abs=0.05)       # elsewhere quieter still
    np.testing.assert_allclose(left, lead, rtol=1e-6, atol=1e-7)    # not normalised: the lead as it came (float32)
    np.testing.assert_allclose(right, accompaniment * 0.1 * 10 ** (-6 / 20), rtol=1e-6, atol=1e-7)


def test_pan_is_constant_power():
    mono = np.ones(4)
    for pan in (-1.0, -0.3, 0.0, 0.5, 1.0):
        stereo = synth._pan(mono, pan)
        assert np.allclose((stereo ** 2).sum(axis=1), 1.0)
    assert np.allclose(synth._pan(mono, -1.0)[:, 1], 0.0) and np.allclose(synth._pan(mono, 1.0)[:, 0], 0.0)


def test_phrases_stay_in_each_instruments_range():
    rng = np.random.default_rng(0)
    for code in CODES:
        low, high = synth.PITCH_RANGE[code]
        for role in ("lead", "accompaniment"):
            for _ in range(10):
                song = synth._draw_song(rng)
                stem = synth._phrase(rng, song, code, 0, 6.0, role)
                pitches = [note.pitch for note in stem.notes]
                assert pitches and low <= min(pitches) and max(pitches) <= high, (code, role)
                assert all(20 <= note.velocity <= 127 for note in stem.notes)
                assert all(note.end > note.start for note in stem.notes)
                assert all((note.pitch - song.key) % 12 in song.scale for note in stem.notes)


def test_rendering_prints_nothing_on_stdout_under_ci(tmp_path):
    """pyfluidsynth prints where it found its library when $CI is set; a notebook's output must not
    depend on that (CI once failed notebook 01 on exactly this line). The default libraries."""
    code = ("from irmas_lib.synth import render_mini_irmas; "
            f"render_mini_irmas({str(tmp_path / 'mini')!r}, train_per_class=1, test_excerpts=1, workers=2, "
            "progress=False)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "CI": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_a_missing_soundfont_is_named_before_a_non_empty_folder(tmp_path):
    """The soundfont is checked first: a typo in --soundfont names the soundfont, whatever the folder holds."""
    out = tmp_path / "mini"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    missing = tmp_path / "typo.sf2"
    with pytest.raises(IrmasError, match=re.escape(str(missing)) + ": soundfont not found"):
        render_mini_irmas(out, train_per_class=1, test_excerpts=1, soundfonts=[missing], progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


# ------------------------------------------------------------------------------ playing one stem

def _pretty_midi_render(instrument, soundfont, n_samples):
    """How renderer 3 played a stem until 2026-12-06: a fresh synthesizer loads the soundfont, pretty_midi
    plays every event and one second more, the left channel is cut to n_samples."""
    import fluidsynth

    player = fluidsynth.Synth(samplerate=synth.SAMPLE_RATE, channels=16, **synth.SYNTH_SETTINGS)
    try:
        audio = instrument.fluidsynth(fs=synth.SAMPLE_RATE, synthesizer=player, sfid=player.sfload(str(soundfont)))
    finally:
        player.delete()
    out = np.zeros(n_samples)
    out[:min(n_samples, audio.size)] = audio[:n_samples] / 32768.0
    return out


def test_a_stem_is_the_same_samples_pretty_midi_plays():
    """The stem player stops early, shares one loaded soundfont and writes the left channel straight into
    its array: every sample must still be the one pretty_midi's Instrument.fluidsynth gives, cut short,
    at its full length and padded past it; for drums, a missing kit and an empty part too."""
    import pretty_midi

    rng = np.random.default_rng(5)
    song = synth._draw_song(rng)
    stems = [synth._phrase(rng, song, code, program, 4.0, role)
             for code, program, role in (("vio", 40, "lead"), ("pia", 0, "accompaniment"), ("sax", 65, "lead"))]
    drums = synth._drum_part(rng, song, 4.0, 100, 0)
    missing_kit = synth._drum_part(rng, song, 2.0, 90, 0)
    missing_kit.program = 127                                # no such kit in TimGM6mb: the standard one
    empty = pretty_midi.Instrument(program=0)
    missing_program = synth._phrase(rng, song, "cla", 130, 2.0, "lead")   # no such program: silence, not a piano
    cases = [(stem, n) for stem in stems + [drums, missing_kit] for n in (1000, int(3.3 * 44100), 8 * 44100)]
    cases += [(empty, 500), (missing_program, 44100)]
    for stem, n in cases:
        expected = _pretty_midi_render(stem, TIMGM, n)
        played = synth._render_stem(stem, str(TIMGM), n)
        assert played.dtype == np.float32 and played.shape == (n,)
        np.testing.assert_array_equal(played, expected, err_msg=f"{stem.name or stem.program}, {n} samples")
        assert (synth._rms(played) > synth.SILENCE_RMS) == (stem not in (empty, missing_program))


def test_a_soundfont_is_loaded_once_per_file_version_and_survives_a_failed_stem(tmp_path, capfd, monkeypatch):
    """One load per soundfont file (reloaded when the file changes); lending it to a synthesizer and
    taking it back prints nothing; a stem that fails midway gives it back too (deleting a synthesizer
    that still holds it would free it under the next stem)."""
    import pretty_midi

    copy = tmp_path / "Tim.sf2"
    copy.write_bytes(TIMGM.read_bytes())
    first = synth._loaded_soundfont(str(copy))
    assert synth._loaded_soundfont(str(copy)) == first
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert synth._loaded_soundfont(str(copy)) != first

    stem = pretty_midi.Instrument(program=40)
    stem.notes += [pretty_midi.Note(100, 60 + k, 0.2 * k, 0.2 * k + 0.3) for k in range(5)]
    expected = _pretty_midi_render(stem, copy, 44100)
    capfd.readouterr()
    np.testing.assert_array_equal(synth._render_stem(stem, str(copy), 44100), expected)
    assert capfd.readouterr() == ("", "")

    def fails(*args):
        synth_play(*args)
        raise RuntimeError("interrupted")
    synth_play = synth._play
    monkeypatch.setattr(synth, "_play", fails)
    with pytest.raises(RuntimeError, match="interrupted"):
        synth._render_stem(stem, str(copy), 44100)
    monkeypatch.setattr(synth, "_play", synth_play)
    np.testing.assert_array_equal(synth._render_stem(stem, str(copy), 44100), expected)

    early = pretty_midi.Instrument(program=0)
    early.notes.append(pretty_midi.Note(100, 60, -0.5, 0.5))
    with pytest.raises(ValueError, match="before the start"):
        synth._render_stem(early, str(copy), 100)
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF" + bytes(60))
    with pytest.raises(IrmasError, match="broken.sf2"):
        synth._loaded_soundfont(str(broken))
