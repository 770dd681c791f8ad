"""PANNs' CNN14, pretrained on AudioSet, as the feature extractor of two IRMAS models.

PANNs-enhanced multi-band model (the original project design's "3 feature extractors with pretrained weights"):

    band 0 (batch, n_bins_0, frames) ─▶ to 64 rows ─▶ CNN14 conv stack + fc1 ─▶ (batch, 2048) ─┐
    band 1 (batch, n_bins_1, frames) ─▶ to 64 rows ─▶ CNN14 conv stack + fc1 ─▶ (batch, 2048) ─┼─▶ head ─▶ 11 logits
    band 2 (batch, n_bins_2, frames) ─▶ to 64 rows ─▶ CNN14 conv stack + fc1 ─▶ (batch, 2048) ─┘
                                                      └── `backbone` ──┘            concat ─▶ fusion ─▶ classifier

PANNs native (for comparison): waveform 22,050 Hz ─▶ 32 kHz ─▶ CNN14's own log-mel front end ─▶ bn0 ─▶
CNN14 conv stack + fc1 ─▶ (batch, 2048) ─▶ the same head.

The architecture is ``Cnn14`` from panns_inference's ``models.py`` with the AudioSet settings, the
weights are ``Cnn14_mAP=0.431.pth`` (``irmas download-panns``). Nothing here touches the network:
``panns_models_module`` loads ``models.py`` without running the package's ``__init__`` (which would
``wget`` the AudioSet label list). Where the checkpoint is looked for: ``resolve_checkpoint``. What a
backbone holds (CNN14's six ConvBlocks and ``fc1``: a 2048-d embedding per band; ``bn0`` only in the
native model) and why: ``Cnn14Backbone``; how a band becomes 64 rows and why: ``band_to_cnn14_rows``.

Notebook: 05_panns_two_phase.ipynb
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import pickle
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from irmas_lib.download import (AUDIOSET_LABELS_FILE, PANNS_CHECKPOINT, ZENODO_PANNS_URL, archive_url,
                                audioset_label_names, file_md5)
from irmas_lib.errors import IrmasError
from irmas_lib.labels import N_CLASSES
from irmas_lib.precision import float32_region
from irmas_lib.state_dicts import weight_differences

# Cnn14(sample_rate, window_size, hop_size, mel_bins, fmin, fmax, classes_num) has no defaults; these
# are the settings the AudioSet checkpoint was trained with.
CNN14_AUDIOSET = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                      classes_num=527)
CNN14_ROWS = 64  # frequency rows CNN14's bn0 and conv_block1 expect (its 64 mel bins)
EMBEDDING_DIM = 2048  # CNN14's embedding: fc1's output
CHECKPOINT_ENV = "PANNS_CHECKPOINT"  # environment variable naming a checkpoint file

_PRIVATE_PACKAGE = "_irmas_panns_inference"


class RandomInitWarning(UserWarning):
    """CNN14 goes on with random weights (``allow_random_init=True`` and no checkpoint)."""


def panns_models_module() -> types.ModuleType:
    """panns_inference's ``models.py`` (``Cnn14``, ``ConvBlock``), imported WITHOUT the package's ``__init__``.

    ``import panns_inference.models`` would first run ``panns_inference/__init__.py``, which imports its
    ``config.py``, which shells out to ``wget`` for ``~/panns_data/class_labels_indices.csv`` and, offline,
    leaves a 0-byte CSV there for good (panns_inference issues #8, #15). So the package's folder is
    registered under a private name as an empty package module; ``models.py`` and its relative import
    of ``pytorch_utils`` then load from that folder, and ``__init__``/``config`` never run. A real
    ``import panns_inference`` elsewhere is unaffected (different module name). (``models.py`` imports
    ``matplotlib.pyplot``, which may write its font cache under ``~/.cache/matplotlib`` or ``$MPLCONFIGDIR``.)
    A whole model pickled with ``torch.save(model)`` unpickles only after this function has run in that
    process; checkpoints (state dicts, irmas_lib.checkpoint) are not concerned.

    Returns:
        the module ``_irmas_panns_inference.models`` (loaded once, then taken from ``sys.modules``).

    Notebook: 05_panns_two_phase.ipynb
    """
    if _PRIVATE_PACKAGE not in sys.modules:
        spec = importlib.util.find_spec("panns_inference")  # finds the folder; runs none of its code
        if spec is None or not spec.submodule_search_locations:
            raise IrmasError("panns_inference is not installed: it comes with the 'panns' extra "
                             "(pip install -e '.[panns]')")
        package = types.ModuleType(_PRIVATE_PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)  # an empty package over the real folder
        sys.modules[_PRIVATE_PACKAGE] = package
    return importlib.import_module(_PRIVATE_PACKAGE + ".models")


def default_checkpoint_path() -> Path:
    """``~/panns_data/Cnn14_mAP=0.431.pth``: where ``irmas download-panns`` and panns_inference put it.

    Notebook: 05_panns_two_phase.ipynb
    """
    return Path.home() / "panns_data" / PANNS_CHECKPOINT.name


def resolve_checkpoint(checkpoint: str | os.PathLike | None = None) -> Path:
    """Where the CNN14 weights are looked for: ``checkpoint`` if given (the model's config), else
    ``$PANNS_CHECKPOINT`` if set, else ``default_checkpoint_path()``. The file may not exist.

    Notebook: 05_panns_two_phase.ipynb
    """
    if checkpoint:
        return Path(checkpoint).expanduser()
    if os.environ.get(CHECKPOINT_ENV):
        return Path(os.environ[CHECKPOINT_ENV]).expanduser()
    return default_checkpoint_path()


def _numpy_array_globals() -> list:
    """The numpy functions and classes that rebuild plain arrays, for ``torch.serialization.safe_globals``.

    Files pickled under numpy 1.x name ``numpy.core.multiarray``, numpy 2.x ``numpy._core.multiarray``:
    both names are allowed. Rebuilding an array runs no code of the file's choosing.
    """
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [multiarray._reconstruct, (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            multiarray.scalar, (multiarray.scalar, "numpy.core.multiarray.scalar"),
            np.ndarray, np.dtype, *dtype_classes]


def _torch_load(path: Path) -> Any:
    """``torch.load`` on CPU, as safely as the file allows.

    1. ``weights_only=True``: tensors and plain containers only.
    2. The same with numpy arrays allowed: the PANNs training script saved its sampler's state
       (numpy index arrays, utils/data_generator.py) next to ``'model'``, which step 1 refuses.
    3. A full unpickle, only for the exact published file (md5 541141fa…): it is trusted.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if file_md5(path) == PANNS_CHECKPOINT.md5:
            return torch.load(path, map_location="cpu", weights_only=False)
        reason = str(error).strip().splitlines()
        raise IrmasError(
            f"{path}: cannot be read safely as a CNN14 checkpoint (weights_only=True): truncated, corrupt, "
            f"or holding objects other than tensors and numpy arrays ({reason[-1] if reason else error}). "
            f"Only the published file (md5 {PANNS_CHECKPOINT.md5}) is unpickled in full; "
            "delete this one and run `irmas download-panns`."
        ) from None


def read_cnn14_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``'model'`` state dict of a CNN14 checkpoint file (a dict with keys iteration, model, sampler).

    Raises:
        IrmasError naming the file: unreadable or truncated, not a dict, or no ``'model'`` state dict.

    Notebook: 05_panns_two_phase.ipynb
    """
    path = Path(path)
    try:
        checkpoint = _torch_load(path)
    except IrmasError:
        raise
    except Exception as error:  # truncated zip, not a torch file, I/O error, ...
        raise IrmasError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''} "
            "Delete it and run `irmas download-panns`."
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = sorted(map(str, checkpoint))[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise IrmasError(f"{path}: not a PANNs checkpoint: expected a dict with a 'model' state dict, found {found}")
    return checkpoint["model"]


def check_cnn14_state_dict(state_dict: dict[str, Any], cnn14: nn.Module, path: str | os.PathLike) -> None:
    """Raise IrmasError naming ``path`` unless ``state_dict`` has exactly ``cnn14``'s keys and shapes.

    Notebook: 05_panns_two_phase.ipynb
    """
    problems = weight_differences({key: tuple(value.shape) for key, value in cnn14.state_dict().items()},
                                  {key: tuple(getattr(value, "shape", ())) for key, value in state_dict.items()})
    if problems:
        raise IrmasError(f"{path}: not the AudioSet CNN14 checkpoint ({CNN14_AUDIOSET}): " + ", ".join(problems))


def _missing_checkpoint_message(path: Path) -> str:
    url = archive_url(ZENODO_PANNS_URL, PANNS_CHECKPOINT.name) + "?download=1"
    return (
        f"No CNN14 checkpoint at {path}. The PANNs models start from AudioSet-pretrained weights, looked for "
        f"in this order: the model's `checkpoint` argument, ${CHECKPOINT_ENV}, {default_checkpoint_path()}.\n"
        f"Get them (about 327 MB, md5 {PANNS_CHECKPOINT.md5}) with:  irmas download-panns\n"
        f"or download {url} into ~/panns_data/ (or anywhere, and set {CHECKPOINT_ENV} to the file).\n"
        "Offline, `allow_random_init: true` in the model's config (on the command line: "
        "--model.model.init_args.allow_random_init true) goes on with random weights: "
        "the run is then NOT pretrained and says so."
    )


def _warn_random_init(path: Path) -> None:
    """The warning that cannot be missed: a banner on stderr and a RandomInitWarning."""
    bar = "!" * 100
    print("\n".join([
        bar,
        "!!  CNN14 HAS RANDOM WEIGHTS: this PANNs model is NOT pretrained on AudioSet.",
        f"!!  No checkpoint at {path}; allow_random_init is true, so the run goes on.",
        "!!  Its results say nothing about transfer learning; checkpoints and logs record pretrained=False.",
        "!!  Get the weights with:  irmas download-panns",
        bar,
    ]), file=sys.stderr, flush=True)
    warnings.warn(f"CNN14 is NOT pretrained: no checkpoint at {path}, random weights (allow_random_init=True)",
                  RandomInitWarning, stacklevel=3)


def build_cnn14() -> nn.Module:
    """A randomly initialised ``Cnn14`` with the AudioSet settings (81.8 M parameters, 527 outputs).

    Notebook: 05_panns_two_phase.ipynb
    """
    return panns_models_module().Cnn14(**CNN14_AUDIOSET)


def load_cnn14(checkpoint: str | os.PathLike | None = None, allow_random_init: bool = False) -> nn.Module:
    """The AudioSet CNN14 with its pretrained weights, or random ones when allowed.

    Args:
        checkpoint: a ``Cnn14_mAP=0.431.pth`` file; None: ``$PANNS_CHECKPOINT``, then ``~/panns_data``.
        allow_random_init: with no checkpoint file, go on with random weights (a stderr banner and a
            ``RandomInitWarning``) instead of raising.

    Returns:
        ``Cnn14`` in eval mode; forward(waveform (batch, samples) at 32 kHz) ->
        {"clipwise_output": (batch, 527) sigmoid probabilities, "embedding": (batch, 2048)}.
        Its attribute ``pretrained`` says whether the weights came from a checkpoint, ``source_file``
        (pretrained only) which one.

    Raises:
        IrmasError naming the file: no checkpoint (and random init not allowed, the message says how to
        get one), an unreadable or truncated file, no ``'model'`` key, wrong keys or shapes.

    Notebook: 05_panns_two_phase.ipynb
    """
    path = resolve_checkpoint(checkpoint)
    if not path.is_file():
        if not allow_random_init:
            raise IrmasError(_missing_checkpoint_message(path))
        _warn_random_init(path)
        cnn14 = build_cnn14()
        cnn14.pretrained = False
        return cnn14.eval()
    state_dict = read_cnn14_state_dict(path)  # fail fast on a bad file, before building the network
    cnn14 = build_cnn14()
    check_cnn14_state_dict(state_dict, cnn14, path)
    cnn14.load_state_dict(state_dict)
    cnn14.pretrained = True
    cnn14.source_file = str(path.resolve())
    return cnn14.eval()


def audioset_labels(path: str | os.PathLike | None = None) -> list[str] | None:
    """The 527 AudioSet class names (``class_labels_indices.csv``, column ``display_name``), or None when the
    file is missing, empty (the 0-byte file an offline ``import panns_inference`` leaves) or incomplete.

    Args:
        path: the CSV; default ``~/panns_data/class_labels_indices.csv`` (``irmas download-panns`` puts it
            there; nothing here fetches it).

    Notebook: 05_panns_two_phase.ipynb
    """
    path = Path(path) if path is not None else Path.home() / "panns_data" / AUDIOSET_LABELS_FILE
    try:
        return audioset_label_names(path.read_bytes())
    except OSError:
        return None


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
