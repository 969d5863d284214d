"""Audit a video model for BatchNorm leakage of future or cross-sample information (docs/DOMAIN.md 2).

Four behavioural tests on random input, each in train and/or eval mode:

- inventory: every normalisation layer, its kind, whether it uses batch statistics per mode;
- temporal causality: change the frames after t, measure the largest change of outputs at <= t;
  an online model must not change (up to float noise);
- batch coupling: change the other sequences of the batch, measure the change of sequence 0;
- train/eval discrepancy: the same input in both modes.

The model is never altered: train-mode tests run on a deep copy (BatchNorm would update its
running statistics) and the original's train/eval flags are restored. Dropout and stochastic depth
are switched off in both modes, so only normalisation and the temporal head can change outputs.
Random weights are enough: the leaks tested here are structural.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from surgflow.io_utils import SurgflowError, json_safe
from surgflow.models.backbones import NormLayer, norm_layers
from surgflow.models.heads import HEADS

REL_TOL = 1e-5  # relative to the output's magnitude: above this a change is not float noise
SCALE_FLOOR = 1e-3  # outputs near zero: compare against this magnitude instead

FIX_BN = ("freeze the BatchNorm statistics (model.norm: frozen_bn), replace BatchNorm with "
          "GroupNorm (model.norm: gn), or use a BN-free backbone (convnext_*, resnet50_gn, nfnet_l0)")
FIX_HEAD = ("use a causal temporal head (model.head: lstm, gru or tcn); bilstm and tcn_centered "
            "see the whole sequence and are for offline analysis only (task.online: false)")
FIX_TRAIN_EVAL = ("frozen BatchNorm statistics (model.norm: frozen_bn), GroupNorm (model.norm: gn) "
                  "or a BN-free backbone behave the same in both modes")


# --------------------------------------------------------------------------- data classes
@dataclass
class Finding:
    kind: str  # causality | batch_coupling | train_eval | inventory
    mode: str  # train | eval | both
    value: float  # largest absolute change of any output (logits / normalised regression)
    relative: float  # value / output magnitude
    leak: bool  # True: information the model must not see reaches its outputs
    verdict: str  # one sentence for a user
    fix: str = ""  # what to change ("" when nothing to fix)
    why: str = ""  # why it matters (consequence for training / evaluation)


@dataclass
class AuditReport:
    model: str  # short description (backbone / norm / head when known)
    input_shape: list[int]  # [B, T, 3, H, W] used for the tests
    t: int  # frames after t are perturbed in the causality test
    modes: list[str]
    causal_claim: Optional[bool]  # the model's own is_causal attribute (None if absent)
    norm_layers: list[NormLayer] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def leaks(self) -> bool:
        return any(f.leak for f in self.findings)

    def counts(self) -> dict[str, int]:
        """Number of normalisation layers per kind."""
        out: dict[str, int] = {}
        for n in self.norm_layers:
            out[n.kind] = out.get(n.kind, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "t": self.t,
            "modes": list(self.modes),
            "causal_claim": self.causal_claim,
            "leaks": self.leaks,
            "verdict": self.summary(),
            "norm_counts": self.counts(),
            "norm_layers": [n._asdict() for n in self.norm_layers],
            "findings": [json_safe(asdict(f)) for f in self.findings],
        }

    def summary(self) -> str:
        """One line: PASS/LEAK and the first leaking finding's verdict."""
        leaks = [f for f in self.findings if f.leak]
        if not leaks:
            modes = " and ".join(self.modes)
            return f"PASS {self.model}: no leak of future or cross-sample information in {modes} mode"
        return f"LEAK {self.model}: " + "; ".join(f.verdict for f in leaks)

    def format(self) -> str:
        B, T, C, H, W = self.input_shape
        lines = [f"surgflow audit: {self.model}",
                 f"input: {B} sequences x {T} frames of {W}x{H} (WxH) random pixels, {C} channels; "
                 f"causality test changes frames {self.t + 1}..{T - 1}, checks frames 0..{self.t}",
                 ""]
        counts = self.counts()
        if counts:
            lines.append("normalisation layers:")
            lines.append(f"  {'kind':<28} {'count':>5}  batch stats in train / eval")
            seen: dict[str, NormLayer] = {}
            for n in self.norm_layers:
                seen.setdefault(n.kind, n)
            for kind, n in seen.items():
                tr = sum(x.uses_batch_stats_in_train for x in self.norm_layers if x.kind == kind)
                ev = sum(x.uses_batch_stats_in_eval for x in self.norm_layers if x.kind == kind)
                lines.append(f"  {kind:<28} {counts[kind]:>5}  {tr:>3} / {ev}")
        else:
            lines.append("normalisation layers: none")
        lines.append("")
        lines.append(f"  {'test':<16} {'mode':<6} {'max change':>11}  result")
        for f in self.findings:
            if f.kind == "inventory":
                continue
            res = "LEAK" if f.leak else ("differs" if f.fix else "ok")
            lines.append(f"  {f.kind:<16} {f.mode:<6} {f.value:11.3g}  {res}")
        lines.append("")
        for f in self.findings:
            mark = "LEAK" if f.leak else ("NOTE" if f.fix else "ok  ")
            lines.append(f"{mark} {f.verdict}")
            if f.why:
                lines.append(f"     why: {f.why}")
            if f.fix:
                lines.append(f"     fix: {f.fix}")
        lines.append("")
        lines.append(("verdict: LEAK (" + str(sum(f.leak for f in self.findings)) + " finding(s))")
                     if self.leaks else "verdict: PASS")
        return "\n".join(lines)


