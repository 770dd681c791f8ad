"""mini-IRMAS: a small data set in IRMAS's exact layout, names and format, rendered from a soundfont.

Every recording is a few MIDI stems (pretty_midi) rendered through FluidSynth (pyfluidsynth) from a
General-MIDI soundfont (by default ``TimGM6mb.sf2``, which ships with pretty_midi), panned, levelled
and mixed in numpy, then written as 44.1 kHz, 16-bit PCM, stereo WAV:

* ``IRMAS-TrainingData/<code>/[<code>][<drums>][<genre>]NNNN__k.wav``: 3.0-s clips, 2-4 cut from one
  longer recording (``NNNN``) in which one *predominant* instrument plays a phrase 3-12 dB louder
  than 0-2 accompanying instruments of other classes, with or without drums (``[dru]``; ``[nod]`` or
  no tag without), in one of IRMAS's five genres; a few names carry IRMAS's ``NNN__`` prefix.
* ``IRMAS-TestingData-Part{1,2,3}/{Part1,IRTestingData-Part2,Part3}/<song>-N.wav`` with ``-N.txt``
  beside it: 5-20-s excerpts where 1-3 predominant instruments play, listed one per line, each
  followed by a TAB, as in the real label files.

Each recording or excerpt draws everything (genre, tempo, key, programs, pitch ranges, velocities,
pans, levels) from its own random generator, seeded from ``(seed, kind, index)`` with
:class:`numpy.random.SeedSequence`, and every stem gets a fresh synthesizer, so the files are
byte-identical for one seed whatever the number of worker processes.

Notebook: 01_data_exploration.ipynb
"""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

# pretty_midi imports pyfluidsynth, which prints where it found the FluidSynth library when the
# environment variable CI is set (fluidsynth.find_libfluidsynth): kept off the output of notebooks and
# of `irmas synth`, where it would differ between machines.
with contextlib.redirect_stdout(io.StringIO()):
    import pretty_midi

from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, INSTRUMENTS, NAMES

SAMPLE_RATE = 44100
CLIP_SECONDS = 3.0
CLIP_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)   # 132,300
TEST_SECONDS = (5.0, 20.0)
TRAIN_FOLDER = "IRMAS-TrainingData"
TEST_FOLDERS = (("IRMAS-TestingData-Part1", "Part1"),
                ("IRMAS-TestingData-Part2", "IRTestingData-Part2"),   # sic, as in the real archive
                ("IRMAS-TestingData-Part3", "Part3"))
GENRES = ("cla", "pop_roc", "jaz_blu", "cou_fol", "lat_sou")
GENRE_WEIGHTS = (0.3, 0.3, 0.2, 0.1, 0.1)
DRUMS_PROBABILITY = {"cla": 0.0, "pop_roc": 0.8, "jaz_blu": 0.6, "cou_fol": 0.4, "lat_sou": 0.8}
TEMPO_BPM = {"cla": (60, 120), "pop_roc": (90, 140), "jaz_blu": (70, 160),
             "cou_fol": (80, 130), "lat_sou": (90, 130)}
# Sensible MIDI pitch range per instrument (low, high): each phrase uses a random part of it.
PITCH_RANGE = {"cel": (36, 72), "cla": (50, 86), "flu": (60, 93), "gac": (40, 76), "gel": (40, 79),
               "org": (36, 84), "pia": (36, 96), "sax": (46, 77), "tru": (55, 82), "vio": (55, 96),
               "voi": (48, 79)}
POLYPHONIC = frozenset({"gac", "gel", "org", "pia"})   # may play chords and arpeggios
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10))   # major, natural minor
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0))   # scale degrees per bar
SILENCE_RMS = 3e-4            # about -70 dBFS: a stem (or a clip's share of the lead) quieter than this is silent
MAX_ATTEMPTS = 20             # re-draws of a silent stem before giving up
DRUM_KICK, DRUM_SNARE, DRUM_HAT = 36, 38, 42
SYNTH_SETTINGS = {"synth.dynamic-sample-loading": 1, "synth.reverb.active": 0, "synth.chorus.active": 0}
COMPLETE_MARKER = ".complete"  # written last inside the tree (the Makefile's target for `make demo`)


