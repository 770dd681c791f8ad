"""mini-IRMAS: a small data set in IRMAS's exact layout, names and format, rendered from several
General-MIDI sample libraries with the variety of many studios.

Every recording is a few MIDI stems (pretty_midi) played with some expression (velocities,
articulation, swells, vibrato, a tuning a few cents off), rendered through FluidSynth (pyfluidsynth)
from one sample library (a General-MIDI soundfont, :mod:`irmas_lib.libraries`), coloured per stem,
panned, levelled and mixed, then given a room, a master EQ, compression, a stereo width, a level and a
little noise (:mod:`irmas_lib.production`), and written as 44.1 kHz, 16-bit PCM, stereo WAV:

* ``IRMAS-TrainingData/<code>/[<code>][<drums>][<genre>]NNNN__k.wav``: 3.0-s clips, 2-4 cut from one
  longer recording (``NNNN``) in which one *predominant* instrument plays a phrase 3-12 dB louder
  than 0-2 accompanying instruments of other classes, with or without drums (``[dru]``; ``[nod]`` or
  no tag without), in one of IRMAS's five genres; a few names carry IRMAS's ``NNN__`` prefix.
* ``IRMAS-TestingData-Part{1,2,3}/{Part1,IRTestingData-Part2,Part3}/<song>-N.wav`` with ``-N.txt``
  beside it: 5-20-s excerpts where 1-3 predominant instruments play, listed one per line, each
  followed by a TAB, as in the real label files.
* ``mini_irmas.json``: the sample library of every file (:mod:`irmas_lib.libraries`), and
  ``.complete``, written last: the settings the tree was rendered with.

The libraries take turns: within each instrument, recordings alternate between them (from a
seeded starting point), and so do the test songs, so every library holds about the same share of
every instrument. Each recording or excerpt draws everything else (genre, tempo, key, programs,
pitch ranges, phrase shapes, expression, production) from its own random generator, seeded from
``(seed, kind, index)`` with :class:`numpy.random.SeedSequence`, and every stem gets a fresh
synthesizer, so the files are byte-identical for one seed whatever the number of worker processes.

Notebook: 01_data_exploration.ipynb
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

# pretty_midi imports pyfluidsynth, which prints where it found the FluidSynth library when the
# environment variable CI is set (fluidsynth.find_libfluidsynth): kept off the output of notebooks and
# of `irmas synth`, where it would differ between machines.
with contextlib.redirect_stdout(io.StringIO()):
    import pretty_midi

from irmas_lib.atomic import write_atomic
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, INSTRUMENTS, NAMES
from irmas_lib.libraries import (COMPLETE_MARKER, MANIFEST_FILE, MANIFEST_VERSION, complete_marker, default_soundfonts,
                                 library_name, missing_library_message, recordings_shared_between,
                                 shared_recordings_message)
from irmas_lib.production import apply_production, colour_stem, draw_production, draw_stem_colour

RENDERER_VERSION = 4          # in .complete: a tree rendered by another version is re-rendered
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
# MIDI pitch range per instrument (low, high), about the real instrument's: each phrase uses a part of it.
PITCH_RANGE = {"cel": (36, 76), "cla": (50, 91), "flu": (60, 96), "gac": (40, 83), "gel": (40, 86),
               "org": (36, 96), "pia": (28, 103), "sax": (44, 81), "tru": (54, 84), "vio": (55, 100),
               "voi": (45, 81)}
POLYPHONIC = frozenset({"gac", "gel", "org", "pia"})   # may play chords and arpeggios
SUSTAINED = frozenset({"cel", "cla", "flu", "org", "sax", "tru", "vio", "voi"})   # swells and vibrato
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10))   # major, natural minor
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0))   # scale degrees per bar
ARTICULATIONS = ((0.97, 1.03), (0.8, 0.95), (0.35, 0.6))      # legato, detached, staccato: share of a note's slot
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)   # GM kits: standard, room, power, electronic, TR-808, jazz, brush
SILENCE_RMS = 3e-4            # about -70 dBFS: a stem (or a clip's share of the lead) quieter than this is silent
MAX_ATTEMPTS = 20             # re-draws of a silent stem before giving up
DRUM_KICK, DRUM_SNARE, DRUM_HAT = 36, 38, 42
SYNTH_SETTINGS = {"synth.dynamic-sample-loading": 1, "synth.reverb.active": 0, "synth.chorus.active": 0}
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)$")


def render_mini_irmas(out_dir: str | Path, train_per_class: int = 120, test_excerpts: int = 120,
                      seed: int = 0, soundfonts: str | Path | Sequence[str | Path] | None = None,
                      overwrite: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """Render mini-IRMAS into ``out_dir``, in IRMAS's layout, names and format.

    The tree is rendered into a hidden sibling folder (``.<name>.partial-<pid>``) and renamed into
    place at the end, so ``out_dir`` is always either absent, as before, or complete; with
    ``overwrite`` the old tree is removed only after the new one is complete. A complete tree holds
    ``mini_irmas.json`` (the library of every file) and ``.complete`` (JSON: the settings and counts).
    When ``out_dir`` already holds a complete tree rendered with the same settings by this version,
    nothing is rendered again (``"rendered": False`` in the result). A run that was killed leaves its
    hidden partial folder; the next run removes it.

    Args:
        out_dir: folder to create; a non-empty one is refused unless ``overwrite`` (or up to date); a
            symbolic link renders where it points (the link stays); a mount point is refused.
        train_per_class: training clips per instrument (>= 1), 3.0 s each, 2-4 per recording, the
            recordings shared out between the libraries.
        test_excerpts: test excerpts (>= 1), 5-20 s each, spread over the three test parts and the libraries.
        seed: same seed -> byte-identical files, whatever ``workers``.
        soundfonts: General-MIDI SF2/SF3 files, one per sample library: a path, a list, or a
            comma-separated string. None: the default libraries (:func:`irmas_lib.libraries.default_soundfonts`:
            TimGM6mb and FluidR3_GM; a missing FluidR3_GM is warned about and recorded in the manifest).
        overwrite: replace a non-empty ``out_dir``.
        workers: processes rendering in parallel (None: ``os.cpu_count()``; 1: in this process).
            They are started with "spawn" (the same on every OS): in a script, call this under
            ``if __name__ == "__main__":`` (notebooks and the ``irmas`` command need nothing).
        progress: show a tqdm progress bar (on stderr).

    Returns:
        dict with ``out_dir`` (str), ``train_per_class`` ({code: clips}), ``train_clips``,
        ``train_recordings``, ``test_excerpts``, ``test_per_part`` ({part folder: excerpts}),
        ``libraries`` ({library: files}), ``soundfonts`` ([str]), ``missing_libraries`` ([{"name", ...}]),
        ``shared_recordings`` ({"A & B": {instrument: samples}} for libraries that play the same
        recordings, warned about with :class:`SharedRecordingsWarning`; {} for the default libraries),
        ``seconds`` (wall time), ``seed``, ``workers``, ``rendered`` (False when it was up to date).

    Raises:
        IrmasError: bad counts, a non-empty ``out_dir`` without ``overwrite``, a mount point, a
            missing or unusable soundfont, FluidSynth not installed, a folder that cannot be created
            (a file on the way, a read-only disk); each message names the file or folder. Nothing is
            written before these checks.

    Notebook: 01_data_exploration.ipynb
    """
    started = time.perf_counter()
    if int(train_per_class) < 1 or int(test_excerpts) < 1:
        raise IrmasError(f"train_per_class and test_excerpts must be >= 1 "
                         f"(got {train_per_class} and {test_excerpts})")
    out_dir = Path(out_dir).expanduser().resolve()   # a symbolic link: the tree goes where it points
    if out_dir.exists() and not out_dir.is_dir():
        raise IrmasError(f"{out_dir}: exists and is not a folder")
    soundfonts, missing = _resolve_soundfonts(soundfonts)
    names = [library_name(path) for path in soundfonts]
    settings = {"renderer_version": RENDERER_VERSION, "train_per_class": int(train_per_class),
                "test_excerpts": int(test_excerpts), "seed": int(seed), "libraries": names,
                "soundfont_bytes": [path.stat().st_size if path.is_file() else None for path in soundfonts],
                "missing_libraries": [entry["name"] for entry in missing]}
    if missing:
        warnings.warn(missing_library_message(missing), MissingLibraryWarning, stacklevel=2)
    _remove_stale_partials(out_dir)
    previous = read_complete_marker(out_dir)
    if previous is not None and previous.get("settings") == settings:
        shared = _shared_recordings(soundfonts, previous["summary"].get("shared_recordings"))
        return {**previous["summary"], "shared_recordings": shared, "out_dir": str(out_dir), "rendered": False,
                "seconds": round(time.perf_counter() - started, 2), "workers": 0}
    libraries = [_library(path) for path in soundfonts]   # IrmasError naming a bad soundfont, first
    shared = _shared_recordings(soundfonts)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise IrmasError(f"{out_dir}: folder is not empty; choose another one or pass overwrite=True (--overwrite)")
    if out_dir.is_mount():   # the finished tree is renamed onto out_dir, which a mount point cannot take
        raise IrmasError(f"{out_dir}: a mount point; render into a folder inside it")

    tasks = _plan(int(train_per_class), int(test_excerpts), int(seed), libraries)
    workers = max(1, min(int(workers or os.cpu_count() or 1), len(tasks)))
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        try:
            (partial / TRAIN_FOLDER).mkdir(parents=True)
        except OSError as error:   # a file on the way, a read-only or full disk: said before rendering anything
            raise IrmasError(f"{out_dir}: cannot create the tree there ({error.strerror}: {error.filename})") from None
        for code in CODES:
            (partial / TRAIN_FOLDER / code).mkdir(parents=True)
        for task in tasks:
            if task.kind == "test":
                (partial / task.folder).mkdir(parents=True, exist_ok=True)
        written = _run(tasks, partial, workers, progress)
        summary = {**_summarise(tasks, written, soundfonts, missing, int(seed)), "shared_recordings": shared}
        files = {relpath: task.library.name for task, relpaths in zip(tasks, written) for relpath in relpaths}
        manifest = {"format_version": MANIFEST_VERSION, "seed": int(seed),
                    "libraries": {lib.name: {"soundfont": Path(lib.soundfont).name,
                                             "files": summary["libraries"][lib.name]} for lib in libraries},
                    "missing_libraries": missing, "files": dict(sorted(files.items()))}
        write_atomic(partial / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        marker = {"settings": settings, "summary": summary}
        write_atomic(partial / COMPLETE_MARKER, (json.dumps(marker, indent=1) + "\n").encode("utf-8"))
        _move_into_place(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {**summary, "out_dir": str(out_dir), "rendered": True, "workers": workers,
            "seconds": round(time.perf_counter() - started, 2)}


def _shared_recordings(soundfonts: list[Path], known: dict | None = None) -> dict[str, dict[str, int]]:
    """{"A & B": {instrument: samples}} for libraries that play the same recordings (usually {}), warned
    about with :class:`SharedRecordingsWarning`. ``known``: what an up-to-date tree's marker recorded for
    these same files (not read again); None computes it. A check, not a gate: a soundfont whose tables it
    cannot read (FluidSynth plays it: :func:`_library` has checked) is said in a warning and rendered
    all the same."""
    shared = known
    if shared is None:
        try:
            shared = recordings_shared_between(soundfonts)
        except IrmasError as error:
            warnings.warn(f"could not compare the sample libraries' recordings: {error}", SharedRecordingsWarning,
                          stacklevel=3)
            return {}
    if shared:
        warnings.warn(shared_recordings_message(shared), SharedRecordingsWarning, stacklevel=3)
    return shared


class MissingLibraryWarning(UserWarning):
    """A default sample library (FluidR3_GM) is not installed: mini-IRMAS is rendered without it."""


class SharedRecordingsWarning(UserWarning):
    """Two of the sample libraries play some of the same recordings (csound's sf_GMbank and TimGM6mb do)."""


def read_complete_marker(out_dir: str | Path) -> dict | None:
    """The ``.complete`` marker of a mini-IRMAS tree (``{"settings", "summary"}``), or None when the tree
    is absent, incomplete, or was rendered by an older version of the renderer.

    Notebook: 01_data_exploration.ipynb
    """
    marker = complete_marker(out_dir)
    if marker is None or marker["settings"].get("renderer_version") != RENDERER_VERSION:
        return None
    return marker


def _resolve_soundfonts(soundfonts) -> tuple[list[Path], list[dict]]:
    """(soundfont paths, missing default libraries) from the ``soundfonts`` argument."""
    if soundfonts is None:
        return default_soundfonts()
    if isinstance(soundfonts, (str, os.PathLike)):
        soundfonts = [part for part in str(soundfonts).split(",") if part.strip()] if isinstance(soundfonts, str) \
            else [soundfonts]
    paths = [Path(str(path).strip()).expanduser().absolute() for path in soundfonts]
    if not paths:
        raise IrmasError("no soundfont given")
    names = [library_name(path) for path in paths]
    for name in names:
        if names.count(name) > 1:
            raise IrmasError(f"two soundfonts share the library name {name!r} (the file name without"
                             f" extension): {', '.join(str(p) for p in paths if library_name(p) == name)}")
    return paths, []


def _summarise(tasks: list["_Task"], written: list[list[str]], soundfonts: list[Path], missing: list[dict],
               seed: int) -> dict:
    per_class = {code: 0 for code in CODES}
    per_part = {part: 0 for _, part in TEST_FOLDERS}
    per_library = {library_name(path): 0 for path in soundfonts}
    for task, relpaths in zip(tasks, written):
        per_library[task.library.name] += len(relpaths)
        if task.kind == "train":
            per_class[task.code] += len(relpaths)
        else:
            per_part[Path(task.folder).name] += 1
    return {"train_per_class": per_class, "train_clips": sum(per_class.values()),
            "train_recordings": sum(task.kind == "train" for task in tasks),
            "test_excerpts": sum(per_part.values()), "test_per_part": per_part, "libraries": per_library,
            "soundfonts": [str(path) for path in soundfonts], "missing_libraries": missing, "seed": seed}


def _remove_stale_partials(out_dir: Path) -> None:
    """Remove ``.<name>.partial-<pid>`` / ``.old-<pid>`` folders beside out_dir left by killed runs."""
    if not out_dir.parent.is_dir():
        return
    for path in out_dir.parent.iterdir():
        match = _PARTIAL.match(path.name)
        if match and match["name"] == out_dir.name and path.is_dir() and not _pid_alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False          # our own: a leftover from an earlier call in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class _Library:
    """One sample library: its name, soundfont, and what sounds in it."""
    name: str
    soundfont: str
    programs: dict                # {code: sounding GM programs}
    drum_kits: tuple[int, ...]    # GM drum kits (bank 128 presets) that sound; () when none does


@dataclass(frozen=True)
class _Task:
    """One recording (2-4 training clips) or one test excerpt: everything a worker needs."""
    kind: str                     # "train" | "test"
    seed_key: tuple[int, ...]     # spawn key of its random generator
    seed: int
    library: _Library
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


def _plan(train_per_class: int, test_excerpts: int, seed: int, libraries: list[_Library]) -> list[_Task]:
    """All tasks, longest (test excerpts) first; the plan depends only on the counts, seed and libraries.

    The libraries take turns from a random starting point: test songs in order, and each instrument's
    recordings in order, so each library gets about the same share of every instrument.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    n_libraries = len(libraries)
    tasks = []
    # Songs of 1-4 excerpts, round-robin over the three parts (at least three songs when possible).
    song_size_max = max(1, min(4, test_excerpts // 3))
    excerpt, song = 0, 0
    first = int(rng.integers(n_libraries))
    while excerpt < test_excerpts:
        size = min(int(rng.integers(1, song_size_max + 1)), test_excerpts - excerpt)
        parent, part = TEST_FOLDERS[song % 3]
        library = libraries[(first + song) % n_libraries]
        for k in range(1, size + 1):
            tasks.append(_Task("test", (1, excerpt), seed, library, folder=f"{parent}/{part}",
                               name=f"{song + 1:02d} - mini-IRMAS song {song + 1}-{k}"))
            excerpt += 1
        song += 1
    number = 1
    for class_index, code in enumerate(CODES):
        first = int(rng.integers(n_libraries))
        for j, size in enumerate(_recording_sizes(rng, train_per_class)):
            tasks.append(_Task("train", (0, class_index, j), seed, libraries[(first + j) % n_libraries],
                               folder=f"{TRAIN_FOLDER}/{code}", code=code, number=number, n_clips=size))
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
        # spawn: safe even when the caller has threads (FluidSynth, torch) running, same on every OS. The
        # workers ignore Ctrl-C (a terminal sends it to them too); the main process stops them at once
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
            try:
                futures = {pool.submit(_render_task, task, str(root)): i for i, task in enumerate(tasks)}
                for future in as_completed(futures):
                    relpaths = future.result()
                    results[futures[future]] = relpaths
                    bar.update(len(relpaths))
            except BaseException:      # a failed task, Ctrl-C: the partial tree is dropped, so stop now
                processes = list((getattr(pool, "_processes", None) or {}).values())   # (shutdown forgets them)
                pool.shutdown(wait=False, cancel_futures=True)
                for process in processes:  # Python 3.14 has pool.terminate_workers(); a recording takes seconds
                    process.terminate()
                raise
    return results


def _move_into_place(partial: Path, out_dir: Path) -> None:
    """Rename the complete tree to out_dir; an old tree is removed only once the new one is there.
    IrmasError naming out_dir when it cannot be renamed (a bind mount, which is_mount does not see)."""
    try:
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
    except OSError as error:
        raise IrmasError(f"{out_dir}: cannot put the rendered tree there ({error.strerror}); render into "
                         "a folder inside it") from None


# ------------------------------------------------------------------------------------- soundfont

def _require_fluidsynth() -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # quiet under $CI, as pretty_midi's import above
            import fluidsynth  # noqa: F401  (pyfluidsynth; loads the FluidSynth shared library)
    except (ImportError, OSError) as error:
        raise IrmasError(f"the FluidSynth library is missing ({error}); install it: Debian/Ubuntu "
                         "`apt-get update && apt-get install libfluidsynth3`, conda `conda install -c conda-forge "
                         "fluidsynth`, macOS `brew install fluid-synth`") from None


def _library(soundfont: Path) -> _Library:
    """Check a soundfont and find what sounds in it: IrmasError naming the file when it is missing,
    unreadable, or lacks every program of some instrument."""
    programs, drum_kits = _sounding_programs(soundfont)
    return _Library(library_name(soundfont), str(soundfont), programs, drum_kits)


def _sounding_programs(soundfont: Path) -> tuple[dict, tuple[int, ...]]:
    """Which GM programs of each class make sound in this soundfont, and which GM drum kits do.

    Returns ({code: (program, ...)}, (kit, ...)). IrmasError naming the soundfont when it is missing,
    unreadable, or lacks every program of some instrument.
    """
    if not soundfont.is_file():
        raise IrmasError(f"{soundfont}: soundfont not found")
    _require_fluidsynth()
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=SAMPLE_RATE)
    try:
        sfid = synth.sfload(str(soundfont))
        if sfid == -1:
            raise IrmasError(f"{soundfont}: not a readable SoundFont (SF2/SF3)")
        # pretty_midi falls back to kit 0 for a missing kit: ask FluidSynth which presets exist
        kits = tuple(kit for kit in DRUM_KITS if synth.sfpreset_name(sfid, 128, kit) is not None)
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
    sounding_kits = []
    for kit in kits:
        stem = pretty_midi.Instrument(program=kit, is_drum=True)
        stem.notes += [pretty_midi.Note(100, DRUM_KICK, 0.0, 0.1), pretty_midi.Note(100, DRUM_SNARE, 0.25, 0.35)]
        if _rms(_render_stem(stem, str(soundfont), SAMPLE_RATE)) > SILENCE_RMS:
            sounding_kits.append(kit)
    return programs, tuple(sounding_kits)


def _render_stem(instrument: pretty_midi.Instrument, soundfont: str, n_samples: int) -> np.ndarray:
    """One instrument through a fresh FluidSynth synthesizer -> float32 (n_samples,) in [-1, 1].

    A fresh synthesizer per stem keeps renders independent of one another (FluidSynth's dither
    carries state from one call to the next), hence reproducible whatever the scheduling. The
    synthesizer plays the soundfont this process has loaded once (:func:`_loaded_soundfont`) instead
    of loading it again: the same sounds, without parsing the file for every stem; a program the
    soundfont lacks stays silent, as it did when each synthesizer loaded the file. Samples load on
    demand, and reverb and chorus are off (the room comes later, irmas_lib.production).
    """
    import fluidsynth

    sfont = _loaded_soundfont(soundfont)
    fluid = _fluid()
    synth = fluidsynth.Synth(samplerate=SAMPLE_RATE, channels=16, **SYNTH_SETTINGS)
    try:
        _unset_programs(synth)   # or adding the soundfont would put a piano on every channel
        sfid = fluid.fluid_synth_add_sfont(synth.synth, sfont)
        if sfid == -1:
            raise IrmasError(f"{soundfont}: FluidSynth could not add the loaded soundfont to a synthesizer")
        return _play(instrument, synth, sfid, n_samples)
    finally:
        # Take the soundfont back before deleting the synthesizer, which would free it (remove is a no-op
        # when it was never added); with no program on any channel, that selects nothing and warns of nothing.
        _unset_programs(synth)
        fluid.fluid_synth_remove_sfont(synth.synth, sfont)
        synth.delete()


def _unset_programs(synth) -> None:
    """No preset on any of the synthesizer's 16 channels (as after ``sfload(update_midi_preset=0)``)."""
    for channel in range(16):
        synth.program_unset(channel)


def _play(instrument: pretty_midi.Instrument, synth, sfid: int, n_samples: int) -> np.ndarray:
    """The first n_samples of ``instrument.fluidsynth(synthesizer=synth, sfid=sfid)`` (pretty_midi
    0.2.x), left channel / 32768 -> float32 (n_samples,), zero-padded (float32 holds every value exactly).

    The same FluidSynth calls in the same order and sizes, so the same samples; but it writes the left
    channel straight into one array (pyfluidsynth copies every chunk three times), and it stops at the
    first event at or after n_samples, where pretty_midi plays every remaining event and one more
    second that the caller would cut off.
    """
    from fluidsynth import fluid_synth_write_s16     # declared by pyfluidsynth: pointers as c_void_p

    left = np.zeros(n_samples, dtype=np.int16)
    if not instrument.notes:
        return left.astype(np.float32)
    fs = float(SAMPLE_RATE)
    channel = 9 if instrument.is_drum else 0
    if instrument.is_drum:
        if synth.program_select(channel, sfid, 128, instrument.program) == -1:
            synth.program_select(channel, sfid, 128, 0)      # no such kit: the standard one, as pretty_midi
    else:
        synth.program_select(channel, sfid, 0, instrument.program)
    events = []
    for note in instrument.notes:
        events += [[note.start, "note on", note.pitch, note.velocity], [note.end, "note off", note.pitch]]
    events += [[bend.time, "pitch bend", bend.pitch] for bend in instrument.pitch_bends]
    events += [[cc.time, "control change", cc.number, cc.value] for cc in instrument.control_changes]
    events.sort(key=lambda event: (event[0], event[1] != "note off"))
    current_time = events[0][0]
    if current_time < 0:                                     # would write before the array
        raise ValueError(f"{instrument}: an event at {current_time} s, before the start")
    for event, end in zip(events[:-1], [event[0] for event in events[1:]]):
        event[0] = end - event[0]                            # from each event to the next, in seconds
    events[-1][0] = 1.0
    right = np.empty(0, dtype=np.int16)                      # the right channel: written, not kept
    for event in events:
        start = int(fs * current_time)
        if start >= n_samples:
            break
        if event[1] == "note on":
            synth.noteon(channel, event[2], event[3])
        elif event[1] == "note off":
            synth.noteoff(channel, event[2])
        elif event[1] == "pitch bend":
            synth.pitch_bend(channel, event[2])
        else:
            synth.cc(channel, event[2], event[3])
        length = int(fs * (current_time + event[0])) - start
        if right.size < length:
            right = np.empty(2 * length, dtype=np.int16)
        if start + length <= n_samples:
            fluid_synth_write_s16(synth.synth, length, left.ctypes.data + 2 * start, 0, 1, right.ctypes.data, 0, 1)
        else:                                                # the last chunk, past the end: keep its start
            tail = np.empty(length, dtype=np.int16)
            fluid_synth_write_s16(synth.synth, length, tail.ctypes.data, 0, 1, right.ctypes.data, 0, 1)
            left[start:] = tail[:n_samples - start]
        current_time += event[0]
    return left * np.float32(1 / 32768)


_LOADED_SOUNDFONTS: dict[tuple, tuple] = {}   # (path, device, inode, size, mtime) -> (holding synthesizer, fluid_sfont_t*)


def _loaded_soundfont(soundfont: str):
    """The soundfont loaded once in this process (a FluidSynth ``fluid_sfont_t*``), held by a synthesizer
    that never plays; loaded again when the file changes. IrmasError naming the file when FluidSynth
    cannot load it."""
    import fluidsynth

    stat = os.stat(soundfont)
    key = (os.path.abspath(soundfont), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _LOADED_SOUNDFONTS:
        holder = fluidsynth.Synth(samplerate=SAMPLE_RATE, channels=16, **SYNTH_SETTINGS)
        sfid = holder.sfload(soundfont)
        if sfid == -1:
            holder.delete()
            raise IrmasError(f"{soundfont}: cannot load the soundfont")
        _LOADED_SOUNDFONTS[key] = (holder, fluidsynth.fluid_synth_get_sfont_by_id(holder.synth, sfid))
    return _LOADED_SOUNDFONTS[key][1]


@functools.cache
def _fluid():
    """The FluidSynth library (ctypes), with the two functions pyfluidsynth does not declare (once per process)."""
    import ctypes

    import fluidsynth

    library = fluidsynth._fl
    for name in ("fluid_synth_add_sfont", "fluid_synth_remove_sfont"):
        function = getattr(library, name)
        function.argtypes, function.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int
    return library


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
    tuning_cents: float = 0.0     # how far the whole recording is from A = 440 Hz

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
                 PROGRESSIONS[rng.integers(len(PROGRESSIONS))], float(rng.uniform(-30.0, 30.0)))


def _pitch_window(rng: np.random.Generator, code: str) -> tuple[int, int]:
    """A random 1-2.5-octave part of the instrument's range (varies the register between phrases)."""
    low, high = PITCH_RANGE[code]
    span = min(int(rng.integers(12, 31)), high - low)
    start = int(rng.integers(low, high - span + 1))
    return start, start + span


@dataclass(frozen=True)
class _Performance:
    """How one player plays one part: loudness, note lengths, swells and vibrato."""
    velocity: int                 # central MIDI velocity
    spread: int                   # +- per note
    articulation: tuple[float, float]   # share of a note's slot that sounds (legato ... staccato)
    contour: str                  # loudness over the phrase: flat, crescendo, diminuendo, swell, waves
    vibrato: int                  # modulation wheel (CC 1), 0-100


def _draw_performance(rng: np.random.Generator, code: str, role: str) -> _Performance:
    velocity = int(rng.integers(60, 121) if role == "lead" else rng.integers(40, 101))
    articulation = ARTICULATIONS[rng.choice(3, p=(0.4, 0.4, 0.2))]
    contour = str(rng.choice(("flat", "crescendo", "diminuendo", "swell", "waves")))
    vibrato = int(rng.integers(0, 101)) if code in SUSTAINED and code != "org" and rng.random() < 0.6 else 0
    return _Performance(velocity, int(rng.integers(3, 16)), articulation, contour, vibrato)


def _note(rng: np.random.Generator, how: _Performance, pitch: int, start: float, slot: float) -> pretty_midi.Note:
    """A note in a slot of ``slot`` seconds, sounding for the performer's share of it."""
    velocity = min(max(int(how.velocity + rng.integers(-how.spread, how.spread + 1)), 20), 127)
    length = slot * rng.uniform(*how.articulation)
    return pretty_midi.Note(velocity, int(pitch), start, start + max(length, 0.05))


def _melody(rng, song: _Song, low: int, high: int, seconds: float, how: _Performance) -> list[pretty_midi.Note]:
    """A line on the song's scale, in one of several shapes: steps, leaps, scale runs, a repeated motif."""
    pitches = song.scale_pitches(low, high)
    shape = str(rng.choice(("steps", "leaps", "runs", "motif")))
    steps = {"steps": (-2, -1, -1, 0, 1, 1, 2), "leaps": (-5, -4, -3, -2, 2, 3, 4, 5),
             "runs": (-1, 1), "motif": (-2, -1, 1, 2)}[shape]
    lengths = np.array((0.25, 0.5, 1.0, 1.5, 2.0))                     # in beats
    weights = rng.dirichlet(np.ones(len(lengths)) * 0.7)               # this player's rhythmic habits
    if shape == "runs":
        weights = np.array((0.35, 0.45, 0.1, 0.05, 0.05))
    motif = [(int(rng.choice(steps)), float(rng.choice(lengths, p=weights))) for _ in range(int(rng.integers(3, 6)))]
    index, t, notes, direction = int(rng.integers(len(pitches))), 0.0, [], 1
    while t < seconds:
        if shape == "motif":
            step, beats = motif[len(notes) % len(motif)]
            if len(notes) % len(motif) == 0 and notes:
                index += int(rng.choice((-2, -1, 1, 2)))               # the motif again, a step away
        else:
            step, beats = int(rng.choice(steps)), float(rng.choice(lengths, p=weights))
            if shape == "runs":
                if rng.random() < 0.15:
                    direction = -direction
                step = direction
        slot = beats * song.beat_s
        if notes and rng.random() < 0.08:                              # a short breath, at most one beat
            t += min(slot, song.beat_s)
            continue
        index = index + step
        if not 0 <= index < len(pitches):                              # turn back at the edge of the range
            direction, index = -direction, int(np.clip(index - 2 * step, 0, len(pitches) - 1))
        notes.append(_note(rng, how, pitches[index], t, slot))
        t += slot
    return notes


def _chords(rng, song: _Song, low: int, high: int, seconds: float, how: _Performance,
            arpeggio: bool) -> list[pretty_midi.Note]:
    """The song's chords in [low, high]: block chords on 1, 2 or 4 hits per bar, or arpeggios in eighths
    or sixteenths, rising, falling or both ways."""
    if arpeggio:
        step = song.beat_s / float(rng.choice((2, 2, 4)))
        pattern = str(rng.choice(("up", "down", "updown")))
    else:
        step = 4 * song.beat_s / int(rng.choice((1, 2, 4)))
    t, k, notes = 0.0, 0, []
    while t < seconds:
        tones = [p for p in range(low, high + 1) if p % 12 in song.chord_classes(t)][:int(rng.integers(3, 6))]
        if arpeggio:
            order = {"up": tones, "down": tones[::-1], "updown": tones + tones[-2:0:-1]}[pattern]
            notes.append(_note(rng, how, order[k % len(order)], t, 2 * step))
        else:
            notes += [_note(rng, how, p, t, step) for p in tones]
        t, k = t + step, k + 1
    return notes


def _pad(rng, song: _Song, low: int, high: int, seconds: float, how: _Performance) -> list[pretty_midi.Note]:
    """A slow accompanying line: one chord tone per half bar or bar, moving to the nearest one."""
    step, t, notes, previous = float(rng.choice((2, 4))) * song.beat_s, 0.0, [], (low + high) // 2
    while t < seconds:
        tones = [p for p in range(low, high + 1) if p % 12 in song.chord_classes(t)]
        previous = min(tones, key=lambda p: (abs(p - previous), p))
        notes.append(_note(rng, how, previous, t, step))
        t += step
    return notes


def _expression(rng, how: _Performance, seconds: float, tuning_cents: float) -> tuple[list, list]:
    """Control changes (expression CC 11 following the contour every 0.1 s, modulation CC 1) and one
    pitch bend (the recording's tuning plus the player's own few cents; bend range +-2 semitones)."""
    times = np.arange(0.0, seconds, 0.1)
    x = times / max(seconds, 1e-9)
    shape = {"flat": np.ones_like(x), "crescendo": 0.55 + 0.45 * x, "diminuendo": 1.0 - 0.45 * x,
             "swell": 0.6 + 0.4 * np.sin(np.pi * x),
             "waves": 0.75 + 0.25 * np.sin(2 * np.pi * x * rng.uniform(1.0, 3.0) + rng.uniform(0, 2 * np.pi))}[how.contour]
    levels = np.clip(np.round(127 * shape), 1, 127).astype(int)        # round half to even, as round()
    controls = [pretty_midi.ControlChange(11, int(v), float(t)) for t, v in zip(times, levels)]
    if how.vibrato:
        controls.append(pretty_midi.ControlChange(1, how.vibrato, 0.0))
    cents = tuning_cents + rng.uniform(-6.0, 6.0)
    bends = [pretty_midi.PitchBend(int(np.clip(round(cents / 200.0 * 8192), -8192, 8191)), 0.0)]
    return controls, bends


def _phrase(rng, song: _Song, code: str, program: int, seconds: float, role: str) -> pretty_midi.Instrument:
    """One instrument's part: role "lead" (melody, or chords/arpeggios for polyphonic instruments)
    or "accompaniment" (chords for polyphonic instruments, a slow line otherwise), played with a
    performance of its own (:class:`_Performance`)."""
    low, high = _pitch_window(rng, code)
    how = _draw_performance(rng, code, role)
    stem = pretty_midi.Instrument(program=program, name=NAMES[code])
    style = rng.random()
    if code in POLYPHONIC and (role == "accompaniment" or style < 0.4):
        stem.notes = _chords(rng, song, low, high, seconds, how, arpeggio=style < 0.2 or rng.random() < 0.3)
    elif role == "lead":
        stem.notes = _melody(rng, song, low, high, seconds, how)
    else:
        stem.notes = _pad(rng, song, low, high, seconds, how)
    stem.control_changes, stem.pitch_bends = _expression(rng, how, seconds, song.tuning_cents)
    return stem


def _drum_part(rng, song: _Song, seconds: float, velocity: int, kit: int) -> pretty_midi.Instrument:
    """Kick on 1 and 3 (sometimes the and of 3), snare on 2 and 4, closed hi-hat on eighths, on a GM kit."""
    stem = pretty_midi.Instrument(program=kit, is_drum=True, name="drums")
    how = _Performance(velocity, 10, (1.0, 1.0), "flat", 0)
    eighth, i = song.beat_s / 2, 0
    extra_kick = rng.random() < 0.5
    while i * eighth < seconds:
        t = i * eighth
        stem.notes.append(_note(rng, dataclasses.replace(how, velocity=int(0.6 * velocity)), DRUM_HAT, t, 0.05))
        if i % 4 == 0 or (extra_kick and i % 8 == 5):
            stem.notes.append(_note(rng, how, DRUM_KICK, t, 0.1))
        if i % 8 in (2, 6):
            stem.notes.append(_note(rng, how, DRUM_SNARE, t, 0.1))
        i += 1
    return stem


def _sounding_stem(rng, draw: Callable[[], pretty_midi.Instrument], soundfont: str, n_samples: int,
                   windows: list[tuple[int, int]], what: str) -> np.ndarray:
    """Render draw() until the stem is audible in every (start, end) sample window; (n_samples,)."""
    for _ in range(MAX_ATTEMPTS):
        audio = _render_stem(draw(), soundfont, n_samples)
        if all(_rms(audio[a:b]) > SILENCE_RMS for a, b in windows):
            return audio
    raise IrmasError(f"{soundfont}: {what} stayed silent after {MAX_ATTEMPTS} attempts")


def _pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan, pan in [-1 (left), 1 (right)]: the (left, right) gains."""
    angle = (pan + 1) * np.pi / 4
    return float(np.cos(angle)), float(np.sin(angle))   # Python floats: they keep float32 audio float32


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan, pan in [-1 (left), 1 (right)]: (samples,) -> (samples, 2)."""
    left, right = _pan_gains(pan)
    return np.stack([left * mono, right * mono], axis=1)


def _mix(stems: list[tuple[np.ndarray, float, float]], windows: list[tuple[int, int]]) -> np.ndarray:
    """Stems (audio (samples,), level in dB relative to the first stem, pan) -> float32 (samples, 2).

    Each stem's level holds in every (start, end) window (each clip later cut from the mix): in the
    window where it is loudest against the first stem, it sits exactly ``level`` dB from it. Stems
    are panned (as :func:`_pan`) and summed in place; the level of the whole is set later
    (:func:`irmas_lib.production.apply_production`).
    """
    lead = stems[0][0]
    mix = np.zeros((2, lead.size), dtype=np.float32)   # channels first while summing: contiguous rows
    for audio, level_db, pan in stems:
        ratio = min(_rms(lead[a:b]) / max(_rms(audio[a:b]), 1e-12) for a, b in windows)
        scaled = audio * np.float32(ratio * 10 ** (level_db / 20))
        left, right = _pan_gains(pan)
        mix[0] += left * scaled
        mix[1] += right * scaled
    return mix.T                                   # (samples, 2), a view


def _draw_stems(rng, task: _Task, song: _Song, lead_codes: list[str], accompaniment: list[str],
                seconds: float, n_samples: int, lead_windows: list[tuple[int, int]]) -> list:
    """Render the predominant instruments (0 dB / -3..0 dB), accompaniment (-12..-3 dB), drums, each
    through its own microphone colouration."""
    stems = []
    library = task.library

    def part(code: str, role: str):
        def draw():
            program = int(rng.choice(library.programs[code]))
            return _phrase(rng, song, code, program, seconds, role)
        return draw

    def coloured(audio: np.ndarray) -> np.ndarray:
        return colour_stem(audio, draw_stem_colour(rng))

    for k, code in enumerate(lead_codes):
        audio = _sounding_stem(rng, part(code, "lead"), library.soundfont, n_samples, lead_windows,
                               f"{NAMES[code]} (predominant)")
        level = 0.0 if k == 0 else rng.uniform(-3.0, 0.0)
        pan = float(rng.choice((-1, 1)) * rng.uniform(0.1, 0.5))   # never dead centre: channels differ
        stems.append((coloured(audio), level, pan))
    for code in accompaniment:
        audio = _sounding_stem(rng, part(code, "accompaniment"), library.soundfont, n_samples,
                               [(0, n_samples)], f"{NAMES[code]} (accompaniment)")
        stems.append((coloured(audio), -rng.uniform(3.0, 12.0), rng.uniform(-0.8, 0.8)))
    if library.drum_kits and rng.random() < DRUMS_PROBABILITY[song.genre]:
        velocity, kit = int(rng.integers(70, 116)), int(rng.choice(library.drum_kits))
        audio = _sounding_stem(rng, lambda: _drum_part(rng, song, seconds, velocity, kit), library.soundfont,
                               n_samples, [(0, n_samples)], "drums")
        stems.append((coloured(audio), -rng.uniform(3.0, 12.0), rng.uniform(-0.2, 0.2)))
    return stems


# ------------------------------------------------------------------------------- one phrase, two libraries

def same_phrase(code: str, soundfonts: Sequence[str | Path] | None = None, seconds: float = 4.0,
                seed: int = 0) -> dict[str, np.ndarray]:
    """The same phrase of one instrument (same notes, velocities and expression) rendered dry from each
    sample library: what changes when only the samples change.

    Args:
        code: the instrument ("cel", ...).
        soundfonts: one per library (None: the default libraries, :func:`irmas_lib.libraries.default_soundfonts`).
        seconds: length of the phrase.
        seed: which phrase.

    Returns:
        ``{library name: float32 (samples,) mono at 44.1 kHz}``, each scaled to a peak of 0.5.

    Raises:
        IrmasError: an unknown code, a missing or unusable soundfont (named), FluidSynth missing.

    Notebook: 01_data_exploration.ipynb
    """
    if code not in CODES:
        raise IrmasError(f"unknown instrument code {code!r}; expected one of {', '.join(CODES)}")
    paths, _ = _resolve_soundfonts(soundfonts)
    libraries = [_library(path) for path in paths]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, CODES.index(code))))
    song = _draw_song(rng, genre="cla")
    # one program every library has, so that only the samples differ
    common = sorted(set.intersection(*(set(lib.programs[code]) for lib in libraries)))
    program = int(rng.choice(common)) if common else int(libraries[0].programs[code][0])
    stem = _phrase(rng, song, code, program, seconds, "lead")
    n_samples = int(seconds * SAMPLE_RATE)
    rendered = {}
    for library in libraries:
        audio = _render_stem(stem, library.soundfont, n_samples)
        rendered[library.name] = audio * (0.5 / max(float(np.max(np.abs(audio))), 1e-9))
    return rendered


