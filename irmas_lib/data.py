"""Train/validation split by recording, a PyTorch Dataset of waveforms, and a LightningDataModule.

Notebook: 01_data_exploration.ipynb (the split), 03_basic_cnn.ipynb (Dataset and DataModule)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from irmas_lib.audio import fit_length, read_audio
from irmas_lib.errors import IrmasError
from irmas_lib.irmas import multi_hot, scan
from irmas_lib.labels import CODES


def split_by_recording(clips: pd.DataFrame, val_fraction: float = 0.2,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the training clips into train and validation, whole recordings at a time.

    Rules: only rows with ``split == "train"`` are used; a recording (``recording_id``, e.g.
    "cel/0034": all its ``__k`` excerpts, with or without an ``NNN__`` prefix) lands on one side only;
    each class is split on its own (stratified): its recordings are shuffled by ``seed`` and taken in
    that order, each moved to validation when that brings the class's validation *clip* count
    closer to ``val_fraction`` × its clips. Small classes: a class with one recording keeps it in train; a class
    with two or more recordings always keeps at least one on each side, so every instrument is seen
    in validation (per-instrument thresholds need that), even if its share is then far from 20 %.
    Deterministic: the same clips and seed give the same split, whatever the row order.

    Args:
        clips: the clip table of :func:`irmas_lib.irmas.scan` (needs ``split``, ``labels``,
            ``recording_id``, ``relpath``).
        val_fraction: target share of each class's clips in validation, in [0, 1).
        seed: seed of the shuffle.

    Returns:
        (train_clips, val_clips): two DataFrames with the same columns, sorted by relpath.

    Notebook: 01_data_exploration.ipynb (used again in 03_basic_cnn.ipynb)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train = clips[clips["split"] == "train"]
    classes = train["labels"].map(lambda labels: labels[0])
    recordings = train["recording_id"].fillna(train["relpath"])  # a row without id is its own recording
    sizes = (pd.DataFrame({"code": classes, "recording": recordings})
             .groupby(["code", "recording"]).size())
    rng = np.random.default_rng(seed)
    val_recordings: set[str] = set()
    for code in CODES:
        if code not in sizes.index.get_level_values(0):
            continue
        class_sizes = sizes.loc[code].sort_index()  # recording -> clips, in a fixed order before shuffling
        order = rng.permutation(len(class_sizes))
        target = val_fraction * class_sizes.sum()
        chosen, n_val = [], 0
        for position in order:
            size = int(class_sizes.iloc[position])
            if abs(n_val + size - target) < abs(n_val - target):
                chosen.append(class_sizes.index[position])
                n_val += size
        if val_fraction > 0 and len(class_sizes) >= 2:
            if not chosen:  # every instrument appears in validation
                chosen = [class_sizes.index[order[0]]]
            if len(chosen) == len(class_sizes):  # and keeps at least one training recording
                chosen = chosen[:-1]
        val_recordings.update(chosen)
    in_val = recordings.isin(val_recordings)
    return (train[~in_val].sort_values("relpath", ignore_index=True),
            train[in_val].sort_values("relpath", ignore_index=True))


def split_report(train: pd.DataFrame, val: pd.DataFrame, val_fraction: float = 0.2) -> dict:
    """Counts of a split, beside the original project design's channel-level counting.

    Returns ``{"train": {"clips", "recordings"}, "val": {"clips", "recordings"}, "val_share": float,
    "per_class": {code: {"train": int, "val": int}}, "leaked_recordings": int,
    "channel_level": {"samples", "train", "val"}}``. ``channel_level`` is how the original project design
    counted:
    every channel of every clip a sample (sum of ``channels``: 2 × 6,705 = 13,410 on real IRMAS),
    split ``1 - val_fraction`` / ``val_fraction`` at random (10,728 / 2,682), which puts both channels
    of a clip and the excerpts of one recording on both sides. ``leaked_recordings`` (recordings on
    both sides of *this* split) must be 0.

    Notebook: 01_data_exploration.ipynb
    """
    def per_class(clips):
        return clips["labels"].map(lambda labels: labels[0]).value_counts()

    train_counts, val_counts = per_class(train), per_class(val)
    n_samples = int(train["channels"].sum() + val["channels"].sum())
    n_val_samples = math.ceil(val_fraction * n_samples)
    n_clips = len(train) + len(val)
    return {
        "train": {"clips": len(train), "recordings": int(train["recording_id"].nunique())},
        "val": {"clips": len(val), "recordings": int(val["recording_id"].nunique())},
        "val_share": len(val) / n_clips if n_clips else 0.0,
        "per_class": {code: {"train": int(train_counts.get(code, 0)), "val": int(val_counts.get(code, 0))}
                      for code in CODES},
        "leaked_recordings": len(set(train["recording_id"]) & set(val["recording_id"])),
        "channel_level": {"samples": n_samples, "train": n_samples - n_val_samples, "val": n_val_samples},
    }


def format_split_report(report: dict) -> str:
    """A :func:`split_report` as readable text: by recording (this course) beside by channel (the original
    project design).

    Notebook: 01_data_exploration.ipynb
    """
    t, v, c = report["train"], report["val"], report["channel_level"]
    return "\n".join([
        f"{'':<34}{'train':>8}{'validation':>12}",
        f"{'by recording (clips)':<34}{t['clips']:>8,}{v['clips']:>12,}"
        f"   ({t['recordings']:,} / {v['recordings']:,} recordings; on both sides: {report['leaked_recordings']})",
        f"{'original design: each channel':<34}{c['train']:>8,}{c['val']:>12,}"
        f"   ({c['samples']:,} samples split at random: leaks)",
    ])


class ClipDataset(Dataset):
    """Waveforms of clips with their multi-hot labels, for a model that computes its own features.

    Args:
        clips: a clip table (columns ``path``, ``labels``, ``channels``), e.g. one side of
            :func:`split_by_recording`.
        sample_rate: resample to this rate (Hz).
        clip_seconds: crop or zero-pad every clip to this length.
        mono: mix the channels (default); ``False`` returns every channel, (channels, samples).
        channels_as_samples: each channel is its own item (a stereo clip gives two), the original
            project design's counting; overrides ``mono``.

    Item ``i`` -> (waveform float32 tensor (samples,) — or (channels, samples) with ``mono=False`` —,
    multi-hot float32 tensor (11,)), samples = round(sample_rate × clip_seconds), 66,150 by default.

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, clips: pd.DataFrame, sample_rate: int = 22050, clip_seconds: float = 3.0,
                 mono: bool = True, channels_as_samples: bool = False):
        self.paths = clips["path"].tolist()
        self.targets = torch.from_numpy(multi_hot(clips))  # (n_clips, 11)
        self.sample_rate = sample_rate
        self.n_samples = round(sample_rate * clip_seconds)
        self.mono = mono
        self.channels_as_samples = channels_as_samples
        if channels_as_samples:  # item -> (clip, channel)
            self.items = [(k, ch) for k, n in enumerate(clips["channels"].astype(int)) for ch in range(n)]
        else:
            self.items = [(k, None) for k in range(len(self.paths))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip, channel = self.items[index]
        mono = self.mono and channel is None
        audio = read_audio(self.paths[clip], sample_rate=self.sample_rate, mono=mono)  # (channels, samples)
        audio = fit_length(audio, self.n_samples)
        if channel is not None:
            waveform = audio[channel]
        else:
            waveform = audio[0] if mono else audio
        return torch.from_numpy(np.ascontiguousarray(waveform)), self.targets[clip]


class IrmasDataModule(pl.LightningDataModule):
    """Waveform batches from an IRMAS tree: scan, split by recording, :class:`ClipDataset` on each side.

    Args:
        root: an IRMAS tree (real or mini-IRMAS); only its training clips are used.
        batch_size, num_workers: of the DataLoaders.
        val_fraction, seed: of :func:`split_by_recording`.
        sample_rate, clip_seconds, channels_as_samples: of :class:`ClipDataset`.

    After ``setup()``: ``irmas_scan`` (the :class:`irmas_lib.irmas.IrmasScan`), ``train_clips``,
    ``val_clips`` (DataFrames), ``train_set``, ``val_set``. Batches: (waveforms (batch, samples),
    targets (batch, 11)).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, root: str | Path, batch_size: int = 16, num_workers: int = 0, val_fraction: float = 0.2,
                 seed: int = 0, sample_rate: int = 22050, clip_seconds: float = 3.0,
                 channels_as_samples: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.irmas_scan = None

    def setup(self, stage: str | None = None) -> None:
        if self.irmas_scan is not None:
            return
        hp = self.hparams
        self.irmas_scan = scan(self.root)
        self.train_clips, self.val_clips = split_by_recording(self.irmas_scan.clips, hp.val_fraction, hp.seed)
        if len(self.train_clips) == 0:
            raise IrmasError(f"{self.root}: no training clips found (expected IRMAS-TrainingData/<code>/*.wav)")
        options = dict(sample_rate=hp.sample_rate, clip_seconds=hp.clip_seconds,
                       channels_as_samples=hp.channels_as_samples)
        self.train_set = ClipDataset(self.train_clips, **options)
        self.val_set = ClipDataset(self.val_clips, **options)

    @property
    def feature_config(self):
        """The audio settings of the waveforms (sample rate, clip length) as a FeatureConfig, which
        training writes into checkpoints so that a waveform model (PannsNative) can be loaded and run on
        any file; its bands are the defaults and unused by such models."""
        from irmas_lib.features import FeatureConfig

        return FeatureConfig(sample_rate=self.hparams.sample_rate, clip_seconds=self.hparams.clip_seconds)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
