"""Self-contained checkpoints: everything needed to use a trained model, without config file or cache.

Every checkpoint that `irmas train` writes (best and last) is a Lightning checkpoint with one more
entry, ``checkpoint["irmas"]``:

    format_version   1
    model_class      "irmas_lib.models.basic.MultiBranchCNN" (import path of the network)
    model_init_args  the keyword arguments that rebuild its architecture (the model's `init_args`)
    model_name       "MultiBranchCNN"
    input_kind       "bands" (list of band spectrograms) or "waveform" (batch, samples)
    feature_config   FeatureConfig.to_dict(): sample rate, hop, clip length, bands
    norm_stats       {band: {"mean": [...], "std": [...]}}: per bin, over the training split (dB)
    pretrained       True when the network started from pretrained weights (PANNs)
    thresholds       11 per-instrument thresholds tuned on validation data, or None
    global_threshold one threshold for all 11, tuned on the same validation data, or None (absent before 2026-12-06)
    class_codes      the 11 instrument codes in output order
    pretrained_file  the pretrained weights file the network was built from (PANNs), or None

The network's weights are the Lightning ``state_dict`` entries under ``model.``. Only plain types and
tensors are stored, so the file loads with ``torch.load(weights_only=True)``: nothing pickled runs;
the network is rebuilt by calling its class (which must be a torch.nn.Module) with `model_init_args`.

Sized to what each file is for (:func:`make_inference_only`): ``last.ckpt`` is for resuming and keeps
everything (optimizer state, loops, callbacks, float32 weights). ``best.ckpt`` is for inference: no
optimizer state, the large weights of a network over 10 M parameters (PANNs) in 8-bit integers with
one float32 scale per output channel (the rest of its kernels in float16), and a frozen pretrained CNN14
that was never trained stored as a reference to its file and md5 instead of a copy. Its section then
also holds

    inference_only        True
    weights_dtype         "int8", "float16" or "float32": how the large weights are stored (loaded as float32)
    int8_scales           {state_dict key: (out_channels,) float32 scales} of the int8 tensors (weights "int8")
    pretrained_reference  None, or {"file", "md5", "keys": {state_dict key: [key in the file, shape]}}

:func:`read_state_dict` gives the full float32 state dict back (reading the referenced file).

Notebook: 03_basic_cnn.ipynb
"""
from __future__ import annotations

import importlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from irmas_lib.download import cached_md5
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, N_CLASSES
from irmas_lib.precision import Precision, prepare_model, resolve_precision
from irmas_lib.state_dicts import non_finite_weights, weight_differences

FORMAT_VERSION = 1
SECTION = "irmas"
STATE_PREFIX = "model."  # InstrumentClassifier keeps the network in its `model` attribute
INFERENCE_WEIGHTS = ("auto", "float32", "float16", "int8")
COMPACT_WEIGHTS_MIN_PARAMETERS = 10_000_000  # "auto": int8 weights for networks this large (PANNs), not the basic CNN
INT8_MIN_ELEMENTS = 1_000_000  # "int8" for kernels this large (CNN14: 98.6 % of its weights); smaller ones float16
FLOAT16_MAX = 65504.0


