"""Speed of the PANNs models on this CPU, float32 against the fast path side by side: inference beside the
basic CNN, phase 1 with and without the embedding cache, a phase-2 training step, checkpoint sizes, and
what an epoch over real IRMAS would cost.

    python benchmarks/bench_panns.py [--cache data/mini_irmas_features] [--threads 2] [--batch-size 16]
                                     [--phase1-clips 0] [--skip-phase1] [--skip-phase2] [--skip-sizes]

The fast path is irmas_lib.precision's "auto": bfloat16 autocast + channels_last where the CPU computes
bfloat16 natively (AVX-512 BF16 or AMX), float32 in the default layout elsewhere; the first line says
which was taken. Its float32 reference is the plain path (float32, default layout).

1. Inference, 3-s windows at 22,050 Hz (random audio: the speed does not depend on the content), batches
   of --batch-size, torch on --threads cores, from waveform to probabilities through the course's one
   prediction path (irmas_lib.checkpoint.LoadedModel.predict_proba), each model on both paths in turn:
     basic CNN        MultiBandSpectrogram + normalisation + MultiBranchCNN
     PANNs multi-band MultiBandSpectrogram + normalisation + PannsMultiBand (three CNN14 passes)
     PANNs native     PannsNative: resampling to 32 kHz + CNN14's log-mel + one CNN14 pass
   Printed per model and path: windows per second and the real-time factor at `irmas evaluate`'s default
   hop of 1.5 s (each window adds 1.5 s of excerpt: windows/s × 1.5); then `speed-up over float32 for
   <model>: N.N×` and the agreement of the two paths' probabilities on these windows (random weights:
   the agreement on mini-IRMAS with trained weights is bench_evaluate.py's).
2. Phase 1 on the mini-IRMAS feature cache (training side of the split, mixing off): one epoch of the
   Lightning loop with the frozen backbone run on every batch, against the one-time cost of
   EmbeddingCache.compute and an epoch of the head over the cached embeddings (mean of 3 epochs).
   Target: the cached epoch >= 20× faster.
3. Phase 2: one training step (forward, backward, AdamW) of PANNs multi-band on a batch of 3-s clips,
   float32 and fast path (autocast in forward and loss, as Lightning's "bf16-mixed" does). Target ≥ 2×.
4. Checkpoint sizes of each model: all weights in float32 with AdamW's state (last.ckpt, and best.ckpt
   before issue 12) computed from the parameter count; best.ckpt as written now
   (irmas_lib.checkpoint.make_inference_only) measured on disk, with the backbone trained (phase 2) and,
   for the multi-band model, never trained (phase 1: a reference to a CNN14 file, here a random one);
   then the weights as best.ckpt stores them (int8 for the PANNs models, read back to float32) against
   the float32 weights on a batch of windows: the agreement of the probabilities, and how far they move
   the logits beside the fast path's bfloat16 arithmetic (random weights put every probability near
   0.5, so the relative change of the logits is the figure to compare).
5. Real IRMAS (6,705 training clips): epoch costs extrapolated per clip from 2 and 3 on this CPU, and
   estimated for one GPU from counted FLOPs (torch.utils.flop_counter; a training step ≈ 3 × the forward
   FLOPs) divided by an assumed sustained throughput (--gpu-tflops, default 8.1 TFLOP/s = an NVIDIA T4's
   FP32 peak, at --gpu-utilisation 0.4): an estimate, not a measurement; data loading is assumed to keep up.

The models have random weights (load_weights=False; the AudioSet checkpoint cannot be downloaded here):
speed does not depend on them. Nothing is asserted. Timings taken while other programs use the CPU are
pessimistic: the load average is printed; ratios measured side by side are the figures to read.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_IRMAS_TRAIN_CLIPS = 6705
CLIP_SECONDS = 3.0
DEFAULT_HOP_SECONDS = 1.5
PANNS_RECIPE = dict(lr=1e-3, lr_schedule=None, spec_augment=False)  # configs/panns_enhanced.yaml's phase 1


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(function, repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs after one warm-up run."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(function, inputs) -> int:
    """FLOPs of ``function(inputs)`` (torch.utils.flop_counter: 2 per multiply-add of matmuls and convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        function(inputs)
    return counter.get_total_flops()


def build_models(config) -> dict:
    """name -> a LoadedModel (irmas_lib.checkpoint) around a randomly initialised network: the same
    prediction path `irmas evaluate` takes (spectrogram front end, then the network on the chosen path)."""
    from pathlib import Path

    from irmas_lib.checkpoint import LoadedModel
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.models.panns import PannsMultiBand, PannsNative

    stats = {band.name: {"mean": [0.0] * config.n_bins(band), "std": [1.0] * config.n_bins(band)}
             for band in config.bands}
    networks = {"basic CNN": MultiBranchCNN(n_bands=len(config.bands)),
                "PANNs multi-band": PannsMultiBand(n_bands=len(config.bands), load_weights=False),
                "PANNs native": PannsNative(load_weights=False, input_sample_rate=config.sample_rate)}
    return {name: LoadedModel(model=network.eval(), feature_config=config,
                              norm_stats=None if network.input_kind == "waveform" else stats, thresholds=None,
                              pretrained=False, model_name=type(network).__name__, input_kind=network.input_kind,
                              path=Path("(random weights)"))
            for name, network in networks.items()}


def float32_path():
    """The plain float32 path (default memory layout): the reference of every speed-up."""
    from irmas_lib.precision import Precision

    import torch

    return Precision(dtype=torch.float32, channels_last=False, reason="reference")


def bench_inference(config, batch_size: int, repeats: int, fast) -> dict:
    """Windows per second of each model on the float32 path and on ``fast``, timed in turn on the same
    windows (float32, fast, float32, fast, ...: a change of machine load hits both alike)."""
    import torch

    from irmas_lib.precision import agreement, format_agreement

    models = build_models(config)
    windows = torch.randn(batch_size, config.clip_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    results = {}
    for name, loaded in models.items():
        paths = {"float32": float32_path(), "fast": fast}
        times = {key: [] for key in paths}
        probabilities = {}
        for key, path in paths.items():  # warm-up of each path (one-off allocations, weight layout)
            loaded.use_precision(path)
            probabilities[key] = loaded.predict_proba(windows).numpy()
        for _ in range(repeats):
            for key, path in paths.items():
                loaded.use_precision(path)
                start = time.perf_counter()
                loaded.predict_proba(windows)
                times[key].append(time.perf_counter() - start)
        loaded.use_precision(float32_path())
        flops = forward_flops(lambda w: loaded.predict_proba(w), windows[:1])
        rates = {key: batch_size / statistics.median(t) for key, t in times.items()}
        for key in paths:
            print(f"  {name:<17} {key:<8} {rates[key]:7.1f} windows/s   real time × {rates[key] * DEFAULT_HOP_SECONDS:6.1f} "
                  f"at hop {DEFAULT_HOP_SECONDS} s   (load {load_average()})", flush=True)
        speed_up = rates["fast"] / rates["float32"]
        print(f"  speed-up over float32 for {name}: {speed_up:.1f}×   ({flops / 1e9:.1f} GFLOP/window)")
        print(f"  agreement on these {batch_size} windows: "
              f"{format_agreement(agreement(probabilities['float32'], probabilities['fast'], 0.5))}", flush=True)
        results[name] = dict(windows_per_s=rates["float32"], fast_windows_per_s=rates["fast"], speed_up=speed_up,
                             flops_per_window=flops, loaded=loaded)
    return results


def quiet_trainer(max_epochs: int, callbacks: list):
    import pytorch_lightning as pl

    return pl.Trainer(max_epochs=max_epochs, limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=1)


def bench_phase_one(cache_dir: Path, batch_size: int, max_clips: int) -> dict:
    import logging
    import warnings

    import torch
    from torch.utils.data import DataLoader, Subset

    from irmas_lib.data import FeatureDataModule, collate_bands
    from irmas_lib.finetuning import EmbeddingCache, HeadOnEmbeddings, TwoPhaseFinetuning
    from irmas_lib.models.panns import PannsMultiBand
    from irmas_lib.training import InstrumentClassifier

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    data = FeatureDataModule(str(cache_dir), batch_size=batch_size, num_workers=0, mix=False)
    data.setup("fit")
    dataset = data.train_set if not max_clips else Subset(data.train_set, range(min(max_clips, len(data.train_set))))
    n_clips = len(dataset)

    def loader(shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_bands)

    torch.manual_seed(0)
    model = PannsMultiBand(load_weights=False)
    print(f"  {n_clips} training clips of mini-IRMAS (mixing off), batches of {batch_size}", flush=True)

    start = time.perf_counter()
    quiet_trainer(1, [TwoPhaseFinetuning(unfreeze_at_epoch=100)]).fit(InstrumentClassifier(model, **PANNS_RECIPE),
                                                                      train_dataloaders=loader(True))
    uncached_epoch = time.perf_counter() - start
    print(f"  uncached phase-1 epoch: {uncached_epoch:8.2f} s   (load {load_average()})", flush=True)

    start = time.perf_counter()
    cache = EmbeddingCache.compute(model, loader(False))
    cache_s = time.perf_counter() - start
    print(f"  EmbeddingCache.compute (once): {cache_s:8.2f} s   -> {tuple(cache.embeddings.shape)}", flush=True)

    epochs = 3
    start = time.perf_counter()
    quiet_trainer(epochs, []).fit(InstrumentClassifier(HeadOnEmbeddings(model), **PANNS_RECIPE),
                                  train_dataloaders=cache.dataloader(batch_size=batch_size))
    cached_epoch = (time.perf_counter() - start) / epochs
    print(f"  cached phase-1 epoch:   {cached_epoch:8.3f} s   -> {uncached_epoch / cached_epoch:.0f}× faster "
          f"(target >= 20×)   (load {load_average()})", flush=True)
    return dict(n_clips=n_clips, uncached_epoch_s=uncached_epoch, cache_s=cache_s, cached_epoch_s=cached_epoch)


def bench_phase_two_step(config, batch_size: int, fast) -> dict:
    """Seconds of one phase-2 training step (all parameters, AdamW) of PannsMultiBand on 3-s clips, on the
    float32 path and on ``fast`` (autocast around forward and loss, weights in float32, as Lightning's
    "bf16-mixed"; channels_last weights), timed in turn: {"float32": s, "fast": s}."""
    import torch

    from irmas_lib.features import MultiBandSpectrogram
    from irmas_lib.models.panns import PannsMultiBand
    from irmas_lib.precision import prepare_model

    torch.manual_seed(0)
    model = PannsMultiBand(n_bands=len(config.bands), load_weights=False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as InstrumentClassifier's
    with torch.no_grad():
        bands = MultiBandSpectrogram(config)(torch.randn(batch_size, config.clip_samples) * 0.1)
    bands = [(b - b.mean()) / b.std() for b in bands]
    targets = torch.zeros(batch_size, 11)
    targets[:, 0] = 1

    def layout(path):   # outside the timed region: switching 240 M parameters is not part of a step
        prepare_model(model, path)

    def step(path):
        optimizer.zero_grad()
        with path.autocast():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(bands)["logits"].float(), targets)
        loss.backward()
        optimizer.step()

    paths = {"float32": float32_path(), "fast": fast}
    for path in paths.values():
        layout(path)
        step(path)  # warm-up (AdamW's state is allocated in the first step)
    times = {key: [] for key in paths}
    for _ in range(2):
        for key, path in paths.items():
            layout(path)
            start = time.perf_counter()
            step(path)
            times[key].append(time.perf_counter() - start)
    return {key: min(t) for key, t in times.items()}


def logits_moved(reference, other) -> float:
    """||logit(other) - logit(reference)|| / ||logit(reference)||: how far another path moves the logits,
    from two (n, 11) probability arrays (random weights give probabilities near 0.5, where the agreement
    of probabilities says little; this relative change compares the paths)."""
    import numpy as np

    a, b = (np.log(p / (1 - p)) for p in (np.asarray(reference, np.float64), np.asarray(other, np.float64)))
    return float(np.linalg.norm(b - a) / np.linalg.norm(a))


def bench_checkpoint_sizes(models: dict, windows, fast) -> None:
    """Print each model's checkpoint sizes: float32 weights + AdamW state (computed) against best.ckpt as
    make_inference_only writes it (measured on disk, in a temporary folder), and how the weights as
    best.ckpt stores them (int8/float16, read back to float32) change the probabilities of ``windows``
    against the float32 weights, beside the change the fast path's arithmetic makes."""
    import copy
    import dataclasses
    import tempfile

    import torch

    from irmas_lib.checkpoint import SECTION, STATE_PREFIX, make_inference_only, restore_weights
    from irmas_lib.models.pretrained import build_cnn14
    from irmas_lib.precision import agreement, format_agreement

    def written(checkpoint: dict, folder: Path) -> tuple[float, dict]:
        """Size in MB of ``checkpoint`` on disk, and the checkpoint read back."""
        path = folder / "best.ckpt"
        torch.save(checkpoint, path)
        size = path.stat().st_size / 1e6
        read_back = torch.load(path, map_location="cpu", weights_only=True)
        path.unlink()
        return size, read_back

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, loaded in models.items():
            network = loaded.model
            n_parameters = sum(p.numel() for p in network.parameters())
            full = sum(t.numel() * t.element_size() for t in network.state_dict().values()) + 2 * 4 * n_parameters
            checkpoint = {"state_dict": {f"model.{k}": v.clone() for k, v in network.state_dict().items()},
                          SECTION: {}}
            trained, stored = written(make_inference_only(checkpoint, network), folder)
            dtype = stored[SECTION]["weights_dtype"]
            line = (f"  {name:<17} with AdamW's state (last.ckpt) {full / 1e6:7.0f} MB (computed)   "
                    f"best.ckpt ({dtype} weights), backbone trained {trained:6.0f} MB")
            if hasattr(network, "cnn14_file_keys"):  # a never-trained backbone: a reference to its file
                cnn14 = folder / "Cnn14_random.pth"
                torch.save({"model": build_cnn14().state_dict()}, cnn14)
                state = torch.load(cnn14, weights_only=True)["model"]
                original = {k: v.clone() for k, v in network.state_dict().items()}  # the live tensors change next
                network.load_state_dict({**original, **{k: state[f] for k, f in network.cnn14_file_keys().items()
                                                        if f in state}})
                network.cnn14_file = str(cnn14)
                frozen = {"state_dict": {f"model.{k}": v for k, v in network.state_dict().items()}, SECTION: {}}
                line += f", never trained (phase 1) {written(make_inference_only(frozen, network), folder)[0]:5.0f} MB"
                network.cnn14_file = None
                network.load_state_dict(original)
            print(line, flush=True)

            # the weights best.ckpt stores, read back to float32, against the float32 weights
            restored = copy.deepcopy(network)
            restored.load_state_dict({k.removeprefix(STATE_PREFIX): v
                                      for k, v in restore_weights(stored, "best.ckpt").items()})
            probabilities = {}
            for key, model, path in (("float32", network, float32_path()), ("stored", restored, float32_path()),
                                     ("fast", network, fast)):
                use = dataclasses.replace(loaded, model=model)
                use.use_precision(path)
                with torch.inference_mode():
                    probabilities[key] = use.predict_proba(windows).numpy()
            loaded.use_precision(float32_path())
            reference = probabilities["float32"]
            print(f"    best.ckpt's {dtype} weights against float32 weights: "
                  f"{format_agreement(agreement(reference, probabilities['stored'], 0.5))}; "
                  f"logits moved {100 * logits_moved(reference, probabilities['stored']):.2f} % "
                  f"(the fast path's arithmetic: {100 * logits_moved(reference, probabilities['fast']):.2f} %)",
                  flush=True)
            del restored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=REPO / "data" / "mini_irmas_features",
                        help="feature cache of mini-IRMAS (irmas preprocess --in_dir data/mini_irmas --out_dir ...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed inference batches per model (after a warm-up)")
    parser.add_argument("--phase1-clips", type=int, default=0, help="limit phase 1 to this many clips (0: all)")
    parser.add_argument("--skip-phase1", action="store_true")
    parser.add_argument("--skip-phase2", action="store_true")
    parser.add_argument("--skip-sizes", action="store_true", help="skip the checkpoint sizes (writes ~0.3 GB to /tmp)")
    parser.add_argument("--gpu-tflops", type=float, default=8.1, help="assumed GPU peak (default: T4 FP32)")
    parser.add_argument("--gpu-utilisation", type=float, default=0.4, help="assumed fraction of the peak sustained")
    args = parser.parse_args(argv)

    import torch

    from irmas_lib.features import FeatureConfig
    from irmas_lib.precision import cpu_has_native_bf16, resolve_precision

    torch.set_num_threads(args.threads)
    config = FeatureConfig()
    fast = resolve_precision("auto")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {load_average()}")
    print(f"CPU computes bfloat16 natively: {cpu_has_native_bf16()}; fast path taken: {fast.describe()}")

    print(f"\n1. Inference, batches of {args.batch_size} windows of {CLIP_SECONDS:g} s (median of {args.repeats}, "
          "float32 and fast path in turn)")
    inference = bench_inference(config, args.batch_size, args.repeats, fast)

    phase_one = None
    if not args.skip_phase1:
        print("\n2. Phase 1 (backbone frozen), with and without the embedding cache (float32)")
        from irmas_lib.errors import IrmasError

        try:
            phase_one = bench_phase_one(args.cache, args.batch_size, args.phase1_clips)
        except IrmasError as error:
            print(f"  skipped: {error}\n  (make one: irmas preprocess --in_dir data/mini_irmas --out_dir {args.cache})")

    step_s = None
    if not args.skip_phase2:
        print(f"\n3. Phase 2: one training step of PANNs multi-band, batch {args.batch_size} × {CLIP_SECONDS:g} s")
        steps = bench_phase_two_step(config, args.batch_size, fast)
        for key, seconds in steps.items():
            print(f"  {key:<8} {seconds:6.1f} s per step = {seconds / args.batch_size:.2f} s per clip")
        print(f"  speed-up over float32 for the phase-2 step: {steps['float32'] / steps['fast']:.1f}× (target ≥ 2×)   "
              f"(load {load_average()})", flush=True)
        step_s = steps["fast"]

    if not args.skip_sizes:
        print("\n4. Checkpoint sizes (random weights; a pretrained file is referenced the same way)")
        windows = torch.randn(args.batch_size, config.clip_samples, generator=torch.Generator().manual_seed(1)) * 0.1
        bench_checkpoint_sizes({name: result["loaded"] for name, result in inference.items()}, windows, fast)

    print(f"\n5. One epoch over real IRMAS ({REAL_IRMAS_TRAIN_CLIPS:,} training clips of {CLIP_SECONDS:g} s)")
    n = REAL_IRMAS_TRAIN_CLIPS
    hours = lambda seconds: f"{seconds / 3600:6.2f} h"  # noqa: E731
    flops = inference["PANNs multi-band"]["flops_per_window"]
    cpu_forward = args.batch_size / inference["PANNs multi-band"]["fast_windows_per_s"]  # s per batch
    cpu_tflops = flops * args.batch_size / cpu_forward / 1e12
    print(f"  this CPU ({args.threads} threads), PANNs multi-band, fast path:")
    print(f"    phase 1, backbone run every epoch (inference speed): {hours(n * cpu_forward / args.batch_size)}")
    if phase_one:
        per_clip_uncached = phase_one["uncached_epoch_s"] / phase_one["n_clips"]
        per_clip_cached = phase_one["cached_epoch_s"] / phase_one["n_clips"]
        print(f"    phase 1 measured through Lightning, uncached:      {hours(n * per_clip_uncached)}")
        print(f"    phase 1 with the cache: once {hours(n * phase_one['cache_s'] / phase_one['n_clips'])}, "
              f"then {n * per_clip_cached:.1f} s per epoch")
    if step_s:
        print(f"    phase 2 (training every layer):                    {hours(n * step_s / args.batch_size)}")
    print(f"    (effective CPU throughput in inference: {cpu_tflops:.2f} TFLOP/s)")
    gpu = args.gpu_tflops * args.gpu_utilisation * 1e12
    print(f"  one GPU, ESTIMATED from FLOPs: {flops / 1e9:.1f} GFLOP per clip forward (counted), "
          f"{args.gpu_tflops:g} TFLOP/s peak × {args.gpu_utilisation:g} sustained:")
    print(f"    phase 1 (forward only):   {n * flops / gpu / 60:6.1f} min per epoch (once, with the cache)")
    print(f"    phase 2 (3 × forward):    {n * 3 * flops / gpu / 60:6.1f} min per epoch")
    print("  (mixed precision on tensor cores raises the peak several-fold; reading cached features must keep up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
