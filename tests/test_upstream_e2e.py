"""End to end: s3prl's own `run_downstream` with `-u mae_ast` on generated SUPERB-layout data,
through the launcher and through plain `python -m s3prl.run_downstream` after
`maeast-embed s3prl register` (in a throw-away venv, so the real environment is untouched);
DataLoader workers inherit the shims under fork (the runs), spawn and forkserver."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import child_venv
from superb_data import have_espeak, make_iemocap, make_speech_commands, make_voxceleb1

from maeast_embed.cli import main

pytest.importorskip("s3prl")
pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is needed to synthesise test speech")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "upstream" / "configs"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
LAUNCHER = [sys.executable, "-m", "maeast_upstream.run_downstream"]
ACC = re.compile(r"^test acc: ([0-9.]+)$", re.M)


def run(cmd, cwd, timeout=240):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=timeout)
    return result


def expect_ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def ks_data(tmp_path_factory):
    return make_speech_commands(tmp_path_factory.mktemp("ks"))


@pytest.fixture(scope="module")
def hook_python(tmp_path_factory):
    """A venv that sees this environment's packages, with the s3prl hook registered in it."""
    python, site = child_venv(tmp_path_factory.mktemp("venv") / "env")
    invoke(["register", "--site-dir", site])
    assert (site / "maeast_embed_s3prl.pth").is_file() and (site / "maeast_embed_s3prl_hook.py").is_file()
    yield python
    invoke(["unregister", "--site-dir", site])


def invoke(args, exit_code=0):
    result = CliRunner().invoke(main, ["s3prl", *[str(a) for a in args]])
    assert result.exit_code == exit_code, result.output
    return result.output


def ks_overrides(train_root, test_root, steps=30, workers=1):
    return ",,".join([
        f"config.downstream_expert.datarc.speech_commands_root={train_root}",
        f"config.downstream_expert.datarc.speech_commands_test_root={test_root}",
        "config.downstream_expert.datarc.batch_size=8",
        f"config.downstream_expert.datarc.num_workers={workers}",
        f"config.runner.total_steps={steps}",
        f"config.runner.eval_step={steps}",
        f"config.runner.save_step={steps}",
        "config.runner.log_step=10",
        "config.optimizer.lr=1.0e-3",
    ])


def train_then_evaluate(prefix, expdir, ckpt, task, selection, overrides, steps, cwd):
    """`-m train` then `-m evaluate -e states-N.ckpt`; returns the two printed test accuracies."""
    train = expect_ok(run([*prefix, "-m", "train", "-p", expdir, "-u", "mae_ast", "-k", ckpt, "-d", task,
                           "-f", "-s", selection, "--device", "cpu", "-c", CONFIGS / task / "config.yaml",
                           "-o", overrides], cwd))
    states = expdir / f"states-{steps}.ckpt"
    assert states.is_file(), train.stdout[-2000:]
    trained = [float(a) for a in ACC.findall(train.stdout)]
    assert trained, train.stdout[-2000:]
    evaluate = expect_ok(run([*prefix, "-m", "evaluate", "-e", states, "--device", "cpu"], cwd))
    evaluated = [float(a) for a in ACC.findall(evaluate.stdout)]
    assert len(evaluated) == 1 and 0.0 <= evaluated[0] <= 1.0, evaluate.stdout[-2000:]
    # the fine-tuned upstream and the head are restored from the checkpoint: same score
    assert evaluated[0] == pytest.approx(trained[-1])
    return trained[-1], evaluated[0]


def test_ks1_through_the_launcher(ks_data, tiny_patch_ckpt, tmp_path):
    train_then_evaluate(LAUNCHER, tmp_path / "exp", tiny_patch_ckpt,
                        "speech_commands", "last_hidden_state", ks_overrides(*ks_data), 30, tmp_path)


