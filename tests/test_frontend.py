"""The batched fbank must equal torchaudio's Kaldi fbank clip by clip (skipped where torchaudio is
absent); token layout = nn.Unfold."""

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import chirp, noise, tone

from maeast_embed.audio import resample
from maeast_embed.errors import AudioError
from maeast_embed.frontend import (
    FbankNorm,
    kaldi_fbank,
    num_frames,
    patchify,
    token_centre_seconds,
    token_padding_mask,
    unpatchify,
)

TOL = 1e-3


def reference_fbank(wave: torch.Tensor) -> torch.Tensor:
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi", reason="the Kaldi fbank reference")
    return kaldi.fbank(
        wave.unsqueeze(0), sample_frequency=16000, use_energy=False, num_mel_bins=128
    )


def assert_matches_reference(clips: list[torch.Tensor]) -> None:
    lengths = torch.tensor([c.numel() for c in clips])
    batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    fbank, frame_lengths = kaldi_fbank(batch, lengths)
    assert fbank.shape == (len(clips), int(frame_lengths.max()), 128)
    for i, clip in enumerate(clips):
        ref = reference_fbank(clip)
        assert int(frame_lengths[i]) == ref.shape[0]
        assert (fbank[i, : ref.shape[0]] - ref).abs().max().item() <= TOL
        assert not fbank[i, ref.shape[0] :].any()  # rows past the clip are zero


def test_random_lengths_around_one_frame():
    gen = torch.Generator().manual_seed(0)
    lengths = list(range(400, 561, 8)) + [561, 719, 720, 721]
    clips = [torch.randn(n, generator=gen) * 0.1 for n in lengths]
    assert_matches_reference(clips)


def test_real_like_signals_with_partial_last_frame():
    clips = [
        torch.from_numpy(tone(1.0, 440.0)),
        torch.from_numpy(chirp(2.0)[:31_337]),
        torch.from_numpy(noise(0.7, amp=0.5)[:11_111]),
        torch.from_numpy(tone(0.5, 3000.0, amp=0.9)[:7_999]),
        torch.zeros(4_000),  # digital silence hits the log floor
        torch.from_numpy(noise(1.2, amp=1e-4)),  # near-silent bands
    ]
    assert_matches_reference(clips)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_speech(tmp_path):
    out = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "the quick brown fox jumps"], check=True)
    data, sr = sf.read(out, dtype="float32")
    wave = resample(torch.from_numpy(data), sr)
    assert_matches_reference([wave, wave[: wave.numel() // 3]])


def test_frame_count_rule():
    assert num_frames(399) == 0 and num_frames(400) == 1 and num_frames(559) == 1
    assert num_frames(560) == 2 and num_frames(160_000) == 998
    lengths = torch.tensor([399, 400, 560, 160_000])
    assert num_frames(lengths).tolist() == [0, 1, 2, 998]


def test_bad_input_errors():
    with pytest.raises(AudioError, match="shorter than one 25 ms"):
        kaldi_fbank(torch.zeros(1, 399))
    with pytest.raises(AudioError, match="shorter than one 25 ms"):
        kaldi_fbank(torch.zeros(2, 1000), torch.tensor([1000, 10]))
    bad = torch.zeros(1, 1000)
    bad[0, 5] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        kaldi_fbank(bad)
    with pytest.raises(AudioError, match="16000 Hz"):
        kaldi_fbank(torch.zeros(1, 1000), sample_rate=44100)
    with pytest.raises(AudioError, match="batch, samples"):
        kaldi_fbank(torch.zeros(1000))
    with pytest.raises(AudioError, match="float"):
        kaldi_fbank(torch.zeros(1, 1000, dtype=torch.int16))


def test_normalisation_uses_checkpoint_stats_in_eval():
    norm = FbankNorm().eval()
    norm.running_mean.fill_(-4.0)
    norm.running_var.fill_(9.0)
    x = torch.randn(2, 30, 128)
    expected = 0.5 * (x + 4.0) / torch.sqrt(torch.tensor(9.0 + 1e-5))
    torch.testing.assert_close(norm(x), expected)
    norm.train()
    y = norm(x)  # train mode: batch statistics, like BatchNorm2d(1, affine=False)
    torch.testing.assert_close(y.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(unbiased=False), torch.tensor(0.5), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kt,kc", [(16, 16), (2, 128), (4, 32)])
def test_patchify_equals_unfold_and_inverts(kt, kc):
    x = torch.randn(3, 37, 128)
    unfold = torch.nn.Unfold(kernel_size=(kt, kc), stride=(kt, kc))
    expected = unfold(x.unsqueeze(1)).transpose(1, 2)
    tokens = patchify(x, kt, kc)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    kept = (37 // kt) * kt
    torch.testing.assert_close(unpatchify(tokens, kt, kc), x[:, :kept], rtol=0, atol=0)


def test_patch_tokens_are_time_major():
    x = torch.arange(32 * 128, dtype=torch.float32).reshape(1, 32, 128)
    tokens = patchify(x, 16, 16)
    # token 1 = time block 0, frequency block 1; inside it, value t_off * 16 + f_off
    assert tokens[0, 1, 0] == x[0, 0, 16] and tokens[0, 1, 17] == x[0, 1, 17]
    assert tokens[0, 8, 0] == x[0, 16, 0]


def test_token_padding_rules():
    frames = torch.tensor([998, 500, 40])
    own = token_padding_mask(frames, 496, 16, 8, include_partial=False)
    ref = token_padding_mask(frames, 496, 16, 8, include_partial=True)
    assert (~own).sum(1).tolist() == [496, 31 * 8, 2 * 8]
    assert (~ref).sum(1).tolist() == [496, 32 * 8, 3 * 8]  # reference counts the partial patch
    same = torch.tensor([998, 998])
    assert token_padding_mask(same, 496, 16, 8, include_partial=True) is None
    assert token_padding_mask(same, 496, 16, 8, include_partial=False) is None


def test_token_centres():
    centres = token_centre_seconds(3, 16)
    np.testing.assert_allclose(centres.numpy(), [0.0875, 0.2475, 0.4075])
    np.testing.assert_allclose(token_centre_seconds(2, 2).numpy(), [0.0175, 0.0375])
