"""The feature cache: ``irmas preprocess`` computes the multi-band spectrograms once; training reads
them from memory-mapped files, without recomputing them and without loading the data set into memory.

A cache folder::

    cache.json             written last: its presence means "complete". Format version, the `features`
                           config and its hash, the fingerprint of the source files, counts, normalisation
                           statistics of the training clips, and the files left out (problems).
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

* The clips (from :func:`irmas_lib.irmas.scan`, sorted: training clips then test excerpts, each by
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

Reading: :class:`FeatureCache`, :class:`CachedClipDataset` (with mixing), :class:`FeatureDataModule`.

Notebook: 02_multiband_spectrograms.ipynb (the cache), 03_basic_cnn.ipynb (datasets and mixing)
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from irmas_lib.atomic import remove_stale_temporaries, replaced_atomically, temporary_name, write_atomic, write_temporary
from irmas_lib.audio import AudioError, fit_length, read_audio
from irmas_lib.errors import IrmasError
from irmas_lib.features import (AMIN_POWER, FeatureConfig, MultiBandSpectrogram, band_frequencies, norm_stats_from_sums,
                                normalize_bands, random_equaliser_db)
from irmas_lib.labels import encode_labels
from irmas_lib.libraries import UNKNOWN, file_libraries

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
    fingerprint: str            # features hash + chunk size + every source file (relpath, split, labels, size)
    scan_problems: tuple[dict, ...]


def _as_config(features: FeatureConfig | Mapping | None) -> FeatureConfig:
    if features is None:
        return FeatureConfig()
    if isinstance(features, FeatureConfig):
        return features
    return FeatureConfig.from_dict(features)


def _plan(clips: pd.DataFrame, problems: Iterable, features: FeatureConfig, chunk_size: int,
          libraries: Sequence[str]) -> _Plan:
    """Sort the clips (training then test, each by relpath) and cut them into chunks."""
    rows = [{"relpath": r.relpath, "path": r.path, "split": r.split, "labels": tuple(r.labels),
             "recording_id": r.recording_id if isinstance(r.recording_id, str) else None, "library": library}
            for r, library in zip(clips.itertuples(index=False), libraries)]
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
    text = json.dumps({"format_version": version, "features": features.config_hash(),
                       "chunk_size": chunk_size, "clips": source}, sort_keys=True)
    return _Plan(features, tuple(chunks), hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
                 tuple({"path": p.path, "error": p.error} for p in problems))


def preprocess(in_dir: str | Path, out_dir: str | Path, features: FeatureConfig | Mapping | None = None,
               shard: tuple[int, int] = (0, 1), workers: int | None = None, progress: bool = True,
               chunk_size: int = CHUNK_SIZE) -> dict:
    """Compute the feature cache of an IRMAS tree (``irmas preprocess``).

    Args:
        in_dir: an IRMAS tree (real or mini-IRMAS), scanned with :func:`irmas_lib.irmas.scan`.
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
    from irmas_lib.irmas import scan

    started = time.perf_counter()
    features = _as_config(features)
    k, n = (int(v) for v in shard)
    if not 0 <= k < n:
        raise IrmasError(f"shard {tuple(shard)}: expected (k, n) with 0 <= k < n")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    in_dir = Path(in_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    found = scan(in_dir)
    plan = _plan(found.clips, found.problems, features, chunk_size, file_libraries(in_dir, found.clips["path"]))
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

    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
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
    return str(error).removeprefix(f"{path}: ")


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
    for final, tmp in tmp_paths.items():
        os.replace(tmp, final)
    write_atomic(out_dir / CACHE_FILE, (json.dumps(info, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))

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
        if info is None:
            raise IrmasError(f"{path}: unreadable cache description")
        if info.get("format_version") not in READABLE_FORMATS:
            raise IrmasError(f"{path}: cache format {info.get('format_version')!r}, this irmas_lib reads"
                             f" {', '.join(map(str, READABLE_FORMATS))}; run irmas preprocess again")
        self.info = info
        self.feature_config = FeatureConfig.from_dict(info["features"])
        self.features_hash: str = info["features_hash"]
        self.norm_stats: dict | None = info["norm_stats"]
        index_path = self.cache_dir / info["files"]["index"]
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
        """The memory-mapped float16 array of ``split`` ("train" | "test") and ``band`` (read-only)."""
        key = (split, band)
        if key not in self._arrays:
            path = self.cache_dir / self.info["files"][split][band]
            try:
                self._arrays[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise IrmasError(f"{path}: cannot open cached features ({error})") from None
        return self._arrays[key]

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
            per_clip = np.load(self.cache_dir / self.info["files"]["train_sums"][name], mmap_mode="r")
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


class CachedClipDataset(Dataset):
    """Training clips from a :class:`FeatureCache`, optionally mixed, normalised, as tensors.

    Mixing (``mix=True``; each item with probability ``mix_probability``): the clip is summed with 1 or
    2 other clips of the same dataset (2 to ``mix_max_clips`` clips in all), each at a random gain drawn
    uniformly from ``gain_db_range`` dB, in the *power* domain (``10 ** (dB / 10)``, summed, back to dB);
    the labels are the union. IRMAS trains on single-label clips and tests on multi-label excerpts:
    mixing teaches the model that several instruments can sound at once. Normalisation comes after.

    Randomness comes from torch's generator: reproducible under ``pytorch_lightning.seed_everything``
    (and per DataLoader worker), different every epoch; ``seed`` gives the dataset its own generator.

    Args:
        cache: a FeatureCache or its folder.
        indices: training rows to use (the index's ``row`` column; None: all).
        mix, mix_probability, mix_max_clips, gain_db_range: as above.
        normalize: apply ``norm_stats`` per band and bin.
        norm_stats: ``{band: {"mean", "std"}}``; None takes the cache's (all training clips).
        seed: None (torch's global generator) or an int.
        colour_db, level_db: augmentation against a recording's colour: each clip (before mixing) gets a
            random equaliser of up to ``colour_db`` dB per component (a tilt and three bells,
            :func:`~irmas_lib.features.random_equaliser_db`) and a level change of up to ``level_db``
            dB. 0 (the default): off. Measured in issue 9: it did not carry a model across sample libraries.
        fixed_mixes: the dataset has twice as many items: every clip (mixed at random when ``mix``), then
            every clip mixed with partners and gains fixed by ``seed`` and the item (the same mixture every
            epoch). For validation:
            multi-label test excerpts are mixtures, so thresholds and the best epoch are chosen on mixtures too.

    Item -> (list of float32 tensors (n_bins_band, clip_frames), one per band; multi-hot float32 (11,)).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, cache: FeatureCache | str | Path, indices: Sequence[int] | None = None, mix: bool = True,
                 mix_probability: float = 0.5, mix_max_clips: int = 3,
                 gain_db_range: tuple[float, float] = (-6.0, 0.0), normalize: bool = True,
                 norm_stats: Mapping | None = None, seed: int | None = None, colour_db: float = 0.0,
                 level_db: float = 0.0, fixed_mixes: bool = False):
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.fixed_mixes = bool(fixed_mixes)
        self.colour_db, self.level_db = float(colour_db), float(level_db)
        self.bin_hz = [band_frequencies(self.cache.feature_config, band) for band in self.cache.feature_config.bands]
        train = self.cache.train_clips
        self.rows = np.arange(len(train)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(train)):
            raise IndexError(f"rows must be in [0, {len(train)}) (training clips in {self.cache.cache_dir})")
        labels = train["labels"].tolist()
        self.targets = np.stack([encode_labels(labels[r]) for r in self.rows]) if len(self.rows) \
            else np.zeros((0, 11), np.float32)                                     # (n_items, 11)
        if not 0.0 <= mix_probability <= 1.0:
            raise ValueError(f"mix_probability must be in [0, 1], got {mix_probability}")
        if int(mix_max_clips) < 2:
            raise ValueError(f"mix_max_clips must be >= 2, got {mix_max_clips}")
        low_db, high_db = (float(v) for v in gain_db_range)
        if low_db > high_db:
            raise ValueError(f"gain_db_range must be (low, high) with low <= high, got {gain_db_range}")
        self.mix, self.mix_probability, self.mix_max_clips = bool(mix), float(mix_probability), int(mix_max_clips)
        self.gain_db_range = (low_db, high_db)
        self.normalize = bool(normalize)
        self.norm_stats = norm_stats if norm_stats is not None else self.cache.norm_stats
        if self.normalize and self.norm_stats is None:
            raise IrmasError(f"{self.cache.cache_dir}: the cache holds no normalisation statistics (no training clips)")
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows) * (2 if self.fixed_mixes else 1)

    def __getstate__(self) -> dict:  # DataLoader workers started with "spawn" make their own generator
        state = dict(self.__dict__)
        state["_generator"] = state["_generator_pid"] = None
        return state

    def _rng(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator_pid != os.getpid():  # a fresh generator per process (DataLoader worker)
            info = torch.utils.data.get_worker_info()
            self._generator = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + (info.id + 1 if info else 0))
            self._generator_pid = os.getpid()
        return self._generator

    def mix_items(self, index: int, generator: torch.Generator | None = None) -> tuple[list[int], np.ndarray]:
        """Draw the items mixed into item ``index``: (item positions, index first; gains in dB)."""
        n_clips = int(torch.randint(2, self.mix_max_clips + 1, (), generator=generator))
        others = torch.randint(0, len(self.rows) - 1, (n_clips - 1,), generator=generator).tolist()
        items = [index] + [o + (o >= index) for o in others]  # never the clip itself
        low_db, high_db = self.gain_db_range
        gains_db = low_db + (high_db - low_db) * torch.rand(n_clips, generator=generator, dtype=torch.float64).numpy()
        return items, gains_db

    def _coloured(self, bands: Sequence[np.ndarray], generator: torch.Generator | None) -> list[np.ndarray]:
        """A clip's bands (dB) as float32, through a random equaliser and level change (when enabled)."""
        bands = [np.asarray(b, dtype=np.float32) for b in bands]
        if self.colour_db <= 0 and self.level_db <= 0:
            return bands
        draws = torch.rand(11, generator=generator, dtype=torch.float64).numpy()  # level, tilt, 3 bells × 3
        level = self.level_db * (2 * draws[0] - 1)
        return [b + (level + random_equaliser_db(hz, draws[1:], self.colour_db)).astype(np.float32)[:, None]
                for b, hz in zip(bands, self.bin_hz)]

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        generator = self._rng()
        mixed = self.mix and len(self.rows) > 1 and float(torch.rand((), generator=generator)) < self.mix_probability
        if index >= len(self.rows):   # fixed_mixes: item `index - n` mixed with the same partners every time
            index -= len(self.rows)
            generator = torch.Generator().manual_seed(1_000_003 * int(self.seed or 0) + index)
            mixed = len(self.rows) > 1
        bands = self._coloured(self.cache.train_clip(int(self.rows[index])), generator)
        target = self.targets[index]
        if mixed:
            items, gains_db = self.mix_items(index, generator)
            clips = [bands] + [self._coloured(self.cache.train_clip(int(self.rows[i])), generator) for i in items[1:]]
            bands = [mix_in_power_domain([clip[b] for clip in clips], gains_db) for b in range(len(bands))]
            target = self.targets[items].max(axis=0)
        if self.normalize:
            bands = normalize_bands(bands, self.norm_stats, self.cache.band_names)
        return [torch.from_numpy(np.ascontiguousarray(b)) for b in bands], torch.from_numpy(target.copy())


def mix_in_power_domain(spectrograms: Sequence[np.ndarray], gains_db: Sequence[float]) -> np.ndarray:
    """Sum dB spectrograms as sounds add: ``10 * log10(sum_i 10 ** ((x_i + gain_i) / 10))``, floored at -80 dB
    (``AMIN_POWER``).

    Args:
        spectrograms: arrays of one shape, e.g. (n_bins, frames), dB.
        gains_db: one gain per spectrogram, dB.

    Returns:
        float32 array of the same shape, dB.

    Notebook: 03_basic_cnn.ipynb
    """
    scale = np.log(10.0) / 10.0
    power = sum(np.exp((np.asarray(x, dtype=np.float32) + np.float32(g)) * np.float32(scale))
                for x, g in zip(spectrograms, gains_db))
    return (10.0 * np.log10(np.maximum(power, AMIN_POWER))).astype(np.float32)


def collate_bands(batch: Sequence[tuple[list[torch.Tensor], torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Stack items per band: -> (list of (batch, n_bins_band, frames) tensors, targets (batch, 11)).

    Notebook: 03_basic_cnn.ipynb
    """
    n_bands = len(batch[0][0])
    bands = [torch.stack([item[0][b] for item in batch]) for b in range(n_bands)]
    return bands, torch.stack([item[1] for item in batch])


class FeatureDataModule(pl.LightningDataModule):
    """Batches of cached multi-band spectrograms: split by recording, mixing on the training side.

    Args:
        cache_dir: a cache written by :func:`preprocess`.
        batch_size, num_workers: of the DataLoaders.
        val_fraction, seed: of :func:`irmas_lib.data.split_by_recording` over the cached training clips.
        mix, mix_probability, mix_max_clips, gain_db_range: mixing of training items
            (:class:`CachedClipDataset`); validation items are mixed only as ``val_mixes`` says.
        normalize: normalise in the dataset with :attr:`norm_stats`; pass False when the model holds a
            :class:`~irmas_lib.features.BandNormalizer` built from them.
        features: the run's ``features`` config section (dict): the cache is refused (IrmasError naming
            both hashes) if it was made with another one. None: trust the cache.
        libraries: train (and validate) on the clips of these sample libraries only (the cache's
            ``library`` column, from mini-IRMAS's manifest); None: every clip. An unknown name is an
            IrmasError listing the cache's libraries. Notebook 04 trains on one library and tests on another.
        val_mixes: validate on every held-out clip alone *and* mixed with fixed partners
            (:class:`CachedClipDataset`'s ``fixed_mixes``), as the multi-label test excerpts are mixtures.
        colour_db, level_db: random equaliser and level augmentation of training clips (off by default).

    Attributes (available right after construction, before ``setup``):
        feature_config: the cache's FeatureConfig (copy ``feature_config.to_dict()`` into checkpoints).
        norm_stats: ``{band: {"mean", "std"}}`` over the *training side* of the split only.
        train_clips, val_clips: index rows (DataFrames with ``row``) of each side.

    Batches: (list of float32 tensors (batch, n_bins_band, frames), one per band; targets (batch, 11)).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, cache_dir: str, batch_size: int = 16, num_workers: int = 0, val_fraction: float = 0.2,
                 seed: int = 0, mix: bool = True, mix_probability: float = 0.5, mix_max_clips: int = 3,
                 gain_db_range: tuple[float, float] = (-6.0, 0.0), normalize: bool = True,
                 features: dict | None = None, libraries: Optional[list[str]] = None, val_mixes: bool = True,
                 colour_db: float = 0.0, level_db: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.cache = FeatureCache(cache_dir)
        if features is not None:
            self.cache.check_config(features)
        if isinstance(libraries, str):
            libraries = [libraries]
            self.hparams.libraries = libraries
        if libraries is not None:
            known = sorted(set(self.cache.train_clips["library"]))
            unknown = [name for name in libraries if name not in known]
            if unknown or not libraries:
                raise IrmasError(f"{self.cache.cache_dir}: no training clips of the sample library "
                                 f"{', '.join(unknown) or '(none given)'}; the cache holds {', '.join(known)}")
        self._split: tuple[pd.DataFrame, pd.DataFrame] | None = None
        self._norm_stats: dict | None = None
        self.train_set: CachedClipDataset | None = None
        self.val_set: CachedClipDataset | None = None

    @property
    def feature_config(self) -> FeatureConfig:
        return self.cache.feature_config

    def _sides(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._split is None:
            from irmas_lib.data import split_by_recording

            clips = self.cache.train_clips
            if self.hparams.libraries is not None:
                clips = clips[clips["library"].isin(list(self.hparams.libraries))]
            if len(clips) == 0:
                raise IrmasError(f"{self.cache.cache_dir}: the cache holds no training clips")
            self._split = split_by_recording(clips, self.hparams.val_fraction, self.hparams.seed)
        return self._split

    @property
    def train_clips(self) -> pd.DataFrame:
        return self._sides()[0]

    @property
    def val_clips(self) -> pd.DataFrame:
        return self._sides()[1]

    @property
    def norm_stats(self) -> dict:
        if self._norm_stats is None:
            self._norm_stats = self.cache.norm_stats_for(self.train_clips["row"].to_numpy())
        return self._norm_stats

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        common = dict(normalize=hp.normalize, norm_stats=self.norm_stats)
        self.train_set = CachedClipDataset(self.cache, self.train_clips["row"].to_numpy(), mix=hp.mix,
                                           mix_probability=hp.mix_probability, mix_max_clips=hp.mix_max_clips,
                                           gain_db_range=tuple(hp.gain_db_range), colour_db=hp.colour_db,
                                           level_db=hp.level_db, **common)
        self.val_set = CachedClipDataset(self.cache, self.val_clips["row"].to_numpy(), mix=False,
                                         fixed_mixes=hp.val_mixes, mix_max_clips=hp.mix_max_clips,
                                         gain_db_range=tuple(hp.gain_db_range), seed=hp.seed, **common)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, collate_fn=collate_bands,
                          persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, shuffle=False)
