"""Dataset loaders on small trees in each real on-disk format, written here (docs/datasets.md §5).

Expectations come from the tables of docs/datasets.md §5 written out again here (not from msl.labels), from
PIL's resizes, and from a PNG encoder written here (so the SYNTHIA channel order is the PNG standard's, not
OpenCV's).
"""

from __future__ import annotations

import argparse
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image, ImageFilter

from msl.data import (
    DatasetError,
    build_dataset,
    build_loader,
    denormalize,
    main_verify,
    verify_dataset,
)
from msl.data.files import read_rgb

H, W = 32, 64

# docs/datasets.md §5.2: Cityscapes label id -> 19-class train id, and the train ids kept for 16 and 13.
CITYSCAPES_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
# docs/datasets.md §5.4: SYNTHIA class id -> 19-class train id.
SYNTHIA_TO_TRAIN_ID = {
    1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11,
    11: 18, 12: 17, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3,
}  # fmt: skip
KEPT_TRAIN_IDS = {
    19: list(range(19)),
    16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18],
    13: [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18],
}
CITYSCAPES_IDS = [*range(34), 255]  # every id a Cityscapes labelIds file may hold
BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)


def expected_classes(ids: np.ndarray, to_train_id: dict[int, int], num_classes: int) -> np.ndarray:
    """Naive per-pixel mapping raw id -> train id -> class index of the protocol, 255 for everything else."""
    kept = KEPT_TRAIN_IDS[num_classes]
    out = np.full(ids.shape, 255, dtype=np.int64)
    for (r, c), raw in np.ndenumerate(ids):
        train_id = to_train_id.get(int(raw))
        if train_id in kept:
            out[r, c] = kept.index(train_id)
    return out


def tiled(values: list[int], offset: int = 0) -> np.ndarray:
    """`(H, W)` array cycling through `values`: every value occurs and the layout is not mirror-symmetric."""
    return np.array(values)[(np.arange(H * W) + offset) % len(values)].reshape(H, W)


