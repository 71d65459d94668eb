"""maeast_embed.precision: dtype names and errors, what `auto` picks, the weights held in bf16 /
int8, and their accuracy against float32 (packaged model, espeak-ng speech)."""

import copy
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import make_model, noise, tone, write_audio

from maeast_embed import precision
from maeast_embed.checkpoint import load_model
from maeast_embed.cli import main
from maeast_embed.config import preset
from maeast_embed.errors import ConfigError
from maeast_embed.features import Embedder
from maeast_embed.model import MAEAST, TransformerLayer
from maeast_embed.precision import (
    CastLinear,
    CpuReport,
    HeldLayer,
    Int8Linear,
    PackedLinear,
    PrecisionWarning,
    check_dtype,
    cpu_report,
    inference_model,
    resolve_dtype,
)

CPU = torch.device("cpu")
AMX_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"})
LAPTOP_FLAGS = frozenset({"avx2", "fma", "avx_vnni"})


def report(flags=AMX_FLAGS, arch="x86_64", isa=None, fbgemm=None) -> CpuReport:
    return CpuReport(arch, "test cpu", flags, "AVX512", isa, fbgemm)


def frame_cosines(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([F.cosine_similarity(x.flatten(0, 1), y.flatten(0, 1), dim=-1) for x, y in zip(a, b)])


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Two espeak-ng sentences (different voices and speeds) and a noisy tone."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from probes.synthetic import espeak_ng

    return [
        espeak_ng("The quick brown fox jumps over the lazy dog near the river bank.", ["-s", "150"]),
        espeak_ng("Seven silver spoons were found under the old wooden table.", ["-v", "en+f3", "-s", "190"]),
        tone(3.0, 330.0) + noise(3.0, amp=0.05, seed=4),
    ]


# ---------------------------------------------------------------- names, devices, errors


def test_unknown_dtype_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="one of auto, float32, bfloat16, float16, int8; got 'fp8'"):
        check_dtype("fp8", CPU)
    result = CliRunner().invoke(main, ["extract", "x.wav", "-o", "out", "--dtype", "int4"])
    assert result.exit_code == 2
    assert all(name in result.output for name in ("auto", "float32", "bfloat16", "float16", "int8"))


def test_int8_on_cuda_and_bf16_on_old_gpus_fail_before_anything_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    missing = tmp_path / "missing.pt"  # reading it would raise a CheckpointError instead
    with pytest.raises(ConfigError, match="int8 .* runs on CPU only"):
        Embedder(missing, device="cuda", dtype="int8")
    with pytest.raises(ConfigError, match="Tesla T4 has no native bfloat16"):
        Embedder(missing, device="cuda", dtype="bfloat16")
    assert resolve_dtype("auto", torch.device("cuda")) == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", torch.device("cuda")) == "bfloat16"
    write_audio(tmp_path / "in" / "a.wav", tone(1.0))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["extract", str(tmp_path / "in"), "-o", str(out), "--device", "cuda", "--dtype", "int8"]
    )
    assert result.exit_code == 1 and "runs on CPU only" in result.output and not out.exists()


def test_probe_checks_the_dtype_before_reading_audio(tmp_path, monkeypatch):
    from probes import RunConfig, run_probe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="int8"):
        run_probe(tmp_path / "missing", ["fbank"], tmp_path / "out", RunConfig(device="cuda", dtype="int8"))


def test_bf16_on_a_cpu_without_bf16_units_warns(monkeypatch):
    monkeypatch.setattr(precision, "cpu_report", lambda: report(LAPTOP_FLAGS))
    with pytest.warns(PrecisionWarning, match="no bf16 units"):
        check_dtype("bfloat16", CPU)


# ---------------------------------------------------------------- what the CPU reports, what auto picks


def test_cpu_report_reads_flags_and_the_onednn_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx512_core")
    got = cpu_report()
    assert got.onednn_max_isa == "AVX512_CORE" and not got.bf16_units and not got.amx_bf16
    assert got.capability == torch.backends.cpu.get_cpu_capability()
    with open("/proc/cpuinfo") as handle:
        text = handle.read()
    assert ("avx2" in got.flags) == (" avx2 " in text.replace("\n", " "))