# --------------------------------------------------------------------------- inventory
# One inventory of normalisation layers, the backbones module's (it knows how frozen_bn and frozen
# stages are implemented); no fallback, so a bug there shows instead of changing verdicts silently.
inventory = norm_layers


# --------------------------------------------------------------------------- running the model
def _set_mode(model: nn.Module, mode: str) -> nn.Module:
    """train/eval for normalisation and the head; dropout and drop-path always off."""
    model.train(mode == "train")
    if mode == "train":
        for m in model.modules():
            name = type(m).__name__
            if isinstance(m, nn.modules.dropout._DropoutNd) or name in ("DropPath", "DropBlock2d"):
                m.eval()
    return model


def _flatten_outputs(out: Any, B: int, T: int) -> dict[str, torch.Tensor]:
    """Model outputs -> {name: float tensor [B, T, ...]} (drops the returned state)."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], (dict, torch.Tensor)):
        out = out[0]  # (outputs, state)
    if isinstance(out, torch.Tensor):
        out = {"output": out}
    if not isinstance(out, dict):
        raise SurgflowError(f"the model returned {type(out).__name__}; the audit expects "
                            "(outputs dict, state) or a tensor [B, T, ...]")
    flat = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            flat[k] = v.detach().float()
    if not flat:
        raise SurgflowError("the model returned no floating-point output tensors to compare")
    return flat


def _forward(model: nn.Module, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    B, T = x.shape[:2]
    torch.manual_seed(seed)  # any remaining randomness is identical between compared calls
    new_video = torch.ones(B, dtype=torch.bool, device=x.device)
    try:
        out = model(x, None, new_video)
    except TypeError:
        out = model(x)  # a plain per-sequence model without state
    return _flatten_outputs(out, B, T)


def max_change(a: dict, b: dict, index) -> tuple[float, float]:
    """Largest absolute change over all outputs restricted to `index`, and relative to magnitude."""
    worst_abs, worst_rel = 0.0, 0.0
    for k in a:
        if k not in b or a[k].shape != b[k].shape:
            continue
        ra, rb = a[k][index], b[k][index]
        if ra.numel() == 0:
            continue
        diff = (ra - rb).abs()
        if not torch.isfinite(diff).all():
            return float("inf"), float("inf")
        change = float(diff.max())
        scale = max(float(a[k].abs().max()), SCALE_FLOOR)
        worst_abs = max(worst_abs, change)
        worst_rel = max(worst_rel, change / scale)
    return worst_abs, worst_rel


def _head_name(model: nn.Module) -> Optional[str]:
    """Registry name of a SurgflowModel's temporal head (lstm, bilstm, ...), if known."""
    head = getattr(model, "head", None)
    if head is None:
        return getattr(model, "head_name", None)
    for name in HEADS.names():
        if type(head) is HEADS.get(name):
            return name
    return type(head).__name__


def causal_claim(model: nn.Module) -> Optional[bool]:
    """What the model says of itself: its `is_causal`, else its temporal head's `causal` property;
    None when it says nothing (the behavioural tests decide alone)."""
    claim = getattr(model, "is_causal", None)
    if not isinstance(claim, bool):
        claim = getattr(getattr(model, "head", None), "causal", None)
    return bool(claim) if isinstance(claim, bool) else None


