"""Benchmark: does the default recipe hear instruments, or one sample library? In-library vs cross-library.

    python benchmarks/bench_generalisation.py [--root data/mini_irmas] [--cache data/mini_irmas_features]
                                              [--config configs/default.yaml] [--runs runs/bench_generalisation]
                                              [--epochs N] [--cross-only] [-- IRMAS_TRAIN_ARGS ...]

Trains the default recipe (``irmas train --config configs/default.yaml``, exactly as ``make demo`` does)
three times on mini-IRMAS's training clips: on the TimGM6mb clips alone, on the FluidR3_GM clips alone
(``--data.init_args.libraries``), and on both; then evaluates each best checkpoint with ``irmas evaluate
--threshold tuned`` on the test excerpts, per sample library (mini-IRMAS's manifest says which library
rendered each excerpt). Prints one table: training libraries, test library, in- or cross-library,
micro-F1, macro-F1 and mAP; then the issue's targets beside the measured figures:

* cross-library (train on one library, test on the other), both directions: mAP >= 0.65, micro-F1 >= 0.5;
* the model trained on both keeps >= 90 % of the in-library mAP on either library's excerpts (its mAP
  on a library's excerpts, divided by the mAP of the model trained on that library alone, there);
* the model trained on both (``make demo``'s recipe) on all test excerpts: micro-F1 >= 0.65, mAP >= 0.80,
  no instrument with F1 below 0.4.

mini-IRMAS is rendered (``irmas synth``) when missing, incomplete or outdated (a complete tree made with
other settings is used as it is: the table says what it was) and cached (``irmas preprocess``). Every run
goes through the ``irmas`` command in a subprocess, so this measures what a user gets. About twice
``make demo``'s training time (two half-size runs and one full one). Nothing is asserted.

To compare a variant of the recipe, give ``irmas train`` arguments after ``--`` (every model gets them) and
``--cross-only`` to skip the two-library model, e.g. one region per band and another seed::

    python benchmarks/bench_generalisation.py --cross-only -- --model.model.init_args.freq_regions 1 \
        --seed_everything 1 --data.init_args.seed 1
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("TimGM6mb", "FluidR3_GM")
CROSS_MAP, CROSS_MICRO_F1, KEEP_SHARE = 0.65, 0.5, 0.90
DEMO_MICRO_F1, DEMO_MAP, DEMO_WORST_F1 = 0.65, 0.80, 0.4


def irmas(*args: str) -> subprocess.CompletedProcess:
    """Run the `irmas` command of this interpreter's environment; stop with its stderr when it fails."""
    command = [sys.executable, "-m", "irmas_lib", *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"failed: {shlex.join(command)}\n{result.stderr[-3000:]}")
    return result


def train_and_evaluate(name: str, libraries: list[str] | None, args: argparse.Namespace) -> dict:
    """Train the recipe on `libraries` (None: every clip), evaluate per library; the evaluation JSON."""
    run_dir = args.runs / name
    overrides = ["--trainer.logger.init_args.save_dir", str(args.runs), "--trainer.logger.init_args.name", name,
                 "--trainer.logger.init_args.version", "0", "--data.init_args.cache_dir", str(args.cache)]
    if libraries is not None:
        overrides += ["--data.init_args.libraries", json.dumps(libraries)]
    if args.epochs is not None:
        overrides += ["--trainer.max_epochs", str(args.epochs)]
    overrides += args.train_args
    started = time.perf_counter()
    irmas("train", "--config", str(args.config), "--quiet", "true", *overrides)
    seconds = time.perf_counter() - started
    out = run_dir / "evaluation.json"
    irmas("evaluate", str(run_dir / "version_0" / "checkpoints" / "best.ckpt"), str(args.root),
          "--threshold", "tuned", "--json", str(out))
    figures = json.loads(out.read_text(encoding="utf-8"))
    print(f"  {name}: trained in {seconds:.0f} s; test micro-F1 {figures['micro_f1']:.3f}, mAP {figures['mAP']:.3f}",
          flush=True)
    return figures


