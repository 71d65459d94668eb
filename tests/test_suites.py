"""maeast_suites: the X-ARES encoder contract against the engine, X-ARES's runner plumbing, and
(marked `suites`, run with `-m suites` where xares and mteb are installed) the real libraries."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from helpers import chirp, noise, tone

from maeast_embed.cli import main as cli_main
from maeast_embed.errors import AudioError, ConfigError
from maeast_embed.features import Embedder
from maeast_suites import xares_run
from maeast_suites.xares import MaeAstEncoder

SR = 16000


@pytest.fixture(scope="module")
def encoder(tiny_patch_ckpt):
    return MaeAstEncoder(str(tiny_patch_ckpt))


def steps(num_samples: int, kernel_time: int) -> int:
    return (1 + (num_samples - 400) // 160) // kernel_time


def test_encoder_contract_shapes_hop_and_dims(encoder, tiny_frame_ckpt):
    cfg = encoder.model.cfg
    assert encoder.sampling_rate == SR and encoder.hop_size_in_ms == cfg.kernel_time * 10.0
    assert encoder.output_dim == cfg.embed_dim * cfg.tokens_per_step  # frequency tokens concatenated
    out = encoder(torch.randn(2, 50000))  # what X-ARES's check_audio_encoder feeds
    assert out.shape == (2, steps(50000, cfg.kernel_time), encoder.output_dim) and out.dtype == torch.float32
    # the hop is what X-ARES reads it as: duration / frames, to within one step
    assert abs(50000 / SR * 1000 / out.shape[1] - encoder.hop_size_in_ms) < encoder.hop_size_in_ms / 4
    frame = MaeAstEncoder(str(tiny_frame_ckpt), layer="all")
    fcfg = frame.model.cfg
    assert frame.hop_size_in_ms == 20.0 and frame.output_dim == fcfg.encoder_layers * fcfg.embed_dim
    assert frame(torch.randn(1, 16000)).shape == (1, steps(16000, 2), frame.output_dim)
    mean = MaeAstEncoder(encoder.model, freq_pool="mean", layer=[1, -1])
    assert mean.output_dim == 2 * cfg.embed_dim
    assert mean(torch.randn(1, 8000)).shape[-1] == mean.output_dim
    assert encoder(torch.zeros(1, 100)).shape == (1, 1, encoder.output_dim)  # shorter than a step: padded


def test_encoder_equals_the_engine_clip_by_clip_in_any_batch(encoder, tiny_patch_ckpt):
    clips = [tone(2.0, 330.0), noise(2.0, seed=1), chirp(2.0)]
    batch = torch.from_numpy(np.stack(clips)).float()
    engine = Embedder(str(tiny_patch_ckpt), device="cpu", dtype="float32")
    alone = [engine.frame_features([c])[0][0] for c in clips]  # [T, D'] each, encoded alone
    together = encoder(batch)
    for row, expected in enumerate(alone):
        assert torch.equal(together[row], expected)
    assert torch.equal(encoder(batch[[2, 0]])[0], together[2])  # order and batch mates do not matter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoder_follows_the_module_to_cuda(tiny_patch_ckpt):
    wave = torch.from_numpy(np.stack([tone(1.5), noise(1.5)])).float()
    on_cpu = MaeAstEncoder(str(tiny_patch_ckpt))(wave)
    moved = MaeAstEncoder(str(tiny_patch_ckpt)).to("cuda")  # as X-ARES's task does
    out = moved(wave.cuda())
    assert out.device.type == "cuda" and moved.embedder().device.type == "cuda"
    torch.testing.assert_close(out.cpu(), on_cpu, atol=1e-4, rtol=1e-4)


def test_layers_concatenate_per_step_in_order(encoder):
    wave = torch.from_numpy(chirp(1.5)).float()[None]
    both = MaeAstEncoder(encoder.model, layer="1,2")(wave)
    first = MaeAstEncoder(encoder.model, layer=1)(wave)
    second = MaeAstEncoder(encoder.model, layer=2)(wave)
    assert torch.equal(both, torch.cat([first, second], dim=-1))


def test_bad_input_and_options_are_refused(encoder):
    for bad in (torch.zeros(16000), torch.zeros(2, 0), np.zeros((1, 16000))):
        with pytest.raises(AudioError, match=r"\[B, T\]"):
            encoder(bad)
    with pytest.raises(AudioError, match="NaN"):
        encoder(torch.full((1, 16000), float("nan")))
    for options in ({"layer": 99}, {"freq_pool": "max"}, {"dtype": "float64"}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            MaeAstEncoder(encoder.model, **options)


def wav_bytes(wave: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_shard_audio_is_decoded_by_the_core_as_torchaudio_load_would(monkeypatch):
    import webdataset

    wave = tone(0.5, 440.0, sr=22050)
    decoded, rate = xares_run.decode_audio("clip.wav", wav_bytes(wave, 22050))
    assert rate == SR and decoded.shape == (1, round(0.5 * SR))  # [channels, samples] at 16 kHz
    assert xares_run.decode_audio("clip.json", b"{}") is None  # not audio: left to other decoders
    unpatched(monkeypatch)
    monkeypatch.setattr(webdataset, "torch_audio", None)
    xares_run.install_shims()
    assert webdataset.torch_audio is xares_run.decode_audio


def unpatched(monkeypatch):
    """webdataset's own shuffle, put back after the test (install_shims patches the module)."""
    import webdataset.filters

    plain = getattr(webdataset.filters.shuffle, "unseeded", webdataset.filters.shuffle)
    monkeypatch.setattr(webdataset, "shuffle", plain)
    monkeypatch.setattr(webdataset.filters, "shuffle", plain)
    return plain


