"""probes/: dataset readers, splits, bad input, the embedding cache, linear probe, fine-tuning, CLI.

Every dataset is written by `probes.synthetic.write_dataset` (5 classes of tones, chirps, noises).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from maeast_embed.checkpoint import load_model, sha256_file
from maeast_embed.cli import main
from maeast_embed.errors import MAEASTError
from maeast_embed.features import Embedder
from probes import ProbeWarning, RunConfig, load_dataset, make_splits, read_audio, run_probe
from probes.datasets import read_clip
from probes.embeddings import EmbedOptions, fbank_stats, get_embeddings, resolve_models
from probes.finetune import Classifier, FinetuneConfig, param_groups
from probes.linear import ProbeConfig, probe_split
from probes.synthetic import SOUND_CLASSES, write_dataset

FAST = ProbeConfig(l2_grid=(1e-1, 1e-3), max_iter=50)


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("esc50"), "esc50", per_class=10, seconds=1.0, seed=1)


@pytest.fixture(scope="module")
def tiny_model(tiny_patch_ckpt):
    return load_model(tiny_patch_ckpt)


def config(tmp_path, **overrides) -> RunConfig:
    return RunConfig(**{"cache_dir": tmp_path / "cache", "device": "cpu", "probe": FAST, **overrides})


# --- readers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout, partition, groups",
    [
        ("folder", "none", []),
        ("esc50", "folds", ["1", "2", "3", "4", "5"]),
        ("speechcommands", "splits", ["test", "train", "valid"]),
        ("hear", "folds", [f"fold{i:02d}" for i in range(5)]),
    ],
)
def test_readers_detect_and_read_every_layout(tmp_path, layout, partition, groups):
    path = write_dataset(tmp_path / layout, layout, per_class=5, seconds=0.5)
    ds = load_dataset(path)
    assert ds.layout == layout and ds.partition == partition and ds.groups == groups
    assert len(ds) == 25 and len(ds.classes) == 5 and not ds.multilabel
    assert np.bincount(ds.targets()).tolist() == [5] * 5
    assert all(c.path.is_file() for c in ds.clips)
    # the generator names every file after its sound (ESC-50: the class index ends the name)
    for clip in ds.clips:
        relative = clip.path.relative_to(path).as_posix()
        named = SOUND_CLASSES[int(clip.path.stem.split("-")[-1])] if layout == "esc50" else relative
        assert clip.labels[0] in named


def test_speech_commands_lists_decide_splits_and_background_is_skipped(tmp_path):
    root = write_dataset(tmp_path / "sc", "speechcommands", per_class=5, seconds=0.5)
    ds = load_dataset(root)
    listed_test = set((root / "testing_list.txt").read_text().split())
    by_split = {g: {c.path.relative_to(root).as_posix() for c in ds.clips if c.group == g} for g in ds.groups}
    assert by_split["test"] == listed_test
    assert not any("_background_noise_" in str(c.path) for c in ds.clips)
    (root / "testing_list.txt").write_text("tone_low/missing_nohash_0.wav\n")
    with pytest.raises(MAEASTError, match="not in any class folder"):
        load_dataset(root)


@pytest.mark.parametrize("group", ["fold", "split", None])
def test_csv_reader_columns(tmp_path, group):
    path = write_dataset(tmp_path / "csv", "csv", per_class=5, seconds=0.5, csv_group=group)
    ds = load_dataset(path)
    assert ds.layout == "csv" and len(ds) == 25
    assert ds.partition == {"fold": "folds", "split": "splits", None: "none"}[group]
    splits = make_splits(ds, num_folds=5)
    assert len(splits) == (1 if group == "split" else 5)


@pytest.mark.parametrize("layout", ["csv", "hear"])
def test_multilabel_readers(tmp_path, layout):
    path = write_dataset(tmp_path / layout, layout, per_class=6, seconds=0.5, multilabel=True)
    ds = load_dataset(path)
    assert ds.multilabel
    counts = ds.label_matrix().sum(1)
    assert set(counts.tolist()) == {1.0, 2.0} and (counts == 2).sum() == 15


def test_read_audio_mixes_to_mono_and_resamples(tmp_path):
    import soundfile as sf

    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 8000)
    wave = read_audio(tmp_path / "s.wav")
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    assert abs(np.abs(wave).max() - 0.25) < 0.01


# --- splits ----------------------------------------------------------------------------------


def test_kfold_splits_rotate_test_and_validation_folds(esc50):
    ds = load_dataset(esc50)
    splits = make_splits(ds)
    fold = np.array([int(c.group) for c in ds.clips])
    assert [s.name for s in splits] == [f"fold {i}" for i in range(1, 6)]
    for i, s in enumerate(splits, start=1):
        assert set(fold[s.test]) == {i} and set(fold[s.valid]) == {i % 5 + 1}
        assert len(np.intersect1d(s.train, np.concatenate([s.valid, s.test]))) == 0
        assert len(s.train) + len(s.valid) + len(s.test) == len(ds)
    assert sorted(np.concatenate([s.test for s in splits]).tolist()) == list(range(len(ds)))


def test_generated_folds_are_stratified_and_seeded(tmp_path):
    ds = load_dataset(write_dataset(tmp_path / "f", "folder", per_class=5, seconds=0.5))
    targets = ds.targets()
    splits = make_splits(ds, num_folds=5, seed=3)
    for s in splits:  # 5 clips per class, 5 folds: one clip of every class per fold
        assert sorted(targets[s.test].tolist()) == [0, 1, 2, 3, 4]
    again = make_splits(ds, num_folds=5, seed=3)
    other = make_splits(ds, num_folds=5, seed=4)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again, strict=True))
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(splits, other, strict=True))


def test_missing_validation_split_is_carved_from_train(tmp_path):
    path = write_dataset(tmp_path / "csv", "csv", per_class=10, seconds=0.5, csv_group="split")
    text = path.read_text().replace(",valid\n", ",train\n")
    path.write_text(text)
    ds = load_dataset(path)
    (split,) = make_splits(ds, valid_fraction=0.25)
    assert len(split.test) == 10 and len(split.train) + len(split.valid) == 40
    assert np.bincount(ds.targets()[split.valid], minlength=5).min() >= 1


# --- bad input -------------------------------------------------------------------------------


def test_bad_datasets_give_clear_errors(tmp_path):
    with pytest.raises(MAEASTError, match="not found"):
        load_dataset(tmp_path / "nowhere")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.wav,x\n")
    with pytest.raises(MAEASTError, match="path,label"):
        load_dataset(bad)
    hear = write_dataset(tmp_path / "hear", "hear", per_class=5, seconds=0.5)
    labels = json.loads((hear / "fold01.json").read_text())
    labels[next(iter(labels))] = ["not_a_label"]
    (hear / "fold01.json").write_text(json.dumps(labels))
    with pytest.raises(MAEASTError, match="not in labelvocabulary"):
        load_dataset(hear)
    (hear / "fold01.json").write_text("{}")
    with pytest.raises(MAEASTError, match="fold 'fold01' .* is empty"):
        make_splits(load_dataset(hear))


def test_unknown_test_labels_and_single_clip_classes_warn(tmp_path):
    path = write_dataset(tmp_path / "csv", "csv", per_class=5, seconds=0.5, csv_group="split")
    lines = path.read_text().splitlines()
    test_row = next(i for i, line in enumerate(lines) if line.endswith(",test"))
    lines[test_row] = lines[test_row].split(",")[0] + ",only_in_test,test"
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(ProbeWarning, match="single clip"):
        ds = load_dataset(path)
    with pytest.warns(ProbeWarning, match="1 test clip.*never seen in training.*only_in_test"):
        make_splits(ds)


def test_unreadable_files_are_skipped_and_counted(tmp_path, tiny_frame_ckpt):
    root = write_dataset(tmp_path / "d", "folder", per_class=5, seconds=0.5, corrupt=2)
    with pytest.warns(ProbeWarning, match="2 unreadable clip"):
        report = run_probe(root, [str(tiny_frame_ckpt)], tmp_path / "out", config(tmp_path))
    model = report["models"][0]
    assert model["skipped"]["count"] == 2 and len(model["skipped"]["files"]) == 2
    assert sum(f["n_train"] + f["n_valid"] + f["n_test"] for f in model["folds"][:1]) == 25
    assert any("unreadable" in w for w in report["warnings"])
    assert model["embedding_shape"] == [2, 64]  # frame model: one token per step


# --- embeddings and cache --------------------------------------------------------------------


def test_cached_embeddings_equal_the_engine_and_rerun_is_from_cache(esc50, tiny_model, tmp_path, monkeypatch):
    ds = load_dataset(esc50)
    (spec,) = resolve_models([tiny_model.checkpoint.path])
    options = EmbedOptions(pool="meanmax")
    first = get_embeddings(spec, ds, options, device="cpu", cache_root=tmp_path)
    assert not first.from_cache and first.values.shape == (50, 2, 2 * 8 * 64) and first.ok.all()
    direct = Embedder(tiny_model, device="cpu").clip_embeddings(
        [read_audio(ds.clips[i].path) for i in (0, 17)], layer="all", pool="meanmax"
    )
    assert torch.allclose(torch.from_numpy(first.values[[0, 17]]), torch.stack(direct), atol=1e-5)

    import probes.embeddings as embeddings

    def no_compute(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(embeddings, "make_embed_fn", no_compute)
    again = get_embeddings(spec, ds, options, device="cpu", cache_root=tmp_path)
    assert again.from_cache and np.array_equal(again.values, first.values)
    with pytest.raises(AssertionError, match="cache should"):  # other options -> another key
        get_embeddings(spec, ds, EmbedOptions(pool="mean"), device="cpu", cache_root=tmp_path)


def test_mismatched_or_corrupt_cache_warns_and_recomputes(esc50, tiny_model, tmp_path):
    ds = load_dataset(esc50)
    (spec,) = resolve_models([tiny_model.checkpoint.path])
    first = get_embeddings(spec, ds, EmbedOptions(), device="cpu", cache_root=tmp_path)
    path = tmp_path / first.cache_file.rsplit("/", 1)[-1]
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        values, ok = data["values"], data["ok"]
    meta["model_hash"] = "0" * 64
    np.savez(path.with_suffix(".tmp.npz"), values=values[:3], ok=ok[:3], meta=np.array(json.dumps(meta)))
    path.with_suffix(".tmp.npz").replace(path)
    with pytest.warns(ProbeWarning, match="does not match this run.*model_hash"):
        again = get_embeddings(spec, ds, EmbedOptions(), device="cpu", cache_root=tmp_path)
    assert not again.from_cache and np.allclose(again.values, first.values, atol=1e-6)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(ProbeWarning, match="unreadable"):
        assert not get_embeddings(spec, ds, EmbedOptions(), device="cpu", cache_root=tmp_path).from_cache


def test_fbank_baseline_is_mean_and_std_of_kaldi_fbank():
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 12345)]
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi", reason="the Kaldi fbank reference")
    stats = fbank_stats(waves)
    assert stats.shape == (2, 1, 256)
    for wave, row in zip(waves, stats[:, 0], strict=True):
        ref = kaldi.fbank(torch.from_numpy(wave)[None], num_mel_bins=128, use_energy=False,
                          sample_frequency=16000)
        expected = torch.cat([ref.mean(0), ref.std(0, unbiased=False)])
        assert torch.allclose(row, expected, atol=1e-3)


def test_random_baseline_is_the_same_architecture_at_init(tiny_model):
    ckpt = tiny_model.checkpoint.path
    specs = resolve_models([ckpt, "random", "random:tiny-frame"], seed=7)
    random = specs[1].model
    assert random.cfg == tiny_model.cfg and specs[2].model.cfg.variant == "frame"
    assert torch.equal(random.batch_norm.running_mean, tiny_model.batch_norm.running_mean)
    assert not torch.equal(random.post_extract_proj.weight, tiny_model.post_extract_proj.weight)
    assert specs[1].model_hash == resolve_models(["random:" + ckpt], seed=7)[0].model_hash
    assert specs[1].model_hash != resolve_models(["random:" + ckpt], seed=8)[0].model_hash
    with pytest.raises(MAEASTError, match="architecture of a checkpoint"):
        resolve_models(["random"])


# --- linear probe ----------------------------------------------------------------------------


def _blobs(n_per_class=12, classes=5, dim=16, layers=3, seed=0):
    """Gaussian blobs whose class signal lives only in layer 2 (others are noise)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.standard_normal((len(y), layers, dim)).astype(np.float32)
    x[:, 1] += 3 * rng.standard_normal((classes, dim)).astype(np.float32)[y]
    return x, y


