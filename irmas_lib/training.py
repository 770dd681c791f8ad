"""Training: the LightningModule, the threshold-tuning and random-state callbacks, baselines, and
`fit_model` for notebooks. The `irmas fit | validate | test | predict` commands (LightningCLI's own
subcommands; `irmas train` is `irmas fit`) are built from these pieces in irmas_lib.cli.

    irmas fit --config configs/default.yaml [--trainer.max_epochs 2] [--data.batch_size 8] [--print_config]
    irmas fit --config configs/default.yaml --ckpt_path runs/basic_cnn/version_0/checkpoints/last.ckpt  # resume

One YAML file holds the `features` section (shared with `irmas preprocess`) and LightningCLI's
`seed_everything`, `trainer`, `model`, `data`, `checkpoint` and `early_stopping` sections. Logs go
to a CSV logger under runs/; checkpoints (best by validation mAP, and last) are self-contained
(irmas_lib.checkpoint).

Notebook: 03_basic_cnn.ipynb
"""
from __future__ import annotations

import logging
import math
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from irmas_lib.checkpoint import (SECTION, checkpoint_section, make_inference_only, model_class_path, plain,
                                  read_state_dict, restore_weights)
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, N_CLASSES
from irmas_lib.features import _is_number
from irmas_lib.metrics import (DEFAULT_THRESHOLD, EpochScores, baseline_scores, has_positives, multilabel_scores,
                               tune_global_threshold, tune_thresholds)


# ---------------------------------------------------------------------------------------------------
# Judging a model against the baselines (irmas_lib.metrics defines the figures)
# ---------------------------------------------------------------------------------------------------

def clearly_learns(model_scores: dict[str, float], baselines: dict[str, dict[str, float]]) -> bool:
    """The course's bar: validation mAP at least twice the class-prior baseline's, and micro-F1 >= 0.6.

    Notebook: 03_basic_cnn.ipynb
    """
    return (model_scores["mAP"] >= 2 * baselines["class_prior"]["mAP"]) and model_scores["micro_f1"] >= 0.6


def format_comparison(model_scores: dict[str, float], baselines: dict[str, dict[str, float]],
                      title: str = "validation") -> str:
    """A small table: the model's scores beside the all-absent and class-prior baselines, and the verdict.

    Notebook: 03_basic_cnn.ipynb
    """
    rows = [("model", model_scores), ("all absent", baselines["all_absent"]),
            ("class prior", baselines["class_prior"])]
    columns = ("mAP", "micro_f1", "macro_f1", "sample_accuracy")
    lines = [f"{title:<14}" + "".join(f"{c:>17}" for c in columns)]
    lines += [f"{name:<14}" + "".join(f"{scores[c]:>17.3f}" for c in columns) for name, scores in rows]
    verdict = "yes" if clearly_learns(model_scores, baselines) else "NO"
    lines.append(f"clearly learns (mAP >= 2 x class prior = {2 * baselines['class_prior']['mAP']:.3f} "
                 f"and micro-F1 >= 0.6): {verdict}")
    return "\n".join(lines)


def training_targets(datamodule: Any) -> np.ndarray:
    """(n_train, 11) multi-hot labels of the training split of a set-up data module, before mixing
    (its ``train_set.targets``: FeatureDataModule and IrmasDataModule both have them).

    Notebook: 03_basic_cnn.ipynb
    """
    targets = getattr(getattr(datamodule, "train_set", None), "targets", None)
    if targets is None:
        raise IrmasError(f"{type(datamodule).__name__} has no train_set.targets (call setup() first)")
    return np.asarray(targets, dtype=np.float32)


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Any) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets over (inputs, targets) batches, e.g. a validation DataLoader.

    Args:
        model: a network or InstrumentClassifier (forward -> {"logits": (batch, 11)}); run in eval mode.
        batches: iterable of (inputs, targets (batch, 11)).
    Returns:
        (probabilities (n, 11) float32, targets (n, 11) float32) numpy arrays.

    Notebook: 03_basic_cnn.ipynb
    """
    was_training = model.training
    model.eval()
    probabilities, targets = [], []
    try:
        for inputs, batch_targets in batches:
            probabilities.append(torch.sigmoid(model(inputs)["logits"]).float().cpu())
            targets.append(batch_targets.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(probabilities).numpy(), torch.cat(targets).numpy()


def validation_report(module: "InstrumentClassifier", datamodule: Any, checkpoint_path: str | None = None,
                      threshold: float = DEFAULT_THRESHOLD) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Validation scores of a trained module (with the weights of `checkpoint_path`, e.g. the best
    checkpoint, when given) and of the two baselines on the same clips.

    Returns:
        (model scores, baselines) as in :func:`irmas_lib.metrics.multilabel_scores` and
        :func:`irmas_lib.metrics.baseline_scores`;
        print them with :func:`format_comparison`.

    Notebook: 03_basic_cnn.ipynb
    """
    if checkpoint_path:
        module.load_state_dict(read_state_dict(checkpoint_path))
    probabilities, targets = predict_batches(module, datamodule.val_dataloader())
    return (multilabel_scores(probabilities, targets, threshold),
            baseline_scores(training_targets(datamodule), targets, threshold))


