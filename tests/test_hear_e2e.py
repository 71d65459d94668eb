"""hear-eval-kit end to end: the embeddings runner, then the predictions runner, through the
launcher and through the tools' own commands after `maeast-embed hear register` (in a throw-away
virtualenv, so the real environment is untouched)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import child_venv

from hear_module.tasks import SCENE_CLASSES, make_event_task, make_scene_task

pytest.importorskip("heareval")
pytest.importorskip("pytorch_lightning")


from maeast_embed.cli import main


def expect_ok(command: list, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def hear_cli(*args) -> str:
    result = CliRunner().invoke(main, ["hear", *[str(a) for a in args]])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def hooked_python(tmp_path_factory):
    """A throw-away venv seeing this environment's packages, with the HEAR hook registered."""
    python, site = child_venv(tmp_path_factory.mktemp("venv") / "env")
    assert "not registered" in hear_cli("status", "--site-dir", site)
    assert hear_cli("register", "--site-dir", site).count("wrote") == 2
    assert "not registered" not in hear_cli("status", "--site-dir", site)
    yield python
    assert hear_cli("unregister", "--site-dir", site).count("removed") == 2
    assert not list(site.glob("maeast_embed_hear*"))


LAUNCHER = {
    "embeddings": [sys.executable, "-m", "hear_module.run", "embeddings"],
    "predictions": [sys.executable, "-m", "hear_module.run", "predictions"],
}


@pytest.mark.parametrize("how", ["launcher", "hook"])
def test_heareval_runners_on_two_toy_tasks(how, tmp_path, tiny_patch_ckpt, request):
    if how == "launcher":
        runners = LAUNCHER
    else:  # the tools' own commands, unchanged, with only the registered hook
        python = request.getfixturevalue("hooked_python")
        runners = {name: [python, "-m", f"heareval.{name}.runner"] for name in ("embeddings", "predictions")}
    tasks = tmp_path / "tasks"
    make_scene_task(tasks / "toy_scene")
    make_event_task(tasks / "toy_event")
    expect_ok([*runners["embeddings"], "hear_module", "--model", tiny_patch_ckpt, "--tasks-dir", tasks,
               "--embeddings-dir", "embeddings"], tmp_path)
    out = tmp_path / "embeddings" / "hear_module"
    for task in ("toy_scene", "toy_event"):
        assert (out / task / ".done.embeddings").exists()
    event_times = json.loads((out / "toy_event" / "test.filename-timestamps.json").read_text())
    gaps = {
        round(b[1] - a[1], 3) for a, b in zip(event_times[:-1], event_times[1:], strict=True) if a[0] == b[0]
    }
    assert gaps == {40.0}

    expect_ok([*runners["predictions"], out / "toy_scene", out / "toy_event", "--grid", "faster"], tmp_path)
    for task in ("toy_scene", "toy_event"):
        assert (out / task / "prediction-done.json").exists()
    scene = json.loads((out / "toy_scene" / "test.predicted-scores.json").read_text())
    assert set(scene) >= {"fold00", "fold01", "fold02", "aggregated_scores"}
    assert scene["aggregated_scores"]["test_top1_acc_mean"] > 1 / len(SCENE_CLASSES) + 0.2
    event = json.loads((out / "toy_event" / "test.predicted-scores.json").read_text())
    test = event["test"]
    name = "test_event_onset_200ms_fms"
    fms, precision, recall = test[name], test[f"{name}_precision"], test[f"{name}_recall"]
    assert fms == pytest.approx(2 * precision * recall / (precision + recall))
    # chance: an onset placed at random in a 4 s clip lands within 200 ms of the true one with
    # p ~ 0.4 / 4, so F ~ 0.1; the beep (1 kHz) and the buzz (150 Hz harmonics) are easy to tell
    assert fms > 0.6 and test["test_segment_1s_er"] < 0.5, test
    assert event["postprocessing"], "event post-processing was chosen from the best epoch"


def test_hear_validator_command_after_register(hooked_python, tiny_frame_ckpt, tmp_path):
    """`hear-validator hear_module --model CKPT`, the console script itself, run by the venv's python."""
    pytest.importorskip("hearvalidator")
    script = shutil.which("hear-validator") or str(Path(sys.executable).with_name("hear-validator"))
    result = expect_ok([hooked_python, script, "hear_module", "--model", tiny_frame_ckpt], tmp_path)
    assert "Looks good!" in result.stdout


def test_without_the_hook_the_tools_fail_here(tmp_path):
    """The control for the hook runs: heareval's runner needs tensorflow, which is not installed.
    Run with `-S` and the site dirs on sys.path without their .pth files, so a HEAR hook
    registered in this environment stays inactive."""
    import importlib.util
    import site

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.xfail("tensorflow is installed here, so heareval's runner works without the hook")
    dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    code = (f"import sys, runpy; sys.path[1:1] = {dirs!r}; sys.argv[1:] = ['--help'];"
            "runpy.run_module('heareval.embeddings.runner', run_name='__main__')")
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert result.returncode != 0 and "tensorflow" in result.stderr, result.stderr[-2000:]
