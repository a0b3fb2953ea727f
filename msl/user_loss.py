"""A target loss of the user's own, named by an import path `package.module:function` (docs/losses.md §1.9).

The function has the built-in losses' contract: main-head logits `(B, C, H, W)` in (cast to float32 by msl),
a scalar loss out, and its own options (`loss.options`) as keyword arguments. `check_user_loss` runs when a
config is loaded, so that `msl train` and `msl-study run --dry-run` refuse a loss that cannot work before any
work starts.

The module is looked up on `sys.path`, then in the working directory: a console script such as `msl-study`
does not put the working directory on `sys.path` as `python -m` does.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
CHECK_SHAPE = (2, 8, 8)  # batch, height, width of the random logits a user loss is tried on


class UserLossError(ValueError):
    """What is wrong with a user loss; `key` is the field of `loss` that holds the fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def is_import_path(name: str) -> bool:
    """Whether `name` has the form `package.module:function` (otherwise it is a built-in loss's name)."""
    return IMPORT_PATH.fullmatch(name) is not None


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def load_user_loss(path: str) -> Callable[..., Tensor]:
    """The function at the import path `package.module:function`, or UserLossError saying why not."""
    module_name, _, function_name = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an ImportError, or any error raised by the module's own code
        raise UserLossError(
            "target", f"cannot import {module_name!r} of {path!r}: {_one_line(error)}"
        ) from None
    if not hasattr(module, function_name):
        raise UserLossError("target", f"module {module_name!r} ({module.__file__}) has no {function_name!r}")
    function = getattr(module, function_name)
    if not callable(function):
        raise UserLossError("target", f"{path!r} is a {type(function).__name__}, not a function")
    return function


def bind_user_loss(path: str, options: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    """The user loss at `path` as a function of the main-head logits, its options bound, logits in float32."""
    return _bind(load_user_loss(path), options)


def _bind(function: Callable[..., Tensor], options: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    def loss(logits: Tensor) -> Tensor:  # (B, C, H, W) -> ()
        return function(logits.float(), **options)

    return loss


def check_user_loss(path: str, options: dict[str, Any], num_classes: int) -> None:
    """UserLossError unless the loss at `path` imports, accepts `options` and returns a finite scalar with a
    gradient on random logits `(2, num_classes, 8, 8)`."""
    function = load_user_loss(path)
    try:
        inspect.signature(function).bind(None, **options)
    except TypeError as error:
        raise UserLossError(
            "options", f"{path} does not accept logits and the options {options!r}: {error}"
        ) from None
    except ValueError:  # no signature to read (some C functions): the call below still checks
        pass
    batch, height, width = CHECK_SHAPE
    logits = torch.randn(batch, num_classes, height, width, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_(True)  # (B, C, H, W)
    tried = f"{path} on random logits of shape {tuple(logits.shape)} with options {options!r}"
    with torch.enable_grad():
        try:
            value = _bind(function, options)(logits)
        except Exception as error:
            raise UserLossError("target", f"{tried} raised {_one_line(error)}") from None
        _check_value(value, tried)
        value.backward()
    if logits.grad is None:
        raise UserLossError("target", f"{tried}: no gradient reaches the logits")


def _check_value(value: Any, tried: str) -> None:
    if not (isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point()):
        described = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)
        raise UserLossError("target", f"{tried} returned {described}; expected a scalar float tensor")
    if not torch.isfinite(value):
        raise UserLossError("target", f"{tried} returned {value.item()}; expected a finite loss")
    if not value.requires_grad:
        raise UserLossError(
            "target", f"{tried} returned a loss without a gradient (detached from the logits)"
        )