def plain(value: Any) -> Any:
    """A copy of `value` made of dicts, lists, str, int, float, bool, None and CPU tensors only.

    numpy arrays become tensors, tuples lists, paths strings, dataclasses (with `to_dict`) dicts;
    anything else its `repr`. Such values load with `torch.load(weights_only=True)`.

    Notebook: 03_basic_cnn.ipynb
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "to_dict"):
        return plain(value.to_dict())
    return repr(value)


def model_class_path(model: nn.Module) -> str:
    """'irmas_lib.models.basic.MultiBranchCNN': where the network's class is imported from.

    Notebook: 03_basic_cnn.ipynb
    """
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def checkpoint_section(model: nn.Module, feature_config: Any, norm_stats: Any, pretrained: bool,
                       thresholds: np.ndarray | None = None, global_threshold: float | None = None) -> dict:
    """The ``checkpoint["irmas"]`` entry for a network (see the module docstring).

    Args:
        model: the network; its `init_args` dict (keyword arguments rebuilding it offline) is stored
            (None without one: such a checkpoint keeps its weights but load_checkpoint refuses it).
        feature_config: the FeatureConfig the inputs were computed with.
        norm_stats: the normalisation statistics of the training split (irmas_lib.features), or None
            for a waveform model.
        pretrained: whether the network started from pretrained weights.
        thresholds: (11,) tuned thresholds or None.
        global_threshold: one threshold for all instruments, tuned on the same validation data, or None.
    Returns:
        dict of plain values and tensors.

    Notebook: 03_basic_cnn.ipynb
    """
    init_args = getattr(model, "init_args", None)
    return {
        "format_version": FORMAT_VERSION,
        "model_class": model_class_path(model),
        "model_init_args": plain(init_args) if isinstance(init_args, dict) else None,
        "model_name": type(model).__name__,
        "input_kind": getattr(model, "input_kind", "bands"),
        "feature_config": plain(feature_config),
        "norm_stats": plain(norm_stats),
        "pretrained": bool(pretrained),
        "thresholds": None if thresholds is None else plain(np.asarray(thresholds, dtype=np.float64)),
        "global_threshold": None if global_threshold is None else float(global_threshold),
        "class_codes": list(CODES),
        "pretrained_file": plain(getattr(model, "cnn14_file", None)),
    }


MIN_REFERENCED_BYTES = 10_000_000   # reference a pretrained file only for at least this much of its weights


def _untrained_pretrained_weights(state: dict[str, torch.Tensor], model: nn.Module) -> dict | None:
    """The ``pretrained_reference`` entry for the weights in ``state`` that still equal, bit for bit, those
    of the pretrained file the network was built from (``model.cnn14_file`` and ``model.cnn14_file_keys()``,
    irmas_lib.models.panns; the file is read by irmas_lib.models.pretrained), or None when the network names
    no such file or its unchanged weights are smaller than ``MIN_REFERENCED_BYTES`` (a checkpoint then stays
    self-contained).
    """
    source = getattr(model, "cnn14_file", None)
    keys = getattr(model, "cnn14_file_keys", None)
    if not source or keys is None or not Path(source).is_file():
        return None
    from irmas_lib.models.pretrained import read_cnn14_state_dict

    source = Path(source)
    original = read_cnn14_state_dict(source)
    unchanged = {}
    for key, file_key in keys().items():
        value, before = state.get(STATE_PREFIX + key), original.get(file_key)
        if value is not None and before is not None and value.shape == before.shape and torch.equal(value, before):
            unchanged[STATE_PREFIX + key] = [file_key, list(value.shape)]
    unchanged_bytes = sum(state[key].numel() * state[key].element_size() for key in unchanged)
    if unchanged_bytes < MIN_REFERENCED_BYTES:
        return None     # a few stray unchanged tensors are not worth a dependency on the file
    return {"file": str(source), "md5": cached_md5(source), "keys": unchanged}


def _half_precision(state: dict[str, torch.Tensor]) -> None:
    """In place: float32 weight matrices and kernels (2-D and more) become float16 when they fit its range.
    Biases, batch-norm parameters and statistics (1-D) stay float32: they are small and sensitive."""
    for key, value in state.items():
        if value.dtype == torch.float32 and value.ndim >= 2 and value.numel() and _largest_magnitude(value) <= FLOAT16_MAX:
            state[key] = value.to(torch.float16).contiguous()   # (NaN <= x is False: non-finite stays)


def _int8_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In place: float32 tensors of 2-D and more with at least ``INT8_MIN_ELEMENTS`` values become int8 with
    one scale per output channel (the first dimension): ``w ≈ q × scale``, q in [-127, 127], scale = the
    channel's largest |w| / 127, so each weight moves by at most half a step. Returns {key: (out_channels,)
    float32 scales}."""
    scales = {}
    for key, value in state.items():
        if value.dtype == torch.float32 and value.ndim >= 2 and value.numel() >= INT8_MIN_ELEMENTS:
            rows = value.reshape(value.shape[0], -1)                                 # (out, rest)
            largest = torch.maximum(rows.amax(dim=1), rows.amin(dim=1).neg())        # (out,) the channel's max |w|
            if not bool(torch.isfinite(largest).all()):   # max and min carry a NaN or an infinity through
                continue
            scale = largest.clamp_min(torch.finfo(torch.float32).tiny) / 127
            quantised = rows / scale[:, None]             # one temporary, rounded and clamped in place
            quantised.round_().clamp_(-127, 127)
            state[key] = quantised.to(torch.int8).reshape(value.shape).contiguous()
            scales[key] = scale
    return scales


