"""maeast_embed.precision: dtype names and errors, what the CPU reports, what `auto` picks (a pure
function of the machine), the kernels probed by a real call, the weights held in bf16 / int8,
batch independence of every dtype, accuracy against float32 (packaged model, espeak-ng speech),
and each CPU class rehearsed in a subprocess with the kernels capped."""

import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import make_model, noise, tone, write_audio

from maeast_embed.checkpoint import load_model
from maeast_embed.cli import main
from maeast_embed.config import preset
from maeast_embed.errors import ConfigError
from maeast_embed.features import Embedder
from maeast_embed.model import MAEAST, TransformerLayer
from maeast_embed.precision import (
    INT8_MIN_COSINE,
    CastLinear,
    CpuReport,
    HeldLayer,
    Int8Linear,
    PackedLinear,
    PrecisionWarning,
    auto_choice,
    auto_dtype,
    bf16_packing_problem,
    check_dtype,
    cpu_report,
    dtype_support,
    inference_model,
    int8_kernel_problem,
    kernels,
    linear_form,
    mlp_per_window,
    policy,
    resolve_dtype,
)

CPU = torch.device("cpu")
AMX_FLAGS = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"})
ZEN4_FLAGS = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"})
SKYLAKE_FLAGS = frozenset({"avx2", "fma", "avx512f", "avx512bw"})
AVX2_FLAGS = frozenset({"avx", "avx2", "fma", "f16c"})
X86 = ("x86_64", "amd64")


def report(flags=AMX_FLAGS, arch="x86_64", isa=None, fbgemm=None) -> CpuReport:
    return CpuReport(arch, "test cpu", flags, "AVX512", isa, fbgemm)


def frame_cosines(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([F.cosine_similarity(x.flatten(0, -2), y.flatten(0, -2), dim=-1) for x, y in zip(a, b)])


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def real_flags() -> set[str]:
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.lower().startswith(("flags", "features")):
                return set(line.partition(":")[2].split())
    return set()


def readme_auto(flags: set[str], onednn_cap: str | None) -> str:
    """What the README says `--dtype auto` picks on a CPU (the rule, written out once more)."""
    amx_visible = onednn_cap is None or "AMX" in onednn_cap.upper()
    if platform.machine().lower() in X86:
        return "bfloat16" if "amx_bf16" in flags and amx_visible else "int8"
    return "bfloat16" if "bf16" in flags else "float32"


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Two espeak-ng sentences (different voices, speeds and lengths), a noisy tone, and a long
    sentence that the engine cuts into two windows."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; `make test` does)")
    from probes.synthetic import espeak_ng

    return [
        espeak_ng("The quick brown fox jumps over the lazy dog near the river bank.", ["-s", "150"]),
        espeak_ng("Seven silver spoons.", ["-v", "en+f3", "-s", "190"]),
        tone(3.3, 330.0) + noise(3.3, amp=0.05, seed=4),
        espeak_ng("In the early morning the fishermen pulled their boats onto the sand, sorted the catch "
                  "and sold it to the traders who had waited since dawn at the harbour wall.", ["-s", "120"]),
    ]


@pytest.fixture(scope="module")
def packaged() -> MAEAST:
    return load_model("maeast-small")


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
    cuda = torch.device("cuda")
    assert auto_choice(cuda) == policy.Choice("float32", "Tesla T4 has no native bfloat16")
    assert dtype_support(cuda)["int8"].status == "unavailable"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", cuda) == "bfloat16"
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
    monkeypatch.setenv("MAEAST_CPU_FLAGS", " ".join(AVX2_FLAGS))
    with pytest.warns(PrecisionWarning, match="emulated.*no bf16 units"):
        check_dtype("bfloat16", CPU)
    assert dtype_support(CPU)["bfloat16"].status == "emulated"


# ---------------------------------------------------------------- what the CPU reports


