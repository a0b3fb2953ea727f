"""Segmentation networks with a main and an aux head, their optimiser groups and weight loading."""

from msl.models.base import TwoHeadNet
from msl.models.build import ARCH_NAMES, build_model, param_groups
from msl.models.deeplab import ARCHS, ArchSpec, ASPPHead, DeepLabMulti
from msl.models.small import SmallSegNet, SmallSpec
from msl.models.weights import WeightsFormat, WeightsMismatchError, load_weights

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "ASPPHead",
    "ArchSpec",
    "DeepLabMulti",
    "SmallSegNet",
    "SmallSpec",
    "TwoHeadNet",
    "WeightsFormat",
    "WeightsMismatchError",
    "build_model",
    "load_weights",
    "param_groups",
]
