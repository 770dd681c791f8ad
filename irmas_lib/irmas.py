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
  disagrees with its folder, a name in a class folder not in the form above. Odd but valid audio
  (mono, any sample rate, 8-bit, any length) is *not* a problem: it is converted when read
  (:func:`irmas_lib.audio.read_audio`).

Only audio headers are read (:func:`irmas_lib.audio.audio_info`), so scanning all 9,579 files is quick.

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

from irmas_lib.audio import AudioError, audio_info
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, N_CLASSES, NAMES, class_index

CLIP_COLUMNS = ("path", "relpath", "split", "labels", "drums", "genre", "recording_id",
                "duration_s", "sample_rate", "channels")
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
        ``duration_s`` (float), ``sample_rate`` (int), ``channels`` (int);
        and whose ``problems`` list the files left out (see the module docstring for the rule).
        Raises IrmasError only when root itself is not a folder.

    Notebook: 01_data_exploration.ipynb
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise IrmasError(f"{root}: not a folder")
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
                   "recording_id": None}
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
                               genre=parsed["genre"], recording_id=f"{parsed['code']}/{parsed['recording']}")
                elif _TRAINING_NAME.match(stem):
                    raise ValueError(f"training clip in unknown class folder {folder.name!r}"
                                     f" (expected one of {', '.join(CODES)})")
                else:
                    raise ValueError(".wav without its .txt label file")
                info = audio_info(folder / wav)
            except (ValueError, AudioError) as error:
                problems.append(Problem(rel(wav), str(error).replace(str(folder / wav) + ": ", "")))
                continue
            row.update(duration_s=info.frames / info.samplerate, sample_rate=int(info.samplerate),
                       channels=int(info.channels))
            rows.append(row)
        for txt in txts:
            if txt not in paired_txts:
                problems.append(Problem(rel(txt), "label file without its .wav"))

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