def test_cpu_report_reads_flags_the_caps_and_the_override(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("MAEAST_CPU_FLAGS", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx512_core")
    got = cpu_report()
    assert got.onednn_max_isa == "AVX512_CORE" and not got.bf16_units and not got.amx_bf16
    assert got.capability == torch.backends.cpu.get_cpu_capability()
    assert got.flags == frozenset(real_flags()) and not got.flags_overridden
    monkeypatch.setenv("MAEAST_CPU_FLAGS", "AVX2, fma  f16c")
    got = cpu_report()
    assert got.flags == {"avx2", "fma", "f16c"} and got.flags_overridden
    assert got.summary()["unit_flags"] == ["avx2", "fma"]


@pytest.mark.parametrize(
    "flags, arch, isa, fbgemm, amx, bf16, exact, cpu_class",
    [
        (AMX_FLAGS, "x86_64", None, None, True, True, True, "x86 AMX"),
        (AMX_FLAGS, "x86_64", "AVX512_CORE_AMX", None, True, True, True, "x86 AMX"),
        (AMX_FLAGS, "x86_64", "AVX512_CORE_BF16", None, False, True, True, "x86 AVX512-BF16"),  # AMX hidden
        (AMX_FLAGS, "x86_64", "AVX512_CORE", "AVX2", False, False, False, "x86 AVX-512"),
        (ZEN4_FLAGS, "x86_64", None, None, False, True, True, "x86 AVX512-BF16"),
        (SKYLAKE_FLAGS, "x86_64", None, None, False, False, False, "x86 AVX-512"),
        # AVX-VNNI: FBGEMM still sums in int16
        (AVX2_FLAGS | {"avx_vnni"}, "x86_64", None, None, False, False, False, "x86 AVX2"),
        (frozenset({"fp", "asimd", "bf16"}), "aarch64", None, None, False, True, True, "aarch64 with BF16"),
        (frozenset({"fp", "asimd"}), "aarch64", None, None, False, False, True, "aarch64"),
    ],
)
def test_cpu_units(flags, arch, isa, fbgemm, amx, bf16, exact, cpu_class):
    got = report(flags, arch, isa, fbgemm)
    assert (got.amx_bf16, got.bf16_units, got.int8_exact, got.cpu_class) == (amx, bf16, exact, cpu_class)


# ---------------------------------------------------------------- what auto picks


@pytest.mark.parametrize(
    "flags, arch, isa, want",
    [
        (AMX_FLAGS, "x86_64", None, "bfloat16"),  # Sapphire Rapids and later
        (AMX_FLAGS, "x86_64", "AVX512_CORE_BF16", "int8"),  # AMX hidden: int8 beats AVX512-BF16
        (ZEN4_FLAGS, "x86_64", None, "int8"),  # Zen 4 / Cooper Lake
        (SKYLAKE_FLAGS, "x86_64", None, "int8"),
        (AVX2_FLAGS, "x86_64", None, "int8"),  # Zen 2/3, older Intel, laptops
        (frozenset({"fp", "asimd", "bf16"}), "aarch64", None, "bfloat16"),
        (frozenset({"fp", "asimd"}), "aarch64", None, "float32"),
    ],
)
def test_auto_follows_the_readme_rule(flags, arch, isa, want, monkeypatch):
    monkeypatch.setattr(policy, "bf16_packing_problem", lambda: None)  # the kernels work (see below)
    monkeypatch.setattr(policy, "int8_kernel_problem", lambda: None)
    assert auto_choice(CPU, report(flags, arch, isa)).dtype == want


def test_auto_takes_what_the_kernels_accept(monkeypatch):
    """A kernel that fails its probe is never picked: no bf16 without packing, no int8 without
    the int8 Linear (then a bf16 unit or float32)."""
    monkeypatch.setattr(policy, "bf16_packing_problem", lambda: "RuntimeError: no packing here")
    assert auto_choice(CPU, report(AMX_FLAGS)).dtype == "int8"
    monkeypatch.setattr(policy, "int8_kernel_problem", lambda: "AttributeError: no quantized ops")
    assert auto_choice(CPU, report(AMX_FLAGS)).dtype == "float32"
    assert auto_choice(CPU, report(AVX2_FLAGS)).dtype == "float32"
    monkeypatch.setattr(policy, "bf16_packing_problem", lambda: None)
    assert auto_choice(CPU, report(ZEN4_FLAGS)).dtype == "bfloat16"


def test_auto_is_a_pure_function_of_the_machine(monkeypatch, tmp_path):
    """No timing: the clock is never read, and two fresh processes (one with a stale cache file
    claiming other speed-ups) pick the same dtype for the same reason."""
    model = make_model("tiny-patch")

    def no_clock():
        raise AssertionError("auto read the clock")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    monkeypatch.setattr(time, "time", no_clock)
    first = auto_dtype(CPU, model)
    assert auto_dtype(CPU, model) == first
    monkeypatch.undo()
    script = ("import json, torch; from maeast_embed.precision import auto_dtype; "
              "from maeast_embed.checkpoint import load_model; "
              "c = auto_dtype(torch.device('cpu'), load_model('maeast-small')); "
              "print(json.dumps([c.dtype, c.reason]))")
    picks = []
    for cache in ("empty", "stale"):
        env = {**os.environ, "MAEAST_CACHE": str(tmp_path / cache)}
        (tmp_path / cache).mkdir()
        if cache == "stale":  # what an older version measured
            stale = {"any": {"int8": 0.5, "bfloat16": 9.0}}
            (tmp_path / cache / "precision.json").write_text(json.dumps(stale))
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             check=True)
        picks.append(json.loads(out.stdout))
    assert picks[0] == picks[1]
    assert picks[0][0] == readme_auto(set(cpu_report().flags), cpu_report().onednn_max_isa)


def test_auto_checks_int8_on_the_model(monkeypatch):
    model = make_model("tiny-patch")
    monkeypatch.setattr(policy, "auto_choice", lambda device: policy.Choice("int8", "x86"))
    choice = auto_dtype(CPU, model)
    assert choice.dtype == "int8" and "agree" in choice.reason
    assert auto_dtype(CPU).dtype == "float32"  # no model to check int8 on (s3prl's autocast path)
    monkeypatch.setattr(policy, "int8_cosine", lambda model: 0.97)
    choice = auto_dtype(CPU, model)
    assert choice.dtype == "float32" and "0.97" in choice.reason
    assert resolve_dtype("float16", CPU, model) == "float16"


def test_this_machine_auto_follows_the_rule_and_the_embedder_records_it():
    want = readme_auto(set(cpu_report().flags), cpu_report().onednn_max_isa)
    embedder = Embedder(make_model("tiny-patch"), device="cpu")
    assert embedder.dtype == want and embedder.dtype_reason
    assert Embedder(make_model("tiny-patch"), device="cpu", dtype="float32").dtype_reason == "asked for"


# ---------------------------------------------------------------- kernels probed by a real call


def test_kernel_probes_pass_here_and_report_a_failing_kernel(monkeypatch):
    assert int8_kernel_problem() is None  # torch's x86/ARM CPU builds have the int8 Linear
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or "ALL").upper()
    if platform.machine().lower() in X86:  # oneDNN packs bf16 with AVX512-BW/VL/DQ or AVX-NE-CONVERT
        usable = cap.startswith(("AVX512", "AVX10", "ALL", "DEFAULT"))
        flags = real_flags()
        want = usable and {"avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags
        assert (bf16_packing_problem() is None) == want, bf16_packing_problem()

    def refuse(weight):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert "
                           "or avx512bw, avx512vl and avx512dq")

    monkeypatch.setattr(kernels, "pack_bf16_weight", refuse)
    kernels.bf16_packing_problem.cache_clear()
    try:
        assert "bf16 path needs" in kernels.bf16_packing_problem()
    finally:
        monkeypatch.undo()
        kernels.bf16_packing_problem.cache_clear()


