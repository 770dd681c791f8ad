"""The feature cache: ``irmas preprocess`` computes the multi-band spectrograms once; training reads
them from memory-mapped files, without recomputing them and without loading the data set into memory.

A cache folder::

    cache.json             written last: its presence means "complete". Format version, the `features`
                           config and its hash, the fingerprint of the source files (each file's relpath,
                           split, labels and size and, for mini-IRMAS, its library and the tree's
                           rendering settings: a tree rendered with other settings or by another
                           renderer version is cached again), counts, normalisation statistics of the
                           training clips, and the files left out (problems).
    index.csv              one row per cached clip: relpath, split, labels ("gel;voi"), recording_id,
                           library (the sample library that rendered it, from mini-IRMAS's manifest;
                           "unknown" for the real IRMAS), row (position in its split), frame_offset
                           (test only; -1 for training clips), n_frames
    train_<band>.npy       float16 (n_train_clips, n_bins_band, clip_frames): training clips, 3 s each
    train_<band>_sums.npy  float64 (n_train_clips, 2, n_bins_band): per clip, the sum of its dB values
                           over frames and the sum of their squares (normalisation for any subset)
    test_<band>.npy        float16 (n_bins_band, test_frames), Fortran order: the test excerpts whole,
                           one after another along time; excerpt r is ``[:, frame_offset:frame_offset + n_frames]``

How ``preprocess`` works (and why):

* The clips (from :func:`irmas_lib.irmas_files.scan`, sorted: training clips then test excerpts, each by
  relpath) are cut into chunks of 32 files. Worker processes read and resample the audio
  (:func:`irmas_lib.audio.read_audio`: soundfile + soxr; they import neither torch nor Lightning, so
  each costs about 70 MB instead of 600); the main process turns each chunk into spectrograms with
  :class:`~irmas_lib.features.MultiBandSpectrogram` (one torch thread) and saves it as one file
  ``.chunks/NNNNNN.npz`` (written to a temporary name, then renamed: a chunk file is whole or absent).
  At most two chunks of audio are in flight, so memory does not grow with the data set.
* Resumable: a rerun skips the chunk files that exist. ``shard=(k, n)`` computes only the chunks
  whose number is ``k`` modulo ``n`` (several machines sharing one folder, or copying their
  ``.chunks`` together).
* When every chunk exists (after any shard, or a plain rerun), the chunks are appended one by one
  into the final ``.npy`` files (temporary names, renamed at the end), then ``cache.json`` is written
  last and ``.chunks`` removed. Nothing is memory-mapped for writing, so the resident memory stays
  flat. Same files and config -> byte-identical cache, interrupted or not (no timestamps; fixed order).
* Files that fail to decode are listed in ``cache.json["problems"]`` (with the scan's problems) and skipped.

Reading: :class:`FeatureCache` (memory-mapped arrays, the index, normalisation statistics of any subset
of the training clips). The datasets, mixing and the DataModule over a cache: irmas_lib.data.

Notebook: 02_multiband_spectrograms.ipynb (the cache), 03_basic_cnn.ipynb (reading it)
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from irmas_lib.atomic import remove_stale_temporaries, replaced_atomically, temporary_name, write_atomic, write_temporary
from irmas_lib.audio import AudioError, fit_length, printable_path, read_audio
from irmas_lib.errors import IrmasError
from irmas_lib.features import FeatureConfig, MultiBandSpectrogram, norm_stats_from_sums
from irmas_lib.libraries import UNKNOWN, file_libraries, rendering_settings

FORMAT_VERSION = 2    # 2: index.csv has a `library` column
READABLE_FORMATS = (1, 2)   # format 1 reads as every clip from one unknown library
CHUNK_SIZE = 32
CACHE_FILE = "cache.json"
INDEX_FILE = "index.csv"
CHUNK_DIR = ".chunks"
INDEX_COLUMNS = ("relpath", "split", "labels", "recording_id", "library", "row", "frame_offset", "n_frames")
_SPLITS = ("train", "test")


# ============================================================================ writing: preprocess

@dataclass(frozen=True)
class _Chunk:
    index: int
    split: str                  # "train" | "test"
    clips: tuple[dict, ...]     # {"relpath", "path", "labels", "recording_id", "library"}

    @property
    def file_name(self) -> str:
        return f"{self.index:06d}.npz"


@dataclass(frozen=True)
class _Plan:
    features: FeatureConfig
    chunks: tuple[_Chunk, ...]
    fingerprint: str            # features hash + chunk size + every source file (relpath, split, labels, size;
                                # mini-IRMAS: library) + mini-IRMAS's rendering settings (renderer version, seed, ...)
    scan_problems: tuple[dict, ...]


def _as_config(features: FeatureConfig | Mapping | None) -> FeatureConfig:
    if features is None:
        return FeatureConfig()
    if isinstance(features, FeatureConfig):
        return features
    return FeatureConfig.from_dict(features)


def _plan(clips: pd.DataFrame, problems: Iterable, features: FeatureConfig, chunk_size: int,
          libraries: Sequence[str], rendered_with: dict | None = None) -> _Plan:
    """Sort the clips (training then test, each by relpath) and cut them into chunks.

    ``rendered_with``: mini-IRMAS's rendering settings (:func:`irmas_lib.libraries.rendering_settings`),
    part of the fingerprint: a tree rendered again by another renderer version keeps its file names and
    often their sizes, but not their sound.
    """
    rows = [{"relpath": r.relpath, "path": r.path, "split": r.split, "labels": tuple(r.labels),
             "recording_id": r.recording_id if isinstance(r.recording_id, str) else None, "library": library}
            for r, library in zip(clips.itertuples(index=False), libraries)]
    # A file name that is not UTF-8 (bytes from another system's encoding) cannot go into index.csv or
    # cache.json: left out, before anything is written, instead of failing at the end of the work
    not_utf8 = sorted(name for row in rows if (name := printable_path(row["relpath"])) != row["relpath"])
    problems = [{"path": printable_path(p.path), "error": printable_path(p.error)} for p in problems]
    problems += [{"path": name, "error": "file name is not valid UTF-8; rename the file"} for name in not_utf8]
    rows = [row for row in rows if printable_path(row["relpath"]) == row["relpath"]]
    rows.sort(key=lambda row: (_SPLITS.index(row["split"]), row["relpath"]))
    chunks: list[_Chunk] = []
    for split in _SPLITS:
        part = [row for row in rows if row["split"] == split]
        for start in range(0, len(part), chunk_size):
            chunks.append(_Chunk(len(chunks), split, tuple(part[start:start + chunk_size])))
    if all(row["library"] == UNKNOWN for row in rows):
        # no mini-IRMAS manifest (the real IRMAS): format 1's fingerprint, so that a cache made before
        # index.csv had a `library` column is still recognised as up to date (an hour of work on two cores)
        source = [[row["relpath"], row["split"], list(row["labels"]), os.stat(row["path"]).st_size] for row in rows]
        version = 1
    else:
        source = [[row["relpath"], row["split"], list(row["labels"]), os.stat(row["path"]).st_size, row["library"]]
                  for row in rows]
        version = FORMAT_VERSION
    identity = {"format_version": version, "features": features.config_hash(), "chunk_size": chunk_size,
                "clips": source}
    if version == FORMAT_VERSION:
        identity["rendered_with"] = rendered_with
    if not_utf8:             # (only then: the fingerprints of existing caches stay as they were)
        identity["not_utf8"] = not_utf8
    text = json.dumps(identity, sort_keys=True)
    return _Plan(features, tuple(chunks), hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], tuple(problems))




def preprocess(in_dir: str | Path, out_dir: str | Path, features: FeatureConfig | Mapping | None = None,
               shard: tuple[int, int] = (0, 1), workers: int | None = None, progress: bool = True,
               chunk_size: int = CHUNK_SIZE) -> dict:
    """Compute the feature cache of an IRMAS tree (``irmas preprocess``).

    Args:
        in_dir: an IRMAS tree (real or mini-IRMAS), scanned with :func:`irmas_lib.irmas_files.scan`.
        out_dir: the cache folder (created; an existing complete cache of the same files and config
            is left as it is, one made with another config is replaced).
        features: the ``features`` config (FeatureConfig, dict, or None for the defaults).
        shard: ``(k, n)``, 0 <= k < n: compute only chunks ``k, k + n, k + 2n, ...``; the cache is
            assembled by whichever run finds every chunk present.
        workers: processes reading audio (None: every core; 1: all in this process).
        progress: show a tqdm bar and a closing line on stderr.
        chunk_size: files per chunk (the unit of resumption and of sharding).

    Returns:
        dict: ``out_dir``, ``features_hash``, ``complete`` (bool), ``chunks``, ``chunks_present``,
        ``chunks_computed`` (by this call), ``train_clips``, ``test_excerpts``, ``test_frames`` (None
        while incomplete), ``problems`` (list of ``{"path", "error"}``), ``seconds``.

    Raises:
        IrmasError: ``in_dir`` is not a folder or holds no clips; a bad ``shard``.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    from irmas_lib.irmas_files import scan

    started = time.perf_counter()
    features = _as_config(features)
    k, n = (int(v) for v in shard)
    if not 0 <= k < n:
        raise IrmasError(f"shard {tuple(shard)}: expected (k, n) with 0 <= k < n")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    in_dir = Path(in_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    nearest = next(folder for folder in (out_dir, *out_dir.parents) if folder.exists())
    if not nearest.is_dir():
        raise IrmasError(f"{nearest}: exists and is not a folder; give the cache a folder of its own"
                         + (f" ({out_dir} cannot be made)" if nearest != out_dir else ""))
    if out_dir == in_dir or in_dir in out_dir.parents and (
            in_dir.name.startswith("IRMAS-") or out_dir.relative_to(in_dir).parts[0].startswith("IRMAS-")):
        raise IrmasError(f"{out_dir}: {'is' if out_dir == in_dir else 'inside'} the IRMAS tree {in_dir}; give the "
                         "cache a folder of its own (e.g. beside it: data/irmas_features for data/irmas)")
    found = scan(in_dir)
    plan = _plan(found.clips, found.problems, features, chunk_size, file_libraries(in_dir, found.clips["path"]),
                 rendering_settings(in_dir))
    if not plan.chunks:
        raise IrmasError(f"{in_dir}: no IRMAS clips found (training clips IRMAS-TrainingData/<code>/*.wav"
                         f" or test excerpts *.wav with their *.txt)")
    out_dir.mkdir(parents=True, exist_ok=True)

    existing = _read_json(out_dir / CACHE_FILE)
    if existing is not None and existing.get("source_fingerprint") == plan.fingerprint:
        shutil.rmtree(out_dir / CHUNK_DIR, ignore_errors=True)  # left if a run was killed right after cache.json
        return _summary(out_dir, plan, existing, computed=0, present=len(plan.chunks), started=started,
                        progress=progress, note="already complete")

    chunk_dir = _prepare_chunk_dir(out_dir, plan)
    todo = [c for c in plan.chunks if c.index % n == k and not (chunk_dir / c.file_name).exists()]
    _compute_chunks(todo, chunk_dir, features, workers, progress, desc=f"preprocess {k + 1}/{n}" if n > 1 else "preprocess")
    present = sum((chunk_dir / c.file_name).exists() for c in plan.chunks)
    if present < len(plan.chunks):
        return _summary(out_dir, plan, None, computed=len(todo), present=present, started=started,
                        progress=progress, note=f"shard {k + 1}/{n} done")
    try:
        info = _assemble(out_dir, plan)
    except FileNotFoundError:  # another shard's run assembled it at the same time and removed .chunks
        info = _read_json(out_dir / CACHE_FILE)
        if info is None or info.get("source_fingerprint") != plan.fingerprint:
            raise
    return _summary(out_dir, plan, info, computed=len(todo), present=present, started=started,
                    progress=progress, note="complete")


def _summary(out_dir: Path, plan: _Plan, info: dict | None, computed: int, present: int, started: float,
             progress: bool, note: str) -> dict:
    counts = info["counts"] if info else {}
    summary = {"out_dir": str(out_dir), "features_hash": plan.features.config_hash(), "complete": info is not None,
               "chunks": len(plan.chunks), "chunks_present": present, "chunks_computed": computed,
               "train_clips": counts.get("train_clips"), "test_excerpts": counts.get("test_excerpts"),
               "test_frames": counts.get("test_frames"),
               "problems": info["problems"] if info else list(plan.scan_problems),
               "seconds": round(time.perf_counter() - started, 3)}
    if progress:
        if info is None:
            print(f"preprocess: {note}: {present} of {len(plan.chunks)} chunks present in {out_dir / CHUNK_DIR};"
                  f" run the other shards (or rerun without --shard) to finish", file=sys.stderr)
        else:
            print(f"preprocess: {note}: {summary['train_clips']} training clips, {summary['test_excerpts']} test"
                  f" excerpts, {len(summary['problems'])} problem(s) -> {out_dir}", file=sys.stderr)
            for problem in summary["problems"]:
                print(f"  left out {problem['path']}: {problem['error']}", file=sys.stderr)
    return summary


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _prepare_chunk_dir(out_dir: Path, plan: _Plan) -> Path:
    """``out_dir/.chunks``, emptied when it holds chunks of other files or another config."""
    chunk_dir = out_dir / CHUNK_DIR
    manifest = {"format_version": FORMAT_VERSION, "fingerprint": plan.fingerprint}
    if chunk_dir.exists() and _read_json(chunk_dir / "manifest.json") != manifest:
        shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(exist_ok=True)
    if not (chunk_dir / "manifest.json").exists():
        write_atomic(chunk_dir / "manifest.json", json.dumps(manifest).encode("utf-8"))
    return chunk_dir


def _read_in_order(paths: list[str], sample_rate: int, workers: int, window: int) -> Iterator[np.ndarray | AudioError]:
    """Yield, in order, each file's mono waveform (1, samples) at ``sample_rate``, or the AudioError it raised.

    With ``workers`` > 1 the files are read by fresh ("spawn") processes that import only
    :mod:`irmas_lib.audio`, at most ``window`` files ahead of the consumer.
    """
    if workers <= 1:
        for path in paths:
            try:
                yield read_audio(path, sample_rate=sample_rate)
            except AudioError as error:
                yield error
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # Ctrl-C reaches the workers too; they ignore it and the main process stops them: a worker that died
    # in the middle of sending its result hung the shutdown below (about one interrupt in three)
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
    try:
        pending: deque = deque()
        for path in paths:
            pending.append(executor.submit(read_audio, path, sample_rate=sample_rate))
            if len(pending) >= window:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    except BrokenProcessPool:
        raise IrmasError("the audio-reading processes stopped; in a script, call preprocess() under"
                         " `if __name__ == \"__main__\":` (new processes re-import the script), or pass workers=1") from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _result(future) -> np.ndarray | AudioError:
    try:
        return future.result()
    except AudioError as error:
        return error


def _compute_chunks(todo: list[_Chunk], chunk_dir: Path, features: FeatureConfig, workers: int | None,
                    progress: bool, desc: str) -> None:
    """Read, transform and save every chunk of ``todo`` (the main process computes the spectrograms)."""
    if not todo:
        return
    from tqdm import tqdm

    paths = [clip["path"] for chunk in todo for clip in chunk.clips]
    workers = max(1, min(int(workers or os.cpu_count() or 1), len(paths)))
    spectrogram = MultiBandSpectrogram(features)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the other cores read audio
    waveforms = _read_in_order(paths, features.sample_rate, workers, window=2 * max(len(c.clips) for c in todo))
    try:
        with tqdm(total=len(paths), unit="clip", desc=desc, disable=not progress) as bar:
            for chunk in todo:
                results = (next(waveforms) for _ in chunk.clips)
                meta, arrays = _chunk_features(chunk, results, spectrogram, features)
                _save_chunk(chunk_dir / chunk.file_name, meta, arrays)
                bar.update(len(chunk.clips))
    finally:
        waveforms.close()  # stops the pool
        torch.set_num_threads(threads)


def _problem_text(error: Exception, path: str) -> str:
    return str(error).removeprefix(f"{printable_path(path)}: ")


@torch.inference_mode()
def _chunk_features(chunk: _Chunk, results: Iterable, spectrogram: MultiBandSpectrogram,
                    features: FeatureConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """Spectrograms of one chunk as float16 arrays per band: training chunks (clips, n_bins, clip_frames);
    test chunks (frames of all excerpts one after another, n_bins), i.e. the final Fortran layout.

    ``results`` yields each clip's waveform (1, samples) or AudioError, in order; each is transformed as
    soon as it arrives, one at a time (batching 32 clips is 2-3 times slower on a CPU: cache misses).
    """
    train = chunk.split == "train"
    clips_meta = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in features.band_names}
    for clip, result in zip(chunk.clips, results):
        if isinstance(result, Exception):
            clips_meta.append({"relpath": clip["relpath"], "error": _problem_text(result, clip["path"])})
            continue
        waveform = fit_length(result[0], features.clip_samples) if train else result[0]  # (samples,)
        clips_meta.append({"relpath": clip["relpath"], "n_frames": features.n_frames(waveform.shape[-1])})
        for name, b in zip(features.band_names, spectrogram(torch.from_numpy(waveform)[None])):  # (1, n_bins, frames)
            parts[name].append((b[0] if train else b[0].T).to(torch.float16).numpy())
    arrays = {}
    for band in features.bands:
        if train:  # (clips, n_bins, clip_frames)
            empty = np.zeros((0, features.n_bins(band), features.clip_frames), np.float16)
            arrays[band.name] = np.stack(parts[band.name]) if parts[band.name] else empty
        else:      # (frames of every excerpt, n_bins)
            empty = np.zeros((0, features.n_bins(band)), np.float16)
            arrays[band.name] = np.concatenate(parts[band.name]) if parts[band.name] else empty
    return {"index": chunk.index, "split": chunk.split, "clips": clips_meta}, arrays


def _save_chunk(path: Path, meta: dict, arrays: Mapping[str, np.ndarray]) -> None:
    """One chunk as one .npz (``meta`` JSON + ``band_<name>`` arrays), written to a temporary name then renamed."""
    with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **{f"band_{name}": a for name, a in arrays.items()})


