"""`maeast-embed bench`: models and baselines, cells and resume, ranks and reports, task names;
(marked `slow`) HEAR through hear-eval-kit and (marked `suites`) X-ARES and MAEB for real."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import noise, tone

from maeast_embed.checkpoint import load_model
from maeast_embed.cli import main as cli_main
from maeast_embed.errors import ConfigError
from maeast_embed.frontend import kaldi_fbank
from maeast_suites import hear_fbank
from maeast_suites.baselines import FbankBaseline
from maeast_suites.bench import BenchConfig, run_bench
from maeast_suites.bench import run as bench_run
from maeast_suites.bench.cells import Cell, CellStore, Score, higher_is_better
from maeast_suites.bench.models import parse_models
from maeast_suites.bench.report import table_rows
from maeast_suites.bench.suite import MissingData, Suite, call
from maeast_suites.engine import suite_model

SR = 16000


def test_fbank_baseline_is_the_normalised_kaldi_fbank_clip_by_clip():
    model = FbankBaseline()
    clips = [tone(1.0, 440.0), noise(0.37, seed=1), torch.zeros(100).numpy()]  # the last: under one frame
    frames = model.frames([torch.from_numpy(c) for c in clips])
    assert [f.shape for f in frames] == [(98, 128), (35, 128), (1, 128)]
    fbank, _ = kaldi_fbank(torch.from_numpy(clips[0])[None])
    stats = load_model("maeast-small").batch_norm
    expected = 0.5 * (fbank[0] - stats.running_mean) / torch.sqrt(stats.running_var + stats.eps)
    torch.testing.assert_close(frames[0], expected, rtol=0, atol=1e-5)
    alone = model.frames([torch.from_numpy(clips[1])])[0]
    assert torch.equal(alone, frames[1])


def test_fbank_baseline_as_a_hear_module_and_its_options():
    model = hear_fbank.load_model()
    audio = torch.from_numpy(np.stack([tone(1.0, 440.0), noise(1.0, seed=2)]))
    embeddings, timestamps = hear_fbank.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (2, 98, model.timestamp_embedding_size) and timestamps.shape == (2, 98)
    assert timestamps[0, :2].tolist() == [12.5, 22.5] and float(timestamps[0, -1]) < 1000
    torch.testing.assert_close(hear_fbank.get_scene_embeddings(audio, model), embeddings.mean(1))
    with pytest.raises(ConfigError, match="no model file"):
        hear_fbank.load_model("weights.pt")
    assert isinstance(suite_model("fbank", layer="last", dtype="float32"), FbankBaseline)  # defaults: fine
    with pytest.raises(ConfigError, match="no layer"):
        suite_model("fbank", layer="3")


def test_random_baseline_has_the_architecture_and_fresh_weights(tiny_patch_ckpt, tmp_path):
    # seeds other than 0: the tiny checkpoint itself holds the initialiser's weights under seed 0
    specs = [str(tiny_patch_ckpt), "random@1", "random@3", "fbank"]
    models = parse_models(specs, {"layer": "last"}, tmp_path)
    labels = ["tiny_patch", "random(tiny_patch)@1", "random(tiny_patch)@3", "fbank"]
    assert [m.label for m in models] == labels
    assert [m.kind for m in models] == ["maeast", "random", "random", "fbank"]
    assert models[0].options == {"layer": "last", "model": str(tiny_patch_ckpt)} and models[3].options == {
        "model": "fbank"}
    trained, fresh, other = (load_model(m.source) for m in models[:3])
    assert fresh.cfg == trained.cfg
    assert torch.equal(fresh.batch_norm.running_mean, trained.batch_norm.running_mean)
    weights = [next(m.encoder.parameters()) for m in (trained, fresh, other)]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    again = parse_models([str(tiny_patch_ckpt), "random@1"], {}, tmp_path)[1]
    assert again.source == models[1].source  # written once, reused on resume
    assert torch.equal(next(load_model(again.source).encoder.parameters()), weights[1])
    with pytest.raises(ConfigError, match="two models are named"):
        parse_models(["fbank", "fbank"], {}, tmp_path)


def test_metric_direction_and_fold_std():
    assert higher_is_better("top1_acc") and higher_is_better("MLP accuracy") and higher_is_better("mAP")
    assert higher_is_better("event_onset_200ms_fms")
    assert not any(higher_is_better(m) for m in ("WER", "segment_1s_er", "EER"))
    assert Score("accuracy", 0.5, [0.4, 0.6]).std == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert Score("accuracy", 0.5, [0.5]).std is None


def cell(model, value, metric="accuracy", task="t", folds=()):
    return Cell("fake", task, model, "ok", [Score(metric, value, list(folds))], 1.0)


def test_ranks_follow_each_metrics_direction_and_share_ties():
    wer = [cell(m, v, "WER", "asr") for m, v in (("a", 0.10), ("b", 0.05), ("c", 0.2))]
    rows = table_rows([cell("a", 0.9), cell("b", 0.7), cell("c", 0.9), *wer])
    assert {m: e["rank"] for m, e in rows[("fake", "t", "accuracy")].items()} == {"a": 1, "b": 3, "c": 1}
    assert {m: e["rank"] for m, e in rows[("fake", "asr", "WER")].items()} == {"a": 2, "b": 1, "c": 3}


class FakeSuite(Suite):
    """Scores from a table; a task named 'broken' raises, 'absent' has no data; counts its runs."""

    key, name = "fake", "Fake"
    calls: list = []
    values = {"a": {"one": [0.8, 0.9], "two": [0.5]}, "b": {"one": [0.6, 0.7], "two": [0.75]}}

    def presets(self):
        return {"toy": ["one", "two"], "full": ["one", "two", "broken", "absent"]}

    def run(self, task, model):
        FakeSuite.calls.append((task, model.label))
        if task == "broken":
            raise RuntimeError("the suite fell over")
        if task == "absent":
            raise MissingData("fetch-it --task absent")
        folds = self.values[model.label][task]
        return [Score("accuracy", float(np.mean(folds)), folds if len(folds) > 1 else [])]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(bench_run.SUITES, "fake", FakeSuite)
    monkeypatch.setattr(bench_run, "build_suites", lambda config: [FakeSuite(config.out)])

    def models(specs, options, folder):
        from maeast_suites.bench.models import BenchModel

        return [BenchModel(s, "maeast", {**options, "model": s}) for s in specs]

    monkeypatch.setattr(bench_run, "parse_models", models)
    FakeSuite.calls = []
    return FakeSuite


def test_a_run_writes_every_report_records_failures_and_resumes(fake, tmp_path):
    config = BenchConfig(out=tmp_path, suites=["fake"], tasks=["full"], models=["a", "b"])
    cells, paths = run_bench(config, echo=lambda line: None)
    assert len(fake.calls) == 8 and {c.status for c in cells} == {"ok", "failed", "missing"}
    data = json.loads(paths["json"].read_text())
    one = next(r for r in data["table"] if r["task"] == "one")["models"]
    assert one["a"]["value"] == pytest.approx(0.85) and one["a"]["rank"] == 1 and one["b"]["rank"] == 2
    assert one["a"]["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert data["mean_rank"]["fake"] == {"a": 1.5, "b": 1.5}
    md = paths["md"].read_text()
    assert "| one | accuracy | 0.8500 ± 0.0707 (1) | 0.6500 ± 0.0707 (2) |" in md
    assert "| two | accuracy | 0.5000 (2) | 0.7500 (1) |" in md
    assert "| broken | - | failed | failed |" in md and "RuntimeError: the suite fell over" in md
    assert "`absent`: `fetch-it --task absent`" in md
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert {(r["task"], r["model"], r["status"], r["rank"]) for r in rows} >= {
        ("one", "a", "ok", "1"), ("broken", "b", "failed", ""), ("absent", "a", "missing", "")}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fake.calls = []  # the same command again: only what did not score runs again
    run_bench(config, echo=lambda line: None)
    assert sorted(fake.calls) == sorted([(t, m) for t in ("broken", "absent") for m in ("a", "b")])
    store = CellStore(tmp_path)
    store.path("fake", "one", "a").write_text("{not json")  # a cell cut short is done again
    fake.calls = []
    run_bench(BenchConfig(out=tmp_path, suites=["fake"], tasks=["one"], models=["a", "b"]), echo=print)
    assert fake.calls == [("one", "a")] and store.get("fake", "one", "a").status == "ok"
    fake.calls = []
    run_bench(BenchConfig(out=tmp_path, suites=["fake"], tasks=["toy"], models=["a"], redo=True), echo=print)
    assert fake.calls == [("one", "a"), ("two", "a")]


def test_results_of_other_settings_are_refused_not_mixed(fake, tmp_path, monkeypatch):
    def run(layer: str, redo: bool = False):
        config = BenchConfig(out=tmp_path, suites=["fake"], tasks=["toy"], models=["a", "b"],
                             encoder_options={"layer": layer}, redo=redo)
        return run_bench(config, echo=lambda line: None)[0]

    run("last")
    assert CellStore(tmp_path).get("fake", "one", "a").settings == {
        "model": {"kind": "maeast", "options": {"layer": "last", "model": "a"}}, "suite": {}}
    fake.calls = []
    run("last")  # same settings: resumed, nothing runs
    assert fake.calls == []
    with pytest.raises(ConfigError, match=r"Fake one a scored with other settings \(model\.options\.layer: "
                       r"'last' -> '6'\); use another output folder, or --redo"):
        run("6")
    assert fake.calls == []  # refused before anything ran
    cells = run("6", redo=True)
    assert len(fake.calls) == 4 and all(c.settings["model"]["options"]["layer"] == "6" for c in cells)
    monkeypatch.setattr(FakeSuite, "settings", lambda self: {"grid": "fast"}, raising=False)
    with pytest.raises(ConfigError, match=r"suite\.grid: None -> 'fast'"):
        run("6")
    suite = FakeSuite(tmp_path)
    a, other = (bench_run.parse_models(["a"], {"layer": layer}, tmp_path)[0] for layer in ("6", "7"))
    assert suite.work_folder(a) == suite.work_folder(a) != suite.work_folder(other)
    assert suite.work_folder(a).startswith("a-")


def test_what_a_suite_prints_goes_to_its_cells_log(fake, tmp_path, monkeypatch, capfd):
    child = "import sys; print('child-out'); print('child-err', file=sys.stderr)"

    class Loud(FakeSuite):
        def run(self, task, model):
            print("py-out")
            print("py-err", file=sys.stderr)
            os.write(1, b"fd-out\n")
            os.write(2, b"fd-err\n")
            call([sys.executable, "-c", child], "the child")
            if task == "two":
                call([sys.executable, "-c", "print('dying'); raise SystemExit(3)"], "the second child")
            return super().run(task, model)

    monkeypatch.setattr(bench_run, "build_suites", lambda config: [Loud(config.out)])
    said: list[str] = []
    config = BenchConfig(out=tmp_path, suites=["fake"], tasks=["toy"], models=["a"])
    cells, _ = run_bench(config, echo=said.append)
    printed = "".join(capfd.readouterr())
    assert not any(word in printed for word in ("py-", "fd-", "child-", "dying"))
    store = CellStore(tmp_path)
    text = store.log_path("fake", "one", "a").read_text()
    assert text.splitlines()[0].startswith("=== ") and text.splitlines()[0].endswith(" Fake one a")
    assert all(w in text for w in ("py-out", "py-err", "fd-out", "fd-err", "child-out", "child-err"))
    failed = cells[1]
    assert failed.status == "failed" and failed.log == str(store.log_path("fake", "two", "a"))
    assert "the second child failed (exit 3):\ndying" in failed.error
    assert "Traceback" in Path(failed.log).read_text() and f"(see {failed.log})" in said[-1]
    assert f"running (output in {store.log_path('fake', 'one', 'a')})" in said[0]
    print("after")
    os.write(2, b"fd after\n")
    assert capfd.readouterr() == ("after\n", "fd after\n")  # both levels given back


def test_task_names_presets_and_unknown_names(tmp_path):
    class Other(FakeSuite):
        key, name = "other", "Other"

        def presets(self):
            return {"toy": ["t0"], "full": ["one", "three"]}

    suites = [FakeSuite(tmp_path), Other(tmp_path)]
    assert bench_run.resolve_tasks(suites, ["toy"]) == {"fake": ["one", "two"], "other": ["t0"]}
    assert bench_run.resolve_tasks(suites, ["one", "two"]) == {"fake": ["one", "two"], "other": ["one"]}
    with pytest.raises(ConfigError) as err:
        bench_run.resolve_tasks(suites, ["one", "nope"])
    assert "'nope'" in str(err.value) and "fake: absent, broken, one, two" in str(err.value)
    with pytest.raises(ConfigError, match="not among --suite"):
        bench_run.resolve_tasks(suites, ["hear:toy_scene"])


def test_bench_command_names_suites_extras_and_needs_an_output(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "out")
    result = runner.invoke(cli_main, ["bench", "--help"])
    assert result.exit_code == 0
    assert all(o in result.output for o in ("--suite", "--tasks", "--hear-tasks-dir", "--redo"))
    assert runner.invoke(cli_main, ["bench", "--suite", "hear"]).exit_code == 2  # -o is required
    result = runner.invoke(cli_main, ["bench", "--suite", "nope", "-o", out])
    assert result.exit_code == 1 and "unknown suite nope; known: hear, superb, xares, maeb" in result.output
    for suite, module in (("xares", "xares"), ("maeb", "mteb")):
        if importlib.util.find_spec(module) is None:
            result = runner.invoke(cli_main, ["bench", "--suite", suite, "-o", out])
            assert result.exit_code == 1 and "pip install 'maeast-embed[suites]'" in result.output
    assert not (tmp_path / "out").exists()  # refused before anything is written


def bench_cli(out, suites, *models, timeout=1500):
    command = [sys.executable, "-m", "maeast_embed.cli", "bench", "--suite", suites, "-t", "toy",
               "-o", str(out), "--hear-grid", "faster", *[a for m in models for a in ("-m", str(m))]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "bench.json").read_text())


@pytest.mark.slow
def test_hear_toy_tasks_for_a_model_and_both_baselines(tmp_path, tiny_patch_ckpt):
    pytest.importorskip("heareval", reason="needs hear-eval-kit")
    data = bench_cli(tmp_path, "hear", tiny_patch_ckpt, "random", "fbank")
    rows = {(r["task"], r["metric"]): r["models"] for r in data["table"]}
    assert set(rows) == {("toy_scene", "top1_acc"), ("toy_event", "event_onset_200ms_fms")}
    scene = rows[("toy_scene", "top1_acc")]
    assert set(scene) == {"tiny_patch", "random(tiny_patch)", "fbank"}
    assert all(len(e["folds"]) == 3 and e["std"] is not None for e in scene.values())  # 3 folds
    assert scene["tiny_patch"]["value"] > 0.6  # 3 classes: chance is 1/3


@pytest.mark.suites
def test_xares_and_maeb_toy_tasks_for_a_model_and_both_baselines(tmp_path, tiny_patch_ckpt):
    pytest.importorskip("xares", reason="needs xares")
    pytest.importorskip("mteb", reason="needs mteb")
    data = bench_cli(tmp_path, "xares,maeb", tiny_patch_ckpt, "random", "fbank")
    rows = {(r["suite"], r["task"], r["metric"]): r["models"] for r in data["table"]}
    assert set(rows) == {("xares", "toy_tones", "MLP accuracy"), ("xares", "toy_tones", "kNN accuracy"),
                         ("maeb", "ToyTones", "accuracy")}
    maeb = rows[("maeb", "ToyTones", "accuracy")]
    assert all(len(e["folds"]) > 1 for e in maeb.values())  # mteb's repeated experiments
    assert all(0.0 <= e["value"] <= 1.0 for r in rows.values() for e in r.values())
    assert set(data["suite_seconds"]) == {"xares", "maeb"}
    # X-ARES's own caches of a killed or redone cell are not taken as results
    score_files = sorted((tmp_path / "xares" / "env" / "toy_tones" / "checkpoints").glob("*/mlp_score.txt"))
    assert len(score_files) == 3
    first = rows[("xares", "toy_tones", "MLP accuracy")]
    for score_file in score_files:
        score_file.write_text("0.123\n32")
    cells = sorted((tmp_path / "cells" / "xares").rglob("*.json"))
    for cell in cells:
        cell.unlink()
    again = bench_cli(tmp_path, "xares", tiny_patch_ckpt, "random", "fbank")
    rerun = next(r["models"] for r in again["table"] if r["metric"] == "MLP accuracy")
    assert {m: e["value"] for m, e in rerun.items()} == {m: e["value"] for m, e in first.items()}  # seeded
    assert all(float(f.read_text().split()[0]) != 0.123 for f in score_files)


@pytest.mark.slow
def test_superb_keyword_spotting_for_a_model_and_s3prls_fbank(tmp_path, tiny_patch_ckpt):
    pytest.importorskip("s3prl", reason="needs s3prl")
    from superb_data import have_espeak, make_speech_commands

    if not have_espeak():
        pytest.skip("espeak-ng is needed to synthesise the keyword speech")
    make_speech_commands(tmp_path / "data")
    command = [sys.executable, "-m", "maeast_embed.cli", "bench", "--suite", "superb",
               "-t", "speech_commands", "-t", "superb:voxceleb1", "-o", str(tmp_path / "out"),
               "--superb-data", str(tmp_path / "data"),
               "--superb-steps", "20", "-m", str(tiny_patch_ckpt), "-m", "fbank",
               "--superb-override", "config.downstream_expert.datarc.batch_size=8",
               "--superb-override", "config.downstream_expert.datarc.num_workers=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    (row,) = data["table"]
    assert (row["suite"], row["task"], row["metric"]) == ("superb", "speech_commands", "accuracy")
    assert set(row["models"]) == {"tiny_patch", "fbank"}
    assert all(0.0 <= e["value"] <= 1.0 for e in row["models"].values())
    missing = [c for c in data["cells"] if c["status"] == "missing"]
    assert {c["task"] for c in missing} == {"voxceleb1"} and "iden_split.txt" in missing[0]["fetch"]


def test_cells_stay_under_the_folder_and_names_that_look_alike_are_not_confused(tmp_path):
    store = CellStore(tmp_path)
    for name in ("..", "../../escape", "/etc/passwd", "org/model"):
        path = store.path("hear", name, name)
        assert path.is_relative_to(tmp_path / "cells") and ".." not in path.relative_to(tmp_path).parts
        log = store.log_path("hear", name, name)
        assert log.is_relative_to(tmp_path / "logs") and ".." not in log.relative_to(tmp_path).parts
    store.put(cell("org/model", 0.5))
    assert store.get("fake", "t", "org_model") is None  # not the other model's result
    store.put(cell("org_model", 0.25))
    assert store.path("fake", "t", "org/model") != store.path("fake", "t", "org_model")
    assert [store.get("fake", "t", m).scores[0].value for m in ("org/model", "org_model")] == [0.5, 0.25]
    store.path("fake", "t", "org/model").write_text(store.path("fake", "t", "org_model").read_text())
    assert store.get("fake", "t", "org/model") is None  # a file holding other names is not taken