# -------------------------------------------------------------------------------------- the tasks

def _render_task(task: _Task, root: str) -> list[str]:
    """Render one recording (its 2-4 clips) or one test excerpt (+ label file); relpaths written."""
    rng = np.random.default_rng(np.random.SeedSequence(task.seed, spawn_key=task.seed_key))
    song = _draw_song(rng)
    production = draw_production(rng)
    folder = Path(root) / task.folder
    if task.kind == "train":
        # Clips cut from one recording: start after the first notes, small gaps between clips (renderer 4:
        # shorter lead-in and gaps than renderer 3's 0.2-1.0 s and 0-1.5 s, less audio rendered to be cut away).
        starts, t = [], rng.uniform(0.2, 0.5)
        for _ in range(task.n_clips):
            starts.append(int(t * SAMPLE_RATE))
            t += CLIP_SECONDS + rng.uniform(0.0, 0.5)
        n_samples = starts[-1] + CLIP_SAMPLES + int(0.2 * SAMPLE_RATE)
        others = [c for c in CODES if c != task.code]
        accompaniment = [others[i] for i in rng.choice(len(others), int(rng.integers(0, 3)), replace=False)]
        windows = [(a, a + CLIP_SAMPLES) for a in starts]
        stems = _draw_stems(rng, task, song, [task.code], accompaniment, n_samples / SAMPLE_RATE,
                            n_samples, windows)
        drums = len(stems) > 1 + len(accompaniment)
        mix = apply_production(_mix(stems, windows), production, rng)
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
    mix = apply_production(_mix(stems, [(offset, offset + n_samples)]), production, rng)[offset:]
    sf.write(folder / f"{task.name}.wav", mix, SAMPLE_RATE, subtype="PCM_16")
    (folder / f"{task.name}.txt").write_bytes("".join(f"{code}\t\n" for code in codes).encode())   # "gel\t\nvoi\t\n"
    return [f"{task.folder}/{task.name}.wav"]
