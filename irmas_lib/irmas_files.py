"""Scanning an IRMAS tree into one table of clips, and counting what is in it (`irmas info`).

The rule, file by file (``.wav`` and ``.txt`` are matched case-insensitively; hidden files and
folders and ``__MACOSX`` are skipped):

* **Test excerpt**: a ``.wav`` with a ``.txt`` of the same stem beside it. Stems are paired exactly
  first, then after ``unicodedata.normalize("NFC", ...)`` (36 real names are NFD). The ``.txt``
  holds one instrument code per line; trailing tabs/spaces, CRLF, a UTF-8 BOM, blank lines and
  repeated codes are tolerated.
* **Training clip**: any other ``.wav`` in a folder named after a class code (``cel/`` ... ``voi/``),
  named ``[NNN__][code][drums][genre]NNNN__k.wav``: ``[cel][cla]0001__1.wav``,
  ``046__[cel][nod][cla]0034__2.wav``. The label is the folder *and* the first tag; they must agree.
  The tags after the instrument: a drums tag ``[dru]`` (drums), ``[nod]`` (no drums), ``[---]``
  (unknown) or none (``"none"``), and a genre tag, always the *last* one: ``[cla]`` there is
  classical, not clarinet (``"none"`` when a name carries no genre). The recording id is the class
  plus the number before ``__k`` (``"cel/0034"``); the optional ``NNN__`` prefix is not part of it,
  so the 12 recordings stored with and without a prefix share one id.
* **Problem** (collected, never fatal; the file is left out of the table): undecodable or
  zero-length audio, a ``.wav`` without its ``.txt`` outside the class folders, a ``.txt`` without
  its ``.wav``, an empty label file, an unknown instrument code (in a label file or a first tag), a
  training-style name in a folder that is not a class code (unknown class folder), a first tag that
  disagrees with its folder, a name in a class folder not in the form above; and an archive that
  ``irmas download`` has not finished moving into this tree (its temporary folder in
  ``.irmas-download/``, :func:`irmas_lib.download.unfinished_extractions`). Odd but valid audio
  (mono, any sample rate, 8-bit, any length) is *not* a problem: it is converted when read
  (:func:`irmas_lib.audio.read_audio`).

Only audio headers are read (:func:`irmas_lib.audio.audio_info`), so scanning all 9,579 files is quick.

**mirdata track ids** (column ``track_id``): mirdata names a training clip by what follows its last
tag, ``[cla][cla]0189__2.wav`` -> ``"0189__2"`` (:func:`training_track_id`), and numbers the test
excerpts ``"1"`` to ``"2874"`` in the order its index script happened to walk the folders, which no
file name tells. So without mirdata's index a training clip gets its id from its name and a test
excerpt gets None; with the index (:func:`read_mirdata_index`, ``irmas info --mirdata-index``)
every clip gets the id the index gives its path, and a clip the index lacks gets None. mirdata's
training ids are not unique: 33 ids are shared by two real clips (mirdata indexes one of each pair)
and the 12 ``[---]`` clips have no entry, so its index holds 6,660 of the 6,705 training clips.

**Validation** (:func:`validate`, ``irmas info --validate``): each WAV's size against its own header
(a truncated or padded file, or a data size a streaming writer left open), and, with mirdata's index,
every file it lists present with the md5 it publishes. Nobody publishes per-file sizes of IRMAS
(Zenodo gives the archives' md5), so sizes are checked against the headers and contents against
mirdata's md5 list.

Notebook: 01_data_exploration.ipynb
"""
from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from irmas_lib.audio import STREAMED_WAV_DATA_SIZE, AudioError, audio_info, printable_path, wav_layout
from irmas_lib.download import unfinished_extractions
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, N_CLASSES, NAMES, class_index

CLIP_COLUMNS = ("path", "relpath", "split", "labels", "drums", "genre", "recording_id",
                "duration_s", "sample_rate", "channels", "track_id")
