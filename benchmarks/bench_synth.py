"""Benchmark: rendering mini-IRMAS (`irmas synth`), against renderer 3 (the renderer until 2026-12-07).

    python benchmarks/bench_synth.py [--reference 7ea5995] [--rounds 1] [--train-per-class 120] [--test-excerpts 120]

Side by side in one run, the default tree (1,320 clips and 120 excerpts, one worker per core)
rendered into temporary folders by:

* reference: ``irmas_lib`` as it was at the git revision ``--reference`` (default 7ea5995, the last
  commit of renderer 3), exported with ``git archive`` and imported from there: fresh noise drawn and
  filtered for every recording, stems in float64, a lead-in of 0.2-1.0 s and gaps of 0-1.5 s around
  a recording's clips;
* current: ``irmas_lib`` of this checkout (renderer 4: noise cut from one shared minute, stems in
  float32, a lead-in of 0.2-0.5 s and gaps of 0-0.5 s).

Each render runs in its own Python process, in the order reference, current, current, reference (and
again for more rounds), so a machine that speeds up or slows down during the run favours neither; the
time is that of ``render_mini_irmas``, as ``irmas synth`` reports it (imports not counted). Prints
every render's seconds, the mean of each, their ratio, and, for the default tree, the current render
against issue 9's budget of 60 s on 2 cores. The two renderers write different files (renderer 4 is a
new renderer, not a speed-up of the same one). Without git or that commit (a tarball, a shallow
clone) it says so and times the current renderer alone. Nothing is asserted. Timings taken while other
programs use the CPU are not comparable between runs; the ratio, measured side by side, is the figure
to read.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RENDERER_3 = "7ea5995b088ae8f7d71cfd6087ba0eae48c39d35"   # 7ea5995, the last commit of renderer 3

RENDER = """
import sys, time, warnings

if __name__ == "__main__":   # worker processes are spawned: they re-import this file, and must not render
    from irmas_lib import synth
    warnings.simplefilter("ignore")
    out, per_class, excerpts, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    started = time.perf_counter()   # the render, as irmas synth's "seconds": imports not counted
    summary = synth.render_mini_irmas(out, train_per_class=per_class, test_excerpts=excerpts,
                                      workers=workers, progress=False)
    print(time.perf_counter() - started, summary["train_clips"], summary["test_excerpts"],
          synth.RENDERER_VERSION, synth.__file__)
"""


def export_revision(revision: str, into: Path) -> Path | None:
    """``irmas_lib`` at ``revision`` (git archive) under ``into``; None, saying why, when git cannot."""
    archive = into / "reference.tar"
    try:
        with archive.open("wb") as out:
            subprocess.run(["git", "-C", str(REPO), "archive", revision, "irmas_lib"], stdout=out, check=True,
                           stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = error.stderr.decode().strip() if isinstance(error, subprocess.CalledProcessError) else error
        print(f"no reference: cannot export irmas_lib at {revision} with git ({detail}); it needs a git clone "
              "with that commit. Timing the current renderer alone.")
        return None
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):      # Python >= 3.11.4
            tar.extractall(into / "reference", filter="data")
        else:
            tar.extractall(into / "reference")
    return into / "reference"


def render(code_root: Path, out: Path, train_per_class: int, test_excerpts: int, workers: int) -> tuple[float, int, str]:
    """Render one tree with the irmas_lib under code_root in a fresh process: (seconds, WAV files, renderer)."""
    script = out.parent / "render.py"
    script.write_text(RENDER)
    env = dict(os.environ, PYTHONPATH=str(code_root))
    done = subprocess.run([sys.executable, str(script), str(out), str(train_per_class), str(test_excerpts),
                           str(workers)], env=env, cwd=code_root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the render with {code_root} failed:\n{done.stderr[-3000:]}")
    seconds, clips, excerpts, version, module = done.stdout.strip().splitlines()[-1].split(maxsplit=4)
    if not Path(module).resolve().is_relative_to(code_root.resolve()):
        raise SystemExit(f"the render meant for {code_root} imported {module}")
    return float(seconds), int(clips) + int(excerpts), f"renderer {version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=RENDERER_3, help="git revision of the reference renderer")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of reference, current, current, reference")
    parser.add_argument("--train-per-class", type=int, default=120, help="clips per instrument (the default's 120)")
    parser.add_argument("--test-excerpts", type=int, default=120, help="test excerpts (the default's 120)")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    print(f"python {sys.version.split()[0]}, {workers} CPU(s), load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        tmp = Path(tmp)
        reference = export_revision(args.reference, tmp)
        roots = {"current": REPO} if reference is None else {"reference": reference, "current": REPO}
        # warm-up: the soundfonts into the page cache, the imports compiled once, for both
        for name, root in roots.items():
            render(root, tmp / f"warm_{name}", 2, 3, 1)
        seconds: dict[str, list[float]] = {name: [] for name in roots}
        labels, files = {}, {}
        order = ["reference", "current", "current", "reference"] if reference else ["current", "current"]
        for k, name in enumerate(order * args.rounds):
            out = tmp / f"{name}_{k}"
            wall, files[name], labels[name] = render(roots[name], out, args.train_per_class, args.test_excerpts,
                                                     workers)
            seconds[name].append(wall)
            print(f"  {name:9s} ({labels[name]}) {wall:6.1f} s", flush=True)
            shutil.rmtree(out)
        mean = {name: sum(values) / len(values) for name, values in seconds.items()}
        default = args.train_per_class == 120 and args.test_excerpts == 120
        print(f"\n{'the default render' if default else 'the render'} ({args.train_per_class} clips per instrument,"
              f" {args.test_excerpts} excerpts: {files['current']:,} WAV files), {workers} worker(s),"
              f" mean of {len(seconds['current'])} renders each:")
        if reference:
            print(f"  reference {args.reference[:7]} ({labels['reference']}): {mean['reference']:.1f} s")
        print(f"  current ({labels['current']}): {mean['current']:.1f} s")
        budget = (f"issue 9's budget for the default render on 2 cores: <= 60 s"
                  f" ({'met' if mean['current'] <= 60 else 'missed'} here)") if default else ""
        speed_up = f"speed-up: {mean['reference'] / mean['current']:.2f}x" if reference else ""
        if speed_up or budget:
            print(f"  {'; '.join(part for part in (speed_up, budget) if part)}")


if __name__ == "__main__":
    main()
