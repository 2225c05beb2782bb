"""Scores and offline rendering through the same engine code as live play."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import cents, estimate_f0

from instrument.engine.render import render, render_file
from instrument.engine.score import load, parse_json, parse_text
from instrument.errors import ScoreError

DEMO = Path(__file__).resolve().parents[1] / "patches/scores/demo.txt"


def test_text_and_json_scores_parse_the_same():
    text = "# a comment\n0.5 note 60 0.8\n\n0.0 latent 0.2 0.3  # trailing\n1 off 60\n"
    js = '[{"t": 0.5, "cmd": "note 60 0.8"}, {"t": 0, "cmd": "latent 0.2 0.3"}, ' \
         '{"t": 1, "cmd": "off 60"}]'
    a, b = parse_text(text), parse_json(js)
    assert [(e.time_s, str(e.cmd)) for e in a] == [(e.time_s, str(e.cmd)) for e in b]
    assert [e.time_s for e in a] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("text, where", [("0.5 note 200\n", "s.txt:1"),
                                         ("0 note 60\nsoon note 61\n", "s.txt:2"),
                                         ("-1 note 60\n", "s.txt:1"),
                                         ("0 frobnicate\n", "s.txt:1")])
def test_score_errors_name_file_and_line(tmp_path: Path, text: str, where: str):
    p = tmp_path / "s.txt"
    p.write_text(text)
    with pytest.raises(ScoreError, match=where.replace(".", r"\.")):
        load(p)


def test_bad_json_score_is_refused(tmp_path: Path):
    p = tmp_path / "s.json"
    p.write_text('[{"t": 0, "cmd": 5}]')
    with pytest.raises(ScoreError, match="item 0"):
        load(p)
    p.write_text("{not json")
    with pytest.raises(ScoreError, match="JSON"):
        load(p)


def test_render_is_block_size_independent_and_in_tune(pitched_decoder):
    events = parse_text("0 param noise_db -60\n0 note 69 1\n1.0 off 69\n")
    a = render(pitched_decoder, events, 48000, block_frames=512)
    b = render(pitched_decoder, events, 48000, block_frames=441)
    np.testing.assert_array_equal(a, b)
    assert len(a) == int(np.ceil((1.0 + 0.25 + 0.5) * 48000))
    assert abs(cents(estimate_f0(a[12000:46000], 48000), 440.0)) < 3.0
    assert np.abs(a[-1000:]).max() < 1e-3  # the tail let the release finish


def test_demo_score_renders_to_a_wav(pitched_decoder, tmp_path: Path):
    events = load(DEMO)
    corners = {(e.cmd.x, e.cmd.y) for e in events if type(e.cmd).__name__ == "SetLatent"}
    assert {(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.5, 0.5)} <= corners
    assert 18.0 <= max(e.time_s for e in events) <= 25.0
    out = tmp_path / "demo.wav"
    summary = render_file(pitched_decoder, DEMO, out, sample_rate=44100)
    audio, sr = sf.read(out, dtype="float32")
    assert sr == 44100 and sf.info(out).subtype == "PCM_24"
    assert summary["seconds"] > 20.0 and len(audio) == round(summary["seconds"] * sr)
    assert np.isfinite(audio).all() and 0.05 < np.abs(audio).max() <= 1.0
