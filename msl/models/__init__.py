"""Segmentation networks with a main and an aux head, their optimiser groups and weight loading."""

from msl.models.deeplab import ARCHS, ArchSpec, ASPPHead, DeepLabMulti, build_model, param_groups
from msl.models.weights import WeightsFormat, WeightsMismatchError, load_weights

__all__ = [
    "ARCHS",
    "ASPPHead",
    "ArchSpec",
    "DeepLabMulti",
    "WeightsFormat",
    "WeightsMismatchError",
    "build_model",
    "load_weights",
    "param_groups",
]
