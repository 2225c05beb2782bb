"""Every audio case in tests/cases/audio (copies of shared/cases/audio) and its right behaviour."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from instrument.corpus.read import Corpus, parse_name, read_file, read_folder
from instrument.errors import AudioFileError, CorpusError

AUDIO = Path(__file__).parent / "cases" / "audio"
SR = 48000


def _sine_amplitude(x: np.ndarray) -> float:
    return float(np.sqrt(2.0) * np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return read_folder(AUDIO, SR)


def _line(corpus: Corpus, name: str) -> str:
    lines = [ln for ln in corpus.report if ln.split(": ")[0].split(" ", 1)[1] == name]
    assert len(lines) == 1, (name, corpus.report)
    return lines[0]


def test_one_report_line_per_file_sorted(corpus: Corpus) -> None:
    files = sorted(p.relative_to(AUDIO).as_posix() for p in AUDIO.rglob("*") if p.is_file())
    assert [ln.split(": ")[0].split(" ", 1)[1] for ln in corpus.report] == files
    assert len(corpus.clips) + len(corpus.skipped) == len(files)


def test_pcm24_extensible_96k_stereo_mixed_and_resampled(corpus: Corpus) -> None:
    x = read_file(AUDIO / "pcm24_ext_96k_stereo.wav", SR)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == 2400                                   # 4800 frames at 96 k -> 48 k
    assert 0.3 < _sine_amplitude(x[200:-200]) < 0.7
    line = _line(corpus, "pcm24_ext_96k_stereo.wav")
    assert line.startswith("read") and "resampled 96000->48000" in line and "2 ch" in line


def test_float_with_fact_chunk(corpus: Corpus) -> None:
    x = read_file(AUDIO / "float32_44k_with_fact.wav", 44100)
    assert len(x) == 2205 and abs(float(np.max(np.abs(x))) - 0.5) < 1e-3
    assert _line(corpus, "float32_44k_with_fact.wav").startswith("read")


def test_u8_silence_decodes_to_zero(corpus: Corpus) -> None:
    x = read_file(AUDIO / "u8_44k_silence.wav", 44100)
    assert len(x) == 4410 and np.all(x == 0.0)
    assert "silent" in _line(corpus, "u8_44k_silence.wav")


def test_header_claiming_4gb_reads_only_what_is_there(corpus: Corpus) -> None:
    x = read_file(AUDIO / "data_size_0xFFFFFFFF_streamed.wav", 44100)
    assert len(x) == 441
    assert "too short" in _line(corpus, "data_size_0xFFFFFFFF_streamed.wav")


def test_huge_claim_never_allocates_claimed_size(tmp_path: Path) -> None:
    # a 48 kHz 2-channel float file whose data size says 4 GB: what is read is what is there
    src = tmp_path / "ok.wav"
    sf.write(src, np.full((48000, 2), 0.25, np.float32), 48000, subtype="FLOAT")
    raw = bytearray(src.read_bytes())
    i = raw.index(b"data")
    raw[i + 4:i + 8] = (0xFFFFFFF0).to_bytes(4, "little")
    raw[4:8] = (0xFFFFFFFF).to_bytes(4, "little")
    bad = tmp_path / "claims_4gb.wav"
    bad.write_bytes(bytes(raw))
    x = read_file(bad, 48000)
    assert len(x) == 48000 and np.allclose(x, 0.0, atol=1e-6)   # DC 0.25 removed


def test_truncated_header_skipped_and_named(corpus: Corpus) -> None:
    with pytest.raises(AudioFileError, match="truncated_header_30_bytes.wav: truncated WAV"):
        read_file(AUDIO / "truncated_header_30_bytes.wav", SR)
    assert "truncated WAV header" in _line(corpus, "truncated_header_30_bytes.wav")


def test_bad_peak_chunk_skipped_with_clear_message(corpus: Corpus) -> None:
    with pytest.raises(AudioFileError, match="float32_bad_peak_chunk.wav: malformed 'PEAK'"):
        read_file(AUDIO / "float32_bad_peak_chunk.wav", SR)
    line = _line(corpus, "float32_bad_peak_chunk.wav")
    assert line.startswith("skipped") and "PEAK" in line and "No 'data'" not in line


def test_truncated_mp3_reads_what_is_there_with_warning(corpus: Corpus) -> None:
    x = read_file(AUDIO / "mp3_truncated_half.mp3", 44100)
    assert 2000 < len(x) < 22050 and np.all(np.isfinite(x))
    assert 0.3 < _sine_amplitude(x[1500:-500]) < 0.7
    line = _line(corpus, "mp3_truncated_half.mp3")
    assert line.startswith("read") and "truncated" in line


def test_non_ascii_name_read_and_logged(corpus: Corpus, tmp_path: Path) -> None:
    x = read_file(AUDIO / "☃_snowman.wav", 44100)
    assert len(x) == 2205
    line = _line(corpus, "☃_snowman.wav")
    assert line.startswith("read") and "label '☃_snowman'" in line
    # an undecodable byte in a name (Linux): read, and the report line is printable UTF-8
    odd = os.fsdecode(b"caf\xe9_60.flac")
    shutil.copy(AUDIO / "sine_0p5s.flac", tmp_path / "keep.flac")
    shutil.copy(AUDIO / "sine_0p5s.flac", tmp_path / odd)
    c = read_folder(tmp_path, SR)
    assert len(c.clips) == 2
    for ln in c.report:
        ln.encode("utf-8")                                  # never raises
    assert any("caf\\xe9_60.flac" in ln for ln in c.report)


def test_ten_ms_file_skipped_as_too_short(corpus: Corpus) -> None:
    assert len(read_file(AUDIO / "pcm16_44k_0p01s.wav", 44100)) == 441
    line = _line(corpus, "pcm16_44k_0p01s.wav")
    assert line.startswith("skipped") and "too short" in line and "analysis window" in line


def test_dc_offset_removed_and_reported(corpus: Corpus) -> None:
    x = read_file(AUDIO / "pcm16_44k_dc_offset_0p6.wav", 44100)
    assert abs(float(np.mean(x))) < 1e-4
    assert 0.09 < float(np.max(x)) < 0.11                   # a 0.1 sine around 0.6
    assert "DC removed (offset +0.600)" in _line(corpus, "pcm16_44k_dc_offset_0p6.wav")


def test_nan_inf_rejected_naming_file(corpus: Corpus) -> None:
    with pytest.raises(AudioFileError, match="float32_contains_nan_inf.wav: contains 2 NaN"):
        read_file(AUDIO / "float32_contains_nan_inf.wav", SR)
    assert _line(corpus, "float32_contains_nan_inf.wav").startswith("skipped")
    for c in corpus.clips:
        assert np.all(np.isfinite(c.audio))


@pytest.mark.parametrize("name", ["sine_0p5s.flac", "sine_0p5s.ogg"])
def test_flac_and_ogg(name: str, corpus: Corpus) -> None:
    x = read_file(AUDIO / name, 44100)
    assert len(x) == 22050 and 0.45 < _sine_amplitude(x[2000:-2000]) < 0.55
    assert _line(corpus, name).startswith("read")


@pytest.mark.parametrize(("name", "why"), [("not_audio_text_renamed.wav", "holds text"),
                                           ("zero_length_file.wav", "empty file")])
def test_not_audio_skipped_with_reason(name: str, why: str, corpus: Corpus) -> None:
    with pytest.raises(AudioFileError, match=why):
        read_file(AUDIO / name, SR)
    assert why in _line(corpus, name)


def test_mixed_rates_and_channels() -> None:
    c = read_folder(AUDIO / "dataset_mixed_rates_channels", SR)
    assert [cl.path.name for cl in c.clips] == ["a_22050_mono.wav", "b_48000_stereo.wav",
                                               "c_96000_stereo_24bit.wav"]
    for cl in c.clips:
        assert cl.audio.dtype == np.float32 and cl.sample_rate == SR
        assert abs(len(cl.audio) - SR // 2) <= 1           # all 0.5 s long at 48 kHz
        assert 0.4 < _sine_amplitude(cl.audio[2000:-2000]) < 0.6
    text = "\n".join(c.report)
    assert "resampled 22050->48000" in text and "resampled 96000->48000" in text
    assert "skipped e_notes.txt: not an audio file type (.txt)" in text
    assert "skipped d_silent.wav: silent" in text
    s = c.summary()
    assert "3 of 5 files read, 2 skipped" in s and "a_22050_mono" in s


def test_all_silent_refuses_with_summary() -> None:
    with pytest.raises(CorpusError, match="too little usable audio") as e:
        read_folder(AUDIO / "dataset_all_silent", SR)
    msg = str(e.value)
    assert "0 of 3 files read" in msg and "silence0.wav: silent" in msg and "Fix" in msg


def test_empty_and_missing_folders_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="0 of 0 files"):
        read_folder(tmp_path, SR)
    with pytest.raises(CorpusError, match="existing folder"):
        read_folder(tmp_path / "nope", SR)


@pytest.mark.parametrize(("stem", "label", "note"), [
    ("flute_60", "flute", 60), ("piano-C4", "piano", 60), ("violin_A#3", "violin", 58),
    ("cello_Bb2", "cello", 46), ("oboe Fs5", "oboe", 78), ("a_22050_mono", "a_22050_mono", None),
    ("drum_200", "drum_200", None), ("sine_0p5s", "sine_0p5s", None), ("60", "60", None)])
def test_labels_and_notes_from_names(stem: str, label: str, note: int | None) -> None:
    assert parse_name(stem) == (label, note)


def test_notes_reach_clips(tmp_path: Path) -> None:
    t = np.arange(24000) / 48000.0
    for name in ["flute_60.wav", "piano-C4.flac", "violin_A#3.wav"]:
        sf.write(tmp_path / name, 0.3 * np.sin(2 * np.pi * 261.6 * t), 48000)
    c = read_folder(tmp_path, SR)
    assert [(cl.label, cl.note) for cl in c.clips] == [("flute", 60), ("piano", 60),
                                                       ("violin", 58)]