def _split(y, seed=0):
    from probes.datasets import Split, stratified_assign

    part = stratified_assign(np.arange(len(y)), y, 3, np.random.default_rng(seed))
    return Split("s", *(np.flatnonzero(part == k) for k in range(3)))


def test_layer_sweep_and_weighted_sum_find_the_informative_layer():
    x, y = _blobs()
    split = _split(y)
    kwargs = dict(num_classes=5, multilabel=False, cfg=FAST, device=torch.device("cpu"))
    sweep = probe_split(x, y, split, "all", **kwargs)
    accuracy = [r["test"]["accuracy"] for r in sweep["per_layer"]]
    assert sweep["layer"] == 2 and accuracy[1] == 1.0 and max(accuracy[0], accuracy[2]) < 0.6
    weighted = probe_split(x, y, split, "weighted", **kwargs)
    assert np.isclose(sum(weighted["layer_weights"]), 1.0) and np.argmax(weighted["layer_weights"]) == 1
    assert weighted["test"]["accuracy"] >= 0.9
    assert probe_split(x, y, split, -1, **kwargs)["layer"] == 3


def test_regularisation_is_chosen_on_validation_only():
    x, y = _blobs(seed=1)
    x[:, 1] *= 0.15  # a weak signal so that the penalty matters
    split = _split(y, seed=1)
    cfg = ProbeConfig(l2_grid=(1.0, 1e-1, 1e-2, 1e-3, 1e-4), max_iter=50)
    kwargs = dict(num_classes=5, multilabel=False, cfg=cfg, device=torch.device("cpu"))
    base = probe_split(x, y, split, 2, **kwargs)
    scrambled = y.copy()
    scrambled[split.test] = np.random.default_rng(0).permutation(5)[y[split.test]]
    other = probe_split(x, scrambled, split, 2, **kwargs)
    assert other["l2"] == base["l2"] and other["valid"] == base["valid"]
    assert other["test"]["accuracy"] != base["test"]["accuracy"]


