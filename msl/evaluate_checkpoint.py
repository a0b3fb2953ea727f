"""`msl eval`: score a checkpoint on a labelled split, optionally with flip TTA, and save its predictions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from msl.checkpoint import load_file
from msl.config import ConfigError, load_config
from msl.data import build_dataset
from msl.evaluate import evaluate
from msl.labels import NUM_CLASSES_CHOICES, class_to_label_id
from msl.metrics import format_table
from msl.models import build_model, load_weights
from msl.runinfo import expand_path
from msl.trainer import pick_device, resolve_normalization
from msl.visualize import colourise


def _prediction_writer(out: Path, num_classes: int):
    """Writes each prediction twice: Cityscapes label ids (the official submission format that
    cityscapesscripts' evaluator scores) under `labelIds/`, and Cityscapes colours under `colour/`."""
    label_ids = (
        class_to_label_id(num_classes)
        if num_classes in NUM_CLASSES_CHOICES
        else np.arange(num_classes, dtype=np.uint8)
    )
    (out / "labelIds").mkdir(parents=True, exist_ok=True)
    (out / "colour").mkdir(parents=True, exist_ok=True)

    def write(predictions: torch.Tensor, names: list[str]) -> None:
        for prediction, name in zip(predictions.cpu(), names, strict=True):  # (H, W) each
            cv2.imwrite(str(out / "labelIds" / f"{name}_pred_labelIds.png"), label_ids[prediction.numpy()])
            rgb = colourise(prediction, num_classes).permute(1, 2, 0).numpy()  # (H, W, 3)
            cv2.imwrite(str(out / "colour" / f"{name}_pred_color.png"), rgb[..., ::-1])  # OpenCV writes BGR

    return write


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    config: str | None = None,
    overrides=(),
    domain: str = "target",
    flip: bool = False,
    save_predictions: str | None = None,
) -> int:
    payload = load_file(checkpoint)
    if config is None and not (isinstance(payload, dict) and "config" in payload):
        raise ConfigError(f"{checkpoint} carries no config (not an msl checkpoint): pass --config")
    cfg = load_config(config if config is not None else payload["config"], overrides)
    device = pick_device(cfg.runtime.device)
    model = build_model(cfg.model.arch, cfg.data.num_classes, cfg.model.aspp_branches)
    weights_format = load_weights(model, checkpoint)
    model.to(device).eval()
    normalization = resolve_normalization(cfg, weights_format, payload.get("config"))

    d = cfg.data
    name, root, split, size = (
        (d.target, d.target_root, d.target_val_split, d.target_size)
        if domain == "target"
        else (d.source, d.source_root, d.source_val_split, d.source_size)
    )
    dataset = build_dataset(
        name,
        expand_path(root),
        split,
        size=size,
        num_classes=d.num_classes,
        city=d.target_city if domain == "target" else None,
        normalization=normalization,
        full_res_label=d.full_res_eval_labels,
    )
    loader = DataLoader(dataset, batch_size=1, num_workers=d.num_workers)
    writer = _prediction_writer(Path(save_predictions), d.num_classes) if save_predictions else None
    result = evaluate(
        model, loader, d.num_classes, device, flip=flip, bf16=cfg.runtime.bf16, on_prediction=writer
    )
    print(
        f"{name} {split}: {len(dataset)} images, flip={flip}, pixel accuracy {100 * result['pixel_acc']:.2f}%"
    )
    print(format_table(result))
    if save_predictions:
        out = Path(save_predictions)
        print(f"predictions written to {out / 'labelIds'} and {out / 'colour'}")
    return 0
