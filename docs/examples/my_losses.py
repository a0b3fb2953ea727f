"""A target loss of one's own, as msl takes it: `loss.target: docs.examples.my_losses:focal_entropy` (run
from the repository root), its options from `loss.options` (docs/losses.md §1.9, search_spaces/own_loss.yaml).

The contract is the built-in losses': main-head logits `(B, C, H, W)` in (float32), a scalar loss out, with a
gradient through the logits; options are keyword arguments.
"""

from torch import Tensor


def focal_entropy(logits: Tensor, gamma: float = 2.0) -> Tensor:
    """Entropy minimisation that focuses on the uncertain pixels: each pixel's entropy H(p) is weighted by
    (1 − max_c p)^gamma (detached), then averaged over pixels and divided by C as msl's `entropy` loss is
    (docs/losses.md §1.3). gamma = 0 is that loss exactly; a larger gamma leaves confident pixels alone."""
    probs = logits.softmax(dim=1)  # (B, C, H, W)
    entropy = -(probs * logits.log_softmax(dim=1)).sum(dim=1)  # (B, H, W)
    weight = (1 - probs.detach().amax(dim=1)).pow(gamma)  # (B, H, W)
    return (weight * entropy).mean() / logits.shape[1]
