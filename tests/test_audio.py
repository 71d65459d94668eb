"""Decoding (formats, bit depths, channels, rates), block-wise reading, listing, bad files."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from helpers import chirp, noise, tone, write_audio

from maeast_embed.audio import (
    audio_extensions,
    find_audio,
    iter_audio_blocks,
    load_audio,
    probe,
    read_path_list,
    supported_formats_text,
)
from maeast_embed.errors import AudioError

SR = 16000


@pytest.mark.parametrize(
    "subtype, tolerance",
    [
        ("PCM_U8", 2 / 2**8),
        ("PCM_16", 2 / 2**16),
        ("PCM_24", 2 / 2**24),
        ("PCM_32", 1e-7),
        ("FLOAT", 0.0),
        ("DOUBLE", 1e-7),
    ],
)
def test_wav_bit_depths_decode_to_float_in_unit_range(tmp_path, subtype, tolerance):
    x = tone(0.5, amp=0.8)
    path = write_audio(tmp_path / f"x_{subtype}.wav", x, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.shape == (x.size,)
    assert float((wave - torch.from_numpy(x)).abs().max()) <= tolerance + 1e-9


def test_flac_is_lossless_and_lossy_formats_decode(tmp_path):
    x = chirp(1.0)
    flac = load_audio(write_audio(tmp_path / "x.flac", x, subtype="PCM_24"))
    assert float((flac - torch.from_numpy(x)).abs().max()) < 1e-6
    lossy = {"ogg": "VORBIS"}
    if "MP3" in sf.available_formats():
        lossy["mp3"] = "MPEG_LAYER_III"
    for ext, subtype in lossy.items():
        wave = load_audio(write_audio(tmp_path / f"x.{ext}", x, subtype=subtype))
        # codecs add delay/padding; the decoded signal must still be the chirp, scaled the same
        assert abs(wave.numel() - x.size) < 0.1 * SR
        n = min(wave.numel(), x.size)  # magnitude spectra: a comparison blind to codec delay
        corr = np.corrcoef(np.abs(np.fft.rfft(wave.numpy()[:n])), np.abs(np.fft.rfft(x[:n])))[0, 1]
        assert corr > 0.9, (ext, corr)
    assert ".flac" in audio_extensions() and ".ogg" in audio_extensions()
    assert "flac" in supported_formats_text() and sf.__libsndfile_version__ in supported_formats_text()


def test_channels_are_averaged_and_rates_resampled(tmp_path):
    left, right = tone(1.0, 300.0, sr=44100), noise(1.0, sr=44100)
    path = write_audio(tmp_path / "stereo.wav", np.stack([left, right], 1), sr=44100, subtype="FLOAT")
    wave = load_audio(path)
    mono = torch.from_numpy((left + right) / 2)
    expected = AF.resample(mono, 44100, SR)
    assert wave.shape == expected.shape == (int(np.ceil(left.size * SR / 44100)),)
    assert torch.allclose(wave, expected, atol=1e-6)
    assert probe(path).samples_16k == wave.numel() and probe(path).channels == 2
    six = write_audio(tmp_path / "six.wav", np.tile(tone(0.2)[:, None], (1, 6)), subtype="FLOAT")
    assert torch.allclose(load_audio(six), torch.from_numpy(tone(0.2)), atol=1e-6)


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (22050, 1), (8000, 3), (48000, 2)])
def test_blocks_concatenate_to_the_whole_file(tmp_path, rate, channels):
    data = np.stack([noise(2.3, sr=rate, seed=c) for c in range(channels)], 1)
    path = write_audio(tmp_path / f"b{rate}.wav", data, sr=rate, subtype="FLOAT")
    whole = load_audio(path)
    blocks = list(iter_audio_blocks(path, block_seconds=0.21))
    assert len(blocks) >= 8
    assert torch.allclose(torch.cat(blocks), whole, atol=1e-6)


def _corrupt_flac(tmp_path):
    good = write_audio(tmp_path / "good.flac", noise(1.0), subtype="PCM_16").read_bytes()
    path = tmp_path / "corrupt.flac"
    path.write_bytes(good[:200] + bytes(3000) + good[3200:])
    return path


def test_bad_files_raise_clear_audio_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(write_audio(tmp_path / "ok.wav", tone(0.5)).read_bytes()[:30])
    nan = noise(0.5)
    nan[100] = np.nan
    nan_path = write_audio(tmp_path / "nan.wav", nan, subtype="FLOAT")
    cases = {
        empty: "empty file",
        text: "not a readable audio file",
        header_only: "not a readable audio file",
        _corrupt_flac(tmp_path): "decoding failed",
        nan_path: "NaN",
        tmp_path / "missing.wav": "not found",
        tmp_path: "directory",
    }
    for path, message in cases.items():
        with pytest.raises(AudioError, match=message):
            load_audio(path)
    with pytest.raises(AudioError, match="NaN"):
        list(iter_audio_blocks(nan_path, block_seconds=0.01))


def test_unreadable_file(tmp_path):
    path = write_audio(tmp_path / "locked.wav", tone(0.5))
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(AudioError, match="permission denied"):
            load_audio(path)
        return
    # root reads anything: drop the capabilities that bypass file permissions in a child
    code = (
        "from maeast_embed.audio import load_audio\n"
        f"try:\n    load_audio({str(path)!r})\nexcept Exception as e:\n    print(type(e).__name__, e)"
    )
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", code]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    assert "AudioError permission denied" in out.stdout, out.stdout + out.stderr


def test_find_audio_and_list_files(tmp_path):
    for rel in ["b/z.wav", "a.flac", "b/c/y.ogg", ".hidden/h.wav", "b/._x.wav", "notes.txt", "b/d.npz"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio(tmp_path)]
    assert found == ["a.flac", "b/c/y.ogg", "b/z.wav"]

    (tmp_path / "list.txt").write_text("# comment\na.flac\n\n/abs/x.wav\n")
    root, entries = read_path_list(tmp_path / "list.txt")
    assert root == tmp_path and entries == ["a.flac", "/abs/x.wav"]
    (tmp_path / "list.csv").write_text('label,path\ndog,b/z.wav\ncat,"b/c/y.ogg"\n')
    assert read_path_list(tmp_path / "list.csv")[1] == ["b/z.wav", "b/c/y.ogg"]
    (tmp_path / "plain.csv").write_text("b/z.wav,3\n")
    assert read_path_list(tmp_path / "plain.csv")[1] == ["b/z.wav"]
    (tmp_path / "train.tsv").write_text(f"{tmp_path / 'b'}\nz.wav\t16000\nc/y.ogg\t8000\n")
    root, entries = read_path_list(tmp_path / "train.tsv")
    assert root == tmp_path / "b" and entries == ["z.wav", "c/y.ogg"]
