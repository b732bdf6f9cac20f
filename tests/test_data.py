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


@pytest.mark.parametrize("setup, word", [
    ("missing", "does not exist"), ("no_val", "val/"), ("unset", "not set"), ("classes", "num_classes"),
    ("other_val_classes", r"same class folders \(only in train/: c2; only in val/: c9\)"), ("a_file", "is a file"),
    ("empty_class", r"class folder\(s\) of train/ without images: c1 \(images: .png, .jpg, .jpeg\)"),
    ("empty_val", "Found 0 images in subfolders of")])
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
    elif setup == "a_file":
        (tmp_path / "afile").write_text("x")
        overrides[0] = f"data_path={tmp_path / 'afile'}"
    elif setup in ("empty_class", "empty_val"):     # timm would drop the class silently, shifting later labels
        emptied = (jpeg_folder / "train").glob("c1/*") if setup == "empty_class" else (jpeg_folder / "val").rglob("*.jpg")
        for f in list(emptied):
            f.unlink()
    elif setup == "other_val_classes":      # val/c2 renamed: its labels would not be train/'s
        (jpeg_folder / "val" / "c2").rename(jpeg_folder / "val" / "c9")
    else:
        overrides[1] = "data.num_classes=1000"
    with pytest.raises(ValueError, match=word):
        data.build(config.load("paper", overrides), CPU)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_that_cannot_be_read_is_an_error_naming_it(jpeg_folder, workers):
    """timm serves the next image in place of a broken one (a changed dataset, a warning on stderr); here it is an
    error naming the file, also when a DataLoader worker read it (whose traceback torch puts in the message)."""
    broken = jpeg_folder / "val" / "c1" / "0.jpg"
    broken.write_bytes(b"not a jpeg")
    folder = data.build(_folder_cfg(jpeg_folder, f"data.workers={workers}"), CPU)
    with pytest.raises(data.UnreadableImage) as err:
        list(folder.val_batches(4))
    assert str(err.value).startswith(f"data.path: cannot read image {broken} (") and "\n" not in str(err.value)


def test_hidden_folders_beside_the_classes_are_no_classes(jpeg_folder):
    """JupyterLab's .ipynb_checkpoints (or a copy's metadata folder) in train/ is not an empty class."""
    (jpeg_folder / "train" / ".ipynb_checkpoints").mkdir()
    assert data.build(_folder_cfg(jpeg_folder), CPU).num_classes == 3


def test_evaluation_leaves_the_training_random_stream_alone(jpeg_folder):
    """A DataLoader draws its workers' seed from a generator: the validation loader has its own, so how often a run
    evaluates does not change the augmentation draws of its training."""
    folder = data.build(_folder_cfg(jpeg_folder), CPU)
    torch.manual_seed(0)
    list(folder.val_batches(4))
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())
    list(folder.train_batches(0))
    assert not torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())   # the training loader draws


def test_randaugment_posterize_to_zero_bits_is_black_not_a_crash():
    from PIL import Image
    from timm.data import auto_augment
    op = auto_augment.NAME_TO_OP["PosterizeIncreasing"]
    assert op(Image.new("RGB", (4, 4), (200, 100, 50)), 0).getextrema() == ((0, 0),) * 3


SMALL = ["batch_size=16", "data.train_size=64", "data.val_size=20"]


def _folder_cfg(root, *more):
    return config.load("smoke", [f"data_path={root}", "data.kind=imagefolder", "data.num_classes=3", "data.workers=0",
                                 "batch_size=6", *more])


def test_each_rank_evaluates_its_own_share_of_the_val_set(jpeg_folder):
    """DDP sums the ranks' correct counts: the val shards must be disjoint and together the whole set, else images are
    counted twice or never (both sources, since each builds its own shards)."""
    cfg = config.load("smoke", SMALL)
    full = data.build(cfg, CPU)
    whole = torch.cat([x for x, _ in full.val_batches(7)])
    for rank in (0, 1):
        full.plan = data.Plan(cfg, rank, 2)
        assert torch.equal(torch.cat([x for x, _ in full.val_batches(7)]), whole[rank::2])
    cfg = _folder_cfg(jpeg_folder)
    folder = data.build(cfg, CPU)
    asked = []
    folder._loader = lambda dataset, batches, *_: asked.append(batches) or []      # the val indices each rank loads
    for rank in (0, 1):
        folder.plan = data.Plan(cfg, rank, 2)
        list(folder.val_batches(2))
    assert [sum(chunks, []) for chunks in asked] == [[0, 2, 4], [1, 3, 5]]


