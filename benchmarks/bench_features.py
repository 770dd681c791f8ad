"""Benchmark: the feature cache (`irmas preprocess`) against the common way of computing the same features.

    python benchmarks/bench_features.py [--root data/mini_irmas] [--workers N] [--compare 40]

Same files for both, already in the page cache (every file is read once before timing), one run each:

* reference, one process, per file: ``librosa.load(path, sr=22050)``, three ``librosa.stft`` with the
  same windows, hop and bins, dB (:func:`irmas_lib.features.multiband_spectrogram_librosa`); warmed up
  on a few files first;
* :func:`irmas_lib.cache.preprocess` into a temporary folder (worker start-up and assembly included).

Prints files per second of each and their ratio (target: preprocess >= 2x the reference on 2 cores),
the peak memory of the process tree during preprocess (sum of RSS of this process and its children,
sampled every 20 ms in a thread; the sum of PSS, which counts shared pages once, beside it; target
< 1.5 GB), and how far the cached features are from the reference (target: within 0.5 dB).
Nothing is asserted. Timings taken while other programs use the CPU are not comparable between
runs; the ratio, measured side by side, is the figure to read.

Heavy imports live in main(): worker processes are started with "spawn" and re-import this file.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class TreeMemorySampler:
    """Peak sum of RSS (every 20 ms) and of PSS (every 200 ms) over this process and its children, in a
    thread; ``cpu_s`` is the CPU time the sampling itself took (to subtract from this process's)."""

    def __init__(self, interval_s: float = 0.02):
        import psutil

        self.psutil = psutil
        self.interval_s = interval_s
        self.peak_rss = self.peak_pss = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, processes: list, with_pss: bool) -> None:
        rss = pss = 0
        for proc in processes:
            try:
                rss += proc.memory_info().rss
                if with_pss:
                    pss += getattr(proc.memory_full_info(), "pss", 0)
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                pass
        self.peak_rss = max(self.peak_rss, rss)
        if with_pss:
            self.peak_pss = max(self.peak_pss, pss)

    def _run(self) -> None:
        started = time.thread_time()
        me = self.psutil.Process()
        processes, count = [me], 0
        while not self._stop.is_set():
            if count % 10 == 0:  # finding children scans /proc: not every time
                processes = [me, *me.children(recursive=True)]
            self._sample(processes, with_pss=count % 10 == 0)
            count += 1
            self._stop.wait(self.interval_s)
        self.cpu_s = time.thread_time() - started

    def __enter__(self) -> "TreeMemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> tuple[float, float]:
    """CPU time (user + system) of this process and of its finished children."""
    import resource

    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "mini_irmas", help="IRMAS tree (default data/mini_irmas)")
    parser.add_argument("--workers", type=int, default=None, help="preprocess workers (default: all cores)")
    parser.add_argument("--compare", type=int, default=40, help="files whose features are compared (default 40)")
    args = parser.parse_args(argv)

    import librosa
    import numpy as np

    from irmas_lib.audio import fit_length
    from irmas_lib.cache import FeatureCache, preprocess
    from irmas_lib.features import FeatureConfig, multiband_spectrogram_librosa
    from irmas_lib.irmas_files import scan

    root = args.root
    if not root.is_dir():
        try:
            from irmas_lib.synth import render_mini_irmas
        except ImportError:
            print(f"{root} not found: render it first with `irmas synth {root}` (or pass --root IRMAS_ROOT)")
            return 2
        print(f"{root} not found: rendering mini-IRMAS there (irmas_lib.synth.render_mini_irmas) ...")
        render_mini_irmas(root, progress=False)

    config = FeatureConfig()
    clips = scan(root).clips
    files = list(zip(clips["path"], clips["split"]))
    n_train = int((clips["split"] == "train").sum())
    audio_s = float(clips["duration_s"].sum())
    print(f"root: {root}\nfiles: {len(files)} ({n_train} training clips, {len(files) - n_train} test excerpts),"
          f" {audio_s / 60:.1f} min of audio; cores: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.2f}")

    for path, _ in files:  # page cache, for both
        Path(path).read_bytes()

    def reference(path: str, split: str) -> list[np.ndarray]:
        waveform, _ = librosa.load(path, sr=config.sample_rate)
        if split == "train":
            waveform = fit_length(waveform, config.clip_samples)
        return multiband_spectrogram_librosa(waveform, config)

    for path, split in files[:5]:  # warm-up (librosa's first calls are slow)
        reference(path, split)
    started, cpu_started = time.perf_counter(), time.process_time()
    for path, split in files:
        reference(path, split)
    reference_s, reference_cpu = time.perf_counter() - started, time.process_time() - cpu_started

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        main_cpu, workers_cpu = cpu_seconds()
        with TreeMemorySampler() as memory:
            started = time.perf_counter()
            preprocess(root, Path(tmp) / "cache", config, workers=args.workers, progress=False)
            preprocess_s = time.perf_counter() - started
        main_cpu, workers_cpu = (now - before for now, before in zip(cpu_seconds(), (main_cpu, workers_cpu)))
        main_cpu -= memory.cpu_s

        cache = FeatureCache(Path(tmp) / "cache")
        rows = {relpath: (split, row) for relpath, split, row in cache.index[["relpath", "split", "row"]].itertuples(index=False)}
        step = max(1, len(files) // max(1, args.compare))
        worst, total, count = 0.0, 0.0, 0
        for path, split in files[::step][:args.compare]:
            relpath = Path(path).relative_to(root.resolve()).as_posix()
            split, row = rows[relpath]
            cached = cache.train_clip(row) if split == "train" else cache.test_excerpt(row)
            for ref, got in zip(reference(path, split), cached):
                diff = np.abs(ref - np.asarray(got, dtype=np.float32))
                worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.size

    reference_rate, preprocess_rate = len(files) / reference_s, len(files) / preprocess_s
    print(f"reference (librosa, 1 process): {reference_s:6.2f} s  {reference_rate:7.1f} files/s")
    print(f"preprocess (workers={args.workers or os.cpu_count()}):      {preprocess_s:6.2f} s  {preprocess_rate:7.1f} files/s")
    print(f"ratio preprocess / reference: {preprocess_rate / reference_rate:.2f}x (target >= 2x)")
    projected_s = max((main_cpu + workers_cpu) / 2, main_cpu)
    print(f"CPU time: reference {reference_cpu:.2f} s; preprocess {main_cpu:.2f} s main process +"
          f" {workers_cpu:.2f} s readers; on 2 otherwise idle cores that is at best {projected_s:.2f} s,"
          f" a ratio of {reference_cpu / projected_s:.2f}x")
    print(f"peak memory of the process tree during preprocess: sum of RSS {memory.peak_rss / 2**20:.0f} MB,"
          f" sum of PSS {memory.peak_pss / 2**20:.0f} MB (target < 1,536 MB)")
    print(f"cached features vs reference on {args.compare} files: max |difference| {worst:.3f} dB,"
          f" mean {total / max(count, 1):.4f} dB (target <= 0.5 dB)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other programs on the machine slow both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
