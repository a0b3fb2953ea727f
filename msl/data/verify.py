"""`msl data verify`: check a dataset tree before spending GPU hours on it.

Every image and label is decoded with the loaders' own readers, so whatever passes here loads in training:
images have labels, files decode (truncation included), sizes agree, label files hold only ids the dataset
defines. Each problem names its file; splits that share image ids get a warning (a score on a test split
that is also the validation split is not a test score). A split the dataset does not define (GTA5's split.mat
with an empty `testIds`) is absent, not empty. A class histogram (pixels per class of the chosen protocol)
shows whether the labels mean what they should.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from msl.data.dataset import check_sizes_agree
from msl.data.files import DatasetError, read_rgb
from msl.data.formats import LabelEncoding, Sample, crosscity_cities, get_format
from msl.labels import IGNORE_INDEX, class_names

_MAX_PROBLEMS_SHOWN = 50


@dataclass
class SplitReport:
    """What one split holds: counts, problems (each naming its file) and the class histogram."""

    split: str
    images: int
    labels: int  # label files present
    labelled: bool  # whether the split has labels at all (NTHU CrossCity train has none)
    problems: list[str]
    histogram: np.ndarray  # (C + 1,) int64 pixels per class index, last entry = ignore


@dataclass
class VerifyReport:
    """The verification of one dataset root; `ok` when no problem was found."""

    dataset: str
    root: Path
    num_classes: int
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # ones about the tree rather than a split's files
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # suspicious but loadable (splits sharing images)

    @property
    def num_problems(self) -> int:
        return len(self.problems) + sum(len(s.problems) for s in self.splits)

    @property
    def ok(self) -> bool:
        return self.num_problems == 0

    def format(self) -> str:
        """The human-readable report: counts, problems, histogram with class names, verdict."""
        lines = [f"{self.dataset} at {self.root} ({self.num_classes} classes)"]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"warning: {warning}" for warning in self.warnings]
        if self.splits:
            lines.append(f"{'split':<16}{'images':>8}{'labels':>8}{'problems':>10}")
            for s in self.splits:
                labels = str(s.labels) if s.labelled else "none"
                lines.append(f"{s.split:<16}{s.images:>8}{labels:>8}{len(s.problems):>10}")
        for where, problems in [("", self.problems)] + [(f"[{s.split}] ", s.problems) for s in self.splits]:
            lines += [f"problem: {where}{problem}" for problem in problems[:_MAX_PROBLEMS_SHOWN]]
            if len(problems) > _MAX_PROBLEMS_SHOWN:
                lines.append(f"problem: {where}... and {len(problems) - _MAX_PROBLEMS_SHOWN} more")
        labelled = [s for s in self.splits if s.labelled and s.histogram.sum() > 0]
        if labelled:
            lines.append("class histogram (% of label pixels):")
            lines.append(f"  {'class':<16}" + "".join(f"{s.split:>12}" for s in labelled))
            shares = [100 * s.histogram / s.histogram.sum() for s in labelled]
            for index, name in enumerate([*class_names(self.num_classes), f"ignore ({IGNORE_INDEX})"]):
                lines.append(f"  {name:<16}" + "".join(f"{share[index]:>11.2f}%" for share in shares))
        verdict = "OK" if self.ok else f"{self.num_problems} problem(s)"
        lines.append(f"result: {verdict}")
        return "\n".join(lines)


def _verify_split(
    split: str, samples: list[Sample], encoding: LabelEncoding, num_classes: int, labelled: bool
) -> SplitReport:
    problems: list[str] = [] if samples else [f"no images in split {split!r}"]
    histogram = np.zeros(num_classes + 1, dtype=np.int64)
    labels = 0
    for sample in tqdm(samples, desc=f"verify {split}", disable=None, leave=False):
        image_hw = None
        try:
            image_hw = read_rgb(sample.image).shape[:2]
        except DatasetError as error:
            problems.append(str(error))
        if sample.label is None:
            continue
        if not sample.label.is_file():
            problems.append(f"missing label: {sample.label} (for {sample.image})")
            continue
        labels += 1
        try:
            classes = encoding.read_classes(sample.label, num_classes)  # (H, W)
            if image_hw is not None:
                check_sizes_agree(sample, image_hw, classes.shape)
        except DatasetError as error:
            problems.append(str(error))
            continue
        counts = np.bincount(classes.ravel(), minlength=256)  # (256,)
        histogram += counts[[*range(num_classes), IGNORE_INDEX]]
    return SplitReport(split, len(samples), labels, labelled, problems, histogram)


def _crosscity_overlap_note(root: Path, city: str) -> str | None:
    """NTHU's train and test lists share names (docs/datasets.md §5.5): say how many, and how many files are
    byte-identical."""
    crosscity = get_format("crosscity")
    train_images = {s.name: s.image for s in crosscity.samples(root, "train", city, None)}
    test = crosscity.samples(root, "test", city, None)
    shared = [s for s in test if s.name in train_images]
    if not shared:
        return None
    identical = sum(s.image.read_bytes() == train_images[s.name].read_bytes() for s in shared)
    return (
        f"{city}: {len(shared)} of {len(test)} test images share their name with a train image"
        f" ({identical} byte-identical)"
    )


def _shared_ids_warnings(names: dict[str, set[str]]) -> list[str]:
    """One warning per pair of splits that hold images of the same names (ids): a model selected on one and
    scored on the other is scored on what it was selected on."""
    warnings = []
    for (first, a), (second, b) in itertools.combinations(names.items(), 2):
        if shared := a & b:
            warnings.append(
                f"splits {first!r} and {second!r} share {len(shared)} of their {len(a)} and {len(b)} image "
                f"ids (e.g. {min(shared)}): a score on one is not independent of the other"
            )
    return warnings


def verify_dataset(
    name: str, root: str | Path, split: str | None = None, num_classes: int = 19, city: str | None = None
) -> VerifyReport:
    """Check every split found (or only `split`) of dataset `name` under `root`; never raises DatasetError.

    NTHU CrossCity without `city` checks every city; its splits are then named `{city}/{split}`.
    """
    dataset_format = get_format(name)
    class_names(num_classes)  # rejects an unknown protocol early
    root = Path(root)
    report = VerifyReport(name, root, num_classes)
    if not root.is_dir():
        report.problems.append(f"dataset root not found: {root}")
        return report
    try:
        cities = crosscity_cities(root) if name == "crosscity" and city is None else [city]
        for current_city in cities:
            splits = [split] if split is not None else dataset_format.splits(root, current_city)
            names = {}
            for current_split in splits:
                samples = dataset_format.samples(root, current_split, current_city, None)
                names[current_split] = {s.name for s in samples}
                labelled = any(s.label is not None for s in samples)
                label = current_split if len(cities) == 1 else f"{current_city}/{current_split}"
                report.splits.append(
                    _verify_split(label, samples, dataset_format.encoding, num_classes, labelled)
                )
            if name == "crosscity" and {"train", "test"} <= set(splits):  # a known quirk: a note of its own
                report.notes.append(
                    _crosscity_overlap_note(root, current_city) or f"{current_city}: no shared names"
                )
            else:
                report.warnings += _shared_ids_warnings(names)
    except DatasetError as error:
        report.problems.append(str(error))
    if name == "gta5" and [s.split for s in report.splits] == ["all"]:
        report.notes.append("no split.mat at the root: the train/val/test splits are unknown, 'all' is shown")
    if report.splits and not any(s.images for s in report.splits):
        report.problems.append(f"no images found under {root}")
    return report


def main_verify(args: argparse.Namespace) -> int:
    """Print the verification of `args.dataset` at `args.root` (split, num_classes, city); 1 if problems."""
    report = verify_dataset(
        args.dataset, args.root, split=args.split, num_classes=args.num_classes, city=args.city
    )
    print(report.format())
    return 0 if report.ok else 1