def test_accumulated_micro_batches_of_two_ranks_are_disjoint_and_cover_the_update():
    cfg = config.load("smoke", [*SMALL, "optim.micro_batch=4"])
    plans = [data.Plan(cfg, r, 2) for r in (0, 1)]
    assert plans[0].accum == 2
    got = [torch.cat(p.micro_indices(64, 0, 2)).tolist() for p in plans]
    assert len(set(got[0]) | set(got[1])) == 16
    assert sorted(got[0] + got[1]) == sorted(torch.cat(data.Plan(cfg, 0, 1).micro_indices(64, 0, 2)).tolist())


def test_the_order_is_a_new_permutation_each_epoch_and_each_run_seed():
    """Reshuffled per epoch (else every epoch repeats one batch sequence) and per seed (else seeds differ only in init)."""
    def first(seed, epoch):
        return torch.cat(data.Plan(config.load("smoke", [*SMALL, f"seed={seed}"]), 0, 1).micro_indices(64, epoch, 0))
    assert torch.equal(first(0, 1), first(0, 1))
    assert not torch.equal(first(0, 0), first(0, 1)) and not torch.equal(first(0, 1), first(1, 1))


def test_the_embedded_set_is_data_seeds_not_the_run_seed():
    """Seeds of one cell train on the same images (their spread is the training's): the set follows data.seed only."""
    sets = [data.build(config.load("smoke", [*SMALL, *o]), CPU) for o in ([], ["seed=1"], ["data.seed=1"])]
    assert torch.equal(sets[0].train_x, sets[1].train_x) and torch.equal(sets[0].val_x, sets[1].val_x)
    assert not torch.equal(sets[0].train_x, sets[2].train_x)
    assert sets[0].val_size == 20 and sets[0].steps_per_epoch == 4


