import numpy as np
import pytest
import torch

from irmas_lib.errors import IrmasError
from irmas_lib.features import FeatureConfig
from irmas_lib.models.basic import BandBranch, MultiBranchCNN, log_frequency_matrix, region_average_matrix

BINS = (47, 69, 81)  # the default bands' bin counts (irmas_lib.features)


def _bands(batch=4, frames=259, bins=BINS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, frames, generator=generator) for n in bins]


def test_output_shapes_and_attributes():
    model = MultiBranchCNN()
    out = model(_bands())
    assert out["logits"].shape == (4, 11)
    assert out["embedding"].shape == (4, 128)
    assert model.input_kind == "bands" and model.pretrained is False
    assert model.init_args == dict(n_bands=3, channels=[16, 32, 64], freq_regions=4, embedding_dim=128,
                                   dropout=0.1, n_classes=11, rows_per_octave=12.0,
                                   features=FeatureConfig().to_dict())
    assert [tuple(branch.log_matrix.shape) for branch in model.branches] == [(47, 56), (69, 24), (81, 18)]
    # init_args rebuild the same architecture: the state dict loads strictly
    MultiBranchCNN(**model.init_args).load_state_dict(model.state_dict())


@pytest.mark.parametrize("bins,frames", [((10, 5, 3), 259), ((47, 69, 81), 40), ((200, 2, 1), 7)])
def test_any_bin_count_and_clip_length(bins, frames):
    model = MultiBranchCNN(channels=(4, 8), embedding_dim=16, rows_per_octave=None).eval()
    assert model(_bands(2, frames, bins))["logits"].shape == (2, 11)


def test_branch_shapes():
    branch = BandBranch((16, 32, 64), freq_regions=4)
    x = torch.randn(3, 47, 259)
    # first block: time stride 2 (259 -> 130 frames) then 2x2 pool -> (3, 16, 24, 65); then (12, 33), (6, 17)
    assert branch.blocks[0](x.unsqueeze(1)).shape == (3, 16, 24, 65)
    assert branch.blocks(x.unsqueeze(1)).shape == (3, 64, 6, 17)
    assert branch(x).shape == (3, 64 * 4) and branch.out_features == 256


def test_log_frequency_rows_move_by_twelve_per_octave():
    """On 12 rows per octave a tone an octave higher lights the row 12 further up, whatever its octave
    (on linear bins the same move is 2x as many bins each octave)."""
    hz = np.arange(0, 513) * 22050 / 1024                        # the low band's STFT bins, up to 11 kHz
    matrix = log_frequency_matrix(hz, 0.0, 11025.0, 12)          # (513, n_rows)
    assert torch.allclose(matrix.sum(dim=0), torch.ones(matrix.shape[1]))
    peaks = []
    for tone_hz in (440.0, 880.0, 1760.0):
        spectrum = torch.tensor(np.exp(-0.5 * ((hz - tone_hz) / 10.0) ** 2), dtype=torch.float32)
        peaks.append(int((spectrum @ matrix).argmax()))
    assert peaks[1] - peaks[0] == 12 and peaks[2] - peaks[1] == 12


def test_log_rows_refuse_a_band_of_another_size():
    model = MultiBranchCNN()
    with pytest.raises(IrmasError, match="built for 47 bins, the band has 10"):
        model(_bands(bins=(10, 69, 81)))
    other = {"bands": [{"name": "low", "low_hz": 0, "high_hz": 2000, "n_fft": 1024},
                       {"name": "high", "low_hz": 2000, "high_hz": 11025, "n_fft": 256}]}
    with pytest.raises(IrmasError, match="n_bands=3 but the features have 2 bands"):
        MultiBranchCNN(features=other)
    two = MultiBranchCNN(n_bands=2, features=other)
    assert two.init_args["features"]["bands"][0]["high_hz"] == 2000.0
    MultiBranchCNN(**two.init_args).load_state_dict(two.state_dict())