def test_multilabel_probe_reports_map(tmp_path):
    path = write_dataset(tmp_path / "ml", "hear", per_class=6, seconds=0.5, multilabel=True)
    report = run_probe(path, ["fbank"], tmp_path / "out", config(tmp_path))
    summary = report["models"][0]["summary"]
    assert set(summary) == {"mAP", "accuracy", "macro_f1"} and summary["mAP"]["mean"] > 0.5
    assert "confusion" not in report["models"][0]


def test_kfold_report_with_sweep_and_baselines(esc50, tiny_patch_ckpt, tmp_path):
    out = tmp_path / "report"
    report = run_probe(esc50, [str(tiny_patch_ckpt), "fbank"], out, config(tmp_path, layer="all"))
    on_disk = json.loads((out / "report.json").read_text())
    fingerprint = load_dataset(esc50).fingerprint()
    assert on_disk["dataset"]["fingerprint"] == report["dataset"]["fingerprint"] == fingerprint
    model, fbank = on_disk["models"]
    assert model["model_hash"] == sha256_file(tiny_patch_ckpt) and fbank["model_hash"].startswith("fbank")
    assert len(model["folds"]) == 5 and all(f["n_test"] == 10 for f in model["folds"])
    accuracy = [f["test"]["accuracy"] for f in model["folds"]]
    assert np.isclose(model["summary"]["accuracy"]["mean"], np.mean(accuracy))
    assert np.isclose(model["summary"]["accuracy"]["std"], np.std(accuracy))
    assert [e["layer"] for e in model["per_layer"]] == [1, 2] and "per_layer" not in fbank
    assert all(f["l2"] in FAST.l2_grid for f in model["folds"])
    assert np.array(model["confusion"]).sum() == 50
    assert fbank["summary"]["accuracy"]["mean"] > 0.5  # five easy classes, chance is 0.2
    for name in ["layers.png", *on_disk["plots"]]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy" in report["table"] and "sweep" in report["table"]
    again = run_probe(esc50, [str(tiny_patch_ckpt), "fbank"], out, config(tmp_path, layer="all"))
    assert all(m["cache"]["hit"] for m in again["models"])
    assert again["models"][0]["summary"] == model["summary"]  # fixed seeds: identical numbers


