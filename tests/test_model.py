"""Model behaviour: attention maths, padding, pretraining paths, layerdrop, init."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_model

from maeast_embed.config import ModelConfig, preset
from maeast_embed.errors import AudioError, ConfigError
from maeast_embed.frontend import kaldi_fbank
from maeast_embed.model import dropout, sinusoid_table


def explicit_layer(layer, x, key_pad):
    """Textbook post-LN transformer layer with explicit softmax attention."""
    attn = layer.self_attn
    b, n, d = x.shape
    h = attn.num_heads

    def heads(t):
        return t.view(b, n, h, -1).transpose(1, 2)

    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    scores = q @ k.transpose(-1, -2) * (d // h) ** -0.5
    if key_pad is not None:
        scores = scores.masked_fill(key_pad[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    x = layer.self_attn_layer_norm(x + attn.out_proj(out))
    ffn = layer.fc2(0.5 * layer.fc1(x) * (1 + torch.erf(layer.fc1(x) / math.sqrt(2))))
    return layer.final_layer_norm(x + ffn)


def test_encoder_matches_textbook_maths():
    model = make_model("tiny-patch")
    tokens = torch.randn(2, 24, 256)
    pad = torch.zeros(2, 24, dtype=torch.bool)
    pad[1, 16:] = True
    with torch.no_grad():
        hidden = model(tokens, pad)
        x = tokens @ model.post_extract_proj.weight.T + model.post_extract_proj.bias
        x = x + sinusoid_table(24, 64) * (~pad).unsqueeze(-1)
        x = model.encoder.layer_norm(x)
        for layer, got in zip(model.encoder.layers, hidden):
            x = explicit_layer(layer, x, pad)
            torch.testing.assert_close(got, x, atol=1e-5, rtol=1e-5)
    assert len(hidden) == model.cfg.encoder_layers


def test_sinusoid_table_layout():
    table = sinusoid_table(50, 8)
    pos = torch.arange(50).unsqueeze(1)
    div = torch.exp(torch.arange(0, 8, 2) * (-math.log(10000.0) / 8))
    torch.testing.assert_close(table[:, 0::2], torch.sin(pos * div))
    torch.testing.assert_close(table[:, 1::2], torch.cos(pos * div))


@pytest.mark.parametrize("name", ["tiny-patch", "tiny-frame"])
def test_padded_clip_equals_clip_alone(name):
    model = make_model(name)
    gen = torch.Generator().manual_seed(1)
    long, short = torch.randn(32000, generator=gen) * 0.1, torch.randn(17000, generator=gen) * 0.1
    batch = torch.nn.utils.rnn.pad_sequence([long, short], batch_first=True)
    with torch.no_grad():
        fb, fl = kaldi_fbank(batch, torch.tensor([32000, 17000]))
        tokens, pad = model.tokenize(fb, fl)
        together = model(tokens, pad)[-1]
        fb1, fl1 = kaldi_fbank(short.unsqueeze(0))
        alone = model(*model.tokenize(fb1, fl1))[-1]
    n = alone.shape[1]
    assert pad[1].logical_not().sum() == n
    torch.testing.assert_close(together[1, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_clip_without_a_token_is_rejected():
    model = make_model("tiny-patch")
    tokens = torch.randn(1, 8, 256)
    with pytest.raises(AudioError, match="no complete token"):
        model(tokens, torch.ones(1, 8, dtype=torch.bool))


def test_pretrain_forward_shapes_and_targets():
    model = make_model("tiny-patch").train()
    tokens = torch.randn(3, 40, 256)
    perm = torch.stack([torch.randperm(40) for _ in range(3)])
    kept, masked = perm[:, :10], perm[:, 10:]
    out = model.forward_pretrain(tokens, kept, masked, mode="mae")
    assert out.reconstruction.shape == out.classification.shape == out.target.shape == (3, 30, 256)
    torch.testing.assert_close(out.target, torch.gather(tokens, 1, masked[..., None].expand(-1, -1, 256)))
    loss = out.reconstruction.pow(2).mean() + out.classification.pow(2).mean()
    loss.backward()
    assert model.decoder_mask_emb.grad is not None and model.encoder_mask_emb.grad is None
    model.zero_grad()
    out = model.forward_pretrain(tokens, kept, masked, mode="ssast")
    (out.reconstruction.pow(2).mean()).backward()
    assert model.encoder_mask_emb.grad is not None and model.decoder_mask_emb.grad is None
    with pytest.raises(ValueError, match="mode"):
        model.forward_pretrain(tokens, kept, masked, mode="bert")


def test_mae_encoder_sees_only_kept_tokens():
    """Changing a masked token must not change the reconstruction of the other masked ones."""
    model = make_model("tiny-frame").eval()
    tokens = torch.randn(1, 20, 256)
    kept, masked = torch.arange(5).unsqueeze(0), torch.arange(5, 20).unsqueeze(0)
    with torch.no_grad():
        a = model.forward_pretrain(tokens, kept, masked).reconstruction
        changed = tokens.clone()
        changed[0, 10] += 5.0
        b = model.forward_pretrain(changed, kept, masked)
    torch.testing.assert_close(a, b.reconstruction)
    assert not torch.equal(b.target, model.forward_pretrain(tokens, kept, masked).target)


def test_layerdrop_only_in_training():
    model = make_model("tiny-patch", encoder_layers=6, encoder_layerdrop=0.5)
    tokens = torch.randn(1, 16, 256)
    torch.manual_seed(0)
    counts = {len(model.train()(tokens)) for _ in range(20)}
    assert len(counts) > 1 and max(counts) <= 6
    assert len(model.eval()(tokens)) == 6


def test_init_follows_bert_inside_transformers():
    model = make_model("patch", seed=3)
    fc = model.encoder.layers[0].fc1
    assert abs(fc.weight.std().item() - 0.02) < 0.002 and not fc.bias.any()
    assert 0 <= model.decoder_mask_emb.min() and model.decoder_mask_emb.max() < 1
    assert 95e6 < model.num_parameters < 105e6  # ~100 M learnable parameters at base size


def test_config_validation():
    with pytest.raises(ConfigError, match="divide"):
        ModelConfig(kernel_chan=24)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    assert preset("frame").variant == "frame" and preset("tiny-patch").variant == "patch"
    assert preset("patch").tokens_per_step == 8 and preset("frame").tokens_per_step == 1


def test_official_cfg_roundtrip():
    for name in ("patch", "frame", "tiny-patch"):
        cfg = preset(name)
        assert ModelConfig.from_official(cfg.to_official()) == cfg
    official = preset("patch").to_official()
    official["model"]["enc_conv_pos"] = True
    with pytest.raises(ConfigError, match="enc_conv_pos"):
        ModelConfig.from_official(official)


def test_bf16_autocast_close_to_fp32():
    model = make_model("tiny-patch")
    tokens = torch.randn(2, 64, 256)
    with torch.no_grad():
        ref = model(tokens)[-1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(tokens)[-1].float()
    assert F.cosine_similarity(ref.flatten(), low.flatten(), dim=0) > 0.99


def test_pretraining_survives_layerdrop_skipping_every_layer():
    model = make_model("tiny-patch", encoder_layerdrop=1.0, decoder_layerdrop=1.0).train()
    tokens = torch.randn(2, 16, 256)
    perm = torch.randperm(16).expand(2, -1)
    out = model.forward_pretrain(tokens, perm[:, :4], perm[:, 4:])
    assert out.reconstruction.shape == (2, 12, 256) and torch.isfinite(out.reconstruction).all()
    assert model.encoder(tokens @ torch.zeros(256, 64)) == []


def test_cpu_dropout_rate_scale_and_gradient():
    x = torch.ones(1000, 1001, requires_grad=True)  # odd numel: half a random word is cut off
    y = dropout(x, 0.1, True)
    assert y.unique().tolist() == pytest.approx([0.0, 1 / 0.9])
    assert abs(float((y == 0).float().mean()) - 0.1) < 3e-3
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient flows through kept entries only, scaled
    assert dropout(x, 0.1, False) is x


def test_training_attention_equals_sdpa_when_nothing_is_dropped():
    model = make_model(attention_dropout=1e-12).train()  # explicit training path, keeps all
    layer = model.encoder.layers[0]
    x = torch.randn(2, 9, model.cfg.embed_dim)
    key_pad = torch.zeros(2, 9, dtype=torch.bool)
    key_pad[1, 6:] = True
    mask = ~key_pad[:, None, None, :]
    train_out = layer.self_attn(x, mask)
    layer.self_attn.eval()
    torch.testing.assert_close(train_out, layer.self_attn(x, mask), atol=1e-5, rtol=1e-5)
