"""The maeast-embed command line: --help, --version, info."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import reference_checkpoint, tone, write_audio

from maeast_embed import __version__
from maeast_embed.cli import main


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "info" in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "maeast_embed.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_info_on_official_layout_checkpoint(tmp_path):
    path = reference_checkpoint(tmp_path / "official.pt", "tiny-frame")  # built by s3prl's class
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "variant    : frame" in result.output and "encoder_layers" in result.output
    result = CliRunner().invoke(main, ["info", "--json", str(path)])
    record = json.loads(result.output)
    assert record["variant"] == "frame" and record["config"]["kernel_time"] == 2
    assert record["parameters"] > record["encoder_parameters"] > 0
    assert record["weights"] == "full"


def test_info_errors_are_clean(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    result = CliRunner().invoke(main, ["info", str(bad)])
    assert result.exit_code != 0 and "Error:" in result.output and "Traceback" not in result.output


def test_trust_flag_is_accepted(tmp_path, tiny_patch_ckpt):
    result = CliRunner().invoke(main, ["info", "--trust-checkpoint", str(tiny_patch_ckpt)])
    assert result.exit_code == 0 and "patch" in result.output


def test_core_imports_need_no_optional_stack():
    code = (
        "import sys, maeast_embed, maeast_embed.cli, maeast_embed.features, maeast_embed.audio,"
        " maeast_embed.extract; optional=('s3prl', 'heareval', 'hearvalidator', 'tensorflow', 'torchaudio');"
        "bad = [m for m in optional if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_and_extract_run_with_torchaudio_unimportable(tmp_path):
    """The core resamples by itself: a 44.1 kHz file is embedded with torchaudio blocked."""
    write_audio(tmp_path / "in" / "a.wav", tone(1.0, sr=44100), sr=44100)
    code = (
        "import sys; sys.modules['torchaudio'] = None; from maeast_embed.cli import main;"
        f"main(['--help'], standalone_mode=False); main(['extract', {str(tmp_path / 'in')!r}, '-o',"
        f" {str(tmp_path / 'out')!r}, '--quiet'])"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert len(list((tmp_path / "out").rglob("*.npz"))) == 1


_CACHES: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_every_test_has_its_own_cache_and_subprocesses_inherit_it(run):
    """conftest's isolation: no test reads the user's caches (~/.cache/maeast_embed/precision.json
    would decide `--dtype auto`), each test starts empty, and a child process sees the same."""
    from maeast_embed.checkpoint import cache_dir

    home_cache = (Path.home() / ".cache").resolve()
    for name in ("MAEAST_CACHE", "XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME", "MPLCONFIGDIR"):
        assert not Path(os.environ[name]).resolve().is_relative_to(home_cache), name
    cache = cache_dir()
    assert str(cache) == os.environ["MAEAST_CACHE"] and not (cache.exists() and any(cache.iterdir()))
    assert str(cache) not in _CACHES
    _CACHES.append(str(cache))
    cache.mkdir(parents=True)
    (cache / "precision.json").write_text("{}")  # the next test must not see it
    code = "from maeast_embed.checkpoint import cache_dir; print(cache_dir())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(cache)
