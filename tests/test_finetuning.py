"""Two-phase fine-tuning of the PANNs multi-band model and phase 1's embedding cache.

A shared-backbone PannsMultiBand with random weights (no checkpoint needed: load_weights=False), 4 clips
of 40 frames (0.46 s), batches of 2, one or two training batches per epoch.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from irmas_lib.errors import IrmasError
from irmas_lib.finetuning import EmbeddingCache, HeadOnEmbeddings, TwoPhaseFinetuning, find_backbone
from irmas_lib.models.panns import PannsMultiBand
from irmas_lib.training import InstrumentClassifier

# 4 random clips leave most instruments without positives; HeadOnEmbeddings is not meant to be reloaded.
pytestmark = [pytest.mark.filterwarnings("ignore:No positive samples found"),
              pytest.mark.filterwarnings("ignore:HeadOnEmbeddings has no `init_args`"),
              pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")]

N_BINS = (47, 69, 81)
N_CLIPS, FRAMES, BATCH = 4, 40, 2


class RandomBands(Dataset):
    """Fixed random band spectrograms with one instrument each: item -> ([3 × (n_bins_b, frames)], (11,))."""

    def __init__(self, n_clips: int = N_CLIPS, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.bands = [torch.randn(n_clips, n, FRAMES, generator=generator) for n in N_BINS]
        self.targets = torch.nn.functional.one_hot(torch.arange(n_clips) % 11, 11).float()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return [band[index] for band in self.bands], self.targets[index]


def loader() -> DataLoader:
    return DataLoader(RandomBands(), batch_size=BATCH, shuffle=False)


@pytest.fixture(scope="module")
def initial_model() -> PannsMultiBand:
    torch.manual_seed(0)
    return PannsMultiBand(share_backbone=True, load_weights=False)


def trainer(tmp_path, max_epochs: int, callbacks: list, batches: int = 2) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, limit_train_batches=batches, limit_val_batches=0, callbacks=callbacks,
                      logger=CSVLogger(tmp_path, name="", version=""), enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      deterministic=True, log_every_n_steps=1)


class Snapshots(pl.Callback):
    """State of the model (parameters and buffers) at the start of training and after each epoch, and the
    backbone's training mode seen by every training batch."""

    def __init__(self):
        self.states, self.backbone_modes = [], []

    def on_train_start(self, trainer, pl_module):
        self.states.append(copy.deepcopy(pl_module.model.state_dict()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # runs after TwoPhaseFinetuning's
        self.backbone_modes.append((trainer.current_epoch, pl_module.model.backbone.training))

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append(copy.deepcopy(pl_module.model.state_dict()))


@pytest.mark.parametrize("freeze_by", ["requires_grad", "lr"])
def test_phase_one_freezes_the_backbone_bit_for_bit_and_phase_two_trains_it(tmp_path, initial_model, freeze_by):
    """Either way of freezing (no gradients, or gradients and learning rate 0): the backbone's weights and
    BatchNorm statistics do not move in phase 1, and both groups train in phase 2."""
    model = copy.deepcopy(initial_model)
    snapshots = Snapshots()
    module = InstrumentClassifier(model, lr=1e-3, lr_schedule=None, spec_augment=False)
    pl.seed_everything(0)
    two_phase = TwoPhaseFinetuning(unfreeze_at_epoch=1, finetune_lr=1e-4, freeze_by=freeze_by)
    trainer(tmp_path, max_epochs=2, callbacks=[two_phase, LearningRateMonitor(logging_interval="epoch"), snapshots],
            batches=1).fit(module, train_dataloaders=loader())
    assert two_phase.mode == freeze_by
    start, after_phase_1, after_phase_2 = snapshots.states
    backbone_keys = [key for key in start if key.startswith("backbone.")]
    buffer_keys = [key for key in backbone_keys if "running_" in key or "num_batches_tracked" in key]
    assert len(buffer_keys) == 6 * 2 * 3  # 6 ConvBlocks × 2 BatchNorms × (mean, var, count)
    for key in backbone_keys:  # parameters AND BatchNorm buffers, bit for bit
        assert torch.equal(start[key], after_phase_1[key]), key
    assert not torch.equal(start["head.classifier.1.weight"], after_phase_1["head.classifier.1.weight"])
    for key in ("backbone.conv_block1.conv1.weight", "backbone.fc1.weight", "backbone.conv_block6.bn2.weight",
                "backbone.conv_block3.bn1.running_mean", "backbone.conv_block3.bn1.running_var"):
        assert not torch.equal(after_phase_1[key], after_phase_2[key]), key
    assert after_phase_2["backbone.conv_block1.bn1.num_batches_tracked"] == 3  # 1 batch × 3 bands (shared backbone)
    assert snapshots.backbone_modes == [(0, False), (1, True)]

    optimizer = module.trainer.optimizers[0]
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 1e-4]
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.head.parameters()}

    metrics = pd.read_csv(tmp_path / "metrics.csv")
    per_epoch = metrics.groupby("epoch").max(numeric_only=True)
    assert per_epoch["lr/head"].tolist() == pytest.approx([1e-3, 1e-4], rel=1e-6)  # (logged as float32)
    assert per_epoch["lr/backbone"].tolist() == pytest.approx([0.0, 1e-4], rel=1e-6)
    # LearningRateMonitor (as `irmas fit` adds it, after the config's callbacks) sees the switch too; its
    # rows carry a step, not an epoch: the two named groups from the start, the backbone's at 0 in phase 1.
    monitor = metrics.dropna(subset=["step"]).set_index("step")
    assert monitor["lr-AdamW/head"].dropna().tolist() == pytest.approx([1e-3, 1e-4])
    assert monitor["lr-AdamW/backbone"].dropna().tolist() == pytest.approx([0.0, 1e-4])
    assert [group["name"] for group in optimizer.param_groups] == ["head", "backbone"]


