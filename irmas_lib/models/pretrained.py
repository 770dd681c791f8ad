"""CNN14's AudioSet weights: finding the file, reading it safely, checking it, and building CNN14 from it.

The architecture is ``Cnn14`` from panns_inference's ``models.py`` with the AudioSet settings
(``CNN14_AUDIOSET``), the weights are ``Cnn14_mAP=0.431.pth`` (``irmas download-panns``). Nothing here
touches the network: ``panns_models_module`` loads ``models.py`` without running the package's
``__init__`` (which would ``wget`` the AudioSet label list). Where the checkpoint is looked for:
``resolve_checkpoint``; how it is read (``weights_only``, a numpy allow-list, a full unpickle only for the
published md5): ``read_cnn14_state_dict``; what happens without it (an error saying how to get it, or
with ``allow_random_init`` a banner that cannot be missed): ``load_cnn14``. The models built on CNN14:
irmas_lib.models.panns.

Notebook: 05_panns_two_phase.ipynb
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irmas_lib.download import (AUDIOSET_LABELS_FILE, PANNS_CHECKPOINT, ZENODO_PANNS_URL, archive_url,
                                audioset_label_names, cached_md5)
from irmas_lib.errors import IrmasError
from irmas_lib.state_dicts import non_finite_weights, weight_differences

# Cnn14(sample_rate, window_size, hop_size, mel_bins, fmin, fmax, classes_num) has no defaults; these
# are the settings the AudioSet checkpoint was trained with.
CNN14_AUDIOSET = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                      classes_num=527)
CHECKPOINT_ENV = "PANNS_CHECKPOINT"  # environment variable naming a checkpoint file

_PRIVATE_PACKAGE = "_irmas_panns_inference"


class RandomInitWarning(UserWarning):
    """CNN14 goes on with random weights (``allow_random_init=True`` and no checkpoint)."""


class OtherWeightsWarning(UserWarning):
    """CNN14's weights come from a file that is not the published AudioSet one (another md5)."""


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
        if cached_md5(path) == PANNS_CHECKPOINT.md5:
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


def _warn_other_weights(path: Path, md5: str) -> None:
    """A CNN14-shaped file that is not the published one (another training, a damaged copy): said loudly,
    since every result then comes from weights nobody published."""
    print("\n".join([
        "!!  " + f"{path}: md5 {md5}, not the published AudioSet CNN14's {PANNS_CHECKPOINT.md5}.",
        "!!  Its weights have CNN14's shapes and are used, but they are not the AudioSet-pretrained ones this",
        "!!  course describes (a damaged copy, or another training): get those with  irmas download-panns",
    ]), file=sys.stderr, flush=True)
    warnings.warn(f"{path}: not the published CNN14 weights (md5 {md5})", OtherWeightsWarning, stacklevel=3)


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
        get one), an unreadable or truncated file, no ``'model'`` key, wrong keys or shapes, NaN or
        infinite weights. A CNN14-shaped file whose md5 is not the published one's is used, with a
        banner on stderr and an ``OtherWeightsWarning``.

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
    if (md5 := cached_md5(path)) != PANNS_CHECKPOINT.md5:   # the published file is known to be finite
        if (bad := non_finite_weights(state_dict)) is not None:
            raise IrmasError(f"{path}: {bad}: not usable CNN14 weights (a damaged copy?); delete it and run "
                             "`irmas download-panns`")
        _warn_other_weights(path, md5)
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
