"""The fast CPU path: bfloat16 where the processor computes it natively, float32 elsewhere.

Processors with AVX-512 BF16 (or AMX) multiply bfloat16 numbers about twice as fast as float32 ones, and
the convolutions of CNN14 are nearly all of a PANNs model's work. ``torch.autocast`` runs convolutions and
matrix products in bfloat16 and keeps the rest (spectrograms, batch norm statistics, sums) in float32; the
spectrogram front ends stay outside it (a log-spectrogram in bfloat16 loses about 0.1 dB). Where the
processor has no native bfloat16, emulating it would be *slower* than float32, so the ``"auto"`` path
is float32 there.

    precision = resolve_precision("auto")     # Precision(dtype=torch.bfloat16, ...) on an AVX-512 BF16 CPU
    with precision.autocast():
        logits = model(inputs)["logits"]

Two more choices, kept because measurement supported them (benchmarks/bench_panns.py prints the speed-up of
the whole path and its agreement with float32): ``channels_last`` memory layout for the convolution
weights on the bfloat16 path (oneDNN's preferred layout) and ``torch.inference_mode`` around prediction.

:func:`agreement` is the check that the fast path says what float32 says: probabilities within 0.02 and the
same present/absent decisions on at least 99 % of the (excerpt, instrument) pairs.

Notebook: 06_threshold_evaluation.ipynb
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from irmas_lib.errors import IrmasError

PRECISIONS = ("auto", "bfloat16", "float32")
ENV_PRECISION = "IRMAS_PRECISION"  # overrides "auto": float32 or bfloat16
MAX_PROBABILITY_DIFFERENCE = 0.02  # the agreement a fast path must keep with float32 ...
MIN_SAME_DECISIONS = 0.99          # ... on probabilities and on (excerpt, instrument) decisions


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX tiles), as PyTorch sees it.

    Asks ``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported`` (PyTorch >= 2.3) and
    oneDNN (``torch.ops.mkldnn._is_mkldnn_bf16_supported``); False when any of them is missing or says no.
    On this course's 2-core machine: True (``grep -o avx512_bf16 /proc/cpuinfo``).
    """
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None)]
    try:
        native = any(bool(check()) for check in checks if check is not None)
        onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return native and onednn


