"""Reference solutions of the exercises that train a model (notebooks 03, 04 and 05).

The other exercises have their solution in a collapsed cell of their notebook, run by nbval. These
train, which is too slow for a notebook's CI run, so each is one function here, printed by a
collapsed cell of its notebook and run by ``tests/test_solutions.py`` in a reduced setting (one short
epoch). Call one from the notebook to run it for real, e.g.
``solutions.notebook03_exercise1(CACHE, RUNS / "exercises", epochs=EPOCHS)``.

Every function returns a small ``pandas.DataFrame`` (one row per variant) or a dict, and takes
``trainer_args`` for the Lightning ``Trainer`` (the tests pass ``{"limit_train_batches": 2, ...}``).

Notebook: 03_basic_cnn.ipynb, 04_generalisation.ipynb, 05_panns_two_phase.ipynb
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from irmas_lib.errors import IrmasError


def _variants(variants: dict[str, dict[str, Any]], cache_dir, run_dir, epochs: int, trainer_args=None) -> pd.DataFrame:
    """Train one MultiBranchCNN per variant ({name: fit_model arguments, "model": a network}); one row each:
    parameters, seconds (in all and per epoch), best validation mAP and its micro/macro F1 (threshold 0.6)."""
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.training import fit_model

    rows = {}
    for name, args in variants.items():
        args = dict(args)
        torch.manual_seed(args.get("seed", 0))
        model = args.pop("model", None) or MultiBranchCNN()
        run = fit_model(model, cache_dir, Path(run_dir) / name.replace(" ", "_"), max_epochs=epochs,
                        trainer_args=trainer_args, keep_last=False, **args)
        best = run.metrics.loc[run.metrics["val/mAP"].idxmax()]
        rows[name] = {"parameters": sum(p.numel() for p in model.parameters()), "seconds": round(run.seconds, 1),
                      "seconds per epoch": round(run.seconds / len(run.metrics), 2), "val mAP": best["val/mAP"],
                      "val micro-F1": best["val/micro_f1"], "val macro-F1": best["val/macro_f1"]}
    return pd.DataFrame(rows).T


def notebook03_exercise1(cache_dir, run_dir, epochs: int = 30, trainer_args=None) -> pd.DataFrame:
    """SpecAugment on (the default) and off. On mini-IRMAS expect a small difference either way: with
    few epochs masking slows learning; it pays, if at all, on longer runs and on unseen recordings."""
    return _variants({"SpecAugment on": {}, "SpecAugment off": {"spec_augment": False}},
                     cache_dir, run_dir, epochs, trainer_args)


def notebook03_exercise2(cache_dir, run_dir, epochs: int = 30, trainer_args=None) -> pd.DataFrame:
    """Narrower and wider branches: parameters grow 2.5- to 3-fold per doubling of the channels (the
    convolutions about fourfold, the fusion layer twofold), the time per epoch less (the convolutions on
    small images are not the only cost); mAP saturates."""
    from irmas_lib.models.basic import MultiBranchCNN

    return _variants({f"channels {c}": {"model": MultiBranchCNN(channels=c)} for c in [(8, 16, 32), (16, 32, 64), (32, 64, 128)]},
                     cache_dir, run_dir, epochs, trainer_args)


def notebook03_exercise3(cache_dir, run_dir, epochs: int = 30, trainer_args=None) -> pd.DataFrame:
    """``pos_weight="auto"`` weighs each instrument's positives by its negatives/positives ratio: more
    positive decisions, higher recall, usually a higher macro-F1 at the fixed threshold, lower precision."""
    return _variants({"no pos_weight": {}, "pos_weight auto": {"pos_weight": "auto"}},
                     cache_dir, run_dir, epochs, trainer_args)


def notebook03_exercise4(root, cache_dir, run_dir, epochs: int = 30, seeds=(0, 1, 2), trainer_args=None) -> pd.DataFrame:
    """Notebook 03's section 6 with several seeds: test mAP with and without mixing for each seed, then
    the mean and spread. A difference smaller than the spread between seeds is not a finding."""
    from irmas_lib.evaluation import evaluate_excerpts
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.training import fit_model

    rows = []
    for seed in seeds:
        for mix in (True, False):
            torch.manual_seed(seed)
            run = fit_model(MultiBranchCNN(), cache_dir, Path(run_dir) / f"seed{seed}_{'mix' if mix else 'nomix'}",
                            max_epochs=epochs, mix=mix, seed=seed, trainer_args=trainer_args, keep_last=False)
            metrics = evaluate_excerpts(run.best_checkpoint, root, threshold="tuned").metrics
            rows.append({"seed": seed, "mixing": mix, "test mAP": metrics["mAP"], "test macro-F1": metrics["macro_f1"]})
    table = pd.DataFrame(rows)
    summary = table.groupby("mixing")[["test mAP", "test macro-F1"]].agg(["mean", "std"])
    return summary


def notebook03_exercise5(run_dir, epochs: int = 12, config: str | Path | None = None, extra_args=()) -> Path:
    """`irmas train` from the command line, as a subprocess; returns the run's ``metrics.csv``.
    (Equivalent in a terminal: ``irmas train --config configs/default.yaml --trainer.max_epochs 12``.)"""
    from irmas_lib.course import repo_root

    config = Path(config) if config else repo_root() / "configs" / "default.yaml"
    run_dir = Path(run_dir)
    command = [sys.executable, "-m", "irmas_lib", "train", "--config", str(config), "--trainer.max_epochs", str(epochs),
               "--trainer.logger.init_args.save_dir", str(run_dir.parent),
               "--trainer.logger.init_args.name", run_dir.name, *extra_args]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=repo_root())
    return sorted(run_dir.glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)[-1]


def _per_library(checkpoint, root) -> dict[str, float]:
    """Test mAP per sample library (mini-IRMAS) of one checkpoint."""
    from irmas_lib.evaluation import evaluate_excerpts

    per_library = evaluate_excerpts(checkpoint, root, threshold="tuned").metrics["per_library"]
    return {library: figures["mAP"] for library, figures in per_library.items()}


def notebook04_exercise1(root, cache_dir, run_dir, epochs: int = 40, trainer_args=None) -> pd.DataFrame:
    """TimGM6mb only, for ``epochs`` and twice as many: test mAP on each library's excerpts. More epochs
    mostly move the in-library cell (TimGM6mb): they learn more of the library the model already knows."""
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.training import fit_model

    rows = {}
    for n in (epochs, 2 * epochs):
        torch.manual_seed(0)
        run = fit_model(MultiBranchCNN(), cache_dir, Path(run_dir) / f"TimGM6mb_{n}e", max_epochs=n, seed=0,
                        libraries=["TimGM6mb"], trainer_args=trainer_args, keep_last=False)
        rows[f"{n} epochs"] = _per_library(run.best_checkpoint, root)
    return pd.DataFrame(rows).T


def notebook04_exercise2(root, cache_dir, run_dir, epochs: int = 40, trainer_args=None) -> pd.DataFrame:
    """TimGM6mb only, with log-frequency rows (the default) and with linear STFT bins: test mAP per library
    and training time. Expect linear bins to be slower and a few hundredths apart across libraries,
    about the spread between seeds: repeat with another seed before you believe the difference."""
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.training import fit_model

    rows = {}
    for name, rows_per_octave in [("log-frequency rows", 12), ("linear bins", None)]:
        torch.manual_seed(0)
        run = fit_model(MultiBranchCNN(rows_per_octave=rows_per_octave), cache_dir, Path(run_dir) / name.replace(" ", "_"),
                        max_epochs=epochs, seed=0, libraries=["TimGM6mb"], trainer_args=trainer_args, keep_last=False)
        rows[name] = {**_per_library(run.best_checkpoint, root), "seconds": round(run.seconds, 1)}
    return pd.DataFrame(rows).T


def notebook04_exercise3(root, cache_dir, run_dir, epochs: int = 40, trainer_args=None) -> pd.DataFrame:
    """TimGM6mb only, without and with the colour (random equaliser, up to 8 dB) and level (6 dB)
    augmentation: in our runs it traded in-library mAP for little or no cross-library gain."""
    from irmas_lib.data import FeatureDataModule
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.training import fit_model

    rows = {}
    for name, augment in [("no augmentation", {}), ("colour 8 dB, level 6 dB", {"colour_db": 8, "level_db": 6})]:
        torch.manual_seed(0)
        data = FeatureDataModule(str(cache_dir), libraries=["TimGM6mb"], seed=0, **augment)
        run = fit_model(MultiBranchCNN(), cache_dir, Path(run_dir) / ("colour" if augment else "plain"), max_epochs=epochs,
                        seed=0, datamodule=data, trainer_args=trainer_args, keep_last=False)
        rows[name] = _per_library(run.best_checkpoint, root)
    return pd.DataFrame(rows).T


def notebook04_exercise4(out_dir, third_soundfont, epochs: int = 40, train_per_class: int = 180, test_excerpts: int = 180,
                         trainer_args=None) -> pd.DataFrame:
    """A third library, and whether it is a new "studio". Renders mini-IRMAS from the two default
    libraries and ``third_soundfont`` (e.g. Debian's ``/usr/share/sounds/sf2/sf_GMbank.sf2``; 60 clips of
    each instrument per library with the default sizes, as in the course's mini-IRMAS), trains on
    TimGM6mb alone and on TimGM6mb plus the third library, and scores both on FluidR3 GM's excerpts.

    Returns:
        DataFrame indexed by instrument: how many of its recordings TimGM6mb and the third library
        share, each model's AP on FluidR3 GM's excerpts, and the difference. The second model also
        sees twice as many clips: in our run instruments with shared recordings gained as much as
        those with new ones, and TimGM6mb alone with as many clips did as well (the README's
        *Generalisation* section). A fair test of a new "studio" holds the number of clips fixed.
    """
    from irmas_lib.cache import preprocess
    from irmas_lib.evaluation import evaluate_excerpts
    from irmas_lib.labels import CODES, NAMES
    from irmas_lib.libraries import FLUIDR3_LIBRARY, default_soundfonts, library_name, shared_recordings
    from irmas_lib.metrics import per_instrument_scores
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.synth import render_mini_irmas
    from irmas_lib.training import fit_model

    out_dir = Path(out_dir)
    defaults, missing = default_soundfonts()
    if missing:
        raise IrmasError(f"{FLUIDR3_LIBRARY} is not installed: this exercise tests on it ({missing[0]['install']})")
    bundled, third = defaults[0], library_name(third_soundfont)
    render_mini_irmas(out_dir / "audio", train_per_class=train_per_class, test_excerpts=test_excerpts,
                      soundfonts=[*defaults, Path(third_soundfont)], progress=False)
    preprocess(out_dir / "audio", out_dir / "features", progress=False)
    table = shared_recordings(bundled, third_soundfont)[["shared"]].rename(
        columns={"shared": f"recordings shared by TimGM6mb and {third}"})
    for name, libraries in (("TimGM6mb", [library_name(bundled)]), (f"TimGM6mb + {third}", [library_name(bundled), third])):
        torch.manual_seed(0)
        run = fit_model(MultiBranchCNN(), out_dir / "features", out_dir / "runs" / name.replace(" + ", "_and_"),
                        max_epochs=epochs, seed=0, libraries=libraries, trainer_args=trainer_args, keep_last=False)
        evaluation = evaluate_excerpts(run.best_checkpoint, out_dir / "audio", threshold="tuned")
        chosen = (evaluation.excerpts["library"] == FLUIDR3_LIBRARY).to_numpy()
        ap = per_instrument_scores(evaluation.predictions.probs[chosen], evaluation.targets[chosen])["ap"]
        table[f"AP on {FLUIDR3_LIBRARY}, trained on {name}"] = pd.Series(ap, index=[NAMES[code] for code in CODES])
    table["difference"] = table.iloc[:, 2] - table.iloc[:, 1]
    return table


def notebook04_exercise5(root, cache_dir, run_dir, epochs: int = 40, seeds=(0, 1), trainer_args=None) -> pd.DataFrame:
    """TimGM6mb only, once per seed, and the mean of their probabilities (an ensemble): test mAP per library.
    In our runs the mean of two TimGM6mb-only models gained a few hundredths on FluidR3 GM's excerpts (and
    the mean of two FluidR3 GM-only models nothing on TimGM6mb's; the README's Generalisation section has the
    figures): far less than a second library in training gives, and each model costs a training run."""
    from irmas_lib.evaluation import evaluate_excerpts, metrics_by_library
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.training import fit_model

    if not seeds or len(set(seeds)) != len(seeds):
        raise IrmasError(f"seeds {tuple(seeds)!r}: give one or more different seeds, one model each")
    rows, probs, excerpts = {}, [], None
    for seed in seeds:
        torch.manual_seed(seed)   # the initial weights (fit_model seeds the rest)
        run = fit_model(MultiBranchCNN(), cache_dir, Path(run_dir) / f"TimGM6mb_seed{seed}", max_epochs=epochs,
                        seed=seed, libraries=["TimGM6mb"], trainer_args=trainer_args, keep_last=False)
        scored = evaluate_excerpts(run.best_checkpoint, root, threshold="tuned")
        if scored.metrics["per_library"] is None:
            raise IrmasError(f"{root}: no mini-IRMAS manifest says which library rendered each excerpt")
        if excerpts is not None and list(scored.excerpts["path"]) != excerpts:
            raise IrmasError(f"{root}: the test excerpts changed between two evaluations")
        excerpts = list(scored.excerpts["path"])
        rows[f"seed {seed}"] = {library: f["mAP"] for library, f in scored.metrics["per_library"].items()}
        probs.append(scored.predictions.probs)  # (n_excerpts, 11), the same excerpts in the same order each time
    # mAP ranks the probabilities and ignores the thresholds (the last argument)
    mean = metrics_by_library(np.mean(probs, axis=0), scored.targets, scored.excerpts["library"], scored.thresholds)
    rows[f"mean of {len(seeds)} models"] = {library: f["mAP"] for library, f in mean.items()}
    return pd.DataFrame(rows).T


def notebook05_exercise1(clip_paths, top: int = 5) -> dict[str, list[tuple[str, float]]]:
    """CNN14 alone (AudioSet's 527 classes) on some clips: the ``top`` classes per clip. Needs the
    pretrained weights and AudioSet's label list (``irmas download-panns``); without them CNN14 has
    random weights and the answer means nothing (the function still runs, and says so in each key)."""
    from irmas_lib.audio import read_audio
    from irmas_lib.models.pretrained import audioset_labels, load_cnn14

    cnn14 = load_cnn14(allow_random_init=True)
    labels = audioset_labels() or [f"class {k}" for k in range(527)]
    answers = {}
    for path in clip_paths:
        with torch.no_grad():
            probs = cnn14(torch.as_tensor(read_audio(path, sample_rate=32000)))["clipwise_output"][0]   # (527,)
        best = torch.topk(probs, top)
        key = Path(path).name + ("" if cnn14.pretrained else " (RANDOM weights)")
        answers[key] = [(labels[int(i)], round(float(p), 3)) for p, i in zip(best.values, best.indices)]
    return answers


def _two_phase(model, cache_dir, run_dir, phase1_epochs: int, phase2_epochs: int, batch_size: int, trainer_args=None):
    from irmas_lib.finetuning import TwoPhaseFinetuning
    from irmas_lib.training import fit_model

    torch.manual_seed(0)
    return fit_model(model, cache_dir, run_dir, max_epochs=phase1_epochs + phase2_epochs, batch_size=batch_size,
                     lr=1e-3, lr_schedule=None, spec_augment=False, mix=False, val_mixes=False,
                     callbacks=[TwoPhaseFinetuning(unfreeze_at_epoch=phase1_epochs, finetune_lr=1e-4)],
                     trainer_args=trainer_args, keep_last=False)


def _row(run) -> dict[str, float]:
    best = run.metrics.loc[run.metrics["val/mAP"].idxmax()]
    parameters = sum(p.numel() for p in run.module.model.parameters())
    trained = sum(p.numel() for p in run.module.model.parameters() if p.requires_grad)   # at the end of the run
    # float32 weights (4 bytes each), and for the trained ones their gradients and AdamW's two moments (12)
    return {"parameters (M)": parameters / 1e6,
            "weights, gradients, AdamW (MB)": round((4 * parameters + 12 * trained) / 1e6),
            "seconds": round(run.seconds, 1), "seconds per epoch": round(run.seconds / len(run.metrics), 2),  # fit/epoch
            "best val mAP": best["val/mAP"]}


def notebook05_exercise2(cache_dir, run_dir, phase1_epochs: int = 2, phase2_epochs: int = 2, batch_size: int = 16,
                         trainer_args=None) -> pd.DataFrame:
    """The multi-band model with three extractors and with one shared: a third of the parameters (and of
    the memory of weights, gradients and AdamW's state), about the same time per step (three passes
    either way), mAP within the spread between runs."""
    from irmas_lib.models.panns import PannsMultiBand

    rows = {}
    for share in (False, True):
        run = _two_phase(PannsMultiBand(share_backbone=share, allow_random_init=True), cache_dir,
                         Path(run_dir) / f"share_{share}", phase1_epochs, phase2_epochs, batch_size, trainer_args)
        rows[f"share_backbone={share}"] = _row(run)
    return pd.DataFrame(rows).T


def notebook05_exercise3(cache_dir, run_dir, epochs: int = 4, batch_size: int = 16, trainer_args=None) -> pd.DataFrame:
    """Phase 1 only (``unfreeze_at_epoch`` beyond the last epoch): a head on frozen CNN14 features. With
    the AudioSet weights it gets a fair part of the way cheaply; with random weights, hardly anywhere."""
    from irmas_lib.models.panns import PannsMultiBand

    run = _two_phase(PannsMultiBand(allow_random_init=True), cache_dir, Path(run_dir) / "phase1_only", epochs + 1, 0,
                     batch_size, {**(trainer_args or {}), "max_epochs": epochs})
    return pd.DataFrame({"phase 1 only": _row(run)}).T


def band_to_mel_rows(band: torch.Tensor, low_hz: float, high_hz: float, rows: int = 64) -> torch.Tensor:
    """Like :func:`irmas_lib.models.panns.band_to_cnn14_rows`, but onto ``rows`` *mel-spaced* frequencies
    between the band's edges (what CNN14's filters learnt), by linear interpolation between the band's
    linear STFT bins: (batch, n_bins, frames) -> (batch, 1, frames, rows)."""
    import librosa

    n_bins = band.shape[1]
    bin_hz = np.linspace(low_hz, high_hz, n_bins, endpoint=False)                # about the bins' centres
    target_hz = librosa.mel_frequencies(rows, fmin=low_hz, fmax=high_hz * (1 - 1 / n_bins))
    position = torch.as_tensor(np.interp(target_hz, bin_hz, np.arange(n_bins)), dtype=band.dtype)   # fractional bin
    below = position.floor().long().clamp(max=n_bins - 2)
    weight = (position - below).to(band.dtype)                                   # (rows,)
    x = band[:, below, :] * (1 - weight)[None, :, None] + band[:, below + 1, :] * weight[None, :, None]   # (batch, rows, frames)
    return x.transpose(1, 2).unsqueeze(1)


def notebook05_exercise4(cache_dir, run_dir, phase1_epochs: int = 2, batch_size: int = 16, trainer_args=None) -> pd.DataFrame:
    """Phase 1 with the bands brought to 64 *mel-spaced* rows instead of 64 linear rows. Frozen filters
    that learnt mel rows see harmonics spaced as in AudioSet; with the pretrained weights this may help
    phase 1 a little; with random weights it cannot mean anything."""
    from irmas_lib.features import FeatureConfig
    from irmas_lib.models.panns import PannsMultiBand

    bands = FeatureConfig().bands

    class PannsMultiBandMel(PannsMultiBand):
        def extract(self, inputs):
            return torch.cat([extractor(band_to_mel_rows(x, b.low_hz, b.high_hz))
                              for extractor, x, b in zip(self.extractors(), inputs, bands)], dim=1)

    rows = {}
    for name, model in [("linear rows", PannsMultiBand(allow_random_init=True)),
                        ("mel-spaced rows", PannsMultiBandMel(allow_random_init=True))]:
        run = _two_phase(model, cache_dir, Path(run_dir) / name.replace(" ", "_"), phase1_epochs + 1, 0, batch_size,
                         {**(trainer_args or {}), "max_epochs": phase1_epochs})
        rows[name] = _row(run)
    return pd.DataFrame(rows).T


__all__ = [name for name in dir() if name.startswith("notebook0")] + ["band_to_mel_rows"]