@pytest.mark.parametrize(
    "flags, arch, isa, fbgemm, amx, bf16, exact",
    [
        (AMX_FLAGS, "x86_64", None, None, True, True, True),
        (AMX_FLAGS, "x86_64", "AVX512_CORE_AMX", None, True, True, True),
        (AMX_FLAGS, "x86_64", "AVX512_CORE_BF16", None, False, True, True),  # AMX hidden
        (AMX_FLAGS, "x86_64", "AVX512_CORE", "AVX2", False, False, False),  # the laptop stand-in
        (AMX_FLAGS - {"amx_bf16"}, "x86_64", None, None, False, True, True),
        (LAPTOP_FLAGS, "x86_64", None, None, False, False, False),  # AVX-VNNI: FBGEMM sums in int16
        (frozenset({"fp", "asimd", "bf16"}), "aarch64", None, None, False, True, True),
        (frozenset({"fp", "asimd"}), "aarch64", None, None, False, False, True),
    ],
)
def test_cpu_units(flags, arch, isa, fbgemm, amx, bf16, exact):
    got = report(flags, arch, isa, fbgemm)
    assert (got.amx_bf16, got.bf16_units, got.int8_exact) == (amx, bf16, exact)


def test_auto_on_cpu(monkeypatch):
    model = make_model("tiny-patch")
    gains = {"bfloat16": 0.6, "int8": 2.0}
    monkeypatch.setattr(precision, "measured_gain", lambda kind, rep=None: gains[kind])
    monkeypatch.setattr(precision, "cpu_report", lambda: report(AMX_FLAGS))
    assert resolve_dtype("auto", CPU, model) == "bfloat16"  # AMX: no measurement needed
    monkeypatch.setattr(precision, "cpu_report", lambda: report(AMX_FLAGS, isa="AVX512_CORE_BF16"))
    assert resolve_dtype("auto", CPU, model) == "int8"  # AVX512-BF16 measured slower; int8 pays
    gains["bfloat16"] = 1.8
    assert resolve_dtype("auto", CPU, model) == "bfloat16"
    monkeypatch.setattr(precision, "cpu_report", lambda: report(LAPTOP_FLAGS))
    assert resolve_dtype("auto", CPU, model) == "int8"
    assert resolve_dtype("auto", CPU) == "float32"  # no model to check int8 on
    monkeypatch.setattr(precision, "int8_agrees", lambda model: False)
    assert resolve_dtype("auto", CPU, model) == "float32"
    gains["int8"] = 1.1
    monkeypatch.setattr(precision, "int8_agrees", lambda model: pytest.fail("checked int8 needlessly"))
    assert resolve_dtype("auto", CPU, model) == "float32"
    assert resolve_dtype("float16", CPU, model) == "float16"


def test_this_machine_auto_and_the_embedder_records_it():
    embedder = Embedder(make_model("tiny-patch"), device="cpu")
    assert embedder.dtype == resolve_dtype("auto", CPU, make_model("tiny-patch")) != "auto"
    if cpu_report().amx_bf16:
        assert embedder.dtype == "bfloat16"


def test_measured_gain_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEAST_CACHE", str(tmp_path))
    first = precision.measured_gain("int8")
    stored = json.loads((tmp_path / "precision.json").read_text())
    assert stored == {cpu_report().key(): {"int8": first}} and first > 0
    monkeypatch.setattr(precision, "measure_gains", lambda kinds: pytest.fail("measured twice"))
    precision._GAINS.clear()  # a new process: read back from the file
    assert precision.measured_gain("int8") == first
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # other conditions: another key
    assert cpu_report().key() != next(iter(stored))


# ---------------------------------------------------------------- the model held in a dtype


def test_inference_copies_hold_their_dtype_and_leave_the_model_alone():
    model = make_model("tiny-patch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bf16 = inference_model(model, "bfloat16", CPU)
    assert not bf16.has_decoder and not hasattr(bf16, "decoder")
    assert bf16.batch_norm.running_var.dtype == torch.float32  # the fbank normalisation
    assert all(p.dtype == torch.bfloat16 for p in bf16.encoder.parameters())
    assert all(isinstance(layer, HeldLayer) for layer in bf16.encoder.layers)
    linears = [m for m in bf16.modules() if isinstance(m, PackedLinear | torch.nn.Linear)]
    assert len(linears) == 1 + 4 * len(model.encoder.layers)  # post_extract_proj; qkv/out/fc1/fc2 per layer
    if precision.can_pack():
        assert all(isinstance(m, PackedLinear) for m in linears)
    int8 = inference_model(model, "int8", CPU)
    assert sum(isinstance(m, Int8Linear) for m in int8.modules()) == len(linears)
    assert {layer.mlp_rows for layer in int8.encoder.layers} == {precision.mlp_rows("int8")}
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.modules())
    assert inference_model(model, "float32", CPU) is model
    assert model.has_decoder and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("with_residual", [False, True])