# --- fine-tuning -----------------------------------------------------------------------------


def test_layerwise_lr_decay_groups(tiny_model):
    clf = Classifier(tiny_model, 5)
    groups = param_groups(clf, FinetuneConfig(lr=1e-3, head_lr=1e-2, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    enc = tiny_model.encoder
    assert lr_of[id(enc.layers[1].fc1.weight)] == 1e-3 and lr_of[id(enc.layers[0].fc1.weight)] == 5e-4
    assert lr_of[id(tiny_model.post_extract_proj.weight)] == 2.5e-4 and lr_of[id(clf.head.weight)] == 1e-2
    assert id(tiny_model.decoder.layers[0].fc1.weight) not in lr_of
    assert not tiny_model.decoder.layers[0].fc1.weight.requires_grad


def test_finetune_trains_the_encoder_and_reports_like_the_probe(esc50, tiny_patch_ckpt, tmp_path):
    ft = FinetuneConfig(epochs=4, batch_size=8, lr=1e-3, head_lr=1e-2, patience=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeWarning)
        report = run_probe(
            esc50, [str(tiny_patch_ckpt), "fbank"], tmp_path / "ft", config(tmp_path, finetune=ft)
        )
    model, fbank = report["models"]
    assert model["method"] == "finetune" and fbank["method"] == "linear"
    assert len(model["folds"]) == 5
    for fold in model["folds"]:
        assert 1 <= fold["best_epoch"] <= fold["epochs_run"] <= 4
        assert fold["epochs_run"] == 4 or fold["epochs_run"] - fold["best_epoch"] == 2  # early stop
        losses = [h["train_loss"] for h in fold["history"]]
        assert losses[-1] < losses[0]
    assert model["summary"]["accuracy"]["mean"] > 0.4  # chance is 0.2


# --- CLI -------------------------------------------------------------------------------------


def test_cli_probe_prints_table_and_writes_report(esc50, tiny_patch_ckpt, tmp_path):
    out = tmp_path / "cli"
    args = ["probe", str(esc50), "-m", str(tiny_patch_ckpt), "-m", "random", "-o", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--l2", "0.1,0.001", "--device", "cpu", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "random" in result.output
    report = json.loads((out / "report.json").read_text())
    assert [m["label"] for m in report["models"]] == [str(tiny_patch_ckpt), "random"]
    assert report["settings"]["probe"]["l2_grid"] == [0.1, 0.001]
    bad = CliRunner().invoke(main, ["probe", str(tmp_path), "-m", "fbank", "-o", str(out)])
    assert bad.exit_code != 0 and "Error" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(main, ["probe", str(esc50), "-m", "fbank", "--layer", "x", "-o", str(out)])
    assert bad.exit_code != 0 and "--layer must be" in bad.output


# --- WebDataset shards ---------------------------------------------------------------------------


def _pack_as_shards(dataset_root, shard_dir, *, json_labels=False, broken=None):
    """The clips of a class-folder dataset packed as WebDataset shards (labels in .cls or .json
    with folds), optionally with one sample's audio replaced by garbage."""
    import webdataset  # a core dependency: never a skip

    shard_dir.mkdir()
    files = sorted(p for p in dataset_root.rglob("*.wav"))
    with webdataset.ShardWriter(str(shard_dir / "probe-%04d.tar"), maxcount=8) as sink:
        for i, path in enumerate(files):
            label = path.parent.name
            sample = {"__key__": f"s{i:04d}", "wav": path.read_bytes()}
            if i == broken:
                sample["wav"] = b"not a wav file" * 20
            if json_labels:
                sample["json"] = json.dumps({"label": label, "fold": f"fold{i % 3}"}).encode()
            else:
                sample["cls"] = label.encode()
            sink.write(sample)
    return files


def test_shards_with_labels_are_a_dataset(tmp_path):
    root = write_dataset(tmp_path / "d", "folder", per_class=6, seconds=0.5, num_classes=3)
    files = _pack_as_shards(root, tmp_path / "shards")
    spec = str(tmp_path / "shards" / "probe-{0000..0002}.tar")
    ds = load_dataset(spec)
    folder = load_dataset(root)
    assert ds.layout == "shards" and ds.partition == "none" and len(ds) == len(files) == len(folder)
    assert ds.classes == folder.classes
    assert sorted(c.labels[0] for c in ds.clips) == sorted(c.labels[0] for c in folder.clips)
    np.testing.assert_array_equal(read_clip(ds.clips[0]), read_audio(files[0]))  # decoded in place

    _pack_as_shards(root, tmp_path / "shards_json", json_labels=True)
    with_folds = load_dataset(str(tmp_path / "shards_json" / "probe-*.tar"))
    assert with_folds.partition == "folds" and with_folds.groups == ["fold0", "fold1", "fold2"]


def test_probe_on_shards_scores_and_reports_a_broken_sample(tmp_path):
    root = write_dataset(tmp_path / "d", "folder", per_class=6, seconds=0.5, num_classes=3)
    _pack_as_shards(root, tmp_path / "shards", broken=4)
    with pytest.warns(ProbeWarning, match="1 unreadable clip"):
        spec = str(tmp_path / "shards" / "probe-*.tar")
        report = run_probe(spec, ["fbank"], tmp_path / "out", config(tmp_path))
    model = report["models"][0]
    assert report["dataset"]["layout"] == "shards"
    assert model["skipped"]["count"] == 1 and list(model["skipped"]["files"]) == ["probe-0000.tar/s0004"]
    assert model["summary"]["accuracy"]["mean"] > 1 / 3


# --- precomputed embeddings: an extraction output folder + a labels CSV ---------------------------


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tiny_patch_ckpt):
    """Tones and noises (2 classes, 8 clips each) extracted at clip level into every format, and
    at frame level with every layer into Parquet; a labels CSV joined on key, with folds."""
    from helpers import noise, tone, write_audio

    pytest.importorskip("pyarrow", reason="Parquet outputs need the parquet extra: pip install '.[parquet]'")

    root = tmp_path_factory.mktemp("precomputed")
    for i in range(8):
        write_audio(root / "audio" / "tone" / f"t{i}.wav", tone(0.5, freq=300 + 400 * i, seed=i))
        write_audio(root / "audio" / "noise" / f"n{i}.wav", noise(0.5, amp=0.05 + 0.02 * i, seed=i))
    base = ["extract", str(root / "audio"), "--model", str(tiny_patch_ckpt), "--dtype", "float32",
            "-q", "--num-workers", "0"]
    folders = {}
    for fmt in ("npz", "parquet", "webdataset"):
        folders[fmt] = root / f"clip-{fmt}"
        args = [*base, "-o", str(folders[fmt]), "--granularity", "clip", "--format", fmt]
        assert CliRunner().invoke(main, args).exit_code == 0
    folders["frame"] = root / "frame-parquet"
    args = [*base, "-o", str(folders["frame"]), "--format", "parquet", "--layer", "all"]
    assert CliRunner().invoke(main, args).exit_code == 0
    labels = root / "labels.csv"
    rows = [f"{c}/{p}{i}.wav,{c},{i % 4}" for c, p in (("tone", "t"), ("noise", "n")) for i in range(8)]
    labels.write_text("key,label,fold\n" + "\n".join(rows) + "\n")
    return folders, labels


def test_probe_on_an_output_folder_of_every_format_scores_the_same(extracted, tmp_path):
    from maeast_embed import load_embeddings
    from probes.precomputed import load_precomputed

    folders, labels = extracted
    reports = {fmt: run_probe(folders[fmt], [], tmp_path / fmt, config(tmp_path, labels=labels))
               for fmt in ("npz", "parquet", "webdataset")}
    models = [reports[fmt]["models"][0] for fmt in reports]
    assert models[0]["kind"] == "precomputed" and models[0]["info"]["format"] == "npz"
    assert [m["info"]["format"] for m in models] == ["npz", "parquet", "webdataset"]
    assert models[0]["summary"]["accuracy"]["mean"] >= 0.9  # tones vs noises, 4 folds
    for model in models[1:]:
        assert model["summary"] == models[0]["summary"] and model["folds"] == models[0]["folds"]
    assert reports["npz"]["dataset"]["partition"] == "folds" and reports["npz"]["dataset"]["num_clips"] == 16
    pre = load_precomputed(folders["parquet"], labels)
    keys, values = load_embeddings(folders["npz"]).to_numpy()
    order = [keys.index(c.path.relative_to(folders["parquet"]).as_posix()) for c in pre.dataset.clips]
    np.testing.assert_array_equal(pre.values[:, 0], values[order])
    # frame level, every layer: pooled here with --pool, the mean equals the clip-level embedding
    frame = load_precomputed(folders["frame"], labels, pool="mean")
    assert frame.pooled == "mean" and frame.values.shape[1] == len(frame.layers) > 1
    np.testing.assert_allclose(frame.values[:, -1], pre.values[:, 0], rtol=1e-5, atol=1e-6)
    meanmax = load_precomputed(folders["frame"], labels, pool="meanmax")
    assert meanmax.values.shape[2] == 2 * frame.values.shape[2]


def test_cli_probe_on_an_output_folder_joins_on_input_and_names_model_layers(extracted, tmp_path):
    folders, _ = extracted
    audio = folders["npz"].parent / "audio"
    labels = audio / "labels.csv"  # input paths relative to the CSV's folder, 2 folds
    rows = [f"{c}/{p}{i}.wav,{c},{i % 2}" for c, p in (("tone", "t"), ("noise", "n")) for i in range(8)]
    labels.write_text("input,label,fold\n" + "\n".join(rows) + "\n")
    out = tmp_path / "cli"
    args = ["probe", str(folders["frame"]), "--labels", str(labels), "--join", "input", "--layer", "all",
            "--pool", "meanmax", "-o", str(out), "--l2", "0.1,0.001", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    model = report["models"][0]
    layers = model["info"]["layers"]
    assert model["info"]["join"] == "input" and model["info"]["time_pool"] == "meanmax"
    assert [entry["layer"] for entry in model["per_layer"]] == layers and len(layers) > 1
    assert report["settings"]["labels"] == str(labels) and report["settings"]["join"] == "input"
    assert model["summary"]["accuracy"]["mean"] >= 0.9
    args[args.index("all")] = str(layers[0])  # a model layer number picks that layer
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {f["layer"] for f in report["models"][0]["folds"]} == {layers[0]}
    args[args.index(str(layers[0]))] = str(layers[-1] + 1)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and f"holds layers {layers}" in result.output
    args[args.index("--join") + 1] = "key"  # the CSV has no key column
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "must name the columns key,label" in result.output


def test_precomputed_bad_input_is_refused_clearly(extracted, tmp_path):
    folders, labels = extracted
    run = lambda folder, models=(), **kw: run_probe(  # noqa: E731
        folder, list(models), tmp_path / "out", config(tmp_path, **{"labels": labels, **kw}))
    lines = labels.read_text().splitlines()
    extra = tmp_path / "extra.csv"
    extra.write_text("\n".join([*lines, "tone/gone.wav,tone,0", "noise/lost.wav,noise,1"]) + "\n")
    with pytest.raises(MAEASTError, match=r"2 of 18 row\(s\) name no embedding .*tone/gone.wav, noise/lost"):
        run(folders["parquet"], labels=extra)
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.warns(ProbeWarning, match=r"3 embedding\(s\) of .* have no row .*noise/n5.wav.*: left out"):
        report = run(folders["webdataset"], labels=partial)
    assert report["dataset"]["num_clips"] == 13
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(MAEASTError, match=r"twice.csv:18: tone/t0.wav is the embedding of line 2 too"):
        run(folders["npz"], labels=twice)
    with pytest.raises(MAEASTError, match="not an extraction output folder"):
        run(folders["npz"].parent / "audio")
    with pytest.raises(MAEASTError, match="give its labels with --labels"):
        run(folders["npz"], labels=None)
    with pytest.raises(MAEASTError, match="--model does not apply"):
        run(folders["npz"], ["fbank"])
    with pytest.raises(MAEASTError, match="--finetune needs the audio"):
        run(folders["npz"], finetune=FinetuneConfig(epochs=1))
