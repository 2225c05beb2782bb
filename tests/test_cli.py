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


# --------------------------------------------------------------- refusals: one line, no traceback
def _one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("out, needles", [
    ("{tmp}/nonexist/x.wav", ("does not exist", "nonexist")),
    ("{tmp}/x.mp3", (".mp3", ".wav", ".flac", ".aiff", ".ogg")),
    ("{tmp}", ("allowed",)),  # a folder: no suffix
])
def test_render_refuses_a_bad_output_path_in_one_line(tmp_path, capsys, out, needles):
    score = tmp_path / "s1.txt"
    score.write_text("0 note 60 0.5\n1 off 60\n")
    assert main(["render", str(score), "-o", out.format(tmp=tmp_path)]) == 2
    _one_line_error(capsys.readouterr().err, *needles)


@pytest.mark.parametrize("suffix, subtype", [(".flac", "PCM_24"), (".aiff", "PCM_24"),
                                             (".ogg", "VORBIS")])
def test_render_writes_the_format_its_suffix_names(tmp_path, suffix, subtype):
    score = tmp_path / "s1.txt"
    score.write_text("0 note 60 0.5\n1 off 60\n")
    out = tmp_path / f"x{suffix}"
    assert main(["render", str(score), "-o", str(out)]) == 0
    info = sf.info(out)
    assert info.subtype == subtype and info.samplerate == 48000 and info.frames > 48000


@pytest.mark.parametrize("line, needles", [
    ("1e308 note 60 0.5", ("s.txt:1", "3600")),
    ("0 param gain_db 99", ("s.txt:1", "gain_db", "12")),
    ("0 param nosuch 1", ("s.txt:1", "nosuch", "gain_db")),
    ("0 param gain_db inf", ("s.txt:1", "inf")),
])
def test_render_refuses_a_bad_score_line_naming_file_and_line(tmp_path, capsys, line, needles):
    score = tmp_path / "s.txt"
    score.write_text(line + "\n")
    assert main(["render", str(score), "-o", str(tmp_path / "x.wav")]) == 2
    _one_line_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("args, needles", [
    (["play", "--osc-port", "99999"], ("--osc-port", "99999", "0..65535")),
    (["play", "--osc-port", "-1"], ("--osc-port", "0..65535")),
    (["play", "--block", "-5"], ("--block", "-5", "1..16384")),
    (["play", "--block", "100000"], ("--block", "1..16384")),
    (["play", "--ahead-blocks", "0"], ("--ahead-blocks", "1..16")),
    (["play", "--ahead-blocks", "-1"], ("--ahead-blocks", "1..16")),
    (["play", "--seconds", "nan"], ("--seconds", "nan")),
    (["render", "--block", "0"], ("--block", "1..16384")),
    (["render", "--rate", "99"], ("--rate", "8000..384000")),
    (["dissect", "--osc-port", "70000"], ("--osc-port", "0..65535")),
    (["train", "x", "--seconds", "-2"], ("--seconds", "-2")),
])
def test_out_of_range_options_are_refused_before_anything_opens(capsys, args, needles):
    """argparse refuses these, before any device or socket is touched (so no JACK needed)."""
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    _one_line_error(capsys.readouterr().err, f"instrument {args[0]}", *needles)


def test_encode_refuses_bad_output_paths_up_front(tmp_path, capsys):
    wav = ROOT / "tests/data/flute_55.wav"
    assert main(["encode", str(wav), "--plot", str(tmp_path / "nonexist/x.png")]) == 2
    _one_line_error(capsys.readouterr().err, "--plot", "does not exist")
    assert main(["encode", str(wav), "-o", str(tmp_path / "t.txt")]) == 2
    _one_line_error(capsys.readouterr().err, "-o", ".csv", ".json")
    assert main(["encode", str(tmp_path / "nofile.wav")]) == 2
    _one_line_error(capsys.readouterr().err, "nofile.wav", "not found")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (an unwritable "
                    "folder even for root) to provoke an OSError no up-front check catches")
def test_an_unexpected_os_error_is_one_line_and_v_shows_the_traceback(tmp_path, capsys):
    wav = ROOT / "tests/data/flute_55.wav"
    out = "/proc/instrument-test.csv"  # the folder exists, the write fails
    assert main(["encode", str(wav), "-o", out]) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "instrument encode: error:", "Error", "run with -v")
    with pytest.raises(OSError):
        main(["encode", str(wav), "-o", out, "-v"])


# --------------------------------------------------------------- cut / train
@pytest.mark.parametrize("name", ["../../etc/x", ".hidden", "a/b", "", "x" * 65, "sp ace"])
def test_cut_refuses_a_name_that_is_not_a_plain_folder_name(tmp_path, capsys, name):
    assert main(["cut", str(tmp_path / "ck.pt"), "-n", name]) == 2
    _one_line_error(capsys.readouterr().err, "model name", repr(name), "letters, digits")
    assert not (ROOT / "etc").exists()


