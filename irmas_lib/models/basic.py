"""The basic multi-branch CNN: one small convolutional branch per frequency band, fused into 11 logits.

    band 0 (batch, n_bins_0, frames) ─▶ branch 0 ─▶ (batch, C·R) ─┐
    band 1 (batch, n_bins_1, frames) ─▶ branch 1 ─▶ (batch, C·R) ─┼─▶ concat ─▶ fusion ─▶ embedding ─▶ classifier ─▶ 11 logits
    band 2 (batch, n_bins_2, frames) ─▶ branch 2 ─▶ (batch, C·R) ─┘
    (C = channels[-1] feature maps, R = freq_regions)

Every branch ends in a global pooling over time and an average over R equal frequency regions, so a
band may have any number of bins and a clip any number of frames, while the model still knows *where*
in the band a feature sits (a cello and a violin differ in their pitch range as much as in timbre).
The inputs are normalised dB spectrograms (irmas_lib.features); the model never sees audio.

Notebook: 03_basic_cnn.ipynb
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from irmas_lib.labels import N_CLASSES


class ConvBlock(nn.Sequential):
    """conv 3×3 → BatchNorm → ReLU → 2×2 max-pool: (batch, c_in, freq, time) -> (batch, c_out, freq/2, time/(2·st)).

    `time_stride` 2 computes the convolution at every other frame only (st = 2).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, in_channels: int, out_channels: int, time_stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=(1, time_stride), padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        )


def region_average_matrix(n_rows: int, n_regions: int) -> torch.Tensor:
    """(n_rows, n_regions) matrix averaging n_rows frequency rows into n_regions equal regions.

    Region i averages rows floor(i·n/R) .. ceil((i+1)·n/R) - 1, the rule of torch's adaptive average
    pooling (regions overlap by a row when R does not divide n; with n < R rows repeat). Written as a
    matrix product because adaptive pooling's backward pass is not deterministic on GPUs.

    Notebook: 03_basic_cnn.ipynb
    """
    matrix = torch.zeros(n_rows, n_regions)
    for i in range(n_regions):
        start, stop = (i * n_rows) // n_regions, math.ceil((i + 1) * n_rows / n_regions)
        matrix[start:stop, i] = 1.0 / (stop - start)
    return matrix


class BandBranch(nn.Module):
    """The CNN of one band: (batch, n_bins, frames) -> embedding (batch, channels[-1] · freq_regions).

    The first convolution steps two frames at a time (259 frames of 11.6 ms carry more time detail than an
    instrument label needs): it halves the cost of the first block, the largest, and quarters that of the
    next ones. After the last block the time axis is reduced by max + mean (the strongest moment plus the
    average level, as in PANNs' CNN14) and the frequency axis averaged into `freq_regions` regions.

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), freq_regions: int = 4):
        super().__init__()
        widths = [1, *channels]
        self.blocks = nn.Sequential(*(ConvBlock(widths[k], widths[k + 1], time_stride=2 if k == 0 else 1)
                                      for k in range(len(channels))))
        self.freq_regions = freq_regions
        self.out_features = widths[-1] * freq_regions

    def forward(self, band: torch.Tensor) -> torch.Tensor:
        x = self.blocks(band.unsqueeze(1))  # (batch, 1, n_bins, frames) -> (batch, C, n_bins/2^k, frames/2^(k+1)), k blocks
        x = x.amax(dim=3) + x.mean(dim=3)  # (batch, C, rows): strongest moment + average level over time
        regions = region_average_matrix(x.shape[2], self.freq_regions).to(x)  # (rows, R)
        return (x @ regions).flatten(1)  # (batch, C, R) -> (batch, C·R)


class MultiBranchCNN(nn.Module):
    """One CNN branch per band, concatenated embeddings, a fusion layer and a linear classifier.

    Args:
        n_bands: number of band spectrograms in the input list (3 by default: low, mid, high).
        channels: output channels of the conv blocks of each branch.
        freq_regions: frequency regions each branch keeps apart after pooling (1 = global average).
        embedding_dim: size of the fused embedding.
        dropout: dropout before the fusion layer and before the classifier.
        n_classes: number of outputs (the 11 IRMAS instruments).

    forward(bands): a list of n_bands tensors (batch, n_bins_b, frames) of normalised dB ->
    {"logits": (batch, n_classes), "embedding": (batch, embedding_dim)}. Logits, not probabilities:
    apply torch.sigmoid for probabilities (the loss, BCEWithLogits, takes logits).

    Notebook: 03_basic_cnn.ipynb
    """

    input_kind = "bands"  # what forward takes: "bands" (list of spectrograms) or "waveform" (batch, samples)
    pretrained = False  # no pretrained weights: recorded in every checkpoint

    def __init__(self, n_bands: int = 3, channels: Sequence[int] = (16, 32, 64), freq_regions: int = 4,
                 embedding_dim: int = 128, dropout: float = 0.1, n_classes: int = N_CLASSES):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        # The keyword arguments that rebuild this architecture (stored in checkpoints, see irmas_lib.checkpoint).
        self.init_args = dict(n_bands=n_bands, channels=list(channels), freq_regions=freq_regions,
                              embedding_dim=embedding_dim, dropout=dropout, n_classes=n_classes)
        self.branches = nn.ModuleList(BandBranch(channels, freq_regions) for _ in range(n_bands))
        self.fusion = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(n_bands * self.branches[0].out_features, embedding_dim),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding_dim, n_classes))

    def forward(self, bands: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(bands) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} band spectrograms, got {len(bands)}")
        branch_embeddings = [branch(band) for branch, band in zip(self.branches, bands)]  # n_bands × (batch, C·R)
        embedding = self.fusion(torch.cat(branch_embeddings, dim=1))  # (batch, n_bands·C·R) -> (batch, embedding_dim)
        return {"logits": self.classifier(embedding), "embedding": embedding}  # logits: (batch, n_classes)
