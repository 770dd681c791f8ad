"""mini-IRMAS rendering: IRMAS's layout, names and format, levels, determinism, safe output folder."""
from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from irmas_lib import synth
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES
from irmas_lib.synth import render_mini_irmas

CODES_RE = "|".join(CODES)
GENRES_RE = "cla|pop_roc|jaz_blu|cou_fol|lat_sou"
# Matches all 6,705 real training names (checked against ../shared/irmas_reference in a test below).
TRAIN_NAME = re.compile(rf"^(?:\d{{3}}__)?\[({CODES_RE})\](\[(?:dru|nod|---)\])?\[({GENRES_RE})\](\d{{4}})__(\d+)\.wav$")
TEST_NAME = re.compile(r"^.+-\d+\.wav$")
TEST_FOLDERS = {"IRMAS-TestingData-Part1/Part1", "IRMAS-TestingData-Part2/IRTestingData-Part2",
                "IRMAS-TestingData-Part3/Part3"}


def render(out: Path, n: int = 1, m: int = 1, seed: int = 0, workers: int = 1, **kwargs) -> dict:
    return render_mini_irmas(out, train_per_class=n, test_excerpts=m, seed=seed, workers=workers,
                             progress=False, **kwargs)


def file_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    """2 clips per class and 3 test excerpts, rendered by two worker processes."""
    root = tmp_path_factory.mktemp("mini") / "mini_irmas"
    return root, render(root, n=2, m=3, seed=0, workers=2)


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
    top = {p.name for p in root.iterdir()}
    assert top == {"IRMAS-TrainingData", "IRMAS-TestingData-Part1", "IRMAS-TestingData-Part2",
                   "IRMAS-TestingData-Part3", ".complete"}
    assert json.loads((root / ".complete").read_text()) == {         # the Makefile's `make demo` target
        "train_per_class": 2, "test_excerpts": 3, "seed": 0, "soundfont": "TimGM6mb.sf2"}
    assert summary["train_per_class"] == {code: 2 for code in CODES}
    assert summary["train_clips"] == 22 and summary["test_excerpts"] == 3
    assert summary["test_per_part"] == {"Part1": 1, "IRTestingData-Part2": 1, "Part3": 1}
    assert Path(summary["soundfont"]).name == "TimGM6mb.sf2" and summary["workers"] == 2
    assert summary["seconds"] > 0


def test_wav_format_lengths_and_stereo(mini):
    root, _ = mini
    for path in root.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (44100, 2, "PCM_16", "WAV"), path
        audio = sf.read(path, dtype="int16")[0]                        # (samples, 2)
        if "TrainingData" in path.parts[-3]:
            assert info.frames == 132300, path                       # exactly 3.0 s
        else:
            assert 5.0 <= info.frames / 44100 <= 20.0, path
        assert np.any(audio[:, 0] != audio[:, 1]), f"{path}: both channels identical"
        peak = np.abs(audio.astype(np.int32)).max()
        assert 32767 * 10 ** (-6.5 / 20) < peak < 32767, path         # normalised, never clipped
        for quarter in np.array_split(audio.astype(np.float64) / 32768, 4):   # sound all along
            assert np.sqrt(np.mean(quarter ** 2)) > 1e-3, path


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


def test_same_seed_byte_identical_whatever_the_workers(mini, tmp_path):
    root, _ = mini
    again = tmp_path / "again"
    render(again, n=2, m=3, seed=0, workers=1)
    assert file_digests(again) == file_digests(root)


def test_one_clip_per_class_one_excerpt_and_another_seed_differs(tmp_path):
    first, second = tmp_path / "seed0", tmp_path / "seed1"
    summary = render(first, seed=0)
    render(second, seed=1)
    assert summary["train_per_class"] == {code: 1 for code in CODES} and summary["test_excerpts"] == 1
    assert summary["train_recordings"] == 11
    assert len(list(first.rglob("*.wav"))) == 12 and len(list(first.rglob("*.txt"))) == 1
    assert next(first.rglob("*.txt")).parent.relative_to(first).as_posix() == "IRMAS-TestingData-Part1/Part1"
    assert not set(file_digests(first).values()) & set(file_digests(second).values())