def test_bf16_where_oneDNN_cannot_pack_runs_emulated_not_a_traceback(monkeypatch, tmp_path):
    """The crash found on AVX2 CPUs: with packing refused, bf16 runs on plain casts, warns, and
    gives bf16-close numbers through the Embedder and `extract`."""
    monkeypatch.setenv("MAEAST_CPU_FLAGS", " ".join(ZEN4_FLAGS))  # bf16 units claimed...
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr("maeast_embed.precision.linear.bf16_packing_problem", lambda: "RuntimeError: refused")
    monkeypatch.setattr(policy, "bf16_packing_problem", lambda: "RuntimeError: refused")  # ...packing refused
    assert linear_form("bfloat16", CPU) is CastLinear
    assert dtype_support(CPU)["bfloat16"] == policy.Support(
        "emulated", "bf16 units, but oneDNN cannot pack bf16 weights here (RuntimeError: refused)")
    model = make_model("tiny-patch")
    waves = [tone(1.5), noise(2.2, seed=3)]
    want = Embedder(model, device="cpu", dtype="float32").frame_features(waves)
    with pytest.warns(PrecisionWarning, match="emulated"):
        embedder = Embedder(model, device="cpu", dtype="bfloat16")
    assert not any(isinstance(m, PackedLinear) for m in embedder.model.modules())
    assert frame_cosines(want, embedder.frame_features(waves)).min() > 0.999
    write_audio(tmp_path / "in" / "a.wav", tone(1.0))
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                       "--dtype", "bfloat16", "--model", "maeast-small"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").rglob("*.npz"))) == 1


