"""Two-phase fine-tuning of a pretrained backbone, and phase 1's fast path over cached embeddings.

    phase 1 (epochs < unfreeze_at_epoch): backbone frozen AND in eval mode, head trained at lr 1e-3
    phase 2 (from unfreeze_at_epoch):     everything trained at lr 1e-4 (head lowered, backbone at 1e-4)

``TwoPhaseFinetuning`` is a Lightning ``BaseFinetuning`` callback for any LightningModule whose model has
``backbone`` and ``head`` attributes (``pl_module.backbone`` or ``pl_module.model.backbone``) and whose
``configure_optimizers`` builds the optimizer from ``requires_grad`` parameters only. It is correct under
DDP (the replicas stay identical through the switch) and a run killed in either phase resumes.

While the backbone is frozen and in eval mode and the inputs do not change between epochs (no mixing,
no SpecAugment), the backbone's output for a clip is always the same: ``EmbeddingCache`` computes it
once, and phase 1 then trains only the head on the cache (``HeadOnEmbeddings``).

Notebook: 05_panns_two_phase.ipynb
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from irmas_lib.errors import IrmasError


def find_backbone(pl_module: nn.Module) -> nn.Module:
    """The ``backbone`` of a LightningModule (``pl_module.backbone``, else ``pl_module.model.backbone``).

    Notebook: 05_panns_two_phase.ipynb
    """
    for owner in (pl_module, getattr(pl_module, "model", None)):
        backbone = getattr(owner, "backbone", None)
        if isinstance(backbone, nn.Module):
            return backbone
    raise IrmasError(f"TwoPhaseFinetuning needs a model with a `backbone` attribute (PannsMultiBand, PannsNative); "
                     f"{type(getattr(pl_module, 'model', pl_module)).__name__} has none")


FREEZE_MODES = ("auto", "requires_grad", "lr")


class TwoPhaseFinetuning(BaseFinetuning):
    """Phase 1: backbone frozen (BatchNorm statistics fixed, dropout and SpecAugment off, weights
    unchanged), head trained at the LightningModule's own lr (1e-3 in configs/panns_enhanced.yaml). Phase 2,
    from epoch ``unfreeze_at_epoch`` on: everything trained at ``finetune_lr``, the backbone in training mode.

    The optimizer has the same two parameter groups in both phases, named ``head`` (every trainable
    parameter outside the backbone) and ``backbone`` (lr 0 in phase 1): at the start of the fit the
    callback moves the backbone into its own group, and at the switch it sets both groups to
    ``finetune_lr`` and clears the backbone's optimizer state (AdamW then starts on it afresh, as on a
    group added at that moment). One structure for both phases means a checkpoint of either phase
    resumes into the optimizer that ``configure_optimizers`` builds, with its state (Lightning issues
    6551 and 8501).

    How the backbone is frozen in phase 1 (``freeze_by``):

    * ``"requires_grad"``: its parameters get ``requires_grad=False`` before the optimizer and the
      strategy are set up, so no gradient is computed for them (phase 1 costs one forward pass of the
      backbone). Under DDP this is wrong: DDP only synchronises the parameters that required gradients
      when it wrapped the model, so after the switch each process updates the backbone with its own
      gradients and the replicas drift apart (Lightning issue 20340).
    * ``"lr"``: gradients stay on and the backbone's group has learning rate 0 (AdamW then changes neither
      the weights nor, with decoupled weight decay, anything else: bit for bit). DDP synchronises every
      parameter from the start, so the replicas stay identical; phase 1 pays a backward pass through
      the backbone.
    * ``"auto"`` (default): ``"lr"`` when the trainer runs more than one process, else ``"requires_grad"``.
      Both give the same training on one process (tests/test_finetuning.py checks the weights agree).

    Frozen means frozen: besides its weights, the backbone is put in eval mode before every phase-1
    batch (BatchNorm would otherwise update its running statistics, dropout and SpecAugment change the
    output), and back in training mode in phase 2. Lightning 2.6 no longer calls ``model.train()`` each
    epoch (validation restores every submodule's previous mode), but a module that overrides
    ``on_validation_model_train`` still would; doing it per batch holds whatever the version.

    The learning rate of each group is logged every epoch as ``lr/head`` and ``lr/backbone`` (0 while
    frozen), so the switch shows in the metrics file; a ``LearningRateMonitor`` logs them as
    ``lr-AdamW/head`` and ``lr-AdamW/backbone``. Keep the LightningModule's own lr schedule off: the
    callback sets the rates (a scheduler built before the split would not know the backbone group).

    Args:
        unfreeze_at_epoch: first epoch of phase 2 (0-based); = number of phase-1 epochs.
        finetune_lr: learning rate of every group in phase 2.
        log_lr: log ``lr/head`` and ``lr/backbone`` each epoch.
        freeze_by: ``"auto"``, ``"requires_grad"`` or ``"lr"`` (see above).

    Notebook: 05_panns_two_phase.ipynb
    """

    def __init__(self, unfreeze_at_epoch: int = 5, finetune_lr: float = 1e-4, log_lr: bool = True,
                 freeze_by: str = "auto"):
        super().__init__()
        if unfreeze_at_epoch < 0:
            raise ValueError(f"unfreeze_at_epoch must be >= 0, got {unfreeze_at_epoch}")
        if freeze_by not in FREEZE_MODES:
            raise ValueError(f"freeze_by must be one of {', '.join(FREEZE_MODES)}, got {freeze_by!r}")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.finetune_lr = finetune_lr
        self.log_lr = log_lr
        self.freeze_by = freeze_by
        self.mode: str | None = None  # "requires_grad" or "lr", resolved in setup()

    def in_phase_two(self, epoch: int) -> bool:
        return epoch >= self.unfreeze_at_epoch

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        schedule = getattr(pl_module, "hparams", {}).get("lr_schedule")
        if schedule is not None:  # a scheduler would overwrite the rates this callback sets
            raise IrmasError(f"two-phase fine-tuning sets the learning rates itself: set model.lr_schedule "
                             f"null (InstrumentClassifier(..., lr_schedule=None)), not {schedule!r}")
        if self.freeze_by == "auto":
            self.mode = "lr" if getattr(trainer, "world_size", 1) > 1 else "requires_grad"
        else:
            self.mode = self.freeze_by
        super().setup(trainer, pl_module, stage)  # calls freeze_before_training

    def freeze_before_training(self, pl_module: nn.Module) -> None:
        if self.mode != "lr":  # before configure_optimizers and the DDP wrapper: head params only
            self.freeze(find_backbone(pl_module), train_bn=False)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_fit_start(trainer, pl_module)  # BaseFinetuning: param groups of a resumed run
        for optimizer in trainer.optimizers:
            self._split_backbone_group(pl_module, optimizer)

    def _backbone_group(self, pl_module: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
        backbone = {id(p) for p in find_backbone(pl_module).parameters()}
        return next((group for group in optimizer.param_groups
                     if group["params"] and all(id(p) in backbone for p in group["params"])), None)

    def _split_backbone_group(self, pl_module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Make the optimizer's groups [head..., backbone]: the backbone's parameters (trainable or not)
        in a group of their own, at lr 0 until the switch. A no-op when that group exists (a resumed run)."""
        if self._backbone_group(pl_module, optimizer) is not None:
            return
        backbone = list(find_backbone(pl_module).parameters())
        ids = {id(p) for p in backbone}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
            group.setdefault("name", "head")
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
        for p in backbone:
            optimizer.state.pop(p, None)
        optimizer.add_param_group({"params": backbone, "lr": 0.0, "name": "backbone"})

    def finetune_function(self, pl_module: nn.Module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        backbone = find_backbone(pl_module)
        group = self._backbone_group(pl_module, optimizer)
        if group is None:  # a fit whose on_fit_start did not run (a Trainer calling hooks by hand)
            self._split_backbone_group(pl_module, optimizer)
            group = self._backbone_group(pl_module, optimizer)
        if not self.in_phase_two(epoch):
            group["lr"] = 0.0
            return
        if self.mode != "lr":
            self.make_trainable(backbone)  # (again after a resume: setup() froze it)
        if group["lr"] == 0.0:  # the switch (a run resumed in phase 2 has its rates restored already)
            for p in group["params"]:
                optimizer.state.pop(p, None)  # the moments of phase 1 ("lr" mode) are not phase 2's
            for each in optimizer.param_groups:  # head 1e-3 -> 1e-4, backbone 0 -> 1e-4
                each["lr"] = self.finetune_lr

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function
        if self.log_lr:
            optimizer = trainer.optimizers[0]
            group = self._backbone_group(pl_module, optimizer)
            head_lr = optimizer.param_groups[0]["lr"]
            pl_module.log_dict({"lr/head": float(head_lr), "lr/backbone": float(group["lr"]) if group else 0.0},
                               on_step=False, on_epoch=True)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        find_backbone(pl_module).train(self.in_phase_two(trainer.current_epoch))


class EmbeddingCache:
    """The frozen backbone's embedding of every clip of a data set, computed once (phase 1's fast path).

    Valid only while the backbone is frozen and in eval mode and the inputs are fixed: no mixing, no
    SpecAugment, no random crops (build the DataLoader with those switched off). Then a phase-1 epoch
    costs a pass of the head over ``embeddings`` instead of a pass of CNN14 over every clip.

    Attributes:
        embeddings: (n_clips, embedding_dim) float32, e.g. (n, 3*2048) for PannsMultiBand.
        targets: (n_clips, 11) float32 multi-hot.

    Notebook: 05_panns_two_phase.ipynb
    """

    def __init__(self, embeddings: torch.Tensor, targets: torch.Tensor):
        if len(embeddings) != len(targets):
            raise ValueError(f"{len(embeddings)} embeddings but {len(targets)} targets")
        self.embeddings = embeddings
        self.targets = targets

    @classmethod
    @torch.no_grad()
    def compute(cls, model: nn.Module, batches: Iterable[tuple[Any, torch.Tensor]], progress: bool = False
                ) -> "EmbeddingCache":
        """Run ``model.extract`` in eval mode over (inputs, targets) batches (e.g. a DataLoader, not shuffled
        or shuffled: the order is kept). The model's training mode is restored afterwards.

        Notebook: 05_panns_two_phase.ipynb
        """
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="embeddings", unit="batch")
        was_training = model.training
        model.eval()
        embeddings, targets = [], []
        try:
            for inputs, batch_targets in batches:
                embeddings.append(model.extract(inputs).float())  # (batch, embedding_dim)
                targets.append(batch_targets.float())
        finally:
            model.train(was_training)
        return cls(torch.cat(embeddings), torch.cat(targets))

    def __len__(self) -> int:
        return len(self.embeddings)

    def dataloader(self, batch_size: int = 16, shuffle: bool = True, seed: int = 0) -> DataLoader:
        """Batches (embeddings (batch, embedding_dim), targets (batch, 11)), shuffled reproducibly by ``seed``.

        Notebook: 05_panns_two_phase.ipynb
        """
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(TensorDataset(self.embeddings, self.targets), batch_size=batch_size, shuffle=shuffle,
                          generator=generator)


class HeadOnEmbeddings(nn.Module):
    """A PANNs model seen from its cached embeddings: forward(embeddings) = model.head(embeddings).

    The head is shared, not copied: training this module (e.g. in the course's LightningModule, over
    ``EmbeddingCache.dataloader()``) trains ``model.head``; phase 2 then goes on with the whole ``model``.

    forward(embeddings (batch, embedding_dim)) -> {"logits": (batch, 11), "embedding": (batch, hidden_units)}.

    Notebook: 05_panns_two_phase.ipynb
    """

    input_kind = "embedding"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.head = model.head
        self.pretrained = bool(getattr(model, "pretrained", False))

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(embeddings)
