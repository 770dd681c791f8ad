"""What the notebooks share: where the repository, the data and the runs are, and the course's settings.

Every notebook starts with a "Settings" cell that reads its environment variables itself
(``IRMAS_ROOT``, ``IRMAS_QUICK``, epochs, sizes) with the defaults in plain sight, then passes them to
these functions in cells that say what they do (render mini-IRMAS, compute the feature cache, train
a model), so that a learner's first run works offline and on its own. Nothing here depends on the
working directory: the repository is found from this package's own location.

Notebook: 01_data_exploration.ipynb (and every later notebook)
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from irmas_lib.atomic import one_at_a_time, write_atomic
from irmas_lib.errors import IrmasError

CACHE_QUIET_WAIT_SECONDS = 5.0   # feature_cache waits this long for another process before it says so
# The folders under <repo>/data that the notebooks make one process at a time (mini_irmas, feature_cache)
NOTEBOOK_DATA_FOLDERS = ("mini_irmas", "mini_irmas_features", "irmas_features")


def repo_root() -> Path:
    """The repository's top folder, found from this package's location (``irmas_lib/..``), never from
    the working directory: a notebook, a script or a test started anywhere finds the same ``data/``
    and ``runs/``.

    Raises:
        IrmasError: the package is not inside a checkout of this repository (installed into
            site-packages without ``pip install -e .``), so there is no ``data/`` or ``runs/`` to use.

    Notebook: 01_data_exploration.ipynb
    """
    package = Path(__file__).resolve().parent
    for folder in package.parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "irmas_lib"' in pyproject.read_text(encoding="utf-8"):
            return folder
    raise IrmasError(f"{package}: irmas_lib is not inside the course repository (no pyproject.toml of "
                     "irmas_lib above it); install it from a checkout with `pip install -e .` (make env)")


def quick_mode() -> bool:
    """True when ``IRMAS_QUICK=1``: CI's reduced settings (fewer clips, fewer steps). ``make test`` sets it.
    (The notebooks read the variable in their Settings cell; this is for scripts.)"""
    return os.environ.get("IRMAS_QUICK", "0") not in ("", "0", "false", "False")


def mini_irmas_root() -> Path:
    """``<repo>/data/mini_irmas``, where ``irmas synth`` and ``make demo`` render mini-IRMAS.

    Notebook: 01_data_exploration.ipynb
    """
    return repo_root() / "data" / "mini_irmas"


def data_root(irmas_root: str | Path | None = None, render_if_missing: bool = True, progress: bool = False) -> Path:
    """The IRMAS tree the notebooks read.

    Args:
        irmas_root: the real IRMAS (the folder holding ``IRMAS-TrainingData`` and the test parts), or
            ``""`` for mini-IRMAS. The notebooks pass their Settings cell's ``IRMAS_ROOT``; ``None``
            (scripts) reads ``$IRMAS_ROOT`` instead.
        render_if_missing: render mini-IRMAS with the default settings when it is missing, incomplete
            or made by an older version of the renderer (about a minute on two cores). A complete tree
            rendered with other settings (``irmas synth --train-per-class ...``) is kept.
        progress: show the renderer's progress bar (on stderr) while it renders.

    Notebook: 01_data_exploration.ipynb (and every later notebook)
    """
    if irmas_root is None:
        irmas_root = os.environ.get("IRMAS_ROOT", "")
    if str(irmas_root):
        root = Path(irmas_root).expanduser()
        if not root.is_dir():
            raise IrmasError(f"IRMAS_ROOT={root}: no such folder")
        return root
    return mini_irmas(render_if_missing, progress)


def mini_irmas(render_if_missing: bool = True, progress: bool = False) -> Path:
    """``<repo>/data/mini_irmas``, whatever ``$IRMAS_ROOT`` says, rendered with the default settings
    when it is missing, incomplete or made by an older version of the renderer (about a minute on two
    cores; ``progress`` shows a bar on stderr). A complete tree rendered with other settings is kept.

    Notebook: 04_generalisation.ipynb (which needs mini-IRMAS's sample libraries even beside the real data)
    """
    root = mini_irmas_root()
    if render_if_missing:
        from irmas_lib.synth import read_complete_marker, render_mini_irmas

        if read_complete_marker(root) is None:
            # Two notebooks opened at once on a fresh clone: one renders, the other waits, then finds it done.
            with one_at_a_time(_lock_path(root), f"{root}: another process is rendering it"):
                if read_complete_marker(root) is None:   # the defaults of `irmas synth` and `make demo`:
                    render_mini_irmas(root, overwrite=True, progress=progress)
    return root


def is_real_irmas(root: Path) -> bool:
    """True for any tree but the course's own mini-IRMAS (``<repo>/data/mini_irmas``).

    Notebook: 01_data_exploration.ipynb
    """
    return Path(root).expanduser().resolve() != mini_irmas_root().resolve()


def feature_cache(root: Path | None = None, progress: bool = False) -> Path:
    """The feature cache of the notebooks' data: ``<repo>/data/mini_irmas_features`` for mini-IRMAS
    (``<repo>/data/irmas_features`` for ``$IRMAS_ROOT``), computed quietly with the default features
    when it is missing or its audio changed (seconds on mini-IRMAS; about an hour on real IRMAS on two
    cores; ``progress`` shows a bar on stderr); an up-to-date cache costs one scan of the audio folder.

    Notebook: 03_basic_cnn.ipynb
    """
    root = Path(root) if root is not None else data_root()
    name = "irmas_features" if is_real_irmas(root) else "mini_irmas_features"
    cache_dir = repo_root() / "data" / name
    from irmas_lib.cache import preprocess

    # One process at a time (two notebooks at once); checking an up-to-date cache holds the lock for a
    # moment, so a caller says it waits only after a few seconds (nothing in a notebook's output).
    with one_at_a_time(_lock_path(cache_dir), f"{cache_dir}: another process is computing it",
                        quiet_seconds=CACHE_QUIET_WAIT_SECONDS):
        preprocess(root, cache_dir, progress=progress)  # nothing to do when the cache matches the audio
    return cache_dir



def _lock_path(folder: Path) -> Path:
    """The lock file beside a folder that one process at a time writes: ``data/mini_irmas.lock``."""
    return folder.parent / f"{folder.name}.lock"


@contextlib.contextmanager
def notebooks_lock(folder: str | Path, busy: str, quiet_seconds: float = 0.0) -> Iterator[None]:
    """For ``irmas synth`` and ``irmas preprocess``: while writing ``folder``, hold the lock the notebooks
    hold on it when it is one of their own data folders (``<repo>/data/mini_irmas``,
    ``mini_irmas_features`` or ``irmas_features``), so that ``make demo`` in a terminal and a notebook
    never write the same tree at once; for any other folder (or outside the repository) do nothing.
    ``busy`` and ``quiet_seconds``: what to say, and when, if another process holds it. A folder is
    one of theirs when it resolves to the same place (``data/mini_irmas_features`` may be a symlink to
    another disk, and ``folder`` its target); the lock is the one beside the notebooks' name for it."""
    try:
        data = repo_root() / "data"
    except IrmasError:                      # installed without the repository: no notebooks' folders
        data = None
    target = Path(folder).expanduser().resolve()
    own = next((data / name for name in NOTEBOOK_DATA_FOLDERS if data and (data / name).resolve() == target), None)
    with one_at_a_time(_lock_path(own), busy, quiet_seconds) if own else contextlib.nullcontext():
        yield


def runs_root() -> Path:
    """``<repo>/runs``: logs and checkpoints (git-ignored).

    Notebook: 03_basic_cnn.ipynb
    """
    return repo_root() / "runs"


def setup_plots(dpi: int = 80, image_format: str = "png") -> None:
    """The course's figure style: seaborn's theme, a modest resolution, and the image format of the
    figures a notebook stores ("png", or "jpeg" for spectrogram-heavy notebooks), so that the
    committed notebooks stay small enough to read on the web and to diff.

    Notebook: every notebook's Settings cell.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    from irmas_lib.plots import NotebookFigure

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["figure.dpi"] = dpi
    plt.rcParams["savefig.dpi"] = dpi
    set_matplotlib_formats(image_format)
    NotebookFigure.image_format = image_format


def trained_checkpoint(prefer_demo: bool = True, epochs: int = 40, root: str | Path | None = None,
                       progress: bool = False) -> Path:
    """A trained basic-CNN checkpoint for the notebooks that evaluate one (06, 07), so each runs on its own.

    1. With ``prefer_demo``: the newest ``make demo`` checkpoint, ``runs/demo/version_*/checkpoints/best.ckpt``.
    2. Else the notebooks' own run, ``runs/course_model_<epochs>e`` (``runs/irmas_course_model_<epochs>e``
       on a real IRMAS ``root``): trained once on the feature cache of ``root`` (default
       :func:`data_root`) with :func:`irmas_lib.training.fit_model` (the settings of
       ``configs/default.yaml``), then reused.
       A run counts only once it has finished (its ``complete.json`` names the best checkpoint and the
       data it was trained on; a run of other data is trained again). A finished run is found without
       rendering mini-IRMAS. Two processes that ask at once (``make nbval`` may run notebooks 06 and 07
       side by side, a learner may open both) train it once: the second says so on stderr and waits on
       a file lock beside the run (``runs/<run name>.lock``, left in place), then takes the first one's run.
       ``progress`` shows Lightning's progress bar while it trains.

    Notebook: 06_threshold_evaluation.ipynb, 07_interactive_demo.ipynb
    """
    import json

    runs = runs_root()
    if prefer_demo:
        demo = sorted(runs.glob("demo/version_*/checkpoints/best.ckpt"), key=lambda p: p.stat().st_mtime)
        if demo:
            return demo[-1]
    root = data_root(render_if_missing=False) if root is None else Path(root)   # finished runs need no audio
    run_dir = runs / f"{'irmas_' if is_real_irmas(root) else ''}course_model_{epochs}e"
    marker = run_dir / "complete.json"

    def finished_run() -> Path | None:
        if not marker.is_file():
            return None
        finished = json.loads(marker.read_text(encoding="utf-8"))
        best = Path(finished["best_checkpoint"])
        same_data = finished.get("root", str(Path(root).resolve())) == str(Path(root).resolve())
        return best if best.is_file() and same_data else None

    if (best := finished_run()) is not None:
        return best
    with one_at_a_time(runs / f"{run_dir.name}.lock", f"{run_dir}: another process is training it"):
        if (best := finished_run()) is not None:
            return best
        if Path(root).resolve() == mini_irmas_root().resolve():
            root = mini_irmas(render_if_missing=True, progress=progress)   # rendered now if it is missing
        from irmas_lib.models.basic import MultiBranchCNN
        from irmas_lib.training import fit_model

        import torch

        torch.manual_seed(0)
        result = fit_model(MultiBranchCNN(n_bands=3), feature_cache(root, progress), run_dir, max_epochs=epochs,
                           seed=0, quiet=not progress)
        write_atomic(marker, json.dumps({"best_checkpoint": str(result.best_checkpoint), "epochs": epochs,
                                         "root": str(Path(root).resolve()),
                                         "seconds": round(result.seconds, 1)}).encode("utf-8"))
        return Path(result.best_checkpoint)


def listen(waveform, sample_rate: int, seconds: float | None = 3.0, rate: int = 11025):
    """A small audio player for a notebook: the first ``seconds`` of a mono waveform, resampled to
    ``rate`` (11,025 Hz keeps everything below 5.5 kHz: enough to tell instruments apart) and stored
    as a low-bit-rate MP3 (about 2 kB per second), so a committed notebook can hold a dozen players
    and stay small. Where MP3 cannot be written (libsndfile < 1.1), a 16-bit WAV instead.

    Args:
        waveform: (samples,) float audio, or (channels, samples) mixed to mono.
        sample_rate: of ``waveform`` in Hz.
        seconds: how much to keep from the start (None: all of it).
        rate: the player's sample rate in Hz.

    Returns:
        ``IPython.display.Audio`` (display it, or let it be a cell's last value).

    Notebook: 01_data_exploration.ipynb (also 03 and 06)
    """
    import io

    import numpy as np
    import soundfile as sf
    import soxr
    from IPython.display import Audio

    audio = np.asarray(waveform, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    if seconds is not None:
        audio = audio[: int(round(seconds * sample_rate))]
    if sample_rate != rate:
        audio = soxr.resample(audio, sample_rate, rate)
    audio = 0.9 * audio / max(float(np.abs(audio).max()), 1e-6)  # peak-normalised, as Audio does
    buffer = io.BytesIO()
    try:
        sf.write(buffer, audio, rate, format="MP3", subtype="MPEG_LAYER_III", compression_level=0.9)
    except (sf.LibsndfileError, TypeError, ValueError):
        return Audio(audio, rate=rate)
    player = Audio(data=buffer.getvalue())
    player.mimetype = "audio/mpeg"
    return player
