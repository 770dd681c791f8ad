"""The eleven IRMAS instruments: codes, readable names, General-MIDI programs, multi-hot helpers.

Notebook: 01_data_exploration.ipynb
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Instrument:
    code: str                   # IRMAS's three-letter code, e.g. "cel"
    name: str                   # what a learner reads, e.g. "cello"
    gm_programs: tuple[int, ...]  # 0-based General-MIDI programs that render it (mini-IRMAS)


# IRMAS order: the order of the 11 outputs of every model in this course.
INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("cel", "cello", (42,)),
    Instrument("cla", "clarinet", (71,)),
    Instrument("flu", "flute", (73,)),
    Instrument("gac", "acoustic guitar", (24, 25)),
    Instrument("gel", "electric guitar", (26, 27, 28, 29, 30)),
    Instrument("org", "organ", (16, 17, 18, 19, 20)),
    Instrument("pia", "piano", (0, 1)),
    Instrument("sax", "saxophone", (64, 65, 66, 67)),
    Instrument("tru", "trumpet", (56,)),
    Instrument("vio", "violin", (40,)),
    Instrument("voi", "voice", (52, 53)),
)
CODES: tuple[str, ...] = tuple(i.code for i in INSTRUMENTS)
NAMES: dict[str, str] = {i.code: i.name for i in INSTRUMENTS}
N_CLASSES = len(INSTRUMENTS)
_INDEX = {code: k for k, code in enumerate(CODES)}


def class_index(code: str) -> int:
    """Position of an instrument code in the model's 11 outputs ('cel' -> 0); ValueError for an unknown code.

    Notebook: 01_data_exploration.ipynb
    """
    try:
        return _INDEX[code]
    except KeyError:
        raise ValueError(f"unknown instrument code {code!r}; expected one of {', '.join(CODES)}") from None


def instrument_name(code: str) -> str:
    """'cel' -> 'cello'; ValueError for an unknown code.

    Notebook: 01_data_exploration.ipynb
    """
    return INSTRUMENTS[class_index(code)].name


def encode_labels(codes: Iterable[str]) -> np.ndarray:
    """Instrument codes -> multi-hot vector, shape (11,), float32, in IRMAS order.

    >>> encode_labels(["pia", "voi"]).nonzero()[0].tolist()
    [6, 10]

    Notebook: 01_data_exploration.ipynb
    """
    multi_hot = np.zeros(N_CLASSES, dtype=np.float32)
    for code in codes:
        multi_hot[class_index(code)] = 1.0
    return multi_hot


def decode_labels(multi_hot: Sequence[float] | np.ndarray, threshold: float = 0.5) -> list[str]:
    """Multi-hot vector or probabilities, shape (11,) -> codes whose value is > threshold, in IRMAS order.

    Notebook: 06_threshold_evaluation.ipynb
    """
    values = np.asarray(multi_hot, dtype=np.float64).reshape(-1)
    if values.shape[0] != N_CLASSES:
        raise ValueError(f"expected {N_CLASSES} values, got {values.shape[0]}")
    return [code for code, value in zip(CODES, values) if value > threshold]


def cooccurrence(multi_hot: np.ndarray) -> np.ndarray:
    """How often each pair of instruments is labelled together.

    Args:
        multi_hot: (n_clips, 11) 0/1 targets.

    Returns:
        (11, 11) int64 counts: entry [i, j] is the number of clips labelled with both i and j;
        the diagonal is the number of clips labelled with i.

    Notebook: 01_data_exploration.ipynb
    """
    targets = (np.asarray(multi_hot) > 0.5).astype(np.int64)   # (n_clips, 11)
    return targets.T @ targets