DRUMS_TAGS = ("dru", "nod", "---", "none")
DRUMS_NAMES = {"dru": "drums", "nod": "no drums", "---": "unknown", "none": "no tag"}
GENRE_NAMES = {"cla": "classical", "pop_roc": "pop/rock", "jaz_blu": "jazz/blues",
               "cou_fol": "country/folk", "lat_sou": "latin/soul", "none": "no tag"}

# [NNN__] then one or more [tags] then the recording number, "__" and the excerpt number.
_TRAINING_NAME = re.compile(r"^(?:\d+__)?((?:\[[^\[\]]*\])+)(\d+)__(\d+)$")
_TAG = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class Problem:
    """A file that cannot serve: its path relative to the scanned root (posix) and why."""
    path: str
    error: str


@dataclass
class IrmasScan:
    """What :func:`scan` found.

    clips: one row per usable clip, columns ``CLIP_COLUMNS`` (see :func:`scan`), sorted by split then relpath.
    problems: the files left out, sorted by path.
    root: the scanned folder.
    """
    clips: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    root: Path | None = None


def parse_training_name(stem: str) -> dict:
    """Parse a training clip's file stem (no ``.wav``).

    Returns a dict ``{"code", "drums", "genre", "recording"}``, e.g. for
    ``"046__[cel][nod][cla]0034__2"``: ``{"code": "cel", "drums": "nod", "genre": "cla", "recording": "0034"}``.
    Raises ValueError (with the reason) for a name not in IRMAS's training form or an unknown first tag.

    Notebook: 01_data_exploration.ipynb
    """
    match = _TRAINING_NAME.match(stem)
    if match is None:
        raise ValueError("training clip name not in IRMAS form [code][drums][genre]NNNN__k.wav")
    code, *tags = _TAG.findall(match.group(1))
    if code not in CODES:
        raise ValueError(f"unknown instrument code [{code}] in file name")
    drums = next((tag for tag in tags if tag in DRUMS_TAGS), "none")
    genres = [tag for tag in tags if tag not in DRUMS_TAGS]
    return {"code": code, "drums": drums, "genre": genres[-1] if genres else "none",
            "recording": match.group(2)}


def training_track_id(stem: str) -> str:
    """mirdata's track id of a training clip from its file stem: the recording and excerpt numbers after
    the last tag, ``"046__[cel][nod][cla]0034__2"`` -> ``"0034__2"``. ValueError for a name not in IRMAS's
    training form.

    Notebook: 01_data_exploration.ipynb
    """
    match = _TRAINING_NAME.match(stem)
    if match is None:
        raise ValueError("training clip name not in IRMAS form [code][drums][genre]NNNN__k.wav")
    return f"{match.group(2)}__{match.group(3)}"


def parse_label_text(text: str) -> tuple[str, ...]:
    """Contents of a test excerpt's ``.txt`` -> instrument codes in IRMAS order, e.g. ``"gel\\t\\nvoi\\t\\n"`` -> ``("gel", "voi")``.

    Tolerates trailing tabs/spaces, CRLF, a BOM, blank lines and repeats. Raises ValueError for an
    empty file or an unknown code.

    Notebook: 01_data_exploration.ipynb
    """
    codes = {line.strip() for line in text.lstrip("\ufeff").splitlines()} - {""}
    if not codes:
        raise ValueError("empty label file")
    unknown = sorted(codes - set(CODES))
    if unknown:
        raise ValueError(f"unknown instrument code {', '.join(repr(c) for c in unknown)} in label file")
    return tuple(sorted(codes, key=class_index))


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def require_folder(path: Path) -> None:
    """IrmasError naming ``path`` (as given, before links are resolved) unless it is a folder: "no such folder"
    when nothing is there (a mistyped root), "a link to nothing", or "not a folder" when something else is."""
    if not path.is_dir():
        what = "not a folder" if path.exists() else "a link to nothing" if path.is_symlink() else "no such folder"
        raise IrmasError(f"{path}: {what}")


