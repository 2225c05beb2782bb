"""Training a real small network on the real tests/data corpus (fluidsynth renderings)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("instrument.corpus.features", reason="corpus stage not present")

from instrument.errors import ConfigError, CorpusError  # noqa: E402
from instrument.model.dataset import TrainingSet, load_folder  # noqa: E402
from instrument.model.train import (  # noqa: E402
    TrainConfig,
    load_checkpoint,
    model_from_checkpoint,
    train,
    train_arrays,
)

DATA = Path(__file__).parent / "data"
SMALL = dict(mode="pitched", batch=64, enc_hidden=(32,), dec_hidden=(32, 32), eval_every=20,
             progress=False)


@pytest.fixture(scope="module")
def data() -> TrainingSet:
    return load_folder(DATA, 48000, mode="pitched")


def test_dataset_reads_notes_and_splits_by_clip(data: TrainingSet) -> None:
    assert data.mode == "pitched" and data.n_features == 96
    assert len(data.clip_labels) == 12 and set(data.clip_notes) == {55, 62, 69}
    # f0 comes from the note in the file name
    assert set(np.unique(data.note_per_frame())) == {55, 62, 69}
    tr, ho = data.split(0.25, seed=0)
    assert set(data.clip[tr]).isdisjoint(set(data.clip[ho]))
    assert len(tr) + len(ho) == len(data.clip)
    tr2, ho2 = data.split(0.25, seed=0)
    assert np.array_equal(ho, ho2)
    # harmonics above Nyquist are masked: note 69 (440 Hz) has 54 harmonics below 24 kHz
    v = data.valid_mask()[data.note_per_frame() == 69][0]
    assert v[:54].all() and not v[54:64].any() and v[64:].all()


def test_resume_continues_step_count_and_matches_uninterrupted(data: TrainingSet,
                                                               tmp_path: Path) -> None:
    a = train_arrays(data, tmp_path / "a.pt", TrainConfig(steps=60, **SMALL))
    b = train_arrays(data, tmp_path / "b.pt", TrainConfig(steps=30, schedule_steps=60, **SMALL))
    assert load_checkpoint(b)["step"] == 30
    b = train_arrays(data, b, TrainConfig(steps=60, **SMALL), resume=True)
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert cb["step"] == 60 and cb["complete"]
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k


def test_checkpoint_loads_weights_only_and_rebuilds_model(data: TrainingSet,
                                                          tmp_path: Path) -> None:
    p = train_arrays(data, tmp_path / "c.pt", TrainConfig(steps=40, **SMALL))
    raw = torch.load(p, weights_only=True)
    model = model_from_checkpoint(raw)
    x = torch.as_tensor(data.features[:5])
    f = torch.as_tensor(data.log2_f0[:5])
    code = model.encode(x, f)
    assert code.shape == (5, 2) and torch.all(code.abs() < 1)
    assert model.decode(code, f).shape == (5, 96)
    assert raw["corpus"]["licence"] and raw["figures"]["lsd_db"] > 0


def test_default_loop_same_seed_same_weights(data: TrainingSet, tmp_path: Path) -> None:
    p1 = train_arrays(data, tmp_path / "1.pt", TrainConfig(steps=20, **SMALL))
    p2 = train_arrays(data, tmp_path / "2.pt", TrainConfig(steps=20, **SMALL))
    m1, m2 = load_checkpoint(p1)["model"], load_checkpoint(p2)["model"]
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


def test_bad_config_and_silent_folder_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TrainConfig.lr"):
        train(DATA, tmp_path / "x.pt", TrainConfig(lr=float("nan")))
    import soundfile as sf
    (tmp_path / "silent").mkdir()
    sf.write(str(tmp_path / "silent" / "a_60.wav"), np.zeros(48000, np.float32), 48000)
    with pytest.raises(CorpusError):
        train(tmp_path / "silent", tmp_path / "y.pt", TrainConfig(steps=5, progress=False))


_CHILD = """
import sys, numpy as np
from instrument.model.dataset import TrainingSet
from instrument.model.train import TrainConfig, train_arrays
z = np.load(sys.argv[1], allow_pickle=False)
d = TrainingSet('pitched', 48000, 256, z['features'], z['log2_f0'], z['clip'],
                [str(s) for s in z['labels']], [None] * len(z['labels']), {})
train_arrays(d, sys.argv[2], TrainConfig(mode='pitched', steps=10**7, batch=64,
             enc_hidden=(32,), dec_hidden=(32,), eval_every=50))
"""


def test_ctrl_c_saves_resumable_checkpoint(data: TrainingSet, tmp_path: Path) -> None:
    """A real SIGINT to a training process leaves a checkpoint that resumes."""
    npz = tmp_path / "d.npz"
    np.savez(npz, features=data.features, log2_f0=data.log2_f0, clip=data.clip,
             labels=np.array(data.clip_labels))
    ck = tmp_path / "int.pt"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(npz), str(ck)],
                            stderr=subprocess.PIPE, text=True)
    buf = ""
    while "step 100/" not in buf:  # wait for progress, not for a time
        ch = proc.stderr.read(1)
        if not ch:
            break
        buf += ch
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, buf + err
    assert "interrupted" in err
    c = load_checkpoint(ck)
    assert not c["complete"] and c["step"] >= 100 and c["optimizer"]["state"]
    step = c["step"]
    resumed = train_arrays(data, ck, TrainConfig(steps=step + 10, progress=False), resume=True)
    assert load_checkpoint(resumed)["step"] == step + 10
