"""Reading the course's YAML config: one file holds the ``features`` section (shared by ``irmas
preprocess`` and ``irmas train``) beside LightningCLI's sections (``trainer``, ``model``, ``data``, ...).

This module reads ``features`` and checks that every other top-level key is one `irmas train` knows;
LightningCLI checks what is inside its own sections.

    features:
      sample_rate: 22050
      hop_length: 256
      clip_seconds: 3.0
      bands:
        - {name: low,  low_hz: 0,    high_hz: 1000,  n_fft: 1024}
        - {name: mid,  low_hz: 1000, high_hz: 4000,  n_fft: 512}
        - {name: high, low_hz: 4000, high_hz: 11025, n_fft: 256}
    trainer: {...}

Notebook: 02_multiband_spectrograms.ipynb
"""
from __future__ import annotations

from pathlib import Path

from irmas_lib.errors import IrmasError
from irmas_lib.features import FeatureConfig

# The top-level keys `irmas train` understands (LightningCLI's own plus the course's, see
# irmas_lib.training; `irmas train --print_config` lists them). `irmas preprocess` rejects any other,
# so a misspelt `featurs:` is not silently replaced by the default features.
TOP_LEVEL_KEYS = ("features", "seed_everything", "trainer", "model", "data", "checkpoint", "early_stopping",
                  "quiet", "ckpt_path", "weights_only")


def load_yaml_config(path: str | Path) -> dict:
    """Read a YAML config file into a dict of sections.

    Raises:
        IrmasError: the file is missing, unreadable, not YAML, or not a mapping; the message names it.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise IrmasError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise IrmasError(f"{path}: cannot read config ({error})") from None
    except yaml.YAMLError as error:
        raise IrmasError(f"{path}: not valid YAML ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IrmasError(f"{path}: expected a mapping of sections (features, trainer, model, data, ...),"
                         f" got {type(data).__name__}")
    return data


def load_feature_config(path: str | Path | None = None) -> FeatureConfig:
    """The ``features`` section of a YAML config as a validated :class:`~irmas_lib.features.FeatureConfig`.

    Args:
        path: the YAML file; ``None`` (or a file without a ``features`` section) gives the defaults
            (22,050 Hz, hop 256, 3-s clips, bands low 0-1,000 Hz/1,024, mid 1,000-4,000 Hz/512,
            high 4,000-11,025 Hz/256). The other sections are `irmas train`'s: only their names are checked.

    Raises:
        IrmasError: a missing file, an unknown top-level key, or an unknown key or impossible value in
            ``features``; the message names the file and the key, e.g.
            ``configs/x.yaml: features.bands[1].n_ftt: unknown key``.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    if path is None:
        return FeatureConfig()
    sections = load_yaml_config(path)
    unknown = [key for key in sections if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise IrmasError(f"{path}: {unknown[0]}: unknown top-level key (known: {', '.join(TOP_LEVEL_KEYS)})")
    section = sections.get("features")
    try:
        return FeatureConfig.from_dict(section)
    except IrmasError as error:
        raise IrmasError(f"{path}: {error}") from None
