"""Loading weights into a `DeepLabMulti` from a local file of a detected format (docs/model.md §3.5, §3.6).

Formats, and the input normalisation each implies (the data pipeline picks it, not this module):
* `deeplab_init`: the DeepLab ImageNet-init file (`DeepLab_resnet_pretrained_init-*.pth`), keys `Scale.<key>`;
  Caffe weights, so BGR mean subtraction on 0..255 pixels (docs/datasets.md §5.1). Its own classifier
  (`layer5`) is skipped and both of our heads stay random, as in the reference.
* `torchvision`: a torchvision ImageNet ResNet state dict (has `fc.*`); RGB ImageNet mean/std on 0..1 pixels.
  `fc.*` is dropped and the heads stay random. Note: torchvision's Bottleneck strides its 3×3 conv while the
  DeepLab-v2 trunk strides the 1×1 (only layer2's first block differs); the weights fit but were not trained
  so.
* `msl`: a full-model checkpoint: a dict with a `model` (ours) or `state_dict` (the reference's) entry, or a
  bare state dict; a `module.` prefix (nn.DataParallel) is stripped. Normalisation: whatever the run used.

Every key must match except the expected gaps (heads absent from ImageNet files; `num_batches_tracked`
buffers, which old files lack and which only matter for cumulative-average batch norm); anything else raises
`WeightsMismatchError`, so a model never silently keeps random weights (docs/reference-quirks.md §10.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from msl.checkpoint import load_file
from msl.models.deeplab import HEAD_MODULES

WeightsFormat = Literal["deeplab_init", "torchvision", "msl"]
_SHOWN_KEYS = 10


class WeightsMismatchError(RuntimeError):
    """A weights file whose keys or shapes do not fit the model."""


def load_weights(model: nn.Module, path: str | Path) -> WeightsFormat:
    """Load the weights file at `path` into `model` in place and return the detected format."""
    path = Path(path)
    loaded = load_file(path, "weights")  # no arbitrary code from the file
    weights_format, state = _to_model_keys(loaded)
    _check_fits(model.state_dict(), state, weights_format, path)
    model.load_state_dict(state, strict=False)
    return weights_format


def _to_model_keys(loaded: object) -> tuple[WeightsFormat, dict[str, torch.Tensor]]:
    """Detect the format of a loaded file and rename its entries to the model's state-dict keys."""
    if not isinstance(loaded, dict):
        raise WeightsMismatchError(f"expected a dict of tensors, got {type(loaded).__name__}")
    for entry in ("model", "state_dict"):  # our checkpoints, the reference's checkpoints
        if isinstance(loaded.get(entry), dict):
            return "msl", _strip_prefix(loaded[entry], "module.")
    if all(key.startswith("Scale.") for key in loaded):
        # docs/model.md §3.5: drop keys whose 2nd component is layer5, strip the 1st component.
        return "deeplab_init", {
            key.split(".", 1)[1]: value for key, value in loaded.items() if key.split(".")[1] != "layer5"
        }
    if "fc.weight" in loaded:
        return "torchvision", {key: value for key, value in loaded.items() if not key.startswith("fc.")}
    return "msl", _strip_prefix(loaded, "module.")


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The state dict without `prefix` if every key has it (nn.DataParallel's `module.`), else unchanged."""
    if state and all(key.startswith(prefix) for key in state):
        return {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def _may_be_missing(key: str, weights_format: WeightsFormat) -> bool:
    """Whether a model key may be absent from a file of this format."""
    if key.endswith(".num_batches_tracked"):
        return True
    return weights_format != "msl" and key.split(".", 1)[0] in HEAD_MODULES


def _check_fits(
    model_state: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    weights_format: WeightsFormat,
    path: Path,
) -> None:
    """Raise `WeightsMismatchError` listing unexpected, missing and misshapen keys, if there are any."""
    missing = [key for key in model_state if key not in state and not _may_be_missing(key, weights_format)]
    unexpected = [key for key in state if key not in model_state]
    misshapen = [
        f"{key} (file {tuple(value.shape)} vs model {tuple(model_state[key].shape)})"
        for key, value in state.items()
        if key in model_state and value.shape != model_state[key].shape
    ]
    if not (missing or unexpected or misshapen):
        return
    lines = [f"weights in {path} (detected format {weights_format!r}) do not fit the model:"]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", misshapen)):
        if keys:
            more = f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
            lines.append(f"  {len(keys)} {label}: {', '.join(keys[:_SHOWN_KEYS])}{more}")
    raise WeightsMismatchError("\n".join(lines))