def s3prl_checkout(root: Path) -> Path:
    """An s3prl-checkout-shaped `s3prl/s3prl` folder: s3prl's own run_downstream.py next to an
    `upstream/mae_ast/hubconf.py` of the checkout's, which is first on sys.path when the script
    runs there (the folder that used to shadow this project's top-level `upstream` package)."""
    import s3prl

    work = root / "s3prl" / "s3prl"
    decoy = work / "upstream" / "mae_ast"
    decoy.mkdir(parents=True)
    (work / "upstream" / "__init__.py").write_text("")
    (decoy / "__init__.py").write_text("")
    (decoy / "hubconf.py").write_text("def mae_ast_local(ckpt, **kwargs):\n    raise RuntimeError('decoy')\n")
    (work / "run_downstream.py").write_text((Path(s3prl.__file__).parent / "run_downstream.py").read_text())
    return work


@pytest.mark.parametrize(
    "how", ["checkout", pytest.param("module", marks=pytest.mark.slow)]
)
def test_ks1_through_plain_s3prl_after_register(how, ks_data, tiny_frame_ckpt, hook_python, tmp_path):
    """s3prl's documented commands, unchanged: `python run_downstream.py ...` in `s3prl/s3prl` of a
    checkout, or `python -m s3prl.run_downstream ...`, with only the registered hook."""
    if how == "checkout":
        cwd = s3prl_checkout(tmp_path / "checkout")
        prefix = [hook_python, "run_downstream.py"]
    else:
        cwd, prefix = tmp_path, [hook_python, "-m", "s3prl.run_downstream"]
    train_then_evaluate(prefix, tmp_path / "exp", tiny_frame_ckpt, "speech_commands", "hidden_states",
                        ks_overrides(*ks_data), 30, cwd)


def test_plain_s3prl_needs_the_shims_here(tmp_path):
    """The control for the runs above: without the launcher or the hook, s3prl 0.4.18 fails."""
    result = run([sys.executable, "-c", "import s3prl.hub"], tmp_path)
    if result.returncode == 0:
        pytest.skip("this environment still has the APIs s3prl 0.4.18 needs")
    assert "set_audio_backend" in result.stderr


def test_launcher_reports_a_checkpoint_that_is_not_mae_ast(ks_data, tmp_path):
    import torch

    not_mae = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(4, 3, 3, 3)}}, not_mae)
    result = run([*LAUNCHER, "-m", "train", "-p", tmp_path / "exp",
                  "-u", "mae_ast", "-k", not_mae, "-d", "speech_commands", "--device", "cpu",
                  "-c", CONFIGS / "speech_commands" / "config.yaml", "-o", ks_overrides(*ks_data)], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"^error: .*resnet.pt is not an MAE-AST checkpoint", result.stderr, re.M), result.stderr