def print_two_library_targets(runs: dict) -> None:
    """The targets of the model trained on both libraries: share of in-library mAP kept, make demo's figures."""
    from irmas_lib.labels import NAMES

    for test in LIBRARIES:
        both = runs[LIBRARIES]["per_library"][test]["mAP"]
        alone = runs[(test,)]["per_library"][test]["mAP"]
        share = both / alone
        print(f"  trained on both, on {test}: mAP {both:.3f} = {share:.0%} of the {test}-only model's "
              f"{alone:.3f} (>= {KEEP_SHARE:.0%}): {'met' if share >= KEEP_SHARE else 'MISSED'}")
    whole = runs[LIBRARIES]
    f1 = {code: row["f1"] for code, row in whole["per_class"].items() if row["f1"] is not None}
    worst = min(f1, key=f1.get)
    ok = whole["micro_f1"] >= DEMO_MICRO_F1 and whole["mAP"] >= DEMO_MAP and f1[worst] >= DEMO_WORST_F1
    print(f"  trained on both, all {whole['n_excerpts']} test excerpts (make demo's recipe): micro-F1 "
          f"{whole['micro_f1']:.3f} (>= {DEMO_MICRO_F1}), macro-F1 {whole['macro_f1']:.3f}, mAP {whole['mAP']:.3f} "
          f"(>= {DEMO_MAP}), lowest F1 {f1[worst]:.3f} ({NAMES[worst]}, >= {DEMO_WORST_F1}): {'met' if ok else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "mini_irmas")
    parser.add_argument("--cache", type=Path, default=REPO / "data" / "mini_irmas_features")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_generalisation")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs (quick looks)")
    parser.add_argument("--cross-only", action="store_true",
                        help="train the two one-library models only (not the two-library one)")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.train_args = argv[split + 1:]                                # passed to every `irmas train`
    args.root, args.cache, args.runs = args.root.absolute(), args.cache.absolute(), args.runs.absolute()

    started = time.perf_counter()
    print(f"bench_generalisation: {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.train_args:
        print(f"irmas train arguments added to the recipe: {shlex.join(args.train_args)}", flush=True)
    from irmas_lib.synth import read_complete_marker

    if read_complete_marker(args.root) is None:                       # missing, incomplete or outdated
        irmas("synth", str(args.root), "--overwrite")                 # a complete tree is used as it is
    irmas("preprocess", "--in_dir", str(args.root), "--out_dir", str(args.cache), "--config", str(args.config))
    from irmas_lib.libraries import read_manifest

    manifest = read_manifest(args.root)
    present = sorted(manifest["libraries"]) if manifest else []
    if sorted(LIBRARIES) != present:
        sys.exit(f"{args.root}: rendered from {present or 'an unknown library'}, this benchmark needs "
                 f"{' and '.join(LIBRARIES)} (install fluid-soundfont-gm and render again)")

    settings = read_complete_marker(args.root)["settings"]
    print(f"mini-IRMAS {args.root}: {settings['train_per_class']} training clips per instrument, "
          f"{settings['test_excerpts']} test excerpts, seed {settings['seed']}, libraries {', '.join(present)}",
          flush=True)
    runs = {(lib,): train_and_evaluate(f"train_{lib}", [lib], args) for lib in LIBRARIES}
    if not args.cross_only:
        runs[LIBRARIES] = train_and_evaluate("train_both", None, args)

    header = f"{'trained on':<22}{'tested on':<14}{'':<15}{'micro-F1':>9}{'macro-F1':>10}{'mAP':>8}"
    lines = [header, "-" * len(header)]
    for trained, figures in runs.items():
        for test in LIBRARIES:
            row = figures["per_library"][test]
            kind = "in-library" if test in trained and len(trained) == 1 else (
                "both libraries" if len(trained) > 1 else "CROSS-library")
            lines.append(f"{' + '.join(trained):<22}{test:<14}{kind:<15}{row['micro_f1']:>9.3f}"
                         f"{row['macro_f1']:>10.3f}{row['mAP']:>8.3f}")
    print("\n" + "\n".join(lines))

    print("\ntargets:")
    for source, target in (LIBRARIES, LIBRARIES[::-1]):
        row = runs[(source,)]["per_library"][target]
        ok = row["mAP"] >= CROSS_MAP and row["micro_f1"] >= CROSS_MICRO_F1
        print(f"  cross-library {source} -> {target}: mAP {row['mAP']:.3f} (>= {CROSS_MAP}), micro-F1 "
              f"{row['micro_f1']:.3f} (>= {CROSS_MICRO_F1}): {'met' if ok else 'MISSED'}")
    if not args.cross_only:
        print_two_library_targets(runs)
    print(f"\ncommand: python {shlex.join([Path(__file__).relative_to(REPO).as_posix(), *argv])}"
          f"  ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
