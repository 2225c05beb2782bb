"""Scores and offline rendering through the same engine code as live play."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import cents, estimate_f0

from instrument.engine.render import render, render_file, write_file
from instrument.engine.score import MAX_TIME_S, Event, load, parse_json, parse_text
from instrument.errors import ConfigError, ScoreError

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
                                         ("0 frobnicate\n", "s.txt:1"),
                                         ("0 note 60\n1e308 note 60 0.5\n", "s.txt:2"),
                                         ("3600.5 note 60\n", "s.txt:1"),
                                         ("nan note 60\n", "s.txt:1"),
                                         ("0 param gain_db 99\n", "s.txt:1"),
                                         ("0 param nosuch 1\n", "s.txt:1"),
                                         ("0\n0 param gain_db inf\n", "s.txt:1")])
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


def test_score_errors_give_the_range(tmp_path: Path):
    p = tmp_path / "s.txt"
    p.write_text("0 note 60\n\n1e308 note 60 0.5\n")
    with pytest.raises(ScoreError, match=r"s\.txt:3: time.*0\.\.3600"):
        load(p)
    p.write_text("0 param gain_db 99\n")
    with pytest.raises(ScoreError, match=r"s\.txt:1: .*gain_db.*-60, 12"):
        load(p)
    p.write_text('[{"t": 0, "cmd": "param nosuch 1"}]')
    with pytest.raises(ScoreError, match="item 0: .*nosuch"):
        load(p)


def test_out_of_order_lines_are_sorted_with_one_warning(caplog):
    text = "1.0 note 60\n0.0 latent 0.5 0.5\n0.0 note 61\n0.5 note 62\n0.2 note 63\n"
    with caplog.at_level("WARNING", logger="instrument.engine.score"):
        events = parse_text(text, "s.txt")
    assert [e.time_s for e in events] == [0.0, 0.0, 0.2, 0.5, 1.0]
    assert str(events[0].cmd) == "latent 0.5 0.5" and str(events[1].cmd) == "note 61 0.8"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "s.txt:2" in warnings[0] and "sorted" in warnings[0]


def test_in_order_scores_do_not_warn(caplog):
    with caplog.at_level("WARNING", logger="instrument.engine.score"):
        parse_text("0 note 60\n0 note 61\n1 off 60\n")
    assert not caplog.records


def test_write_file_streams_the_same_samples_as_render(pitched_decoder, tmp_path: Path):
    """Blockwise writing (never the whole output in memory) gives render()'s samples, to
    24-bit precision."""
    events = parse_text("0 note 60 0.9\n0.4 latent 1 0\n0.8 off 60\n")
    ref = render(pitched_decoder, events, 48000, block_frames=300)
    out = tmp_path / "x.wav"
    summary = write_file(pitched_decoder, events, out, 48000, block_frames=300)
    audio, sr = sf.read(out, dtype="float32")
    assert sr == 48000 and len(audio) == len(ref) and sf.info(out).subtype == "PCM_24"
    assert np.max(np.abs(audio - ref)) < 2.0 ** -22
    assert abs(summary["peak_dbfs"] - 20 * np.log10(np.max(np.abs(ref)))) < 0.01


def test_render_refuses_events_past_the_limit_and_bad_blocks(pitched_decoder):
    from instrument.control.commands import NoteOn

    with pytest.raises(ConfigError, match="3600"):
        render(pitched_decoder, [Event(MAX_TIME_S * 2, NoteOn(60))], 48000)
    with pytest.raises(ConfigError, match="1..16384"):
        render(pitched_decoder, [], 48000, block_frames=0)
    with pytest.raises(ConfigError, match=r"\.wav"):
        write_file(pitched_decoder, [], "x.mp3", 48000)


@pytest.mark.parametrize("make", ["folder", "dev_zero", "too_big"])
def test_a_score_that_is_not_a_small_file_is_refused_at_once(tmp_path, make):
    from pathlib import Path

    from instrument.engine.score import MAX_SCORE_BYTES, load

    if make == "folder":
        path, want = tmp_path, "folder"
    elif make == "dev_zero":
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero on this system")
        path, want = Path("/dev/zero"), "character device"
    else:
        path, want = tmp_path / "huge.txt", str(MAX_SCORE_BYTES)
        path.write_bytes(b"#" * (MAX_SCORE_BYTES + 1))
    with pytest.raises(ScoreError, match=want):
        load(path)