def test_unseeded_shuffles_are_drawn_from_torchs_generator(monkeypatch):
    """X-ARES seeds torch per task; its webdataset shuffles seed from the pid and the clock."""
    import webdataset.filters

    plain = unpatched(monkeypatch)

    def orders(shuffle, seed: int) -> list[list[int]]:
        torch.manual_seed(seed)
        stage = shuffle(50, 10)
        return [list(stage(iter(range(50)))) for _ in range(2)]  # two epochs

    assert orders(plain, 0) != orders(plain, 0)  # what X-ARES gets without the shim
    xares_run.install_shims()
    xares_run.install_shims()  # idempotent: wrapped once
    seeded = webdataset.filters.shuffle
    assert webdataset.shuffle is seeded and seeded.unseeded is plain
    first, again, other = orders(seeded, 0), orders(seeded, 0), orders(seeded, 1)
    assert first == again and first != other
    assert first[0] != first[1] and sorted(first[0]) == list(range(50))  # each epoch shuffles anew
    assert list(seeded(50, 10, seed=3)(iter(range(50)))) == list(plain(50, 10, seed=3)(iter(range(50))))


def test_generated_encoder_module_is_what_the_runner_imports(tmp_path, tiny_patch_ckpt, monkeypatch):
    options = {"model": str(tiny_patch_ckpt), "layer": "last", "freq_pool": "mean", "dtype": "float32"}
    name = xares_run.encoder_module(tmp_path, options)
    assert name == xares_run.encoder_module(tmp_path, dict(reversed(options.items())))  # same options
    assert name != xares_run.encoder_module(tmp_path, {**options, "layer": "1"})
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name[: -len(".py")])
    found = [attr for attr in dir(module) if attr.endswith("Encoder")]  # X-ARES's attr_from_py_path rule
    assert len(found) == 1 and found[0] == xares_run.encoder_class_name(options)
    plain = importlib.import_module("maeast_suites.xares")  # `xares.run maeast_suites/xares.py` too
    assert [attr for attr in dir(plain) if attr.endswith("Encoder")] == ["MaeAstEncoder"]
    built = getattr(module, found[0])()  # built with no arguments, as the runner does
    assert isinstance(built, MaeAstEncoder) and built.freq_pool == "mean"
    assert built.output_dim == built.model.cfg.embed_dim


