"""The basic multi-branch CNN: one small convolutional branch per frequency band, fused into 11 logits.

    band 0 (batch, n_bins_0, frames) ─▶ branch 0 ─▶ (batch, C·R) ─┐
    band 1 (batch, n_bins_1, frames) ─▶ branch 1 ─▶ (batch, C·R) ─┼─▶ concat ─▶ fusion ─▶ embedding ─▶ classifier ─▶ 11 logits
    band 2 (batch, n_bins_2, frames) ─▶ branch 2 ─▶ (batch, C·R) ─┘
    (C = channels[-1] feature maps, R = freq_regions)

Every branch ends in a global pooling over time and an average over R equal frequency regions, so a
band may have any number of bins and a clip any number of frames, while the model still knows *where*
in the band a feature sits (a cello and a violin differ in their pitch range as much as in timbre).
Before its convolutions a branch pools its band's linear STFT bins into log-frequency rows, 12 per
octave (`rows_per_octave`): where a semitone is wider than a bin (above about 360 Hz with the low band's
21.5-Hz bins) a pitch pattern then looks the same in every octave, which carried better from one sample
library to another than linear bins did (notebook 04). Below that the rows interpolate between bins.
The inputs are normalised dB spectrograms (irmas_lib.features); the model never sees audio.

Notebook: 03_basic_cnn.ipynb
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from irmas_lib.errors import IrmasError
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


def log_frequency_matrix(hz: Sequence[float], low_hz: float, high_hz: float, rows_per_octave: float) -> torch.Tensor:
    """(n_bins, n_rows) matrix of triangular filters evenly spaced in log-frequency from max(low_hz, 40 Hz)
    to high_hz, each column normalised to sum 1 (a filter narrower than a bin takes the nearest bin).

    ``band @ matrix`` turns a band's linear STFT bins (centres ``hz``) into rows a fixed fraction of an
    octave apart (12 per octave: one per semitone). Where a row is wider than a bin, a note played higher
    is the same pattern shifted, whatever its octave, and one sample library's overtones a little sharper
    or flatter than another's land in the same rows. Where rows are narrower than bins (low notes: a
    semitone below 360 Hz is narrower than the low band's 21.5-Hz bins) neighbouring rows repeat or
    interpolate the same bins: no detail is gained there, only the axis is regular.

    Notebook: 03_basic_cnn.ipynb
    """
    import numpy as np

    hz = np.asarray(hz, dtype=np.float64)
    low = max(low_hz, 40.0)
    n_rows = max(2, int(round(np.log2(high_hz / low) * rows_per_octave)))
    centres = low * 2.0 ** (np.arange(n_rows + 2) / rows_per_octave)     # with one edge each side
    matrix = np.zeros((len(hz), n_rows))
    for r in range(n_rows):
        left, centre, right = centres[r], centres[r + 1], centres[r + 2]
        weights = np.clip(np.minimum((hz - left) / (centre - left), (right - hz) / (right - centre)), 0, None)
        if weights.sum() == 0:
            weights[np.argmin(np.abs(hz - centre))] = 1.0
        matrix[:, r] = weights / weights.sum()
    return torch.tensor(matrix, dtype=torch.float32)


class BandBranch(nn.Module):
    """The CNN of one band: (batch, n_bins, frames) -> embedding (batch, channels[-1] · freq_regions).

    The first convolution steps two frames at a time (259 frames of 11.6 ms carry more time detail than an
    instrument label needs): it halves the cost of the first block, the largest, and quarters that of the
    next ones. After the last block the time axis is reduced by max + mean (the strongest moment plus the
    average level, as in PANNs' CNN14) and the frequency axis averaged into `freq_regions` regions.

    Notebook: 03_basic_cnn.ipynb
    """

    # How the convolutions' feature maps are laid out in memory. Channels last (the C values of each
    # time-frequency point side by side) lets oneDNN's CPU convolutions and max-pooling run a training step
    # about 1.3x faster than PyTorch's default layout (benchmarks/bench_training.py times both); outputs
    # agree to float rounding (~1e-7). The benchmark sets torch.contiguous_format for its reference.
    memory_format = torch.channels_last

    def __init__(self, channels: Sequence[int] = (16, 32, 64), freq_regions: int = 4,
                 log_matrix: torch.Tensor | None = None):
        super().__init__()
        # (n_bins, n_rows) from log_frequency_matrix, rebuilt from init_args (not saved); None: linear bins
        self.register_buffer("log_matrix", log_matrix, persistent=False)
        widths = [1, *channels]
        self.blocks = nn.Sequential(*(ConvBlock(widths[k], widths[k + 1], time_stride=2 if k == 0 else 1)
                                      for k in range(len(channels))))
        self.freq_regions = freq_regions
        self.out_features = widths[-1] * freq_regions

    def rows(self, band: torch.Tensor) -> torch.Tensor:
        """(batch, n_bins, frames) -> (batch, n_rows, frames): the log-frequency rows the convolutions read
        (the band itself when the branch has no ``log_matrix``)."""
        if self.log_matrix is None:
            return band
        if band.shape[1] != self.log_matrix.shape[0]:
            raise IrmasError(f"this branch's log-frequency rows were built for {self.log_matrix.shape[0]} "
                             f"bins, the band has {band.shape[1]}: build MultiBranchCNN with the cache's "
                             "features (features=cache.feature_config.to_dict())")
        return torch.einsum("bft,fr->brt", band, self.log_matrix)

    def forward(self, band: torch.Tensor) -> torch.Tensor:
        band = self.rows(band)  # (batch, n_rows, frames)
        # (batch, 1, n_rows, frames); .to sets the strides the layout asks for even with one channel, where
        # .contiguous would see both layouts as satisfied and keep what it got
        x = band.unsqueeze(1).to(memory_format=self.memory_format)
        x = self.blocks(x)  # -> (batch, C, n_rows/2^k, frames/2^(k+1)) after k blocks, in the same layout
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
        rows_per_octave: each branch first pools its band's linear STFT bins into rows this far apart in
            log-frequency (:func:`log_frequency_matrix`; 12 = a semitone, 56 + 24 + 18 rows for the default
            bands instead of 47 + 69 + 81 bins); None: the linear bins as they come. Measured on
            mini-IRMAS: better across sample libraries and half the time per step (issue 9's note).
        features: the ``features`` config (dict) the bands come from, which fixes each bin's frequency;
            None: :class:`~irmas_lib.features.FeatureConfig`'s defaults. A band with another number of
            bins is refused when it arrives.

    forward(bands): a list of n_bands tensors (batch, n_bins_b, frames) of normalised dB ->
    {"logits": (batch, n_classes), "embedding": (batch, embedding_dim)}. Logits, not probabilities:
    apply torch.sigmoid for probabilities (the loss, BCEWithLogits, takes logits).

    Notebook: 03_basic_cnn.ipynb
    """

    input_kind = "bands"  # what forward takes: "bands" (list of spectrograms) or "waveform" (batch, samples)
    pretrained = False  # no pretrained weights: recorded in every checkpoint
    # init_args of checkpoints written before an argument existed (irmas_lib.checkpoint): linear bins
    legacy_init_args = {"rows_per_octave": None}

    def __init__(self, n_bands: int = 3, channels: Sequence[int] = (16, 32, 64), freq_regions: int = 4,
                 embedding_dim: int = 128, dropout: float = 0.1, n_classes: int = N_CLASSES,
                 rows_per_octave: Optional[float] = 12.0, features: Optional[dict] = None):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        matrices: list[torch.Tensor | None] = [None] * n_bands
        if rows_per_octave:
            from irmas_lib.features import FeatureConfig, band_frequencies

            config = FeatureConfig.from_dict(features)
            if len(config.bands) != n_bands:
                raise IrmasError(f"MultiBranchCNN: n_bands={n_bands} but the features have {len(config.bands)} bands "
                                 f"(in a config: model.model.init_args.n_bands {len(config.bands)})")
            matrices = [log_frequency_matrix(band_frequencies(config, band), band.low_hz, band.high_hz,
                                             rows_per_octave) for band in config.bands]
            features = config.to_dict()
        # The keyword arguments that rebuild this architecture (stored in checkpoints, see irmas_lib.checkpoint).
        self.init_args = dict(n_bands=n_bands, channels=list(channels), freq_regions=freq_regions,
                              embedding_dim=embedding_dim, dropout=dropout, n_classes=n_classes,
                              rows_per_octave=rows_per_octave, features=features)
        self.branches = nn.ModuleList(BandBranch(channels, freq_regions, matrices[b]) for b in range(n_bands))
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