def _largest_magnitude(value: torch.Tensor) -> float:
    """max |value|, NaN when a value is NaN, without the temporary ``value.abs()`` (the PANNs checkpoints
    hold 240 M weights: each full-size temporary costs a fraction of a second per save)."""
    return float(torch.maximum(value.amax(), value.amin().neg()))


def make_inference_only(checkpoint: dict, model: nn.Module, weights: str = "auto") -> dict:
    """Slim a Lightning checkpoint dict, in place, to what inference needs (``best.ckpt``).

    1. No ``optimizer_states``, ``lr_schedulers`` or ``callbacks`` (AdamW's state is twice the weights).
    2. Weights of the pretrained CNN14 that are still exactly those of its file (a backbone frozen in
       phase 1 and never trained) are left out and recorded as a reference: the file's path, its md5,
       and which keys come from it. A trained backbone, or one with random initial weights, is stored.
    3. ``weights``: "float16" stores 2-D and larger float32 tensors as float16 (half the bytes;
       probabilities change by about 1e-4); "int8" stores the large ones (``INT8_MIN_ELEMENTS``) as 8-bit
       integers with a float32 scale per output channel (a quarter of the bytes) and the other kernels
       as float16; "float32" keeps them; "auto" (default) uses int8 for a network of at least 10 M
       parameters (the PANNs models: benchmarks/bench_panns.py prints their agreement with float32) and
       float32 below (the basic CNN, under 1 MB anyway).

    Args:
        checkpoint: Lightning's checkpoint dict (``state_dict`` with keys under ``model.``, the ``irmas``
            section of :func:`checkpoint_section`).
        model: the network (for its size and, for PANNs, its pretrained file).
        weights: "auto", "int8", "float16" or "float32".
    Returns:
        ``checkpoint``; its section gets ``inference_only``, ``weights_dtype``, ``int8_scales`` and
        ``pretrained_reference``.

    Notebook: 05_panns_two_phase.ipynb
    """
    if weights not in INFERENCE_WEIGHTS:
        raise IrmasError(f"weights {weights!r}: expected one of {', '.join(INFERENCE_WEIGHTS)}")
    for key in ("optimizer_states", "lr_schedulers", "callbacks"):
        checkpoint.pop(key, None)
    state = checkpoint["state_dict"]
    reference = _untrained_pretrained_weights(state, model)
    for key in (reference or {}).get("keys", {}):
        del state[key]
    if weights == "auto":
        large = sum(p.numel() for p in model.parameters()) >= COMPACT_WEIGHTS_MIN_PARAMETERS
        weights = "int8" if large else "float32"
    scales = _int8_weights(state) if weights == "int8" else {}
    if weights in ("int8", "float16"):
        _half_precision(state)  # the kernels int8 left (and every kernel for "float16")
    section = checkpoint.setdefault(SECTION, {})
    section.update(inference_only=True, weights_dtype=weights, int8_scales=scales, pretrained_reference=reference)
    return checkpoint