def test_task_files_and_unknown_tasks(tmp_path):
    task = tmp_path / "my_task.py"
    task.write_text("")
    assert xares_run.task_path(str(task)) == ("my_task.py", tmp_path)
    if importlib.util.find_spec("xares") is None:
        pytest.skip("naming X-ARES's own tasks needs xares (pip install 'maeast-embed[suites]')")
    assert xares_run.task_path("esc50") == ("tasks/esc50_task.py", None)
    with pytest.raises(ConfigError, match="unknown X-ARES task 'nope'.*esc50"):
        xares_run.task_path("nope")


def test_suite_commands_are_listed_and_say_what_to_install():
    runner = CliRunner()
    assert {"run", "check"} <= set(runner.invoke(cli_main, ["xares", "--help"]).output.split())
    assert {"run", "meta"} <= set(runner.invoke(cli_main, ["mteb", "--help"]).output.split())
    result = runner.invoke(cli_main, ["xares", "run", "--help"])
    assert result.exit_code == 0 and "Zenodo" in result.output
    for suite, command in (("xares", "check"), ("mteb", "meta")):
        if importlib.util.find_spec(suite) is None:
            result = runner.invoke(cli_main, [suite, command])
            assert result.exit_code == 1 and "pip install 'maeast-embed[suites]'" in result.output


# --- against the real libraries (pip install 'maeast-embed[suites]'; pytest -m suites) ---


@pytest.mark.suites
def test_xares_own_checker_passes(encoder, tiny_frame_ckpt):
    checker = pytest.importorskip("xares.audio_encoder_checker", reason="needs xares").check_audio_encoder
    assert checker(encoder) is True
    assert checker(MaeAstEncoder(str(tiny_frame_ckpt), layer="all", freq_pool="mean")) is True
    assert checker(MaeAstEncoder()) is True  # the packaged model


