"""The fast CPU path (irmas_lib.precision) and checkpoints sized to their use (irmas_lib.checkpoint):
which path is taken, its agreement with float32, inference-only best checkpoints, references to the
pretrained CNN14 file, and the errors that name the file.

The PANNs models here are built from a small fake CNN14 file (random weights saved like the published one).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from irmas_lib import precision as precision_module
from irmas_lib.checkpoint import (SECTION, checkpoint_section, load_checkpoint, make_inference_only, read_state_dict,
                                  save_inference_checkpoint)
from irmas_lib.errors import IrmasError
from irmas_lib.features import FeatureConfig
from irmas_lib.models.basic import MultiBranchCNN
from irmas_lib.models.panns import PannsMultiBand, PannsNative
from irmas_lib.models.pretrained import build_cnn14
from irmas_lib.precision import agreement, resolve_precision
from irmas_lib.checkpoint import read_lightning_checkpoint

CONFIG = FeatureConfig(clip_seconds=1.0)


def norm_stats(config: FeatureConfig = CONFIG) -> dict:
    return {band.name: {"mean": [-50.0] * config.n_bins(band), "std": [20.0] * config.n_bins(band)}
            for band in config.bands}


def lightning_like(model: torch.nn.Module, with_optimizer: bool = True) -> dict:
    """A checkpoint dict shaped like Lightning's (state_dict under ``model.``, optimizer state, irmas section)."""
    checkpoint = {"state_dict": {f"model.{k}": v.clone() for k, v in model.state_dict().items()},
                  "epoch": 3, "global_step": 12, "loops": {},
                  SECTION: checkpoint_section(model, CONFIG, norm_stats(), pretrained=bool(model.pretrained),
                                              thresholds=np.full(11, 0.5))}
    if with_optimizer:
        checkpoint["optimizer_states"] = [{"state": {0: {"exp_avg": torch.zeros(10)}}, "param_groups": []}]
        checkpoint["lr_schedulers"] = []
    return checkpoint


