"""The autoencoder: an encoder MLP to a bounded 2-D code and a pitch-conditioned decoder MLP.

Layers follow ``modelfile``'s convention (``nn.Linear`` weights are (out, in), one activation
name per layer from ``modelfile.ACTIVATIONS``), so :meth:`TorchMLP.to_numpy` exports them as a
numpy ``MLP`` exactly.

Pitched mode: encoder input = standardised 96 log features + ``log2(f0/440)``; decoder input
``[zx, zy, log2(f0/440)]`` -> 96 log features. Unpitched: 513 -> 2 -> 513. The decoder is
trained in standardised units; its output de-standardisation is folded into the last layer on
export, so the numpy decoder outputs raw log features.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from instrument.model.modelfile import ACTIVATIONS, MLP

LOG_TO_DB = 20.0 / math.log(10.0)


def _apply(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "linear":
        return x
    if name == "tanh":
        return torch.tanh(x)
    if name == "silu":
        return torch.nn.functional.silu(x)
    if name == "relu":
        return torch.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(x, 0.01)
    raise ValueError(f"activation {name!r} is not one of {ACTIVATIONS}")


class TorchMLP(nn.Module):
    """``sizes = [n_in, h1, ..., n_out]``; hidden layers use ``hidden_act``, last ``out_act``."""

    def __init__(self, sizes: list[int], hidden_act: str = "silu", out_act: str = "linear"):
        super().__init__()
        for a in (hidden_act, out_act):
            if a not in ACTIVATIONS:
                raise ValueError(f"activation {a!r} is not one of {ACTIVATIONS}")
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                     strict=True))
        self.activations = [hidden_act] * (len(sizes) - 2) + [out_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, act in zip(self.layers, self.activations, strict=True):
            x = _apply(act, layer(x))
        return x

    def to_numpy(self, out_scale: np.ndarray | None = None,
                 out_shift: np.ndarray | None = None) -> MLP:
        """Export; an optional ``y * out_scale + out_shift`` is folded into a linear last layer."""
        ws = [layer.weight.detach().cpu().double().numpy() for layer in self.layers]
        bs = [layer.bias.detach().cpu().double().numpy() for layer in self.layers]
        if out_scale is not None:
            if self.activations[-1] != "linear":
                raise ValueError("an output scale can only be folded into a linear last layer")
            s = np.asarray(out_scale, np.float64)
            ws[-1] = ws[-1] * s[:, None]
            bs[-1] = bs[-1] * s + np.asarray(out_shift, np.float64)
        return MLP([w.astype(np.float32) for w in ws], [b.astype(np.float32) for b in bs],
                   list(self.activations))


class AutoEncoder(nn.Module):
    """Encoder (features [+ log2 f0] -> tanh 2-D code) and decoder (code [+ log2 f0] -> features).

    ``mean``/``std`` are the per-feature standardisation (buffers, saved in the state dict).
    """

    def __init__(self, mode: str, n_features: int, enc_hidden: list[int],
                 dec_hidden: list[int], activation: str = "silu"):
        super().__init__()
        if mode not in ("pitched", "unpitched"):
            raise ValueError(f"mode {mode!r} is not 'pitched' or 'unpitched'")
        self.mode = mode
        self.pitched = mode == "pitched"
        extra = 1 if self.pitched else 0
        self.encoder = TorchMLP([n_features + extra, *enc_hidden, 2], activation, "tanh")
        self.decoder = TorchMLP([2 + extra, *dec_hidden, n_features], activation, "linear")
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def encode(self, features: torch.Tensor, log2_f0: torch.Tensor | None) -> torch.Tensor:
        """Raw log features (N, F) [+ (N,) log2(f0/440)] -> raw code (N, 2) in (-1, 1)."""
        x = (features - self.mean) / self.std
        if self.pitched:
            x = torch.cat([x, log2_f0.reshape(-1, 1)], dim=1)
        return self.encoder(x)

    def decode_std(self, code: torch.Tensor, log2_f0: torch.Tensor | None) -> torch.Tensor:
        """Raw code (N, 2) [+ log2 f0] -> standardised log features (N, F)."""
        if self.pitched:
            code = torch.cat([code, log2_f0.reshape(-1, 1)], dim=1)
        return self.decoder(code)

    def decode(self, code: torch.Tensor, log2_f0: torch.Tensor | None) -> torch.Tensor:
        """Raw code -> raw log features (what the numpy decoder outputs)."""
        return self.decode_std(code, log2_f0) * self.std + self.mean

    def numpy_encoder(self) -> MLP:
        """The encoder as a numpy MLP taking ``(features - mean) / std`` [+ log2 f0]."""
        return self.encoder.to_numpy()

    def numpy_decoder(self) -> MLP:
        """The decoder as a numpy MLP outputting raw log features."""
        return self.decoder.to_numpy(self.std.cpu().numpy(), self.mean.cpu().numpy())


def loss_weights(target_log: torch.Tensor, valid: torch.Tensor, floor_log: float,
                 floor_weight: float = 0.1, audible_db: float = 20.0) -> torch.Tensor:
    """Per-bin loss weight: 0 where not ``valid`` (above Nyquist), ``floor_weight`` for bins
    at the floor, rising linearly to 1 at ``audible_db`` above it."""
    above_db = (target_log - floor_log) * LOG_TO_DB
    w = floor_weight + (1.0 - floor_weight) * torch.clamp(above_db / audible_db, 0.0, 1.0)
    return w * valid


def recon_loss(model: AutoEncoder, features: torch.Tensor, log2_f0: torch.Tensor | None,
               valid: torch.Tensor, floor_log: float, code_noise: float = 0.0,
               floor_weight: float = 0.1, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted MSE in standardised log units; returns ``(loss, code)``.

    ``code_noise`` adds Gaussian noise to the code before decoding (keeps the decoder smooth
    over the square)."""
    code = model.encode(features, log2_f0)
    z = code
    if code_noise > 0:
        z = code + code_noise * torch.randn(code.shape, generator=generator,
                                            device=code.device)
    pred = model.decode_std(z, log2_f0)
    target = (features - model.mean) / model.std
    w = loss_weights(features, valid, floor_log, floor_weight)
    loss = (w * (pred - target) ** 2).sum() / w.sum().clamp_min(1.0)
    return loss, code