def _load_chunk(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {key[len("band_"):]: z[key] for key in z.files if key.startswith("band_")}
    return meta, arrays


def _load_chunk_meta(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


class _NpyWriter:
    """Append-only writer of one .npy file of known shape: header first, then raw bytes in order."""

    def __init__(self, path: Path, shape: tuple[int, ...], fortran_order: bool = False, dtype=np.float16):
        self.path, self.tmp = path, temporary_name(path)
        self.expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.written = 0
        self.file = open(self.tmp, "wb")
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                         "fortran_order": fortran_order, "shape": tuple(shape)})

    def write(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).tobytes()
        self.file.write(data)
        self.written += len(data)

    def close(self) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.written != self.expected:
            raise IrmasError(f"{self.path}: wrote {self.written} bytes, expected {self.expected} (inconsistent chunks)")
        return self.tmp


def _assemble(out_dir: Path, plan: _Plan) -> dict:
    """Append every chunk into the final arrays, compute the statistics, write index and cache.json last."""
    features = plan.features
    chunk_dir = out_dir / CHUNK_DIR
    names = features.band_names
    n_bins = {band.name: features.n_bins(band) for band in features.bands}

    index_rows: list[list] = []
    problems = list(plan.scan_problems)
    counts = {"train": 0, "test": 0}
    test_frames = 0
    for chunk in plan.chunks:
        meta = _load_chunk_meta(chunk_dir / chunk.file_name)
        if [c["relpath"] for c in meta["clips"]] != [c["relpath"] for c in chunk.clips]:
            raise IrmasError(f"{chunk_dir / chunk.file_name}: holds other clips than planned; delete {chunk_dir}")
        for clip, clip_meta in zip(chunk.clips, meta["clips"]):
            if "error" in clip_meta:
                problems.append({"path": clip["relpath"], "error": clip_meta["error"]})
                continue
            row = counts[chunk.split]
            counts[chunk.split] += 1
            offset = -1
            if chunk.split == "test":
                offset = test_frames
                test_frames += clip_meta["n_frames"]
            index_rows.append([clip["relpath"], chunk.split, ";".join(clip["labels"]), clip["recording_id"] or "",
                               clip["library"], row, offset, clip_meta["n_frames"]])
    problems.sort(key=lambda p: p["path"])
    n_train, clip_frames = counts["train"], features.clip_frames

    (out_dir / CACHE_FILE).unlink(missing_ok=True)  # from here on the folder is incomplete
    remove_stale_temporaries(out_dir)
    files = {"index": INDEX_FILE, "train": {name: f"train_{name}.npy" for name in names},
             "train_sums": {name: f"train_{name}_sums.npy" for name in names},
             "test": {name: f"test_{name}.npy" for name in names}}
    writers = {("train", name): _NpyWriter(out_dir / files["train"][name], (n_train, n_bins[name], clip_frames))
               for name in names}
    writers.update({("test", name): _NpyWriter(out_dir / files["test"][name], (n_bins[name], test_frames),
                                               fortran_order=True) for name in names})
    sums = {name: np.zeros((n_train, 2, n_bins[name])) for name in names}  # per clip: sum, sum of squares
    tmp_paths: dict[Path, Path] = {}
    try:
        row = 0
        for chunk in plan.chunks:
            _, arrays = _load_chunk(chunk_dir / chunk.file_name)
            for name in names:
                writers[(chunk.split, name)].write(arrays[name])
                if chunk.split == "train":
                    values = arrays[name].astype(np.float64)            # (clips, n_bins, frames)
                    sums[name][row:row + len(values), 0] = values.sum(axis=2)
                    sums[name][row:row + len(values), 1] = np.square(values).sum(axis=2)
            if chunk.split == "train":
                row += len(arrays[names[0]])
        for writer in writers.values():
            tmp_paths[writer.path] = writer.close()
    except BaseException:
        for writer in writers.values():
            writer.file.close()
            writer.tmp.unlink(missing_ok=True)
        raise
    try:  # issue 13: a full disk here must not leave the arrays above behind as temporaries
        for name in names:
            buffer = io.BytesIO()
            np.save(buffer, sums[name])
            path = out_dir / files["train_sums"][name]
            tmp_paths[path] = write_temporary(path, buffer.getvalue())
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([INDEX_COLUMNS, *index_rows])
        tmp_paths[out_dir / INDEX_FILE] = write_temporary(out_dir / INDEX_FILE, text.getvalue().encode("utf-8"))
    except BaseException:
        for tmp in tmp_paths.values():
            tmp.unlink(missing_ok=True)
        raise

    norm_stats = None
    if n_train:
        totals = {name: sums[name].sum(axis=0) for name in names}  # (2, n_bins)
        norm_stats = norm_stats_from_sums(totals, n_train * clip_frames)
    info = {"format_version": FORMAT_VERSION, "features": features.to_dict(), "features_hash": features.config_hash(),
            "source_fingerprint": plan.fingerprint,
            "bands": [{"name": band.name, "first_bin": features.band_bins(band)[0],
                       "stop_bin": features.band_bins(band)[1], "n_bins": n_bins[band.name]} for band in features.bands],
            "clip_frames": clip_frames,
            "counts": {"train_clips": n_train, "test_excerpts": counts["test"], "test_frames": test_frames},
            "files": files, "norm_stats": norm_stats, "problems": problems}
    info_bytes = (json.dumps(info, indent=1, ensure_ascii=False) + "\n").encode("utf-8")   # before any rename
    for final, tmp in tmp_paths.items():
        os.replace(tmp, final)
    write_atomic(out_dir / CACHE_FILE, info_bytes)

    keep = {INDEX_FILE, CACHE_FILE, *(f for group in ("train", "train_sums", "test") for f in files[group].values())}
    for path in out_dir.iterdir():  # arrays of an older config (other band names)
        if path.is_file() and path.name.startswith(("train_", "test_")) and path.suffix == ".npy" and path.name not in keep:
            path.unlink()
    shutil.rmtree(chunk_dir, ignore_errors=True)
    return info