def test_packed_and_int8_linears_match_plain_linears(activation, with_residual):
    if activation == "gelu" and with_residual:
        pytest.skip("no layer adds a residual after an activation")
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160)
    half = copy.deepcopy(linear).to(torch.bfloat16)
    for shape in [(7, 96), (3, 11, 96)]:
        x = torch.randn(shape)
        residual = torch.randn(*shape[:-1], 160) if with_residual else None
        want = linear(x)
        want = F.gelu(want) if activation == "gelu" else want
        want = want + residual if with_residual else want
        cast = CastLinear(copy.deepcopy(linear), activation)(x, residual)
        torch.testing.assert_close(cast, want, rtol=0, atol=0)
        if precision.can_pack():
            bf16_residual = None if residual is None else residual.bfloat16()
            packed = PackedLinear(half, activation)(x.bfloat16(), bf16_residual)
            plain = CastLinear(copy.deepcopy(half), activation)(x.bfloat16(), bf16_residual)
            assert packed.dtype == torch.bfloat16 and packed.shape == want.shape
            torch.testing.assert_close(packed.float(), plain.float(), rtol=2e-2, atol=2e-2)  # a bf16 step
            assert F.cosine_similarity(packed.float().flatten(), want.flatten(), dim=0) > 0.9999
        for reduce_range in (False, True):
            got = Int8Linear(linear, activation, reduce_range=reduce_range)(x, residual)
            assert got.dtype == torch.float32 and got.shape == want.shape
            assert F.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999


def test_held_layer_is_the_transformer_layer():
    """The fused inference layer computes what TransformerLayer computes (padding included)."""
    torch.manual_seed(0)
    cfg = replace(preset("patch"), embed_dim=192, ffn_dim=768, num_heads=3)
    layer = TransformerLayer(cfg).eval().requires_grad_(False)
    x = torch.randn(3, 40, 192) * 2
    mask = torch.ones(3, 1, 1, 40, dtype=torch.bool)
    mask[1, ..., 25:] = False
    want = layer(x, mask)
    held = HeldLayer(copy.deepcopy(layer), CastLinear)(x, mask)
    torch.testing.assert_close(held, want, rtol=1e-5, atol=1e-5)
    if precision.can_pack():
        packed = HeldLayer(copy.deepcopy(layer).bfloat16(), PackedLinear)(x.bfloat16(), mask).float()
        assert F.cosine_similarity(packed, want, dim=-1).min() > 0.999
    chunked = HeldLayer(copy.deepcopy(layer), CastLinear, mlp_rows=7)(x, mask)  # 120 rows: a partial chunk
    torch.testing.assert_close(chunked, want, rtol=1e-5, atol=1e-5)
    form = precision.linear_form("int8", CPU)
    for rows in (None, precision.mlp_rows("int8")):
        int8 = HeldLayer(copy.deepcopy(layer), form, mlp_rows=rows)(x, mask)
        assert F.cosine_similarity(int8, want, dim=-1).min() > 0.99
    with pytest.raises(ValueError, match="activation"):
        CastLinear(torch.nn.Linear(4, 4), "relu")


def test_bf16_kernels_accumulate_in_float32():
    """LayerNorm statistics and the attention softmax of bf16 inputs are computed in float32:
    the bf16 results are the float32 results rounded once (a bf16 accumulation would be far off)."""
    torch.manual_seed(0)
    x = torch.randn(4, 300, 384) * 3 + 5
    ln = torch.nn.LayerNorm(384)
    want = ln(x.bfloat16().float())
    got = ln.to(torch.bfloat16)(x.bfloat16()).float()
    assert (got - want).abs().max() <= 2 ** -7 * want.abs().max()
    q, k, v = (torch.randn(2, 4, 500, 64).bfloat16() for _ in range(3))
    mask = torch.ones(2, 1, 1, 500, dtype=torch.bool)
    mask[1, ..., 350:] = False
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).float()
    assert (got - want).abs().max() < 2 ** -7 * want.abs().max()


# ---------------------------------------------------------------- accuracy against float32


@pytest.fixture(scope="module")
def packaged() -> MAEAST:
    return load_model("maeast-small")