def default_soundfont() -> Path:
    """pretty_midi's bundled General-MIDI soundfont, ``<site-packages>/pretty_midi/TimGM6mb.sf2``.

    Notebook: 01_data_exploration.ipynb
    """
    return Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"


def render_mini_irmas(out_dir: str | Path, train_per_class: int = 40, test_excerpts: int = 60,
                      seed: int = 0, soundfont: str | Path | None = None, overwrite: bool = False,
                      workers: int | None = None, progress: bool = True) -> dict:
    """Render mini-IRMAS into ``out_dir``, in IRMAS's layout, names and format.

    The tree is rendered into a hidden sibling folder (``.<name>.partial-<pid>``) and renamed into
    place at the end, so ``out_dir`` is always either absent, as before, or complete; with
    ``overwrite`` the old tree is removed only after the new one is complete. A complete tree holds
    ``out_dir/.complete`` (JSON: the counts, seed and soundfont it was rendered with).

    Args:
        out_dir: folder to create; a non-empty one is refused unless ``overwrite``.
        train_per_class: training clips per instrument (>= 1), 3.0 s each, 2-4 per recording.
        test_excerpts: test excerpts (>= 1), 5-20 s each, spread over the three test parts.
        seed: same seed -> byte-identical files, whatever ``workers``.
        soundfont: a General-MIDI SF2/SF3 file (None: pretty_midi's TimGM6mb.sf2).
        overwrite: replace a non-empty ``out_dir``.
        workers: processes rendering in parallel (None: ``os.cpu_count()``; 1: in this process).
            They are started with "spawn" (the same on every OS): in a script, call this under
            ``if __name__ == "__main__":`` (notebooks and the ``irmas`` command need nothing).
        progress: show a tqdm progress bar (on stderr).

    Returns:
        dict with ``out_dir`` (str), ``train_per_class`` ({code: clips}), ``train_clips``,
        ``train_recordings``, ``test_excerpts``, ``test_per_part`` ({part folder: excerpts}),
        ``seconds`` (wall time), ``soundfont`` (str), ``seed``, ``workers``.

    Raises:
        IrmasError: bad counts, a non-empty ``out_dir`` without ``overwrite``, a missing or unusable
            soundfont, FluidSynth not installed; each message names the file or folder.

    Notebook: 01_data_exploration.ipynb
    """
    started = time.perf_counter()
    if int(train_per_class) < 1 or int(test_excerpts) < 1:
        raise IrmasError(f"train_per_class and test_excerpts must be >= 1 "
                         f"(got {train_per_class} and {test_excerpts})")
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise IrmasError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise IrmasError(f"{out_dir}: folder is not empty; choose another one or pass overwrite=True (--overwrite)")
    soundfont = Path(soundfont).expanduser().absolute() if soundfont is not None else default_soundfont()
    programs, drums_sound = _sounding_programs(soundfont)

    tasks = _plan(int(train_per_class), int(test_excerpts), int(seed), str(soundfont), programs, drums_sound)
    workers = max(1, min(int(workers or os.cpu_count() or 1), len(tasks)))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for code in CODES:
            (partial / TRAIN_FOLDER / code).mkdir(parents=True)
        for task in tasks:
            if task.kind == "test":
                (partial / task.folder).mkdir(parents=True, exist_ok=True)
        written = _run(tasks, partial, workers, progress)
        settings = {"train_per_class": int(train_per_class), "test_excerpts": int(test_excerpts),
                    "seed": int(seed), "soundfont": soundfont.name}
        (partial / COMPLETE_MARKER).write_text(json.dumps(settings) + "\n", encoding="utf-8")
        _move_into_place(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)

    per_class = {code: 0 for code in CODES}
    per_part = {part: 0 for _, part in TEST_FOLDERS}
    for task, relpaths in zip(tasks, written):
        if task.kind == "train":
            per_class[task.code] += len(relpaths)
        else:
            per_part[Path(task.folder).name] += 1
    return {"out_dir": str(out_dir), "train_per_class": per_class, "train_clips": sum(per_class.values()),
            "train_recordings": sum(task.kind == "train" for task in tasks),
            "test_excerpts": sum(per_part.values()), "test_per_part": per_part,
            "seconds": round(time.perf_counter() - started, 2), "soundfont": str(soundfont),
            "seed": int(seed), "workers": workers}