# ============================================================================ reading

class FeatureCache:
    """A complete cache folder, opened read-only; the arrays are memory-mapped on first use.

    Attributes:
        cache_dir: the folder.
        info: the parsed ``cache.json``.
        feature_config: the :class:`~irmas_lib.features.FeatureConfig` it was made with; ``features_hash``.
        norm_stats: ``{band: {"mean": [n_bins], "std": [n_bins]}}`` over all training clips (None if none).
        index: DataFrame, columns ``INDEX_COLUMNS``; ``labels`` as tuples of codes, ``library`` the
            sample library (``"unknown"`` without a manifest), ``recording_id``
            None for test excerpts.

    Raises:
        IrmasError: the folder holds no complete cache (``cache.json`` missing: run ``irmas preprocess``),
            or one of another format version.

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir).expanduser()
        path = self.cache_dir / CACHE_FILE
        if not path.is_file():
            raise IrmasError(f"{self.cache_dir}: not a complete feature cache ({CACHE_FILE} missing);"
                             f" run: irmas preprocess --in_dir IRMAS_ROOT --out_dir {self.cache_dir}")
        info = _read_json(path)
        if not isinstance(info, dict):
            raise IrmasError(f"{path}: unreadable cache description; run irmas preprocess again")
        if info.get("format_version") not in READABLE_FORMATS:
            raise IrmasError(f"{path}: cache format {info.get('format_version')!r}, this irmas_lib reads"
                             f" {', '.join(map(str, READABLE_FORMATS))}; run irmas preprocess again")
        try:
            self.info = info
            self.feature_config = FeatureConfig.from_dict(info["features"])
            self.features_hash: str = info["features_hash"]
            self.norm_stats: dict | None = info["norm_stats"]
            index_path = self.cache_dir / info["files"]["index"]
            for group in ("train", "train_sums", "test"):
                [info["files"][group][name] for name in self.feature_config.band_names]
        except (KeyError, TypeError, AttributeError, IrmasError) as error:   # edited, or another program's
            what = repr(error.args[0]) if isinstance(error, KeyError) else str(error)
            raise IrmasError(f"{path}: not the cache description irmas preprocess writes ({what}: missing or "
                             "malformed); run irmas preprocess again") from None
        try:
            index = pd.read_csv(index_path, keep_default_na=False, dtype={"relpath": str, "split": str, "labels": str,
                                                                          "recording_id": str, "library": str})
        except (OSError, ValueError) as error:
            raise IrmasError(f"{index_path}: cannot read the cache index ({error})") from None
        index["labels"] = [tuple(text.split(";")) if text else () for text in index["labels"]]
        index["recording_id"] = [rid or None for rid in index["recording_id"]]
        if "library" not in index.columns:   # format 1 (before sample libraries): one unknown library
            index["library"] = UNKNOWN
        self.index = index
        test = index[index["split"] == "test"].sort_values("row")
        self._test_spans = test[["frame_offset", "n_frames"]].to_numpy(dtype=np.int64)
        self._n_train, self._test_frames = int((index["split"] == "train").sum()), int(test["n_frames"].sum())
        self._n_bins = {band.name: self.feature_config.n_bins(band) for band in self.feature_config.bands}
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def __getstate__(self) -> dict:  # DataLoader workers re-open the memory maps themselves
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    @property
    def band_names(self) -> tuple[str, ...]:
        return self.feature_config.band_names

    @property
    def train_clips(self) -> pd.DataFrame:
        """Index rows of the training clips, ordered by ``row``."""
        return self.index[self.index["split"] == "train"].sort_values("row", ignore_index=True)

    @property
    def test_excerpts(self) -> pd.DataFrame:
        """Index rows of the test excerpts, ordered by ``row``."""
        return self.index[self.index["split"] == "test"].sort_values("row", ignore_index=True)

    def array(self, split: str, band: str) -> np.ndarray:
        """The memory-mapped float16 array of ``split`` ("train" | "test") and ``band`` (read-only):
        train (n_clips, n_bins, clip_frames), test (n_bins, all excerpts' frames)."""
        key = (split, band)
        if key not in self._arrays:
            n_bins = self._n_bins[band]
            shape = ((self._n_train, n_bins, self.feature_config.clip_frames) if split == "train"
                     else (n_bins, self._test_frames))
            self._arrays[key] = self._open(self.info["files"][split][band], shape)
        return self._arrays[key]

    def _open(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A cached array, memory-mapped; IrmasError naming the file when it is missing, damaged (empty,
        cut short) or not of the shape the cache index calls for (replaced by another array)."""
        path = self.cache_dir / name
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as error:
            raise IrmasError(f"{path}: cannot open cached features ({error}); run irmas preprocess again") from None
        if array.shape != shape:
            raise IrmasError(f"{path}: cached features of shape {array.shape}, where the cache index calls for "
                             f"{shape}; run irmas preprocess again")
        return array

    def train_clip(self, row: int) -> list[np.ndarray]:
        """Training clip ``row``: one float16 array per band, (n_bins_band, clip_frames), dB (not normalised)."""
        return [self.array("train", name)[row] for name in self.band_names]

    def test_excerpt(self, row: int) -> list[np.ndarray]:
        """Test excerpt ``row`` whole: one float16 array per band, (n_bins_band, n_frames), dB."""
        offset, n_frames = self._test_spans[row]
        return [self.array("test", name)[:, offset:offset + n_frames] for name in self.band_names]

    def norm_stats_for(self, rows: Sequence[int]) -> dict:
        """Normalisation statistics (``{band: {"mean", "std"}}``) of the training clips ``rows`` only."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        if len(rows) == 0:
            raise IrmasError(f"{self.cache_dir}: no training clips to compute normalisation statistics from")
        sums = {}
        for name in self.band_names:
            per_clip = self._open(self.info["files"]["train_sums"][name], (self._n_train, 2, self._n_bins[name]))
            sums[name] = np.asarray(per_clip[rows]).sum(axis=0)  # (2, n_bins)
        return norm_stats_from_sums(sums, len(rows) * self.feature_config.clip_frames)

    def check_config(self, features: FeatureConfig | Mapping) -> None:
        """Refuse a cache made with another ``features`` config: IrmasError naming both hashes and configs.

        Notebook: 03_basic_cnn.ipynb
        """
        wanted = _as_config(features)
        if wanted.config_hash() != self.features_hash:
            raise IrmasError(f"{self.cache_dir}: feature cache made with features {self.features_hash}"
                             f" ({self.feature_config.summary()}), but the config asks for {wanted.config_hash()}"
                             f" ({wanted.summary()}); run irmas preprocess with this config into another folder")