def scene_image(seed: int) -> np.ndarray:
    """RGB `(H, W, 3)` uint8 with values 1..255: a horizontal ramp (so flips show), noise (so blur shows)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 220, W)[None, :, None]
    return np.clip(ramp + rng.normal(0, 20, (H, W, 3)), 1, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode).save(path)


def write_png_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG by the PNG standard: channels stored R, G, B, samples big-endian."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[r].astype(">u2").tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def make_cityscapes(root: Path, per_city: int = 2) -> None:
    for split, cities in (("train", ("aachen", "bonn")), ("val", ("lindau",))):
        for city in cities:
            for k in range(per_city):
                stem = f"{city}_{k:06d}_000019"
                save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", scene_image(k))
                save(
                    root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                    tiled(CITYSCAPES_IDS, k),
                    "L",
                )


@pytest.fixture
def cityscapes(tmp_path: Path) -> Path:
    make_cityscapes(tmp_path / "cityscapes")
    return tmp_path / "cityscapes"


@pytest.mark.parametrize("num_classes", [19, 16, 13])
def test_cityscapes_items_map_label_ids_per_protocol(cityscapes: Path, num_classes: int) -> None:
    dataset = build_dataset("cityscapes", cityscapes, "train", num_classes=num_classes)
    assert len(dataset) == 4
    image, label, name = dataset[1]
    assert name == "aachen_000001_000019"
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert label.dtype == torch.int64 and label.shape == (H, W)
    expected = expected_classes(tiled(CITYSCAPES_IDS, 1), CITYSCAPES_TO_TRAIN_ID, num_classes)
    assert np.array_equal(label.numpy(), expected)
    assert set(np.unique(expected)) == {*range(num_classes), 255}


def test_cityscapes_city_filter_and_unknown_split(cityscapes: Path) -> None:
    assert [n for _, _, n in build_dataset("cityscapes", cityscapes, "train", city="bonn")] == [
        "bonn_000000_000019",
        "bonn_000001_000019",
    ]
    with pytest.raises(DatasetError, match="'test' not found.*train, val"):
        build_dataset("cityscapes", cityscapes, "test")


def test_synthia_reads_class_ids_from_the_first_channel_of_16_bit_labels(tmp_path: Path) -> None:
    synthia_ids = tiled(list(range(23)))
    # Distinct 16-bit values in every channel: reading G or B, or truncating to 8 bits, gives other ids.
    label = np.stack([synthia_ids, 1000 + synthia_ids, np.full((H, W), 40000)], axis=-1)
    for i in (8999, 9000):
        save(tmp_path / "RGB" / f"{i:07d}.png", scene_image(i))
        write_png_rgb16(tmp_path / "GT" / "LABELS" / f"{i:07d}.png", label)
    assert [n for _, _, n in build_dataset("synthia", tmp_path, "train")] == ["0008999"]
    assert [n for _, _, n in build_dataset("synthia", tmp_path, "val")] == ["0009000"]
    for num_classes in (19, 16):
        _, classes, _ = build_dataset("synthia", tmp_path, "all", ids=[9000], num_classes=num_classes)[0]
        assert np.array_equal(
            classes.numpy(), expected_classes(synthia_ids, SYNTHIA_TO_TRAIN_ID, num_classes)
        )

    label[3, 5, 0] = 300  # not a SYNTHIA id
    write_png_rgb16(tmp_path / "GT" / "LABELS" / "0009000.png", label)
    with pytest.raises(DatasetError, match=r"\[300\].*0009000\.png"):
        build_dataset("synthia", tmp_path, "val")[0]


def make_gta5(root: Path, count: int = 6) -> None:
    (root / "labels").mkdir(parents=True)
    for i in range(1, count + 1):
        save(root / "images" / f"{i:05d}.png", scene_image(i))
        # GTA5 labels are palette PNGs: the indices are the label ids, the colours say nothing.
        palette_label = Image.fromarray(tiled(CITYSCAPES_IDS, i).astype(np.uint8), "P")
        palette_label.putpalette(np.random.default_rng(i).integers(0, 256, 768).tolist())
        palette_label.save(root / "labels" / f"{i:05d}.png")


def test_gta5_splits_from_split_mat_and_palette_labels(tmp_path: Path) -> None:
    make_gta5(tmp_path)
    columns = {"trainIds": [[1], [2], [3]], "valIds": [[4], [5]], "testIds": [[6]]}
    scipy.io.savemat(tmp_path / "split.mat", {k: np.array(v, dtype=np.float64) for k, v in columns.items()})
    names = {
        s: [n for _, _, n in build_dataset("gta5", tmp_path, s)] for s in ("train", "val", "test", "trainval")
    }
    assert names == {
        "train": ["00001", "00002", "00003"],
        "val": ["00004", "00005"],
        "test": ["00006"],
        "trainval": ["00001", "00002", "00003", "00004", "00005"],
    }
    _, label, _ = build_dataset("gta5", tmp_path, "val")[0]
    assert np.array_equal(
        label.numpy(), expected_classes(tiled(CITYSCAPES_IDS, 4), CITYSCAPES_TO_TRAIN_ID, 19)
    )


def test_gta5_without_split_mat_uses_every_image_and_warns(tmp_path: Path) -> None:
    make_gta5(tmp_path, count=3)
    with pytest.warns(UserWarning, match="no split.mat"):
        assert len(build_dataset("gta5", tmp_path, "train")) == 3
    assert len(build_dataset("gta5", tmp_path, "val")) == 3  # warned once per root


def test_crosscity_train_is_unlabelled_and_test_uses_13_classes(tmp_path: Path) -> None:
    city = tmp_path / "Rome"
    for k in range(2):
        save(city / "Images" / "Train" / f"pano_{k:05d}_0_0.jpg", scene_image(k))
        save(city / "Images" / "Test" / f"pano_{k:05d}_0_180.png", scene_image(k))
        save(city / "Labels" / "Test" / f"pano_{k:05d}_0_180_eval.png", tiled(CITYSCAPES_IDS, k), "L")
    train = build_dataset("crosscity", tmp_path, "train", city="Rome", num_classes=13)
    assert len(train) == 2 and all(torch.all(label == 255) for _, label, _ in train)
    image, label, name = build_dataset("crosscity", tmp_path, "val", city="Rome", num_classes=13)[1]
    assert name == "pano_00001_0_180" and image.shape == (3, H, W)
    assert np.array_equal(
        label.numpy(), expected_classes(tiled(CITYSCAPES_IDS, 1), CITYSCAPES_TO_TRAIN_ID, 13)
    )
    with pytest.raises(DatasetError, match="city= one of Rome"):
        build_dataset("crosscity", tmp_path, "val", city="Tokyo")

    (city / "Images" / "Train" / "pano_00001_0_180.png").write_bytes(
        (city / "Images" / "Test" / "pano_00001_0_180.png").read_bytes()
    )
    report = verify_dataset("crosscity", tmp_path, num_classes=13)
    assert report.ok and [(s.split, s.images, s.labels, s.labelled) for s in report.splits] == [
        ("train", 3, 0, False),
        ("test", 2, 2, True),
    ]
    assert report.notes == ["Rome: 1 of 2 test images share their name with a train image (1 byte-identical)"]


def test_normalisations_match_the_inits(cityscapes: Path) -> None:
    rgb = scene_image(0).astype(np.float64)  # (H, W, 3), the first train image
    bgr_mean = build_dataset("cityscapes", cityscapes, "train")[0][0]
    expected_bgr = rgb[..., ::-1].transpose(2, 0, 1) - np.array(BGR_MEAN)[:, None, None]
    assert np.allclose(bgr_mean.numpy(), expected_bgr, atol=1e-4)
    imagenet = build_dataset("cityscapes", cityscapes, "train", normalization="imagenet")[0][0]
    expected_imagenet = (rgb / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert np.allclose(imagenet.numpy(), expected_imagenet.transpose(2, 0, 1), atol=1e-5)
    for image, normalization in ((bgr_mean, "bgr_mean"), (imagenet, "imagenet")):
        assert np.array_equal(denormalize(image, normalization).permute(1, 2, 0).numpy(), scene_image(0))


def test_eval_resizes_image_to_size_and_keeps_full_resolution_labels_unless_asked(cityscapes: Path) -> None:
    size = (48, 24)  # (W, H)
    image, full_label, _ = build_dataset("cityscapes", cityscapes, "train", size=size)[0]
    assert image.shape == (3, 24, 48) and full_label.shape == (H, W)
    _, reduced_label, _ = build_dataset("cityscapes", cityscapes, "train", size=size, full_res_label=False)[0]
    # The reference protocol: label nearest-resized (the source pixel under each output pixel's centre, as
    # PIL's NEAREST, whose float rounding differs at exact ties), image bicubic.
    classes = expected_classes(tiled(CITYSCAPES_IDS), CITYSCAPES_TO_TRAIN_ID, 19)
    rows = (2 * np.arange(24) + 1) * H // (2 * 24)
    cols = (2 * np.arange(48) + 1) * W // (2 * 48)
    assert np.array_equal(reduced_label.numpy(), classes[rows][:, cols])
    pil_bicubic = np.array(Image.fromarray(scene_image(0)).resize(size, Image.BICUBIC)).astype(np.int64)
    ours = denormalize(image, "bgr_mean").permute(1, 2, 0).numpy().astype(np.int64)
    assert np.abs(ours - pil_bicubic).max() <= 2


def test_flip_moves_image_and_label_together(cityscapes: Path) -> None:
    reference_image, reference_label, _ = build_dataset("cityscapes", cityscapes, "train")[0]
    augmented = build_dataset("cityscapes", cityscapes, "train", train=True, blur=False)
    flipped = []
    for seed in range(16):
        image, label, _ = augmented[(0, seed)]
        is_flipped = not torch.equal(image, reference_image)
        expected_image = reference_image.flip(-1) if is_flipped else reference_image
        expected_label = reference_label.flip(-1) if is_flipped else reference_label
        assert torch.equal(image, expected_image) and torch.equal(label, expected_label)
        assert torch.equal(augmented[(0, seed)][0], image)  # an item's seed fixes its augmentation
        flipped.append(is_flipped)
    assert 0 < sum(flipped) < len(flipped)


def test_blur_changes_the_image_only_like_pil_gaussian_blur(cityscapes: Path) -> None:
    reference_image, reference_label, _ = build_dataset("cityscapes", cityscapes, "train")[0]
    augmented = build_dataset("cityscapes", cityscapes, "train", train=True, flip=False)
    pil_blurred = [
        np.array(Image.fromarray(scene_image(0)).filter(ImageFilter.GaussianBlur(radius))).astype(np.float64)
        for radius in np.linspace(0.05, 1.0, 20).tolist()
    ]
    blurred = 0
    for seed in range(16):
        image, label, _ = augmented[(0, seed)]
        assert torch.equal(label, reference_label)
        if not torch.equal(image, reference_image):
            blurred += 1
            # A PIL GaussianBlur radius in (0, 1] gives nearly these pixels (the unblurred image is ~10 off).
            pixels = denormalize(image, "bgr_mean").permute(1, 2, 0).numpy()
            assert min(np.abs(pixels - pil).mean() for pil in pil_blurred) < 1.5
    assert 0 < blurred < 16


def test_random_scale_and_crop_pad_the_label_with_ignore(tmp_path: Path) -> None:
    root = tmp_path / "gta5"
    save(root / "images" / "00001.png", scene_image(1))
    save(root / "labels" / "00001.png", np.full((H, W), 7), "L")  # all road
    with pytest.warns(UserWarning):
        dataset = build_dataset(
            "gta5",
            root,
            "train",
            size=(W, H),
            train=True,
            random_scale=(0.5, 0.5),
            random_crop=(48, 24),
            blur=False,
        )
    image, label, _ = dataset[(0, 0)]
    assert image.shape == (3, 24, 48) and label.shape == (24, 48)
    scaled_pixels = (W // 2) * (H // 2)
    assert int((label == 0).sum()) == scaled_pixels and int((label == 255).sum()) == 24 * 48 - scaled_pixels
    padding = (image == -torch.tensor(BGR_MEAN, dtype=torch.float32).view(3, 1, 1)).all(dim=0)  # (H, W)
    assert torch.equal(padding, label == 255)
    with pytest.raises(ValueError, match="random_crop"):
        build_dataset("gta5", root, "train", size=(W, H), train=True, random_scale=(0.5, 2.0))


def batches(loader, count: int) -> list:
    stream = iter(loader)
    result = []
    while len(result) < count:
        result += list(stream)
        stream = iter(loader)
    return result[:count]


def same_batches(a: list, b: list) -> bool:
    return all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2]
        for x, y in zip(a, b, strict=True)
    )


def test_loader_order_and_augmentation_follow_the_seed_alone(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, per_city=4)  # 8 train images
    dataset = build_dataset("cityscapes", tmp_path, "train", train=True)

    def run(seed: int, num_workers: int) -> list:
        loader = build_loader(dataset, 2, shuffle=True, seed=seed, num_workers=num_workers, drop_last=True)
        return batches(loader, 8)  # two epochs

    first = run(seed=3, num_workers=0)
    assert same_batches(first, run(seed=3, num_workers=0))
    assert same_batches(first, run(seed=3, num_workers=2))
    assert not same_batches(first, run(seed=4, num_workers=0))
    epochs = [[name for batch in first[e * 4 : (e + 1) * 4] for name in batch[2]] for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]  # reshuffled each epoch
    # The same image appears with and without a flip across epochs and seeds: augmentation is live.
    by_name = {}
    for batch in first + run(seed=5, num_workers=0):
        for image, name in zip(batch[0], batch[2], strict=True):
            by_name.setdefault(name, []).append(image)
    assert any(not torch.equal(images[0], other) for images in by_name.values() for other in images[1:])


def test_target_train_without_labels_never_opens_label_files(cityscapes: Path) -> None:
    for label_file in (cityscapes / "gtFine").rglob("*.png"):
        label_file.write_bytes(b"not a png")
    dataset = build_dataset("cityscapes", cityscapes, "train", train=True, labels=False, size=(48, 24))
    for image, label, _ in dataset:
        assert image.shape == (3, 24, 48) and torch.all(label == 255) and label.shape == (24, 48)


def test_bad_files_raise_dataset_errors_naming_the_file(cityscapes: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="root not found.*nowhere"):
        build_dataset("cityscapes", tmp_path / "nowhere", "train")
    images = sorted((cityscapes / "leftImg8bit" / "train").rglob("*.png"))
    labels = sorted((cityscapes / "gtFine" / "train").rglob("*.png"))

    truncate(images[0])
    with pytest.raises(DatasetError, match=f"truncated.*{re.escape(str(images[0]))}"):
        build_dataset("cityscapes", cityscapes, "train")[0]
    truncate(labels[1])
    with pytest.raises(DatasetError, match=f"label.*{re.escape(str(labels[1]))}"):
        build_dataset("cityscapes", cityscapes, "train")[1]
    save(labels[2], np.full((H, W), 40), "L")  # 40 is no Cityscapes label id
    with pytest.raises(DatasetError, match=rf"\[40\].*{re.escape(str(labels[2]))}"):
        build_dataset("cityscapes", cityscapes, "train")[2]
    _, lenient, _ = build_dataset("cityscapes", cityscapes, "train", strict_labels=False)[2]
    assert torch.all(lenient == 255)
    save(labels[3], np.zeros((H, W, 3)))  # a colour image where ids belong
    with pytest.raises(DatasetError, match=f"mode RGB.*{re.escape(str(labels[3]))}"):
        build_dataset("cityscapes", cityscapes, "train")[3]
    save(labels[3], np.zeros((H // 2, W)), "L")
    with pytest.raises(DatasetError, match=f"64x16 but its image is 64x32.*{re.escape(str(labels[3]))}"):
        build_dataset("cityscapes", cityscapes, "train")[3]
    labels[3].unlink()
    with pytest.raises(DatasetError, match=f"missing file: {re.escape(str(labels[3]))}"):
        build_dataset("cityscapes", cityscapes, "train")


def test_truncated_16_bit_label_raises(tmp_path: Path) -> None:
    save(tmp_path / "RGB" / "0000000.png", scene_image(0))
    label_path = tmp_path / "GT" / "LABELS" / "0000000.png"
    write_png_rgb16(label_path, np.random.default_rng(0).integers(0, 23, (H, W, 3)))
    truncate(label_path)
    with pytest.raises(DatasetError, match=f"truncated.*{re.escape(str(label_path))}"):
        build_dataset("synthia", tmp_path, "train")[0]


def verify_args(root: Path, **overrides) -> argparse.Namespace:
    fields = {"dataset": "cityscapes", "root": str(root), "split": None, "num_classes": 19, "city": None}
    return argparse.Namespace(**{**fields, **overrides})


def test_main_verify_reports_counts_histogram_and_problems(cityscapes: Path, capsys) -> None:
    assert main_verify(verify_args(cityscapes)) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and "result: OK" in out
    # 4 train images, 4 labels, 0 problems; every class shares the tiled label equally.
    assert any(line.split() == ["train", "4", "4", "0"] for line in out.splitlines())
    train_road_pixels = sum(int((tiled(CITYSCAPES_IDS, k) == 7).sum()) for k in (0, 1, 0, 1))  # 2 cities
    road = next(line.split() for line in out.splitlines() if line.split()[:1] == ["road"])
    assert road[1] == f"{100 * train_road_pixels / (4 * H * W):.2f}%"

    truncated = sorted((cityscapes / "leftImg8bit" / "val").rglob("*.png"))[0]
    truncate(truncated)
    missing = sorted((cityscapes / "gtFine" / "train").rglob("*.png"))[0]
    missing.unlink()
    bad_ids = sorted((cityscapes / "gtFine" / "train").rglob("*.png"))[-1]
    save(bad_ids, np.full((H, W), 99), "L")
    assert main_verify(verify_args(cityscapes)) == 1
    out = capsys.readouterr().out
    assert f"missing label: {missing}" in out and str(truncated) in out and "[99] are not defined" in out
    assert str(bad_ids) in out and "result: 3 problem(s)" in out
    assert main_verify(verify_args(cityscapes / "nowhere")) == 1
    assert "root not found" in capsys.readouterr().out


def test_a_truncated_jpeg_raises_in_the_loader_and_in_verify(tmp_path: Path, capsys) -> None:
    city = tmp_path / "Rome"
    for k in range(2):
        save(city / "Images" / "Train" / f"pano_{k:05d}_0_0.jpg", scene_image(k))
    whole, cut = sorted((city / "Images" / "Train").glob("*.jpg"))
    whole.write_bytes(whole.read_bytes() + bytes(64))  # zero padding after the end marker is allowed
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.6)])
    assert read_rgb(whole).shape == (H, W, 3)
    with pytest.raises(DatasetError, match=f"truncated JPEG.*{re.escape(str(cut))}"):
        build_dataset("crosscity", tmp_path, "train", city="Rome", num_classes=13)[1]
    assert (
        main_verify(verify_args(tmp_path, dataset="crosscity", city="Rome", split="train", num_classes=13))
        == 1
    )
    assert f"truncated JPEG: no end-of-image marker): {cut}" in capsys.readouterr().out


def test_verify_reports_an_empty_split(cityscapes: Path, capsys) -> None:
    for image in (cityscapes / "leftImg8bit" / "val").rglob("*.png"):
        image.unlink()
    assert main_verify(verify_args(cityscapes)) == 1
    out = capsys.readouterr().out
    assert "problem: [val] no images in split 'val'" in out and "result: 1 problem(s)" in out


def test_decoded_cache_gives_the_same_items_rereads_a_rewritten_file_and_keeps_to_its_budget(
    cityscapes: Path, monkeypatch
) -> None:
    from msl.data import dataset as dataset_module

    monkeypatch.setattr(dataset_module, "_DECODED", dataset_module.DecodedCache())
    reads = []
    real_read = dataset_module.read_rgb
    monkeypatch.setattr(dataset_module, "read_rgb", lambda path: reads.append(path) or real_read(path))
    plain = build_dataset("cityscapes", cityscapes, "train", train=True)
    cached = build_dataset("cityscapes", cityscapes, "train", train=True, cache_mb=1)
    for epoch in range(2):
        for index in range(len(plain)):
            for got, expected in zip(cached[(index, epoch)], plain[(index, epoch)], strict=True):
                assert got == expected if isinstance(got, str) else torch.equal(got, expected)
    assert len(reads) == 2 * len(plain) + len(plain)  # plain: every access; cached: once per file
    image = cached.samples[0].image
    save(image, scene_image(7))
    assert torch.equal(cached[(0, 0)][0], plain[(0, 0)][0])
    cache = dataset_module._DECODED
    assert cache.used <= cache.budget == 2**20
    entry = cache.used // len(cache.entries)  # every file of this set has one size
    cache.budget, cache.used, cache.entries = 2 * entry, 0, type(cache.entries)()
    for index in range(len(plain)):
        cached[(index, 0)]
    assert len(cache.entries) == 2 and cache.used == 2 * entry  # the least recently used went
    assert [files[0][0] for files, *_ in cache.entries] == [str(s.image) for s in cached.samples[-2:]]
    assert dataset_module.decoded_cache(0) is None


def test_verify_warns_when_two_gta5_splits_share_ids(tmp_path: Path, capsys) -> None:
    make_gta5(tmp_path)
    columns = {"trainIds": [[1], [2], [3]], "valIds": [[4], [5]], "testIds": [[5], [6]]}
    scipy.io.savemat(tmp_path / "split.mat", {k: np.array(v, dtype=np.float64) for k, v in columns.items()})
    assert main_verify(verify_args(tmp_path, dataset="gta5")) == 0  # loadable: a warning, not a problem
    out = capsys.readouterr().out
    assert "warning: splits 'val' and 'test' share 1 of their 2 and 2 image ids (e.g. 00005)" in out
    assert out.count("warning:") == 1 and "result: OK" in out


def test_verify_passes_what_msl_data_synth_writes(tmp_path: Path, capsys) -> None:
    """The synthetic benchmark's split.mat has an empty testIds: GTA5's test split is absent there, not an
    empty split (a problem), and `msl data verify` agrees with `msl data synth` on both domains."""
    from msl.data.synth import generate

    generate(tmp_path, scale="small", progress=False)
    assert main_verify(verify_args(tmp_path / "source", dataset="gta5")) == 0
    out = capsys.readouterr().out
    assert [
        line.split()[0] for line in out.splitlines() if line.split()[1:2] and line.split()[1].isdigit()
    ] == [
        "train",
        "val",
    ]
    assert "result: OK" in out and "warning" not in out
    assert main_verify(verify_args(tmp_path / "target")) == 0
    assert "result: OK" in capsys.readouterr().out
