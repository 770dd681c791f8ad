"""PANNs' CNN14, pretrained on AudioSet, as the feature extractor of two IRMAS models.

PANNs-enhanced multi-band model (the original project design's "3 feature extractors with pretrained weights"):

    band 0 (batch, n_bins_0, frames) ─▶ to 64 rows ─▶ CNN14 conv stack + fc1 ─▶ (batch, 2048) ─┐
    band 1 (batch, n_bins_1, frames) ─▶ to 64 rows ─▶ CNN14 conv stack + fc1 ─▶ (batch, 2048) ─┼─▶ head ─▶ 11 logits
    band 2 (batch, n_bins_2, frames) ─▶ to 64 rows ─▶ CNN14 conv stack + fc1 ─▶ (batch, 2048) ─┘
                                                      └── `backbone` ──┘            concat ─▶ fusion ─▶ classifier

PANNs native (for comparison): waveform 22,050 Hz ─▶ 32 kHz ─▶ CNN14's own log-mel front end ─▶ bn0 ─▶
CNN14 conv stack + fc1 ─▶ (batch, 2048) ─▶ the same head.

Where CNN14 and its AudioSet weights (``Cnn14_mAP=0.431.pth``) come from, and what happens without them:
irmas_lib.models.pretrained (``load_cnn14``). What a backbone holds (CNN14's six ConvBlocks and ``fc1``:
a 2048-d embedding per band; ``bn0`` only in the native model) and why: ``Cnn14Backbone``; how a band
becomes 64 rows and why: ``band_to_cnn14_rows``.

Notebook: 05_panns_two_phase.ipynb
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irmas_lib.labels import N_CLASSES
from irmas_lib.models.pretrained import CNN14_AUDIOSET, build_cnn14, load_cnn14
from irmas_lib.precision import float32_region

CNN14_ROWS = 64  # frequency rows CNN14's bn0 and conv_block1 expect (its 64 mel bins)
EMBEDDING_DIM = 2048  # CNN14's embedding: fc1's output


class Cnn14Backbone(nn.Module):
    """CNN14 from its (normalised) 64-row input to its 2048-d embedding: the part that is fine-tuned.

    The layers are CNN14's own (taken from ``cnn14``, not copied, same attribute names as in ``Cnn14``,
    so ``backbone.state_dict()`` keys are a subset of the checkpoint's) and ``forward`` is CNN14's from
    ``bn0`` on: six ConvBlocks (2×2 average pooling except the last, dropout 0.2), mean over frequency,
    max + mean over time, dropout 0.5, ``fc1`` + ReLU, dropout 0.5.

    Args:
        cnn14: a panns ``Cnn14`` (pretrained or random).
        log_mel_input: True (PANNs native): the input is CNN14's own log-mel in dB; the pretrained ``bn0``
            normalises each mel bin and SpecAugment masks it in training mode. False (multi-band): the
            input is already normalised (band spectrograms, training-split statistics); no ``bn0``,
            whose AudioSet statistics do not describe it, and no SpecAugment.

    forward(x (batch, 1, frames, 64)) -> (batch, 2048); frames >= 32 (five 2× poolings).

    Notebook: 05_panns_two_phase.ipynb
    """

    def __init__(self, cnn14: nn.Module, log_mel_input: bool):
        super().__init__()
        self.log_mel_input = log_mel_input
        if log_mel_input:
            self.bn0 = cnn14.bn0
            self.spec_augmenter = cnn14.spec_augmenter
        for k in range(1, 7):
            setattr(self, f"conv_block{k}", getattr(cnn14, f"conv_block{k}"))
        self.fc1 = cnn14.fc1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.log_mel_input:
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each of the 64 mel bins
            if self.training:
                x = self.spec_augmenter(x)
        for k in range(1, 7):
            pool = (2, 2) if k < 6 else (1, 1)
            x = getattr(self, f"conv_block{k}")(x, pool_size=pool, pool_type="avg")
            x = F.dropout(x, p=0.2, training=self.training)  # (batch, C_k, frames/2^k, 64/2^k), C_6 = 2048
        x = x.mean(dim=3)  # (batch, 2048, time): average over frequency
        x = x.amax(dim=2) + x.mean(dim=2)  # (batch, 2048): strongest moment + average
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu_(self.fc1(x))
        return F.dropout(x, p=0.5, training=self.training)  # (batch, 2048)


def band_to_cnn14_rows(band: torch.Tensor, rows: int = CNN14_ROWS) -> torch.Tensor:
    """Bring one band spectrogram to CNN14's 64 frequency rows by linear interpolation along frequency.

    (batch, n_bins, frames) -> (batch, 1, frames, rows), CNN14's (batch, channel, time, frequency) layout,
    lowest frequency first. The time axis is untouched; anti-aliased when a band has more than 64 bins.

    Why interpolation and not a band-limited mel filterbank: the bands arrive as normalised dB (a mel
    filterbank would need power, i.e. undoing dB and normalisation), they already hold 47, 69 and 81 bins
    (default config: close to 64), and a mel filterbank over the low band (0–1 kHz, where mel is nearly
    linear) would itself spread 47 bins over 64 overlapping filters. Interpolation is one cheap
    operation on any band, keeps each band's own time–frequency resolution (the point of the multi-band
    front end) and its linear frequency axis. CNN14's first filters learnt mel rows, so the spacing of
    harmonics differs from what they saw: fine-tuning (phase 2) adapts them.

    Notebook: 05_panns_two_phase.ipynb
    """
    x = band.transpose(1, 2).unsqueeze(1)  # (batch, 1, frames, n_bins)
    if x.shape[-1] == rows:
        return x
    return F.interpolate(x, size=(x.shape[2], rows), mode="bilinear", align_corners=False, antialias=True)


class FusionHead(nn.Module):
    """Fusion of the backbone embeddings and the classifier: the part trained from scratch.

    concat (batch, n_inputs*2048) ─▶ dropout ─▶ Linear ─▶ ReLU (fused embedding) ─▶ dropout ─▶ Linear ─▶ logits

    forward(embeddings (batch, n_inputs*2048)) -> {"logits": (batch, n_classes), "embedding": (batch, hidden_units)}.

    Notebook: 05_panns_two_phase.ipynb
    """

    def __init__(self, n_inputs: int, hidden_units: int = 512, dropout: float = 0.3, n_classes: int = N_CLASSES,
                 embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.fusion = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_inputs * embedding_dim, hidden_units),
                                    nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_units, n_classes))

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.fusion(embeddings)  # (batch, hidden_units)
        return {"logits": self.classifier(embedding), "embedding": embedding}


def cnn14_file_keys(model: nn.Module, parts: Sequence[str]) -> dict[str, str]:
    """Which of ``model``'s weights are CNN14's own, and under which key the CNN14 file holds each.

    Args:
        model: a PANNs model.
        parts: its attributes holding CNN14 layers under their ``Cnn14`` names (``"backbone"``, and
            ``"front_end"`` for the native model); a ``ModuleList`` backbone adds its index
            (``backbone.2.conv_block1.conv1.weight`` is the file's ``conv_block1.conv1.weight``).

    Returns:
        {key in ``model.state_dict()``: the key the CNN14 checkpoint's ``'model'`` dict would hold it under}
        (a key the file lacks, such as the resampler's kernel, simply never matches). For checkpoints that
        store a never-trained backbone as a reference to its file (irmas_lib.checkpoint.make_inference_only).

    Notebook: 05_panns_two_phase.ipynb
    """
    mapping = {}
    for part in parts:
        module = getattr(model, part)
        for key in module.state_dict():
            mapping[f"{part}.{key}"] = key.split(".", 1)[1] if isinstance(module, nn.ModuleList) else key
    return mapping


class PannsMultiBand(nn.Module):
    """The PANNs-enhanced model: one CNN14 feature extractor per band, fusion, 11 logits.

    Args:
        n_bands: number of band spectrograms in the input list (3: low, mid, high).
        share_backbone: False: one CNN14 extractor per band, each initialised from the same pretrained
            weights and fine-tuned separately (3 × 79.7 M parameters). True: one extractor applied to every
            band (a third of the parameters and memory; the compute stays three passes).
        checkpoint: CNN14 weights file (default: ``$PANNS_CHECKPOINT``, then ``~/panns_data``).
        allow_random_init: without a checkpoint, go on with random weights (loud warning) instead of failing.
        hidden_units, dropout, n_classes: the head (``FusionHead``).
        load_weights: False builds the architecture only, random and silent, for loading a trained
            model's state dict (``init_args`` stores False, so rebuilding from a checkpoint needs no
            CNN14 file).

    Attributes: ``backbone`` (``nn.ModuleList`` of ``Cnn14Backbone``, or one shared ``Cnn14Backbone``),
    ``head`` (``FusionHead``), ``pretrained`` (CNN14 weights came from a checkpoint), ``cnn14_file`` (that
    checkpoint, or None), ``input_kind = "bands"``.

    forward(bands): a list of n_bands tensors (batch, n_bins_b, frames) of normalised dB, frames >= 32 ->
    {"logits": (batch, n_classes), "embedding": (batch, hidden_units)}; logits, not probabilities.
    ``extract(bands)`` -> (batch, n_bands*2048) is the backbone's part (cached in phase 1, see
    irmas_lib.finetuning.EmbeddingCache); ``forward = head(extract(bands))``.

    Notebook: 05_panns_two_phase.ipynb
    """

    input_kind = "bands"

    def __init__(self, n_bands: int = 3, share_backbone: bool = False, checkpoint: str | None = None,
                 allow_random_init: bool = False, hidden_units: int = 512, dropout: float = 0.3,
                 n_classes: int = N_CLASSES, load_weights: bool = True):
        super().__init__()
        self.init_args = dict(n_bands=n_bands, share_backbone=share_backbone, hidden_units=hidden_units,
                              dropout=dropout, n_classes=n_classes, load_weights=False)
        cnn14 = load_cnn14(checkpoint, allow_random_init) if load_weights else build_cnn14()
        self.pretrained = bool(getattr(cnn14, "pretrained", False))
        self.cnn14_file: str | None = getattr(cnn14, "source_file", None)  # where the pretrained weights came from
        extractor = Cnn14Backbone(cnn14, log_mel_input=False)
        if share_backbone:
            self.backbone = extractor
        else:
            self.backbone = nn.ModuleList([extractor] + [copy.deepcopy(extractor) for _ in range(n_bands - 1)])
        self.n_bands = n_bands
        self.head = FusionHead(n_bands, hidden_units, dropout, n_classes)
        self.train()  # load_cnn14 returns CNN14 in eval mode; a new model starts in training mode, as any nn.Module

    def cnn14_file_keys(self) -> dict[str, str]:
        """{state-dict key: key in the CNN14 file} of the backbone's weights (:func:`cnn14_file_keys`)."""
        return cnn14_file_keys(self, ["backbone"])

    def extractors(self) -> list[nn.Module]:
        """The backbone applied to each band, in band order (the same module n_bands times when shared)."""
        if isinstance(self.backbone, nn.ModuleList):
            return list(self.backbone)
        return [self.backbone] * self.n_bands

    def extract(self, bands: Sequence[torch.Tensor]) -> torch.Tensor:
        """list of n_bands (batch, n_bins_b, frames) -> backbone embeddings (batch, n_bands*2048)."""
        if len(bands) != self.n_bands:
            raise ValueError(f"expected {self.n_bands} band spectrograms, got {len(bands)}")
        return torch.cat([extractor(band_to_cnn14_rows(band)) for extractor, band in zip(self.extractors(), bands)],
                         dim=1)

    def forward(self, bands: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.head(self.extract(bands))


class Cnn14LogMel(nn.Module):
    """CNN14's fixed front end: resampling to 32 kHz, STFT (1,024 window, hop 320) and 64-bin log-mel (50 Hz–14 kHz, dB).

    waveform (batch, samples) at ``input_sample_rate`` -> log-mel (batch, 1, frames, 64), frames = 1 + samples_32k // 320.
    Always computed in float32, also inside a bfloat16 autocast (irmas_lib.precision). Nothing here is
    trained (torchlibrosa freezes its STFT and mel matrices; the resampler is a buffer).

    Notebook: 05_panns_two_phase.ipynb
    """

    def __init__(self, cnn14: nn.Module, input_sample_rate: int = 22050):
        super().__init__()
        import torchaudio

        target = CNN14_AUDIOSET["sample_rate"]
        self.resample = torchaudio.transforms.Resample(input_sample_rate, target) if input_sample_rate != target \
            else nn.Identity()
        self.spectrogram_extractor = cnn14.spectrogram_extractor
        self.logmel_extractor = cnn14.logmel_extractor

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        with float32_region():  # fixed signal processing: float32 even under a bfloat16 autocast
            return self.logmel_extractor(self.spectrogram_extractor(self.resample(waveform.float())))


class PannsNative(nn.Module):
    """CNN14 on its own 32 kHz log-mel front end (one band), with the same head: the comparison model.

    Args:
        checkpoint, allow_random_init, hidden_units, dropout, n_classes, load_weights: as ``PannsMultiBand``.
        input_sample_rate: sample rate of the waveforms given to forward (the course's 22,050 Hz);
            resampled to 32 kHz inside with torchaudio's ``Resample`` (a batched polyphase filter).

    Attributes: ``front_end`` (``Cnn14LogMel``, never trained), ``backbone`` (``Cnn14Backbone`` with
    ``bn0`` and SpecAugment), ``head`` (``FusionHead``), ``pretrained``, ``cnn14_file``, ``input_kind = "waveform"``.

    forward(waveform (batch, samples), mono, >= 1 s) -> {"logits": (batch, n_classes), "embedding": (batch, hidden_units)}.

    Notebook: 05_panns_two_phase.ipynb
    """

    input_kind = "waveform"

    def __init__(self, checkpoint: str | None = None, allow_random_init: bool = False, input_sample_rate: int = 22050,
                 hidden_units: int = 512, dropout: float = 0.3, n_classes: int = N_CLASSES, load_weights: bool = True):
        super().__init__()
        self.init_args = dict(input_sample_rate=input_sample_rate, hidden_units=hidden_units, dropout=dropout,
                              n_classes=n_classes, load_weights=False)
        cnn14 = load_cnn14(checkpoint, allow_random_init) if load_weights else build_cnn14()
        self.pretrained = bool(getattr(cnn14, "pretrained", False))
        self.cnn14_file: str | None = getattr(cnn14, "source_file", None)  # where the pretrained weights came from
        self.front_end = Cnn14LogMel(cnn14, input_sample_rate)
        self.backbone = Cnn14Backbone(cnn14, log_mel_input=True)
        self.head = FusionHead(1, hidden_units, dropout, n_classes)
        self.train()  # (see PannsMultiBand)

    def cnn14_file_keys(self) -> dict[str, str]:
        """{state-dict key: key in the CNN14 file} of the backbone's weights. Not the front end's: its STFT
        and mel matrices are rebuilt by the constructor, and referencing them would make a checkpoint
        whose backbone was trained depend on the CNN14 file for 4 MB of fixed numbers."""
        return cnn14_file_keys(self, ["backbone"])

    def extract(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform (batch, samples) -> backbone embedding (batch, 2048)."""
        with torch.no_grad():
            log_mel = self.front_end(waveform)  # (batch, 1, frames, 64); fixed, no gradient needed
        return self.backbone(log_mel)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.extract(waveform))