# ---------------------------------------------------------------------------------------------------
# The LightningModule
# ---------------------------------------------------------------------------------------------------

class InstrumentClassifier(pl.LightningModule):
    """Multi-label training of any network of irmas_lib.models: BCE-with-logits loss, AdamW, metrics.

    The defaults are the basic CNN's recipe, the values configs/default.yaml shows (lr 3e-3 with a cosine
    schedule, SpecAugment); PANNs fine-tuning sets its own (configs/panns_*.yaml: lr 1e-3, no schedule).

    Args:
        model: the network (MultiBranchCNN, PannsMultiBand, PannsNative, ...): forward(inputs) ->
            {"logits": (batch, 11), ...}; attributes `input_kind`, `init_args`, `pretrained`.
        lr: learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        pos_weight: BCE weight of positive examples per instrument: None (all 1), "auto" (negatives /
            positives of each instrument in the training labels) or a list of 11 positive finite numbers.
        spec_augment: mask random frequency bands and time spans of each band spectrogram during
            training (torchaudio FrequencyMasking / TimeMasking; "bands" models only).
        freq_mask_bins, time_mask_frames: largest mask widths of SpecAugment.
        threshold: decision threshold of the logged F1 scores (the original project design's 0.6).
        lr_schedule: None (constant lr) or "cosine" (lr decays from `lr` to 0 over trainer.max_epochs,
            once per epoch). Keep None with two-phase fine-tuning, whose callback sets the lr itself.

    Batches are (inputs, targets (batch, 11)); inputs are what `model.input_kind` says. Logged per
    epoch: train/loss, val/loss and {train,val}/{micro_f1,macro_f1,mAP} (test/... under `irmas test`;
    `predict_step` returns probabilities). The F1 scores and mAP are irmas_lib.metrics.multilabel_scores
    of the epoch's predictions (an instrument without a positive is left out of macro F1 and mAP, as in
    `irmas evaluate`). The hyper-parameters also
    record `pretrained`, `model_class` and `model_init_args`. Only parameters with requires_grad go to
    the optimizer (two-phase fine-tuning freezes the backbone first, irmas_lib.finetuning).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, model: nn.Module, lr: float = 3e-3, weight_decay: float = 1e-4,
                 pos_weight: Union[None, str, list[float]] = None, spec_augment: bool = True,
                 freq_mask_bins: int = 8, time_mask_frames: int = 24, threshold: float = DEFAULT_THRESHOLD,
                 lr_schedule: Optional[str] = "cosine"):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.hparams.update(self.model_description())
        if not (pos_weight is None or pos_weight == "auto" or
                (isinstance(pos_weight, (list, tuple)) and len(pos_weight) == N_CLASSES
                 and all(_is_number(w) and math.isfinite(w) and w > 0 for w in pos_weight))):
            raise IrmasError(f"model.pos_weight {pos_weight!r}: expected null, 'auto' or a list of {N_CLASSES} "
                             "positive finite numbers")
        if lr_schedule not in (None, "cosine"):
            raise IrmasError(f"model.lr_schedule {lr_schedule!r}: expected null or 'cosine'")
        # (11,) weights of positives in the loss; "auto" is filled in setup() from the training labels
        initial = torch.ones(N_CLASSES) if pos_weight in (None, "auto") else torch.tensor(pos_weight, dtype=torch.float32)
        self.register_buffer("pos_weight", initial)
        self.spec_augment = None
        if spec_augment:
            import torchaudio

            self.spec_augment = nn.Sequential(torchaudio.transforms.FrequencyMasking(freq_mask_bins, iid_masks=True),
                                              torchaudio.transforms.TimeMasking(time_mask_frames, iid_masks=True))
        # each epoch's micro F1, macro F1 and mAP, defined by irmas_lib.metrics.multilabel_scores
        self.train_metrics = EpochScores(threshold)
        self.val_metrics = EpochScores(threshold)
        self.test_metrics = EpochScores(threshold)
        # Filled in setup() from the data module, written into every checkpoint.
        self.feature_config: Any = None
        self.norm_stats: Any = None

    @property
    def pretrained(self) -> bool:
        """Whether the network started from pretrained weights (False for the basic CNN)."""
        return bool(getattr(self.model, "pretrained", False))

    @property
    def input_kind(self) -> str:
        return getattr(self.model, "input_kind", "bands")

    def model_description(self) -> dict[str, Any]:
        """{"model_class", "model_init_args", "pretrained"}: recorded in the hyper-parameters and the logs."""
        return {"model_class": model_class_path(self.model),
                "model_init_args": plain(getattr(self.model, "init_args", None)), "pretrained": self.pretrained}

    def on_fit_start(self) -> None:
        for logger in self.loggers:  # Lightning logs the constructor's arguments; add what the network says
            logger.log_hyperparams(self.model_description())
        if not isinstance(getattr(self.model, "init_args", None), dict):
            from pytorch_lightning.utilities import rank_zero_warn

            rank_zero_warn(f"{type(self.model).__name__} has no `init_args` dict: its checkpoints cannot be "
                           "loaded with irmas_lib.checkpoint.load_checkpoint")

    def setup(self, stage: str) -> None:
        strategy = getattr(self._trainer, "strategy", None)
        if type(getattr(strategy, "checkpoint_io", None)) is pl.plugins.TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()   # Lightning's own writer, made atomic
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            self.feature_config = getattr(datamodule, "feature_config", self.feature_config)
            self.norm_stats = getattr(datamodule, "norm_stats", self.norm_stats)
        if stage == "fit" and self.hparams.pos_weight == "auto":
            if datamodule is None:
                raise IrmasError("model.pos_weight 'auto' needs a data module with training labels")
            positives = training_targets(datamodule).sum(axis=0)  # (11,)
            n_clips = len(training_targets(datamodule))
            weights = np.where(positives > 0, (n_clips - positives) / np.maximum(positives, 1), 1.0)
            self.pos_weight.copy_(torch.as_tensor(weights, dtype=torch.float32))

    def forward(self, inputs: Any) -> dict[str, torch.Tensor]:
        return self.model(inputs)

    def _augment(self, inputs: Any) -> Any:
        if self.spec_augment is None or self.input_kind != "bands":
            return inputs
        return [self.spec_augment(band) for band in inputs]  # each (batch, n_bins_b, frames), masked with 0 (the mean)

    def _step(self, batch: Sequence[Any], stage: str) -> dict[str, torch.Tensor]:
        inputs, targets = batch  # targets (batch, 11)
        if stage == "train":
            inputs = self._augment(inputs)
        logits = self(inputs)["logits"]  # (batch, 11)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=self.pos_weight)
        finite = bool(torch.isfinite(loss))   # one bool per step: free on CPU, a synchronisation on a GPU
        everywhere = finite
        if self._trainer is not None and self.trainer.world_size > 1:   # DDP: every rank stops, none waits
            everywhere = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not everywhere:
            raise IrmasError(self._not_finite_reason(loss, inputs, stage) if not finite else
                             f"the {stage} loss of another process is NaN or infinite at epoch {self.current_epoch} "
                             "(its error says why); this one stops too")
        probabilities = torch.sigmoid(logits.detach())
        self._epoch_scores(stage).update(probabilities, targets.round())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets),
                 sync_dist=True)
        return {"loss": loss, "probabilities": probabilities, "targets": targets.detach()}

    def _not_finite_reason(self, loss: torch.Tensor, inputs: Any, stage: str) -> str:
        """Why a batch's loss is NaN or infinite: features that are not finite (a damaged cache) or weights
        that diverged. Training on stops here: a NaN model would go on and log figures (and save checkpoints)
        that mean nothing."""
        where = f"the {stage} loss is {loss.item()} at epoch {self.current_epoch}"
        tensors = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not all(bool(torch.isfinite(band).all()) for band in tensors):
            datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            cache = getattr(getattr(datamodule, "cache", None), "cache_dir", None)
            return (f"{cache or 'the feature cache'}: {where}: the batch's features hold NaN or infinite values, "
                    "so the cache is damaged; write it again with irmas preprocess")
        return (f"{where}: the model diverged (its outputs are not finite); lower the learning rate "
                f"(model.lr, now {self.hparams.lr:g}) and train again")

    def _epoch_scores(self, stage: str) -> EpochScores:
        return {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[stage]

    def _log_epoch_scores(self, stage: str) -> None:
        """Log {stage}/micro_f1, {stage}/macro_f1 and {stage}/mAP of the epoch's predictions, then start the next
        epoch afresh. compute() gathers the predictions of every process, so every rank logs the same figures;
        the max over ranks (sync_dist) keeps them exact where a mean could round them."""
        scores = self._epoch_scores(stage)
        if scores.update_called:
            self.log_dict({f"{stage}/{name}": value for name, value in scores.compute().items()},
                          prog_bar=(stage == "val"), sync_dist=True, reduce_fx="max")
        scores.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_scores("test")

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Probabilities (batch, 11) of a batch (inputs, targets) or of inputs alone."""
        inputs = batch[0] if isinstance(batch, (list, tuple)) and len(batch) == 2 and torch.is_tensor(batch[1]) \
            and batch[1].ndim == 2 and batch[1].shape[-1] == N_CLASSES else batch
        return torch.sigmoid(self(inputs)["logits"])

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        # fused: one kernel for all parameters, on CPU too (one step over PANNs multi-band's 240 M
        # parameters took 0.16 s fused and 0.96 s in PyTorch's default loop, on 2 cores on 2026-12-05)
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        optimizer = torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                      fused=fused or None)
        if self.hparams.lr_schedule != "cosine":
            return optimizer
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        if not max_epochs or max_epochs < 1:
            raise IrmasError("model.lr_schedule 'cosine' needs trainer.max_epochs")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-contained (irmas_lib.checkpoint) and loadable with weights_only=True.
        A weights-only save (``best.ckpt``: ``ModelCheckpoint(save_weights_only=True)``, no optimizer
        state) is made inference-only: large weights in int8 or float16, a never-trained pretrained
        backbone as a reference to its file (irmas_lib.checkpoint.make_inference_only)."""
        section = checkpoint.setdefault(SECTION, {})
        if "thresholds" in section:  # written by ThresholdTuning, which runs before this hook
            thresholds, global_threshold = section["thresholds"], section.get("global_threshold")
            untuned = section.get("untuned_thresholds")
        else:  # a weights-only save: Lightning called no callback's hook
            tuning = next((c for c in self.trainer.callbacks if isinstance(c, ThresholdTuning)), None)
            thresholds, global_threshold = (tuning.current_thresholds(self.trainer) if tuning is not None
                                            else (None, None))
            untuned = list(tuning.untuned) if thresholds is not None else None
        section.update(checkpoint_section(self.model, self.feature_config, self.norm_stats, self.pretrained,
                                          thresholds, global_threshold))
        section["untuned_thresholds"] = untuned
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain(dict(checkpoint[key]))
        if "optimizer_states" not in checkpoint:
            make_inference_only(checkpoint, self.model)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """An inference-only checkpoint (``irmas validate --ckpt_path best.ckpt``): its referenced pretrained
        weights and int8 or float16 weights back to the full float32 state dict Lightning loads next."""
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        saved = checkpoint.get(SECTION, {}).get("feature_config")
        if saved is not None and self.feature_config is not None:   # resumed or validated on another cache
            from irmas_lib.features import FeatureConfig

            theirs = FeatureConfig.from_dict(saved)
            ours = (self.feature_config if isinstance(self.feature_config, FeatureConfig)
                    else FeatureConfig.from_dict(self.feature_config))
            if theirs.config_hash() != ours.config_hash():
                raise IrmasError(f"{path or 'the checkpoint'}: trained on features {theirs.config_hash()} "
                                 f"({theirs.summary()}), but this run's data has {ours.config_hash()} "
                                 f"({ours.summary()}); use the config and feature cache it was trained with")
        restore_weights(checkpoint, path or "the checkpoint")
        recorded = checkpoint.get(SECTION, {}).get("pretrained")
        if recorded is not None and bool(recorded) != self.pretrained:
            # the weights are the checkpoint's, not those the network was built with: so is their origin
            # (a run started without the CNN14 file stays "not pretrained" when resumed with it, and back)
            if self._trainer is None or self.trainer.is_global_zero:   # once, not once per DDP process
                print(f"irmas: note: {path or 'the checkpoint'} records pretrained={bool(recorded)}: its weights "
                      f"are used, and the run is recorded as {'' if recorded else 'NOT '}pretrained",
                      file=sys.stderr)
            self.model.pretrained = bool(recorded)
            self.model.cnn14_file = checkpoint[SECTION].get("pretrained_file") if recorded else None
            self.hparams.update(self.model_description())   # what later checkpoints' hyper_parameters say


# ---------------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------------

class ThresholdTuning(pl.Callback):
    """Tunes one threshold per instrument, and one for all instruments, on the validation predictions of
    the current weights and writes them into every checkpoint saved after that validation
    (``checkpoint["irmas"]["thresholds"]`` and ``["global_threshold"]``: ``irmas evaluate --threshold
    tuned`` and ``tuned-global``), with ``["untuned_thresholds"]``, the codes of the instruments that had no
    validation positive and so keep 0.6.

    Thresholds come from validation data only, never from test data (irmas_lib.metrics.tune_thresholds).
    A checkpoint saved when no validation has run at its training step gets ``None``.

    Notebook: 06_threshold_evaluation.ipynb
    """

    def __init__(self) -> None:
        self._probabilities: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self.thresholds: np.ndarray | None = None
        self.global_threshold: float | None = None
        self.untuned: list[str] = []     # instruments without a validation positive: their thresholds stay 0.6
        self.tuned_at_step: int | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._probabilities, self._targets = [], []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(outputs, dict) and "probabilities" in outputs:
            self._probabilities.append(outputs["probabilities"])
            self._targets.append(outputs["targets"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._probabilities:
            return
        probabilities = pl_module.all_gather(torch.cat(self._probabilities))  # (world, n, 11) or (n, 11)
        targets = pl_module.all_gather(torch.cat(self._targets))
        probabilities = probabilities.reshape(-1, N_CLASSES).float().cpu().numpy()
        targets = targets.reshape(-1, N_CLASSES).float().cpu().numpy()
        self.thresholds = tune_thresholds(probabilities, targets)
        self.global_threshold = tune_global_threshold(probabilities, targets)
        self.untuned = [CODES[k] for k in np.flatnonzero(~has_positives(targets))]
        self.tuned_at_step = trainer.global_step
        self._probabilities, self._targets = [], []

    def current_thresholds(self, trainer: pl.Trainer) -> tuple[Any, float | None]:
        """(per-instrument thresholds as a plain list, the one global threshold) tuned at the trainer's
        current step, or (None, None)."""
        if self.tuned_at_step != trainer.global_step or self.thresholds is None:
            return None, None
        return plain(self.thresholds), self.global_threshold

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        section = checkpoint.setdefault(SECTION, {})
        section["thresholds"], section["global_threshold"] = self.current_thresholds(trainer)
        section["untuned_thresholds"] = list(self.untuned) if section["thresholds"] is not None else None


def _random_state() -> dict[str, Any]:
    """torch's, numpy's and Python's global random states as plain values (weights_only-loadable)."""
    import random

    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": plain(random.getstate()),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RandomStateCheckpoint(pl.Callback):
    """Writes the global random states (torch, numpy, Python) into every checkpoint, and puts them back when
    a fit resumed from it starts.

    last.ckpt and best.ckpt are written at the end of a training epoch, after its validation; nothing
    draws a random number between that moment and the next epoch's shuffling, mixing, dropout and
    SpecAugment. A resumed fit draws its first epoch's batches as soon as it starts (Lightning creates
    that DataLoader iterator before ``on_train_epoch_start``; its sanity check runs with an isolated
    random state), so the states are put back in ``on_fit_start``. Then a run resumed with ``irmas fit
    --ckpt_path`` draws exactly what the uninterrupted run drew and ends with the same weights
    (tests/test_resume.py). Lightning restores the model, optimizer, lr schedule, loops and callbacks, but
    not these states. Exact on one process with ``num_workers: 0`` (the course's setting) from
    checkpoints written at the end of an epoch: persistent DataLoader workers keep random streams of
    their own, and a mid-epoch checkpoint resumes through Lightning's own skipping of batches.

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"random_state": _random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("random_state")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            _set_random_state(self._pending)
            self._pending = None


class ResumedLogHistory(pl.Callback):
    """Keeps the metrics of an interrupted run when it is resumed into its own run folder.

    Lightning's CSVLogger deletes ``metrics.csv`` when it starts in a folder that holds one. `irmas fit
    --ckpt_path` reads the old file first (into :attr:`rows`) and this callback logs those rows again at
    the start of training: the ones of the epochs the checkpoint had completed (rows of the interrupted
    epoch are left out: that epoch runs again).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.rows or not trainer.is_global_zero:
            return
        epoch, step = trainer.current_epoch, trainer.fit_loop.epoch_loop._batches_that_stepped
        for row in self.rows:
            if not row.get("step"):
                continue
            logged_step = int(float(row["step"]))
            values = {key: float(value) for key, value in row.items() if key != "step" and value not in ("", None)}
            done = values["epoch"] < epoch if "epoch" in values else logged_step < step
            if done and values:
                for logger in trainer.loggers:
                    logger.log_metrics(values, step=logged_step)
        for logger in trainer.loggers:
            logger.save()
        self.rows = []


def standard_callbacks(keep_last: bool = True) -> list[pl.Callback]:
    """The callbacks every training run of the course has, besides the best-checkpoint one: threshold
    tuning, the random state in every checkpoint (so a resumed run draws what the uninterrupted one
    drew), last.ckpt after every validation (unless ``keep_last`` is False), and the learning rate of
    every parameter group per epoch.

    Notebook: 03_basic_cnn.ipynb
    """
    from pytorch_lightning.callbacks import LearningRateMonitor

    last = [last_checkpoint_callback()] if keep_last else []
    return [ThresholdTuning(), RandomStateCheckpoint(), *last, LearningRateMonitor(logging_interval="epoch")]


def quiet_lightning() -> None:
    """Silence Lightning's info lines (GPU available, tips, ...) and its advice that does not apply here.

    Notebook: 03_basic_cnn.ipynb
    """
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # num_workers 0 is the fastest setting on 2 cores (configs/default.yaml says why)
    warnings.filterwarnings("ignore", message=".*does not have many workers which may be a bottleneck")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval")
    # validation batches of a tiny split may lack an instrument
    warnings.filterwarnings("ignore", message=".*No positive samples found in target")


class AtomicCheckpointIO(pl.plugins.TorchCheckpointIO):
    """Lightning's checkpoint writer, whole or absent on a local disk whatever the temporary folder.

    Lightning writes through an fsspec transaction, whose local file is a temporary in ``$TMPDIR``
    moved onto the checkpoint at the end: where ``$TMPDIR`` is another file system than the run folder
    (a tmpfs /tmp, a cluster's local disk beside a shared one) that move is a copy into the final path,
    and a Ctrl-C or a kill during it leaves a half-written last.ckpt where the previous whole one was,
    which no resume can read. This writes beside the checkpoint and renames
    (:func:`irmas_lib.atomic.write_atomic`); other file systems (``s3://...``) keep Lightning's way.
    :class:`InstrumentClassifier` puts it in place of Lightning's plain writer when a run starts (a
    writer given with ``--trainer.plugins`` is kept).

    Notebook: 03_basic_cnn.ipynb
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        import io

        from irmas_lib.atomic import remove_stale_temporaries, write_atomic

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(Path(path).parent)   # a killed save's half (hundreds of MB for PANNs)
        write_atomic(Path(path), buffer.getbuffer())


def last_checkpoint_callback(dirpath: str | None = None) -> pl.Callback:
    """A ModelCheckpoint that keeps `last.ckpt`: the weights after the latest validation.

    Since Lightning 2.6, ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites last.ckpt only when
    that epoch also entered the top k, so its "last" is the last *improvement*. This separate callback
    (no monitor, one file) is overwritten after every validation.

    Notebook: 03_basic_cnn.ipynb
    """
    from pytorch_lightning.callbacks import ModelCheckpoint

    return ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)


class EpochCheckpoints(pl.callbacks.ModelCheckpoint):
    """Keeps the weights after every ``every_n_epochs`` epochs: ``epochNN.ckpt``, NN the 0-based index of the
    epoch just finished (``epoch03.ckpt``: after 4 epochs), inference-only like best.ckpt, each kept.

    A class of its own, not a plain ModelCheckpoint, so that its state key (class name and settings) differs
    from the last.ckpt callback's (:func:`last_checkpoint_callback`), which also has no monitor and may have
    the same period: Lightning refuses two callbacks with one key.

    Notebook: 04_generalisation.ipynb
    """

    FILE = re.compile(r"epoch(\d+)\.ckpt")

    def __init__(self, every_n_epochs: int):
        super().__init__(every_n_epochs=every_n_epochs, save_top_k=-1, monitor=None, filename="epoch{epoch:02d}",
                         auto_insert_metric_name=False, save_weights_only=True)

    def written(self) -> list[str]:
        """The checkpoint files this callback wrote in its run's folder, in epoch order (epoch100 after epoch99)."""
        if self.dirpath is None or not Path(self.dirpath).is_dir():
            return []
        found = [(int(match.group(1)), path) for path in Path(self.dirpath).iterdir()
                 if (match := self.FILE.fullmatch(path.name))]
        return [str(path) for _, path in sorted(found)]


# ---------------------------------------------------------------------------------------------------
# Training from a notebook
# ---------------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    """What :func:`fit_model` returns.

    Attributes:
        module: the trained InstrumentClassifier, in eval mode, with the weights of the best epoch
            (validation mAP).
        datamodule: the set-up FeatureDataModule (its validation split is the one the metrics used).
        metrics: pandas DataFrame, one row per epoch: epoch, train/loss, val/loss, val/mAP, val/micro_f1, ...
        best_checkpoint: path of the self-contained best checkpoint (irmas_lib.checkpoint.load_checkpoint).
        seconds: wall time of the fit.
        epoch_checkpoints: the checkpoints kept every ``checkpoint_every_n_epochs`` epochs, in order
            (``epoch03.ckpt``: after 4 epochs); empty unless asked for.

    Notebook: 03_basic_cnn.ipynb, 04_generalisation.ipynb (epoch_checkpoints)
    """

    module: InstrumentClassifier
    datamodule: Any
    metrics: Any
    best_checkpoint: str
    seconds: float
    epoch_checkpoints: list[str] = field(default_factory=list)


def remove_previous_runs(run_dir: str | Path, keep: str | Path) -> list[Path]:
    """Delete every ``version_N`` folder of ``run_dir`` but ``keep`` (the run just finished); the removed paths.

    Notebook: 03_basic_cnn.ipynb
    """
    keep = Path(keep).resolve()
    removed = [path for path in sorted(Path(run_dir).glob("version_*")) if path.is_dir() and path.resolve() != keep]
    for path in removed:
        shutil.rmtree(path)
    return removed


def fit_model(model: nn.Module, cache_dir: Any, run_dir: Any, max_epochs: int = 40, mix: bool = False,
              seed: int = 0, batch_size: int = 16, callbacks: Sequence[pl.Callback] = (), quiet: bool = True,
              datamodule: Optional[pl.LightningDataModule] = None, trainer_args: Optional[dict] = None,
              keep_last: bool = True, libraries: Optional[Sequence[str]] = None, val_mixes: bool = True,
              keep_previous_runs: bool = False, checkpoint_every_n_epochs: int = 0, **module_args: Any) -> FitResult:
    """Train a network on a feature cache in one call, with the pieces and defaults of `irmas train
    --config configs/default.yaml` (threshold tuning, best and last checkpoints, lr logging, CSV logs).

    Args:
        model: the network (e.g. MultiBranchCNN()).
        cache_dir: a feature cache made by `irmas preprocess`.
        run_dir: folder of the CSV logs and checkpoints (a new version_N inside it each call; the older
            version_N folders are removed once this fit has finished, unless ``keep_previous_runs``).
        max_epochs, mix, seed, batch_size: as in configs/default.yaml (the data module's defaults).
        callbacks: extra Lightning callbacks (e.g. the two-phase fine-tuning of notebook 05).
        quiet: no progress bar, model summary or Lightning info lines (notebooks under nbval).
        datamodule: the data instead of the feature cache (e.g. ``IrmasDataModule`` for a waveform model
            such as ``PannsNative``); ``cache_dir``, ``mix`` and ``batch_size`` are then unused.
        trainer_args: ``pl.Trainer`` arguments added or replaced, e.g. ``{"limit_train_batches": 4}`` (CI's
            reduced runs) or ``{"accelerator": "auto"}`` (a GPU when there is one).
        libraries: train and validate on these sample libraries' clips only (None: all; notebook 04).
        val_mixes: validate on held-out clips alone and in fixed mixtures (FeatureDataModule).
        keep_last: also write last.ckpt after every validation. False writes best.ckpt only: a PANNs
            multi-band checkpoint with AdamW's state is about 2.9 GB (notebook 05).
        keep_previous_runs: keep the version_N folders of earlier calls with the same ``run_dir``. False
            (the default): a notebook cell re-run replaces its run instead of adding one (a PANNs
            multi-band best.ckpt is hundreds of MB); nothing is removed when the fit fails.
        checkpoint_every_n_epochs: N > 0 also keeps the weights after every N epochs (``epochNN.ckpt``,
            NN the 0-based index of the epoch just finished; inference-only, about 0.7 MB each for the
            basic CNN; :class:`EpochCheckpoints`), listed in ``epoch_checkpoints``: how a model changes over
            its epochs (notebook 04 scores each with :func:`irmas_lib.evaluation.learning_curve_by_library`).
        **module_args: InstrumentClassifier arguments (lr, lr_schedule, spec_augment, pos_weight, ...);
            the class's defaults are the recipe of configs/default.yaml.

    Returns:
        :class:`FitResult`.

    Notebook: 03_basic_cnn.ipynb, 04_generalisation.ipynb (checkpoint_every_n_epochs)
    """
    import time
    from pathlib import Path

    import pandas as pd
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from irmas_lib.data import FeatureDataModule

    if quiet:
        quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    if datamodule is None:
        if isinstance(libraries, str):
            libraries = [libraries]
        datamodule = FeatureDataModule(str(cache_dir), batch_size=batch_size, mix=mix, seed=seed,
                                       libraries=None if libraries is None else list(libraries), val_mixes=val_mixes)
    module = InstrumentClassifier(model, **module_args)  # its defaults are the recipe's
    run_dir = Path(run_dir)
    logger = CSVLogger(str(run_dir.parent), name=run_dir.name)
    best = ModelCheckpoint(monitor="val/mAP", mode="max", filename="best", auto_insert_metric_name=False,
                           save_weights_only=True)  # inference-only (irmas_lib.checkpoint.make_inference_only)
    every = [EpochCheckpoints(checkpoint_every_n_epochs)] if checkpoint_every_n_epochs > 0 else []
    options = dict(max_epochs=max_epochs, accelerator="cpu", devices=1, deterministic=True, logger=logger,
                   callbacks=[best, *every, *callbacks, *standard_callbacks(keep_last)], enable_progress_bar=not quiet,
                   enable_model_summary=not quiet, log_every_n_steps=10)
    trainer = pl.Trainer(**{**options, **(trainer_args or {})})
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - started
    module.load_state_dict(read_state_dict(best.best_model_path))
    metrics = pd.read_csv(Path(logger.log_dir) / "metrics.csv").groupby("epoch").mean(numeric_only=True).reset_index()
    if not keep_previous_runs:
        remove_previous_runs(run_dir, keep=Path(logger.log_dir))
    return FitResult(module=module.eval(), datamodule=datamodule, metrics=metrics,
                     best_checkpoint=best.best_model_path, seconds=seconds,
                     epoch_checkpoints=every[0].written() if every else [])
