"""The training loop: source-only pretraining and UDA, with evaluation, model selection and exact resume.

One UDA iteration follows the reference (docs/losses.md §1.7): poly learning rate, then a source batch
(CE on the main head, plus lambda_seg * CE on the aux head when multi-level), then a target batch
(lambda_target * L_T on the main head, plus lambda_seg * lambda_target * guidance on the aux head when
multi-level), gradients of both accumulated into one optimiser step. With target loss `none` (and no
multi-level) the stage is source-only and draws no target batch, unless `loss.adabn` asks to forward them
without a loss (batch-norm statistics then see both domains, as in every adapting variant, so that baseline
differs from the adapting variants by the loss alone). Losses stay on the device and are read back every
`runtime.log_every` iterations, so the GPU never waits for the host inside an iteration.

What a run writes where: `msl.run_dir`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from msl.checkpoint import load_checkpoint, load_file, rng_state, save_atomic, set_rng_state
from msl.config import OptimConfig, TrainConfig, check_data_roots, config_to_dict, save_config
from msl.data import batch_stream, build_dataset, denormalize
from msl.evaluate import autocast, evaluate, label_free_validators
from msl.labels import IGNORE_INDEX
from msl.losses import build_target_loss, multi_level_guidance_loss
from msl.metrics import predicted_classes
from msl.models import build_model, load_weights, param_groups
from msl.models.build import reference_param_groups
from msl.objectives import is_better
from msl.optim import RepeatedSGD
from msl.probs_maps import save_probs
from msl.run_dir import RunDir
from msl.runinfo import expand_path, write_run_info
from msl.visualize import colourise

if TYPE_CHECKING:  # TensorBoard loads when a run starts, not on every import of this module
    from torch.utils.tensorboard import SummaryWriter

EvalCallback = Callable[[dict, Path], None]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the iteration and the term."""


