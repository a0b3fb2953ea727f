"""Time one UDA iteration of the trainer (ms/iteration, peak memory) and compare bf16 with fp32 loss values.

The iteration is msl.trainer's, multi-level with IW max-squares: poly lr, a source batch (CE on both heads,
through the trainer's own `_supervised_loss`), backward, a target batch (λ_T·L_T on the main head plus
λ_seg·λ_T·guidance on the aux head), backward, one SGD step. Data loading is not included (see
benchmarks/loader_throughput.py); inputs are random tensors of the right shapes, made once.

* CPU: the small model at the quickstart size (msl/configs/synth.yaml: its arch, batch size and image sizes),
  fp32 without and with channels_last, for each `--threads` value (studies run two 1-thread trials side by
  side).
* CUDA, when available: the paper configuration (deeplabv2_resnet101, source 1280x720, target 1024x512, batch
  1) in strict fp32, tf32, bf16 autocast and bf16+channels_last, each also under torch.compile when named by
  `--compile` (default: bf16+channels_last only; each compiled mode costs minutes of compilation; `all`), and
  bf16+channels_last with `optim.reference_param_groups` (the reference's repeated backbone steps); then the
  loss terms of one forward pass in bf16 and in strict fp32 for the same weights and input.
* `--processes N [N ...]`: packing instead. For each N, N processes of this script run the trainer's iteration
  in one mode (`--mode`, default bf16+channels_last) on the same device at once, as Ray's fractional GPUs
  place N trials on one GPU; after each has warmed up they start together and count the iterations their
  device finishes in a `--seconds` window. Reported: ms/iteration per process, trial-iterations/s summed over
  the processes, the speed-up over one process and each process's peak memory.
* `--smoke`: the CUDA case list (or the packing run) on the current device at a tiny size, to check that code
  path without a GPU (a torch.compile case takes minutes of inductor compilation on a 2-core CPU).

Times are medians over `--iterations` timed iterations after `--warmup` (CUDA: per-iteration CUDA events, no
host synchronisation inside the loop, as in the trainer). Peak memory is torch's peak allocation on CUDA and
the process's peak resident set size on the CPU.

Usage: python benchmarks/uda_iteration.py [--device auto|cpu|cuda] [--threads 1 2] [--weights CKPT]
                                          [--compile MODE ...|all] [--processes 1 2 4 [--mode MODE]]
                                          [--smoke] [--report results/benchmarks/uda_iteration_cpu.md]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from synth_runs import machine as cpu_machine
from torch import Tensor

import msl
from msl.config import TrainConfig, load_config
from msl.losses import build_target_loss, multi_level_guidance_loss
from msl.models import build_model, load_weights
from msl.trainer import _supervised_loss, build_optimizer, poly_lr, train_step, training_forward

SYNTH_CONFIG = Path(msl.__file__).parent / "configs" / "synth.yaml"
NUM_CLASSES = 19
# The objective measured: multi-level, IW max-squares, the reference's λ values (the config's defaults).
PAPER_SHAPE = ("deeplabv2_resnet101", (720, 1280), (512, 1024))  # arch, source (H, W), target (H, W); batch 1
UDA_OVERRIDES = {"stage": "uda", "model.multi_level": True, "loss.target": "iw_maxsquare"}


@dataclass(frozen=True)
class Case:
    """One measured configuration. Sizes are (height, width)."""

    name: str
    arch: str
    batch_size: int
    source_hw: tuple[int, int]
    target_hw: tuple[int, int]
    tf32: bool = False
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    reference_param_groups: bool = False


def quickstart_cases() -> list[Case]:
    """The small model at the quickstart size, as msl/configs/synth.yaml trains it, without and with
    channels_last (the trainer's default on every device)."""
    synth = load_config(SYNTH_CONFIG)
    (source_w, source_h), (target_w, target_h) = synth.data.source_size, synth.data.target_size
    shape = (synth.model.arch, synth.data.batch_size, (source_h, source_w), (target_h, target_w))
    return [Case("fp32", *shape), Case("fp32+channels_last", *shape, channels_last=True)]


def paper_modes(smoke: bool) -> list[Case]:
    """The paper configuration in each precision/layout mode; `smoke`: the small model at a tiny size."""
    arch, source_hw, target_hw = ("deeplab_resnet18_small", (64, 128), (32, 64)) if smoke else PAPER_SHAPE
    shape = {"arch": arch, "batch_size": 1, "source_hw": source_hw, "target_hw": target_hw}
    return [
        Case("fp32 (strict)", **shape),
        Case("tf32", **shape, tf32=True),
        Case("bf16", **shape, tf32=True, bf16=True),
        Case("bf16+channels_last", **shape, tf32=True, bf16=True, channels_last=True),
    ]


def paper_cases(smoke: bool, compiled: list[str]) -> list[Case]:
    """Every mode, then the compiled twins of the modes in `compiled` (or of all), then bf16+channels_last
    with the reference's repeated backbone steps."""
    modes = paper_modes(smoke)
    twins = [
        dataclasses.replace(case, name=f"{case.name}+compile", compile=True)
        for case in modes
        if "all" in compiled or case.name in compiled
    ]
    reference = dataclasses.replace(
        modes[-1], name=f"{modes[-1].name}+reference_param_groups", reference_param_groups=True
    )
    return [*modes, *twins, reference]


def set_tf32(enabled: bool) -> None:
    """TF32 for cuDNN convolutions and CUDA matmuls (torch's default is TF32 convolutions, IEEE matmuls)."""
    precision = "tf32" if enabled else "ieee"
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cuda.matmul.fp32_precision = precision


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on any device (msl.evaluate.autocast is CUDA-only; this lets --smoke run bf16 on a
    CPU)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@dataclass
class Setup:
    """Everything one case's iterations need, built once."""

    forward: Callable  # the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    target_loss: Callable[[Tensor], Tensor]
    source_images: Tensor  # (B, 3, Hs, Ws)
    source_labels: Tensor  # (B, Hs, Ws)
    target_images: Tensor  # (B, 3, Ht, Wt)


def build_setup(case: Case, cfg: TrainConfig, device: torch.device, weights: str | None = None) -> Setup:
    """Model (seeded init, or `weights`), optimiser and target loss as the trainer builds them; random
    inputs."""
    torch.manual_seed(0)
    model = build_model(case.arch, NUM_CLASSES, cfg.model.aspp_branches, cfg.model.freeze_bn)
    if weights:
        load_weights(model, weights)
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    optim = dataclasses.replace(cfg.optim, reference_param_groups=case.reference_param_groups)
    optimizer = build_optimizer(optim, model)
    target_loss = build_target_loss(cfg.loss.target, ratio=cfg.loss.iw_ratio, threshold=cfg.loss.threshold)
    batch = case.batch_size
    source_images = torch.randn(batch, 3, *case.source_hw, device=device).contiguous(
        memory_format=memory_format
    )
    target_images = torch.randn(batch, 3, *case.target_hw, device=device).contiguous(
        memory_format=memory_format
    )
    source_labels = torch.randint(0, NUM_CLASSES, (batch, *case.source_hw), device=device)
    forward = training_forward(model, case.compile)
    return Setup(forward, optimizer, target_loss, source_images, source_labels, target_images)


def case_config(cfg: TrainConfig, case: Case) -> TrainConfig:
    """The run config of a case: bf16 autocast as the case says (the trainer applies it on CUDA only)."""
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, bf16=case.bf16))


