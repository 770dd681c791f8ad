"""Benchmark: training speed of the basic multi-branch CNN from the feature cache, on this machine's CPU.

    python benchmarks/bench_training.py [--cache data/mini_irmas_features] [--threads 2] [--num-workers N]
                                        [--batch-size 16] [--epochs 2] [--config configs/default.yaml]

What `irmas train` does per training step, through the same Lightning Trainer and the config's model
and data settings: read cached clips (memory-mapped float16), mix them, normalise, collate, SpecAugment,
forward, BCE loss, backward, AdamW step, torchmetrics update. Validation is switched off and the first few batches (start-up
of the loader worker, allocator warm-up) are left out of the timing. Four fits, side by side in one run:
the reference with the branches' feature maps in PyTorch's default layout and the current channels-last
layout (irmas_lib.models.basic.BandBranch.memory_format), in the order reference, current, current,
reference. Prints clips per second of both and their ratio, the
extrapolated time of one epoch over real IRMAS's 6,705 training clips, the target (under 2 minutes
on 2 cores) and the ratio target / extrapolated (> 1 meets it). Also prints the CPU time per clip of
the training process, which other jobs on the machine disturb much less than the wall-clock figures,
and the load average (timings taken while other programs use the CPU are pessimistic).

The cache is built from data/mini_irmas when it is missing (`irmas preprocess`). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_IRMAS_TRAIN_CLIPS = 6705
TARGET_EPOCH_SECONDS = 120.0


def ensure_cache(cache: Path, root: Path, config: Path) -> None:
    """Build the feature cache of `root` into `cache` when it is not there yet."""
    if (cache / "cache.json").is_file():
        return
    if not root.is_dir():
        sys.exit(f"no cache at {cache} and no mini-IRMAS at {root}: run `irmas synth {root}` first")
    from irmas_lib.cache import preprocess
    from irmas_lib.config import load_feature_config

    print(f"building the cache {cache} from {root} ...", flush=True)
    preprocess(root, cache, load_feature_config(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=REPO / "data" / "mini_irmas_features")
    parser.add_argument("--root", type=Path, default=REPO / "data" / "mini_irmas", help="built into --cache if missing")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="epochs over the cache's training split")
    parser.add_argument("--spec-augment", type=int, choices=(0, 1), default=None, help="override the config's")
    parser.add_argument("--warmup-batches", type=int, default=5, help="batches left out of the timing")
    args = parser.parse_args(argv)

    import numpy as np
    import pytorch_lightning as pl
    import torch
    import yaml

    from irmas_lib.data import FeatureDataModule
    from irmas_lib.models.basic import BandBranch, MultiBranchCNN
    from irmas_lib.training import InstrumentClassifier

    ensure_cache(args.cache, args.root, args.config)
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    network_args = config["model"]["model"]["init_args"]
    module_args = {k: v for k, v in config["model"].items() if k not in ("model", "lr_schedule")}
    module_args["lr_schedule"] = None  # constant lr: the benchmark times steps, not a whole run
    if args.spec_augment is not None:
        module_args["spec_augment"] = args.spec_augment
    data_args = {k: v for k, v in config["data"]["init_args"].items() if k not in ("cache_dir", "batch_size",
                                                                                   "num_workers")}
    if args.num_workers is None:
        args.num_workers = int(config["data"]["init_args"].get("num_workers", 0))

    class Timer(pl.Callback):
        """Wall and CPU time from the first timed batch to the end of the last epoch."""

        def __init__(self) -> None:
            self.batches = 0
            self.clips = 0
            self.start: tuple[float, float] | None = None
            self.stop: tuple[float, float] | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.batches == args.warmup_batches:
                self.start = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.batches >= args.warmup_batches:
                self.clips += len(batch[1])
            self.batches += 1
            self.stop = (time.perf_counter(), time.process_time())

    def time_training(memory_format) -> tuple[int, float, float]:
        """(clips timed, wall seconds, CPU seconds) of a fit with the branches' feature maps in this layout."""
        BandBranch.memory_format = memory_format
        pl.seed_everything(0, verbose=False)
        datamodule = FeatureDataModule(str(args.cache), batch_size=args.batch_size, num_workers=args.num_workers,
                                       **data_args)
        module = InstrumentClassifier(MultiBranchCNN(**network_args), **module_args)
        timer = Timer()
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
        trainer.fit(module, datamodule=datamodule)
        if timer.start is None or timer.clips == 0:
            sys.exit("too few batches to time: lower --warmup-batches or raise --epochs")
        return timer.clips, timer.stop[0] - timer.start[0], timer.stop[1] - timer.start[1]

    # Side by side in one process: the reference is PyTorch's default layout (what the branches used before
    # channels last) against the layout the library uses now, in the order A B B A so that neither gains
    # from going second (warm page cache, allocator); each figure sums its two fits.
    current = BandBranch.memory_format
    layouts = {"default layout (reference)": torch.contiguous_format, f"{current} (current)": current}
    load_before = os.getloadavg()[0]
    timed = {name: np.zeros(3) for name in layouts}
    for name in [*layouts, *reversed(layouts)]:
        timed[name] += time_training(layouts[name])
    BandBranch.memory_format = current
    print(f"basic CNN training, {args.threads} torch threads, {args.num_workers} loader worker(s), "
          f"batch {args.batch_size}, mixing {'on' if data_args.get('mix', True) else 'off'}, "
          f"SpecAugment {'on' if module_args.get('spec_augment') else 'off'}, "
          f"cache {args.cache}")
    print(f"1-min load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} "
          f"(other jobs on the CPU slow the wall clock)")
    for name, (clips, wall, cpu) in timed.items():
        print(f"{name}: timed {clips:.0f} clips in {wall:.1f} s: {clips / wall:.1f} clips/s "
              f"(training process CPU time {1000 * cpu / clips:.1f} ms per clip)")
    (ref_clips, ref_wall, _), (clips, wall, cpu) = timed.values()
    clips_per_second = clips / wall
    print(f"current / default layout: {clips_per_second / (ref_clips / ref_wall):.2f}x the clips per second")
    epoch_seconds = REAL_IRMAS_TRAIN_CLIPS / clips_per_second
    print(f"one epoch over real IRMAS ({REAL_IRMAS_TRAIN_CLIPS:,} clips): {epoch_seconds:.0f} s extrapolated; "
          f"target < {TARGET_EPOCH_SECONDS:.0f} s -> ratio target/extrapolated {TARGET_EPOCH_SECONDS / epoch_seconds:.2f} "
          f"({'meets' if epoch_seconds < TARGET_EPOCH_SECONDS else 'misses'} the target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