def _reference_file(reference: dict, path: Path) -> Path:
    """The pretrained file a checkpoint refers to: its recorded path, else ``$PANNS_CHECKPOINT`` or
    ``~/panns_data`` (irmas_lib.models.pretrained.resolve_checkpoint), the first with the recorded md5."""
    from irmas_lib.models.pretrained import resolve_checkpoint

    candidates = [Path(reference["file"]), resolve_checkpoint()]
    for candidate in candidates:
        if candidate.is_file() and cached_md5(candidate) == reference["md5"]:
            return candidate
    found = "; ".join(f"{c}: {'md5 ' + cached_md5(c) if c.is_file() else 'no such file'}"
                      for c in dict.fromkeys(candidates))
    raise IrmasError(
        f"{path}: its frozen CNN14 weights are not copied in it but read from {reference['file']} "
        f"(md5 {reference['md5']}), which cannot be found ({found}). Put that file back, or get it with "
        "`irmas download-panns` (or set PANNS_CHECKPOINT to it)")


def restore_weights(checkpoint: dict, path: str | Path) -> dict[str, torch.Tensor]:
    """The full float32 ``state_dict`` of a checkpoint dict, in place: referenced pretrained weights read
    from their file (md5 checked), int8 weights times their scales and float16 weights back to float32
    (the section's ``int8_scales`` are used up, so a second call changes nothing). A checkpoint without
    any of them is returned unchanged. Raises IrmasError naming ``path`` when the referenced file is
    missing or differs.

    Notebook: 06_threshold_evaluation.ipynb
    """
    state = checkpoint.get("state_dict", {})
    section = checkpoint.get(SECTION) if isinstance(checkpoint.get(SECTION), dict) else {}
    reference = section.get("pretrained_reference")
    if reference:
        from irmas_lib.models.pretrained import read_cnn14_state_dict

        original = read_cnn14_state_dict(_reference_file(reference, Path(path)))
        for key, (file_key, _shape) in reference["keys"].items():
            state[key] = original[file_key]
    for key, scale in (section.pop("int8_scales", None) or {}).items():
        value = state.get(key)
        if value is None or value.dtype != torch.int8 or scale.numel() != value.shape[0]:
            raise IrmasError(f"{path}: damaged checkpoint: int8 scales for {key!r} do not fit its weights "
                             f"({'missing' if value is None else f'{value.dtype} {tuple(value.shape)}'}, "
                             f"{scale.numel()} scales)")
        state[key] = value.float() * scale.float().view(-1, *[1] * (value.ndim - 1))
    for key, value in state.items():
        if value.dtype == torch.float16:
            state[key] = value.float()
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The full float32 Lightning ``state_dict`` of a checkpoint file (best or last), for
    ``InstrumentClassifier.load_state_dict``: :func:`restore_weights` of ``torch.load(path)``.

    Notebook: 03_basic_cnn.ipynb
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise IrmasError(f"{path}: not a readable PyTorch checkpoint ({unreadable_reason(error)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise IrmasError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return restore_weights(checkpoint, path)


def save_inference_checkpoint(source: str | Path, target: str | Path, weights: str = "auto") -> Path:
    """Write an inference-only copy of a checkpoint (e.g. of ``last.ckpt``, to keep after deleting the run):
    :func:`make_inference_only` with ``weights`` ("auto", "int8", "float16" or "float32"), the network
    rebuilt from the checkpoint to know its size and pretrained file. Returns ``target``.

    Notebook: 05_panns_two_phase.ipynb
    """
    from irmas_lib.atomic import replaced_atomically

    source, target = Path(source), Path(target)
    model = load_checkpoint(source, precision="float32").model
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    restore_weights(checkpoint, source)
    model.cnn14_file = checkpoint[SECTION].get("pretrained_file")  # a rebuilt network does not know its file
    make_inference_only(checkpoint, model, weights)
    with replaced_atomically(target) as temporary:
        torch.save(checkpoint, temporary)
    return target


@dataclass
class LoadedModel:
    """A trained network ready for inference, with what it needs to turn audio into its inputs.

    Attributes:
        model: the network, in eval mode, on CPU.
        feature_config: FeatureConfig (sample rate, clip length, bands).
        norm_stats: normalisation statistics of the training split (None for waveform models).
        thresholds: (11,) float64 per-instrument thresholds tuned on validation, or None.
        global_threshold: one threshold for every instrument tuned on the same validation data, or None
            (checkpoints written before 2026-12-06 carry none).
        untuned_thresholds: codes of the instruments whose threshold could not be tuned (no validation
            positive: it stays 0.6), or None when the checkpoint does not say (written before 2026-12-07).
        pretrained: whether the network started from pretrained weights.
        model_name: e.g. "MultiBranchCNN".
        input_kind: "bands" or "waveform".
        path: the checkpoint file.
        precision: the path :meth:`predict_proba` takes (irmas_lib.precision.Precision; set it with
            :meth:`use_precision`).

    Notebook: 06_threshold_evaluation.ipynb
    """

    model: nn.Module
    feature_config: Any
    norm_stats: Any
    thresholds: np.ndarray | None
    pretrained: bool
    model_name: str
    input_kind: str
    path: Path
    spectrogram: nn.Module | None = field(default=None, repr=False)  # built on first use: waveform -> bands
    precision: Precision = field(default_factory=lambda: resolve_precision("float32", channels_last=False))
    global_threshold: float | None = None
    untuned_thresholds: list[str] | None = None

    def use_precision(self, precision: str | Precision = "auto") -> Precision:
        """Switch the prediction path: "auto" (bfloat16 autocast + channels_last where the CPU computes
        bfloat16 natively, else plain float32), "bfloat16", "float32" (the plain reference path), or a
        :class:`irmas_lib.precision.Precision`. Lays the weights out accordingly; returns the precision now in use.
        """
        self.precision = resolve_precision(precision)
        prepare_model(self.model, self.precision)
        return self.precision

    @property
    def device(self) -> torch.device:
        tensor = next(itertools.chain(self.model.parameters(), self.model.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def inputs(self, waveforms: torch.Tensor) -> Any:
        """(batch, samples) mono waveforms at feature_config.sample_rate -> what `model` takes.

        "bands": the normalised multi-band spectrogram, a list of (batch, n_bins_b, frames);
        "waveform": the waveforms themselves.
        """
        waveforms = waveforms.to(self.device)
        if self.input_kind == "waveform":
            return waveforms
        if self.spectrogram is None:
            from irmas_lib.features import BandNormalizer, MultiBandSpectrogram

            self.spectrogram = nn.Sequential(MultiBandSpectrogram(self.feature_config),
                                             BandNormalizer(self.norm_stats, self.feature_config.band_names))
            self.spectrogram.to(self.device)
        return self.spectrogram(waveforms)

    @torch.inference_mode()
    def predict_proba(self, waveforms: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Probabilities of the 11 instruments.

        Args:
            waveforms: (batch, samples) or (samples,) mono float waveforms at
                feature_config.sample_rate (a clip of feature_config.clip_seconds is what the model
                was trained on; other lengths work).
        Returns:
            torch.Tensor (batch, 11) float32 in [0, 1], in IRMAS order (irmas_lib.labels.CODES).

        The spectrogram front end runs in float32; the network on ``self.precision``'s path (bfloat16
        autocast on a CPU that computes it natively: see :meth:`use_precision`, irmas_lib.precision).

        Notebook: 06_threshold_evaluation.ipynb
        """
        waveforms = torch.as_tensor(waveforms, dtype=torch.float32)
        if waveforms.ndim == 1:
            waveforms = waveforms.unsqueeze(0)
        inputs = self.inputs(waveforms)  # float32
        with self.precision.autocast():
            logits = self.model(inputs)["logits"]  # (batch, 11)
        return torch.sigmoid(logits.float()).cpu()


def _short(error: BaseException, limit: int = 300) -> str:
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit] + " ..."


def unreadable_reason(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` could not read a file, in a few words: torch's own message for
    an unpicklable file advises ``weights_only=False``, which is no advice for a text file or a foreign one.

    Notebook: 03_basic_cnn.ipynb
    """
    import pickle

    if isinstance(error, pickle.UnpicklingError):
        return ("UnpicklingError: not a PyTorch checkpoint, or one holding objects other than tensors and plain "
                "values, which are not loaded")
    return f"{type(error).__name__}: {_short(error)}"


def _import_class(class_path: str, path: Path) -> type:
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise IrmasError(f"{path}: model class {class_path!r} cannot be imported ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise IrmasError(f"{path}: {class_path!r} is not a torch.nn.Module")
    return cls


PROBE_FRAMES = 64  # frames of the zeros that check a loaded bands model against its feature_config
RESTORE = "restore the feature_config it was trained with (or use the file as irmas train wrote it)"


def _check_feature_config_fits(model: nn.Module, feature_config: Any, norm_stats: Any, path: Path) -> None:
    """IrmasError naming ``path`` unless the bands ``feature_config`` gives (their numbers of bins) are what the
    normalisation statistics and the network were made for: a checkpoint whose stored feature_config was edited
    (another n_fft, other band edges) loaded, then failed with a shape traceback at its first prediction.

    The network runs once on zeros of the bands' shapes, batch 1 and PROBE_FRAMES frames whatever the clip
    length (global pooling takes any length; 64 frames keep CNN14's five poolings above one frame): milliseconds
    for MultiBranchCNN, a fraction of a second per CNN14 backbone. Networks that take any number of bins
    (PANNs' models, MultiBranchCNN with linear bins) can only be checked against the statistics."""
    bins = {band.name: feature_config.n_bins(band) for band in feature_config.bands}
    for name, n_bins in bins.items():
        stats = norm_stats.get(name) if isinstance(norm_stats, dict) else None
        if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
            raise IrmasError(f"{path}: its feature_config does not fit its normalisation statistics (no mean and "
                             f"std for its band {name!r}; they are for {sorted(map(str, norm_stats or {}))}): "
                             f"{RESTORE}")
        sizes = {stat: torch.as_tensor(stats[stat]).numel() for stat in ("mean", "std")}
        if set(sizes.values()) != {n_bins}:
            raise IrmasError(f"{path}: its feature_config does not fit its normalisation statistics (its band "
                             f"{name!r} has {n_bins} bins, the statistics {sizes['mean']} means and "
                             f"{sizes['std']} standard deviations): {RESTORE}")
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    zeros = [torch.zeros(1, n_bins, PROBE_FRAMES, device=device) for n_bins in bins.values()]
    try:
        with torch.no_grad():
            model(zeros)
    except torch.cuda.OutOfMemoryError:
        raise                                   # a busy device, not a checkpoint that contradicts itself
    except Exception as error:                  # shapes that do not fit the weights
        shapes = ", ".join(f"{name} {n_bins}" for name, n_bins in bins.items())
        cause = "" if isinstance(error, IrmasError) else f"; {type(error).__name__}: {_short(error)}"
        raise IrmasError(f"{path}: its feature_config does not fit its weights (bins per band: {shapes}{cause}): "
                         f"{RESTORE}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    precision: str | Precision = "auto") -> LoadedModel:
    """Load a checkpoint written by `irmas train` (best or last) into a :class:`LoadedModel`.

    No config file, cache or network is needed, except the pretrained CNN14 file that an inference-only
    checkpoint of a never-trained backbone refers to (:func:`make_inference_only`). A missing, truncated
    or foreign file (not a PyTorch checkpoint, no ``irmas`` section, weights that do not fit the model or
    are NaN or infinite, a feature_config that does not fit the weights or the normalisation statistics,
    a referenced file that is missing or differs) raises IrmasError naming it.

    Args:
        path: the .ckpt file.
        map_location: where the weights go (CPU by default).
        precision: the prediction path (:meth:`LoadedModel.use_precision`): "auto" (default: bfloat16
            where the CPU computes it natively), "bfloat16" or "float32".
    Returns:
        LoadedModel, network in eval mode, weights in float32.

    Notebook: 06_threshold_evaluation.ipynb
    """
    from irmas_lib.features import FeatureConfig

    path = Path(path)
    if not path.is_file():
        raise IrmasError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, not a pickle, unsafe content: all mean "not ours"
        raise IrmasError(f"{path}: not a readable PyTorch checkpoint ({unreadable_reason(error)})") from None
    section = checkpoint.get(SECTION) if isinstance(checkpoint, dict) else None
    if not isinstance(section, dict) or "model_class" not in section:
        raise IrmasError(f"{path}: not an irmas checkpoint (no '{SECTION}' section; "
                         "checkpoints come from `irmas train`)")
    if section.get("format_version") != FORMAT_VERSION:
        raise IrmasError(f"{path}: checkpoint format {section.get('format_version')!r}, "
                         f"this irmas_lib reads format {FORMAT_VERSION}")
    if list(section.get("class_codes", [])) != list(CODES):
        raise IrmasError(f"{path}: classes {section.get('class_codes')} differ from {list(CODES)}")

    if not isinstance(section.get("model_init_args"), dict):
        raise IrmasError(f"{path}: {section['model_class']} recorded no init_args, so it cannot be rebuilt "
                         "(models set self.init_args in __init__, see irmas_lib.models.basic)")
    input_kind = str(section.get("input_kind", "bands"))
    if input_kind == "bands" and not section.get("norm_stats"):
        raise IrmasError(f"{path}: a band-spectrogram model without normalisation statistics")
    cls = _import_class(section["model_class"], path)
    try:
        # arguments added to a class after some checkpoints were written take their old behaviour there
        model = cls(**{**getattr(cls, "legacy_init_args", {}), **section["model_init_args"]})
    except Exception as error:
        raise IrmasError(f"{path}: cannot rebuild {section['model_class']} ({type(error).__name__}: {_short(error)})") from None
    state = restore_weights(checkpoint, path)
    weights = {key[len(STATE_PREFIX):]: value for key, value in state.items() if key.startswith(STATE_PREFIX)}
    if (bad := non_finite_weights(weights)) is not None:
        raise IrmasError(f"{path}: {bad}: the run that saved it diverged (take an earlier checkpoint, or train "
                         "again with a lower learning rate)")
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise IrmasError(f"{path}: weights do not fit {section['model_class']} ({_short(error)})") from None
    model.to(map_location).eval()

    thresholds = section.get("thresholds")
    if thresholds is not None:
        thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if thresholds.shape != (N_CLASSES,):
            raise IrmasError(f"{path}: thresholds have shape {thresholds.shape}, expected ({N_CLASSES},)")
    global_threshold = section.get("global_threshold")
    if global_threshold is not None:
        if (isinstance(global_threshold, bool) or not isinstance(global_threshold, (int, float))
                or not 0.0 <= float(global_threshold) <= 1.0):
            raise IrmasError(f"{path}: global_threshold {global_threshold!r}, expected a number in [0, 1]")
        global_threshold = float(global_threshold)
    untuned = section.get("untuned_thresholds")
    if untuned is not None and (not isinstance(untuned, list) or not set(untuned) <= set(CODES)):
        raise IrmasError(f"{path}: untuned_thresholds {untuned!r}, expected a list of instrument codes")
    try:
        feature_config = FeatureConfig.from_dict(section["feature_config"])
    except Exception as error:
        raise IrmasError(f"{path}: invalid feature config ({error})") from None
    if input_kind == "bands":
        _check_feature_config_fits(model, feature_config, section["norm_stats"], path)
    loaded = LoadedModel(model=model, feature_config=feature_config, norm_stats=section.get("norm_stats"),
                         thresholds=thresholds, pretrained=bool(section.get("pretrained", False)),
                         model_name=str(section.get("model_name", cls.__name__)),
                         input_kind=input_kind, path=path, global_threshold=global_threshold,
                         untuned_thresholds=untuned)
    loaded.use_precision(precision)
    return loaded


# ---------------------------------------------------------------------------------------------------
# Checking a --ckpt_path before Lightning reads it (irmas fit/validate)
# ---------------------------------------------------------------------------------------------------

def read_lightning_checkpoint(path: str | Path, resume: bool = False) -> dict:
    """Open a checkpoint given as ``--ckpt_path`` (memory-mapped: the weights are not read) and check it
    is a Lightning checkpoint, with what resuming needs when ``resume``.

    Returns:
        ``{"shapes": {state_dict key: shape}, "epoch", "global_step", "model_class"}``.
    Raises:
        IrmasError naming the file: missing, unreadable (truncated, not a PyTorch file, unsafe content),
        not a Lightning checkpoint (no ``state_dict``; e.g. a ``torch.save`` of some dict, or the PANNs
        CNN14 file), or, with ``resume``, one without the optimizer and loop state training resumes from.

    Notebook: 03_basic_cnn.ipynb
    """
    path = Path(path)
    if not path.is_file():
        raise IrmasError(f"{path}: no such checkpoint file")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip file
    except Exception as error:  # truncated zip, text, pickle with objects: all mean "cannot use it"
        raise IrmasError(f"{path}: not a readable PyTorch checkpoint ({unreadable_reason(error)})") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        found = sorted(map(str, checkpoint))[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise IrmasError(f"{path}: not a Lightning checkpoint (no 'state_dict'; found {found}); checkpoints "
                         "come from `irmas fit`")
    section = checkpoint.get(SECTION) if isinstance(checkpoint.get(SECTION), dict) else {}
    if resume:
        missing = [key for key in ("optimizer_states", "loops", "epoch", "global_step") if key not in checkpoint]
        if section.get("inference_only"):
            last = path.with_name("last.ckpt")
            instead = f"resume from {last}" if last.is_file() and last != path else "start a new run"
            raise IrmasError(f"{path}: an inference-only checkpoint (no optimizer state; best.ckpt keeps none): "
                             f"training cannot resume from it; {instead} instead")
        if missing:
            raise IrmasError(f"{path}: cannot resume training from it: no {', '.join(missing)} (a weights-only "
                             "checkpoint); start a new run instead")
    shapes = {key: tuple(getattr(value, "shape", ())) for key, value in state.items()}
    for key, (_file_key, shape) in ((section.get("pretrained_reference") or {}).get("keys") or {}).items():
        shapes[key] = tuple(shape)  # weights read from the pretrained file (irmas_lib.checkpoint)
    return {"shapes": shapes,
            "epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step"),
            "model_class": section.get("model_class")}


def check_checkpoint_fits(path: str | Path, shapes: dict, module: nn.Module) -> None:
    """Raise IrmasError naming ``path`` unless the checkpoint's weights (``shapes``: key -> shape) are exactly
    those ``module`` has (the same keys and shapes): a checkpoint of another model, or of the same model
    with another size, is refused before Lightning starts.

    Notebook: 03_basic_cnn.ipynb
    """
    problems = weight_differences({key: tuple(value.shape) for key, value in module.state_dict().items()}, shapes)
    if problems:
        network = getattr(module, "model", module)
        raise IrmasError(f"{path}: the weights of another model than the config's "
                         f"{type(network).__name__}: " + ", ".join(problems))
