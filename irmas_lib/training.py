"""Training: the LightningModule, the threshold-tuning callback, baselines, and `irmas train` (LightningCLI).

    irmas train --config configs/default.yaml [--trainer.max_epochs 2] [--data.batch_size 8] [--print_config]

One YAML file holds the `features` section (shared with `irmas preprocess`) and LightningCLI's
`seed_everything`, `trainer`, `model`, `data`, `checkpoint` and `early_stopping` sections. Logs go
to a CSV logger under runs/; checkpoints (best by validation mAP, and last) are self-contained
(irmas_lib.checkpoint).

Notebook: 03_basic_cnn.ipynb
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from irmas_lib.checkpoint import SECTION, checkpoint_section, model_class_path, plain
from irmas_lib.errors import IrmasError
from irmas_lib.labels import N_CLASSES
from irmas_lib.thresholds import DEFAULT_THRESHOLD, tune_thresholds


# ---------------------------------------------------------------------------------------------------
# Metrics and baselines
# ---------------------------------------------------------------------------------------------------

def metric_collection(threshold: float = DEFAULT_THRESHOLD, prefix: str = "") -> Any:
    """torchmetrics for multi-label training: micro_f1, macro_f1 (decisions p > threshold) and mAP.

    mAP and macro F1 average all 11 instruments; one without a positive example counts as 0 (on
    IRMAS and mini-IRMAS validation every instrument has positives: the split sees to it).

    Returns a torchmetrics.MetricCollection; update it with (probabilities (batch, 11), targets (batch, 11) int).

    Notebook: 03_basic_cnn.ipynb
    """
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

    return MetricCollection({
        "micro_f1": MultilabelF1Score(N_CLASSES, threshold=threshold, average="micro"),
        "macro_f1": MultilabelF1Score(N_CLASSES, threshold=threshold, average="macro"),
        "mAP": MultilabelAveragePrecision(N_CLASSES, average="macro"),
    }, prefix=prefix)


def multilabel_scores(probabilities: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                      threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """mAP, micro/macro F1 (p > threshold) and sample accuracy (correct decisions / 11) of predictions.

    Args:
        probabilities: (n, 11) in [0, 1].
        targets: (n, 11) 0/1.
    Returns:
        {"mAP", "micro_f1", "macro_f1", "sample_accuracy"} floats.

    Notebook: 03_basic_cnn.ipynb
    """
    from torchmetrics.functional.classification import multilabel_accuracy

    probabilities = torch.tensor(np.array(probabilities, dtype=np.float32))
    targets = torch.tensor(np.array(targets, dtype=np.float32)).round().int()
    scores = metric_collection(threshold)(probabilities, targets)
    scores["sample_accuracy"] = multilabel_accuracy(probabilities, targets, N_CLASSES, threshold=threshold,
                                                    average="micro")
    return {name: float(value) for name, value in scores.items()}


def baseline_scores(train_targets: np.ndarray, val_targets: np.ndarray,
                    threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict[str, float]]:
    """The scores of two models that never listen, on the validation targets.

    - "all_absent": every instrument absent (probability 0) for every clip.
    - "class_prior": every clip gets each instrument's frequency in the training labels as its
      probability. Its mAP equals the mean share of positives per instrument (about 1/11 on IRMAS's
      single-label clips): the level a model must clearly beat.

    Args:
        train_targets: (n_train, 11) 0/1; val_targets: (n_val, 11) 0/1.
    Returns:
        {"all_absent": scores, "class_prior": scores}, scores as in :func:`multilabel_scores`.

    Notebook: 03_basic_cnn.ipynb
    """
    val_targets = np.asarray(val_targets, dtype=np.float32)
    prior = np.asarray(train_targets, dtype=np.float32).mean(axis=0)  # (11,)
    return {
        "all_absent": multilabel_scores(np.zeros_like(val_targets), val_targets, threshold),
        "class_prior": multilabel_scores(np.broadcast_to(prior, val_targets.shape), val_targets, threshold),
    }


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
        (model scores, baselines) as in :func:`multilabel_scores` and :func:`baseline_scores`;
        print them with :func:`format_comparison`.

    Notebook: 03_basic_cnn.ipynb
    """
    if checkpoint_path:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    probabilities, targets = predict_batches(module, datamodule.val_dataloader())
    return (multilabel_scores(probabilities, targets, threshold),
            baseline_scores(training_targets(datamodule), targets, threshold))


