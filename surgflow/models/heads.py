"""Temporal heads: per-frame features [B, T, D] -> temporal features [B, T, D_out].

Every head has the same interface, so strategies, evaluation and ONNX export treat them alike:
    y, state = head(x [B, T, D], state (tuple of tensors) or None, new_video bool[B] or None,
                    valid bool[B, T] or None)
    head.init_state(B, device, dtype) -> tuple;  head.reset(state, new_video);  head.detach(state)
    head.causal: output at t depends only on inputs <= t (online tasks require it; the audit and
                 the whole-video loop read it)
`valid` marks a lane's padding (False, always trailing: samplers pad the last chunk of a video).
Causal heads need no mask (padding comes after every valid frame); offline heads would see it, so
they mask it: a valid frame's output is the same as for the unpadded sequence.
    head.out_dim: D_out
State is always a tuple of tensors (possibly empty) so it can cross an ONNX graph boundary.

MS-TCN design choice: heads are task-agnostic, so refinement stages (stage 2+) take the previous
stage's features (ReLU of its `tcn_maps` maps) rather than the softmax of per-class predictions of
the original MS-TCN; the task layers read the last stage. There is no per-stage supervision.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from surgflow.registry import HEADS  # entries: head classes; HEADS.build(name, in_dim, model_cfg)

State = tuple  # tuple[torch.Tensor, ...]


class TemporalHead(nn.Module):
    causal: bool  # declared by every registered head (no default: a new head must say)
    out_dim: int
    state_batch_dims: tuple = ()  # batch dimension of each state tensor

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        raise NotImplementedError

    def reset(self, state: State, new_video: Optional[torch.Tensor]) -> State:
        """Zero the lanes where new_video is True (their video starts at t=0 of this chunk)."""
        if new_video is None or len(state) == 0:
            return state
        keep = (~new_video.bool()).to(state[0].dtype)  # [B]
        out = []
        for s, dim in zip(state, self.state_batch_dims):
            shape = [1] * s.dim()
            shape[dim] = -1
            out.append(s * keep.view(shape))
        return tuple(out)

    @staticmethod
    def detach(state: State) -> State:
        return tuple(s.detach() for s in state)

    @staticmethod
    def lengths(valid: Optional[torch.Tensor], T: int) -> Optional[torch.Tensor]:
        """Valid frames per lane int64 [B] (None: no padding); refuses padding that is not trailing."""
        if valid is None or bool(valid.all()):
            return None
        n = valid.sum(1)  # [B]
        if not bool((valid == (torch.arange(T, device=valid.device) < n[:, None])).all()):
            raise ValueError("valid [B, T] must be a prefix per lane (padding at the end only)")
        return n

    def _prepare(self, x, state, new_video) -> State:
        if state is None or len(state) == 0:
            return self.init_state(x.shape[0], x.device, x.dtype)
        return self.reset(tuple(state), new_video)


# --------------------------------------------------------------------------------------------
# Recurrent heads.


class _RNNHead(TemporalHead):
    rnn_cls = nn.LSTM
    n_state = 2  # (h, c)

    def __init__(self, in_dim: int, hidden: int = 512, layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False):
        super().__init__()
        self.rnn = self.rnn_cls(in_dim, hidden, layers, batch_first=True,
                                dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional)
        self.hidden, self.layers = hidden, layers
        self.out_dim = hidden * (2 if bidirectional else 1)
        self.state_batch_dims = (1,) * self.n_state  # [L, B, H]

    @classmethod
    def from_config(cls, in_dim: int, model_cfg) -> "_RNNHead":
        """The registry factory; model_cfg: surgflow.config.ModelConfig."""
        return cls(in_dim, hidden=model_cfg.hidden, layers=model_cfg.layers, dropout=model_cfg.dropout)

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        z = torch.zeros(self.layers, batch_size, self.hidden, device=device, dtype=dtype)
        return tuple(z.clone() for _ in range(self.n_state))

    def forward(self, x, state=None, new_video=None, valid=None):
        state = self._prepare(x, state, new_video)  # each [L, B, H]
        hx = state if self.n_state == 2 else state[0]
        y, hx = self.rnn(x, hx)  # y [B, T, H]
        return y, (tuple(hx) if self.n_state == 2 else (hx,))


@HEADS.register("lstm")
class LSTMHead(_RNNHead):
    """Stateful LSTM (the paper's head: 1 layer x 512 units); state (h, c), each [L, B, H]."""
    causal = True


@HEADS.register("gru")
class GRUHead(_RNNHead):
    """Stateful GRU; state (h,) with h [L, B, H]."""
    causal = True
    rnn_cls = nn.GRU
    n_state = 1


@HEADS.register("bilstm")
class BiLSTMHead(_RNNHead):
    """Bidirectional LSTM over the whole sequence (offline only): no carried state."""
    causal = False

    def __init__(self, in_dim, hidden=512, layers=1, dropout=0.0):
        super().__init__(in_dim, hidden, layers, dropout, bidirectional=True)
        self.state_batch_dims = ()

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return ()

    def forward(self, x, state=None, new_video=None, valid=None):
        n = self.lengths(valid, x.shape[1])
        if n is None:
            y, _ = self.rnn(x)  # y [B, T, 2H]
            return y, ()
        # packed: the backward direction starts at each lane's last valid frame, not at its padding
        packed = nn.utils.rnn.pack_padded_sequence(x, n.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        y, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True,
                                                total_length=x.shape[1])  # [B, T, 2H], 0 on padding
        return y, ()


# --------------------------------------------------------------------------------------------
# MS-TCN.


class DilatedResidual(nn.Module):
    """MS-TCN layer: x + conv1x1(dropout(relu(conv_k3_dilated(x))))."""

    def __init__(self, maps: int, dilation: int, dropout: float, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(maps, maps, kernel, dilation=dilation)  # padding done by the caller
        self.out = nn.Conv1d(maps, maps, 1)
        self.drop = nn.Dropout(dropout)
        self.context = (kernel - 1) * dilation  # inputs needed before t (causal) / around t
        self.causal_alignment = True  # False: output t is centred on input t

    def forward(self, x_padded: torch.Tensor) -> torch.Tensor:
        # x_padded [B, C, T + context] -> [B, C, T]
        h = self.out(self.drop(F.relu(self.conv(x_padded))))
        if self.causal_alignment:
            return x_padded[..., self.context:] + h
        half = self.context // 2
        return x_padded[..., half:x_padded.shape[-1] - half] + h


class _TCNBase(TemporalHead):
    def __init__(self, in_dim: int, stages: int = 2, layers: int = 9, maps: int = 64,
                 dropout: float = 0.0, kernel: int = 3):
        super().__init__()
        self.stages = nn.ModuleList()
        for s in range(stages):
            stage = nn.Module()
            stage.inp = nn.Conv1d(in_dim if s == 0 else maps, maps, 1)
            stage.layers = nn.ModuleList(DilatedResidual(maps, 2 ** i, dropout, kernel) for i in range(layers))
            for layer in stage.layers:
                layer.causal_alignment = self.causal
            self.stages.append(stage)
        self.maps = maps
        self.out_dim = maps

    @classmethod
    def from_config(cls, in_dim: int, model_cfg) -> "_TCNBase":
        """The registry factory; model_cfg: surgflow.config.ModelConfig."""
        return cls(in_dim, stages=model_cfg.tcn_stages, layers=model_cfg.tcn_layers,
                   maps=model_cfg.tcn_maps, dropout=model_cfg.dropout)

    def _stage_input(self, s: int, x: torch.Tensor) -> torch.Tensor:
        # stage 0 reads the frame features; refinement stages read the previous stage (see module doc)
        return self.stages[s].inp(x if s == 0 else F.relu(x))


@HEADS.register("tcn")
class CausalTCNHead(_TCNBase):
    """Causal MS-TCN (2 stages x 9 layers, 64 maps, kernel 3, dilation 2^i, left padding).

    State: for every (stage, layer), the last (kernel-1)*dilation inputs of that layer per lane,
    [B, maps, (kernel-1)*dilation]. Zeros equal the zero padding at a video start, so processing a
    video chunk by chunk with the state carried gives the same outputs as processing it whole."""
    causal = True

    def __init__(self, in_dim, stages=2, layers=9, maps=64, dropout=0.0, kernel=3):
        super().__init__(in_dim, stages, layers, maps, dropout, kernel)
        self.state_batch_dims = tuple(0 for st in self.stages for _ in st.layers)

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return tuple(torch.zeros(batch_size, self.maps, layer.context, device=device, dtype=dtype)
                     for st in self.stages for layer in st.layers)

    def forward(self, x, state=None, new_video=None, valid=None):
        state = self._prepare(x, state, new_video)
        h = x.transpose(1, 2)  # [B, D, T]
        new_state, i = [], 0
        for s, st in enumerate(self.stages):
            h = self._stage_input(s, h)  # [B, maps, T]
            for layer in st.layers:
                padded = torch.cat([state[i].to(h.dtype), h], dim=-1)  # [B, maps, context + T]
                new_state.append(padded[..., padded.shape[-1] - layer.context:])
                h = layer(padded)  # [B, maps, T]
                i += 1
        return h.transpose(1, 2), tuple(new_state)  # [B, T, maps]


@HEADS.register("tcn_centered")
class CenteredTCNHead(_TCNBase):
    """MS-TCN with centred (symmetric) padding: sees the future, offline only; no carried state."""
    causal = False

    def init_state(self, batch_size, device=None, dtype=torch.float32):
        return ()

    def forward(self, x, state=None, new_video=None, valid=None):
        h = x.transpose(1, 2)  # [B, D, T]
        # padding -> zeros before every layer: the same zeros a sequence of only the valid frames
        # is padded with, so valid outputs do not depend on the padding frames
        keep = None if self.lengths(valid, x.shape[1]) is None else valid[:, None, :].to(h.dtype)
        for s, st in enumerate(self.stages):
            h = self._stage_input(s, h)
            for layer in st.layers:
                half = layer.context // 2
                h = layer(F.pad(h if keep is None else h * keep, (half, half)))
        return h.transpose(1, 2), ()


def build_head(name: str, in_dim: int, model_cfg) -> TemporalHead:
    """model_cfg: surgflow.config.ModelConfig (hidden, layers, tcn_*, dropout)."""
    return HEADS.build(name, in_dim, model_cfg)
