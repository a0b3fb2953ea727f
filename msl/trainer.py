"""The training loop: source-only pretraining and UDA, with evaluation, model selection and exact resume.

One UDA iteration follows the reference (docs/losses.md §1.7): poly learning rate, then a source batch
(CE on the main head, plus lambda_seg * CE on the aux head when multi-level), then a target batch
(lambda_target * L_T on the main head, plus lambda_seg * lambda_target * guidance on the aux head when
multi-level), gradients of both accumulated into one optimiser step. With target loss `none` (and no multi-level)
the stage is source-only and draws no target batch, unless `loss.adabn` asks to forward them without a loss
(batch-norm statistics then see both domains, as in every adapting variant, so that baseline differs from the
adapting variants by the loss alone). Losses stay on the device and are read back
every `runtime.log_every` iterations, so the GPU never waits for the host inside an iteration.

A run directory holds: config.yaml (resolved), run_info.json (git revision, versions, seed), metrics.jsonl (one
line per evaluation), tensorboard/, checkpoints/{last,best}.pt and, with a target, validator_probs/ (the
validator images' low-resolution softmax maps per evaluation, `msl.probs_maps`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from msl.checkpoint import load_checkpoint, load_file, rng_state, save_atomic, set_rng_state
from msl.config import ConfigError, OptimConfig, TrainConfig, config_to_dict, save_config
from msl.data import batch_stream, build_dataset, denormalize
from msl.evaluate import autocast, evaluate, label_free_validators
from msl.io import write_text_atomic
from msl.labels import IGNORE_INDEX
from msl.losses import build_target_loss, multi_level_guidance_loss
from msl.metrics import predicted_classes
from msl.models import build_model, load_weights, param_groups
from msl.models.build import reference_param_groups
from msl.models.deeplab import ARCHS, DeepLabMulti
from msl.optim import RepeatedSGD
from msl.probs_maps import save_probs
from msl.runinfo import expand_path, write_run_info
from msl.visualize import colourise

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
    with `optim.reference_param_groups`, SGD stepping each backbone parameter as often as the reference lists it."""
    if optim.reference_param_groups:
        if optim.optimizer != "sgd":
            raise ConfigError(
                f"optim.reference_param_groups: reproduces the reference's SGD only; set "
                f"optim.optimizer: sgd or turn it off (optimizer is {optim.optimizer!r})"
            )
        if not isinstance(model, DeepLabMulti):
            raise ConfigError(
                f"optim.reference_param_groups: only for the DeepLab ResNet archs "
                f"({', '.join(sorted(ARCHS))}); turn it off for {type(model).__name__}"
            )
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
    ImageNet mean/std for torchvision weights (and for random init), whatever an msl checkpoint trained with."""
    if cfg.data.normalization != "auto":
        return cfg.data.normalization
    if checkpoint_config is not None:
        return checkpoint_config["data"]["normalization"]
    return "bgr_mean" if weights_format == "deeplab_init" else "imagenet"


def build_run_data(cfg: TrainConfig, normalization: str) -> RunData:
    d = cfg.data
    common = {"num_classes": d.num_classes, "normalization": normalization}
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
    elif cfg.stage == "uda":
        raise ValueError("stage 'uda' needs data.target_root")
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
    """All metrics of one evaluation (see `msl.config.METRIC_MODES`), plus the per-class IoUs. With `probs_dir`
    (a run directory) the validator images' low-resolution softmax maps go there (`msl.probs_maps`)."""
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
    source, source-only). Without a target term (`loss.adabn`) the target batch only goes through the model, so
    that batch norm sees both domains as in every other variant.
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