def test_int8_without_its_kernel_is_refused_before_any_file_is_read(monkeypatch, tmp_path):
    monkeypatch.setattr(policy, "int8_kernel_problem", lambda: "AttributeError: no quantized ops")
    with pytest.raises(ConfigError, match="dtype int8 cannot run on this CPU.*no quantized ops"):
        Embedder(tmp_path / "missing.pt", device="cpu", dtype="int8")
    args = ["extract", str(tmp_path), "-o", str(tmp_path / "out"), "--dtype", "int8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "no quantized ops" in result.output
    assert not (tmp_path / "out").exists()


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
    packs = cpu_report().bf16_units and bf16_packing_problem() is None
    assert all(isinstance(m, PackedLinear if packs else CastLinear) for m in linears)
    int8 = inference_model(model, "int8", CPU)
    assert sum(isinstance(m, Int8Linear) for m in int8.modules()) == len(linears)
    assert {layer.per_window for layer in int8.encoder.layers} == {mlp_per_window("int8")} == {True}
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.modules())
    assert inference_model(model, "float32", CPU) is model
    assert model.has_decoder and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "activation, with_residual", [("none", False), ("none", True), ("gelu", False)]
)  # no layer adds a residual after an activation
def test_packed_and_int8_linears_match_plain_linears(activation, with_residual):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160)
    half = copy.deepcopy(linear).to(torch.bfloat16)
    for shape in [(7, 96), (3, 11, 96)]:
        x = torch.randn(shape)
        residual = torch.randn(*shape[:-1], 160) if with_residual else None
        want = linear(x)
        want = F.gelu(want) if activation == "gelu" else want
        want = want + residual if with_residual else want
        fresh = residual if residual is None else residual.clone()
        cast = CastLinear(copy.deepcopy(linear), activation)(x, fresh)
        torch.testing.assert_close(cast, want, rtol=0, atol=0)
        if bf16_packing_problem() is None:
            bf16_residual = None if residual is None else residual.bfloat16()
            packed = PackedLinear(half, activation)(x.bfloat16(), bf16_residual)
            plain = CastLinear(copy.deepcopy(half), activation)(x.bfloat16(), bf16_residual)
            assert packed.dtype == torch.bfloat16 and packed.shape == want.shape
            torch.testing.assert_close(packed.float(), plain.float(), rtol=2e-2, atol=2e-2)  # a bf16 step
            assert F.cosine_similarity(packed.float().flatten(), want.flatten(), dim=0) > 0.9999
        for reduce_range in {True, not cpu_report().int8_exact}:  # 8 bits saturate FBGEMM without VNNI
            got = Int8Linear(linear, activation, reduce_range=reduce_range)(
                x, None if residual is None else residual.clone())
            assert got.dtype == torch.float32 and got.shape == want.shape
            assert F.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999


