"""Train the autoencoder: one readable loop.

``train(folder, checkpoint_path, config)`` reads and analyses a sound folder;
``train_arrays(data, checkpoint_path, config)`` trains on a prepared :class:`TrainingSet`.
Ctrl-C saves a resumable checkpoint; ``resume=True`` continues its step count (the
checkpoint must exist, and ``steps`` must go past its step). ``max_seconds`` is this run's
time budget: a resumed run gets the whole budget again, whatever the checkpoint trained.
The checkpoint holds only tensors and plain Python types (``torch.load(path,
weights_only=True)`` reads it) and is enough to rebuild the model
(:func:`model_from_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from instrument.errors import ConfigError, InstrumentError, describe
from instrument.model.calibrate import calibrate
from instrument.model.dataset import DEFAULT_LICENCE, TrainingSet, load_folder
from instrument.model.metrics import lsd_db, nn_note_accuracy, pca_lsd_db
from instrument.model.nets import AutoEncoder, recon_loss

CHECKPOINT_FORMAT = "instrument-checkpoint/1"


@dataclass
class TrainConfig:
    mode: str | None = None            # "pitched" | "unpitched" | None (chosen from the sounds)
    steps: int = 3000                  # total optimiser steps (a resume continues the count)
    max_seconds: float | None = None   # this run's time budget (a resume starts it afresh)
    batch: int = 256
    lr: float = 3e-3                   # peak; cosine decay to lr * lr_final_fraction at `steps`
    lr_final_fraction: float = 0.05
    schedule_steps: int | None = None  # length of the LR schedule (None: steps)
    warmup_steps: int = 100
    seed: int = 0
    device: str = "cpu"                # "cpu" | "cuda" | "auto"
    enc_hidden: tuple[int, ...] = (128, 128)
    dec_hidden: tuple[int, ...] = (128, 128)
    activation: str = "silu"
    code_noise: float = 0.02           # Gaussian noise on the code while training (smoothness)
    floor_weight: float = 0.1          # loss weight of floored (inaudible) bins
    held_out_fraction: float = 0.2     # share of clips held out
    eval_every: int = 200
    sample_rate: int = 48000
    gate_db: float = -60.0
    licence: str = DEFAULT_LICENCE
    progress: bool = True

    def validate(self) -> None:
        checks = [
            ("mode", self.mode, self.mode in (None, "pitched", "unpitched"),
             "pitched, unpitched or None"),
            ("steps", self.steps, isinstance(self.steps, int) and self.steps >= 1, ">= 1"),
            ("batch", self.batch, isinstance(self.batch, int) and self.batch >= 1, ">= 1"),
            ("lr", self.lr, math.isfinite(self.lr) and 0 < self.lr <= 1, "0 < lr <= 1"),
            ("device", self.device, self.device in ("cpu", "cuda", "auto"), "cpu, cuda, auto"),
            ("held_out_fraction", self.held_out_fraction, 0 < self.held_out_fraction < 1,
             "0 < f < 1"),
            ("max_seconds", self.max_seconds,
             self.max_seconds is None or self.max_seconds > 0, "None or > 0"),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(describe(f"TrainConfig.{name}", value, allowed,
                                           "fix the training option"))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(describe("device", name, "cpu, or cuda on a machine with CUDA",
                                   "use --device cpu or auto"))
    return torch.device(name)


def _floor_log() -> float:
    from instrument.corpus.features import AMP_FLOOR
    return float(math.log(AMP_FLOOR))


def model_spec(config: TrainConfig, data: TrainingSet) -> dict:
    return {"mode": data.mode, "n_features": data.n_features,
            "enc_hidden": list(config.enc_hidden), "dec_hidden": list(config.dec_hidden),
            "activation": config.activation, "sample_rate": data.sample_rate,
            "hop_samples": data.hop_samples}


def build_model(spec: dict) -> AutoEncoder:
    return AutoEncoder(spec["mode"], int(spec["n_features"]), list(spec["enc_hidden"]),
                       list(spec["dec_hidden"]), spec["activation"])


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``); raises InstrumentError if unusable."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InstrumentError(f"{path}: checkpoint file is missing; train first") from None
    except Exception as e:  # torch raises many kinds for damaged files
        raise InstrumentError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); "
                              "train again or pick another file") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        got = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise InstrumentError(describe(f"{path}: checkpoint format", got, CHECKPOINT_FORMAT,
                                       "retrain with this version"))
    return ck


def model_from_checkpoint(ck: dict) -> AutoEncoder:
    """Rebuild the trained model from a loaded checkpoint dict."""
    model = build_model(ck["spec"])
    model.load_state_dict(ck["model"])
    model.eval()
    return model


def _config_from(ck: dict, override: TrainConfig) -> TrainConfig:
    """The checkpoint's config, with this run's steps/max_seconds/device/progress."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    c = {k: v for k, v in ck["config"].items() if k in fields}
    for k in ("enc_hidden", "dec_hidden"):
        c[k] = tuple(c[k])
    c.update(steps=override.steps, max_seconds=override.max_seconds, device=override.device,
             progress=override.progress)
    return TrainConfig(**c)