def _describe(model: nn.Module) -> str:
    bb = getattr(model, "backbone", None)
    head = _head_name(model)
    if bb is not None and isinstance(getattr(bb, "name", None), str):
        return f"{bb.name} (norm {getattr(bb, 'norm', '?')}) + {head} head"
    return type(model).__name__ + (f" + {head} head" if head else "")


def default_input_shape(model: nn.Module, batch: int = 2, frames: int = 8, short_side: int = 64
                        ) -> tuple[int, int, int, int, int]:
    """[B, T, 3, H, W]: the model's preprocessing size scaled down to a `short_side` of 64 px
    (multiples of 32, the usual backbone stride) so the audit runs in seconds on a CPU."""
    size = None
    pre = getattr(model, "preprocess", None)
    if isinstance(pre, dict) and pre.get("size"):
        size = [int(s) for s in pre["size"]]
    if not size:
        return (batch, frames, 3, short_side, short_side)
    h, w = size
    f = min(1.0, short_side / min(h, w))
    h, w = (max(32, int(round(h * f / 32)) * 32), max(32, int(round(w * f / 32)) * 32))
    return (batch, frames, 3, h, w)


# --------------------------------------------------------------------------- audit
def audit_model(model: nn.Module, input_shape: Optional[Sequence[int]] = None,
                modes: Sequence[str] = ("train", "eval"), seed: int = 0,
                device: str | torch.device | None = None) -> AuditReport:
    """Audit `model` (SurgflowModel contract: model(frames [B,T,3,H,W] in [0,1], state, new_video)
    -> (outputs dict of [B,T,...], state); a model(frames) -> tensor [B,T,...] also works)."""
    modes = list(dict.fromkeys(modes))
    for m in modes:
        if m not in ("train", "eval"):
            raise SurgflowError(f"audit mode '{m}' is not one of train, eval")
    shape = tuple(int(s) for s in (input_shape or default_input_shape(model)))
    if len(shape) != 5 or shape[2] != 3:
        raise SurgflowError(f"input_shape {list(shape)}: expected [B, T, 3, H, W]")
    B, T, _, H, W = shape
    if device is None:  # where the model lives
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else "cpu"
    if B < 2 or T < 2:
        raise SurgflowError(f"input_shape {list(shape)}: the audit needs B >= 2 sequences and "
                            "T >= 2 frames (batch coupling and causality)")
    t = T // 2 - 1  # frames 0..t must not depend on frames t+1..T-1

    # Inputs: x, x with a strongly changed future, x with strongly changed other sequences.
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    brighter = (0.5 + 0.5 * torch.rand(shape, generator=g))  # other content and statistics
    x_future = x.clone()
    x_future[:, t + 1:] = brighter[:, t + 1:]
    x_others = x.clone()
    x_others[1:] = brighter[1:]
    x, x_future, x_others = (v.to(device) for v in (x, x_future, x_others))

    flags = [(m, m.training) for m in model.modules()]  # restored exactly afterwards
    layers = inventory(model)
    claim = causal_claim(model)
    report = AuditReport(model=_describe(model), input_shape=list(shape), t=t, modes=modes,
                         causal_claim=claim, norm_layers=layers)
    head = _head_name(model)
    outs: dict[str, dict] = {}
    try:
        for mode in modes:
            net = copy.deepcopy(model) if mode == "train" else model
            _set_mode(net, mode)
            with torch.no_grad():
                try:
                    ref = _forward(net, x, seed)
                except SurgflowError:
                    raise
                except Exception as e:
                    raise SurgflowError(
                        f"the model's forward failed on a random input [B, T, 3, H, W] = "
                        f"{list(shape)} in {mode} mode ({type(e).__name__}: {e}); pass an input "
                        "size the backbone accepts (--size HxW, e.g. --size 224x224) or a model "
                        "that takes frames [B, T, 3, H, W] in [0, 1]") from e
                for k, v in ref.items():
                    if v.dim() < 2 or tuple(v.shape[:2]) != (B, T):
                        raise SurgflowError(
                            f"output '{k}' has shape {list(v.shape)}; the audit needs per-frame "
                            f"outputs [B, T, ...] = [{B}, {T}, ...]")
                fut = _forward(net, x_future, seed)
                oth = _forward(net, x_others, seed)
            outs[mode] = ref
            report.findings.append(_causality_finding(mode, *max_change(ref, fut, (slice(None), slice(0, t + 1))),
                                                      layers, head, claim, t))
            report.findings.append(_coupling_finding(mode, *max_change(ref, oth, (slice(0, 1),)), layers))
            if net is not model:
                del net
    finally:
        for m, was in flags:
            m.training = was
    if "train" in outs and "eval" in outs:
        report.findings.append(_train_eval_finding(*max_change(outs["train"], outs["eval"], (slice(None),)),
                                                   layers))
    return report