@dataclass(frozen=True)
class Precision:
    """How a model computes on the CPU.

    Attributes:
        dtype: torch.bfloat16 (autocast) or torch.float32.
        channels_last: convolution weights in channels-last layout (see :func:`prepare_model`).
        reason: why this path was taken, for the benchmarks and reports.
    """

    dtype: torch.dtype
    channels_last: bool
    reason: str

    @property
    def name(self) -> str:
        """"bfloat16" or "float32"."""
        return str(self.dtype).removeprefix("torch.")

    def describe(self) -> str:
        """One line: the path and why, e.g. "bfloat16 autocast + channels_last (auto: the CPU has AVX-512 BF16)"."""
        layout = " + channels_last" if self.channels_last else ""
        kind = "bfloat16 autocast" if self.dtype == torch.bfloat16 else "float32"
        return f"{kind}{layout} ({self.reason})"

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast("cpu", dtype=bfloat16)`` for the bfloat16 path, a no-op for float32."""
        if self.dtype == torch.bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def resolve_precision(precision: str | Precision | None = "auto", channels_last: bool = True) -> Precision:
    """The :class:`Precision` to run with.

    Args:
        precision: "auto" (bfloat16 where :func:`cpu_has_native_bf16`, else float32; the environment
            variable ``IRMAS_PRECISION=float32|bfloat16`` overrides it), "bfloat16", "float32", None
            (= "auto") or a Precision (returned as is).
        channels_last: the weights' layout on the bfloat16 path. float32 keeps the weights in the default
            layout: it is the reference path (what the benchmarks compare with). The basic CNN's branches
            lay their feature maps out channels-last on every path, float32 included
            (:attr:`irmas_lib.models.basic.BandBranch.memory_format`: measured faster in float32 too).

    Raises:
        IrmasError: an unknown name.
    """
    if isinstance(precision, Precision):
        return precision
    precision = "auto" if precision is None else str(precision)
    if precision not in PRECISIONS:
        raise IrmasError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    reason = "asked for"
    if precision == "auto":
        forced = os.environ.get(ENV_PRECISION, "").strip()
        if forced:
            if forced not in PRECISIONS[1:]:
                raise IrmasError(f"${ENV_PRECISION}={forced!r}: expected float32 or bfloat16")
            precision, reason = forced, f"${ENV_PRECISION}"
        elif cpu_has_native_bf16():
            precision, reason = "bfloat16", "auto: the CPU computes bfloat16 natively"
        else:
            precision, reason = "float32", "auto: the CPU has no native bfloat16, emulating it would be slower"
    if precision == "bfloat16":
        return Precision(dtype=torch.bfloat16, channels_last=channels_last, reason=reason)
    return Precision(dtype=torch.float32, channels_last=False, reason=reason)


def training_precision(precision: str | Precision | None = "auto") -> str:
    """Lightning's ``Trainer(precision=...)`` for :func:`resolve_precision`'s choice: "bf16-mixed"
    (torch.autocast on CPU, the same path) or "32-true".

    Notebook: 05_panns_two_phase.ipynb
    """
    return "bf16-mixed" if resolve_precision(precision).dtype == torch.bfloat16 else "32-true"


def prepare_model(model: nn.Module, precision: Precision) -> nn.Module:
    """Lay ``model``'s 4-D weights (convolutions) out as ``precision`` asks: channels-last, or the default
    contiguous layout; in place, values, dtype and ``state_dict`` keys unchanged. Returns ``model``."""
    model.to(memory_format=torch.channels_last if precision.channels_last else torch.contiguous_format)
    return model


@contextlib.contextmanager
def float32_region() -> Iterator[None]:
    """Inside an autocast region, compute in float32 (for fixed front ends: resampling, STFT, log-mel)."""
    with torch.autocast("cpu", enabled=False):
        yield


def agreement(reference: np.ndarray, fast: np.ndarray, thresholds: float | np.ndarray = 0.6) -> dict[str, Any]:
    """How closely a fast path's probabilities follow float32's.

    Args:
        reference: (n, 11) float32 probabilities.
        fast: (n, 11) probabilities of the fast path, same excerpts or windows in the same order.
        thresholds: one number or (11,) per instrument; decisions are ``p > t``.

    Returns:
        {"max_difference": largest |fast - reference|, "same_decisions": share of the n × 11 decisions
        that agree, "pairs": n × 11, "agrees": max_difference <= 0.02 and same_decisions >= 0.99}.
    """
    reference = np.asarray(reference, dtype=np.float64)
    fast = np.asarray(fast, dtype=np.float64)
    if reference.shape != fast.shape or reference.size == 0:
        raise ValueError(f"expected two non-empty arrays of the same shape, got {reference.shape} and {fast.shape}")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    max_difference = float(np.abs(fast - reference).max())
    same = float(np.mean((reference > thresholds) == (fast > thresholds)))
    return {"max_difference": max_difference, "same_decisions": same, "pairs": int(reference.size),
            "agrees": max_difference <= MAX_PROBABILITY_DIFFERENCE and same >= MIN_SAME_DECISIONS}


def format_agreement(result: dict[str, Any]) -> str:
    """One line for the benchmarks: "largest probability difference 0.0041 (≤ 0.02), same decisions on 100.0 % ..."."""
    verdict = "agrees" if result["agrees"] else "DOES NOT AGREE"
    return (f"largest probability difference {result['max_difference']:.4f} (≤ {MAX_PROBABILITY_DIFFERENCE}), "
            f"same decisions on {100 * result['same_decisions']:.1f} % of {result['pairs']:,} pairs "
            f"(≥ {100 * MIN_SAME_DECISIONS:.0f} %): {verdict}")
