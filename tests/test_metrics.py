"""Tests of msl.metrics: hand-computed values, a numpy reference, and cityscapesscripts' official
evaluator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from msl.labels import IGNORE_INDEX, class_to_label_id, label_id_to_class_lut
from msl.metrics import ConfusionMatrix, format_table, predicted_classes

# Classes each protocol drops, by name (independent of the index lists in msl.labels).
NOT_IN_16 = {"terrain", "truck", "train"}
NOT_IN_13 = NOT_IN_16 | {"wall", "fence", "pole"}


def pixels_from_matrix(matrix: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (pred, target) pixel lists whose confusion matrix CM[gt, pred] is `matrix`."""
    pairs = [(p, g) for g, row in enumerate(matrix) for p, count in enumerate(row) for _ in range(count)]
    pred, target = zip(*pairs, strict=True)
    return torch.tensor(pred), torch.tensor(target)


def numpy_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, object]:
    """Reference implementation with np.bincount, following docs/metrics.md §6.1 literally."""
    keep = (target >= 0) & (target < num_classes)
    matrix = np.bincount(
        num_classes * target[keep].astype(int) + pred[keep], minlength=num_classes**2
    ).reshape(num_classes, num_classes)
    diag, rows, cols = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (rows + cols - diag)
        return {
            "matrix": matrix,
            "pixel_acc": diag.sum() / matrix.sum(),
            "mean_acc": np.nanmean(diag / rows),
            "iou": iou,
            "miou": np.nanmean(iou),
            "fwiou": sum(rows[c] * iou[c] for c in range(num_classes) if not np.isnan(iou[c])) / matrix.sum(),
            "precision": np.nanmean(diag / cols),
        }


