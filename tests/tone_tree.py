"""A tiny IRMAS-shaped tree the training, resume and fault tests share (import it: ``from tone_tree import
write_tone_tree``; pytest puts ``tests/`` on the import path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from irmas_lib.labels import CODES


def write_tone_tree(root: Path, test_excerpts: int = 0) -> Path:
    """44 training clips at 22,050 Hz: per instrument 2 recordings x 2 excerpts of a noisy tone at that
    instrument's own pitch (so the instruments can be told apart), and optionally a few 5-s test
    excerpts with label files. Returns ``root``."""
    rng = np.random.default_rng(0)
    rate = 22050
    t = np.arange(3 * rate) / rate
    for k, code in enumerate(CODES):
        folder = root / "IRMAS-TrainingData" / code
        folder.mkdir(parents=True)
        for recording in (1, 2):
            for excerpt in (1, 2):
                tone = 0.3 * np.sin(2 * np.pi * 110 * 2 ** (k / 2) * t) + 0.02 * rng.standard_normal(t.size)
                sf.write(folder / f"[{code}][nod][cla]{recording:04d}__{excerpt}.wav", tone.astype(np.float32), rate)
    part = root / "IRMAS-TestingData-Part1" / "Part1"
    for n in range(test_excerpts):
        part.mkdir(parents=True, exist_ok=True)
        t5 = np.arange(5 * rate) / rate
        sf.write(part / f"song-{n}.wav", (0.3 * np.sin(2 * np.pi * 220 * (n + 1) * t5)).astype(np.float32), rate)
        (part / f"song-{n}.txt").write_text(f"{CODES[n % 11]}\t\n")
    return root