def uda_iteration(setup: Setup, cfg: TrainConfig, case: Case, device: torch.device, iteration: int) -> None:
    """One optimiser step of msl.trainer.train's UDA loop: the trainer's own `train_step`."""
    lr = poly_lr(cfg.optim.lr, iteration, cfg.poly_horizon, cfg.optim.poly_power)
    train_step(
        setup.forward,
        setup.optimizer,
        case_config(cfg, case),
        lr,
        (setup.source_images, setup.source_labels),
        setup.target_images,
        setup.target_loss,
        device,
    )


def warmed_up(case: Case, cfg: TrainConfig, device: torch.device, warmup: int):
    """The set-up of `case` after `warmup` iterations, with the peak-memory counter reset."""
    set_tf32(case.tf32)
    setup = build_setup(case, cfg, device)
    for iteration in range(warmup):
        uda_iteration(setup, cfg, case, device, iteration)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return setup


def time_case(
    case: Case, cfg: TrainConfig, device: torch.device, warmup: int, iterations: int
) -> tuple[float, float]:
    """(median ms per iteration, peak memory in MiB) of `case`."""
    setup = warmed_up(case, cfg, device, warmup)
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(iterations + 1)]
        events[0].record()
        for index in range(iterations):
            uda_iteration(setup, cfg, case, device, warmup + index)
            events[index + 1].record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in itertools.pairwise(events)]
    else:
        times = []
        for index in range(iterations):
            started = time.perf_counter()
            uda_iteration(setup, cfg, case, device, warmup + index)
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), peak_memory_mib(device)


