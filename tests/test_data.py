"""Data: the embedded set (deterministic, image-like, finite, normalised, sharded) and the ImageNet folder path."""
import pytest
import torch

from lab import config, data

CPU = torch.device("cpu")


def test_embedded_set_is_deterministic_balanced_and_image_like():
    a = data.generate(5, 100, 50, 16, seed=1)
    b = data.generate(5, 100, 50, 16, seed=1)
    c = data.generate(5, 100, 50, 16, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    train_x, train_y, val_x, val_y = a
    assert train_x.shape == (100, 3, 16, 16) and train_x.dtype == torch.uint8 and val_x.shape == (50, 3, 16, 16)
    assert torch.bincount(train_y).tolist() == [20] * 5 and torch.bincount(val_y).tolist() == [10] * 5
    x = train_x.float()
    # spatial structure: neighbouring pixels are far more alike than random pairs (noise would not be)
    near = (x[..., 1:] - x[..., :-1]).abs().mean()
    far = (x - x[torch.randperm(len(x))]).abs().mean()
    assert near < 0.5 * far


def test_embedded_batches_are_normalised_sharded_and_resumable():
    cfg = config.load("smoke", ["batch_size=16", "data.train_size=64", "data.val_size=20"])
    full = data.build(cfg, CPU)
    x, _ = next(full.val_batches(100))
    assert abs(x.mean().item()) < 0.3 and 0.7 < x.std().item() < 1.3
    (u, [(x, y)]), = [next(full.train_batches(0))]
    assert u == 0 and x.shape == (16, 3, 20, 20) and y.shape == (16,)
    assert full.steps_per_epoch == 4
    ranks = [data.Plan(cfg, r, 2) for r in (0, 1)]
    shards = [torch.cat(p.micro_indices(64, 3, 1)) for p in ranks]
    assert len(set(shards[0].tolist()) | set(shards[1].tolist())) == 16     # disjoint halves of one update
    assert torch.equal(torch.cat(data.Plan(cfg, 0, 1).micro_indices(64, 3, 1)).sort().values,
                       torch.cat(shards).sort().values)
    assert [u for u, _ in full.train_batches(1, start=2)] == [2, 3]
    with pytest.raises(ValueError, match="micro_batch"):
        data.Plan(config.load("smoke", ["batch_size=16", "optim.micro_batch=6"]), 0, 1)


def test_only_mixup_needs_an_even_micro_batch():
    """timm's Mixup and CutMix mix each image with its mirror in the batch; without them, any micro-batch splits."""
    odd = ["batch_size=15", "optim.micro_batch=5"]
    with pytest.raises(ValueError, match="an even optim.micro_batch"):
        data.Plan(config.load("smoke", odd + ["aug.mixup=0.8", "aug.cutmix=0"]), 0, 1)
    plan = data.Plan(config.load("smoke", odd + ["aug.mixup=0", "aug.cutmix=0"]), 0, 1)
    assert (plan.micro, plan.accum) == (5, 3)


def test_imagenet_folder_goes_through_timm_with_the_paper_transforms(jpeg_folder):
    cfg = config.load("paper", [f"data_path={jpeg_folder}", "data.num_classes=3", "data.img_size=32",
                                "batch_size=8", "optim.micro_batch=4", "data.workers=0"])
    folder = data.build(cfg, CPU)
    assert folder.num_classes == 3 and folder.steps_per_epoch == 2 and len(folder.val_set) == 6
    names = [type(t).__name__ for t in folder.train_set.transform.transforms]
    assert "RandAugment" in names and "RandomErasing" in names and "RandomResizedCropAndInterpolation" in names
    (u, micro), = list(folder.train_batches(0, start=1))
    assert u == 1 and len(micro) == 2
    x, target = micro[0]
    assert x.shape == (4, 3, 32, 32) and target.shape == (4, 3)          # mixup/cutmix soft targets
    assert torch.allclose(target.sum(1), torch.ones(4))
    xs, ys = zip(*folder.val_batches(4))
    assert torch.cat(ys).tolist() == [0, 0, 1, 1, 2, 2] and xs[0].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("setup, word", [("missing", "does not exist"), ("no_val", "val/"), ("unset", "not set"),
                                         ("classes", "num_classes")])
def test_a_missing_or_malformed_folder_is_a_clear_error(jpeg_folder, tmp_path, setup, word):
    overrides = [f"data_path={jpeg_folder}", "data.num_classes=3", "data.img_size=32", "batch_size=8"]
    if setup == "missing":
        overrides[0] = f"data_path={tmp_path / 'nope'}"
    elif setup == "no_val":
        for f in (jpeg_folder / "val").rglob("*"):
            if f.is_file():
                f.unlink()
        for d in (jpeg_folder / "val").iterdir():
            d.rmdir()
    elif setup == "unset":
        overrides = overrides[1:]
    else:
        overrides[1] = "data.num_classes=1000"
    with pytest.raises(ValueError, match=word):
        data.build(config.load("paper", overrides), CPU)


def test_randaugment_posterize_to_zero_bits_is_black_not_a_crash():
    from PIL import Image
    from timm.data import auto_augment
    op = auto_augment.NAME_TO_OP["PosterizeIncreasing"]
    assert op(Image.new("RGB", (4, 4), (200, 100, 50)), 0).getextrema() == ((0, 0),) * 3