def test_cut_refuses_to_overwrite_a_model_folder_without_force(tmp_path, capsys):
    assert main(["cut", str(tmp_path / "ck.pt"), "-n", "default"]) == 2
    _one_line_error(capsys.readouterr().err, "models/default", "already exists", "--force")
    assert (ROOT / "models/default/model.json").is_file()
    # with --force the next check runs: the missing checkpoint (nothing was touched)
    assert main(["cut", str(tmp_path / "ck.pt"), "-n", "x", "-o", str(ROOT / "models/default"),
                 "--force"]) == 2
    _one_line_error(capsys.readouterr().err, "ck.pt", "not found")


def test_train_refuses_resume_without_a_checkpoint_and_a_bad_cut_name(tmp_path, capsys):
    data = str(ROOT / "tests/data")
    assert main(["train", data, "-o", str(tmp_path / "nope.pt"), "--resume"]) == 2
    _one_line_error(capsys.readouterr().err, "no checkpoint at", "nope.pt", "--resume")
    assert main(["train", data, "-o", str(tmp_path / "ck.pt"), "--cut", "../x"]) == 2
    _one_line_error(capsys.readouterr().err, "--cut", "'../x'")
    assert not (tmp_path / "ck.pt").exists()  # refused before training


@pytest.mark.slow
def test_train_prints_its_device_and_resume_seconds_is_this_runs_budget(tmp_path, capsys):
    """A checkpoint that already trained for hours still gets this run's --seconds."""
    import torch

    data, ck = str(ROOT / "tests/data"), tmp_path / "ck.pt"
    assert main(["train", data, "-o", str(ck), "--steps", "20", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("train: device cpu"), err[:200]
    state = torch.load(ck, weights_only=True)
    assert state["step"] == 20
    state["elapsed_s"] = 10_000.0  # as if the first run had trained for ~3 hours
    torch.save(state, ck)
    assert main(["train", data, "-o", str(ck), "--resume", "--steps", "30",
                 "--seconds", "120"]) == 0
    assert "resuming" in capsys.readouterr().err
    state = torch.load(ck, weights_only=True)
    assert state["step"] == 30 and state["elapsed_s"] > 10_000.0
    # already at --steps: refused (not a silent 0-step run)
    assert main(["train", data, "-o", str(ck), "--resume", "--steps", "30"]) == 2
    assert "> 30" in capsys.readouterr().err


# --------------------------------------------------------------- play: checks before devices open
@pytest.mark.parametrize("args, needles", [
    (["--follow", "nofile.wav"], ("--follow", "nofile.wav", "file not found")),
    (["--follow", "some/dir/take"], ("--follow", "file not found")),
    (["--follow-latent-only"], ("--follow-latent-only", "--follow")),
])
def test_play_refuses_bad_follow_options_before_opening_audio(capsys, args, needles):
    assert main(["play", "--no-midi", "--seconds", "0.1", *args]) == 2
    _one_line_error(capsys.readouterr().err, *needles)


def test_play_without_any_audio_device_points_to_render(tmp_path):
    """A real PortAudio with JACK pointed at a server that does not exist."""
    import os

    env = {**os.environ, "JACK_DEFAULT_SERVER": f"no-such-server-{os.getpid()}",
           "JACK_NO_START_SERVER": "1"}
    r = subprocess.run([sys.executable, "-m", "instrument.cli", "play", "--no-midi",
                        "--osc-port", "0", "--seconds", "0.1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        pytest.skip("this machine has an audio output device besides JACK")
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("instrument play:")]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "no audio output device" in err[0] and "instrument render" in err[0]
    assert "None" not in err[0] and "Traceback" not in r.stderr


@pytest.mark.jack
def test_play_prints_the_latency_it_adds_up(jack_server, capsys):
    import re

    assert main(["play", "--no-midi", "--osc-port", "0", "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"\(([\d.]+) ms\) worst case = engine hop ([\d.]+) \+ ring ([\d.]+) \+ "
                  r"device-reported ([\d.]+) ms", out)
    assert m, out
    total, *parts = map(float, m.groups())
    assert abs(total - sum(parts)) < 0.2 and all(p >= 0 for p in parts)


def test_help_texts_say_what_the_options_do(capsys):
    for verb, needles, absent in [
        ("encode", ("next to the input", "trajectory.csv"), ("patch",)),
        ("listen", ("'default'",), ("patch",)),
        ("play", ("7.6 ms", "worst case", "1..16", "0..65535"), ("~8 ms",)),
        ("train", ("this run's time budget",), ()),
    ]:
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for n in needles:
            assert n in text, (verb, n)
        for n in absent:
            assert n not in text, (verb, n)