# ----------------------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class _Task:
    """One recording (2-4 training clips) or one test excerpt: everything a worker needs."""
    kind: str                     # "train" | "test"
    seed_key: tuple[int, ...]     # spawn key of its random generator
    seed: int
    soundfont: str
    programs: dict                # {code: sounding GM programs}
    drums_sound: bool
    folder: str                   # relative to the output root
    code: str = ""                # train: the predominant instrument
    number: int = 0               # train: the recording number NNNN
    n_clips: int = 0              # train: clips cut from the recording
    name: str = ""                # test: file stem


def _recording_sizes(rng: np.random.Generator, n_clips: int) -> list[int]:
    """Split n_clips into recordings of 2-4 clips each (a single clip only when n_clips == 1)."""
    sizes = []
    while n_clips > 0:
        size = min(int(rng.integers(2, 5)), n_clips)
        if n_clips - size == 1:                     # never leave one clip alone
            size = size + 1 if size < 4 else size - 1
        sizes.append(size)
        n_clips -= size
    return sizes


def _plan(train_per_class: int, test_excerpts: int, seed: int, soundfont: str, programs: dict,
          drums_sound: bool) -> list[_Task]:
    """All tasks, longest (test excerpts) first; the plan itself depends only on the counts and seed."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    common = dict(seed=seed, soundfont=soundfont, programs=programs, drums_sound=drums_sound)
    tasks = []
    # Songs of 1-4 excerpts, round-robin over the three parts (at least three songs when possible).
    song_size_max = max(1, min(4, test_excerpts // 3))
    excerpt, song = 0, 0
    while excerpt < test_excerpts:
        size = min(int(rng.integers(1, song_size_max + 1)), test_excerpts - excerpt)
        parent, part = TEST_FOLDERS[song % 3]
        for k in range(1, size + 1):
            tasks.append(_Task("test", (1, excerpt), folder=f"{parent}/{part}",
                               name=f"{song + 1:02d} - mini-IRMAS song {song + 1}-{k}", **common))
            excerpt += 1
        song += 1
    number = 1
    for class_index, code in enumerate(CODES):
        for j, size in enumerate(_recording_sizes(rng, train_per_class)):
            tasks.append(_Task("train", (0, class_index, j), folder=f"{TRAIN_FOLDER}/{code}", code=code,
                               number=number, n_clips=size, **common))
            number += 1
    return tasks


def _run(tasks: list[_Task], root: Path, workers: int, progress: bool) -> list[list[str]]:
    """Render every task into root, in this process (workers == 1) or a pool; relpaths per task."""
    from tqdm.auto import tqdm

    results: list[list[str] | None] = [None] * len(tasks)
    n_files = sum(task.n_clips if task.kind == "train" else 1 for task in tasks)
    with tqdm(total=n_files, desc="rendering mini-IRMAS", unit="file", disable=not progress) as bar:
        if workers == 1:
            for i, task in enumerate(tasks):
                results[i] = _render_task(task, str(root))
                bar.update(len(results[i]))
            return results
        # spawn: safe even when the caller has threads (FluidSynth, torch) running, same on every OS
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_render_task, task, str(root)): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                try:
                    relpaths = future.result()
                except BaseException:
                    pool.shutdown(cancel_futures=True)     # don't start the rest
                    raise
                results[futures[future]] = relpaths
                bar.update(len(relpaths))
    return results


def _move_into_place(partial: Path, out_dir: Path) -> None:
    """Rename the complete tree to out_dir; an old tree is removed only once the new one is there."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out_dir)