def _bn_count(layers: list[NormLayer], mode: str) -> int:
    return sum((n.uses_batch_stats_in_train if mode == "train" else n.uses_batch_stats_in_eval) for n in layers)


def _layer_words(n: int, layers: list[NormLayer], mode: str) -> str:
    kinds = sorted({n.kind for n in layers if (n.uses_batch_stats_in_train if mode == "train" else n.uses_batch_stats_in_eval)})
    kind = "BatchNorm" if all("batchnorm" in k.lower() or "bn" in k.lower() for k in kinds) else "/".join(kinds)
    return f"{n} {kind} layer{'s' if n != 1 else ''}"


def _causality_finding(mode: str, value: float, rel: float, layers, head, claim, t) -> Finding:
    leak = rel > REL_TOL
    nbn = _bn_count(layers, mode)
    if not leak:
        return Finding("causality", mode, value, rel, False,
                       f"in {mode} mode the outputs at frames <= t are unchanged when frames after "
                       f"t change (max change {value:.2g}): causal")
    through = []
    if nbn:
        through.append(_layer_words(nbn, layers, mode))
    if claim is False:
        through.append(f"its non-causal temporal head{f' ({head})' if head else ''}")
    if not through:
        through.append("an unidentified path (no normalisation layer uses batch statistics here, "
                       "so the temporal head or a custom layer reads ahead)")
    fix = "; ".join(([FIX_BN] if nbn else []) + ([FIX_HEAD] if (not nbn or claim is False) else []))
    verdict = (f"in {mode} mode this model sees the future through {' and '.join(through)}: frame "
               f"t's output changes by {value:.3g} when frames after t change")
    why = ("trained on batches of consecutive frames, an online model (anticipation above all) can "
           "learn to read the future from the batch statistics: training loss and train-mode "
           "('cheat') evaluation look good, honest eval-mode results are worse"
           if mode == "train" and nbn else
           "online predictions would use frames that have not been seen yet" if mode == "eval" else "")
    return Finding("causality", mode, value, rel, True, verdict, fix, why)


def _coupling_finding(mode: str, value: float, rel: float, layers) -> Finding:
    leak = rel > REL_TOL
    nbn = _bn_count(layers, mode)
    if not leak:
        return Finding("batch_coupling", mode, value, rel, False,
                       f"in {mode} mode a sequence's outputs do not depend on the other sequences "
                       f"of the batch (max change {value:.2g})")
    via = _layer_words(nbn, layers, mode) if nbn else "an unidentified cross-sample path"
    return Finding("batch_coupling", mode, value, rel, True,
                   f"in {mode} mode a sequence's outputs depend on the other sequences of the batch "
                   f"through {via}: they change by {value:.3g} when the other sequences change",
                   FIX_BN if nbn else "look for layers that mix samples of a batch",
                   "statistics pooled over the batch: a prediction depends on what else is in the batch")


def _train_eval_finding(value: float, rel: float, layers) -> Finding:
    # Not a leak by itself (a difference of behaviour), but worth knowing (docs/DOMAIN.md 2.1).
    differs = rel > REL_TOL
    nbn = _bn_count(layers, "train") - _bn_count(layers, "eval")
    if not differs:
        return Finding("train_eval", "both", value, rel, False,
                       f"train and eval mode give the same outputs (max difference {value:.2g})")
    via = f" ({_layer_words(nbn, layers, 'train')} switch from batch to running statistics)" if nbn > 0 else ""
    return Finding("train_eval", "both", value, rel, False,
                   f"train and eval mode give different outputs for the same input: max difference "
                   f"{value:.3g}{via}", FIX_TRAIN_EVAL if nbn > 0 else "",
                   "not a leak by itself: the model normalises with batch statistics in training but "
                   "with running statistics at test time, so what is trained is not what is "
                   "evaluated; with random "
                   "weights and fresh running statistics the size of this number means little"
                   if nbn > 0 else "")