def compare_precisions(
    cases: list[Case], cfg: TrainConfig, device: torch.device, weights: str | None
) -> list[str]:
    """Table rows: each loss term of one forward pass in strict fp32 and in bf16, same weights and input."""
    values = {}
    for case in (cases[0], next(c for c in cases if c.bf16 and not c.compile and not c.channels_last)):
        set_tf32(case.tf32)
        setup = build_setup(case, cfg, device, weights)
        with torch.no_grad(), autocast(device, case.bf16):
            terms = _supervised_loss(setup.forward(setup.source_images), setup.source_labels, cfg)
            main, aux = setup.forward(setup.target_images)  # (B, C, Ht, Wt) each
        terms |= {
            "target_loss": setup.target_loss(main),
            "target_guidance": multi_level_guidance_loss(main, aux, cfg.loss.threshold),
        }
        values[case.name] = {name: value.item() for name, value in terms.items()}
    (fp32_name, fp32), (bf16_name, bf16) = values.items()
    rows = [f"| term | {fp32_name} | {bf16_name} | relative difference |", "|---|---|---|---|"]
    for term, reference in fp32.items():
        difference = abs(bf16[term] - reference) / abs(reference) if reference else abs(bf16[term])
        rows.append(f"| {term} | {reference:.6g} | {bf16[term]:.6g} | {difference:.2e} |")
    return rows