@pytest.mark.parametrize("bits", ["this CPU's", "7"])
def test_int8_quantises_each_window_on_its_own(bits):
    """A window's int8 output is the same, bit for bit, alone or stacked with any other windows
    (however loud): one quantisation scale per window, never per batch."""
    reduce_range = bits == "7" or not cpu_report().int8_exact
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48)
    windows = torch.randn(5, 30, 64)
    loud = windows.clone()
    loud[2:] *= 1e3
    for activation in ("none", "gelu"):
        int8 = Int8Linear(linear, activation, reduce_range=reduce_range)
        alone = torch.stack([int8(window) for window in windows])
        assert torch.equal(int8(loud)[:2], alone[:2]) and torch.equal(int8(windows), alone)
        one_scale = int8(loud.reshape(1, 150, 64)).view(5, 30, 48)  # what one scale per batch gives
        assert not torch.allclose(one_scale[:2], alone[:2], atol=1e-3)
        want = F.gelu(linear(windows)) if activation == "gelu" else linear(windows)
        assert F.cosine_similarity(alone.flatten(), want.flatten(), dim=0) > 0.999


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
    if bf16_packing_problem() is None:
        packed = HeldLayer(copy.deepcopy(layer).bfloat16(), PackedLinear)(x.bfloat16(), mask).float()
        assert F.cosine_similarity(packed, want, dim=-1).min() > 0.999
    per_window = HeldLayer(copy.deepcopy(layer), CastLinear, per_window=True)(x, mask)  # MLP window by window
    torch.testing.assert_close(per_window, want, rtol=1e-5, atol=1e-5)
    int8 = HeldLayer(copy.deepcopy(layer), linear_form("int8", CPU), per_window=True)
    alone = torch.cat([int8(x[i : i + 1], mask[i : i + 1]) for i in range(3)])
    assert torch.equal(int8(x, mask), alone)  # one quantisation scale per window
    assert F.cosine_similarity(alone, want, dim=-1).min() > 0.99
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


# ---------------------------------------------------------------- accuracy and batch independence


@pytest.mark.parametrize("dtype, floor", [("bfloat16", 0.999), ("int8", 0.99)])
def test_packaged_model_features_stay_close_to_float32(packaged, speech, dtype, floor):
    reference = Embedder(packaged, device="cpu", dtype="float32").frame_features(speech, layer="all")
    embedder = Embedder(packaged, device="cpu", dtype=dtype)
    got = embedder.frame_features(speech, layer="all")
    assert embedder.dtype == dtype and all(g.dtype == torch.float32 for g in got)
    cosines = frame_cosines(reference, got)
    assert cosines.min() >= floor and cosines.max() < 1.0, (dtype, cosines.min())
    if dtype == "int8":  # what auto checks before it picks int8
        assert policy.int8_cosine(packaged) >= INT8_MIN_COSINE


# the documented tolerance of each dtype: worst absolute difference (float32, int8), or worst
# frame cosine against the clip alone (bf16)
BATCH_TOLERANCE = {"float32": ("abs", 1e-5), "int8": ("abs", 1e-4), "bfloat16": ("cosine", 0.9999)}


@pytest.mark.parametrize("dtype", ["float32", "int8", "bfloat16", "auto"])
def test_a_clip_is_the_same_alone_in_any_batch_and_order(packaged, speech, dtype):
    """Real-like clips of 1.3-12 s (the longest cut into two windows) with the packaged model,
    alone against batches of 8 and of 3 in reverse order, and inside `extract`'s file groups."""
    embedder = Embedder(packaged, device="cpu", dtype=dtype, batch_size=8, chunk_seconds=10.24)
    kind, tolerance = BATCH_TOLERANCE[embedder.dtype]
    alone = [embedder.frame_features([wave], layer="all")[0] for wave in speech]
    batched = embedder.frame_features(speech, layer="all")
    embedder.batch_size = 3
    reversed_threes = embedder.frame_features(speech[::-1], layer="all")[::-1]
    for other in (batched, reversed_threes):
        if kind == "abs":
            assert max_diff(alone, other) <= tolerance
        else:
            assert frame_cosines(alone, other).min() >= tolerance


# ---------------------------------------------------------------- each CPU class, capped

# env (kernels capped before torch starts, flags overridden), the flags the host needs, auto's pick
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MAEAST_CPU_FLAGS": " ".join(sorted(AVX2_FLAGS))}
CPU_CLASSES = {
    "avx2": (AVX2_ENV, {"avx2"}, "int8"),
    "avx512": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX512",
                "MAEAST_CPU_FLAGS": " ".join(SKYLAKE_FLAGS | {"avx512dq", "avx512vl"})},
               {"avx512f", "avx512bw", "avx512dq", "avx512vl"}, "int8"),
    "avx512_bf16": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16",
                     "MAEAST_CPU_FLAGS": " ".join(ZEN4_FLAGS | {"avx512dq", "avx512vl"})},
                    {"avx512_bf16", "avx512_vnni"}, "int8"),
    "amx": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX",
             "MAEAST_CPU_FLAGS": " ".join(AMX_FLAGS | {"avx512dq", "avx512vl"})}, {"amx_bf16"}, "bfloat16"),
}
CLASS_SCRIPT = Path(__file__).parent / "cpu_class_check.py"
CAP_VARIABLES = {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                 "FBGEMM_ENABLE_INSTRUCTIONS",
                 "MKL_ENABLE_INSTRUCTIONS", "MAEAST_CPU_FLAGS"}