# What a run directory holds before its first checkpoint: a folder with only these never got far enough to be
# resumed, so a new start may reuse it (a missing dataset or a kill before the first evaluation never wedges it).
_RUN_FILES = ("config.yaml", "run_info.json", "metrics.jsonl", "tensorboard", "checkpoints")


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """Never overwrite a previous run: a directory with a checkpoint, or with files a run does not write,
    needs `resume` (or another directory)."""
    if resume or not run_dir.exists():
        return
    entries = {entry.name for entry in run_dir.iterdir()}
    checkpoints = run_dir / "checkpoints"
    saved = checkpoints.is_dir() and any(not p.name.startswith(".") for p in checkpoints.iterdir())
    if saved or not entries <= set(_RUN_FILES):
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose --out")


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


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    on_eval: EvalCallback | None = None,
) -> dict:
    """Run the configured stage in `run_dir` and return the last evaluation record.

    `resume_from` continues from a checkpoint (model, optimiser, iteration, RNG, history, best record) under
    this `cfg`; `on_eval(record, checkpoint_path)` is called after each evaluation (the Ray Tune hook).
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, resume=resume_from is not None)
    device = pick_device(cfg.runtime.device)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
    torch.manual_seed(cfg.runtime.seed)

    checkpoint = load_checkpoint(resume_from) if resume_from is not None else None
    model = build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.aspp_branches, cfg.model.freeze_bn)
    weights_format = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    elif cfg.model.weights:
        weights_format = load_weights(model, expand_path(cfg.model.weights))
    trained_config = checkpoint["config"] if checkpoint is not None else None
    if (
        weights_format == "msl" and cfg.data.normalization == "auto"
    ):  # keep what the weights were trained with
        trained_config = load_file(expand_path(cfg.model.weights), "weights").get("config")
    normalization = resolve_normalization(cfg, weights_format, trained_config)
    channels_last = cfg.runtime.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format).train()
    forward = training_forward(model, cfg.runtime.compile)

    optimizer = build_optimizer(cfg.optim, model)
    start, history, best = 0, [], None
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        start, history, best = checkpoint["iteration"], checkpoint["history"], checkpoint["best"]
        set_rng_state(checkpoint["rng"])

    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, normalization=normalization))
    data = build_run_data(
        cfg, normalization
    )  # before the run directory is written: a bad data root leaves none
    resolved = config_to_dict(cfg)
    save_config(cfg, run_dir / "config.yaml")
    write_run_info(run_dir / "run_info.json", cfg.runtime.seed, device, resumed=checkpoint is not None)
    _write_history(run_dir / "metrics.jsonl", history)

    target_loss = build_target_loss(cfg.loss.target, ratio=cfg.loss.iw_ratio, threshold=cfg.loss.threshold)
    pin = device.type == "cuda"
    source_batches = batch_stream(
        data.source_train,
        cfg.data.batch_size,
        seed=cfg.runtime.seed,
        start_batch=start,
        num_workers=cfg.data.num_workers,
        pin_memory=pin,
    )
    target_batches: Iterator | None = None
    if uses_target_batches(cfg):
        target_batches = batch_stream(
            data.target_train,
            cfg.data.batch_size,
            seed=cfg.runtime.seed + 1,
            start_batch=start,
            num_workers=cfg.data.num_workers,
            pin_memory=pin,
        )

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start)
    meter = _LossMeter(device)
    window_losses: dict[str, float] = {}
    total = cfg.optim.iterations
    started = time.perf_counter()
    bar = tqdm(
        range(start, total),
        initial=start,
        total=total,
        disable=not cfg.runtime.progress,
        desc=f"{cfg.stage} {run_dir.name}",
        dynamic_ncols=True,
    )
    record = history[-1] if history else {}
    for iteration in bar:
        lr = poly_lr(cfg.optim.lr, iteration, cfg.poly_horizon, cfg.optim.poly_power)
        images, labels, _ = next(source_batches)
        source = _to_device(images, device, channels_last), labels.to(device, non_blocking=True)
        target_images = None
        if target_batches is not None:
            target_images = _to_device(next(target_batches)[0], device, channels_last)
        terms = train_step(forward, optimizer, cfg, lr, source, target_images, target_loss, device)
        meter.add(iteration, terms)

        done = iteration + 1
        evaluating = done % cfg.eval.every == 0 or done == total
        if done % cfg.runtime.log_every == 0 or evaluating:
            window_losses = meter.read()
            for name, value in window_losses.items():
                writer.add_scalar(f"loss/{name.removeprefix('loss_')}", value, done)
            writer.add_scalar("learning_rate", lr, done)
            bar.set_postfix(
                {k.removeprefix("loss_"): f"{v:.4f}" for k, v in window_losses.items()}, refresh=False
            )
        if evaluating:
            evaluation = run_evaluation(model, data, cfg, device, run_dir, done)
            record = {
                "iteration": done,
                "lr": lr,
                **window_losses,
                **evaluation,
                "elapsed_s": time.perf_counter() - started,
                "time": time.time(),
            }
            best = _update_best(best, record, cfg)
            record["is_best"] = best["iteration"] == done
            history.append(record)
            for name, value in record.items():
                if isinstance(value, float) and name not in window_losses and name != "lr":
                    writer.add_scalar(f"metrics/{name}", value, done)
            _log_images(writer, model, data, cfg, device, normalization, done)
            payload = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "iteration": done,
                "rng": rng_state(),
                "config": resolved,
                "history": history,
                "best": best,
            }
            if record[
                "is_best"
            ]:  # before last.pt, whose `best` names it: a crash between keeps them consistent
                save_atomic(payload, run_dir / "checkpoints" / "best.pt")
            last = save_atomic(payload, run_dir / "checkpoints" / "last.pt")
            _write_history(run_dir / "metrics.jsonl", history)
            writer.flush()
            if on_eval is not None:
                on_eval(record, last)
    bar.close()
    writer.close()
    return record


def _update_best(best: dict | None, record: dict, cfg: TrainConfig) -> dict:
    """The best-so-far record under `selection` (NaN never wins; ties keep the earlier checkpoint)."""
    value = record.get(cfg.selection.metric, math.nan)
    if value is None or math.isnan(value):
        return best or {"iteration": -1, "metric": cfg.selection.metric, "value": math.nan}
    better = (
        best is None
        or math.isnan(best["value"])
        or (value > best["value"] if cfg.selection.direction == "max" else value < best["value"])
    )
    return (
        {"iteration": record["iteration"], "metric": cfg.selection.metric, "value": value} if better else best
    )


def _json_ready(value):
    """NaN (an IoU of a class absent from labels and predictions) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return [_json_ready(v) for v in value] if isinstance(value, list) else value


def _write_history(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl from the checkpointed history, so a resumed run never duplicates or loses a line."""
    lines = (
        json.dumps({k: _json_ready(v) for k, v in record.items()}, allow_nan=False) + "\n"
        for record in history
    )
    write_text_atomic(path, "".join(lines))
