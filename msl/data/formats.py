"""Where each dataset keeps its files and how its label files encode classes (docs/datasets.md §5.2-§5.5).

A format turns (root, split, city) into a list of `Sample`s and decodes a label file into class indices of the
19-, 16- or 13-class protocol. The layouts are those of the official downloads, so no list files are needed:

* cityscapes: `leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png` with
  `gtFine/{split}/{city}/{stem}_gtFine_labelIds.png`; every split folder present is a split.
* gta5: `images/{id:05d}.png`, `labels/{id:05d}.png` (Cityscapes label ids); splits train/val/test (and
  trainval, all) from the dataset's own `split.mat` (fields trainIds, valIds, testIds; 1-based ids) at the
  root or in `read_mapping/`. Without split.mat every split is every image (a warning says so, once per root).
* synthia (SYNTHIA-RAND-CITYSCAPES): `RGB/{id:07d}.png`, `GT/LABELS/{id:07d}.png` (16-bit RGB, class id in
  the first channel); train = ids 0-8999, val = ids 9000-9399, all = every image; files not named by an
  integer are skipped. An explicit id list replaces the split's.
* crosscity (NTHU): `{City}/Images/Train/*` (train, no labels: its items carry all-ignore labels),
  `{City}/Images/Test/*` (test; `val` is the same) with `{City}/Labels/Test/{stem}_eval.png`, read as
  Cityscapes label ids as the reference does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import scipy.io

from msl.data.files import DatasetError, read_label_ids_8bit, read_label_ids_first_channel
from msl.labels import DATASET_NAMES, IGNORE_INDEX, SUBSET_TRAIN_IDS, label_id_to_class_lut


@dataclass(frozen=True)
class Sample:
    """One item on disk; `label` is None where the split has no labels or they were not asked for."""

    name: str
    image: Path
    label: Path | None


@dataclass(frozen=True)
class LabelEncoding:
    """How label files store classes: a reader of raw ids and, per protocol, a table raw id -> class index.

    Tables cover every value of the raw dtype (uint8 or uint16) so indexing them never goes out of range;
    `known` marks the ids the dataset defines, any other value in a file is an error (or ignored when not
    strict).
    """

    read_ids: Callable[[Path], np.ndarray]
    known: np.ndarray  # (K,) bool
    id_to_class: Callable[[int], np.ndarray]  # num_classes -> (K,) uint8

    def read_classes(self, path: Path, num_classes: int, strict: bool = True) -> np.ndarray:
        """Class indices `(H, W)` uint8 (0..C-1, IGNORE_INDEX) of the label file at `path`."""
        ids = self.read_ids(path)  # (H, W)
        if strict and not self.known[ids].all():
            unknown = sorted(set(np.unique(ids).tolist()) - set(np.flatnonzero(self.known).tolist()))
            raise DatasetError(f"label ids {unknown} are not defined for this dataset: {path}")
        return self.id_to_class(num_classes)[ids]


# Cityscapes label ids 0..33; cityscapesscripts never draws license plates (id -1), but 255 is what -1 becomes
# when stored in a uint8 file, so it is accepted as "ignore" too.
_CITYSCAPES_KNOWN = np.zeros(256, dtype=bool)
_CITYSCAPES_KNOWN[list(range(34)) + [255]] = True

CITYSCAPES_IDS = LabelEncoding(read_label_ids_8bit, _CITYSCAPES_KNOWN, cache(label_id_to_class_lut))

# SYNTHIA-RAND-CITYSCAPES class id -> Cityscapes 19-class train id (docs/datasets.md §5.4); the other ids
# 0..22 (void, parking-slot, road-work, lanemarking) are ignored.
SYNTHIA_TO_TRAIN_ID = {
    1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11,
    11: 18, 12: 17, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3,
}  # fmt: skip
SYNTHIA_NUM_IDS = 23
_SYNTHIA_KNOWN = np.zeros(2**16, dtype=bool)
_SYNTHIA_KNOWN[:SYNTHIA_NUM_IDS] = True


@cache
def synthia_id_to_class_lut(num_classes: int = 19) -> np.ndarray:
    """Lookup table `(65536,)` uint8 from SYNTHIA class ids to a protocol's class index, else IGNORE_INDEX."""
    class_of_train_id = {train_id: index for index, train_id in enumerate(SUBSET_TRAIN_IDS[num_classes])}
    lut = np.full(2**16, IGNORE_INDEX, dtype=np.uint8)
    for synthia_id, train_id in SYNTHIA_TO_TRAIN_ID.items():
        lut[synthia_id] = class_of_train_id.get(train_id, IGNORE_INDEX)
    return lut