def test_register_is_explicit_and_reversible(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    assert "not registered" in invoke(["status", "--site-dir", site])
    assert invoke(["register", "--site-dir", site]).count("wrote") == 2
    assert invoke(["status", "--site-dir", site]).startswith("registered in")
    hook = site / "maeast_embed_s3prl_hook.py"
    hook.write_text(hook.read_text().replace("s3prl.downstream.voxceleb1.dataset", "elsewhere"))  # older
    assert "by another version of maeast-embed: run `maeast-embed s3prl register` again" in invoke(
        ["status", "--site-dir", site])
    assert invoke(["register", "--site-dir", site]).count("wrote") == 2
    assert invoke(["status", "--site-dir", site]).startswith("registered in")
    assert invoke(["unregister", "--site-dir", site]).count("removed") == 2
    assert not list(site.glob("maeast_embed_s3prl*"))
    (site / "maeast_embed_s3prl.pth").write_text("import something_else\n")  # not ours: left alone
    assert "not written by maeast-embed" in invoke(["register", "--site-dir", site], exit_code=1)
    assert "no maeast-embed s3prl hook" in invoke(["unregister", "--site-dir", site])
    assert (site / "maeast_embed_s3prl.pth").read_text() == "import something_else\n"


WORKER_SCRIPT = """\
import sys
{top}
from torch.utils.data import DataLoader

if __name__ == "__main__":
    {main}
    from s3prl.downstream.speech_commands.dataset import SpeechCommandsTestingDataset

    dataset = SpeechCommandsTestingDataset(speech_commands_test_root=sys.argv[2])
    loader = DataLoader(dataset, batch_size=4, num_workers=1, multiprocessing_context=sys.argv[1],
                        collate_fn=dataset.collate_fn)
    print("clips", sum(len(wavs) for wavs, *_ in loader))
"""


@pytest.mark.parametrize(
    "how, method",
    [
        ("launcher", "spawn"),
        pytest.param("launcher", "forkserver", marks=pytest.mark.slow),
        ("hook", "spawn"),
        pytest.param("hook", "forkserver", marks=pytest.mark.slow),
        ("main-only", "spawn"),
    ],
)
def test_dataloader_workers_inherit_the_shims(how, method, ks_data, hook_python, tmp_path):
    """Workers unpickle s3prl's speech_commands dataset, whose module needs the sox shim.

    'launcher' imports the launcher module at the top, as `python -m maeast_upstream.run_downstream`
    and the `maeast-s3prl` script do; 'hook' relies on the registered site hook alone;
    'main-only' (the control) applies the shims only in the parent, which spawn cannot pass on.
    """
    top = "import maeast_upstream.run_downstream" if how == "launcher" else ""
    main = "from maeast_upstream.compat import apply; apply()" if how == "main-only" else "pass"
    script = tmp_path / "workers.py"
    script.write_text(textwrap.dedent(WORKER_SCRIPT.format(top=top, main=main)))
    python = hook_python if how == "hook" else sys.executable
    result = run([python, script, method, ks_data[1]], tmp_path)
    expected_clips = len(list(Path(ks_data[1]).glob("*/*.wav")))
    if how == "main-only":
        assert result.returncode != 0 and "sox_effects" in result.stderr
    else:
        assert f"clips {expected_clips}" in expect_ok(result).stdout


@pytest.mark.slow
def test_sid_and_er_through_the_launcher(tiny_patch_ckpt, tmp_path):
    """SID (VoxCeleb1 layout, hidden_states) and ER (IEMOCAP layout at 22.05 kHz, resampled by
    the recipe), a few dozen steps each, then evaluate."""
    import s3prl.downstream.voxceleb1 as vox

    file_path, split_file = make_voxceleb1(tmp_path / "vox")
    in_package = sorted(Path(vox.__path__[0]).glob(".cache/*"))
    sid = ",,".join([
        f"config.downstream_expert.datarc.file_path={file_path}",
        f"config.downstream_expert.datarc.meta_data={split_file}",
        "config.downstream_expert.datarc.train_batch_size=2",
        "config.downstream_expert.datarc.num_workers=1",
        "config.runner.gradient_accumulate_steps=1",
        "config.runner.total_steps=24,,config.runner.eval_step=24,,config.runner.save_step=24",
        "config.runner.log_step=8",
    ])
    train_then_evaluate(LAUNCHER, tmp_path / "sid", tiny_patch_ckpt, "voxceleb1", "hidden_states", sid, 24,
                        tmp_path)
    # the file lists went to this dataset's own folder of the cache, not into s3prl's package
    cached = Path(ENV["MAEAST_CACHE"]) / "s3prl-voxceleb1"
    assert {p.name for p in cached.glob("*/*.pkl")} == {"train.pkl", "dev.pkl", "test.pkl"}
    assert sorted(Path(vox.__path__[0]).glob(".cache/*")) == in_package

    root, meta = make_iemocap(tmp_path / "iemocap")
    er = ",,".join([
        f"config.downstream_expert.datarc.root={root}",
        f"config.downstream_expert.datarc.meta_data={meta}",
        "config.downstream_expert.datarc.train_batch_size=4",
        "config.downstream_expert.datarc.num_workers=1",
        "config.runner.gradient_accumulate_steps=1",
        "config.runner.total_steps=24,,config.runner.eval_step=24,,config.runner.save_step=24",
        "config.runner.log_step=8",
    ])
    train_then_evaluate(LAUNCHER, tmp_path / "er", tiny_patch_ckpt,
                        "emotion", "last_hidden_state", er, 24, tmp_path)