def peak_memory_mib(device: torch.device) -> float:
    """torch's peak allocation on CUDA; the process's peak resident set size on the CPU (Linux reports
    KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def packing_worker(case: Case, cfg: TrainConfig, device: torch.device, warmup: int, seconds: float) -> None:
    """One packed trial: warm up, say `ready`, wait for `go` on stdin, then run iterations for `seconds` and
    print, as JSON, how many the device finished inside the window and their median time."""
    setup = warmed_up(case, cfg, device, warmup)
    print("ready", flush=True)
    sys.stdin.readline()
    cuda = device.type == "cuda"
    started, ends, iteration = time.perf_counter(), [], warmup
    start_event = torch.cuda.Event(enable_timing=True) if cuda else None
    if cuda:
        start_event.record()
    while (
        time.perf_counter() - started < seconds
    ):  # the host runs at most a few iterations ahead of the device
        uda_iteration(setup, cfg, case, device, iteration)
        iteration += 1
        if cuda:
            ends.append(torch.cuda.Event(enable_timing=True))
            ends[-1].record()
        else:
            ends.append(1000 * (time.perf_counter() - started))
    if cuda:
        torch.cuda.synchronize()
        ends = [start_event.elapsed_time(end) for end in ends]  # ms since the window opened, on the device
    done = [end for end in ends if end <= 1000 * seconds]
    times = [later - earlier for earlier, later in itertools.pairwise([0.0, *done])]
    reserved = torch.cuda.max_memory_reserved() / 2**20 if cuda else None  # what the allocator holds
    print(
        json.dumps(
            {
                "iterations": len(done),
                "median_ms": statistics.median(times) if times else None,
                "peak_mib": peak_memory_mib(device),
                "reserved_mib": reserved,
            }
        ),
        flush=True,
    )


def run_packed(processes: int, args: argparse.Namespace) -> list[dict]:
    """`processes` workers of this script started together on one device; each one's JSON result."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--mode",
        args.mode,
        "--device",
        args.device,
        "--warmup",
        str(args.warmup),
        "--seconds",
        str(args.seconds),
        "--threads",
        str(args.threads[0]),
    ]
    workers = [
        subprocess.Popen(
            command + (["--smoke"] if args.smoke else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a packing worker failed while warming up (exit code {worker.wait()})")
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = [json.loads(worker.stdout.readline()) for worker in workers]
    for worker in workers:
        worker.wait()
    return results


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_machine()}, load average {os.getloadavg()[0]:.1f} at start (shared machine?)"


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    cfg = load_config(SYNTH_CONFIG if device.type == "cpu" and not args.smoke else None, UDA_OVERRIDES)
    unknown = set(args.compile) - {case.name for case in paper_modes(args.smoke)} - {"all"}
    if unknown:
        parser.error(
            f"--compile: unknown modes {sorted(unknown)}; choose among {[c.name for c in paper_modes(True)]}"
        )
    if args.worker or args.processes:
        modes = {case.name: case for case in paper_cases(args.smoke, ["all"])}
        if args.mode not in modes:
            parser.error(f"--mode {args.mode!r}: choose one of {', '.join(modes)}")
        if args.worker:
            torch.set_num_threads(args.threads[0])
            packing_worker(modes[args.mode], cfg, device, args.warmup, args.seconds)
            return
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say("# One UDA iteration (multi-level, IW max-squares)")
    say()
    say(f"- machine: {machine(device)}; torch {torch.__version__}")
    say(f"- date: {datetime.date.today().isoformat()}")
    say(f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    if args.processes:
        packing_table(args, modes[args.mode], say)
    else:
        timing_tables(args, cfg, device, say)
    write_report(args.report, lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="CPU thread counts to time")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per case")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed iterations first (compile needs a few)"
    )
    parser.add_argument(
        "--weights", default=None, help="weights for the bf16/fp32 loss comparison (default: init)"
    )
    parser.add_argument("--smoke", action="store_true", help="run the CUDA case list here at a tiny size")
    parser.add_argument(
        "--compile",
        nargs="*",
        default=["bf16+channels_last"],
        metavar="MODE",
        help="modes also timed under torch.compile, 'all', or none (default: bf16+channels_last)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="packing: N processes at once on one device, for each N given (e.g. 1 2 4)",
    )
    parser.add_argument(
        "--mode", default="bf16+channels_last", help="the mode of the packing run's processes"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="the packing run's timed window")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one packed process
    parser.add_argument(
        "--report", type=Path, default=None, help="also write the output to this markdown file"
    )
    return parser


def packing_table(args: argparse.Namespace, case: Case, say) -> None:
    """Throughput of N processes of one mode packed on one device, for each N of `--processes`."""
    say(
        f"- packing: N processes of mode {args.mode}, started together after {args.warmup} warm-up "
        f"iterations each; iterations finished within a {args.seconds:g} s window; data loading not included"
    )
    say()
    say(
        "| arch | source HxW | target HxW | processes | ms/iteration (median of medians) "
        "| trial-iterations/s | speed-up | peak MiB per process | reserved MiB per process |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    single = None
    for processes in args.processes:
        results = run_packed(processes, args)
        rate = sum(r["iterations"] for r in results) / args.seconds
        single = single or (rate if processes == 1 else None)
        speedup = f"{rate / single:.2f}x" if single else "-"
        medians = [r["median_ms"] for r in results if r["median_ms"] is not None]
        ms = f"{statistics.median(medians):.1f}" if medians else "-"
        reserved = max((r["reserved_mib"] or 0) for r in results)
        say(
            f"| {case.arch} | {'x'.join(map(str, case.source_hw))} | {'x'.join(map(str, case.target_hw))} "
            f"| {processes} | {ms} | {rate:.2f} | {speedup} | {max(r['peak_mib'] for r in results):.0f} "
            f"| {f'{reserved:.0f}' if reserved else '-'} |"
        )
    say()
    say(
        "Peak MiB: torch's peak allocation per process on CUDA (plus the CUDA context, not counted) or its "
        "peak resident set size on the CPU; reserved: what CUDA's caching allocator held."
    )


def timing_tables(args: argparse.Namespace, cfg, device: torch.device, say) -> None:
    """Milliseconds per iteration of each case (the quickstart's on the CPU, the paper's elsewhere) and, for
    the paper's, the loss terms of one forward pass in bf16 against strict fp32."""
    say(f"- median of {args.iterations} iterations after {args.warmup} warm-up; data loading not included")
    say()
    say("| arch | batch | source HxW | target HxW | mode | threads | ms/iteration | peak MiB |")
    say("|---|---|---|---|---|---|---|---|")

    def row(case: Case, threads: int | str, ms: float, peak: float) -> None:
        sizes = " | ".join("x".join(map(str, hw)) for hw in (case.source_hw, case.target_hw))
        say(
            f"| {case.arch} | {case.batch_size} | {sizes} | {case.name} | {threads} | {ms:.1f} | {peak:.0f} |"
        )

    if device.type == "cpu" and not args.smoke:
        for case, threads in itertools.product(quickstart_cases(), args.threads):
            torch.set_num_threads(threads)
            row(case, threads, *time_case(case, cfg, device, args.warmup, args.iterations))
        say()
        say("CPU peak memory is the process's peak resident set size (Python, torch and all cases so far).")
        return
    cases = paper_cases(args.smoke, args.compile)
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    for case in cases:
        row(case, threads, *time_case(case, cfg, device, args.warmup, args.iterations))
    say()
    init = (
        f"weights {args.weights}"
        if args.weights
        else "seeded random init: guidance is 0 if no pixel is confident"
    )
    say(f"## Loss terms of one forward pass, bf16 versus strict fp32 ({init})")
    say()
    for text in compare_precisions(cases, cfg, device, args.weights):
        say(text)


def write_report(path: Path | None, lines: list[str]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
