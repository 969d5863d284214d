"""Temporal heads: causality, chunked == whole with carried state, reset per lane, state shapes.

Contract tests run over every registered head (HEADS), keyed on its declared `causal`: a new head
is tested without being listed here."""
from __future__ import annotations

import pytest
import torch

from surgflow.config import ModelConfig
from surgflow.models.heads import HEADS, build_head

D = 8
CFG = ModelConfig(hidden=16, layers=2, tcn_stages=2, tcn_layers=5, tcn_maps=12, dropout=0.0)


def _head(name, seed=0):
    torch.manual_seed(seed)
    return build_head(name, D, CFG).eval()


ALL = HEADS.names()
CAUSAL = [n for n, cls in HEADS.items() if cls.causal]  # stateful, online


def _x(B=2, T=40, seed=0):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def test_registry_and_causal_flags():
    assert set(HEADS.names()) >= {"lstm", "gru", "tcn", "bilstm", "tcn_centered"}
    flags = {n: HEADS.get(n).causal for n in ("lstm", "gru", "tcn", "bilstm", "tcn_centered")}
    assert flags == {"lstm": True, "gru": True, "tcn": True, "bilstm": False, "tcn_centered": False}
    for name, cls in HEADS.items():  # every head declares it (TemporalHead has no default)
        assert isinstance(getattr(cls, "causal", None), bool), name


@pytest.mark.parametrize("name", ALL)
def test_output_shape_and_state_is_tuple(name):
    h = _head(name)
    y, state = h(_x(3, 10), None, None)
    assert y.shape == (3, 10, h.out_dim)
    assert isinstance(state, tuple) and all(isinstance(s, torch.Tensor) for s in state)
    init = h.init_state(3, torch.device("cpu"), torch.float32)
    assert [s.shape for s in init] == [s.shape for s in state]
    if name == "lstm":
        assert [tuple(s.shape) for s in state] == [(2, 3, 16), (2, 3, 16)]  # (h, c) [L, B, H]
    if name == "gru":
        assert [tuple(s.shape) for s in state] == [(2, 3, 16)]
    if name == "tcn":  # one receptive-field buffer per layer: (k - 1) * 2^i inputs
        assert [s.shape[-1] for s in state] == [2, 4, 8, 16, 32] * 2
    if not HEADS.get(name).causal:
        assert state == ()


@pytest.mark.parametrize("name", ALL)
def test_causality_by_perturbing_the_future(name):
    causal = HEADS.get(name).causal  # what the head declares is what it does
    h = _head(name)
    x = _x(1, 40)
    x2 = x.clone()
    x2[:, 25:] += torch.randn_like(x2[:, 25:]) * 3
    with torch.no_grad():
        y, _ = h(x, None, None)
        y2, _ = h(x2, None, None)
    past_same = torch.allclose(y[:, :25], y2[:, :25], atol=1e-6)
    assert past_same == causal
    assert not torch.allclose(y[:, 25:], y2[:, 25:])


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("chunks", [[40], [7, 7, 7, 19], [1, 2, 30, 7], [13, 27]])
def test_chunked_equals_whole(name, chunks):
    h = _head(name)
    x = _x(2, 40)
    with torch.no_grad():
        whole, _ = h(x, None, torch.ones(2, dtype=torch.bool))
        state, outs, t = h.init_state(2), [], 0
        for i, n in enumerate(chunks):
            new = torch.full((2,), i == 0)
            y, state = h(x[:, t:t + n], state, new)
            state = h.detach(state)
            outs.append(y)
            t += n
    assert (torch.cat(outs, 1) - whole).abs().max() < 1e-5


@pytest.mark.parametrize("name", CAUSAL)
def test_reset_on_new_video_per_lane(name):
    h = _head(name)
    a, b = _x(2, 20, seed=1), _x(2, 15, seed=2)
    with torch.no_grad():
        _, state = h(a, None, None)
        # lane 0 starts a new video, lane 1 continues its video
        y, _ = h(b, state, torch.tensor([True, False]))
        fresh, _ = h(b[:1], None, None)
        cont, _ = h(torch.cat([a[1:], b[1:]], 1), None, None)
    torch.testing.assert_close(y[:1], fresh, atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1:], cont[:, 20:], atol=1e-5, rtol=0)
    reset = h.reset(state, torch.tensor([True, False]))
    for r, s, dim in zip(reset, state, h.state_batch_dims):
        assert torch.all(r.select(dim, 0) == 0) and torch.equal(r.select(dim, 1), s.select(dim, 1))


def test_detach_cuts_the_graph():
    h = build_head("lstm", D, CFG)
    x = _x(1, 5).requires_grad_(True)
    _, state = h(x, None, None)
    assert all(s.requires_grad for s in state)
    assert not any(s.requires_grad for s in h.detach(state))


def test_tcn_chunked_gradients_match_with_context():
    """Training in chunks with carried state: outputs of chunk 2 still see chunk 1's inputs."""
    h = _head("tcn")
    x = _x(1, 30)
    _, state = h(x[:, :10], None, None)
    y_chunk, _ = h(x[:, 10:], h.detach(state), torch.tensor([False]))
    y_cut, _ = h(x[:, 10:], None, None)  # context cut at the border
    y_whole, _ = h(x, None, None)
    torch.testing.assert_close(y_chunk, y_whole[:, 10:], atol=1e-5, rtol=0)
    assert not torch.allclose(y_cut, y_whole[:, 10:], atol=1e-3)
