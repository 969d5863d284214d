"""`surgflow export CHECKPOINT --onnx FILE`: the stateful one-frame step as ONNX, verified."""
from __future__ import annotations

import argparse

from surgflow.cli_args import add_checkpoint
from surgflow.io_utils import SurgflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                        help="run directory or checkpoint file (.pt) of a causal model")
    parser.add_argument("--onnx", required=True, metavar="FILE.onnx",
                        help="output model; FILE.onnx.json beside it gets preprocessing and labels")
    add_checkpoint(parser)
    parser.add_argument("--verify-frames", type=int, default=100,
                        help="frames streamed through PyTorch and onnxruntime to check parity (>= 1)")
    parser.add_argument("--video", default=None,
                        help="take the verification frames from this video; None = synthetic smooth frames")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")


def run(args) -> int:
    from surgflow.online.export import export_onnx  # heavy: torch
    from surgflow.outputs import check_output_file  # light: --help imports commands/
    from surgflow.runs import load_model  # light: --help imports commands/

    if args.verify_frames < 1:
        raise SurgflowError("--verify-frames must be >= 1 (100 or more recommended)")
    if args.opset < 17:
        raise SurgflowError("--opset must be >= 17 (LayerNormalization)")

    check_output_file(args.onnx, "--onnx")  # before building, exporting and the parity check
    check_output_file(f"{args.onnx}.json", "--onnx")
    model, _cfg, meta = load_model(args.run, which=args.checkpoint, device="cpu")
    info = export_onnx(model, meta, args.onnx, verify_frames=args.verify_frames, video=args.video,
                       opset=args.opset)
    print(f"wrote {args.onnx} and {args.onnx}.json (inputs: frame {info['input']['shape']}"
          f" + {len(info['state'])} state tensors; outputs: {', '.join(info['outputs'])})")
    return 0