SYNTHIA_IDS = LabelEncoding(read_label_ids_first_channel, _SYNTHIA_KNOWN, synthia_id_to_class_lut)


def _subdirs(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else []


def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise DatasetError(f"missing {what} folder: {folder}")


def _unknown_split(split: str, root: Path, splits: Sequence[str]) -> DatasetError:
    return DatasetError(f"split {split!r} not found under {root}; available: {', '.join(splits) or 'none'}")


def _no_ids(dataset: str, ids: Sequence[int] | None) -> None:
    if ids is not None:
        raise ValueError(
            f"{dataset} items are named by files, not numbered ids; `ids` applies to gta5 and synthia"
        )


# --- Cityscapes ---


def _cityscapes_splits(root: Path, city: str | None) -> list[str]:
    _require_dir(root / "leftImg8bit", "Cityscapes image")
    return _subdirs(root / "leftImg8bit")


def _cityscapes_samples(root: Path, split: str, city: str | None, ids: Sequence[int] | None) -> list[Sample]:
    _no_ids("cityscapes", ids)
    splits = _cityscapes_splits(root, city)
    if split not in splits:
        raise _unknown_split(split, root / "leftImg8bit", splits)
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    cities = _subdirs(image_dir)
    if city is not None:
        if city not in cities:
            raise DatasetError(f"city {city!r} not found in {image_dir}; available: {', '.join(cities)}")
        cities = [city]
    suffix = "_leftImg8bit.png"
    samples = []
    for name in cities:
        for image in sorted((image_dir / name).glob(f"*{suffix}")):
            stem = image.name[: -len(suffix)]
            samples.append(Sample(stem, image, label_dir / name / f"{stem}_gtFine_labelIds.png"))
    return samples


# --- GTA5 ---

GTA5_SPLITS = ("train", "val", "test", "trainval", "all")
_GTA5_SPLIT_FILES = ("split.mat", "read_mapping/split.mat")
_warned_missing_split_mat: set[Path] = set()


def _gta5_split_ids(root: Path) -> dict[str, list[int]] | None:
    """Ids (1-based) of each GTA5 split from the dataset's split.mat, or None when it has none."""
    path = next((root / name for name in _GTA5_SPLIT_FILES if (root / name).is_file()), None)
    if path is None:
        return None
    try:
        fields = scipy.io.loadmat(path)
        train, val, test = (
            sorted(int(i) for i in np.ravel(fields[key])) for key in ("trainIds", "valIds", "testIds")
        )
    except (OSError, ValueError, KeyError) as error:
        raise DatasetError(f"cannot read trainIds/valIds/testIds ({error!r}): {path}") from error
    return {
        "train": train,
        "val": val,
        "test": test,
        "trainval": sorted(train + val),
        "all": sorted(train + val + test),
    }


def _gta5_splits(root: Path, city: str | None) -> list[str]:
    """The splits split.mat defines: one whose id list is empty (the synthetic benchmark's testIds) is absent,
    not empty."""
    _require_dir(root / "images", "GTA5 image")
    split_ids = _gta5_split_ids(root)
    return ["all"] if split_ids is None else [s for s in ("train", "val", "test") if split_ids[s]]


def _gta5_samples(root: Path, split: str, city: str | None, ids: Sequence[int] | None) -> list[Sample]:
    _require_dir(root / "images", "GTA5 image")
    if split not in GTA5_SPLITS:
        raise _unknown_split(split, root, GTA5_SPLITS)
    if ids is None:
        split_ids = _gta5_split_ids(root)
        if split_ids is not None:
            ids = split_ids[split]
        elif split != "all" and root not in _warned_missing_split_mat:
            _warned_missing_split_mat.add(root)
            warnings.warn(f"{root} has no split.mat: every GTA5 split is every image", stacklevel=3)
    names = (
        [f"{i:05d}" for i in ids]
        if ids is not None
        else [p.stem for p in sorted((root / "images").glob("*.png"))]
    )
    return [Sample(name, root / "images" / f"{name}.png", root / "labels" / f"{name}.png") for name in names]


# --- SYNTHIA ---

SYNTHIA_SPLIT_IDS = {"train": range(0, 9000), "val": range(9000, 9400)}


def _synthia_splits(root: Path, city: str | None) -> list[str]:
    _require_dir(root / "RGB", "SYNTHIA image")
    return list(SYNTHIA_SPLIT_IDS)


def _synthia_samples(root: Path, split: str, city: str | None, ids: Sequence[int] | None) -> list[Sample]:
    _require_dir(root / "RGB", "SYNTHIA image")
    if ids is None:
        present = sorted(int(p.stem) for p in (root / "RGB").glob("*.png") if p.stem.isdigit())
        if split == "all":
            ids = present
        elif split in SYNTHIA_SPLIT_IDS:
            ids = [i for i in present if i in SYNTHIA_SPLIT_IDS[split]]
        else:
            raise _unknown_split(split, root, [*SYNTHIA_SPLIT_IDS, "all"])
    return [
        Sample(f"{i:07d}", root / "RGB" / f"{i:07d}.png", root / "GT" / "LABELS" / f"{i:07d}.png")
        for i in ids
    ]


# --- NTHU CrossCity ---


def crosscity_cities(root: Path) -> list[str]:
    """The NTHU CrossCity cities present under `root` (folders with an Images folder)."""
    _require_dir(root, "NTHU CrossCity")
    return [name for name in _subdirs(root) if (root / name / "Images").is_dir()]


def _crosscity_city_dir(root: Path, city: str | None) -> Path:
    cities = crosscity_cities(root)
    if city not in cities:
        raise DatasetError(
            f"NTHU CrossCity needs city= one of {', '.join(cities) or 'none'} (in {root}), got {city!r}"
        )
    return root / city


def _crosscity_splits(root: Path, city: str | None) -> list[str]:
    city_dir = _crosscity_city_dir(root, city)
    return [
        split
        for split, folder in (("train", "Train"), ("test", "Test"))
        if (city_dir / "Images" / folder).is_dir()
    ]


def _crosscity_samples(root: Path, split: str, city: str | None, ids: Sequence[int] | None) -> list[Sample]:
    _no_ids("crosscity", ids)
    city_dir = _crosscity_city_dir(root, city)
    if split not in ("train", "val", "test"):
        raise _unknown_split(split, city_dir, ["train", "val", "test"])
    labelled = split != "train"
    image_dir = city_dir / "Images" / ("Test" if labelled else "Train")
    _require_dir(image_dir, "NTHU CrossCity image")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    label_dir = city_dir / "Labels" / "Test"
    return [Sample(p.stem, p, label_dir / f"{p.stem}_eval.png" if labelled else None) for p in images]


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset's layout (splits present, samples of a split) and its label encoding."""

    splits: Callable[[Path, str | None], list[str]]
    samples: Callable[[Path, str, str | None, Sequence[int] | None], list[Sample]]
    encoding: LabelEncoding


FORMATS = {
    "cityscapes": DatasetFormat(_cityscapes_splits, _cityscapes_samples, CITYSCAPES_IDS),
    "gta5": DatasetFormat(_gta5_splits, _gta5_samples, CITYSCAPES_IDS),
    "synthia": DatasetFormat(_synthia_splits, _synthia_samples, SYNTHIA_IDS),
    "crosscity": DatasetFormat(_crosscity_splits, _crosscity_samples, CITYSCAPES_IDS),
}


def get_format(name: str) -> DatasetFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return FORMATS[name]