def test_hand_made_matrix_with_absent_classes() -> None:
    # class 2 is absent from ground truth and prediction; class 3 is only predicted (once, on a class-1
    # pixel).
    pred, target = pixels_from_matrix([[3, 1, 0, 0], [1, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    # Pixels that must count for nothing: ignore label, a target outside 0..3, a prediction outside 0..3.
    pred = torch.cat([pred, torch.tensor([0, 1, 9])])
    target = torch.cat([target, torch.tensor([IGNORE_INDEX, 7, 0])])
    metrics = ConfusionMatrix(4)
    metrics.update(pred, target)
    result = metrics.compute()

    assert metrics.matrix.tolist() == [[3, 1, 0, 0], [1, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert result["class_names"] == ["class_0", "class_1", "class_2", "class_3"]
    assert result["pixel_acc"] == pytest.approx(5 / 8)
    assert result["mean_acc"] == pytest.approx((3 / 4 + 2 / 4) / 2)  # classes 2, 3 absent from GT: excluded
    iou = result["iou"]
    assert iou[:2] == pytest.approx([3 / 5, 2 / 5]) and math.isnan(iou[2]) and iou[3] == 0.0
    assert result["miou"] == pytest.approx((3 / 5 + 2 / 5 + 0) / 3)  # the only-predicted class counts as 0
    assert result["fwiou"] == pytest.approx((4 * 3 / 5 + 4 * 2 / 5) / 8)
    assert result["precision"] == pytest.approx((3 / 4 + 2 / 3 + 0) / 3)
    assert not any(key.startswith(("miou1", "fwiou1")) for key in result)  # no subsets for 4 classes


def test_accumulated_batches_match_numpy_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    num_classes = 19
    metrics = ConfusionMatrix(num_classes)
    preds, targets = [], []
    for _ in range(3):
        target = torch.randint(0, 17, (2, 16, 24), generator=generator, dtype=torch.uint8)  # 17, 18 absent
        target[torch.rand(target.shape, generator=generator) < 0.2] = IGNORE_INDEX
        # Mostly right, otherwise any class but 18 (so class 18 is absent from GT and prediction).
        noise = torch.randint(0, 18, target.shape, generator=generator)
        pred = torch.where(torch.rand(target.shape, generator=generator) < 0.5, target.long(), noise)
        pred = torch.where(target == IGNORE_INDEX, noise, pred)
        metrics.update(pred, target)
        preds.append(pred.numpy())
        targets.append(target.numpy())
    result = metrics.compute()
    expected = numpy_metrics(np.concatenate(preds).ravel(), np.concatenate(targets).ravel(), num_classes)

    np.testing.assert_array_equal(metrics.matrix.numpy(), expected["matrix"])
    np.testing.assert_allclose(result["iou"], expected["iou"], rtol=1e-12)  # NaNs must match too
    assert math.isnan(result["iou"][18]) and result["iou"][17] == 0.0
    for key in ("pixel_acc", "mean_acc", "miou", "fwiou", "precision"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key
    assert all(type(result[key]) is float for key in ("pixel_acc", "miou", "miou16", "miou13"))
    json.loads(json.dumps(result))


def test_subset_mious_of_a_19_class_matrix() -> None:
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, 19, (4, 32), generator=generator)
    pred = torch.where(torch.rand(target.shape, generator=generator) < 0.6, target, (target + 1) % 19)
    metrics = ConfusionMatrix(19)
    metrics.update(pred, target)
    result = metrics.compute()
    iou = dict(zip(result["class_names"], result["iou"], strict=True))

    assert len(iou) == 19 and "traffic light" in iou
    assert result["miou16"] == pytest.approx(np.nanmean([v for k, v in iou.items() if k not in NOT_IN_16]))
    assert result["miou13"] == pytest.approx(np.nanmean([v for k, v in iou.items() if k not in NOT_IN_13]))
    assert result["miou16"] != pytest.approx(result["miou"])
    assert "fwiou13" not in result


def test_16_class_matrix_reports_13_class_subset_with_reference_denominator() -> None:
    generator = torch.Generator().manual_seed(2)
    target = torch.randint(0, 16, (3, 40), generator=generator)
    pred = torch.where(torch.rand(target.shape, generator=generator) < 0.6, target, (target + 3) % 16)
    metrics = ConfusionMatrix(16)
    metrics.update(pred, target)
    result = metrics.compute()
    names = result["class_names"]
    assert len(names) == 16 and not NOT_IN_16 & set(names)
    kept = [c for c, name in enumerate(names) if name not in NOT_IN_13]
    assert len(kept) == 13

    expected = numpy_metrics(pred.numpy().ravel(), target.numpy().ravel(), 16)
    iou, gt_pixels = expected["iou"], expected["matrix"].sum(1)
    assert result["miou13"] == pytest.approx(np.nanmean(iou[kept]))
    # Reference quirk: the 13-class frequency-weighted IoU divides by the pixels of all 16 classes.
    assert result["fwiou13"] == pytest.approx((gt_pixels[kept] * iou[kept]).sum() / gt_pixels.sum())
    assert "miou16" not in result


def test_official_cityscapes_evaluator_agrees(tmp_path, monkeypatch) -> None:
    evaluator = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    for name, value in {"quiet": True, "JSONOutput": False, "evalInstLevelScore": False}.items():
        monkeypatch.setattr(evaluator.args, name, value)
    monkeypatch.setattr(evaluator.args, "exportFile", str(tmp_path / "result.json"))

    rng = np.random.default_rng(3)
    label_ids = class_to_label_id(19)  # (19,) label id of each class index
    train, bus = 16, 15
    gt_classes = np.setdiff1d(np.arange(19), [train, bus])  # train: absent everywhere; bus: only predicted
    void_ids = np.array([0, 1, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30])  # label ids that evaluate to ignore
    metrics = ConfusionMatrix(19)
    pred_files, gt_files = [], []
    for index in range(3):
        gt_class = rng.choice(gt_classes, size=(64, 128))  # (H, W) class indices
        gt_id = label_ids[gt_class]
        is_void = rng.random(gt_id.shape) < 0.15
        gt_id[is_void] = rng.choice(void_ids, size=int(is_void.sum()))
        wrong = rng.choice(np.setdiff1d(np.arange(19), [train]), size=gt_class.shape)
        pred_class = np.where(rng.random(gt_class.shape) < 0.5, gt_class, wrong)  # (H, W)

        gt_file, pred_file = (
            tmp_path / f"city_{index}_gtFine_labelIds.png",
            tmp_path / f"city_{index}_pred.png",
        )
        Image.fromarray(gt_id.astype(np.uint8)).save(gt_file)
        Image.fromarray(label_ids[pred_class]).save(pred_file)
        gt_files.append(str(gt_file))
        pred_files.append(str(pred_file))
        # Our side reads the ground truth back the way a data loader would: label ids -> class indices.
        target = label_id_to_class_lut(19)[np.array(Image.open(gt_file))]
        metrics.update(torch.from_numpy(pred_class), torch.from_numpy(target))

    official = evaluator.evaluateImgLists(pred_files, gt_files, evaluator.args)
    result = metrics.compute()
    official_iou = [official["classScores"][name] for name in result["class_names"]]
    np.testing.assert_allclose(result["iou"], official_iou, atol=1e-6)  # NaN (train) must match NaN
    assert math.isnan(result["iou"][train]) and result["iou"][bus] == 0.0
    assert result["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)


def test_merge_reset_and_errors() -> None:
    generator = torch.Generator().manual_seed(4)
    target = torch.randint(0, 8, (4, 6, 6), generator=generator)
    pred = torch.randint(0, 8, (4, 6, 6), generator=generator)
    whole, first, second = ConfusionMatrix(8), ConfusionMatrix(8), ConfusionMatrix(8)
    whole.update(pred, target)
    first.update(pred[:1], target[:1])
    second.update(pred[1:], target[1:])
    first += second
    assert torch.equal(first.matrix, whole.matrix)
    assert whole.matrix.sum().item() == target.numel()

    with pytest.raises(ValueError, match="merge"):
        whole.merge(ConfusionMatrix(7))
    with pytest.raises(ValueError, match=r"\(4, 6, 6\).*\(4, 6, 5\)"):
        whole.update(pred, target[..., :5])
    with pytest.raises(TypeError):
        whole.update(pred.float(), target)

    whole.reset()
    assert whole.matrix.sum().item() == 0
    with pytest.warns(RuntimeWarning, match="empty"):
        result = whole.compute()
    assert result["pixel_acc"] == 0.0 and math.isnan(result["miou"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_counts_on_cuda_match_cpu() -> None:
    target = torch.randint(0, 19, (2, 64, 64))
    target[:, :8] = IGNORE_INDEX
    pred = torch.randint(0, 19, (2, 64, 64))
    on_cpu, on_gpu = ConfusionMatrix(19), ConfusionMatrix(19, device="cuda")
    on_cpu.update(pred, target)
    on_gpu.update(pred.cuda(), target.cuda())
    assert on_gpu.matrix.is_cuda and torch.equal(on_gpu.matrix.cpu(), on_cpu.matrix)


def test_format_table_lists_classes_and_means_aligned() -> None:
    metrics = ConfusionMatrix(19)
    metrics.update(torch.tensor([0, 0, 1, 13]), torch.tensor([0, 1, 1, 13]))
    table = format_table(metrics.compute())
    lines = table.splitlines()

    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert any(line.startswith("traffic light") and line.endswith("n/a") for line in lines)
    assert any(line.startswith("road") and line.endswith("50.00") for line in lines)
    assert [line.split()[0] for line in lines[-3:]] == ["mIoU", "mIoU16", "mIoU13"]


def test_predicted_classes_match_a_loop_over_pixels_including_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (2, 5, 4, 6), generator=generator).float()  # (B, C, H, W), many ties
    expected = torch.empty(2, 4, 6, dtype=torch.long)
    for b, y, x in np.ndindex(2, 4, 6):
        column = scores[b, :, y, x].tolist()
        expected[b, y, x] = column.index(max(column))  # the first class with the top score
    assert torch.equal(predicted_classes(scores), expected)


@pytest.mark.parametrize("label_size", [(32, 64), (64, 128)])  # at the input size, and at full resolution
@pytest.mark.parametrize("flip", [False, True])
def test_evaluate_scores_what_the_whole_model_predicts(label_size, flip):
    """`evaluate` forwards only the main head and skips the softmax without flip; its metrics equal those of
    the naive path: both heads upsampled by the model, softmax, flipped average, interpolated to the
    label."""
    from msl.evaluate import evaluate
    from msl.models import build_model

    torch.manual_seed(0)
    model = build_model("small_segnet", 19).eval()
    images = torch.randn(4, 3, 32, 64)
    labels = torch.randint(0, 19, (4, *label_size))

    def naive_probs(batch):
        logits = torch.nn.functional.interpolate(
            model(batch)[0], size=label_size, mode="bilinear", align_corners=True
        )
        return logits.softmax(dim=1)

    with torch.no_grad():
        probs = naive_probs(images)
        if flip:
            probs = (probs + naive_probs(images.flip(-1)).flip(-1)) / 2
    expected = numpy_metrics(probs.argmax(dim=1).numpy(), labels.numpy(), 19)
    batches = [(images[:2], labels[:2], ["a", "b"]), (images[2:], labels[2:], ["c", "d"])]
    result = evaluate(model, batches, 19, torch.device("cpu"), flip=flip, bf16=False)
    assert result["miou"] == pytest.approx(expected["miou"], abs=1e-9)
    assert result["iou"] == pytest.approx(expected["iou"], abs=1e-9, nan_ok=True)