@dataclass
class RunData:
    source_train: Dataset
    target_train: Dataset | None  # images only: UDA never reads target-train labels
    source_val: Dataset
    target_val: Dataset | None
    validator_images: Dataset | None  # fixed subset of target_train


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def build_optimizer(optim: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW (beta1 = `optim.momentum`) over the model's parameter groups;
    with `optim.reference_param_groups`, SGD stepping each backbone parameter of a DeepLab as often as the
    reference lists it (a config that asks for it with another optimizer or network is refused when it is
    loaded: `msl.config.check_key_pairs`)."""
    if optim.reference_param_groups:
        return RepeatedSGD(
            reference_param_groups(model, optim.head_lr_mult),
            lr=optim.lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
        )
    groups = param_groups(model, optim.head_lr_mult)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(
            groups, lr=optim.lr, betas=(optim.momentum, 0.999), weight_decay=optim.weight_decay
        )
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def training_forward(model: nn.Module, compile: bool) -> Callable:
    """The forward of training steps: `model`, or `torch.compile(model)` made once per run. Static shapes: one
    graph per input shape (source and target), each compiled at its first iteration and reused for the rest of
    the run. Evaluation calls the eager `model` (the same parameters), so it never triggers a compilation."""
    return torch.compile(model, dynamic=False) if compile else model


def poly_lr(base_lr: float, iteration: int, horizon: int, power: float) -> float:
    """The reference's poly schedule, lr * (1 - it / iter_max) ** power, clamped at 0 past the horizon."""
    return base_lr * max(0.0, 1.0 - iteration / horizon) ** power


def resolve_normalization(
    cfg: TrainConfig, weights_format: str | None, checkpoint_config: dict | None
) -> str:
    """`data.normalization`, with `auto` following the weights: BGR mean for the DeepLab init checkpoint, the
    ImageNet mean/std for torchvision weights (and for random init), whatever an msl checkpoint trained
    with."""
    if cfg.data.normalization != "auto":
        return cfg.data.normalization
    if checkpoint_config is not None:
        return checkpoint_config["data"]["normalization"]
    return "bgr_mean" if weights_format == "deeplab_init" else "imagenet"


def build_run_data(cfg: TrainConfig, normalization: str) -> RunData:
    d = cfg.data
    common = {"num_classes": d.num_classes, "normalization": normalization, "cache_mb": d.cache_mb}
    augment = {"flip": d.flip, "blur": d.blur, "random_scale": d.random_scale, "random_crop": d.random_crop}
    source_root, target_root = expand_path(d.source_root), expand_path(d.target_root)
    source_train = build_dataset(
        d.source, source_root, d.source_train_split, size=d.source_size, train=True, **common, **augment
    )
    source_val = build_dataset(
        d.source,
        source_root,
        d.source_val_split,
        size=d.source_size,
        full_res_label=d.full_res_eval_labels,
        **common,
    )
    target_train = target_val = validator_images = None
    if target_root:
        target = {"city": d.target_city, **common}
        target_train = build_dataset(
            d.target,
            target_root,
            d.target_train_split,
            size=d.target_size,
            train=True,
            labels=False,
            **target,
            **augment,
        )
        target_val = build_dataset(
            d.target,
            target_root,
            d.target_val_split,
            size=d.target_size,
            full_res_label=d.full_res_eval_labels,
            **target,
        )
        unaugmented = build_dataset(
            d.target, target_root, d.target_train_split, size=d.target_size, labels=False, **target
        )
        step = max(1, len(unaugmented) // cfg.eval.validator_images)
        validator_images = Subset(
            unaugmented, list(range(0, len(unaugmented), step))[: cfg.eval.validator_images]
        )
    return RunData(source_train, target_train, source_val, target_val, validator_images)


def _eval_loader(dataset: Dataset, cfg: TrainConfig, max_images: int | None) -> DataLoader:
    if max_images is not None and max_images < len(dataset):
        dataset = Subset(dataset, list(range(max_images)))
    return DataLoader(
        dataset,
        batch_size=1 if cfg.data.full_res_eval_labels else cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def run_evaluation(
    model: nn.Module,
    data: RunData,
    cfg: TrainConfig,
    device: torch.device,
    probs_dir: Path | None = None,
    iteration: int = 0,
) -> dict:
    """All metrics of one evaluation (see `msl.objectives.METRIC_MODES`), plus the per-class IoUs. With
    `probs_dir` (a run directory) the validator images' low-resolution softmax maps go there
    (`msl.probs_maps`)."""
    options = {"flip": cfg.eval.flip, "bf16": cfg.runtime.bf16, "channels_last": cfg.runtime.channels_last}
    record: dict = {}
    source = evaluate(
        model,
        _eval_loader(data.source_val, cfg, cfg.eval.max_images),
        cfg.data.num_classes,
        device,
        **options,
    )
    record.update(source_val_miou=source["miou"], source_val_iou=source["iou"])
    if data.target_val is not None:
        target = evaluate(
            model,
            _eval_loader(data.target_val, cfg, cfg.eval.max_images),
            cfg.data.num_classes,
            device,
            **options,
        )
        record.update({f"oracle_{k}": v for k, v in target.items() if k.startswith("miou") or k == "iou"})
        record["oracle_pixel_acc"] = target["pixel_acc"]
        images = (batch[0] for batch in _eval_loader(data.validator_images, cfg, None))
        validators = label_free_validators(
            model,
            images,
            device,
            num_images=len(data.validator_images),
            probs_size=cfg.eval.probs_size,
            snd_pixels=cfg.eval.snd_pixels,
            **options,
        )
        record.update(validators.compute())
        if probs_dir is not None and (probs := validators.low_res_probs()) is not None:
            save_probs(probs_dir, iteration, probs.numpy())
    model.train()
    return record


class _LossMeter:
    """Sums of the loss terms on the device, plus the first iteration where each went non-finite: all updated
    without a host synchronisation and read back only by `read`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.first_bad: dict[str, Tensor] = {}
        self.count = 0

    def add(self, iteration: int, terms: dict[str, Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().float()
            if name not in self.sums:
                self.sums[name] = torch.zeros((), device=self.device)
                self.first_bad[name] = torch.full((), -1, dtype=torch.long, device=self.device)
            bad = ~torch.isfinite(value) & (self.first_bad[name] < 0)
            self.first_bad[name] = torch.where(bad, iteration, self.first_bad[name])
            self.sums[name] += value
        self.count += 1

    def read(self) -> dict[str, float]:
        """Mean of each term since the last read; raises NonFiniteLossError naming the iteration and term."""
        for name, first_bad in self.first_bad.items():
            if (iteration := int(first_bad)) >= 0:
                raise NonFiniteLossError(f"non-finite loss term '{name}' at iteration {iteration}")
        means = {f"loss_{name}": (total / self.count).item() for name, total in self.sums.items()}
        for total in self.sums.values():
            total.zero_()
        self.count = 0
        return means


def _supervised_loss(model_out: tuple[Tensor, Tensor], labels: Tensor, cfg: TrainConfig) -> dict[str, Tensor]:
    main, aux = (z.float() for z in model_out)  # (B, C, H, W) each
    terms = {"source_ce": F.cross_entropy(main, labels, ignore_index=IGNORE_INDEX)}
    if cfg.model.multi_level:
        terms["source_aux_ce"] = F.cross_entropy(aux, labels, ignore_index=IGNORE_INDEX)
    return terms


def trains_target_term(cfg: TrainConfig) -> bool:
    """Whether the UDA stage has a target loss term (a target loss, or multi-level guidance)."""
    return cfg.loss.target != "none" or cfg.model.multi_level


def uses_target_batches(cfg: TrainConfig) -> bool:
    """Whether the UDA stage draws target batches: for a target term, or for AdaBN's statistics alone."""
    return cfg.stage == "uda" and (trains_target_term(cfg) or cfg.loss.adabn)


def train_step(
    forward: Callable,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    lr: float,
    source: tuple[Tensor, Tensor],
    target_images: Tensor | None,
    target_loss: Callable[[Tensor], Tensor],
    device: torch.device,
) -> dict[str, Tensor]:
    """One optimiser step in the reference's order: learning rate, source batch forward+backward, target batch
    forward+backward (gradients accumulate), step. Returns the loss terms, still on the device.

    `source` is (images (B, 3, Hs, Ws), labels (B, Hs, Ws)); `target_images` (B, 3, Ht, Wt) or None (stage
    source, source-only). Without a target term (`loss.adabn`) the target batch only goes through the model,
    so that batch norm sees both domains as in every other variant.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    lambda_t, lambda_seg = cfg.loss.lambda_target, cfg.loss.lambda_seg
    with autocast(device, cfg.runtime.bf16):
        terms = _supervised_loss(forward(source[0]), source[1], cfg)
    (terms["source_ce"] + lambda_seg * terms.get("source_aux_ce", 0.0)).backward()
    if target_images is not None and trains_target_term(cfg):
        with autocast(device, cfg.runtime.bf16):
            main, aux = forward(target_images)  # (B, C, Ht, Wt) each
        target_terms = {"target_loss": target_loss(main)}
        if cfg.model.multi_level:
            target_terms["target_guidance"] = multi_level_guidance_loss(main, aux, cfg.loss.threshold)
        (
            lambda_t * target_terms["target_loss"]
            + lambda_seg * lambda_t * target_terms.get("target_guidance", 0.0)
        ).backward()
        terms.update(target_terms)
    elif target_images is not None:
        with torch.no_grad(), autocast(device, cfg.runtime.bf16):
            forward(target_images)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return terms


def _to_device(batch: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return batch.to(device, non_blocking=True, memory_format=fmt)


def _log_images(
    writer, model: nn.Module, data: RunData, cfg: TrainConfig, device, normalization: str, iteration: int
) -> None:
    if data.target_val is None or cfg.eval.logged_images == 0:
        return
    model.eval()
    for index in range(min(cfg.eval.logged_images, len(data.target_val))):
        image, label, _ = data.target_val[index]
        with torch.no_grad(), autocast(device, cfg.runtime.bf16):
            pred = predicted_classes(model(image[None].to(device))[0])[0].cpu()
        writer.add_image(f"target_val/{index}/image", denormalize(image, normalization), iteration)
        writer.add_image(f"target_val/{index}/label", colourise(label, cfg.data.num_classes), iteration)
        writer.add_image(f"target_val/{index}/prediction", colourise(pred, cfg.data.num_classes), iteration)
    model.train()


@dataclass
class _Training:
    """What the steps and evaluations of a run share; `history` and `best` grow with each evaluation."""

    cfg: TrainConfig  # with data.normalization resolved
    run: RunDir
    device: torch.device
    model: nn.Module
    forward: Callable  # the training forward (`training_forward`)
    optimizer: torch.optim.Optimizer
    data: RunData
    writer: SummaryWriter
    start: int  # the first iteration this process runs
    history: list[dict]  # the records of every evaluation so far
    best: dict | None  # {"iteration", "metric", "value"} of the best evaluation so far (`_update_best`)


def evaluates_at(iteration: int, cfg: TrainConfig) -> bool:
    """Whether a run evaluates (and saves its checkpoints) after `iteration` iterations."""
    return iteration % cfg.eval.every == 0 or iteration == cfg.optim.iterations


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    on_eval: EvalCallback | None = None,
    stop_after: int | None = None,
) -> dict:
    """Run the configured stage in `run_dir` and return the last evaluation record.

    `resume_from` continues from a checkpoint (model, optimiser, iteration, RNG, history, best record) under
    this `cfg`; `on_eval(record, checkpoint_path)` is called after each evaluation (the Ray Tune hook).
    `stop_after` ends the run early after that iteration (an evaluation's, so that it leaves a checkpoint to
    resume from); the schedule still runs to `optim.iterations`, so resuming gives the uninterrupted run.
    """
    check_data_roots(cfg)
    run = RunDir(run_dir)
    run.check_can_start(resume=resume_from is not None)
    t = _set_up(cfg, run, resume_from)
    cfg, total = t.cfg, t.cfg.optim.iterations
    target_loss = build_target_loss(
        cfg.loss.target, ratio=cfg.loss.iw_ratio, threshold=cfg.loss.threshold, options=cfg.loss.options
    )
    source_batches, target_batches = _batch_streams(cfg, t.data, t.start, t.device)
    meter = _LossMeter(t.device)
    window_losses: dict[str, float] = {}
    started = time.perf_counter()
    stop = total if stop_after is None else min(stop_after, total)
    bar = tqdm(
        range(t.start, stop),
        initial=t.start,
        total=total,
        disable=not cfg.runtime.progress,
        desc=f"{cfg.stage} {run.path.name}",
        dynamic_ncols=True,
    )
    for iteration in bar:
        lr = poly_lr(cfg.optim.lr, iteration, cfg.poly_horizon, cfg.optim.poly_power)
        source, target_images = _next_batches(source_batches, target_batches, t.device, cfg)
        terms = train_step(t.forward, t.optimizer, cfg, lr, source, target_images, target_loss, t.device)
        meter.add(iteration, terms)
        done = iteration + 1
        evaluating = evaluates_at(done, cfg)
        if done % cfg.runtime.log_every == 0 or evaluating:
            window_losses = _log_losses(meter, t.writer, bar, lr, done)
            t.run.write_progress(done, total, time.perf_counter() - started)
        if evaluating:
            last = _evaluate_and_save(t, done, lr, window_losses, started)
            if on_eval is not None:
                on_eval(t.history[-1], last)
    bar.close()
    t.writer.close()
    return t.history[-1] if t.history else {}


def _set_up(cfg: TrainConfig, run: RunDir, resume_from: str | Path | None) -> _Training:
    """Device, model, optimiser and data of a run, restored from `resume_from` if given, and the run
    directory's config, run info and metrics written. The order is part of exact resume: seed, model,
    optimiser, then the checkpoint's RNG state. The data come before the run directory is written, so that a
    bad data root leaves none."""
    device = _set_up_runtime(cfg)
    checkpoint = load_checkpoint(resume_from) if resume_from is not None else None
    model, normalization = _build_model(cfg, checkpoint, device)
    forward = training_forward(model, cfg.runtime.compile)
    optimizer = build_optimizer(cfg.optim, model)
    start, history, best = 0, [], None
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        start, history, best = checkpoint["iteration"], checkpoint["history"], checkpoint["best"]
        set_rng_state(checkpoint["rng"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, normalization=normalization))
    data = build_run_data(cfg, normalization)
    save_config(cfg, run.config)
    write_run_info(run.run_info, cfg.runtime.seed, device, resumed=checkpoint is not None)
    run.write_metrics(history)
    from torch.utils.tensorboard import SummaryWriter

    # A resumed run keeps what it logged up to its checkpoint's iteration `start` and drops what a process
    # wrote after it (TensorBoard discards steps >= purge_step); a fresh run drops everything an attempt
    # stopped before its first checkpoint wrote.
    writer = SummaryWriter(str(run.tensorboard), purge_step=start + 1 if checkpoint is not None else 0)
    return _Training(cfg, run, device, model, forward, optimizer, data, writer, start, history, best)


def _set_up_runtime(cfg: TrainConfig) -> torch.device:
    """The run's device, with its CPU threads, cuDNN autotuning and seed set."""
    device = pick_device(cfg.runtime.device)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
    torch.manual_seed(cfg.runtime.seed)
    return device


def _build_model(cfg: TrainConfig, checkpoint: dict | None, device: torch.device) -> tuple[nn.Module, str]:
    """The model on `device` in train mode, with the checkpoint's weights, `model.weights` or a random init,
    and the input normalization those weights need (`resolve_normalization`)."""
    model = build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.aspp_branches, cfg.model.freeze_bn)
    weights_format, trained_config = None, None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        trained_config = checkpoint["config"]
    elif cfg.model.weights:
        weights_format = load_weights(model, expand_path(cfg.model.weights))
        if weights_format == "msl" and cfg.data.normalization == "auto":  # keep what the weights trained with
            trained_config = load_file(expand_path(cfg.model.weights), "weights").get("config")
    memory_format = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    return model, resolve_normalization(cfg, weights_format, trained_config)


def _batch_streams(
    cfg: TrainConfig, data: RunData, start: int, device: torch.device
) -> tuple[Iterator, Iterator | None]:
    """The endless source batches and, when the stage draws them, the target batches, both from batch `start`
    on (the batches a straight run would draw next)."""

    def stream(dataset: Dataset, seed: int) -> Iterator:
        return batch_stream(
            dataset,
            cfg.data.batch_size,
            seed=seed,
            start_batch=start,
            num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
        )

    source = stream(data.source_train, cfg.runtime.seed)
    target = stream(data.target_train, cfg.runtime.seed + 1) if uses_target_batches(cfg) else None
    return source, target


def _next_batches(
    source_batches: Iterator, target_batches: Iterator | None, device: torch.device, cfg: TrainConfig
) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
    """The next source (images (B, 3, Hs, Ws), labels (B, Hs, Ws)) and target images (B, 3, Ht, Wt) or None,
    on the device."""
    channels_last = cfg.runtime.channels_last
    images, labels, _ = next(source_batches)
    source = _to_device(images, device, channels_last), labels.to(device, non_blocking=True)
    if target_batches is None:
        return source, None
    return source, _to_device(next(target_batches)[0], device, channels_last)


def _log_losses(
    meter: _LossMeter, writer: SummaryWriter, bar: tqdm, lr: float, done: int
) -> dict[str, float]:
    """Read the loss means of the window back from the device and log them; returns them."""
    window_losses = meter.read()
    for name, value in window_losses.items():
        writer.add_scalar(f"loss/{name.removeprefix('loss_')}", value, done)
    writer.add_scalar("learning_rate", lr, done)
    bar.set_postfix({k.removeprefix("loss_"): f"{v:.4f}" for k, v in window_losses.items()}, refresh=False)
    return window_losses


def _evaluate_and_save(
    t: _Training, done: int, lr: float, window_losses: dict[str, float], started: float
) -> Path:
    """Evaluate after iteration `done`, record the evaluation (history, best, TensorBoard, metrics file) and
    save the checkpoints; returns the last checkpoint's path."""
    evaluation = run_evaluation(t.model, t.data, t.cfg, t.device, t.run.path, done)
    record = {
        "iteration": done,
        "lr": lr,
        **window_losses,
        **evaluation,
        "elapsed_s": time.perf_counter() - started,
        "time": time.time(),
    }
    t.best = _update_best(t.best, record, t.cfg)
    record["is_best"] = t.best["iteration"] == done
    t.history.append(record)
    for name, value in record.items():
        if isinstance(value, float) and name not in window_losses and name != "lr":
            t.writer.add_scalar(f"metrics/{name}", value, done)
    _log_images(t.writer, t.model, t.data, t.cfg, t.device, t.cfg.data.normalization, done)
    payload = {
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "iteration": done,
        "rng": rng_state(),
        "config": config_to_dict(t.cfg),
        "history": t.history,
        "best": t.best,
    }
    t.writer.flush()  # before the checkpoint: a resume from it keeps this evaluation's events
    if record["is_best"]:  # before last.pt, whose `best` names it: a crash between keeps them consistent
        save_atomic(payload, t.run.best)
    last = save_atomic(payload, t.run.last)
    t.run.write_metrics(t.history)
    return last


def _update_best(best: dict | None, record: dict, cfg: TrainConfig) -> dict:
    """The best-so-far record under `selection` (`msl.objectives.is_better`: NaN never wins, a tie keeps the
    earlier checkpoint)."""
    metric = cfg.selection.metric
    value = record.get(metric, math.nan)
    if is_better(value, None if best is None else best["value"], cfg.selection.direction):
        return {"iteration": record["iteration"], "metric": metric, "value": value}
    return best or {"iteration": -1, "metric": metric, "value": math.nan}
