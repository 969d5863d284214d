"""Device, precision, seeding, gradient clipping and DDP (torch.distributed directly).

One `Runtime` per process. Under `torchrun` it reads RANK / WORLD_SIZE / LOCAL_RANK, joins the
process group (nccl on CUDA, gloo on CPU) and wraps the model in DistributedDataParallel; without
those variables it is a single process and every collective is a no-op.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from surgflow.io_utils import SurgflowError
from surgflow.registry import OPTIMIZERS


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """auto -> cuda:<local_rank> when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SurgflowError("train.device: 'cuda' requested but no CUDA device is available; "
                                "use train.device=cpu or auto")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if name == "cpu":
        return torch.device("cpu")
    raise SurgflowError(f"train.device: '{name}' is not one of auto, cpu, cuda")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # warn_only: ops without a deterministic kernel warn instead of failing the run
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


# ---- RNG states as tensors / primitives (checkpoints load with weights_only=True) ----

def get_rng_state(generators: Optional[dict[str, torch.Generator]] = None) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(py_version), "state": list(py_state), "gauss": py_gauss},
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict, generators: Optional[dict[str, torch.Generator]] = None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(state["generators"][k].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


# ---- gradient clipping ----

def clip_gradients(params: Iterable[nn.Parameter], grad_clip: float = 0.0, agc: float = 0.0,
                   agc_params: Optional[Iterable[nn.Parameter]] = None) -> float:
    """Adaptive (unit-wise, NFNets) clipping with factor `agc` of `agc_params` (default: all; the
    trainer passes all but the output layers, as timm does for NFNets), then global-norm clipping.

    Returns the global gradient norm after AGC (before norm clipping); inf/nan flags a bad step.
    One fused norm over all gradients (torch's foreach kernel): no per-parameter host syncs.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if agc > 0:
        from timm.utils import adaptive_clip_grad  # heavy: timm

        adaptive_clip_grad([p for p in (params if agc_params is None else agc_params)
                            if p.grad is not None], clip_factor=agc)
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:  # the norm is still computed: a non-finite one stops the run
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return float(norm)


def param_groups(module: nn.Module, train_cfg) -> list:
    """Trainable parameters of `module`; with train.wd_exclude_norm_bias two groups, norm weights
    and biases (1-d tensors, timm's rule) without weight decay."""
    if not train_cfg.wd_exclude_norm_bias:
        return [p for p in module.parameters() if p.requires_grad]
    from timm.optim import param_groups_weight_decay  # heavy: timm; the trainer loads it, runtime alone not

    return param_groups_weight_decay(module, train_cfg.weight_decay)


# OPTIMIZERS: train.optimizer -> factory(params, lr=, weight_decay=, momentum=, **kw), timm's
# optimiser factory under timm's name (momentum is passed only to optimisers that have one).
# timm's "sgd" is Nesterov; ours is classical momentum, timm's "momentum".
def _timm_optimizer(timm_name: str):
    def build(params, **kw) -> torch.optim.Optimizer:
        from timm.optim import create_optimizer_v2  # heavy: timm

        return create_optimizer_v2(params, opt=timm_name, **kw)

    return build


OPTIMIZERS.add("adamw", _timm_optimizer("adamw"))
OPTIMIZERS.add("sgd", _timm_optimizer("momentum"))


def make_optimizer(params: list, train_cfg) -> torch.optim.Optimizer:
    """The OPTIMIZERS entry train.optimizer over `params` (tensors or param groups, see
    param_groups); the fused kernels (one launch for all tensors, CPU and CUDA) make the optimiser
    step ~7x cheaper on CPU than the per-tensor loop."""
    t = train_cfg
    kw = dict(lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum)
    try:
        return OPTIMIZERS.build(t.optimizer, params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # device or dtype without a fused kernel
        return OPTIMIZERS.build(t.optimizer, params, **kw)


# ---- the runtime ----

@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    precision: str = "fp32"
    compile: bool = False
    sync_bn: bool = False
    owns_process_group: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """bf16 autocast on CUDA and CPU; a no-op context for fp32."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move to the device; SyncBN when asked and meaningful."""
        if self.sync_bn:
            if not self.distributed:
                self.notes.append("train.sync_bn ignored: single process")
            elif self.device.type != "cuda":
                raise SurgflowError("train.sync_bn: SyncBatchNorm needs CUDA devices (nccl); "
                                    "set train.sync_bn=false for CPU/gloo runs")
            else:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # channels_last is applied by the backbone itself (build_model gets train.channels_last)
        return model.to(self.device)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP wrapper (when distributed) and optional torch.compile around the training forward."""
        fwd = model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            fwd = DDP(model, device_ids=ids, broadcast_buffers=True)
        if self.compile:
            fwd = torch.compile(fwd)
        return fwd

    def frames_to_input(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, H, W] -> float [B, T, 3, H, W] in [0, 1] on the device (the uint8
        copy is 4x smaller than float, so convert after the transfer)."""
        x = frames.to(self.device, non_blocking=True)
        return x.float().div_(255.0)

    # ---- collectives (no-ops in a single process) ----
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_parameters(self, module: nn.Module) -> None:
        if self.distributed:
            with torch.no_grad():
                for t in list(module.parameters()) + list(module.buffers()):
                    dist.broadcast(t.data, src=0)

    def all_reduce_gradients(self, params: Iterable[nn.Parameter], weight: float = 1.0) -> None:
        """Mean over ranks of `weight` x the gradients (strategies that do not go through the DDP
        forward; `weight` from frame_weight)."""
        if not self.distributed:
            return
        for p in params:
            # every rank runs the same code path, so the set of parameters with a gradient is the
            # same on all ranks; unused ones keep grad None (the optimiser then skips them)
            if p.requires_grad and p.grad is not None:
                if weight != 1.0:
                    p.grad.mul_(weight)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    def frame_weight(self, n_local: int) -> float:
        """n_local x world_size / (valid frames over all ranks): a rank's per-frame-mean loss times
        this weight, averaged over ranks (as DDP averages gradients), is the mean over all valid
        frames, so a rank with idle lanes does not count as much as a full one. 1 in one process."""
        if not self.distributed:
            return 1.0
        t = torch.tensor([float(n_local)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        total = float(t.item())
        return n_local * self.world_size / total if total > 0 else 0.0

    def loss_weights(self, denominators: dict) -> dict:
        """{task: local x world_size / sum over ranks} for each task's loss denominator on this
        rank (strategies.loss_denominator: the class weights of the labelled valid frames for the
        phase cross-entropy, the valid frames otherwise): a rank's loss times its weight, averaged
        over ranks as DDP averages gradients, is the loss over all ranks' frames. One collective;
        all 1 in one process."""
        if not self.distributed:
            return {k: 1.0 for k in denominators}
        keys = sorted(denominators)
        totals = self.all_reduce_sum([denominators[k] for k in keys])
        return {k: (denominators[k] * self.world_size / t if t > 0 else 0.0)
                for k, t in zip(keys, totals)}

    def all_reduce_sum(self, values: list) -> list:
        """Element-wise sums over the ranks of a list of floats (float64, one collective)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def any_true(self, flag: bool) -> bool:
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather_object(self, obj: Any) -> list:
        """Every rank's `obj` (list indexed by rank) on every rank."""
        if not self.distributed:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_process_group = False


def setup_runtime(cfg) -> Runtime:
    """Join the torchrun process group if launched by torchrun, pick the device, seed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    t = cfg.train
    device = select_device(t.device, local_rank)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        owns = True
    if t.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SurgflowError("train.precision: bf16 is not supported by this GPU; use fp32")
    seed_everything(t.seed, t.deterministic)
    notes = []
    sync_bn = t.sync_bn
    if sync_bn and cfg.model.norm != "native":  # frozen_bn keeps running stats; gn has no BN left
        notes.append(f"train.sync_bn ignored: model.norm={cfg.model.norm} has no BatchNorm using "
                     f"batch statistics")
        sync_bn = False
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank,
                   precision=t.precision, compile=t.compile,
                   sync_bn=sync_bn, owns_process_group=owns, notes=notes)
