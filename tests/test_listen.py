"""listen/: the streaming encoder, OSC out, the live listener (file and JACK device)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from instrument.errors import ConfigError
from instrument.listen.encode import (
    encode_audio,
    encode_file,
    plot_trajectory,
    read_csv,
    write_trajectory,
)
from instrument.listen.follower import Coord, Follower
from instrument.listen.sender import Sender, SubscriptionServer, Target, parse_target
from instrument.model.modelfile import MLP, Encoder, write

SR = 48000
CASES = Path(__file__).parent / "cases" / "listen"  # copies of /work/shared/cases files


# -- a model folder with random weights (real files, real loader, real self-check) --------
def make_random_model(folder: Path, mode: str = "pitched", sample_rate: int = SR,
                      seed: int = 0) -> Path:
    from instrument.corpus.features import N_HARMONICS, N_NOISE_BANDS, noise_band_edges_hz

    rng = np.random.default_rng(seed)
    n_feat = N_HARMONICS + N_NOISE_BANDS if mode == "pitched" else 513
    n_in = n_feat + (1 if mode == "pitched" else 0)
    dec_in = 3 if mode == "pitched" else 2

    def mlp(sizes: list[int], acts: list[str]) -> MLP:
        ws = [rng.normal(0, 1 / math.sqrt(a), size=(b, a)).astype(np.float32)
              for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        bs = [np.zeros(b, np.float32) for b in sizes[1:]]
        return MLP(ws, bs, acts)

    enc = mlp([n_in, 32, 2], ["tanh", "linear"])
    dec = mlp([dec_in, 32, n_feat], ["tanh", "linear"])
    pts = rng.uniform(0, 1, size=(40, 2)).tolist()
    meta = {
        "name": folder.name, "mode": mode, "sample_rate": sample_rate, "hop_samples": 256,
        "n_fft": 1024, "window_samples": 2048, "n_harmonics": N_HARMONICS,
        "noise_band_edges_hz": noise_band_edges_hz(sample_rate, N_NOISE_BANDS).tolist(),
        "latency_samples": {"decoder": 256, "encoder": 1024},
        "latent": {"raw_lo": [-1.5, -1.5], "raw_hi": [1.5, 1.5], "corpus_points": pts,
                   "corpus_labels": ["a" if i % 2 else "b" for i in range(len(pts))]},
        "features": {"mean": np.full(n_feat, -4.0).tolist(), "std": np.full(n_feat, 2.0).tolist()},
        "corpus": {"files": 0, "licence": "random test weights"},
    }
    write(folder, meta, dec, enc)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("listen") / "rand_pitched")


@pytest.fixture(scope="module")
def unpitched_dir(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("listen") / "rand_unpitched", "unpitched")


def tone(seconds: float, f0_hz: float, sr: int = SR, amp: float = 0.3,
         bright: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = sum((bright ** (k - 1)) / k * np.sin(2 * np.pi * k * f0_hz * t) for k in range(1, 9))
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


def make_signal(sr: int = SR) -> np.ndarray:
    """Tone, a brighter tone, a noise burst, silence, a tone: exercises every branch."""
    rng = np.random.default_rng(1)
    return np.concatenate([
        tone(0.12, 220.0, sr), tone(0.1, 330.0, sr, bright=1.3),
        (0.2 * rng.standard_normal(int(0.05 * sr))).astype(np.float32),
        np.zeros(int(0.06 * sr), np.float32), tone(0.07, 440.0, sr, amp=0.5)])


# -- Follower -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode_fixture", ["model_dir", "unpitched_dir"])
def test_block_size_does_not_change_the_trajectory(mode_fixture, request):
    folder = request.getfixturevalue(mode_fixture)
    enc = Encoder(folder)
    x = make_signal()
    whole = encode_audio(enc, x, SR)
    assert len(whole) == len(x) // 256 + 1
    for block in (64, 441, 4096):
        assert encode_audio(enc, x, SR, block_frames=block) == whole, block
    # variable host block sizes from the realtime case file (0 = an empty callback)
    import json

    seq = json.loads((CASES / "callback_frames_sequence.json").read_text())[
        "variable_blocksize_frames"]
    f = Follower(enc, SR)
    got, i, k = [], 0, 0
    while i < len(x):
        n = seq[k % len(seq)]
        got += f.process(x[i:i + n])
        i += n
        k += 1
    got += f.flush()
    assert got[:len(whole)] == whole


def test_block_size_one_on_a_short_file(model_dir):
    x = make_signal()[: int(0.05 * SR)]
    whole = encode_audio(model_dir, x, SR)
    assert encode_audio(model_dir, x, SR, block_frames=1) == whole


def test_resampled_input_is_block_size_independent_and_timed(model_dir):
    x = make_signal(44100)
    whole = encode_audio(model_dir, x, 44100)
    assert encode_audio(model_dir, x, 44100, block_frames=441) == whole
    assert encode_audio(model_dir, x, 44100, block_frames=4096) == whole
    # hops are at the model rate, on the input's timeline
    assert whole[1].time_s == pytest.approx(256 / SR)
    assert whole[-1].time_s <= len(x) / 44100
    assert Follower(model_dir, 44100).latency_samples > Follower(model_dir, SR).latency_samples \
        * 44100 / SR


def test_silence_holds_the_position_and_reports_silent(model_dir):
    x = np.concatenate([tone(0.2, 220.0), np.zeros(int(0.3 * SR), np.float32)])
    coords = encode_audio(model_dir, x, SR)
    loud = [c for c in coords if c.time_s < 0.15]
    quiet = [c for c in coords if c.time_s > 0.25]
    assert loud and quiet
    assert not any(c.silent for c in loud) and all(c.voiced for c in loud[8:])
    assert all(c.silent and not c.voiced for c in quiet)
    last = [c for c in coords if not c.silent][-1]
    assert {(c.x, c.y) for c in quiet} == {(last.x, last.y)}
    assert all(math.isfinite(c.x) and math.isfinite(c.y) and math.isfinite(c.loudness_db)
               for c in coords)


def test_start_is_the_centre_not_a_corner(model_dir):
    coords = encode_audio(model_dir, np.zeros(SR // 10, np.float32), SR)
    assert all((c.x, c.y) == (0.5, 0.5) and c.silent for c in coords)


def test_unvoiced_frames_hold_on_a_pitched_model(model_dir):
    rng = np.random.default_rng(3)
    x = np.concatenate([tone(0.2, 220.0), (0.3 * rng.standard_normal(SR // 4))
                        .astype(np.float32)])
    coords = encode_audio(model_dir, x, SR)
    noise = [c for c in coords if c.time_s > 0.3]
    assert noise and all(not c.silent for c in noise)
    unvoiced = [c for c in noise if not c.voiced]
    assert len(unvoiced) > len(noise) // 2
    # an unvoiced frame never moves the point: it equals the previous frame's position
    idx = {id(c): i for i, c in enumerate(coords)}
    for c in unvoiced:
        prev = coords[idx[id(c)] - 1]
        assert (c.x, c.y) == (prev.x, prev.y)


def test_nan_inf_and_clipped_input_are_sanitised_and_counted(model_dir):
    x = tone(0.4, 220.0)
    x[int(0.15 * SR):int(0.25 * SR)] = np.nan      # a dropout delivered as NaN
    x[int(0.05 * SR):int(0.05 * SR) + 10] = np.inf
    x[int(0.3 * SR):int(0.32 * SR)] *= 1e6         # a wild gain: clipped to +-1
    f = Follower(model_dir, SR)
    coords = f.encode_all(x, block_frames=441)
    assert f.nonfinite_samples == int(0.1 * SR) + 10
    assert f.clipped_samples > 0
    assert all(0.0 <= c.x <= 1.0 and 0.0 <= c.y <= 1.0 and math.isfinite(c.loudness_db)
               for c in coords)
    # the NaN dropout is silence: it holds the position it had before
    before = [c for c in coords if c.time_s < 0.2 and not c.silent][-1]
    assert before.time_s > 0.13
    inside = [c for c in coords if 0.2 < c.time_s < 0.2 + 256 / SR * 3]
    assert inside and all(c.silent and (c.x, c.y) == (before.x, before.y) for c in inside)


def test_nan_wav_case_file_encodes(model_dir):
    coords = encode_file(model_dir, CASES / "float32_contains_nan_inf.wav")
    assert coords and all(math.isfinite(c.x) and math.isfinite(c.y) for c in coords)


def test_96k_stereo_24bit_case_file_is_mixed_and_resampled(model_dir):
    path = CASES / "pcm24_ext_96k_stereo.wav"
    info = sf.info(str(path))
    coords = encode_file(model_dir, path)
    assert info.samplerate == 96000 and info.channels == 2
    assert len(coords) == pytest.approx(info.frames / 2 / 256, abs=2)  # hops at 48 kHz
    assert any(not c.silent for c in coords)
    assert encode_file(model_dir, path, block_frames=441) == coords


def test_stereo_is_mixed_to_mono(model_dir):
    x = make_signal()
    st = np.stack([x * 0.5, x * 1.5], axis=1)
    assert encode_audio(model_dir, st, SR, block_frames=441) == encode_audio(model_dir, x, SR)


def test_smoothing_moves_less_per_hop(model_dir):
    x = make_signal()
    raw = encode_audio(model_dir, x, SR)
    smooth = encode_audio(model_dir, x, SR, smoothing_ms=60.0)

    def travel(cs: list[Coord]) -> float:
        pairs = zip(cs[:-1], cs[1:], strict=True)
        return float(sum(math.dist((a.x, a.y), (b.x, b.y)) for a, b in pairs))

    assert travel(raw) > 0
    assert travel(smooth) < travel(raw)


def test_bad_settings_are_refused_clearly(model_dir):
    with pytest.raises(ConfigError, match="sample rate"):
        Follower(model_dir, 100)
    with pytest.raises(ConfigError, match="smoothing_ms"):
        Follower(model_dir, SR, smoothing_ms=float("nan"))
    with pytest.raises(ConfigError, match="block shape"):
        Follower(model_dir, SR).process(np.zeros((2, 2, 2)))


# -- trajectories on disk --------------------------------------------------------------------
def test_csv_json_and_plot(model_dir, tmp_path):
    coords = encode_audio(model_dir, make_signal(), SR)
    back = read_csv(write_trajectory(coords, tmp_path / "t.csv"))
    assert len(back) == len(coords)
    assert back[5].x == pytest.approx(coords[5].x, abs=1e-6)
    assert [c.silent for c in back] == [c.silent for c in coords]
    import json

    doc = json.loads(write_trajectory(coords, tmp_path / "t.json").read_text())
    assert doc["coords"][3]["y"] == coords[3].y and doc["fields"][0] == "time_s"
    with pytest.raises(ConfigError, match=".csv or .json"):
        write_trajectory(coords, tmp_path / "t.txt")
    png = plot_trajectory(model_dir, coords, tmp_path / "t.png")
    data = png.read_bytes()
    assert len(data) > 5000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# -- OSC out ---------------------------------------------------------------------------------
def udp_receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    return s


def recv_msgs(sock: socket.socket, n: int, timeout_s: float = 3.0) -> list[OscMessage]:
    out, end = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < end:
        try:
            out.append(OscMessage(sock.recvfrom(65536)[0]))
        except TimeoutError:
            break
    return out


def test_targets_parse_and_refuse():
    assert parse_target("127.0.0.1:9000") == Target("127.0.0.1", 9000, "/inst/listen/xy")
    assert parse_target(":9001/my/xy") == Target("127.0.0.1", 9001, "/my/xy")
    assert parse_target("wekinator") == Target("127.0.0.1", 6448, "/wek/inputs", "xy")
    for bad in ("localhost", "host:99999", "h:12/has space", "h:12/wild*"):
        with pytest.raises(ConfigError, match="listen target"):
            parse_target(bad)


def test_sender_sends_real_udp_to_every_target():
    a, b = udp_receiver(), udp_receiver()
    s = Sender([f"127.0.0.1:{a.getsockname()[1]}",
                Target("127.0.0.1", b.getsockname()[1], "/wek/inputs", "xy")]).start()
    try:
        c1, c2 = Coord(0.25, 0.1, 0.9, -12.5, True, False), Coord(0.5, 0.2, 0.8, -80, False, True)
        assert s.send([c1, c2])
        ma, mb = recv_msgs(a, 2), recv_msgs(b, 2)
        assert [m.address for m in ma] == ["/inst/listen/xy"] * 2
        assert ma[0].params == pytest.approx([0.1, 0.9, -12.5, 1, 0, 0.25])
        assert ma[1].params[3:5] == [0, 1]
        assert [m.address for m in mb] == ["/wek/inputs"] * 2
        assert mb[1].params == pytest.approx([0.2, 0.8])
    finally:
        s.stop()
        a.close()
        b.close()
    assert s.sent_packets == 4 and s.dropped == 0


def test_sender_never_blocks_when_its_queue_is_full():
    s = Sender(["127.0.0.1:9"], queue_items=2)  # not started: nobody drains the queue
    c = [Coord(0, 0.5, 0.5, -20, True, False)]
    t0 = time.perf_counter()
    results = [s.send(c) for _ in range(10)]
    assert results == [True, True] + [False] * 8
    assert s.dropped == 8
    assert time.perf_counter() - t0 < 1.0  # it did not wait on the queue
    s.stop()


def test_subscribe_by_request_over_udp():
    s = Sender([]).start()
    srv = SubscriptionServer(s, port=0).start()
    client = udp_receiver()
    try:
        junk = b"not osc"
        client.sendto(junk, (srv.host, srv.port))
        b = OscMessageBuilder("/inst/listen/subscribe")
        b.add_arg(client.getsockname()[1], "i")
        client.sendto(b.build().dgram, (srv.host, srv.port))
        reply = recv_msgs(client, 1)
        assert reply and reply[0].address == "/inst/listen/subscribed"
        assert reply[0].params == ["127.0.0.1", client.getsockname()[1]]
        s.send([Coord(0.0, 0.3, 0.7, -10, True, False)])
        got = recv_msgs(client, 1)
        assert got and got[0].params[:2] == pytest.approx([0.3, 0.7])
        assert srv.bad_packets == 1
        u = OscMessageBuilder("/inst/listen/unsubscribe")
        u.add_arg(client.getsockname()[1], "i")
        client.sendto(u.build().dgram, (srv.host, srv.port))
        end = time.monotonic() + 2
        while s.targets and time.monotonic() < end:
            time.sleep(0.01)
        assert s.targets == []
    finally:
        srv.stop()
        s.stop()
        client.close()


# -- the live listener -----------------------------------------------------------------------
def test_listener_plays_a_file_in_real_time_like_the_offline_encoder(model_dir, tmp_path):
    from instrument.listen.live import Listener

    wav = tmp_path / "in.wav"
    x = make_signal()[: int(0.25 * SR)]
    sf.write(str(wav), x, SR, subtype="FLOAT")
    rx = udp_receiver()
    seen: list[Coord] = []
    lines: list[str] = []
    lst = Listener(model_dir, file=wav, targets=[f"127.0.0.1:{rx.getsockname()[1]}"],
                   on_coords=seen.extend, log=lines.append)
    t0 = time.monotonic()
    lst.run(seconds=5)
    elapsed = time.monotonic() - t0
    offline = encode_file(model_dir, wav, block_frames=256)
    assert elapsed >= 0.2  # paced by the clock, not as fast as possible
    assert seen[:len(offline)] == offline
    msgs = recv_msgs(rx, len(seen))
    rx.close()
    assert len(msgs) == len(seen)
    assert msgs[10].params[:2] == pytest.approx([seen[10].x, seen[10].y], abs=1e-6)
    assert any("latency" in s for s in lines) and any("sending to 127.0.0.1" in s for s in lines)


def test_listener_refuses_a_missing_file(model_dir, tmp_path):
    from instrument.errors import AudioFileError
    from instrument.listen.live import Listener

    with pytest.raises(AudioFileError, match="nope.wav"):
        Listener(model_dir, file=tmp_path / "nope.wav", log=None).start()


def _jack_ports() -> set[str]:
    out = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=5,
                         env={**os.environ, "JACK_NO_START_SERVER": "1"}).stdout
    return {p.strip() for p in out.splitlines() if p.strip()}


@pytest.mark.jack
def test_listener_on_a_jack_input_sends_coordinates_over_udp(model_dir, jack_server):
    import sounddevice as sd

    from instrument.listen.live import Listener

    sig = np.concatenate([tone(0.4, 220.0), np.zeros(int(0.3 * SR), np.float32)])
    pos = [0]

    def play(outdata, frames, time_info, status):  # the test's "instrument into the mic"
        i = pos[0]
        chunk = sig[i:i + frames]
        outdata[:len(chunk), 0] = chunk
        outdata[len(chunk):, 0] = 0.0
        pos[0] = i + frames

    rx = udp_receiver()
    before = _jack_ports()
    lst = Listener(model_dir, device=None, channels=1,
                   targets=[f"127.0.0.1:{rx.getsockname()[1]}"], log=None)
    lst.start()
    try:
        in_ports = sorted(p for p in _jack_ports() - before if ":in" in p)
        assert in_ports, "the listener's JACK input port did not appear"
        assert lst.sample_rate == 48000
        before_out = _jack_ports()
        out = sd.OutputStream(samplerate=SR, channels=1, dtype="float32", callback=play)
        out.start()
        try:
            out_ports = sorted(p for p in _jack_ports() - before_out if ":out" in p)
            assert out_ports, "the player's JACK output port did not appear"
            pos[0] = 0  # start the sound only once it is connected
            subprocess.run(["jack_connect", out_ports[0], in_ports[0]], check=True, timeout=5,
                           env={**os.environ, "JACK_NO_START_SERVER": "1"})
            pos[0] = 0
            msgs = recv_msgs(rx, 400, timeout_s=2.0)
        finally:
            out.stop()
            out.close()
    finally:
        lst.stop()
        rx.close()
    assert msgs, "no coordinates arrived over UDP"
    args = [m.params for m in msgs]
    assert all(len(a) == 6 and all(math.isfinite(float(v)) for v in a) for a in args)
    sounding = [a for a in args if a[4] == 0]
    assert len(sounding) > 20, "the tone was not heard"
    # the steady part of the tone lands where the offline encoder puts the same tone
    offline = [c for c in encode_audio(model_dir, tone(0.4, 220.0), SR) if 0.1 < c.time_s < 0.35]
    want = np.median([[c.x, c.y] for c in offline], axis=0)
    got = np.median([a[:2] for a in sounding[5:-5]], axis=0)
    assert np.allclose(got, want, atol=0.02), (got, want)
    # then the silence is reported and holds the last sounding position
    tail = args[args.index(sounding[-1]) + 1:]
    assert tail and all(a[4] == 1 for a in tail)
    assert all(a[:2] == sounding[-1][:2] for a in tail)
    assert lst.callback_errors == 0


def test_package_imports_without_sounddevice():
    code = ("import sys; import instrument.listen, instrument.listen.encode, "
            "instrument.listen.sender; import instrument.listen.live; "
            "assert 'sounddevice' not in sys.modules, 'sounddevice imported eagerly'")
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr



def test_drive_mode_turns_sounding_coords_into_setlatent():
    from instrument.control.commands import SetLatent
    from instrument.listen.live import follow_into, latent_command

    a = Coord(0.0, 0.2, 0.3, -20, True, False)
    b = Coord(0.01, 0.6, 0.7, -25, False, False)
    quiet = Coord(0.02, 0.6, 0.7, -90, False, True)
    assert latent_command([a, b, quiet]) == SetLatent(0.6, 0.7)
    assert latent_command([quiet]) is None and latent_command([]) is None
    sent: list = []
    on = follow_into(sent.append)
    on([a])
    on([quiet])
    assert sent == [SetLatent(0.2, 0.3)]


def test_a_44k_model_listens_to_a_48k_device(tmp_path):
    """The device_samplerate_mismatch case, turned round: open at the device rate, resample."""
    m44 = make_random_model(tmp_path / "m44", sample_rate=44100)
    x = make_signal(48000)
    f = Follower(m44, 48000)
    assert f.model_rate == 44100 and f.sample_rate == 48000
    coords = encode_audio(m44, x, 48000)
    assert encode_audio(m44, x, 48000, block_frames=470) == coords
    assert coords[2].time_s == pytest.approx(2 * 256 / 44100)
    assert len(coords) == pytest.approx(len(x) / 48000 * 44100 / 256, abs=2)
    # the same sound at the model's own rate lands at the same place (steady part)
    native = encode_audio(m44, tone(0.3, 220.0, 44100), 44100)
    resampled = encode_audio(m44, tone(0.3, 220.0, 48000), 48000)

    def steady(cs):
        return np.median([[c.x, c.y] for c in cs if 0.1 < c.time_s < 0.25], axis=0)

    assert np.allclose(steady(native), steady(resampled), atol=0.01)
