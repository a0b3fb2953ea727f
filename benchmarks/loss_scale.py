"""How hard each target loss pushes a model, label-free: the gradient norm of lambda_target * loss at lambda
1.

The losses keep the reference's normalisations, which differ by orders of magnitude (entropy and max-squares
average over B*C*H*W elements, the image-wise weighted ones divide by B*C only, the hard loss averages over
confident pixels). A comparison that gives every loss the same lambda_target compares step sizes, not losses.
This script measures, on target-train images (their labels are never read) and a given model, the norm of the
gradient over all trained parameters of each variant's target term at lambda_target = 1 (with multi-level
guidance for `*_multi`, weighted by lambda_seg as in training), averaged over batches, and its ratio to a
reference variant. Grids of lambda_target centred on reference_lambda * ratio give every loss the same initial
step size (search_spaces/quickstart.yaml uses them).

Usage: python benchmarks/loss_scale.py --checkpoint RUN/checkpoints/last.pt [--batches 8]
       [--reference iw_maxsquare] [--reference-lambda 1.0] [--report results/benchmarks/loss_scale.md]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

import torch
from synth_runs import Report, machine

from msl.checkpoint import load_checkpoint
from msl.config import load_config
from msl.data import batch_stream
from msl.losses import build_target_loss, multi_level_guidance_loss
from msl.models import build_model
from msl.trainer import build_run_data
from study.space import VARIANTS

ADAPTING = ("entropy", "iw_entropy", "maxsquare", "iw_maxsquare", "iw_maxsquare_multi", "hard")


def gradient_norm(model: torch.nn.Module, images: torch.Tensor, cfg, multi_level: bool) -> float:
    """|| d(target loss + lambda_seg * guidance) / d(parameters) || at lambda_target 1, for a batch (B, 3, H,
    W)."""
    model.zero_grad(set_to_none=True)
    main, aux = model(images)  # (B, C, H, W) each
    loss = build_target_loss(cfg.loss.target, ratio=cfg.loss.iw_ratio, threshold=cfg.loss.threshold)(main)
    if multi_level:
        loss = loss + cfg.loss.lambda_seg * multi_level_guidance_loss(main, aux, cfg.loss.threshold)
    loss.backward()
    squares = [p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="an msl checkpoint (its config is used)"
    )
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--reference", default="iw_maxsquare", choices=ADAPTING)
    parser.add_argument("--reference-lambda", type=float, default=1.0)
    parser.add_argument(
        "--report", type=Path, default=None, help="also write the output to this markdown file"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    checkpoint = load_checkpoint(args.checkpoint)
    base = load_config(checkpoint["config"])
    report = Report()
    say = report.say

    norms: dict[str, float] = {}
    for variant in ADAPTING:
        cfg = load_config(checkpoint["config"], {**VARIANTS[variant], "stage": "uda"})
        model = build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.aspp_branches)
        model.load_state_dict(checkpoint["model"])
        model.train()
        data = build_run_data(cfg, cfg.data.normalization)
        batches = batch_stream(data.target_train, cfg.data.batch_size, seed=0, start_batch=0, num_workers=0)
        norms[variant] = statistics.mean(
            gradient_norm(model, next(batches)[0], cfg, cfg.model.multi_level) for _ in range(args.batches)
        )
    say("# Target-loss gradient scale")
    say()
    say(f"- machine: {machine()}")
    say(
        f"- date: {datetime.date.today().isoformat()}; command: "
        f"`{' '.join([Path(sys.executable).name, *sys.argv])}`"
    )
    say(
        f"- model: {base.model.arch} from `{args.checkpoint}`; {args.batches} target-train batches of "
        f"{base.data.batch_size} (no labels read); iw_ratio {base.loss.iw_ratio}, threshold "
        f"{base.loss.threshold}, "
        f"lambda_seg {base.loss.lambda_seg}"
    )
    say()
    say(
        f"| variant | gradient norm at lambda 1 | ratio to {args.reference} | lambda for the same step as "
        f"{args.reference} at {args.reference_lambda:g} |"
    )
    say("|---|---:|---:|---:|")
    for variant, norm in norms.items():
        ratio = norm / norms[args.reference]
        say(f"| {variant} | {norm:.4g} | {ratio:.3g} | {args.reference_lambda / ratio:.3g} |")
    report.write(args.report)


if __name__ == "__main__":
    main()