@pytest.fixture(scope="module")
def cnn14_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("panns") / "Cnn14_fake.pth"
    torch.save({"iteration": 1, "model": build_cnn14().state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def pretrained_model(cnn14_file):
    torch.manual_seed(0)
    return PannsMultiBand(checkpoint=str(cnn14_file), share_backbone=True).eval()


# ------------------------------------------------------------------------------------------------
# Which path
# ------------------------------------------------------------------------------------------------

def test_the_path_follows_the_cpu_and_can_be_forced(monkeypatch):
    monkeypatch.delenv(precision_module.ENV_PRECISION, raising=False)
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    fallback = resolve_precision("auto")
    assert fallback.dtype == torch.float32 and "no native bfloat16" in fallback.describe()
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto").dtype == torch.bfloat16
    monkeypatch.setenv(precision_module.ENV_PRECISION, "float32")
    assert resolve_precision("auto").dtype == torch.float32
    assert resolve_precision("bfloat16").dtype == torch.bfloat16  # asked for by name: the variable does not apply
    assert precision_module.training_precision("float32") == "32-true"
    assert precision_module.training_precision("bfloat16") == "bf16-mixed"
    with pytest.raises(IrmasError, match="half"):
        resolve_precision("half")
    monkeypatch.setenv(precision_module.ENV_PRECISION, "fp8")
    with pytest.raises(IrmasError, match="IRMAS_PRECISION"):
        resolve_precision("auto")


def test_agreement_counts_probability_differences_and_decisions():
    reference = np.full((10, 11), 0.2)
    fast = reference.copy()
    fast[0, 0] = 0.61  # one decision flips at 0.6 (and the probability moves by 0.41)
    result = agreement(reference, fast, thresholds=0.6)
    assert result["pairs"] == 110 and result["same_decisions"] == pytest.approx(109 / 110)
    assert result["max_difference"] == pytest.approx(0.41) and not result["agrees"]
    assert agreement(reference, reference + 0.01)["agrees"]
    with pytest.raises(ValueError):
        agreement(reference, reference[:5])


def test_the_native_front_end_stays_float32_under_bfloat16_autocast():
    model = PannsNative(load_weights=False).eval()
    waveform = 0.1 * torch.randn(2, 22050, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model.front_end(waveform)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model.front_end(waveform)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain)


@pytest.mark.parametrize("kind", ["basic", "panns"])
def test_the_bfloat16_path_agrees_with_float32(kind, tmp_path):
    """The fast path of the one prediction path (LoadedModel.predict_proba) against its float32 path."""
    torch.manual_seed(0)
    model = (MultiBranchCNN(channels=(8, 16), embedding_dim=32) if kind == "basic"
             else PannsMultiBand(share_backbone=True, load_weights=False)).eval()
    path = tmp_path / "model.ckpt"
    torch.save(lightning_like(model, with_optimizer=False), path)
    loaded = load_checkpoint(path, precision="float32")
    waveforms = 0.1 * torch.randn(6, CONFIG.clip_samples, generator=torch.Generator().manual_seed(1))
    reference = loaded.predict_proba(waveforms).numpy()
    assert loaded.use_precision("bfloat16").describe().startswith("bfloat16 autocast + channels_last")
    fast = loaded.predict_proba(waveforms)
    assert fast.dtype == torch.float32
    assert agreement(reference, fast.numpy(), thresholds=0.5)["max_difference"] <= 0.02


# ------------------------------------------------------------------------------------------------
# Checkpoints sized to their use
# ------------------------------------------------------------------------------------------------

def test_a_never_trained_pretrained_backbone_is_referenced_not_copied(pretrained_model, cnn14_file, tmp_path):
    checkpoint = make_inference_only(lightning_like(pretrained_model), pretrained_model)
    section = checkpoint[SECTION]
    assert "optimizer_states" not in checkpoint and "lr_schedulers" not in checkpoint
    assert section["inference_only"] and section["weights_dtype"] == "int8"  # 80 M parameters: 8-bit weights
    reference = section["pretrained_reference"]
    assert reference["file"] == str(cnn14_file.resolve()) and len(reference["md5"]) == 32
    assert not any(key.startswith("model.backbone.") for key in checkpoint["state_dict"])  # not copied
    assert checkpoint["state_dict"]["model.head.fusion.1.weight"].dtype == torch.int8  # 512 × 6,144: over 1 M
    assert section["int8_scales"]["model.head.fusion.1.weight"].shape == (512,)       # one scale per output
    assert checkpoint["state_dict"]["model.head.fusion.1.bias"].dtype == torch.float32

    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    assert path.stat().st_size < 4e6  # the head only (3 × 2048 × 512 int8 ≈ 3 MB)
    state = read_state_dict(path)  # the full float32 state dict again
    original = pretrained_model.state_dict()
    assert set(state) == {f"model.{k}" for k in original}
    assert all(v.dtype == original[k[len("model."):]].dtype for k, v in state.items())
    torch.testing.assert_close(state["model.backbone.conv_block3.conv2.weight"],
                               original["backbone.conv_block3.conv2.weight"], rtol=0, atol=0)
    loaded = load_checkpoint(path, precision="float32")
    bands = [torch.randn(2, n, 40, generator=torch.Generator().manual_seed(2)) for n in (47, 69, 81)]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(bands)["logits"], pretrained_model(bands)["logits"],
                                   rtol=0, atol=1e-2)  # int8 head


@pytest.mark.parametrize("weights", ["int8", "float16"])
def test_non_finite_too_large_or_empty_kernels_stay_float32(weights):
    """A kernel with a NaN or an infinity (int8's scale and float16 would lose it) or beyond float16's
    range (a small one, which int8 would leave to float16) keeps its float32 values, and so does an empty
    one; the finite kernel beside them is converted."""
    finite = torch.randn(1000, 1001, generator=torch.Generator().manual_seed(4))   # over INT8_MIN_ELEMENTS
    with_nan, with_inf, with_minus_inf = finite.clone(), finite.clone(), finite.clone()
    with_nan[3, 5], with_inf[999, 0], with_minus_inf[0, 1000] = float("nan"), float("inf"), -float("inf")
    large = torch.full((4, 3), 70000.0)
    kernels = {"finite": finite, "nan": with_nan, "inf": with_inf, "minus_inf": with_minus_inf,
               "large": large, "empty": torch.zeros(0, 5)}
    checkpoint = {"state_dict": {f"model.{k}": v.clone() for k, v in kernels.items()}, SECTION: {}}
    make_inference_only(checkpoint, torch.nn.Linear(2, 2), weights=weights)
    state, scales = checkpoint["state_dict"], checkpoint[SECTION]["int8_scales"]
    assert state["model.finite"].dtype == (torch.int8 if weights == "int8" else torch.float16)
    assert set(scales) == ({"model.finite"} if weights == "int8" else set())
    for key in ("nan", "inf", "minus_inf", "large", "empty"):
        assert state[f"model.{key}"].dtype == torch.float32, key
        torch.testing.assert_close(state[f"model.{key}"], kernels[key], rtol=0, atol=0, equal_nan=True)


def test_int8_weights_move_each_weight_by_at_most_half_a_step_and_read_back_once(tmp_path):
    from irmas_lib.checkpoint import INT8_MIN_ELEMENTS, restore_weights

    large = torch.randn(400, 40, 9, 9, generator=torch.Generator().manual_seed(3))  # 1,296,000 values
    large[7] = 0.0                                                                 # a channel of zeros
    small = torch.randn(64, 32, 3, 3)
    assert large.numel() >= INT8_MIN_ELEMENTS > small.numel()
    bias = torch.randn(400)
    checkpoint = {"state_dict": {"model.conv.weight": large.clone(), "model.conv.bias": bias.clone(),
                                 "model.small.weight": small.clone()}, SECTION: {}}
    model = torch.nn.Linear(5000, 2100)  # over 10 M parameters: "auto" chooses int8
    make_inference_only(checkpoint, model)
    state, section = checkpoint["state_dict"], checkpoint[SECTION]
    assert section["weights_dtype"] == "int8"
    assert state["model.conv.weight"].dtype == torch.int8 and int(state["model.conv.weight"].abs().max()) == 127
    assert state["model.small.weight"].dtype == torch.float16 and state["model.conv.bias"].dtype == torch.float32

    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    restored = read_state_dict(path)
    step = large.reshape(400, -1).abs().amax(dim=1) / 127                          # (400,) one step per channel
    error = (restored["model.conv.weight"] - large).reshape(400, -1).abs().amax(dim=1)
    assert restored["model.conv.weight"].dtype == torch.float32
    assert bool((error <= step / 2 * 1.0001 + 1e-12).all()) and float(restored["model.conv.weight"][7].abs().max()) == 0
    torch.testing.assert_close(restored["model.conv.bias"], bias, rtol=0, atol=0)

    again = torch.load(path, weights_only=True)
    once = {k: v.clone() for k, v in restore_weights(again, path).items()}
    twice = restore_weights(again, path)  # the scales were used up: nothing is scaled a second time
    torch.testing.assert_close(twice["model.conv.weight"], once["model.conv.weight"], rtol=0, atol=0)


def test_int8_scales_that_do_not_fit_their_weights_are_an_error_naming_the_file(tmp_path):
    model = torch.nn.Linear(5000, 2100)
    checkpoint = make_inference_only({"state_dict": {"model.weight": model.weight.detach().clone()}, SECTION: {}},
                                     model)
    checkpoint[SECTION]["int8_scales"]["model.weight"] = torch.ones(7)  # 7 scales for 2,100 rows
    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(IrmasError, match=r"best\.ckpt.*int8 scales for 'model\.weight'"):
        read_state_dict(path)


def test_float16_weights_remain_a_choice(pretrained_model):
    checkpoint = make_inference_only(lightning_like(pretrained_model), pretrained_model, weights="float16")
    assert checkpoint[SECTION]["weights_dtype"] == "float16" and not checkpoint[SECTION]["int8_scales"]
    assert checkpoint["state_dict"]["model.head.fusion.1.weight"].dtype == torch.float16


def test_a_trained_weight_is_stored_and_the_rest_still_referenced(pretrained_model):
    checkpoint = lightning_like(pretrained_model)
    checkpoint["state_dict"]["model.backbone.conv_block6.conv2.weight"] += 1e-3  # phase 2 changed it
    make_inference_only(checkpoint, pretrained_model, weights="float32")
    state = checkpoint["state_dict"]
    assert state["model.backbone.conv_block6.conv2.weight"].dtype == torch.float32
    assert "model.backbone.conv_block1.conv1.weight" not in state
    assert "model.backbone.conv_block6.conv2.weight" not in checkpoint[SECTION]["pretrained_reference"]["keys"]


def test_a_fully_trained_backbone_makes_a_self_contained_checkpoint(pretrained_model):
    """Phase 2 changed every backbone weight: nothing worth referencing is left (buffers such as the
    batch-norm step counters may still equal the file, but they are far below MIN_REFERENCED_BYTES)."""
    checkpoint = lightning_like(pretrained_model)
    for key, value in checkpoint["state_dict"].items():
        if key.startswith("model.backbone.") and value.is_floating_point():
            value += 1e-3
    make_inference_only(checkpoint, pretrained_model)
    assert checkpoint[SECTION]["pretrained_reference"] is None
    assert "model.backbone.conv_block1.conv1.weight" in checkpoint["state_dict"]


def test_the_native_front_end_is_never_referenced(cnn14_file):
    """Its STFT and mel matrices never train and are rebuilt by the constructor: a trained native model's
    checkpoint must not depend on the CNN14 file for them."""
    native = PannsNative(checkpoint=str(cnn14_file))
    keys = native.cnn14_file_keys()
    assert keys and all(key.startswith("backbone.") for key in keys)


def test_random_initial_weights_are_stored(tmp_path):
    model = PannsMultiBand(share_backbone=True, load_weights=False)
    checkpoint = make_inference_only(lightning_like(model), model)
    assert checkpoint[SECTION]["pretrained_reference"] is None
    assert "model.backbone.conv_block1.conv1.weight" in checkpoint["state_dict"]


def test_a_missing_or_different_pretrained_file_is_an_error_naming_both(pretrained_model, cnn14_file, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("PANNS_CHECKPOINT", str(tmp_path / "nowhere.pth"))
    checkpoint = make_inference_only(lightning_like(pretrained_model), pretrained_model)
    checkpoint[SECTION]["pretrained_reference"]["file"] = str(tmp_path / "moved.pth")
    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(IrmasError, match=r"best\.ckpt.*moved\.pth.*download-panns"):
        load_checkpoint(path)
    (tmp_path / "moved.pth").write_bytes(b"another file")
    with pytest.raises(IrmasError, match=r"best\.ckpt.*moved\.pth"):
        read_state_dict(path)
    monkeypatch.setenv("PANNS_CHECKPOINT", str(cnn14_file))  # found again where the variable says
    assert load_checkpoint(path, precision="float32").pretrained


def test_an_inference_only_checkpoint_refuses_to_resume_naming_the_file(tmp_path):
    model = MultiBranchCNN(channels=(8, 16), embedding_dim=32)
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    torch.save(make_inference_only(lightning_like(model), model), best)
    torch.save(lightning_like(model), last)
    with pytest.raises(IrmasError, match=rf"{best}.*inference-only.*resume from {last}"):
        read_lightning_checkpoint(best, resume=True)
    assert read_lightning_checkpoint(best)["shapes"]  # fine for validation or inference
    assert read_lightning_checkpoint(last, resume=True)["epoch"] == 3


def test_save_inference_checkpoint_converts_a_last_checkpoint(pretrained_model, tmp_path):
    last = tmp_path / "last.ckpt"
    torch.save(lightning_like(pretrained_model), last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = save_inference_checkpoint(last, tmp_path / "small.ckpt")
    assert small.stat().st_size < last.stat().st_size / 10
    assert torch.load(small, weights_only=True)[SECTION]["pretrained_reference"] is not None


def test_the_command_line_offers_exactly_the_library_s_precisions():
    """cli.py keeps its own copy (importing torch would slow every command's start): they must agree."""
    from irmas_lib import cli

    assert cli.PRECISIONS == precision_module.PRECISIONS
