"""hear-eval-kit end to end through the launcher: embeddings runner, then predictions runner."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hear_module.tasks import SCENE_CLASSES, make_event_task, make_scene_task

pytest.importorskip("heareval")
pytest.importorskip("pytorch_lightning")


def launch(*args: str, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "hear_module.run", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_heareval_runners_on_two_toy_tasks(tmp_path, tiny_patch_ckpt):
    tasks = tmp_path / "tasks"
    make_scene_task(tasks / "toy_scene")
    make_event_task(tasks / "toy_event")
    launch(
        "embeddings",
        "hear_module",
        "--model",
        str(tiny_patch_ckpt),
        "--tasks-dir",
        str(tasks),
        "--embeddings-dir",
        "embeddings",
        cwd=tmp_path,
    )
    out = tmp_path / "embeddings" / "hear_module"
    for task in ("toy_scene", "toy_event"):
        assert (out / task / ".done.embeddings").exists()
    event_times = json.loads((out / "toy_event" / "test.filename-timestamps.json").read_text())
    gaps = {
        round(b[1] - a[1], 3) for a, b in zip(event_times[:-1], event_times[1:], strict=True) if a[0] == b[0]
    }
    assert gaps == {40.0}

    launch("predictions", str(out / "toy_scene"), str(out / "toy_event"), "--grid", "faster", cwd=tmp_path)
    for task in ("toy_scene", "toy_event"):
        assert (out / task / "prediction-done.json").exists()
    scene = json.loads((out / "toy_scene" / "test.predicted-scores.json").read_text())
    assert set(scene) >= {"fold00", "fold01", "fold02", "aggregated_scores"}
    assert scene["aggregated_scores"]["test_top1_acc_mean"] > 1 / len(SCENE_CLASSES) + 0.2
    event = json.loads((out / "toy_event" / "test.predicted-scores.json").read_text())
    assert 0.0 <= event["test"]["test_event_onset_200ms_fms"] <= 1.0
    assert event["postprocessing"], "event post-processing was chosen from the best epoch"