# ---------------------------------------------------------------------------------------------------
# The LightningModule
# ---------------------------------------------------------------------------------------------------

class InstrumentClassifier(pl.LightningModule):
    """Multi-label training of any network of irmas_lib.models: BCE-with-logits loss, AdamW, metrics.

    Args:
        model: the network (MultiBranchCNN, PannsMultiBand, PannsNative, ...): forward(inputs) ->
            {"logits": (batch, 11), ...}; attributes `input_kind`, `init_args`, `pretrained`.
        lr: learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        pos_weight: BCE weight of positive examples per instrument: None (all 1), "auto" (negatives /
            positives of each instrument in the training labels) or a list of 11 numbers.
        spec_augment: mask random frequency bands and time spans of each band spectrogram during
            training (torchaudio FrequencyMasking / TimeMasking; "bands" models only).
        freq_mask_bins, time_mask_frames: largest mask widths of SpecAugment.
        threshold: decision threshold of the logged F1 scores (the seed's 0.6).
        lr_schedule: None (constant lr) or "cosine" (lr decays from `lr` to 0 over trainer.max_epochs,
            once per epoch). Keep None with two-phase fine-tuning, whose callback sets the lr itself.

    Batches are (inputs, targets (batch, 11)); inputs are what `model.input_kind` says. Logged per
    epoch: train/loss, val/loss and {train,val}/{micro_f1,macro_f1,mAP}. The hyper-parameters also
    record `pretrained`, `model_class` and `model_init_args`. Only parameters with requires_grad go to
    the optimizer (two-phase fine-tuning freezes the backbone first, irmas_lib.finetuning).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4,
                 pos_weight: Union[None, str, list[float]] = None, spec_augment: bool = False,
                 freq_mask_bins: int = 8, time_mask_frames: int = 24, threshold: float = DEFAULT_THRESHOLD,
                 lr_schedule: Optional[str] = None):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.hparams.update(self.model_description())
        if not (pos_weight is None or pos_weight == "auto" or
                (isinstance(pos_weight, (list, tuple)) and len(pos_weight) == N_CLASSES)):
            raise IrmasError(f"model.pos_weight {pos_weight!r}: expected null, 'auto' or a list of {N_CLASSES} numbers")
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
        self.train_metrics = metric_collection(threshold, prefix="train/")
        self.val_metrics = metric_collection(threshold, prefix="val/")
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
        probabilities = torch.sigmoid(logits.detach())
        metrics = self.train_metrics if stage == "train" else self.val_metrics
        metrics.update(probabilities, targets.round().int())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets),
                 sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=(stage == "val"))
        return {"loss": loss, "probabilities": probabilities, "targets": targets.detach()}

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_schedule != "cosine":
            return optimizer
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        if not max_epochs or max_epochs < 1:
            raise IrmasError("model.lr_schedule 'cosine' needs trainer.max_epochs")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-contained (irmas_lib.checkpoint) and loadable with weights_only=True."""
        section = checkpoint.setdefault(SECTION, {})
        thresholds = section.get("thresholds")  # written by ThresholdTuning, which runs before this hook
        section.update(checkpoint_section(self.model, self.feature_config, self.norm_stats, self.pretrained,
                                          thresholds))
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain(dict(checkpoint[key]))


# ---------------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------------

class ThresholdTuning(pl.Callback):
    """Tunes one threshold per instrument on the validation predictions of the current weights and writes
    them into every checkpoint saved after that validation (``checkpoint["irmas"]["thresholds"]``).

    Thresholds come from validation data only, never from test data (irmas_lib.thresholds.tune_thresholds).
    A checkpoint saved when no validation has run at its training step gets ``None``.

    Notebook: 05_threshold_evaluation.ipynb
    """

    def __init__(self) -> None:
        self._probabilities: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self.thresholds: np.ndarray | None = None
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
        self.tuned_at_step = trainer.global_step
        self._probabilities, self._targets = [], []

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        current = self.tuned_at_step == trainer.global_step and self.thresholds is not None
        checkpoint.setdefault(SECTION, {})["thresholds"] = plain(self.thresholds) if current else None


def standard_callbacks(keep_last: bool = True) -> list[pl.Callback]:
    """The callbacks every training run of the course has, besides the best-checkpoint one: threshold
    tuning, last.ckpt after every validation (unless ``keep_last`` is False), and the learning rate of
    every parameter group per epoch.

    Notebook: 03_basic_cnn.ipynb
    """
    from pytorch_lightning.callbacks import LearningRateMonitor

    last = [last_checkpoint_callback()] if keep_last else []
    return [ThresholdTuning(), *last, LearningRateMonitor(logging_interval="epoch")]


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