def _walk(root: Path):
    """Yield (folder, wav names, txt names) for every folder under root, skipping hidden ones and __MACOSX."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        wavs = [f for f in files if f.lower().endswith(".wav") and not f.startswith(".")]
        txts = [f for f in files if f.lower().endswith(".txt") and not f.startswith(".")]
        yield Path(folder), wavs, txts


def scan(root: str | Path) -> IrmasScan:
    """Scan an IRMAS tree (the training archive, any test part, both, or any folder in between).

    Args:
        root: the folder to search recursively.

    Returns:
        IrmasScan whose ``clips`` DataFrame has one row per usable clip:
        ``path`` (absolute str), ``relpath`` (posix, relative to root, as on disk: NFD names stay NFD),
        ``split`` ("train" | "test"),
        ``labels`` (tuple of codes in IRMAS order), ``drums`` ("dru" | "nod" | "---" | "none"; None for
        test), ``genre`` (str; None for test), ``recording_id`` ("cel/0034"; None for test),
        ``duration_s`` (float), ``sample_rate`` (int), ``channels`` (int), ``track_id`` (mirdata's id
        from the name for a training clip, None for a test excerpt: see :func:`with_mirdata_track_ids`);
        and whose ``problems`` list the files left out (see the module docstring for the rule).
        Raises IrmasError only when root itself is not a folder (or does not exist).

    Notebook: 01_data_exploration.ipynb
    """
    require_folder(Path(root).expanduser())
    root = Path(root).expanduser().resolve()
    rows: list[dict] = []
    problems: list[Problem] = []

    for folder, wavs, txts in _walk(root):
        rel_folder = folder.relative_to(root)

        def rel(name: str) -> str:
            return (rel_folder / name).as_posix()

        txt_by_stem = {name[:-4]: name for name in txts}
        txt_by_nfc = {_nfc(stem): name for stem, name in txt_by_stem.items()}
        paired_txts: set[str] = set()
        for wav in wavs:
            stem = wav[:-4]
            txt = txt_by_stem.get(stem) or txt_by_nfc.get(_nfc(stem))
            row = {"path": str(folder / wav), "relpath": rel(wav), "drums": None, "genre": None,
                   "recording_id": None, "track_id": None}
            try:
                if txt is not None:
                    paired_txts.add(txt)
                    try:
                        text = (folder / txt).read_text(encoding="utf-8", errors="replace")
                        row.update(split="test", labels=parse_label_text(text))
                    except (OSError, ValueError) as error:
                        problems.append(Problem(rel(txt), str(error)))
                        continue
                elif folder.name in CODES:
                    parsed = parse_training_name(stem)
                    if parsed["code"] != folder.name:
                        raise ValueError(f"first tag [{parsed['code']}] disagrees with class folder {folder.name!r}")
                    row.update(split="train", labels=(parsed["code"],), drums=parsed["drums"],
                               genre=parsed["genre"], recording_id=f"{parsed['code']}/{parsed['recording']}",
                               track_id=training_track_id(stem))
                elif _TRAINING_NAME.match(stem):
                    raise ValueError(f"training clip in unknown class folder {folder.name!r}"
                                     f" (expected one of {', '.join(CODES)})")
                else:
                    raise ValueError(".wav without its .txt label file")
                info = audio_info(folder / wav)
            except (ValueError, AudioError) as error:
                problems.append(Problem(rel(wav), str(error).replace(printable_path(folder / wav) + ": ", "")))
                continue
            row.update(duration_s=info.frames / info.samplerate, sample_rate=int(info.samplerate),
                       channels=int(info.channels))
            rows.append(row)
        for txt in txts:
            if txt not in paired_txts:
                problems.append(Problem(rel(txt), "label file without its .wav"))
    for download_root in (root, *root.parents):   # the tree irmas download made, or a folder inside it
        for staging in unfinished_extractions(download_root):
            if download_root == root or (staging / root.relative_to(download_root)).exists():
                problems.append(Problem(Path(os.path.relpath(staging, root)).as_posix(),
                                        "irmas download did not finish moving this archive's files into place "
                                        "(interrupted, or still running): some may be missing; run it again"))

    clips = pd.DataFrame(rows, columns=list(CLIP_COLUMNS))
    clips = clips.sort_values(["split", "relpath"], ascending=[False, True], ignore_index=True)
    clips = clips.astype({"duration_s": float, "sample_rate": int, "channels": int})
    return IrmasScan(clips=clips, problems=sorted(problems, key=lambda p: p.path), root=root)


def multi_hot(clips: pd.DataFrame) -> np.ndarray:
    """The ``labels`` column as multi-hot targets, shape (n_clips, 11), float32, IRMAS order.

    Notebook: 01_data_exploration.ipynb
    """
    targets = np.zeros((len(clips), N_CLASSES), dtype=np.float32)
    for row, labels in enumerate(clips["labels"]):
        targets[row, [class_index(code) for code in labels]] = 1.0
    return targets


def summarize(result: IrmasScan) -> dict:
    """Counts of a scan, the ``irmas info --json`` shape.

    Returns ``{"root": str, "train": {"clips", "recordings", "duration_s", "per_class": {code: int},
    "genres": {tag: int}, "drums": {tag: int}}, "test": {"excerpts", "labels", "duration_s",
    "label_counts": {code: int}, "labels_per_excerpt": {"1": int, ...}}, "problems": [{"path", "error"}]}``.
    All 11 codes and the four drums tags (``dru``, ``nod``, ``---``, ``none``) are always present;
    ``labels_per_excerpt`` always has "1" to "5" (more when an excerpt has more); genres are sorted
    by count, most frequent first.

    Notebook: 01_data_exploration.ipynb
    """
    clips = result.clips
    train = clips[clips["split"] == "train"]
    test = clips[clips["split"] == "test"]
    per_class = Counter(labels[0] for labels in train["labels"])
    label_counts = Counter(code for labels in test["labels"] for code in labels)
    cardinality = Counter(len(labels) for labels in test["labels"])
    drums = Counter(train["drums"])
    genres = Counter(train["genre"])
    return {
        "root": str(result.root) if result.root is not None else None,
        "train": {
            "clips": len(train),
            "recordings": int(train["recording_id"].nunique()),
            "duration_s": round(float(train["duration_s"].sum()), 1),
            "per_class": {code: per_class.get(code, 0) for code in CODES},
            "genres": dict(sorted(genres.items(), key=lambda item: (-item[1], item[0]))),
            "drums": {tag: drums.get(tag, 0) for tag in DRUMS_TAGS},
        },
        "test": {
            "excerpts": len(test),
            "labels": int(sum(label_counts.values())),
            "duration_s": round(float(test["duration_s"].sum()), 1),
            "label_counts": {code: label_counts.get(code, 0) for code in CODES},
            "labels_per_excerpt": {str(k): cardinality.get(k, 0) for k in range(1, max([5, *cardinality]) + 1)},
        },
        "problems": [{"path": p.path, "error": p.error} for p in result.problems],
    }


def format_summary(summary: dict) -> str:
    """The readable `irmas info` report of a :func:`summarize` dict: a table per class (training
    clips, test labels) with instrument names spelled out, then genres, drums, labels per excerpt and problems.

    Notebook: 01_data_exploration.ipynb
    """
    train, test = summary["train"], summary["test"]
    lines = []
    if summary.get("root"):
        lines.append(f"IRMAS tree: {summary['root']}")
    lines.append(f"training clips: {train['clips']:,} from {train['recordings']:,} recordings"
                 f" ({train['duration_s'] / 60:,.1f} min)")
    n_excerpts, n_labels = test["excerpts"], test["labels"]
    mean = f", {n_labels / n_excerpts:.2f} per excerpt" if n_excerpts else ""
    lines.append(f"test excerpts:  {n_excerpts:,} with {n_labels:,} labels{mean}"
                 f" ({test['duration_s'] / 60:,.1f} min)")
    lines += ["", f"{'instrument':<24}{'train clips':>12}{'test labels':>13}"]
    for code in CODES:
        lines.append(f"{NAMES[code] + ' (' + code + ')':<24}{train['per_class'][code]:>12,}"
                     f"{test['label_counts'][code]:>13,}")
    lines.append(f"{'total':<24}{train['clips']:>12,}{n_labels:>13,}")
    lines += ["", "genres (training clips):"]
    lines += [f"  {GENRE_NAMES.get(tag, tag) + ' [' + tag + ']':<24}{n:>7,}" for tag, n in train["genres"].items()]
    lines += ["", "drums (training clips):"]
    lines += [f"  {DRUMS_NAMES.get(tag, tag) + ' [' + tag + ']':<24}{n:>7,}" for tag, n in train["drums"].items()]
    lines += ["", "labels per test excerpt:"]
    lines += [f"  {k:<22}{n:>9,}" for k, n in test["labels_per_excerpt"].items()]
    problems = summary["problems"]
    lines += ["", f"problems: {len(problems)}" + (" (these files were left out)" if problems else "")]
    lines += [f"  {p['path']}: {p['error']}" for p in problems]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# mirdata's index: track ids and md5 checksums; validation of a tree (`irmas info --validate`)
# ---------------------------------------------------------------------------------------------------

MIRDATA_INDEX_NAME = "irmas_index_1.0.json"
# Where mirdata (>= 0.3.9) fetches it from, and the md5 its source code gives for it.
MIRDATA_INDEX_URL = "https://zenodo.org/records/13930466/files/irmas_index_1.0.json?download=1"
MIRDATA_INDEX_MD5 = "87327f90124d36750037df6c80b19749"


@dataclass
class MirdataIndex:
    """mirdata's IRMAS index: for each track id, its audio file and (test excerpts) label file, with md5.

    files: ``{NFC relpath: (track_id, md5)}`` for every file the index lists (a training clip's audio
    and "annotation" are the same .wav); paths are relative to the folder the archives were extracted into.
    path: the JSON file it was read from.
    """
    files: dict[str, tuple[str, str]]
    path: Path


def read_mirdata_index(path: str | Path) -> MirdataIndex:
    """Read mirdata's ``irmas_index_1.0.json`` (``{"version", "tracks": {id: {"audio": [path, md5],
    "annotation": [path, md5]}}}``; the older layout without ``"tracks"`` is accepted too).

    Raises:
        IrmasError naming the file: missing, not JSON, or not in mirdata's index layout.

    Notebook: 01_data_exploration.ipynb
    """
    import json

    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IrmasError(f"{path}: no such file (mirdata's IRMAS index: {MIRDATA_INDEX_URL}, "
                         f"md5 {MIRDATA_INDEX_MD5})") from None
    except (OSError, ValueError) as error:
        raise IrmasError(f"{path}: not a readable JSON file ({error})") from None
    tracks = data.get("tracks", data) if isinstance(data, dict) else None
    files: dict[str, tuple[str, str]] = {}
    try:
        for track_id, entry in tracks.items():
            for key in ("audio", "annotation"):
                if entry.get(key) and entry[key][0]:
                    relpath, md5 = entry[key][0], entry[key][1]
                    files[_nfc(str(relpath).replace("\\", "/"))] = (str(track_id), str(md5 or "").lower())
    except (AttributeError, TypeError, IndexError, KeyError):
        raise IrmasError(f"{path}: not mirdata's IRMAS index (expected {{\"tracks\": {{id: {{\"audio\": "
                         f"[path, md5], \"annotation\": [path, md5]}}}}}})") from None
    if not files:
        raise IrmasError(f"{path}: mirdata's index lists no files")
    return MirdataIndex(files=files, path=path)


def find_mirdata_index(root: str | Path) -> Path | None:
    """Where a copy of mirdata's IRMAS index is found, or None: ``root/.irmas-download/irmas_index_1.0.json``
    (put it there yourself, it is never fetched), else the one an installed mirdata downloaded into its
    ``datasets/indexes`` folder. Nothing is imported or fetched.

    Notebook: 01_data_exploration.ipynb
    """
    import importlib.util

    candidates = [Path(root) / ".irmas-download" / MIRDATA_INDEX_NAME]
    try:
        spec = importlib.util.find_spec("mirdata")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location) / "datasets" / "indexes" / MIRDATA_INDEX_NAME
                       for location in spec.submodule_search_locations]
    return next((path for path in candidates if path.is_file()), None)


def with_mirdata_track_ids(clips: pd.DataFrame, index: MirdataIndex) -> pd.DataFrame:
    """A copy of a scan's clip table whose ``track_id`` is the one mirdata's index gives each clip's path
    (None for a clip the index does not list). ``relpath`` must be relative to the folder the archives
    were extracted into (scan that folder).

    Notebook: 01_data_exploration.ipynb
    """
    clips = clips.copy()
    clips["track_id"] = [index.files.get(_nfc(relpath), (None,))[0] for relpath in clips["relpath"]]
    return clips


def _unreadable_reason(error: OSError) -> str:
    """Why a file the folder lists cannot be opened: a broken link (no such file), a permission, ..."""
    if isinstance(error, FileNotFoundError):
        return "no such file (a broken link?)"
    return f"cannot read ({error.strerror or error})"


def wav_size_problem(path: str | Path) -> str | None:
    """None when a WAV file's size is what its RIFF header says, else the reason: truncated (fewer bytes
    than the header's data chunk needs), a data size a streaming writer left open (a placeholder such
    as 0xFFFFFFFF: the audio readers take it, IRMAS's files never have one), a size that disagrees
    with the RIFF size, not a RIFF/WAVE file, or no such file (a broken link) or an unreadable one.

    Notebook: 01_data_exploration.ipynb
    """
    try:
        layout = wav_layout(path)
    except OSError as error:
        return _unreadable_reason(error)
    if layout is None:
        return "not a RIFF/WAVE file"
    size, riff_size, data_end = layout["size"], layout["riff_size"], layout["data_end"]
    if data_end is None:
        return f"truncated: {size:,} bytes, no complete data chunk (its header announces {riff_size:,})"
    if size < data_end and layout["data_size"] >= STREAMED_WAV_DATA_SIZE:   # irmas_lib.audio reads it; IRMAS has none
        return (f"{size:,} bytes, its data chunk's size was left open by a streaming writer "
                f"({layout['data_size']:,}): readable, not as IRMAS stores its files")
    if size < data_end:
        return f"truncated: {size:,} bytes, its header announces {data_end:,}"
    if riff_size != size:
        return f"{size:,} bytes, its RIFF header says {riff_size:,}"
    return None


def validate(root: str | Path, index: MirdataIndex | None = None, md5: bool = True,
             progress: bool = False) -> dict:
    """Check an IRMAS tree file by file (``irmas info --validate``).

    Always: every ``.wav`` under ``root`` (scanned or not) against its own header
    (:func:`wav_size_problem`). With mirdata's ``index``: every file it lists under the top-level
    folders ``root`` holds (``IRMAS-TrainingData``, ``IRMAS-TestingData-Part1``, ...) is present, and,
    with ``md5``, has the md5 the index publishes (reading every byte: about a minute for all of IRMAS).

    Returns:
        ``{"root", "index" (path or None), "files_checked", "md5_checked", "problems": [{"path", "error"}],
        "missing": [relpath], "not_in_index": [relpath]}``; "not_in_index" are files of the tree the index
        lacks (expected: the 45 training clips mirdata leaves out), not problems. Raises IrmasError
        when ``root`` is not a folder (or does not exist), or when an index is given and none of its files
        is under ``root`` (the wrong folder).

    Notebook: 01_data_exploration.ipynb
    """
    from irmas_lib.download import file_md5

    require_folder(Path(root).expanduser())
    root = Path(root).expanduser().resolve()
    on_disk: dict[str, str] = {}  # NFC relpath -> relpath as on disk
    for folder, wavs, txts in _walk(root):
        for name in wavs + txts:
            relpath = (folder / name).relative_to(root).as_posix()
            on_disk[_nfc(relpath)] = relpath
    problems: list[Problem] = []
    wav_paths = sorted(rel for rel in on_disk.values() if rel.lower().endswith(".wav"))
    for relpath in wav_paths:
        reason = wav_size_problem(root / relpath)
        if reason:
            problems.append(Problem(relpath, reason))
    missing: list[str] = []
    not_in_index: list[str] = []
    md5_checked = 0
    if index is not None:
        tops = {rel.split("/", 1)[0] for rel in on_disk}
        listed = {rel: entry for rel, entry in index.files.items() if rel.split("/", 1)[0] in tops}
        if on_disk and not listed:
            raise IrmasError(f"{root}: none of its files is in mirdata's index {index.path}; give the folder the "
                             "archives were extracted into (the one holding IRMAS-TrainingData/, "
                             "IRMAS-TestingData-Part1/, ...)")
        missing = sorted(rel for rel in listed if rel not in on_disk)
        problems += [Problem(rel, "missing (listed in mirdata's index)") for rel in missing]
        not_in_index = sorted(on_disk[rel] for rel in on_disk if rel not in index.files
                              and on_disk[rel].lower().endswith(".wav"))
        if md5:
            todo = sorted(rel for rel in listed if rel in on_disk and listed[rel][1])
            if progress:
                from tqdm import tqdm
                todo = tqdm(todo, unit="file", desc="md5", disable=None)
            for rel in todo:
                try:
                    found = file_md5(root / on_disk[rel])
                except OSError as error:  # a broken link, say (a .wav one is a problem above already)
                    problem = Problem(on_disk[rel], _unreadable_reason(error))
                    if problem not in problems:
                        problems.append(problem)
                    continue
                md5_checked += 1
                if found != listed[rel][1]:
                    problems.append(Problem(on_disk[rel], f"md5 {found}, mirdata's index says {listed[rel][1]}"))
    problems.sort(key=lambda p: p.path)
    return {"root": str(root), "index": str(index.path) if index is not None else None,
            "files_checked": len(wav_paths), "md5_checked": md5_checked,
            "problems": [{"path": p.path, "error": p.error} for p in problems],
            "missing": missing, "not_in_index": not_in_index}


def format_validation(report: dict) -> str:
    """The readable report of :func:`validate`.

    Notebook: 01_data_exploration.ipynb
    """
    lines = [f"validation of {report['root']}: {report['files_checked']:,} WAV files checked against their headers"]
    if report["index"]:
        lines.append(f"mirdata's index {report['index']}: {len(report['missing']):,} listed files missing, "
                     f"{report['md5_checked']:,} md5 checked, {len(report['not_in_index']):,} WAV files it does "
                     "not list (mirdata leaves out 45 real training clips)")
    else:
        lines.append(f"no mirdata index (md5 not checked, test excerpts have no track id): pass --mirdata-index "
                     f"FILE, the {MIRDATA_INDEX_NAME} from {MIRDATA_INDEX_URL} (md5 {MIRDATA_INDEX_MD5})")
    problems = report["problems"]
    lines.append(f"problems: {len(problems)}" + ("" if problems else " (valid)"))
    lines += [f"  {p['path']}: {p['error']}" for p in problems]
    return "\n".join(lines)
