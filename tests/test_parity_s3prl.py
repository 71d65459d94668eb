"""Parity with s3prl 0.4.18's MAE-AST port on random official-layout checkpoints."""

import pytest
import torch
from helpers import reference_checkpoint

from maeast_embed.checkpoint import load_model, save_official
from maeast_embed.frontend import kaldi_fbank

s3prl_expert = pytest.importorskip("s3prl.upstream.mae_ast.expert")

TOL = 1e-4
LENGTHS = [16000, 12345, 3000, 16000 - 7, 9999]


def ours_like_s3prl(model, wavs):
    """This project's frontend + encoder with the reference's batch rule, regrouped like s3prl."""
    lengths = torch.tensor([w.numel() for w in wavs])
    fbank, frames = kaldi_fbank(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths)
    tokens, pad = model.tokenize(fbank, frames, include_partial=True)
    steps = len(range(0, int(lengths.max()), model.cfg.kernel_time * 160))
    return [h.reshape(h.shape[0], -1, model.cfg.tokens_per_step * h.shape[-1])[:, :steps]
            for h in model(tokens, pad)]


@pytest.mark.parametrize("name", ["tiny-patch", "tiny-frame"])
def test_hidden_states_match_s3prl(tmp_path, name):
    path = reference_checkpoint(tmp_path / f"{name}.pt", name)
    reference = s3prl_expert.UpstreamExpert(str(path)).eval()
    model = load_model(path)
    gen = torch.Generator().manual_seed(5)
    wavs = [torch.randn(n, generator=gen) * 0.2 for n in LENGTHS]
    with torch.no_grad():
        expected = reference(wavs)["hidden_states"]
        got = ours_like_s3prl(model, wavs)
    assert len(got) == len(expected) == model.cfg.encoder_layers
    for layer, (a, b) in enumerate(zip(expected, got)):
        assert a.shape == b.shape, layer
        assert (a - b).abs().max().item() <= TOL, f"layer {layer + 1}"


@pytest.mark.parametrize("name", ["tiny-patch", "tiny-frame"])
def test_s3prl_loads_what_we_save(tmp_path, name):
    torch.manual_seed(3)
    from helpers import make_model

    model = make_model(name, seed=8)
    path = tmp_path / "ours.pt"
    save_official(model, path)
    reference = s3prl_expert.UpstreamExpert(str(path)).eval()  # strict load inside
    wavs = [torch.randn(8000) * 0.1, torch.randn(5000) * 0.1]
    with torch.no_grad():
        expected = reference(wavs)["hidden_states"][-1]
        got = ours_like_s3prl(model, wavs)[-1]
    assert (expected - got).abs().max().item() <= TOL
