"""Decoding (formats, containers, bit depths, channels, rates), blocks, windows, listing, bad files."""

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import chirp, noise, tone, write_audio
from media import encode

from maeast_embed.audio import (
    audio_extensions,
    find_audio,
    iter_audio_blocks,
    load_audio,
    open_decoder,
    probe,
    read_path_list,
    read_window,
    resample,
    resampled_length,
    scan_folder,
    supported_formats_text,
)
from maeast_embed.audio.decoders import PyAVDecoder, SndfileDecoder
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
    expected = resample(mono, 44100)  # equal to torchaudio's: see below
    assert wave.shape == expected.shape == (int(np.ceil(left.size * SR / 44100)),)
    assert torch.allclose(wave, expected, atol=1e-6)
    assert probe(path).samples_16k == wave.numel() and probe(path).channels == 2
    six = write_audio(tmp_path / "six.wav", np.tile(tone(0.2)[:, None], (1, 6)), subtype="FLOAT")
    assert torch.allclose(load_audio(six), torch.from_numpy(tone(0.2)), atol=1e-6)


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000, 32000, 11025, 24000, 96000, 37800, 12345])
def test_resampling_equals_torchaudio(rate):
    AF = pytest.importorskip("torchaudio.functional", reason="torchaudio is the reference here")
    gen = torch.Generator().manual_seed(rate)
    shapes = [(2 * rate + 13,), (3, rate + 7), (2, 2, 501), (1,)]  # mono, batched, tiny
    for wave in (0.5 * torch.randn(*shape, generator=gen) for shape in shapes):
        ours, ref = resample(wave, rate), AF.resample(wave, rate, SR)
        assert ours.shape == ref.shape == (*wave.shape[:-1], resampled_length(wave.shape[-1], rate))
        assert float((ours - ref).abs().max()) <= 1e-6, (rate, tuple(wave.shape))


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000, 44099])
def test_resampling_keeps_the_passband_and_removes_aliases(rate):
    """A 1 kHz sine comes out as the same sine; at rates above 16 kHz a 10.5 kHz one (above the new
    Nyquist) is filtered out (-40 dB) instead of folding to 5.5 kHz. Batch rows are resampled alone."""
    t = torch.arange(rate, dtype=torch.float64) / rate
    waves = torch.stack([torch.sin(2 * torch.pi * 1000 * t), torch.sin(2 * torch.pi * 10500 * t)]).float()
    out = resample(waves, rate)
    assert out.shape == (2, SR) and out.dtype == torch.float32
    inner = slice(SR // 10, -SR // 10)  # away from the zero-padded edges
    expected = torch.sin(2 * torch.pi * 1000 * torch.arange(SR, dtype=torch.float64) / SR).float()
    assert float((out[0, inner] - expected[inner]).abs().max()) < 2e-3
    if rate > SR:
        assert float(out[1, inner].abs().max()) < 1e-2
    assert torch.allclose(resample(waves[1], rate), out[1], atol=1e-6)
    assert resample(waves[:, :0], rate).shape == (2, 0)


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


# ---------------------------------------------------------------- FFmpeg containers (PyAV)
def _mix(seconds: float, rate: int, channels: int) -> np.ndarray:
    """A chirp plus noise per channel (different levels), [frames, channels] float32."""
    base = np.interp(np.arange(int(seconds * rate)) / rate, np.arange(int(seconds * SR)) / SR, chirp(seconds))
    rng = np.random.default_rng(channels)
    cols = [(0.5 + 0.5 * c / max(1, channels - 1)) * base + 0.01 * rng.standard_normal(base.size)
            for c in range(channels)]
    return np.stack(cols, 1).astype(np.float32)


def _spectral_match(wave: torch.Tensor, reference: np.ndarray) -> float:
    n = min(wave.numel(), reference.size)  # magnitude spectra: blind to codec delay
    return float(np.corrcoef(np.abs(np.fft.rfft(wave.numpy()[:n])), np.abs(np.fft.rfft(reference[:n])))[0, 1])


@pytest.mark.parametrize(
    "name, codec, rate, channels, container",
    [
        ("aac.m4a", "aac", 44100, 2, None),
        ("alac.m4a", "alac", 44100, 1, None),
        ("clip.mkv", "libopus", 48000, 2, None),
        ("clip.webm", "vorbis", 44100, 2, None),
        ("clip.wma", "wmav2", 22050, 1, "asf"),
        ("clip.ac3", "ac3", 48000, 2, None),
        ("clip.amr", "libopencore_amrnb", 8000, 1, None),
        ("video.mp4", "aac", 32000, 1, None),  # a video stream first, then the audio
    ],
)
def test_ffmpeg_containers_decode(tmp_path, name, codec, rate, channels, container):
    data = _mix(1.0, rate, channels)
    path = encode(tmp_path / name, data, rate, codec, container=container, video=name.startswith("video"),
                  bit_rate=12200 if "amr" in codec else None)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.backend, info.exact) == (rate, channels, "ffmpeg", False)
    assert abs(info.duration - 1.0) < 0.1
    wave = load_audio(path)
    expected = resample(torch.from_numpy(data.mean(axis=1)), rate).numpy()
    assert wave.dtype == torch.float32 and abs(wave.numel() - SR) < 0.1 * SR  # codec padding only
    if codec == "alac":  # lossless: the very samples (to 16-bit rounding)
        assert float((wave[: expected.size] - torch.from_numpy(expected)).abs().max()) < 1e-3
    assert _spectral_match(wave, expected) > (0.8 if "amr" in codec else 0.9), name
    blocks = list(iter_audio_blocks(path, block_seconds=0.1))
    assert len(blocks) >= 5 and torch.allclose(torch.cat(blocks), wave, atol=1e-6)
    assert name.rsplit(".", 1)[1] and f".{name.rsplit('.', 1)[1]}" in audio_extensions()