def test_non_empty_out_refused_then_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(IrmasError, match=re.escape(str(out))):
        render(out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    summary = render(out, overwrite=True)
    assert not (out / "keep.txt").exists() and summary["train_clips"] == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]      # no partial or old tree left


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


def test_default_sizes_are_the_teaching_ones():
    from irmas_lib.cli import build_parser

    defaults = inspect.signature(render_mini_irmas).parameters
    assert (defaults["train_per_class"].default, defaults["test_excerpts"].default) == (40, 60)
    args = build_parser().parse_args(["synth", "out"])
    assert (args.train_per_class, args.test_excerpts, args.seed) == (40, 60, 0)


def test_bad_arguments_and_soundfonts_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.sf2"
    with pytest.raises(IrmasError, match=re.escape(str(missing))):
        render(tmp_path / "out", soundfont=missing)
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"not a soundfont" * 100)
    with pytest.raises(IrmasError, match=re.escape(str(junk))):
        render(tmp_path / "out", soundfont=junk)
    with pytest.raises(IrmasError, match="must be >= 1"):
        render(tmp_path / "out", n=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.sf2"]


def test_every_class_program_sounds_in_the_default_soundfont():
    programs, drums_sound = synth._sounding_programs(synth.default_soundfont())
    assert set(programs) == set(CODES) and all(programs.values()) and drums_sound


def test_mix_keeps_the_lead_predominant_in_every_clip():
    """Known answer: lead hard left, accompaniment hard right, loud in one window only."""
    n = 44100
    t = np.arange(2 * n) / 44100
    lead = 0.1 * np.sin(2 * np.pi * 440 * t)
    accompaniment = np.sin(2 * np.pi * 220 * t) * np.where(t < 1.0, 1.0, 0.1)
    windows = [(0, n), (n, 2 * n)]
    mix = synth._mix(np.random.default_rng(0), [(lead, 0.0, -1.0), (accompaniment, -6.0, 1.0)], windows)
    left, right = mix[:, 0].astype(float), mix[:, 1].astype(float)
    gaps = [20 * np.log10(synth._rms(left[a:b]) / synth._rms(right[a:b])) for a, b in windows]
    assert gaps[0] == pytest.approx(6.0, abs=0.01)        # the window where it is loudest: exactly the level
    assert gaps[1] == pytest.approx(26.0, abs=0.05)       # elsewhere quieter still
    assert 32767 * 10 ** (-6 / 20) - 1 <= np.abs(mix).max() <= 32767 * 10 ** (-1 / 20) + 1


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
                stem = synth._phrase(rng, song, code, 0, 6.0, 90, role)
                pitches = [note.pitch for note in stem.notes]
                assert pitches and low <= min(pitches) and max(pitches) <= high, (code, role)
                assert all(1 <= note.velocity <= 127 for note in stem.notes)
                assert all((note.pitch - song.key) % 12 in song.scale for note in stem.notes)


def test_training_name_pattern_matches_real_irmas(reference_files):
    names = reference_files.loc[reference_files["split"] == "train", "path"].str.rsplit("/", n=1).str[-1]
    assert all(TRAIN_NAME.match(name) for name in names)


def test_scan_of_the_output_reports_no_problems(mini):
    from irmas_lib import irmas
    root, _ = mini
    scanned = irmas.scan(root)
    assert scanned.problems == []
    clips = scanned.clips
    assert (clips["split"] == "train").sum() == 22 and (clips["split"] == "test").sum() == 3
    train = clips[clips["split"] == "train"]
    assert all(labels == (Path(rel).parent.name,) for labels, rel in zip(train["labels"], train["relpath"]))
    assert train["recording_id"].nunique() == 11


def test_rendering_prints_nothing_on_stdout_under_ci(tmp_path):
    """pyfluidsynth prints where it found its library when $CI is set; a notebook's output must not
    depend on that (CI once failed notebook 01 on exactly this line)."""
    import os
    import subprocess
    import sys

    code = ("from irmas_lib.synth import render_mini_irmas; "
            f"render_mini_irmas({str(tmp_path / 'mini')!r}, train_per_class=1, test_excerpts=1, workers=2, "
            "progress=False)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "CI": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