# ---------------------------------------------------------------------------------------------------
# irmas train: LightningCLI
# ---------------------------------------------------------------------------------------------------

def _lightning_cli_class() -> type:
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI

    from irmas_lib.features import FeatureConfig

    class IrmasCLI(LightningCLI):
        """LightningCLI for `irmas train`: fit only, plus the `features`, `checkpoint`, `early_stopping`,
        `quiet` and `ckpt_path` keys."""

        def add_arguments_to_parser(self, parser: Any) -> None:
            # A plain mapping, validated by FeatureConfig.from_dict (errors name the key); missing keys take
            # the defaults, exactly as `irmas preprocess --config` reads the same section.
            parser.add_argument("--features", type=dict[str, Any], default=FeatureConfig().to_dict(),
                                help="multi-band spectrogram settings; must be those of the cache "
                                     "(irmas preprocess --config reads the same section)")
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            # best.ckpt here; last.ckpt comes from last_checkpoint_callback() (see there why). No version
            # counter: a rerun into a fixed logger version (e.g. make demo's) replaces best.ckpt.
            parser.set_defaults({"checkpoint.monitor": "val/mAP", "checkpoint.mode": "max",
                                 "checkpoint.filename": "best", "checkpoint.auto_insert_metric_name": False,
                                 "checkpoint.enable_version_counter": False})
            parser.add_lightning_class_args(EarlyStopping, "early_stopping")
            parser.set_defaults({"early_stopping.monitor": "val/mAP", "early_stopping.mode": "max",
                                 "early_stopping.patience": 10})
            parser.add_argument("--quiet", type=bool, default=False,
                                help="no progress bar, model summary or Lightning info lines")
            parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                                help="resume training from this checkpoint (e.g. a last.ckpt)")

        def before_instantiate_classes(self) -> None:
            try:
                self.features = FeatureConfig.from_dict(self.config["features"])  # IrmasError naming a bad key
            except IrmasError as error:
                sources = [str(path) for path in self.config.get("config") or []]  # the --config file(s)
                if not sources:
                    raise
                raise IrmasError(f"{', '.join(sources)} (with any command-line overrides): {error}") from None
            # last.ckpt is written by last_checkpoint_callback() after every validation; a second writer
            # (save_last here, which Lightning 2.6 only runs on improvements) would make last-v1.ckpt
            self.config["checkpoint"]["save_last"] = False
            if self.config.get("quiet"):
                self.config["trainer"]["enable_progress_bar"] = False
                self.config["trainer"]["enable_model_summary"] = False
                quiet_lightning()

        def after_instantiate_classes(self) -> None:
            super().after_instantiate_classes()
            check_features(self.datamodule, self.features)
            self.model.feature_config = self.features  # replaced by the data module's own in setup()

    return IrmasCLI


def check_features(datamodule: Any, features: Any) -> None:
    """Refuse a data module whose cache was computed with other features than the config's `features`
    section (IrmasError naming both). Data modules without a feature cache are not checked.

    Notebook: 03_basic_cnn.ipynb
    """
    check = getattr(getattr(datamodule, "cache", None), "check_config", None)
    if check is not None:
        check(features)


def _irmas_cause(error: BaseException) -> IrmasError | None:
    """The IrmasError in an exception's chain of causes (e.g. a missing cache behind a jsonargparse error)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, IrmasError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def train_cli(argv: Sequence[str] | None = None) -> Any:
    """`irmas train`: parse the config and overrides with LightningCLI and fit.

    Args:
        argv: command-line arguments after `train`, e.g. ["--config", "configs/default.yaml",
            "--trainer.max_epochs", "2"]; None reads sys.argv.
    Returns:
        the LightningCLI object after fitting (its `.trainer`, `.model`, `.datamodule`).

    Notebook: 03_basic_cnn.ipynb
    """
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")  # args come from `irmas`
    # num_workers 0 is the fastest setting on 2 cores (configs/default.yaml says why)
    warnings.filterwarnings("ignore", message=".*does not have many workers which may be a bottleneck")
    cli_class = _lightning_cli_class()
    try:
        cli = cli_class(
            InstrumentClassifier, pl.LightningDataModule, subclass_mode_data=True,
            args=list(argv) if argv is not None else None, run=False, auto_configure_optimizers=False,
            trainer_defaults={"callbacks": standard_callbacks()},
            save_config_kwargs={"overwrite": True}, parser_kwargs={"prog": "irmas train", "allow_abbrev": False},
        )
    except Exception as error:  # jsonargparse wraps errors raised while building the classes: unwrap ours
        cause = _irmas_cause(error)
        if cause is None:
            raise
        raise cause from None
    trainer = cli.trainer
    trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    best = trainer.checkpoint_callback  # the first ModelCheckpoint: the `checkpoint` section's
    if trainer.is_global_zero and best is not None and best.best_model_path:
        scores, baselines = validation_report(cli.model, cli.datamodule, best.best_model_path,
                                              cli.model.hparams.threshold)
        print(format_comparison(scores, baselines, title="validation (best checkpoint)"))
        for callback in trainer.checkpoint_callbacks:
            print(f"checkpoint: {callback.best_model_path}")
    return cli


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

    Notebook: 03_basic_cnn.ipynb
    """

    module: InstrumentClassifier
    datamodule: Any
    metrics: Any
    best_checkpoint: str
    seconds: float