@pytest.mark.parametrize("name, subtype", [("pcm16.wav", "PCM_16"), ("float.wav", "FLOAT"),
                                           ("x.flac", "PCM_24"), ("x.ogg", "VORBIS")])
def test_libsndfile_and_ffmpeg_give_the_same_samples(tmp_path, name, subtype):
    path = write_audio(tmp_path / name, _mix(1.5, 44100, 2), sr=44100, subtype=subtype)
    with open_decoder(path) as ours:
        assert isinstance(ours, SndfileDecoder)
        native = ours.read(-1)
    with PyAVDecoder(str(path), str(path)) as ffmpeg:
        other = ffmpeg.read(-1)
        assert (ffmpeg.sample_rate, ffmpeg.channels) == (44100, 2)
    assert native.shape == other.shape
    assert float(np.abs(native - other).max()) < 1e-4


@pytest.mark.parametrize(
    "name, codec, rate",
    [("long.m4a", "aac", 44100), ("long.opus", "libopus", 48000), ("alac.m4a", "alac", 44100),
     ("long.flac", None, 44100), ("long.wav", None, 22050), ("long.mp3", None, 44100)],
)
def test_windows_equal_slices_of_the_whole_file(tmp_path, monkeypatch, name, codec, rate):
    data = _mix(8.0, rate, 2)
    if codec:  # AAC without noise substitution (PNS): see the next test
        options = {"aac_pns": "0"} if codec == "aac" else None
        path = encode(tmp_path / name, data, rate, codec, options=options)
    elif name.endswith(".mp3"):
        if "MP3" not in sf.available_formats():
            pytest.skip("this libsndfile has no mp3")
        path = write_audio(tmp_path / name, data, sr=rate, subtype="MPEG_LAYER_III")
    else:
        path = write_audio(tmp_path / name, data, sr=rate, subtype="PCM_16")
    whole = load_audio(path)
    seeks = []
    original = PyAVDecoder._seek_timestamp
    monkeypatch.setattr(PyAVDecoder, "_seek_timestamp",
                        lambda self, *a: seeks.append(a) or original(self, *a))
    end = whole.numel()
    for start, length in [(0, 16000), (4000, 20000), (50000, 32000), (96000, 31000), (end - 9000, 16000),
                          (end + 5, 100)]:
        window = read_window(path, start, length)
        expected = whole[start : start + length]
        assert window.shape == expected.shape, (start, length)
        if expected.numel():
            assert float((window - expected).abs().max()) < 1e-4, (start, length)
    if probe(path).backend == "ffmpeg":
        assert len(seeks) >= 3  # the far windows were reached by seeking, not by decoding up to them


def test_aac_noise_substitution_windows_are_deterministic(tmp_path):
    """AAC's PNS decodes noise bands from a random generator that runs through the whole file:
    a window reached by seeking draws other noise there (as any player's seek does); the
    signal, and the same window asked twice, are the same."""
    path = encode(tmp_path / "pns.m4a", _mix(8.0, 44100, 2), 44100, "aac")
    whole = load_audio(path)
    window = read_window(path, 50000, 32000)
    assert torch.equal(window, read_window(path, 50000, 32000))
    expected = whole[50000:82000]
    assert float((window - expected).abs().max()) < 0.1
    assert float((window - expected).pow(2).mean() / expected.pow(2).mean()) < 1e-3  # SNR > 30 dB