def write_task(root: Path) -> Path:
    """A two-class task in X-ARES's format: WebDataset shards of wav + json, a task file."""
    data = root / "env" / "tones"
    data.mkdir(parents=True)
    for split, count in (("train", 16), ("valid", 8), ("test", 8)):
        with tarfile.open(data / f"{split}-000000.tar", "w") as tar:
            for i in range(count):
                label = ("low", "high")[i % 2]
                wave = tone(1.0, (300.0 if label == "low" else 3000.0) * (1 + 0.01 * i), seed=i)
                wave = (wave + noise(1.0, amp=0.02, seed=100 + i)).astype(np.float32)
                for name, payload in ((f"{split}{i:03d}.wav", wav_bytes(wave)),
                                      (f"{split}{i:03d}.json", json.dumps({"label": label}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (data / ".audio_tar_ready").touch()  # present: stage 0 downloads nothing
    task = root / "tones_task.py"
    task.write_text(
        "from xares.task import TaskConfig\n\n\n"
        "def tones_config(encoder):\n"
        "    return TaskConfig(encoder=encoder, name='tones', formal_name='Tones', output_dim=2,\n"
        "                      epochs=10, batch_size_train=8,\n"
        "                      label_processor=lambda x: {'low': 0, 'high': 1}[x['label']])\n"
    )
    return task


@pytest.mark.suites
def test_xares_run_scores_a_local_task_end_to_end(tmp_path, tiny_patch_ckpt):
    pytest.importorskip("xares", reason="needs xares")
    task = write_task(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "maeast_embed.cli", "xares", "run", str(task), "--model", str(tiny_patch_ckpt),
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Tones" in result.stdout
    (encoded,) = (tmp_path / "env" / "tones" / "embeddings").glob("MaeAst*Encoder")  # the generated class
    assert len(list(encoded.glob("wds-encoded-*.tar"))) == 3
    scores = tmp_path / "env" / "tones" / "checkpoints" / encoded.name
    mlp, knn = (float((scores / f"{kind}_score.txt").read_text().split()[0]) for kind in ("mlp", "knn"))
    assert mlp >= 0.75 and knn >= 0.75, (mlp, knn)  # tones an octave apart are told apart


def tones_task():
    """A two-class audio classification task for mteb, built from local audio."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.task_metadata import TaskMetadata

    def split(count: int, seed: int) -> Dataset:
        audio = [{"array": tone(1.0, (300.0, 3000.0)[i % 2] * (1 + 0.01 * (i % 8)), seed=seed + i)
                  + noise(1.0, amp=0.02, seed=seed + i), "sampling_rate": SR} for i in range(count)]
        return Dataset.from_dict({"audio": audio, "label": [i % 2 for i in range(count)]})

    class LocalTones(AbsTaskClassification):
        metadata = TaskMetadata(
            name="LocalTones", description="Low and high tones in noise, made by the test.", reference=None,
            dataset={"path": "local/tones", "revision": "1"}, type="AudioClassification", category="a2t",
            eval_splits=["test"], eval_langs=["zxx-Zxxx"], main_score="accuracy",
            date=("2026-01-01", "2026-01-01"), domains=[], task_subtypes=[], license="cc0-1.0",
            annotations_creators="derived", dialect=[], modalities=["audio"], sample_creation="created",
            bibtex_citation="",
        )
        input_column_name = "audio"

        def load_data(self, **kwargs):
            # plain {array, sampling_rate} rows: datasets' Audio feature would decode through TorchCodec
            self.dataset = DatasetDict({"train": split(16, 0), "test": split(8, 100)})
            self.data_loaded = True

    return LocalTones()


@pytest.mark.suites
def test_mteb_model_meta_and_registry(tiny_patch_ckpt):
    mteb = pytest.importorskip("mteb", reason="needs mteb")
    from maeast_embed.digest import sha256_file
    from maeast_suites.mteb_model import MaeAstMtebModel, model_meta, register

    meta = model_meta(tiny_patch_ckpt, freq_pool="mean")
    assert meta.name == "maeast-embed/tiny_patch" and meta.revision == sha256_file(tiny_patch_ckpt)
    encoder = MaeAstEncoder(str(tiny_patch_ckpt), freq_pool="mean")
    assert meta.embed_dim == encoder.output_dim
    assert meta.n_parameters == sum(p.numel() for p in encoder.model.parameters())
    assert meta.modalities == ["audio"] and meta.framework == ["PyTorch"] and meta.open_weights
    assert meta.loader_kwargs == {"model": str(tiny_patch_ckpt), "freq_pool": "mean"}
    register(meta)
    assert mteb.get_model_meta(meta.name) is meta
    assert isinstance(meta.load_model(), MaeAstMtebModel)
    small = model_meta()  # the packaged model: its card's licence, the checksum it ships with
    assert small.name == "maeast-embed/maeast-small" and small.license == "cc-by-4.0"


@pytest.mark.suites
def test_mteb_encode_gives_the_engines_clip_embeddings(tiny_patch_ckpt):
    pytest.importorskip("mteb", reason="needs mteb")
    from datasets import Dataset
    from torch.utils.data import DataLoader

    from maeast_suites.mteb_model import model_meta

    task = tones_task()
    clips = [tone(1.0, 440.0), noise(2.5, seed=3), chirp(0.7)]  # lengths differ within a batch
    dataset = Dataset.from_dict({"audio": [{"array": c, "sampling_rate": SR} for c in clips]})
    model = model_meta(tiny_patch_ckpt).load_model()
    got = model.encode(DataLoader(dataset, batch_size=2), task_metadata=task.metadata, hf_split="test",
                       hf_subset="default")
    engine = Embedder(str(tiny_patch_ckpt), device="cpu", dtype="float32")
    expected = np.stack([e[0].numpy() for e in engine.clip_embeddings(clips)])
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.suites
def test_mteb_evaluate_scores_a_local_audio_task(tiny_patch_ckpt):
    mteb = pytest.importorskip("mteb", reason="needs mteb")
    from maeast_suites.mteb_model import model_meta, register

    meta = register(model_meta(tiny_patch_ckpt))
    result = mteb.evaluate(mteb.get_model_meta(meta.name), tones_task(), cache=None, show_progress_bar=False)
    assert not result.exceptions
    (scores,) = result.task_results
    assert scores.task_name == "LocalTones" and scores.get_score() >= 0.75, scores.scores