def test_a_clips_phase_one_embedding_is_the_same_alone_and_in_a_batch(initial_model):
    model = copy.deepcopy(initial_model).train()  # as Lightning leaves it
    module = SimpleNamespace(model=model)
    callback = TwoPhaseFinetuning(unfreeze_at_epoch=1)
    callback.freeze_before_training(module)
    bands, _ = next(iter(loader()))
    with torch.no_grad():
        # Control: frozen (requires_grad=False) but in training mode: batch statistics in BatchNorm, dropout on.
        assert not torch.allclose(model.extract([band[:1] for band in bands]), model.extract(bands)[:1], atol=1e-3)
        callback.on_train_batch_start(SimpleNamespace(current_epoch=0), module, None, 0)
        alone = model.extract([band[:1] for band in bands])  # (1, 6144)
        in_batch = model.extract(bands)[:1]
    assert model.backbone.training is False and model.head.training is True
    assert torch.allclose(alone, in_batch, atol=1e-5, rtol=1e-5)
    callback.on_train_batch_start(SimpleNamespace(current_epoch=1), module, None, 0)
    assert model.backbone.training is True


def test_training_the_head_on_cached_embeddings_gives_the_same_head(tmp_path, initial_model):
    uncached, cached = copy.deepcopy(initial_model), copy.deepcopy(initial_model)
    pl.seed_everything(0)
    trainer(tmp_path / "uncached", max_epochs=1, callbacks=[TwoPhaseFinetuning(unfreeze_at_epoch=5)]
            ).fit(InstrumentClassifier(uncached, lr=1e-3, lr_schedule=None, spec_augment=False), train_dataloaders=loader())

    cache = EmbeddingCache.compute(cached, loader())
    assert cache.embeddings.shape == (N_CLIPS, 3 * 2048) and cache.targets.shape == (N_CLIPS, 11)
    assert cached.training  # mode restored
    head_only = HeadOnEmbeddings(cached)
    assert head_only.head is cached.head  # shared: training it trains the model's head
    pl.seed_everything(0)
    trainer(tmp_path / "cached", max_epochs=1, callbacks=[]).fit(
        InstrumentClassifier(head_only, lr=1e-3, lr_schedule=None, spec_augment=False), train_dataloaders=cache.dataloader(batch_size=BATCH, shuffle=False))

    before = initial_model.head.state_dict()
    for key, value in uncached.head.state_dict().items():
        assert not torch.equal(value, before[key]) or "bias" in key, key  # the head did learn
        assert torch.allclose(cached.head.state_dict()[key], value, atol=1e-6), key
    for key, value in uncached.backbone.state_dict().items():
        assert torch.equal(value, cached.backbone.state_dict()[key]), key


def test_a_model_without_backbone_is_refused():
    with pytest.raises(IrmasError, match="backbone"):
        find_backbone(SimpleNamespace(model=torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError):
        TwoPhaseFinetuning(unfreeze_at_epoch=-1)
    with pytest.raises(ValueError, match="freeze_by"):
        TwoPhaseFinetuning(freeze_by="gradients")


class TinyBackboneNet(torch.nn.Module):
    """A network with `backbone` (Linear, BatchNorm, dropout) and `head`: (batch, 16) -> 11 logits."""

    input_kind = "features"

    def __init__(self):
        super().__init__()
        self.init_args = {}
        self.backbone = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                            torch.nn.Dropout(0.2))
        self.head = torch.nn.Linear(32, 11)

    def forward(self, x):
        return {"logits": self.head(self.backbone(x))}


def test_both_ways_of_freezing_train_the_same_weights_on_one_process(tmp_path):
    """"lr" (what DDP runs) and "requires_grad" (one process's default) are the same training: phase 1
    leaves the backbone alone, the switch starts AdamW afresh on it, so the final weights agree bit for bit."""
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 16, generator=generator),
                                          torch.nn.functional.one_hot(torch.arange(32) % 11, 11).float())
    torch.manual_seed(0)
    initial = TinyBackboneNet()
    final = {}
    for freeze_by in ("requires_grad", "lr"):
        model = copy.deepcopy(initial)
        pl.seed_everything(0)
        trainer(tmp_path / freeze_by, max_epochs=3, batches=4,
                callbacks=[TwoPhaseFinetuning(unfreeze_at_epoch=1, finetune_lr=1e-3, freeze_by=freeze_by)]).fit(
            InstrumentClassifier(model, lr=1e-2, lr_schedule=None), train_dataloaders=DataLoader(data, batch_size=8, shuffle=True))
        final[freeze_by] = model.state_dict()
    for key, value in final["lr"].items():
        assert torch.equal(value, final["requires_grad"][key]), key
        assert not torch.equal(value, initial.state_dict()[key]) or "num_batches" in key, key


def test_a_learning_rate_schedule_beside_two_phase_fine_tuning_is_refused(tmp_path):
    """InstrumentClassifier's default cosine schedule would overwrite the rates the callback sets (phase 2
    would start at lr 0): the run stops before the first step and says which setting to change."""
    data = torch.utils.data.TensorDataset(torch.randn(8, 16), torch.nn.functional.one_hot(torch.arange(8) % 11, 11).float())
    with pytest.raises(IrmasError, match="lr_schedule"):
        trainer(tmp_path, max_epochs=2, batches=1, callbacks=[TwoPhaseFinetuning(unfreeze_at_epoch=1)]).fit(
            InstrumentClassifier(TinyBackboneNet()), train_dataloaders=DataLoader(data, batch_size=8))