def _resume_checkpoint(path: str | Path, config: TrainConfig) -> dict:
    """The checkpoint to resume, refused if missing or already at ``config.steps``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"train --resume: no checkpoint at {str(path)!r}; pass -o with an "
                          "existing checkpoint, or leave out --resume to start fresh")
    ck = load_checkpoint(path)
    if int(ck["step"]) >= config.steps:
        raise ConfigError(describe(f"train --steps (resuming {path}, already at step "
                                   f"{ck['step']})", config.steps, f"> {ck['step']}",
                                   "pass a larger --steps: it is the total count"))
    return ck


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    total = cfg.schedule_steps or cfg.steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    lo = cfg.lr * cfg.lr_final_fraction
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * t))


def _fmt_s(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 60}:{s % 60:02d}"


@torch.no_grad()
def _encode_all(model: AutoEncoder, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.encode(x[i:i + 8192], f[i:i + 8192])
                      for i in range(0, len(x), 8192)])


@torch.no_grad()
def evaluate(model: AutoEncoder, data: TrainingSet, train_idx: np.ndarray,
             test_idx: np.ndarray) -> dict:
    """Held-out LSD (dB) of the autoencoder and of 2-D PCA, and pitch leakage of the code."""
    floor = _floor_log()
    model = model.cpu().eval()
    valid = data.valid_mask()
    x = torch.as_tensor(data.features)
    f = torch.as_tensor(data.log2_f0)
    code = _encode_all(model, x, f)
    pred = torch.cat([model.decode(code[i:i + 8192], f[i:i + 8192])
                      for i in range(0, len(x), 8192)]).numpy()
    mean, std = model.mean.numpy(), model.std.numpy()
    out = {"lsd_db": lsd_db(pred[test_idx], data.features[test_idx], valid[test_idx], floor),
           "train_lsd_db": lsd_db(pred[train_idx], data.features[train_idx], valid[train_idx],
                                  floor),
           "pca_lsd_db": pca_lsd_db(data.features[train_idx], data.features[test_idx], mean,
                                    std, valid[test_idx], floor)}
    if data.mode == "pitched" and len(test_idx):
        notes = data.note_per_frame()
        rng = np.random.default_rng(0)
        tr = rng.choice(train_idx, size=min(3000, len(train_idx)), replace=False)
        te = rng.choice(test_idx, size=min(1000, len(test_idx)), replace=False)
        c = code.numpy()
        out["nn_note_accuracy"] = nn_note_accuracy(c[tr], notes[tr], c[te], notes[te])
        out["note_chance"] = 1.0 / max(1, len(np.unique(notes)))
    return {k: round(float(v), 4) for k, v in out.items()}


def train(folder: str | Path, checkpoint_path: str | Path, config: TrainConfig | None = None,
          resume: bool = False) -> Path:
    """Train on a sound folder; returns the checkpoint path."""
    config = config or TrainConfig()
    config.validate()
    ck = None
    if resume:
        ck = _resume_checkpoint(checkpoint_path, config)
        config = _config_from(ck, config)
    device = _device(config.device)
    if config.progress:
        sys.stderr.write(f"train: device {device.type}"
                         + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                            else f" ({torch.get_num_threads()} threads)")
                         + (f", resuming {checkpoint_path} at step {ck['step']}" if ck else "")
                         + "\n")
        sys.stderr.flush()
    data = load_folder(folder, config.sample_rate, config.mode, config.gate_db, config.licence)
    return train_arrays(data, checkpoint_path, config, resume=resume, _checkpoint=ck)


def train_arrays(data: TrainingSet, checkpoint_path: str | Path,
                 config: TrainConfig | None = None, resume: bool = False,
                 _checkpoint: dict | None = None) -> Path:
    """Train on prepared frames; ``resume`` continues from ``checkpoint_path`` if it exists."""
    config = config or TrainConfig()
    checkpoint_path = Path(checkpoint_path)
    ck = _checkpoint
    if ck is None and resume:
        ck = _resume_checkpoint(checkpoint_path, config)
        config = _config_from(ck, config)
    config.validate()
    if config.mode is not None and config.mode != data.mode:
        raise ConfigError(describe("mode", data.mode, config.mode,
                                   "analyse the frames in the configured mode"))
    device = _device(config.device)
    torch.manual_seed(config.seed)
    train_idx, test_idx = data.split(config.held_out_fraction, config.seed)
    if len(train_idx) == 0:
        raise InstrumentError("no training frames after the split; give more clips")
    spec = model_spec(config, data)
    model = build_model(spec)
    mean, std = data.stats(train_idx)
    model.set_normalisation(mean, std)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    step, elapsed_s = 0, 0.0
    history: list[list[float]] = []
    if ck is not None:
        if ck["spec"] != spec:
            raise InstrumentError(f"{checkpoint_path}: checkpoint model {ck['spec']} does not "
                                  f"match this data/config {spec}; train without resume")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["rng"])
        step, elapsed_s = int(ck["step"]), float(ck["elapsed_s"])
        history = [list(h) for h in ck.get("history", [])]
    model.to(device)
    for state in opt.state.values():
        for k, v in state.items():
            if torch.is_tensor(v) and k != "step":
                state[k] = v.to(device)

    floor = _floor_log()
    valid_all = torch.as_tensor(data.valid_mask(), dtype=torch.float32)
    x_all = torch.as_tensor(data.features)
    f_all = torch.as_tensor(data.log2_f0)
    x_tr, f_tr, v_tr = (t[train_idx].to(device) for t in (x_all, f_all, valid_all))
    ev = test_idx[:: max(1, len(test_idx) // 4096)] if len(test_idx) else train_idx[:4096]
    x_ev, f_ev, v_ev = (t[ev].to(device) for t in (x_all, f_all, valid_all))

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss, _ = recon_loss(model, x_ev, f_ev, v_ev, floor, 0.0, config.floor_weight)
        model.train()
        return float(loss)

    interrupted = False
    t0 = time.perf_counter()
    start_step, loss_ema, ho = step, float("nan"), float("nan")
    model.train()
    try:
        while step < config.steps:
            if config.max_seconds is not None and \
                    time.perf_counter() - t0 >= config.max_seconds:  # this run's budget
                break
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, config)
            idx = torch.randint(0, len(train_idx), (config.batch,), generator=gen)
            noise_gen = gen if device.type == "cpu" else None
            loss, _ = recon_loss(model, x_tr[idx.to(device)], f_tr[idx.to(device)],
                                 v_tr[idx.to(device)], floor, config.code_noise,
                                 config.floor_weight, noise_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise InstrumentError(f"training diverged at step {step} (loss {lv}); "
                                      "lower TrainConfig.lr")
            loss_ema = lv if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * lv
            if step % config.eval_every == 0 or step == config.steps:
                ho = held_out_loss()
                history.append([step, round(loss_ema, 5), round(ho, 5)])
            if config.progress and (step % 20 == 0 or step == config.steps):
                run_s = time.perf_counter() - t0
                eta = run_s / (step - start_step) * (config.steps - step)
                if config.max_seconds is not None:
                    eta = min(eta, config.max_seconds - run_s)
                ho_text = f"{ho:.4f}" if math.isfinite(ho) else "\u2013"  # none yet
                sys.stderr.write(f"\rstep {step}/{config.steps}  loss {loss_ema:.4f}  "
                                 f"held-out {ho_text}  ETA {_fmt_s(eta)}   ")
                sys.stderr.flush()
    except KeyboardInterrupt:
        interrupted = True
    elapsed_s += time.perf_counter() - t0
    if config.progress:
        sys.stderr.write("\n")
    model.cpu().eval()
    figures = evaluate(model, data, train_idx, test_idx)
    figures.update(steps=step, train_seconds=round(elapsed_s, 2),
                   loss=round(loss_ema, 5), held_out_loss=round(held_out_loss_cpu(
                       model, data, ev, floor, config), 5))
    with torch.no_grad():
        codes = _encode_all(model, x_all[train_idx], f_all[train_idx]).numpy()
    labels = [data.clip_labels[i] for i in data.clip[train_idx]]
    cal = calibrate(codes, labels, seed=config.seed)
    cfg = dataclasses.asdict(config)
    cfg["enc_hidden"], cfg["dec_hidden"] = list(config.enc_hidden), list(config.dec_hidden)
    ck_out = {
        "format": CHECKPOINT_FORMAT, "spec": spec, "config": cfg, "step": step,
        "elapsed_s": elapsed_s, "complete": step >= config.steps and not interrupted,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": _cpu_state(opt.state_dict()), "rng": gen.get_state(),
        "normalisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "calibration": cal, "corpus": _plain(data.summary), "figures": figures,
        "history": history,
    }
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_path.with_suffix(checkpoint_path.suffix + ".tmp")
    torch.save(ck_out, tmp)
    tmp.replace(checkpoint_path)
    if config.progress:
        what = "interrupted; resumable checkpoint" if interrupted else "checkpoint"
        sys.stderr.write(f"{what} {checkpoint_path} at step {step}: held-out LSD "
                         f"{figures['lsd_db']:.2f} dB (2-D PCA {figures['pca_lsd_db']:.2f} dB)"
                         "\n")
    return checkpoint_path


def held_out_loss_cpu(model: AutoEncoder, data: TrainingSet, ev: np.ndarray, floor: float,
                      config: TrainConfig) -> float:
    with torch.no_grad():
        loss, _ = recon_loss(model, torch.as_tensor(data.features[ev]),
                             torch.as_tensor(data.log2_f0[ev]),
                             torch.as_tensor(data.valid_mask()[ev], dtype=torch.float32),
                             floor, 0.0, config.floor_weight)
    return float(loss)


def _cpu_state(sd: dict) -> dict:
    def conv(v):
        if torch.is_tensor(v):
            return v.detach().cpu().clone()
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        return v
    return conv(sd)


def _plain(obj):
    """Only plain Python types (weights_only-safe)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)