def test_seeks_in_millisecond_timestamps_land_within_half_a_millisecond(tmp_path):
    path = encode(tmp_path / "long.webm", _mix(34.0, 48000, 1), 48000, "libopus")
    with open_decoder(path) as decoder:
        whole = decoder.read(-1)
    for target in (20 * 48000 + 77, 31 * 48000 + 123):  # decoded up to below 30 s, seeks past it
        with open_decoder(path) as decoder:
            decoder.seek(target)
            block = decoder.read(4800)
        shifts = [s for s in range(-24, 25)  # Opus settles after a seek to ~1e-4, not to the bit
                  if np.abs(block - whole[target + s : target + s + 4800]).max() < 1e-3]
        assert shifts == [0] if target < 30 * 48000 else len(shifts) == 1, (target, shifts)


def test_probe_lengths_are_estimates_decoding_is_authoritative(tmp_path):
    stereo = _mix(2.0, 48000, 2)
    path = encode(tmp_path / "clip.webm", stereo, 48000, "libopus")
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Matroska Segment Duration, an 8-byte float (ms)
    (claimed,) = struct.unpack(">d", data[at + 3 : at + 11])
    data[at + 3 : at + 11] = struct.pack(">d", claimed * 5)
    lying = tmp_path / "lying.webm"
    lying.write_bytes(bytes(data))
    info = probe(lying)
    assert not info.exact and abs(info.duration - 10.0) < 0.1  # what the container claims
    wave = load_audio(lying)
    assert wave.numel() == load_audio(path).numel() == 2 * SR  # what is really there
    assert read_window(lying, 3 * SR, SR).numel() == 0 and read_window(lying, SR, 2 * SR).numel() == SR


def test_surround_opus_is_averaged_to_mono(tmp_path):
    t = np.arange(48000) / 48000
    freqs = (300, 500, 700, 900, 60, 1100)
    six = np.stack([0.1 * np.sin(2 * np.pi * f * t) for f in freqs], 1).astype(np.float32)
    expected = resample(torch.from_numpy(six.mean(axis=1)), 48000)
    for name in ("surround.opus", "surround.mkv"):  # libsndfile reads the first, FFmpeg the second
        path = encode(tmp_path / name, six, 48000, "libopus", bit_rate=256000)
        info = probe(path)
        assert (info.sample_rate, info.channels) == (48000, 6)
        wave = load_audio(path)
        assert wave.numel() == SR
        spectrum = np.abs(np.fft.rfft(wave.numpy()))
        for freq in freqs:  # every channel is in the mix, at 1/6
            assert 0.5 < spectrum[freq] / np.abs(np.fft.rfft(expected.numpy()))[freq] < 1.5, (name, freq)


def test_bad_containers_raise_clear_errors(tmp_path):
    data = _mix(2.0, 44100, 1)
    for faststart, message in ((False, "not a readable audio file"), (True, "decoding failed")):
        full = encode(tmp_path / f"full{faststart}.m4a", data, 44100, "aac", faststart=faststart)
        whole = full.read_bytes()
        cut = tmp_path / f"cut{faststart}.m4a"
        cut.write_bytes(whole[: len(whole) // 2])
        with pytest.raises(AudioError, match=message):
            load_audio(cut)
    video = encode(tmp_path / "silent.mp4", data, 44100, "aac", video=True, audio=False)
    for call in (probe, load_audio, lambda p: list(iter_audio_blocks(p))):
        with pytest.raises(AudioError, match="no audio stream in the file .it holds video streams"):
            call(video)
    fake = tmp_path / "notes.m4a"
    fake.write_text("not audio\n" * 50)
    both = r"not a readable audio file \(libsndfile: .*; FFmpeg: .*\): .*notes.m4a"
    with pytest.raises(AudioError, match=both):
        probe(fake)


def test_scan_folder_counts_what_it_ignores(tmp_path):
    audio = ["a.m4a", "b/c.webm", "b/d.MKV", "e.wma", "f.wav"]
    names = [*audio, "notes.txt", "b/more.txt", "meta.json", "README", "code.ts", ".DS_Store", ".git/config"]
    for rel in names:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    scan = scan_folder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in scan.files] == audio
    assert find_audio(tmp_path) == scan.files
    assert scan.ignored == {".txt": 2, ".json": 1, "no extension": 1, ".ts": 1, "hidden": 1}
    assert scan.summary() == ("ignored 6 files: .txt 2, .json 1, .ts 1, hidden 1, no extension 1; "
                              "skipped 1 hidden folder")
    (tmp_path / "only").mkdir()
    assert scan_folder(tmp_path / "only").summary() == ""
    text = supported_formats_text()
    assert "FFmpeg" in text and "m4a" in text and "webm" in text and "libsndfile" in text