def test_embedded_images_are_normalised_per_channel_with_the_training_sets_statistics():
    cfg = config.load("smoke", ["batch_size=64", "data.train_size=256", "data.val_size=256"])
    full = data.build(cfg, CPU)
    pixels = full.train_x.float() / 255
    assert torch.allclose(full.mean.flatten(), pixels.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(full.std.flatten(), pixels.std((0, 2, 3)), atol=1e-5)
    val = torch.cat([x for x, _ in full.val_batches(256)])
    assert val.mean((0, 2, 3)).abs().max() < 0.1 and (val.std((0, 2, 3)) - 1).abs().max() < 0.1
    _, [(x, _)] = next(full.train_batches(0))           # augmented (crop, flip, jitter), then normalised the same way
    assert x.mean((0, 2, 3)).abs().max() < 0.3 and ((x.std((0, 2, 3)) - 1).abs() < 0.3).all()


def test_mixup_and_erasing_follow_the_config():
    """Mixup targets span the data's classes with the configured smoothing and probabilities; reprob > 0 erases."""
    cfg = config.load("smoke", [*SMALL, "aug.mixup=0.8", "aug.mixup_prob=0.7", "aug.mixup_switch_prob=0.3",
                                "aug.reprob=0.25"])
    full = data.build(cfg, CPU)
    m = full.mixup
    assert (m.num_classes, m.mix_prob, m.switch_prob, m.label_smoothing) == (10, 0.7, 0.3, 0.1)
    assert full.erase is not None and full.erase.probability == 0.25
    _, [(_, target)] = next(full.train_batches(0))
    assert target.shape == (16, 10) and target.min() >= 0.1 / 10 - 1e-6


def test_randaugment_takes_the_specs_magnitude_and_op_count():
    ops, group = data._randaugment("rand-m5-n3-mstd0.5-inc1")
    assert (ops.magnitude, ops.num_ops, group) == (5, 3, 8)


def test_an_image_folder_run_resumed_mid_epoch_loads_that_updates_images(jpeg_folder):
    """Exact resume with an image folder: from update `start` the loader is asked for the plan's images of that update,
    not the epoch's first ones."""
    cfg = _folder_cfg(jpeg_folder)
    folder = data.build(cfg, CPU)
    asked, loader = [], folder._loader
    folder._loader = lambda dataset, batches, *rest: asked.append(batches) or loader(dataset, batches, *rest)
    got = [(u, y.tolist()) for u, [(_, y)] in folder.train_batches(1, start=1)]
    plan = data.Plan(cfg, 0, 1)
    want = [plan.micro_indices(18, 1, u)[0].tolist() for u in (1, 2)]
    assert asked == [want]
    labels = [s[1] for s in folder.train_set.reader.samples]
    assert got == [(u, [labels[i] for i in idx]) for u, idx in zip((1, 2), want)]


def test_an_image_folder_is_normalised_with_imagenets_statistics_and_cropped_at_crop_pct(jpeg_folder):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    folder = data.build(_folder_cfg(jpeg_folder), CPU)            # smoke: img_size 20, eval.crop_pct 1.0
    for dataset in (folder.train_set, folder.val_set):
        [norm] = [t for t in dataset.transform.transforms if type(t).__name__ == "Normalize"]
        assert torch.allclose(torch.as_tensor(norm.mean), torch.tensor(IMAGENET_DEFAULT_MEAN))
        assert torch.allclose(torch.as_tensor(norm.std), torch.tensor(IMAGENET_DEFAULT_STD))
    resize = folder.val_set.transform.transforms[0]
    assert type(resize).__name__ == "Resize" and resize.size in (20, [20], (20, 20))
    assert (folder.val_size, folder.num_classes) == (6, 3)


def test_a_training_set_of_exactly_one_batch_is_one_update_an_epoch():
    plan = data.Plan(config.load("smoke", SMALL), 0, 1)
    assert plan.steps_per_epoch(16) == 1 and plan.steps_per_epoch(31) == 1
    with pytest.raises(ValueError, match="has 15 images, fewer than optim.batch_size 16"):
        plan.steps_per_epoch(15)


def test_no_validation_image_is_a_training_image():
    """The held-out set is drawn apart from the training set: no val image is a copy of a training image."""
    train_x, _, val_x, _ = data.generate(5, 100, 50, 16, seed=1)
    flat_train = {bytes(x.flatten().tolist()) for x in train_x}
    assert not any(bytes(x.flatten().tolist()) in flat_train for x in val_x)


@pytest.mark.parametrize("hflip", [0.0, 1.0])
def test_hflip_is_the_probability_of_a_mirrored_crop(hflip):
    """hflip=0 never mirrors (an ablation without flips), hflip=1 always does: an image dark on its left half keeps
    its dark side where it was, or has it on the right. (Crops of area >= 0.5 always take the leftmost column from
    the left half. A crop at the image's edge samples its zero padding up to about a fifth in x and in y: a light
    corner is darkened to 0.8² at worst, never to the dark side's 0.)"""
    cfg = config.load("smoke", [*SMALL, f"aug.hflip={hflip}", "aug.color_jitter=0"])
    full = data.build(cfg, CPU)
    x = torch.ones(32, 3, 20, 20)
    x[..., :10] = 0.0
    out = full._augment(x)
    dark, light = (out[..., 0], out[..., -1]) if hflip == 0 else (out[..., -1], out[..., 0])
    assert dark.max() < 0.05 and light.min() > 0.5


def test_random_erasing_acts_on_the_training_batches():
    cfg = config.load("smoke", [*SMALL, "aug.reprob=0.25"])
    full = data.build(cfg, CPU)
    full.erase = lambda x: torch.full_like(x, 7.0)
    _, [(x, _)] = next(full.train_batches(0))
    assert (x == 7.0).all()
    assert not any((x == 7.0).any() for x, _ in full.val_batches(20))          # never at evaluation


def test_randaugment_draws_its_ops_per_group_of_eight_images():
    """torchvision's RandAugment draws one op pair per call: called per 8 images, a batch sees many ops, not one."""
    cfg = config.load("smoke", [*SMALL, "aug.auto_augment=rand-m9-mstd0.5-inc1"])
    full = data.build(cfg, CPU)
    sizes = []
    full.randaug = (lambda part: sizes.append(len(part)) or part, full.randaug[1])
    next(full.train_batches(0))
    assert sizes == [8, 8]


def test_two_run_seeds_never_share_an_epochs_order():
    """Seed s+1's orders are not seed s's shifted by an epoch (their spread would be less than two seeds')."""
    def order(seed, epoch):
        return torch.cat(data.Plan(config.load("smoke", [*SMALL, f"seed={seed}"]), 0, 1).micro_indices(64, epoch, 0))
    orders = [order(seed, epoch) for seed in (0, 1, 2) for epoch in (0, 1, 2)]
    assert len({tuple(o.tolist()) for o in orders}) == len(orders)