@pytest.fixture(scope="module")
def speech_files(speech, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("speech")
    for i, wave in enumerate(speech):
        np.save(folder / f"clip{i}.npy", wave)
    return folder


@pytest.mark.parametrize("cpu_class", list(CPU_CLASSES))
def test_each_cpu_class(cpu_class, speech_files):
    """In a fresh process with the kernels capped to the class: doctor's facts, auto's pick, every
    dtype run or refused cleanly, each batch-independent within its tolerance and close to
    float32. A class above this CPU's units cannot be rehearsed here (it runs on such a CPU)."""
    env, needs, want_auto = CPU_CLASSES[cpu_class]
    if platform.machine().lower() not in X86 or not needs <= real_flags():
        pytest.skip(f"the {cpu_class} class needs {' '.join(sorted(needs))}, which this CPU lacks")
    clean = {k: v for k, v in os.environ.items() if k not in CAP_VARIABLES}
    result = subprocess.run([sys.executable, str(CLASS_SCRIPT), str(speech_files)], capture_output=True,
                            text=True, env={**clean, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["doctor"]["cpu"]["flags_overridden"] and record["doctor"]["auto"]["picks"] == want_auto
    assert record["auto"]["dtype"] == want_auto
    support = record["doctor"]["dtypes"]
    assert support["int8"]["status"] == "native"
    assert ("7-bit" in support["int8"]["note"]) == (cpu_class in ("avx2", "avx512"))
    assert support["bfloat16"]["status"] == ("emulated" if cpu_class in ("avx2", "avx512") else "native")
    assert ("bf16 emulated warning" in record["warnings"]) == (cpu_class in ("avx2", "avx512"))
    for dtype in ("float32", "int8", "bfloat16"):
        kind, tolerance = BATCH_TOLERANCE[dtype]
        got = record["dtypes"][dtype]
        assert got["batch_" + kind] <= tolerance if kind == "abs" else got["batch_cosine"] >= tolerance
        assert got["cosine_to_float32"] >= {"float32": 1.0 - 1e-6, "int8": 0.99, "bfloat16": 0.999}[dtype]


# ---------------------------------------------------------------- doctor


def test_doctor_says_what_runs_and_what_auto_picks(monkeypatch):
    monkeypatch.setenv("MAEAST_CPU_FLAGS", " ".join(AVX2_FLAGS))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    result = CliRunner().invoke(main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["cpu"]["class"] == "x86 AVX2" if platform.machine().lower() in X86 else True
    assert record["cpu"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and record["cpu"]["flags_overridden"]
    assert record["dtypes"]["bfloat16"]["status"] == "emulated"
    assert record["auto"]["picks"] == readme_auto(set(AVX2_FLAGS), "AVX2") and record["auto"]["reason"]
    text = CliRunner().invoke(main, ["doctor", "--model", "maeast-small"])
    assert text.exit_code == 0 and "auto       :" in text.output and "maeast-small" in text.output
    assert "bfloat16  emulated" in text.output and "(from MAEAST_CPU_FLAGS)" in text.output
    bad = CliRunner().invoke(main, ["doctor", "--model", "/nonexistent/model.pt"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output


# ---------------------------------------------------------------- consumers


def test_hear_and_s3prl_default_to_float32_and_take_a_dtype(tiny_patch_ckpt, monkeypatch):
    import hear_module

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

    from maeast_upstream.mae_ast.expert import UpstreamExpert

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
    assert model["dtype"] == readme_auto(set(cpu_report().flags), cpu_report().onednn_max_isa)
    assert fbank["dtype"] is None  # no encoder
    pinned = run_probe(root, [str(tiny_frame_ckpt)], tmp_path / "out32", replace(config, dtype="float32"))
    assert pinned["models"][0]["dtype"] == "float32"
    if model["dtype"] != "float32":  # the cache key holds the dtype used, not 'auto'
        assert pinned["models"][0]["cache"]["file"] != model["cache"]["file"]
