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

Not a default: csound's ``sf_GMbank.sf2`` (Debian's ``csound-soundfont``) plays TimGM6mb's own recordings
of cello, clarinet, both guitars and violin, bit for bit (:func:`shared_recordings` compares the stored
samples), so beside TimGM6mb it is not a new "studio". ``irmas synth`` warns when the libraries it is
given share recordings.

The manifest (JSON)::

    {"format_version": 1, "seed": 0,
     "libraries": {"TimGM6mb": {"soundfont": "TimGM6mb.sf2", "files": 780}, "FluidR3_GM": {...}},
     "missing_libraries": [{"name": "FluidR3_GM", "looked_in": [...], "install": "..."}],
     "files": {"IRMAS-TrainingData/cel/[cel][nod][cla]0001__1.wav": "TimGM6mb", ...}}

A tree without a manifest (the real IRMAS) is "one unknown library": :func:`file_libraries` gives
:data:`UNKNOWN` for every file, and nothing else changes.

Beside the manifest, ``irmas synth`` writes ``.complete`` last: the settings it rendered with (renderer
version, seed, sizes, libraries) and a summary. :func:`rendering_settings` reads the settings, which the
feature cache's fingerprint holds.

Notebook: 01_data_exploration.ipynb (which library made a clip), 04_generalisation.ipynb (domain shift)
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from irmas_lib.errors import IrmasError

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_FILE = "mini_irmas.json"
MANIFEST_VERSION = 1
COMPLETE_MARKER = ".complete"   # beside the manifest, written last by irmas synth (JSON): {"settings", "summary"}
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


def rendering_settings(path: str | Path) -> dict | None:
    """The settings the mini-IRMAS tree covering ``path`` was rendered with (the ``settings`` of the
    ``.complete`` marker beside its manifest: the renderer's version, seed, sizes, libraries), or None
    (real IRMAS, or a tree without a readable marker).

    The feature cache's fingerprint holds them, so that files a new renderer made under the old names
    and sizes do not get the old files' features. (The ``summary`` is left out: it names the soundfonts'
    paths, which differ between machines.)

    Notebook: 03_basic_cnn.ipynb (computes the feature cache when it is missing or stale)
    """
    found = manifest_path(path)
    marker = complete_marker(found.parent) if found is not None else None
    return marker["settings"] if marker is not None else None


