"""What the notebooks share: where the repository, the data and the runs are, and the course's settings.

Every notebook starts with a "Settings" cell that calls these functions, so that a learner's first
run works offline and on its own: mini-IRMAS is rendered when it is missing, and the real IRMAS is
used instead when the environment variable ``IRMAS_ROOT`` points at it.

Notebook: 01_data_exploration.ipynb (and every later notebook)
"""
from __future__ import annotations

import os
from pathlib import Path

from irmas_lib.atomic import write_atomic
from irmas_lib.errors import IrmasError


def repo_root(start: str | Path | None = None) -> Path:
    """The repository's top folder: the first folder upwards from ``start`` (default: the working
    directory, which is ``notebooks/`` in a notebook) that holds this project's ``pyproject.toml``.

    Notebook: 01_data_exploration.ipynb
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "irmas_lib"' in pyproject.read_text(encoding="utf-8"):
            return folder
    return here


def quick_mode() -> bool:
    """True when ``IRMAS_QUICK=1``: CI's reduced settings (fewer clips, fewer steps). ``make test`` sets it.

    Notebook: 03_basic_cnn.ipynb (every notebook that trains)
    """
    return os.environ.get("IRMAS_QUICK", "0") not in ("", "0", "false", "False")


def mini_irmas_root() -> Path:
    """``<repo>/data/mini_irmas``, where ``irmas synth`` and ``make demo`` render mini-IRMAS.

    Notebook: 01_data_exploration.ipynb
    """
    return repo_root() / "data" / "mini_irmas"


def data_root(render_if_missing: bool = True) -> Path:
    """The IRMAS tree the notebooks read.

    ``$IRMAS_ROOT`` when set (the real IRMAS: the folder holding ``IRMAS-TrainingData`` and the test
    parts); otherwise mini-IRMAS, rendered quietly with the default settings when it is missing,
    incomplete or made by an older version of the renderer (about a minute on two cores). A complete
    tree rendered with other settings (``irmas synth --train-per-class ...``) is kept.

    Notebook: 01_data_exploration.ipynb (and every later notebook)
    """
    if os.environ.get("IRMAS_ROOT"):
        root = Path(os.environ["IRMAS_ROOT"]).expanduser()
        if not root.is_dir():
            raise IrmasError(f"IRMAS_ROOT={root}: no such folder")
        return root
    return mini_irmas(render_if_missing)


def mini_irmas(render_if_missing: bool = True) -> Path:
    """``<repo>/data/mini_irmas``, whatever ``$IRMAS_ROOT`` says, rendered quietly with the default
    settings when it is missing, incomplete or made by an older version of the renderer (about a
    minute on two cores). A complete tree rendered with other settings is kept.

    Notebook: 04_generalisation.ipynb (which needs mini-IRMAS's sample libraries even beside the real data)
    """
    root = mini_irmas_root()
    if render_if_missing:
        from irmas_lib.synth import read_complete_marker, render_mini_irmas

        if read_complete_marker(root) is None:
            render_mini_irmas(root, overwrite=True, progress=False)  # the defaults of `irmas synth` and `make demo`
    return root


def is_real_irmas(root: Path) -> bool:
    """True for the real data set (``$IRMAS_ROOT``), False for mini-IRMAS.

    Notebook: 01_data_exploration.ipynb
    """
    return bool(os.environ.get("IRMAS_ROOT")) and Path(os.environ["IRMAS_ROOT"]).expanduser().resolve() == Path(root).resolve()


def feature_cache(root: Path | None = None) -> Path:
    """The feature cache of the notebooks' data: ``<repo>/data/mini_irmas_features`` for mini-IRMAS
    (``<repo>/data/irmas_features`` for ``$IRMAS_ROOT``), computed quietly with the default features
    when it is missing or its audio changed (seconds on mini-IRMAS; about an hour on real IRMAS on two
    cores); an up-to-date cache costs one scan of the audio folder.

    Notebook: 03_basic_cnn.ipynb
    """
    root = Path(root) if root is not None else data_root()
    name = "irmas_features" if is_real_irmas(root) else "mini_irmas_features"
    cache_dir = repo_root() / "data" / name
    from irmas_lib.cache import preprocess

    preprocess(root, cache_dir, progress=False)  # nothing to do when the cache matches the audio
    return cache_dir


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


def trained_checkpoint(prefer_demo: bool = True, epochs: int = 40) -> Path:
    """A trained basic-CNN checkpoint for the notebooks that evaluate one (06, 07), so each runs on its own.

    1. With ``prefer_demo``: the newest ``make demo`` checkpoint, ``runs/demo/version_*/checkpoints/best.ckpt``.
    2. Else the notebooks' own run, ``runs/course_model_<epochs>e``: trained once on the feature cache of
       :func:`data_root` with :func:`irmas_lib.training.fit_model` (the settings of
       ``configs/default.yaml``; about a minute for 12 epochs on two cores), then reused. A run counts
       only once it has finished (its ``complete.json`` names the best checkpoint).

    Notebook: 06_threshold_evaluation.ipynb, 07_interactive_demo.ipynb
    """
    import json

    runs = runs_root()
    if prefer_demo:
        demo = sorted(runs.glob("demo/version_*/checkpoints/best.ckpt"), key=lambda p: p.stat().st_mtime)
        if demo:
            return demo[-1]
    run_dir = runs / f"course_model_{epochs}e"
    marker = run_dir / "complete.json"
    if marker.is_file():
        best = Path(json.loads(marker.read_text(encoding="utf-8"))["best_checkpoint"])
        if best.is_file():
            return best
    from irmas_lib.models.basic import MultiBranchCNN
    from irmas_lib.training import fit_model

    import torch

    torch.manual_seed(0)
    result = fit_model(MultiBranchCNN(n_bands=3), feature_cache(data_root()), run_dir, max_epochs=epochs, seed=0)
    write_atomic(marker, json.dumps({"best_checkpoint": str(result.best_checkpoint), "epochs": epochs,
                                     "seconds": round(result.seconds, 1)}).encode("utf-8"))
    return Path(result.best_checkpoint)
