"""Comparing two sets of weights by their state-dict keys and tensor shapes, and finding NaN or infinite
weights, for error messages that name the file whose weights do not fit or cannot serve (a checkpoint of
another model or of a run that diverged, a file that is not CNN14 or is damaged).

Used by irmas_lib.training (a checkpoint against the config's network) and irmas_lib.models.pretrained (the
PANNs file against CNN14); kept apart from both so neither imports the other's module for it.

Notebook: 05_panns_two_phase.ipynb
"""
from __future__ import annotations


def weight_differences(expected: dict, found: dict) -> list[str]:
    """How the weights ``found`` (key -> shape) differ from those ``expected`` (key -> shape): up to three
    phrases, "N missing keys (e.g. ...)", "N unexpected keys (e.g. ...)", "N wrong shapes (e.g. ...)";
    empty when they match exactly. For error messages that name the checkpoint.
    """
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    wrong = [f"{key} {tuple(found[key])} instead of {tuple(shape)}" for key, shape in expected.items()
             if key in found and tuple(found[key]) != tuple(shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes (e.g. {'; '.join(wrong[:3])})")
    return problems


def non_finite_weights(weights: dict) -> str | None:
    """"N of the M values of KEY are NaN or infinite" for the first floating-point tensor that holds any,
    else None (a network with such weights answers NaN for every input)."""
    import torch

    for key, value in weights.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int(value.numel() - torch.isfinite(value).sum())
            return f"{bad:,} of the {value.numel():,} values of {key} are NaN or infinite"
    return None
