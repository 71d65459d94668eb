"""benchmarks/paper_claims.py refuses input that cannot give its table, quickly and clearly."""

import sys
from pathlib import Path

import pytest
from helpers import tone, write_audio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paper_claims  # noqa: E402


def test_no_audio_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not audio")
    code = paper_claims.main(["--data", str(tmp_path / "empty"), "--generated-hours", "0",
                              "--work-dir", str(tmp_path / "work"), "--skip-speed"])
    assert code != 0 and "no audio to pretrain on" in capsys.readouterr().err
    code = paper_claims.main(["--data", str(tmp_path / "missing"), "--generated-hours", "0",
                              "--work-dir", str(tmp_path / "work"), "--skip-speed"])
    assert code != 0 and "no audio to pretrain on" in capsys.readouterr().err


def test_clips_all_too_short_say_so(tmp_path, capsys):
    for i in range(3):
        write_audio(tmp_path / "short" / f"{i}.wav", tone(1.0, seed=i))  # under the recipe's 2 s
    code = paper_claims.main(["--data", str(tmp_path / "short"), "--generated-hours", "0",
                              "--work-dir", str(tmp_path / "work"), "--skip-speed"])
    assert code != 0 and "shorter than the minimum" in capsys.readouterr().err


def test_a_budget_too_small_for_one_update_says_so(tmp_path, capsys):
    for i in range(4):
        write_audio(tmp_path / "audio" / f"{i}.wav", tone(2.5, 200.0 * (i + 1), seed=i))
    code = paper_claims.main(["--data", str(tmp_path / "audio"), "--generated-hours", "0",
                              "--work-dir", str(tmp_path / "work"), "--skip-speed",
                              "--budget-minutes", "0.0001", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and "too small to reach one update in mae mode" in err
    assert not (tmp_path / "work" / "mae.pt").exists()
    with pytest.raises(SystemExit):
        paper_claims.main(["--budget-minutes", "0"])
