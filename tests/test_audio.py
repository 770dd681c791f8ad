import numpy as np
import pytest
import soundfile as sf

from irmas_lib.audio import AudioError, fit_length, read_audio


def _tone(rate, seconds, channels=2, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave * (0.5 + 0.5 * c) for c in range(channels)], axis=1)


def test_stereo_44k_becomes_mono_22k(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, _tone(44100, 3.0), 44100, subtype="PCM_16")
    audio = read_audio(path, sample_rate=22050)
    assert audio.shape == (1, 66150) and audio.dtype == np.float32
    # the mono mix is the mean of the channels: amplitudes 0.25 and 0.5 -> 0.375
    assert abs(np.abs(audio).max() - 0.375) < 0.01


@pytest.mark.parametrize("rate,subtype,channels", [(48000, "PCM_16", 1), (44100, "PCM_U8", 2), (8000, "PCM_24", 1)])
def test_odd_but_valid_audio_is_converted(tmp_path, rate, subtype, channels):
    path = tmp_path / "odd.wav"
    sf.write(path, _tone(rate, 1.0, channels), rate, subtype=subtype)
    audio = read_audio(path, sample_rate=22050, mono=False)
    assert audio.shape == (channels, 22050)


def test_corrupt_and_empty_files_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(AudioError, match="corrupt.wav"):
        read_audio(corrupt)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 2)), 44100, subtype="PCM_16")
    with pytest.raises(AudioError, match="empty.wav: zero-length"):
        read_audio(empty)
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        read_audio(tmp_path / "missing.wav")
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero.wav: empty file \(0 bytes\)"):
        read_audio(zero_bytes)
    with pytest.raises(AudioError) as raised:
        read_audio(corrupt)
    assert str(raised.value).count(str(corrupt)) == 1, str(raised.value)  # named once, not again by libsndfile
    folder = tmp_path / "songs.wav"                     # `irmas predict CKPT .` said "cannot decode audio"
    folder.mkdir()
    with pytest.raises(AudioError, match=r"songs.wav: a folder, not an audio file \(name its files, e.g. .*\*.wav\)"):
        read_audio(folder)


def test_fit_length_crops_and_pads():
    audio = np.ones((1, 10), dtype=np.float32)
    assert fit_length(audio, 4).shape == (1, 4)
    padded = fit_length(audio, 12)
    assert padded.shape == (1, 12) and padded[0, -1] == 0 and padded[0, 9] == 1


def test_long_files_are_read_block_by_block_with_the_same_values(tmp_path, monkeypatch):
    """Read in blocks (so a long stereo file never exists whole as float32 stereo): the values are those of
    reading it at once, mixed to mono or not, across block boundaries."""
    from irmas_lib import audio

    stereo = (0.2 * np.random.default_rng(0).standard_normal((50_000, 2))).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 4096)  # 13 blocks
    np.testing.assert_array_equal(read_audio(path, mono=False), stereo.T)
    np.testing.assert_array_equal(read_audio(path)[0], (stereo[:, 0] + stereo[:, 1]) / 2)


def test_nan_or_infinite_samples_are_refused_naming_the_file(tmp_path, monkeypatch):
    from irmas_lib import audio

    data = np.zeros((20_000, 2), dtype=np.float32)
    data[12_000, 1] = np.nan
    data[15_000:15_002, 0] = -np.inf
    path = tmp_path / "corrupt.wav"
    sf.write(path, data, 10_000, subtype="FLOAT")
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 4096)
    with pytest.raises(AudioError, match=r"corrupt\.wav: 3 of 40,000 samples are NaN or infinite \(the first at 1\.200 s\)"):
        read_audio(path)
    pcm = tmp_path / "pcm.wav"  # integer files cannot hold NaN: never refused for it
    sf.write(pcm, np.nan_to_num(data, posinf=1, neginf=-1), 10_000, subtype="PCM_16")
    assert read_audio(pcm).shape == (1, 20_000)


def test_a_wav_cut_short_is_refused_naming_the_file_and_a_streamed_one_is_read(tmp_path):
    """A WAV with fewer bytes than its data chunk announces (a copy or download cut short) is an error,
    from read_audio and audio_info alike; libsndfile alone would read the third that is there. A WAV whose
    writer streamed it and left the sizes open (0xFFFFFFFF) is valid and read whole."""
    import struct

    from irmas_lib.audio import audio_info

    full = tmp_path / "full.wav"
    sf.write(full, (np.arange(44100 * 3) % 200 - 100).astype(np.int16), 44100, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:len(data) // 3])
    for read in (read_audio, audio_info):
        with pytest.raises(AudioError, match=r"cut\.wav: truncated: 88,\d+ bytes, its header announces 264,644"):
            read(cut)
    position = data.index(b"data")
    for placeholder in (0xFFFFFFFF, 0x80000000, 0x7FFFF000):        # sizes streaming writers leave
        streamed = tmp_path / f"streamed_{placeholder:x}.wav"
        streamed.write_bytes(data[:4] + struct.pack("<I", placeholder) + data[8:position + 4]
                             + struct.pack("<I", placeholder) + data[position + 8:])
        np.testing.assert_array_equal(read_audio(streamed), read_audio(full))
        assert audio_info(streamed).samplerate == 44100
    padded = tmp_path / "pad_byte_counted.wav"                       # one byte short: nothing lost
    padded.write_bytes(data[:position + 4] + struct.pack("<I", len(data) - position - 8 + 1) + data[position + 8:])
    np.testing.assert_array_equal(read_audio(padded), read_audio(full))


def test_a_wav_read_from_a_pipe_is_read_once(tmp_path):
    """A named pipe (mkfifo) can be read only once: the size check leaves it alone instead of opening it a
    second time and waiting for a writer that never comes."""
    import os
    import threading

    full = tmp_path / "full.wav"
    sf.write(full, np.linspace(-0.5, 0.5, 22050, dtype=np.float32), 22050)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(full.read_bytes()), daemon=True)
    writer.start()
    got = []
    reader = threading.Thread(target=lambda: got.append(read_audio(fifo)), daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive(), "read_audio waited on the pipe"
    np.testing.assert_array_equal(got[0], read_audio(full))


def test_a_file_name_in_another_encoding_is_read(tmp_path):
    """A name whose bytes are not UTF-8 (Latin-1's e-acute; Python holds it as a lone surrogate) opens
    like any other: soundfile is given the bytes of the path, not a str it would encode as UTF-8."""
    import os

    from irmas_lib.audio import audio_info

    plain = tmp_path / "plain.wav"
    sf.write(plain, np.linspace(-0.5, 0.5, 22050, dtype=np.float32), 22050)
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/Beyonc\xe9.wav")
    try:
        os.link(plain, odd)
    except OSError:
        pytest.skip("this file system takes only UTF-8 names (macOS)")
    np.testing.assert_array_equal(read_audio(odd), read_audio(plain))
    assert audio_info(odd).frames == 22050


def test_errors_print_a_name_in_another_encoding_readably(tmp_path):
    """An AudioError's message names the file with its non-UTF-8 bytes shown as \\xe9, so that it prints and
    encodes anywhere (a lone surrogate cannot be written as UTF-8)."""
    import os

    odd = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.wav")
    try:
        with open(odd, "wb") as f:
            f.write(b"RIFF not really audio")
    except OSError:
        pytest.skip("this file system takes only UTF-8 names (macOS)")
    with pytest.raises(AudioError) as caught:
        read_audio(odd)
    assert str(caught.value).startswith(f"{tmp_path}/caf\\xe9.wav: cannot decode audio")
    str(caught.value).encode("utf-8")                               # no lone surrogate left