@pytest.mark.parametrize("dtype, floor", [("bfloat16", 0.999), ("int8", 0.99)])
def test_packaged_model_features_stay_close_to_float32(packaged, speech, dtype, floor, tmp_path, monkeypatch):
    reference = Embedder(packaged, device="cpu", dtype="float32").frame_features(speech, layer="all")
    embedder = Embedder(packaged, device="cpu", dtype=dtype)
    got = embedder.frame_features(speech, layer="all")
    assert embedder.dtype == dtype and all(g.dtype == torch.float32 for g in got)
    cosines = frame_cosines(reference, got)
    assert cosines.min() >= floor and cosines.max() < 1.0, (dtype, cosines.min())
    if dtype == "int8":  # what auto checks before it picks int8, kept per machine and checkpoint
        monkeypatch.setenv("MAEAST_CACHE", str(tmp_path))
        assert precision.int8_agrees(packaged)
        stored = json.loads((tmp_path / "precision.json").read_text())[cpu_report().key()]
        assert stored[f"int8_cosine:{packaged.checkpoint.sha256}"] >= precision.INT8_MIN_COSINE


def test_bf16_batch_independence_holds_to_bf16_rounding(packaged, speech):
    embedder = Embedder(packaged, device="cpu", dtype="bfloat16", batch_size=3, chunk_seconds=1.28)
    together = embedder.frame_features(speech)
    alone = [embedder.frame_features([wave])[0] for wave in speech]
    assert frame_cosines(together, alone).min() > 0.9999


# ---------------------------------------------------------------- consumers


def test_hear_and_s3prl_default_to_float32_and_take_a_dtype(tiny_patch_ckpt, monkeypatch):
    import hear_module
    from maeast_upstream.mae_ast.expert import UpstreamExpert

    audio = torch.from_numpy(np.stack([tone(2.0), noise(2.0, seed=2)]))
    plain, low = (hear_module.load_model(str(tiny_patch_ckpt), **o) for o in ({}, {"dtype": "bfloat16"}))
    want, _ = hear_module.get_timestamp_embeddings(audio, plain)
    got, _ = hear_module.get_timestamp_embeddings(audio, low)
    assert plain.embedder().dtype == "float32" and low.embedder().dtype == "bfloat16"
    assert low.embedder() is low.embedder()  # one engine (and one bf16 copy) across calls
    cos = F.cosine_similarity(want, got, dim=-1)
    assert got.dtype == torch.float32 and cos.min() > 0.999 and not torch.equal(want, got)
    with pytest.raises(ConfigError, match="one of auto"):
        hear_module.load_model(str(tiny_patch_ckpt), dtype="int4")

    wavs = [torch.from_numpy(tone(2.0)), torch.from_numpy(noise(1.5))]
    expert = UpstreamExpert(str(tiny_patch_ckpt))
    monkeypatch.setenv("MAEAST_DTYPE", "bfloat16")  # what s3prl runs can set
    low = UpstreamExpert(str(tiny_patch_ckpt))
    assert (expert.dtype, low.dtype) == ("float32", "bfloat16")
    for a, b in zip(expert(wavs)["hidden_states"], low(wavs)["hidden_states"], strict=True):
        assert b.dtype == torch.float32 and not torch.equal(a, b)
        assert F.cosine_similarity(a, b, dim=-1).min() > 0.999
    with pytest.raises(ConfigError, match="int8"):
        UpstreamExpert(str(tiny_patch_ckpt), dtype="int8")


def test_probe_report_records_the_dtype_used(tmp_path, tiny_frame_ckpt):
    from probes import RunConfig, run_probe
    from probes.linear import ProbeConfig
    from probes.synthetic import write_dataset

    root = write_dataset(tmp_path / "d", "folder", per_class=4, seconds=0.5)
    config = RunConfig(cache_dir=tmp_path / "cache", device="cpu", folds=2, probe=ProbeConfig(l2_grid=(0.1,)))
    report = run_probe(root, [str(tiny_frame_ckpt), "fbank"], tmp_path / "out", config)
    model, fbank = json.loads((tmp_path / "out" / "report.json").read_text())["models"]
    assert report["settings"]["dtype"] == "auto"
    assert model["dtype"] == resolve_dtype("auto", CPU, load_model(tiny_frame_ckpt))
    assert fbank["dtype"] is None  # no encoder
    pinned = run_probe(root, [str(tiny_frame_ckpt)], tmp_path / "out32", replace(config, dtype="float32"))
    assert pinned["models"][0]["dtype"] == "float32"
    if model["dtype"] != "float32":  # the cache key holds the dtype used, not 'auto'
        assert pinned["models"][0]["cache"]["file"] != model["cache"]["file"]