def test_region_average_matrix_is_adaptive_average_pooling():
    # 6 rows into 4 regions: rows 0-1, 1-2, 3-4, 4-5
    expected = torch.tensor([[.5, 0, 0, 0], [.5, .5, 0, 0], [0, .5, 0, 0],
                             [0, 0, .5, 0], [0, 0, .5, .5], [0, 0, 0, .5]])
    torch.testing.assert_close(region_average_matrix(6, 4), expected)
    x = torch.randn(2, 5, 11)
    for n_regions in (1, 3, 4, 11, 13):
        torch.testing.assert_close(x @ region_average_matrix(11, n_regions),
                                   torch.nn.functional.adaptive_avg_pool1d(x, n_regions))


def test_frequency_regions_tell_where_a_feature_is():
    """With one region a branch cannot tell a pattern low in its band from the same pattern high up;
    with four it can."""
    torch.manual_seed(0)
    # the same 4-row pattern, shifted by 20 rows (a multiple of the two blocks' pooling, 4), away from the edges
    low, high = torch.zeros(1, 40, 40), torch.zeros(1, 40, 40)
    low[0, 8:12], high[0, 28:32] = 3.0, 3.0
    for n_regions, different in ((1, False), (4, True)):
        branch = BandBranch((4, 8), freq_regions=n_regions).eval()
        with torch.no_grad():
            assert (not torch.allclose(branch(low), branch(high), atol=1e-5)) == different


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = MultiBranchCNN()
    logits = model(_bands(batch=3))["logits"]
    targets = torch.zeros(3, 11)
    targets[0, 2] = targets[1, 5] = targets[2, 10] = 1
    torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("rows_per_octave", [12.0, None])
def test_convolutions_run_channels_last_and_agree_with_the_default_layout(monkeypatch, rows_per_octave):
    """The branches hand their blocks channels-last maps (the faster layout on CPU; checked on the second
    block, whose 16 channels make the layouts differ), with log-frequency rows and with linear bins (a
    contiguous band); outputs and gradients are those of PyTorch's default layout, to float rounding."""
    seen = []
    torch.manual_seed(0)
    model = MultiBranchCNN(rows_per_octave=rows_per_octave)
    model.branches[1].blocks[1].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    bands, targets = _bands(batch=3), torch.eye(11)[[2, 5, 10]]

    def logits_and_grads():  # a training step's: batch statistics, the same dropout masks
        model.zero_grad()
        torch.manual_seed(1)
        logits = model(bands)["logits"]
        torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    fast = logits_and_grads()
    assert seen[-1].is_contiguous(memory_format=torch.channels_last) and not seen[-1].is_contiguous()
    monkeypatch.setattr(BandBranch, "memory_format", torch.contiguous_format)
    default = logits_and_grads()
    assert seen[-1].is_contiguous()
    torch.testing.assert_close(fast[0], default[0], rtol=1e-5, atol=1e-6)
    for fast_grad, default_grad in zip(fast[1], default[1]):
        torch.testing.assert_close(fast_grad, default_grad, rtol=1e-4, atol=1e-6)


def test_eval_mode_is_deterministic_and_batch_independent():
    model = MultiBranchCNN().eval()
    bands = _bands(batch=4)
    with torch.no_grad():
        together = model(bands)["logits"]
        alone = model([b[1:2] for b in bands])["logits"]
    torch.testing.assert_close(alone[0], together[1], rtol=1e-4, atol=1e-5)


def test_wrong_number_of_bands_is_refused():
    with pytest.raises(ValueError, match="expected 3 band spectrograms, got 2"):
        MultiBranchCNN()(_bands()[:2])


def test_overfits_a_tiny_batch():
    """Learning works end to end: 8 clips whose class is a loud band in one spectrogram are memorised."""
    torch.manual_seed(0)
    bands = _bands(batch=8, frames=32, bins=(16, 16, 16))
    targets = torch.zeros(8, 11)
    for k in range(8):
        targets[k, k] = 1
        bands[k % 3][k, 5 * (k // 3): 5 * (k // 3) + 4] += 3.0
    model = MultiBranchCNN(channels=(4, 8), embedding_dim=32, dropout=0.0, rows_per_octave=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(bands)["logits"], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
