"""The README's commands, run as a new user would (from another folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from instrument.cli import VERBS, main

ROOT = Path(__file__).resolve().parents[1]


def test_every_verb_has_help(capsys):
    for verb in VERBS:
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
        assert verb in capsys.readouterr().out


def test_readme_render_makes_sound_from_the_shipped_model(tmp_path):
    """``instrument render -o demo.wav`` from any folder, with no torch imported."""
    out = tmp_path / "demo.wav"
    code = ("import sys; from instrument.cli import main; "
            f"rc = main(['render', '-o', {str(out)!r}]); "
            "assert 'torch' not in sys.modules, 'render imported torch'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "render:" in r.stdout
    audio, sr = sf.read(out)
    assert sr == 48000 and len(audio) > 10 * sr
    assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0
    assert np.sqrt(np.mean(audio ** 2)) > 0.01  # it is not silence


def test_readme_is_generated_from_the_parameter_table():
    from instrument import params

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert params.markdown_table() in readme
    for name in params.PARAMS:
        assert f"`{name}`" in readme


def test_info_describes_the_default_model(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "instrument-model/1" in out and "latency" in out and "self-check passed" in out


def test_a_bad_model_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "model.json").write_text('{"format": "something-else"}')
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "format" in err and "instrument-model/1" in err and "Traceback" not in err


def test_render_rejects_a_bad_score_naming_the_line(tmp_path, capsys):
    score = tmp_path / "bad.txt"
    score.write_text("0.0 note 60 0.8\n0.5 note 200 0.8\n")
    assert main(["render", str(score), "-o", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt:2" in err and "127" in err


def test_render_at_another_rate_keeps_the_pitch(tmp_path):
    from conftest import cents, estimate_f0

    score = tmp_path / "a4.txt"
    score.write_text("0.0 param noise_db -60\n0.0 note 69 1\n2.0 off 69\n")
    for rate in (44100, 96000):
        out = tmp_path / f"a4_{rate}.wav"
        assert main(["render", str(score), "-o", str(out), "--rate", str(rate)]) == 0
        audio, sr = sf.read(out)
        assert sr == rate
        tone = audio[int(0.3 * sr):int(1.8 * sr)]
        assert abs(cents(estimate_f0(tone, sr), 440.0)) < 3.0