# ------------------------------------------------------------------------------------- soundfont

def _require_fluidsynth() -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # quiet under $CI, as pretty_midi's import above
            import fluidsynth  # noqa: F401  (pyfluidsynth; loads the FluidSynth shared library)
    except (ImportError, OSError) as error:
        raise IrmasError(f"the FluidSynth library is missing ({error}); install it: Debian/Ubuntu "
                         "`apt-get update && apt-get install libfluidsynth3`, conda `conda install -c conda-forge "
                         "fluidsynth`, macOS `brew install fluid-synth`") from None


def _sounding_programs(soundfont: Path) -> tuple[dict, bool]:
    """Which GM programs of each class make sound in this soundfont, and whether the drum kit does.

    Returns ({code: (program, ...)}, drums_sound). IrmasError naming the soundfont when it is missing,
    unreadable, or lacks every program of some instrument.
    """
    if not soundfont.is_file():
        raise IrmasError(f"{soundfont}: soundfont not found")
    _require_fluidsynth()
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=SAMPLE_RATE)
    try:
        if synth.sfload(str(soundfont)) == -1:
            raise IrmasError(f"{soundfont}: not a readable SoundFont (SF2/SF3)")
    finally:
        synth.delete()
    programs = {}
    for instrument in INSTRUMENTS:
        low, high = PITCH_RANGE[instrument.code]
        sounding = []
        for program in instrument.gm_programs:
            stem = pretty_midi.Instrument(program=program)
            stem.notes.append(pretty_midi.Note(100, (low + high) // 2, 0.0, 0.5))
            if _rms(_render_stem(stem, str(soundfont), SAMPLE_RATE)) > SILENCE_RMS:
                sounding.append(program)
        if not sounding:
            raise IrmasError(f"{soundfont}: no General-MIDI program of {instrument.name} "
                             f"({', '.join(map(str, instrument.gm_programs))}) makes a sound")
        programs[instrument.code] = tuple(sounding)
    kit = pretty_midi.Instrument(program=0, is_drum=True)
    kit.notes += [pretty_midi.Note(100, DRUM_KICK, 0.0, 0.1), pretty_midi.Note(100, DRUM_SNARE, 0.25, 0.35)]
    drums_sound = _rms(_render_stem(kit, str(soundfont), SAMPLE_RATE)) > SILENCE_RMS
    return programs, drums_sound


def _render_stem(instrument: pretty_midi.Instrument, soundfont: str, n_samples: int) -> np.ndarray:
    """One instrument through a fresh FluidSynth synthesizer -> float64 (n_samples,) in [-1, 1].

    A fresh synthesizer per stem keeps renders independent of one another (FluidSynth's dither
    carries state from one call to the next), hence reproducible whatever the scheduling. Samples
    load on demand, and reverb and chorus are off: together twice as fast.
    """
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=SAMPLE_RATE, channels=16, **SYNTH_SETTINGS)
    try:
        sfid = synth.sfload(soundfont)
        if sfid == -1:
            raise IrmasError(f"{soundfont}: cannot load the soundfont")
        audio = instrument.fluidsynth(fs=SAMPLE_RATE, synthesizer=synth, sfid=sfid)   # left channel, int16 scale
    finally:
        synth.delete()
    out = np.zeros(n_samples)
    out[:min(n_samples, audio.size)] = audio[:n_samples] / 32768.0
    return out


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0


# ------------------------------------------------------------------------------------------- music

@dataclass(frozen=True)
class _Song:
    """The musical frame the stems of one recording share."""
    genre: str
    beat_s: float                 # seconds per beat
    key: int                      # pitch class of the tonic, 0 = C
    scale: tuple[int, ...]        # semitones above the tonic
    progression: tuple[int, ...]  # scale degree of each bar's chord, 4 beats per bar

    def chord_classes(self, t: float) -> set[int]:
        """Pitch classes of the triad sounding at time t (seconds)."""
        degree = self.progression[int(t / (4 * self.beat_s)) % len(self.progression)]
        return {(self.key + self.scale[(degree + step) % 7]) % 12 for step in (0, 2, 4)}

    def scale_pitches(self, low: int, high: int) -> np.ndarray:
        return np.array([p for p in range(low, high + 1) if (p - self.key) % 12 in self.scale])


def _draw_song(rng: np.random.Generator, genre: str | None = None) -> _Song:
    genre = genre or GENRES[rng.choice(len(GENRES), p=GENRE_WEIGHTS)]
    bpm = rng.uniform(*TEMPO_BPM[genre])
    return _Song(genre, 60.0 / bpm, int(rng.integers(12)), SCALES[rng.integers(len(SCALES))],
                 PROGRESSIONS[rng.integers(len(PROGRESSIONS))])


def _pitch_window(rng: np.random.Generator, code: str) -> tuple[int, int]:
    """A random 1-1.6-octave part of the instrument's range (varies the register between phrases)."""
    low, high = PITCH_RANGE[code]
    span = min(int(rng.integers(12, 20)), high - low)
    start = int(rng.integers(low, high - span + 1))
    return start, start + span


def _note(rng: np.random.Generator, velocity: int, pitch: int, start: float, end: float) -> pretty_midi.Note:
    return pretty_midi.Note(int(np.clip(velocity + rng.integers(-10, 11), 25, 127)), int(pitch), start, end)


def _melody(rng, song: _Song, low: int, high: int, seconds: float, velocity: int) -> list[pretty_midi.Note]:
    """A stepwise line on the song's scale: eighths to halves, short rests, legato."""
    pitches = song.scale_pitches(low, high)
    index, t, notes = int(rng.integers(len(pitches))), 0.0, []
    while t < seconds:
        duration = float(rng.choice((0.5, 1.0, 1.0, 1.5, 2.0))) * song.beat_s
        if notes and rng.random() < 0.1:            # a short breath, at most one beat
            t += min(duration, song.beat_s)
            continue
        index = int(np.clip(index + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, len(pitches) - 1))
        notes.append(_note(rng, velocity, pitches[index], t, t + 0.95 * duration))
        t += duration
    return notes


def _chords(rng, song: _Song, low: int, high: int, seconds: float, velocity: int,
            arpeggio: bool) -> list[pretty_midi.Note]:
    """The song's chords in [low, high]: block chords on 1, 2 or 4 hits per bar, or eighth-note arpeggios."""
    step = song.beat_s / 2 if arpeggio else 4 * song.beat_s / int(rng.choice((1, 2, 4)))
    t, k, notes = 0.0, 0, []
    while t < seconds:
        tones = [p for p in range(low, high + 1) if p % 12 in song.chord_classes(t)][:4]
        if arpeggio:
            notes.append(_note(rng, velocity, tones[k % len(tones)], t, t + 2 * step))
        else:
            notes += [_note(rng, velocity, p, t, t + 0.95 * step) for p in tones]
        t, k = t + step, k + 1
    return notes


def _pad(rng, song: _Song, low: int, high: int, seconds: float, velocity: int) -> list[pretty_midi.Note]:
    """A slow accompanying line: one chord tone per half bar, moving to the nearest one."""
    step, t, notes, previous = 2 * song.beat_s, 0.0, [], (low + high) // 2
    while t < seconds:
        tones = [p for p in range(low, high + 1) if p % 12 in song.chord_classes(t)]
        previous = min(tones, key=lambda p: (abs(p - previous), p))
        notes.append(_note(rng, velocity, previous, t, t + 0.98 * step))
        t += step
    return notes


def _phrase(rng, song: _Song, code: str, program: int, seconds: float, velocity: int,
            role: str) -> pretty_midi.Instrument:
    """One instrument's part: role "lead" (melody, or chords/arpeggios for polyphonic instruments)
    or "accompaniment" (chords for polyphonic instruments, a slow line otherwise)."""
    low, high = _pitch_window(rng, code)
    stem = pretty_midi.Instrument(program=program, name=NAMES[code])
    style = rng.random()
    if code in POLYPHONIC and (role == "accompaniment" or style < 0.4):
        stem.notes = _chords(rng, song, low, high, seconds, velocity, arpeggio=role == "lead" and style < 0.2)
    elif role == "lead":
        stem.notes = _melody(rng, song, low, high, seconds, velocity)
    else:
        stem.notes = _pad(rng, song, low, high, seconds, velocity)
    return stem


def _drum_part(rng, song: _Song, seconds: float, velocity: int) -> pretty_midi.Instrument:
    """Kick on 1 and 3 (sometimes the and of 3), snare on 2 and 4, closed hi-hat on eighths."""
    kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    eighth, i = song.beat_s / 2, 0
    extra_kick = rng.random() < 0.5
    while i * eighth < seconds:
        t = i * eighth
        kit.notes.append(_note(rng, int(0.6 * velocity), DRUM_HAT, t, t + 0.05))
        if i % 4 == 0 or (extra_kick and i % 8 == 5):
            kit.notes.append(_note(rng, velocity, DRUM_KICK, t, t + 0.1))
        if i % 8 in (2, 6):
            kit.notes.append(_note(rng, velocity, DRUM_SNARE, t, t + 0.1))
        i += 1
    return kit


def _sounding_stem(rng, draw: Callable[[], pretty_midi.Instrument], soundfont: str, n_samples: int,
                   windows: list[tuple[int, int]], what: str) -> np.ndarray:
    """Render draw() until the stem is audible in every (start, end) sample window; (n_samples,)."""
    for _ in range(MAX_ATTEMPTS):
        audio = _render_stem(draw(), soundfont, n_samples)
        if all(_rms(audio[a:b]) > SILENCE_RMS for a, b in windows):
            return audio
    raise IrmasError(f"{soundfont}: {what} stayed silent after {MAX_ATTEMPTS} attempts")


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan, pan in [-1 (left), 1 (right)]: (samples,) -> (samples, 2)."""
    angle = (pan + 1) * np.pi / 4
    return np.stack([np.cos(angle) * mono, np.sin(angle) * mono], axis=1)


def _mix(rng, stems: list[tuple[np.ndarray, float, float]], windows: list[tuple[int, int]]) -> np.ndarray:
    """Stems (audio (samples,), level in dB relative to the first stem, pan) -> int16 (samples, 2).

    Each stem's level holds in every (start, end) window (each clip later cut from the mix): in the
    window where it is loudest against the first stem, it sits exactly ``level`` dB from it. Stems
    are panned and summed, and the mix is scaled to a peak of -6 to -1 dBFS (no clipping, varied
    loudness).
    """
    lead = stems[0][0]
    mix = 0.0
    for audio, level_db, pan in stems:
        ratio = min(_rms(lead[a:b]) / max(_rms(audio[a:b]), 1e-12) for a, b in windows)
        mix = mix + _pan(audio * ratio * 10 ** (level_db / 20), pan)
    peak = 10 ** (rng.uniform(-6.0, -1.0) / 20)
    mix = mix * (peak / np.max(np.abs(mix)))
    return np.round(mix * 32767).astype(np.int16)


def _draw_stems(rng, task: _Task, song: _Song, lead_codes: list[str], accompaniment: list[str],
                seconds: float, n_samples: int, lead_windows: list[tuple[int, int]]) -> list:
    """Render the predominant instruments (0 dB / -3..0 dB), accompaniment (-12..-3 dB), drums."""
    stems = []

    def part(code: str, role: str):
        def draw():
            program = int(rng.choice(task.programs[code]))
            return _phrase(rng, song, code, program, seconds, int(rng.integers(55, 116)), role)
        return draw

    for k, code in enumerate(lead_codes):
        audio = _sounding_stem(rng, part(code, "lead"), task.soundfont, n_samples, lead_windows,
                               f"{NAMES[code]} (predominant)")
        level = 0.0 if k == 0 else rng.uniform(-3.0, 0.0)
        pan = float(rng.choice((-1, 1)) * rng.uniform(0.1, 0.5))   # never dead centre: channels differ
        stems.append((audio, level, pan))
    for code in accompaniment:
        audio = _sounding_stem(rng, part(code, "accompaniment"), task.soundfont, n_samples,
                               [(0, n_samples)], f"{NAMES[code]} (accompaniment)")
        stems.append((audio, -rng.uniform(3.0, 12.0), rng.uniform(-0.8, 0.8)))
    if task.drums_sound and rng.random() < DRUMS_PROBABILITY[song.genre]:
        velocity = int(rng.integers(70, 116))
        audio = _sounding_stem(rng, lambda: _drum_part(rng, song, seconds, velocity), task.soundfont,
                               n_samples, [(0, n_samples)], "drums")
        stems.append((audio, -rng.uniform(3.0, 12.0), rng.uniform(-0.2, 0.2)))
    return stems


# -------------------------------------------------------------------------------------- the tasks

def _render_task(task: _Task, root: str) -> list[str]:
    """Render one recording (its 2-4 clips) or one test excerpt (+ label file); relpaths written."""
    rng = np.random.default_rng(np.random.SeedSequence(task.seed, spawn_key=task.seed_key))
    song = _draw_song(rng)
    folder = Path(root) / task.folder
    if task.kind == "train":
        # Clips cut from one recording: start after the first notes, small gaps between clips.
        starts, t = [], rng.uniform(0.2, 1.0)
        for _ in range(task.n_clips):
            starts.append(int(t * SAMPLE_RATE))
            t += CLIP_SECONDS + rng.uniform(0.0, 1.5)
        n_samples = starts[-1] + CLIP_SAMPLES + int(0.2 * SAMPLE_RATE)
        others = [c for c in CODES if c != task.code]
        accompaniment = [others[i] for i in rng.choice(len(others), int(rng.integers(0, 3)), replace=False)]
        windows = [(a, a + CLIP_SAMPLES) for a in starts]
        stems = _draw_stems(rng, task, song, [task.code], accompaniment, n_samples / SAMPLE_RATE,
                            n_samples, windows)
        drums = len(stems) > 1 + len(accompaniment)
        mix = _mix(rng, stems, windows)
        drums_tag = "[dru]" if drums else str(rng.choice(("[nod]", "")))
        prefix = f"{int(rng.integers(1, 200)):03d}__" if drums_tag and rng.random() < 0.15 else ""
        names = [f"{prefix}[{task.code}]{drums_tag}[{song.genre}]{task.number:04d}__{k}.wav"
                 for k in range(1, task.n_clips + 1)]
        for name, (a, b) in zip(names, windows):
            sf.write(folder / name, mix[a:b], SAMPLE_RATE, subtype="PCM_16")
        return [f"{task.folder}/{name}" for name in names]

    # Test excerpt: 1-3 predominant instruments (as often as in IRMAS: mostly 1 or 2), maybe drums.
    seconds = round(rng.uniform(*TEST_SECONDS), 2)
    n_samples = int(seconds * SAMPLE_RATE)
    offset = int(0.5 * SAMPLE_RATE)               # cut from inside the song: sound from the first sample
    n_labels = int(rng.choice((1, 2, 3), p=(0.45, 0.45, 0.1)))
    codes = [CODES[i] for i in sorted(rng.choice(len(CODES), n_labels, replace=False))]
    stems = _draw_stems(rng, task, song, codes, [], (offset + n_samples) / SAMPLE_RATE,
                        offset + n_samples, [(offset, offset + n_samples)])
    mix = _mix(rng, [(audio[offset:], level, pan) for audio, level, pan in stems], [(0, n_samples)])
    sf.write(folder / f"{task.name}.wav", mix, SAMPLE_RATE, subtype="PCM_16")
    (folder / f"{task.name}.txt").write_bytes("".join(f"{code}\t\n" for code in codes).encode())   # "gel\t\nvoi\t\n"
    return [f"{task.folder}/{task.name}.wav"]
