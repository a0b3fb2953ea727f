"""SGD that steps some parameters several times per step: the reference's duplicated backbone entries, made
exact.

The reference lists most backbone parameters 3 or 4 times in one SGD parameter group (docs/model.md §3.4,
docs/reference-quirks.md §9.2). The torch.optim.SGD of its time (2019; pytorch/pytorch#12218 shows its loop)
walked the group's list and gave every listing a full update, so a parameter listed k times took k updates
per step, one after the other:

    d = p.grad                             # the same tensor at every listing
    for each of the k listings:
        d += weight_decay * p              # in place, into .grad: weight decay piles up across listings
        buf = d if first use else momentum * buf + d   # one momentum buffer per parameter, shared
        p -= lr * buf

Today's torch (2.14, checked) still accepts duplicates with a warning that they will become an error
(pytorch/pytorch#40967), and its arithmetic on them is not the 2019 one: on the first step every listing gets
a buffer of its own; its foreach path (the default) then computes every listing's weight decay from the
parameter before the step and multiplies the shared buffer by `momentum` once per listing before adding any
gradient; its loop path leaves .grad untouched, so weight decay does not pile up. `RepeatedSGD` therefore
lists each parameter once with a repeat count and runs the 2019 loop itself.

A per-parameter learning rate of k times the base would not be the same thing. Per step the momentum buffer
decays by momentum**k (0.73 for k=3 at momentum 0.9) and takes k gradients; the first step of a constant
gradient g moves a k=3 parameter by (1 + 1.9 + 2.71) * lr * g = 5.61 * lr * g rather than 3 * lr * g. Only
in the steady state of a constant gradient do both move k * lr * g / (1 - momentum) per step. Weight decay
also differs: listing j adds j * weight_decay * p (roughly) to the gradient, not weight_decay * p.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class RepeatedSGD(torch.optim.Optimizer):
    """SGD with momentum and L2 weight decay in which each parameter of a group takes `repeats` updates per
    step.

    A group's `repeats` is a list of positive ints, one per parameter of its `params` (default: all 1, which
    is exactly torch.optim.SGD without dampening or Nesterov). The state is torch.optim.SGD's: one
    `momentum_buffer` per parameter, so checkpoints resume the same way.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "repeats": None}
        )

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["repeats"] is None:
            group["repeats"] = [1] * len(group["params"])
        repeats = group["repeats"] = list(group["repeats"])
        if len(repeats) != len(group["params"]) or not all(isinstance(k, int) and k >= 1 for k in repeats):
            raise ValueError(
                f"param group {len(self.param_groups) - 1}: 'repeats' must hold one int >= 1 per "
                f"parameter ({len(group['params'])}), got {repeats}"
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step: the k-th round updates every parameter with at least k repeats, with foreach kernels (the
        same arithmetic per element as a loop over the parameters, in a handful of launches per round)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            stepped = [
                (p, k) for p, k in zip(group["params"], group["repeats"], strict=True) if p.grad is not None
            ]
            # The 2019 SGD grew .grad itself across listings; these copies do that and leave .grad as it is.
            directions = {p: p.grad.clone() for p, _ in stepped}
            for round_ in range(max((k for _, k in stepped), default=0)):
                params = [p for p, k in stepped if k > round_]
                grads = [directions[p] for p in params]
                if weight_decay:
                    torch._foreach_add_(grads, params, alpha=weight_decay)
                updates = grads
                if momentum:
                    states = [self.state[p] for p in params]
                    carried = [
                        (s["momentum_buffer"], d)
                        for s, d in zip(states, grads, strict=True)
                        if "momentum_buffer" in s
                    ]
                    if carried:
                        buffers, carried_grads = ([pair[i] for pair in carried] for i in (0, 1))
                        torch._foreach_mul_(buffers, momentum)
                        torch._foreach_add_(buffers, carried_grads)
                    for state, direction in zip(states, grads, strict=True):
                        if "momentum_buffer" not in state:  # first use: the buffer starts as the direction
                            state["momentum_buffer"] = direction.clone()
                    updates = [state["momentum_buffer"] for state in states]
                torch._foreach_add_(params, updates, alpha=-lr)
        return loss
