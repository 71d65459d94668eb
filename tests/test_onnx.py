"""ONNX export with the frontend inside, run by onnxruntime against the PyTorch float32 engine."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from helpers import chirp, make_checkpoint, make_model, noise, tone

from maeast_embed import __version__
from maeast_embed.checkpoint import load_model
from maeast_embed.cli import main
from maeast_embed.features import Embedder

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from maeast_embed.export.onnx import cached_onnx, export_model, read_metadata  # noqa: E402

TOLERANCE = 1e-4  # max abs difference to torch float32, every reported layer, padding included


def speech(text: str) -> np.ndarray:
    """espeak-ng speech at 16 kHz with a faint noise floor (generated tones when it is missing)."""
    if shutil.which("espeak-ng") is None:
        return tone(1.7, 180.0, seed=5) + noise(1.7, amp=0.02, seed=6)
    from maeast_embed.audio import resample

    wav = subprocess.run(["espeak-ng", "-s", "150", "--stdout", text], check=True, capture_output=True).stdout
    data, rate = sf.read(io.BytesIO(wav), dtype="float32")
    data = resample(torch.from_numpy(data), rate).numpy()
    return data + noise(data.size / 16000, amp=0.003, seed=7)[: data.size]


def clips() -> list[np.ndarray]:
    """Real-like clips of several lengths: speech, tones and sweeps over noise, noise, and clips
    shorter than one token step (zero-padded to it, as the engine does)."""
    return [
        speech("the quick brown fox"),
        tone(1.0, 300.0) + noise(1.0, amp=0.01, seed=1),
        noise(0.3, seed=2),
        chirp(2.37) + noise(2.37, amp=0.02, seed=3),
        tone(0.1, 500.0),
        tone(3.3, 200.0, seed=3) + noise(3.3, seed=4),
        speech("seven"),
    ]


def run(session, batch: list[np.ndarray], junk: float = 0.5):
    """One onnxruntime call on a padded batch (padding filled with junk: it must not matter)."""
    waves = np.full((len(batch), max(c.size for c in batch)), junk, dtype=np.float32)
    for row, clip in enumerate(batch):
        waves[row, : clip.size] = clip
    lengths = np.array([c.size for c in batch], dtype=np.int64)
    return session.run(None, {"waveforms": waves, "lengths": lengths})


def check_against_torch(model, path) -> float:
    data = clips()
    reference = Embedder(model, device="cpu", dtype="float32").frame_features(data, layer="all")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    last, layers, steps = run(session, data)
    worst = 0.0
    for row, ref in enumerate(reference):
        frames = ref.shape[1]
        assert steps[row] == frames
        worst = max(worst, float(np.abs(layers[:, row, :frames] - ref.numpy()).max()))
        np.testing.assert_array_equal(last[row], layers[-1, row])
        assert not layers[:, row, frames:].any()  # past a clip's frames: zeros
        alone = run(session, [data[row]])[1][:, 0, :frames]  # onnxruntime's GEMMs vary with the
        np.testing.assert_allclose(alone, layers[:, row, :frames], rtol=0, atol=1e-5)  # batch shape
    assert worst <= TOLERANCE, worst
    return worst


@pytest.mark.parametrize("name", ["tiny-patch", "tiny-frame"])
def test_random_models_match_the_torch_engine(name, tmp_path):
    model = make_model(name, seed=2)
    check_against_torch(model, export_model(model, tmp_path / "m.onnx"))


@pytest.mark.slow
def test_base_size_model_matches_the_torch_engine(tmp_path):
    """The official 12 x 768 patch shape (random weights): export and every layer within 1e-4."""
    model = make_model("patch", seed=3)
    check_against_torch(model, export_model(model, tmp_path / "base.onnx"))


def test_packaged_model_matches_and_carries_its_metadata(tmp_path):
    model = load_model("maeast-small")
    path = export_model(model, tmp_path / "small.onnx")
    meta = read_metadata(path)
    assert meta["model_sha256"] == model.checkpoint.sha256 and meta["model_name"] == "maeast-small"
    assert meta["maeast_embed_version"] == __version__ and meta["format"] == "maeast-embed/onnx/1"
    assert json.loads(meta["layers"]) == [1, 2, 3, 4, 5, 6] and json.loads(meta["config"])["embed_dim"] == 384
    assert json.loads(meta["normalisation"])["mean"] == float(model.batch_norm.running_mean)
    check_against_torch(model, path)


def test_chosen_layers_are_the_second_output(tmp_path):
    model = make_model("tiny-patch", seed=5, encoder_layers=3)
    session = ort.InferenceSession(str(export_model(model, tmp_path / "m.onnx", layers=(2, -1))))
    last, layers, steps = run(session, [tone(1.2), noise(0.7)])
    reference = Embedder(model, device="cpu", dtype="float32").frame_features([tone(1.2)], layer=(2, 3))[0]
    np.testing.assert_allclose(layers[:, 0, : steps[0]], reference.numpy(), rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(layers[1], last)


def test_quiet_bands_follow_the_exact_fbank_closer_than_the_float32_fft():
    """Bands 45 dB below a loud sweep: torch's float32 FFT strays from the exact (float64) fbank
    by ~6e-3 there; the graph's float64 DFT stays ~10x closer. Such clips differ from the torch
    engine by more than TOLERANCE because the reference itself is that far off."""
    from maeast_embed.export.onnx import WaveformEncoder
    from maeast_embed.frontend import _mel_matrix_cpu, _povey_window_cpu, kaldi_fbank

    wave = torch.from_numpy(chirp(2.37) + noise(2.37, amp=0.005, seed=3))[None]
    frames = wave.double().unfold(-1, 400, 160)
    frames = frames - frames.mean(-1, keepdim=True)
    frames = frames - 0.97 * torch.cat([frames[..., :1], frames[..., :-1]], -1)
    frames = frames * _povey_window_cpu().double()
    power = torch.fft.rfft(frames, n=512).abs().square()
    exact = (power @ _mel_matrix_cpu(128).double()).clamp_min(torch.finfo(torch.float32).eps).log()
    torch_error = (kaldi_fbank(wave)[0].double() - exact).abs().max()
    graph = WaveformEncoder(make_model("tiny-patch"), [0]).fbank(wave, torch.tensor([wave.shape[1]]))[0]
    graph_error = (graph.double() - exact).abs().max()
    assert torch_error > 2e-3 and graph_error < torch_error / 4, (torch_error, graph_error)


def test_cached_export_is_reused_and_remade_when_it_does_not_match(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "a.pt", "tiny-patch", seed=1)
    model = load_model(checkpoint)
    path = cached_onnx(model, "all")
    stamp = path.stat().st_mtime_ns
    assert cached_onnx(model, "all") == path and path.stat().st_mtime_ns == stamp  # reused

    import onnx

    def tamper(key: str, value: str) -> None:
        graph = onnx.load(str(path))
        for prop in graph.metadata_props:
            if prop.key == key:
                prop.value = value
        onnx.save(graph, str(path))

    for key, value in (("maeast_embed_version", "0.0.1"), ("model_sha256", "0" * 64)):
        tamper(key, value)
        assert cached_onnx(model, "all") == path
        assert read_metadata(path) == read_metadata(cached_onnx(model, "all"))
        assert read_metadata(path)[key] != value, key  # re-exported, not trusted
    path.write_bytes(b"not onnx")
    session = ort.InferenceSession(str(cached_onnx(model, "all")))
    assert run(session, [tone(0.4)])[2][0] == 2
    other = load_model(make_checkpoint(tmp_path / "b.pt", "tiny-patch", seed=2))
    assert cached_onnx(other, "all") != path  # another model, another file
    with torch.no_grad():  # weights changed in memory (same checkpoint): another graph
        model.encoder.layers[0].fc1.bias.add_(0.5)
    changed = cached_onnx(model, "all")
    assert changed != path and read_metadata(changed)["model_sha256"] == read_metadata(path)["model_sha256"]
    in_memory = make_model("tiny-frame", seed=3)  # no checkpoint file at all
    embedder = Embedder(in_memory, device="cpu", backend="onnxruntime")
    reference = Embedder(in_memory, device="cpu", dtype="float32").frame_features([tone(0.8)])[0]
    torch.testing.assert_close(embedder.frame_features([tone(0.8)])[0], reference, rtol=0, atol=TOLERANCE)


def test_cli_export_onnx_with_chosen_layers(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "m.pt", "tiny-frame", seed=4)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", str(checkpoint), "--to", "onnx", str(out), "--layer", "1"])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    last, layers, steps = run(session, [tone(0.5)])
    assert layers.shape[:2] == (1, 1) and steps[0] == 24 and last.shape[1] >= 24  # 48 fbank frames
    result = CliRunner().invoke(main, ["export", str(checkpoint), "--to", "onnx", str(out), "--layer", "9"])
    assert result.exit_code != 0 and "layer numbers in 1..2" in result.output


def test_onnxruntime_backend_gives_the_torch_engines_features(tmp_path):
    model = load_model(make_checkpoint(tmp_path / "m.pt", "tiny-patch", seed=6))
    data = [*clips()[:3], tone(4.0, 260.0, seed=8) + noise(4.0, amp=0.02, seed=9)]  # the last is chunked
    kwargs = dict(device="cpu", chunk_seconds=1.28, batch_size=3)
    torch_engine = Embedder(model, dtype="float32", **kwargs)
    embedder = Embedder(model, backend="onnxruntime", **kwargs)
    assert (embedder.dtype, embedder.backend) == ("float32", "onnxruntime")
    for layer, freq_pool in (("all", "concat"), ("last", "mean"), ("mean", "concat"), ((1, -1), "mean")):
        reference = torch_engine.frame_features(data, layer=layer, freq_pool=freq_pool)
        ours = embedder.frame_features(data, layer=layer, freq_pool=freq_pool)
        for a, b in zip(ours, reference, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=TOLERANCE)


def test_extract_with_the_onnxruntime_backend(tmp_path):
    from helpers import write_audio

    from maeast_embed.errors import ConfigError
    from maeast_embed.extract import read_manifest

    checkpoint = make_checkpoint(tmp_path / "m.pt", "tiny-patch", seed=7)
    audio = tmp_path / "audio"
    for index, clip in enumerate(clips()[:4]):
        write_audio(audio / f"{index}.wav", clip, subtype="FLOAT")
    runner = CliRunner()
    base = ["extract", str(audio), "--model", str(checkpoint), "--layer", "all", "-q"]
    assert runner.invoke(main, [*base, "-o", str(tmp_path / "torch"), "--dtype", "float32"]).exit_code == 0
    result = runner.invoke(main, [*base, "-o", str(tmp_path / "ort"), "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    for index in range(4):
        a = np.load(tmp_path / "torch" / f"{index}.wav.npz")
        b = np.load(tmp_path / "ort" / f"{index}.wav.npz")
        np.testing.assert_array_equal(a["timestamps"], b["timestamps"])
        np.testing.assert_allclose(b["embedding"], a["embedding"], rtol=0, atol=TOLERANCE)
    header = read_manifest(tmp_path / "ort" / "manifest.jsonl")[0][-1]
    assert header["options"]["backend"] == "onnxruntime" and header["signature"]["backend"] == "onnxruntime"
    assert header["options"]["dtype"] == "float32"
    result = runner.invoke(main, [*base, "-o", str(tmp_path / "ort"), "--backend", "onnxruntime"])
    assert result.exit_code == 0  # resumed: everything skipped
    _, files = read_manifest(tmp_path / "ort" / "manifest.jsonl")
    assert {record["status"] for record in files.values()} == {"skipped"}
    result = runner.invoke(main, [*base, "-o", str(tmp_path / "ort")])  # the torch backend: other settings
    assert result.exit_code == 1 and "other settings" in result.output
    with pytest.raises(ConfigError, match="float32 on the CPU"):
        Embedder(checkpoint, backend="onnxruntime", dtype="bfloat16")