def fit_model(model: nn.Module, cache_dir: Any, run_dir: Any, max_epochs: int = 60, mix: bool = True,
              seed: int = 0, batch_size: int = 16, lr: float = 3e-3, lr_schedule: Optional[str] = "cosine",
              spec_augment: bool = True, callbacks: Sequence[pl.Callback] = (), quiet: bool = True,
              datamodule: Optional[pl.LightningDataModule] = None, trainer_args: Optional[dict] = None,
              keep_last: bool = True, **module_args: Any) -> FitResult:
    """Train a network on a feature cache in one call, with the pieces and defaults of `irmas train
    --config configs/default.yaml` (threshold tuning, best and last checkpoints, lr logging, CSV logs).

    Args:
        model: the network (e.g. MultiBranchCNN()).
        cache_dir: a feature cache made by `irmas preprocess`.
        run_dir: folder of the CSV logs and checkpoints (a new version_N inside it each call).
        max_epochs, mix, seed, batch_size, lr, lr_schedule, spec_augment: as in configs/default.yaml.
        callbacks: extra Lightning callbacks (e.g. the two-phase fine-tuning of notebook 04).
        quiet: no progress bar, model summary or Lightning info lines (notebooks under nbval).
        datamodule: the data instead of the feature cache (e.g. ``IrmasDataModule`` for a waveform model
            such as ``PannsNative``); ``cache_dir``, ``mix`` and ``batch_size`` are then unused.
        trainer_args: ``pl.Trainer`` arguments added or replaced, e.g. ``{"limit_train_batches": 4}`` (CI's
            reduced runs) or ``{"accelerator": "auto"}`` (a GPU when there is one).
        keep_last: also write last.ckpt after every validation. False writes best.ckpt only: a PANNs
            multi-band checkpoint with AdamW's state is about 2.9 GB (notebook 04).
        **module_args: more InstrumentClassifier arguments (pos_weight, threshold, ...).

    Returns:
        :class:`FitResult`.

    Notebook: 03_basic_cnn.ipynb
    """
    import time
    from pathlib import Path

    import pandas as pd
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from irmas_lib.cache import FeatureDataModule

    if quiet:
        quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    if datamodule is None:
        datamodule = FeatureDataModule(str(cache_dir), batch_size=batch_size, mix=mix, seed=seed)
    module = InstrumentClassifier(model, lr=lr, lr_schedule=lr_schedule, spec_augment=spec_augment, **module_args)
    run_dir = Path(run_dir)
    logger = CSVLogger(str(run_dir.parent), name=run_dir.name)
    best = ModelCheckpoint(monitor="val/mAP", mode="max", filename="best", auto_insert_metric_name=False)
    options = dict(max_epochs=max_epochs, accelerator="cpu", devices=1, deterministic=True, logger=logger,
                   callbacks=[best, *callbacks, *standard_callbacks(keep_last)], enable_progress_bar=not quiet,
                   enable_model_summary=not quiet, log_every_n_steps=10)
    trainer = pl.Trainer(**{**options, **(trainer_args or {})})
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - started
    module.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
    metrics = pd.read_csv(Path(logger.log_dir) / "metrics.csv").groupby("epoch").mean(numeric_only=True).reset_index()
    return FitResult(module=module.eval(), datamodule=datamodule, metrics=metrics,
                     best_checkpoint=best.best_model_path, seconds=seconds)
