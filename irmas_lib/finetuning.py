"""Two-phase fine-tuning of a pretrained backbone, and phase 1's fast path over cached embeddings.

    phase 1 (epochs < unfreeze_at_epoch): backbone frozen AND in eval mode, head trained at lr 1e-3
    phase 2 (from unfreeze_at_epoch):     everything trained at lr 1e-4 (head lowered, backbone added)

``TwoPhaseFinetuning`` is a Lightning ``BaseFinetuning`` callback for any LightningModule whose model has
``backbone`` and ``head`` attributes (``pl_module.backbone`` or ``pl_module.model.backbone``) and whose
``configure_optimizers`` builds the optimizer from ``requires_grad`` parameters only.

While the backbone is frozen and in eval mode and the inputs do not change between epochs (no mixing,
no SpecAugment), the backbone's output for a clip is always the same: ``EmbeddingCache`` computes it
once, and phase 1 then trains only the head on the cache (``HeadOnEmbeddings``).

Notebook: 04_panns_two_phase.ipynb
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

    Notebook: 04_panns_two_phase.ipynb
    """
    for owner in (pl_module, getattr(pl_module, "model", None)):
        backbone = getattr(owner, "backbone", None)
        if isinstance(backbone, nn.Module):
            return backbone
    raise IrmasError(f"TwoPhaseFinetuning needs a model with a `backbone` attribute (PannsMultiBand, PannsNative); "
                     f"{type(getattr(pl_module, 'model', pl_module)).__name__} has none")


class TwoPhaseFinetuning(BaseFinetuning):
    """Phase 1: backbone frozen (no gradients, BatchNorm statistics fixed, dropout and SpecAugment off),
    head trained at the LightningModule's own lr (1e-3 in configs/panns_enhanced.yaml). Phase 2, from
    epoch ``unfreeze_at_epoch`` on: every parameter group (the head's) set to ``finetune_lr`` and the
    backbone added as a new group at ``finetune_lr``, in training mode.

    Frozen means frozen: ``requires_grad=False`` alone still lets BatchNorm update its running statistics
    and dropout/SpecAugment change the output, so the backbone is put in eval mode before every phase-1
    batch (and back in training mode in phase 2). Lightning 2.6 no longer calls ``model.train()`` each
    epoch (validation restores every submodule's previous mode), but a module that overrides
    ``on_validation_model_train`` still would; doing it per batch holds whatever the version.

    The learning rate of each group is logged every epoch as ``lr/head`` and ``lr/backbone`` (0 while
    frozen), so the switch shows in the metrics file. (A ``LearningRateMonitor`` names the groups
    ``lr-Adam``, then ``lr-Adam/pg1`` and ``/pg2``, and logs the old rates at the switch unless it comes
    after this callback in the list.)

    Args:
        unfreeze_at_epoch: first epoch of phase 2 (0-based); = number of phase-1 epochs.
        finetune_lr: learning rate of every group in phase 2.
        log_lr: log ``lr/head`` and ``lr/backbone`` each epoch.

    Notebook: 04_panns_two_phase.ipynb
    """

    def __init__(self, unfreeze_at_epoch: int = 5, finetune_lr: float = 1e-4, log_lr: bool = True):
        super().__init__()
        if unfreeze_at_epoch < 0:
            raise ValueError(f"unfreeze_at_epoch must be >= 0, got {unfreeze_at_epoch}")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.finetune_lr = finetune_lr
        self.log_lr = log_lr

    def in_phase_two(self, epoch: int) -> bool:
        return epoch >= self.unfreeze_at_epoch

    def freeze_before_training(self, pl_module: nn.Module) -> None:
        self.freeze(find_backbone(pl_module), train_bn=False)  # before configure_optimizers: head params only

    def finetune_function(self, pl_module: nn.Module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        backbone = find_backbone(pl_module)
        if not self.in_phase_two(epoch) or all(p.requires_grad for p in backbone.parameters()):
            return  # phase 1, or phase 2 already set up
        self.make_trainable(backbone)
        for group in optimizer.param_groups:  # the head's group(s): 1e-3 -> 1e-4
            group["lr"] = self.finetune_lr
        # Compared by identity: BaseFinetuning.filter_on_optimizer compares values (torch.equal), which
        # would skip a backbone tensor equal to one already in the optimizer. After a resume the backbone
        # group is already restored, so nothing is added twice.
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new_params = [p for p in backbone.parameters() if id(p) not in in_optimizer]
        if new_params:
            optimizer.add_param_group({"params": new_params, "lr": self.finetune_lr})

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function
        if self.log_lr:
            optimizer = trainer.optimizers[0]
            backbone_params = {id(p) for p in find_backbone(pl_module).parameters()}
            head_lr = optimizer.param_groups[0]["lr"]
            backbone_lr = next((group["lr"] for group in optimizer.param_groups
                                if any(id(p) in backbone_params for p in group["params"])), 0.0)
            pl_module.log_dict({"lr/head": float(head_lr), "lr/backbone": float(backbone_lr)},
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

    Notebook: 04_panns_two_phase.ipynb
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

        Notebook: 04_panns_two_phase.ipynb
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

        Notebook: 04_panns_two_phase.ipynb
        """
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(TensorDataset(self.embeddings, self.targets), batch_size=batch_size, shuffle=shuffle,
                          generator=generator)


class HeadOnEmbeddings(nn.Module):
    """A PANNs model seen from its cached embeddings: forward(embeddings) = model.head(embeddings).

    The head is shared, not copied: training this module (e.g. in the course's LightningModule, over
    ``EmbeddingCache.dataloader()``) trains ``model.head``; phase 2 then goes on with the whole ``model``.

    forward(embeddings (batch, embedding_dim)) -> {"logits": (batch, 11), "embedding": (batch, hidden_units)}.

    Notebook: 04_panns_two_phase.ipynb
    """

    input_kind = "embedding"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.head = model.head
        self.pretrained = bool(getattr(model, "pretrained", False))

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(embeddings)
