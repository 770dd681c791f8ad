"""Benchmark: rendering mini-IRMAS (`irmas synth`), against the way renderer 3 played its stems until 2026-12-06.

    python benchmarks/bench_synth.py [--train-per-class 24] [--test-excerpts 12] [--skip-full]

Side by side in one run, one process each (``workers=1``), the same small tree rendered twice into
temporary folders:

* reference: every stem through a fresh FluidSynth synthesizer that loads the soundfont from its file
  (``sfload``) and plays it with pretty_midi's ``Instrument.fluidsynth``, which renders every event and
  one second more before the stem is cut to length (:func:`reference_render_stem`, the code of
  ``irmas_lib.synth._render_stem`` before the change);
* current: :func:`irmas_lib.synth.render_mini_irmas` as it is (each process loads a soundfont once and
  lends it to every fresh synthesizer; the left channel written straight into one array, up to the
  stem's length; the mix summed in place).

Prints the seconds and files per second of each, their ratio, and whether the two trees are byte for
byte the same (they must be: the change is a speed-up, not a new renderer). Then, unless
``--skip-full``, the wall time of the default render (1,320 clips and 120 excerpts, one worker per
core), against issue 9's budget of 60 s on 2 cores. Nothing is asserted. Timings taken while other
programs use the CPU are not comparable between runs; the ratio, measured side by side, is the figure
to read.

Heavy imports live in main(): worker processes are started with "spawn" and re-import this file.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def reference_render_stem(instrument, soundfont: str, n_samples: int):
    """irmas_lib.synth._render_stem before 2026-12-06: a fresh synthesizer loads the soundfont for every
    stem, and pretty_midi plays it to its last event and one second more."""
    import fluidsynth
    import numpy as np

    from irmas_lib import synth as S

    player = fluidsynth.Synth(samplerate=S.SAMPLE_RATE, channels=16, **S.SYNTH_SETTINGS)
    try:
        sfid = player.sfload(soundfont)
        if sfid == -1:
            raise S.IrmasError(f"{soundfont}: cannot load the soundfont")
        audio = instrument.fluidsynth(fs=S.SAMPLE_RATE, synthesizer=player, sfid=sfid)   # left channel, int16 scale
    finally:
        player.delete()
    out = np.zeros(n_samples)
    out[:min(n_samples, audio.size)] = audio[:n_samples] / 32768.0
    return out


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file but the .complete marker (it holds the wall time)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != ".complete"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-per-class", type=int, default=24, help="clips per instrument of the side-by-side tree")
    parser.add_argument("--test-excerpts", type=int, default=12, help="test excerpts of the side-by-side tree")
    parser.add_argument("--skip-full", action="store_true", help="skip timing the default render")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import warnings

    from irmas_lib import synth

    warnings.simplefilter("ignore", synth.MissingLibraryWarning)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    current_render_stem = synth._render_stem
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        tmp = Path(tmp)
        seconds, digests, files = {}, {}, 0
        # warm-up: the soundfonts into the page cache, the libraries' checks and imports done once
        synth.render_mini_irmas(tmp / "warm", train_per_class=2, test_excerpts=3, workers=1, progress=False)
        for name, render_stem in (("reference", reference_render_stem), ("current", current_render_stem)):
            synth._render_stem = render_stem
            try:
                started = time.perf_counter()
                summary = synth.render_mini_irmas(tmp / name, train_per_class=args.train_per_class,
                                                  test_excerpts=args.test_excerpts, workers=1, progress=False)
                seconds[name] = time.perf_counter() - started
            finally:
                synth._render_stem = current_render_stem
            files = summary["train_clips"] + summary["test_excerpts"]
            digests[name] = tree_digest(tmp / name)
        same = digests["reference"] == digests["current"]
        print(f"\nside by side, one process, {files} files ({args.train_per_class} clips per instrument,"
              f" {args.test_excerpts} excerpts, libraries {', '.join(summary['libraries'])}):")
        for name in ("reference", "current"):
            print(f"  {name:9s} {seconds[name]:7.1f} s  {files / seconds[name]:6.1f} files/s")
        print(f"  speed-up: {seconds['reference'] / seconds['current']:.2f}x;"
              f" the two trees are byte for byte {'the same' if same else 'DIFFERENT'}"
              f" ({len(digests['current'])} files compared)")
        if not args.skip_full:
            workers = os.cpu_count() or 1
            started = time.perf_counter()
            summary = synth.render_mini_irmas(tmp / "full", workers=workers, progress=False)
            wall = time.perf_counter() - started
            print(f"\nthe default render ({summary['train_clips']:,} clips, {summary['test_excerpts']} excerpts),"
                  f" {workers} worker(s): {wall:.1f} s (issue 9's budget on 2 cores: <= 60 s)")


if __name__ == "__main__":
    main()