def complete_marker(folder: str | Path) -> dict | None:
    """The ``.complete`` marker in ``folder`` (``{"settings": {...}, "summary": ...}``), whatever renderer
    version wrote it, or None when it is absent, unreadable or has no settings.

    Notebook: 01_data_exploration.ipynb (through irmas_lib.synth.read_complete_marker)
    """
    try:
        marker = json.loads((Path(folder) / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    settings = marker.get("settings") if isinstance(marker, dict) else None
    return marker if isinstance(settings, dict) else None


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


# ---- which recordings a library plays ---------------------------------------------------------------
# A SoundFont is a RIFF file: "sdta" holds the recorded samples (16-bit PCM, or Ogg Vorbis in SF3) and
# "pdta" the tables that map a General-MIDI program (preset, bank 0) through its zones to instruments
# and through theirs to samples. Generator 41 of a preset zone names an instrument, generator 53 of an
# instrument zone a sample (SoundFont 2.04, sections 7 and 8). About thirty lines of struct reading:
# the one PyPI parser (sf2utils) logs through the root logger and has not been released since 2024.
_PDTA_RECORDS = {"phdr": "<20sHHHIII", "pbag": "<HH", "pgen": "<HH",
                 "inst": "<20sH", "ibag": "<HH", "igen": "<HH", "shdr": "<20sIIIIIBbHH"}
_INSTRUMENT_GENERATOR, _SAMPLE_GENERATOR = 41, 53


def _riff_chunks(data: bytes, start: int, end: int):
    """(id, offset of the chunk's data, size) of each chunk between ``start`` and ``end``."""
    while start + 8 <= end:
        chunk_id, size = data[start:start + 4], struct.unpack_from("<I", data, start + 4)[0]
        if start + 8 + size > end:
            raise ValueError(f"chunk {chunk_id!r} at byte {start} runs past the end of its list (truncated?)")
        yield chunk_id, start + 8, size
        start += 8 + size + (size & 1)


def program_recordings(soundfont: str | Path, programs: Iterable[int] | None = None) -> dict[int, set[str]]:
    """The recorded samples behind each General-MIDI program (bank 0) of a soundfont, each sample as the
    SHA-1 of its stored data: two libraries that play the same recording give the same digest.

    Args:
        soundfont: an SF2 (or SF3) file.
        programs: the 0-based General-MIDI programs to read (None: every program of bank 0).

    Returns:
        {program (0-127): set of digests} for each of those programs the soundfont defines in bank 0.

    Raises:
        IrmasError: a soundfont that is missing or is not a readable SoundFont (names the file).

    Notebook: 04_generalisation.ipynb
    """
    path = Path(soundfont)
    try:
        data = path.read_bytes()
        if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
            raise ValueError("no RIFF sfbk header")
        lists = {data[offset:offset + 4]: {chunk_id.decode("latin-1"): (start, size)
                                           for chunk_id, start, size in _riff_chunks(data, offset + 4, offset + size)}
                 for chunk_id, offset, size in _riff_chunks(data, 12, len(data)) if chunk_id == b"LIST"}
        sample_start = lists[b"sdta"]["smpl"][0]
        tables = {}
        for name, layout in _PDTA_RECORDS.items():
            start, size = lists[b"pdta"][name]
            tables[name] = list(struct.iter_unpack(layout, data[start:start + size]))
        phdr, pbag, pgen = tables["phdr"], tables["pbag"], tables["pgen"]
        inst, ibag, igen, shdr = tables["inst"], tables["ibag"], tables["igen"], tables["shdr"]

        digests: dict[int, str] = {}               # a sample is hashed once, however many zones play it

        def sample_digest(index: int) -> str:
            if index not in digests:
                first, end = shdr[index][1:3]      # in sample points of 2 bytes (SF3: bytes of Ogg data)
                width = 1 if shdr[index][9] & 0x10 else 2
                digests[index] = hashlib.sha1(data[sample_start + width * first:sample_start + width * end]).hexdigest()
            return digests[index]

        def instrument_samples(instrument: int) -> set[str]:
            return {sample_digest(sample) for zone in range(inst[instrument][1], inst[instrument + 1][1])
                    for operator, sample in igen[ibag[zone][0]:ibag[zone + 1][0]] if operator == _SAMPLE_GENERATOR}

        wanted = None if programs is None else {int(program) for program in programs}
        recordings: dict[int, set[str]] = {}
        for preset in range(len(phdr) - 1):        # the last record of each table is a terminator
            _name, program, bank, first_zone = phdr[preset][:4]
            if bank != 0 or (wanted is not None and program not in wanted):
                continue
            played = recordings.setdefault(program, set())
            for zone in range(first_zone, phdr[preset + 1][3]):
                for operator, instrument in pgen[pbag[zone][0]:pbag[zone + 1][0]]:
                    if operator == _INSTRUMENT_GENERATOR:
                        played |= instrument_samples(instrument)
        return recordings
    except OSError as error:
        raise IrmasError(f"{path}: cannot read the soundfont ({error.strerror or error})") from None
    except (ValueError, KeyError, IndexError, struct.error) as error:
        raise IrmasError(f"{path}: not a readable SoundFont (SF2/SF3): {error}") from None


def shared_recordings(soundfont_a: str | Path, soundfont_b: str | Path) -> pd.DataFrame:
    """Which recordings of each instrument two sample libraries share.

    Two General-MIDI libraries can be built from the same freely licensed recordings: csound's
    ``sf_GMbank.sf2`` plays TimGM6mb's cello, clarinet, guitar and violin samples bit for bit. Between
    such libraries a "cross-library" test is partly an in-library one, exactly as clips of one IRMAS
    recording on both sides of a train/test split would be.

    Returns:
        DataFrame indexed by instrument name (11 rows, IRMAS order), columns: the two library names
        (how many recorded samples each plays for the instrument's General-MIDI programs) and
        ``shared`` (how many of them are identical in both).

    Raises:
        IrmasError: a missing or unreadable soundfont (names the file).

    Notebook: 04_generalisation.ipynb
    """
    import pandas as pd

    name_a, name_b = library_name(soundfont_a), library_name(soundfont_b)
    if name_a == name_b:
        name_b += " (2)"
    a, b = _instrument_recordings(soundfont_a), _instrument_recordings(soundfont_b)
    rows = {name: {name_a: len(a[name]), name_b: len(b[name]), "shared": len(a[name] & b[name])} for name in a}
    return pd.DataFrame.from_dict(rows, orient="index")


def _instrument_recordings(soundfont: str | Path) -> dict[str, set[str]]:
    """{instrument name: digests of the samples its General-MIDI programs play}, in IRMAS order."""
    from irmas_lib.labels import INSTRUMENTS

    by_program = program_recordings(soundfont, [program for i in INSTRUMENTS for program in i.gm_programs])
    return {i.name: set().union(*(by_program.get(program, set()) for program in i.gm_programs)) for i in INSTRUMENTS}


def recordings_shared_between(soundfonts: Iterable[str | Path]) -> dict[str, dict[str, int]]:
    """Every pair of libraries that play some of the same recordings, and of which instruments.

    Returns:
        {"A & B": {instrument name: recorded samples shared}}, only pairs and instruments that share
        any (empty: the libraries are independent, as TimGM6mb and FluidR3_GM are).

    Notebook: 04_generalisation.ipynb
    """
    recordings = {library_name(path): _instrument_recordings(path) for path in soundfonts}
    names, shared = list(recordings), {}
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            common = {name: len(played & recordings[second][name]) for name, played in recordings[first].items()}
            common = {name: n for name, n in common.items() if n > 0}
            if common:
                shared[f"{first} & {second}"] = common
    return shared


def shared_recordings_message(shared: dict[str, dict[str, int]]) -> str:
    """The warning printed when two rendering libraries share recordings (:func:`recordings_shared_between`).

    Notebook: 04_generalisation.ipynb
    """
    lines = []
    for pair, instruments in shared.items():
        listed = ", ".join(f"{name} ({n} shared sample{'s' * (n != 1)})" for name, n in instruments.items())
        lines.append(f"WARNING: the sample libraries {pair} play some of the same recordings: {listed}. For "
                     f"these instruments the two libraries are one \"studio\": a model trained on one and tested "
                     f"on the other is partly tested in-library, so cross-library figures between them flatter it.")
    return "\n".join(lines)
