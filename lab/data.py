"""Training data: the ImageNet folder layout through timm's factories, or an embedded image set made on the device.

Both yield, per optimizer update, the micro-batches of this rank (already augmented, mixed and on the device), from
one index plan: epoch e's order is a permutation seeded by (seed, e); update u takes its slice of `batch_size` images,
cut into world × accumulation micro-batches. A run can therefore start at any update (exact resume) and the ranks
see disjoint shards.

The embedded set exists because the paper's regime is generalization on a *finite* image set with heavy augmentation
(300 epochs of ImageNet): with endless fresh samples point-wise norms lose to LayerNorm, the opposite of the paper.
So it is finite (train + held-out val), image-like (textured objects with parts, poses, colours, clutter, noise) and
augmented on the device with the paper's family (random-resized crop, flip, colour jitter, RandAugment, random erasing,
mixup/cutmix), normalised to zero mean and unit variance per channel like ImageNet's mean/std.
"""
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import auto_augment
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_dataset, create_transform
from timm.data.random_erasing import RandomErasing
from timm.data.readers.img_extensions import get_img_extensions

KINDS = ("embedded", "imagefolder")


def build(cfg: dict, device: torch.device, rank: int = 0, world: int = 1):
    """The data of a run (Embedded or ImageFolder) for this rank; ValueError on a bad path or size."""
    plan = Plan(cfg, rank, world)
    return (Embedded if cfg["data"]["kind"] == "embedded" else ImageFolder)(cfg, plan, device)


class Plan:
    """Which images each rank's micro-batches hold at (epoch, update): the same on every rank, resumable anywhere."""

    def __init__(self, cfg: dict, rank: int, world: int):
        o = cfg["optim"]
        self.batch, self.rank, self.world, self.seed = int(o["batch_size"]), rank, world, int(cfg["seed"])
        per_rank, rest = divmod(self.batch, world)
        micro = min(int(o.get("micro_batch") or per_rank), per_rank)
        even = _mixes(cfg["aug"])               # timm's Mixup pairs each image with its mirror in the batch
        if rest or per_rank % micro or (even and micro % 2):
            raise ValueError(f"optim.batch_size {self.batch} must split into {world} process(es) x accumulation x "
                             f"{'an even ' if even else ''}optim.micro_batch (got micro_batch {o.get('micro_batch')})")
        self.micro, self.accum = micro, per_rank // micro
        self._order = (None, None)

    def steps_per_epoch(self, n: int) -> int:
        if n < self.batch:
            raise ValueError(f"the training set has {n} images, fewer than optim.batch_size {self.batch}")
        return n // self.batch

    def micro_indices(self, n: int, epoch: int, update: int) -> list[torch.Tensor]:
        """This rank's `accum` index tensors for `update` of `epoch`."""
        if self._order[0] != (n, epoch):
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._order = ((n, epoch), torch.randperm(n, generator=g))
        batch = self._order[1][update * self.batch:(update + 1) * self.batch]
        chunks = batch.view(self.accum * self.world, self.micro)
        return [chunks[a * self.world + self.rank] for a in range(self.accum)]


def _mixes(aug: dict) -> bool:
    return aug["mixup"] > 0 or aug["cutmix"] > 0


def mixup(cfg: dict, num_classes: int):
    """timm's Mixup/CutMix with label smoothing (soft targets), or None when both alphas are 0."""
    a = cfg["aug"]
    if not _mixes(a):
        return None
    return Mixup(mixup_alpha=a["mixup"], cutmix_alpha=a["cutmix"], prob=a["mixup_prob"],
                 switch_prob=a["mixup_switch_prob"], mode=a["mixup_mode"], label_smoothing=a["smoothing"],
                 num_classes=num_classes)


class Embedded:
    """A finite, seeded, image-like classification set generated on `device`; see generate()."""

    def __init__(self, cfg: dict, plan: Plan, device: torch.device):
        d, a = cfg["data"], cfg["aug"]
        self.plan, self.device, self.num_classes = plan, device, int(d["num_classes"])
        self.train_x, self.train_y, self.val_x, self.val_y = generate(
            d["num_classes"], d["train_size"], d["val_size"], d["img_size"], seed=d["seed"], device=device,
            clutter=d["clutter"], noise=d["noise"])
        pixels = self.train_x.float().div_(255)
        self.mean = pixels.mean((0, 2, 3)).view(1, 3, 1, 1)
        self.std = pixels.std((0, 2, 3)).view(1, 3, 1, 1)
        self.steps_per_epoch = plan.steps_per_epoch(len(self.train_y))
        self.train_size, self.val_size = len(self.train_y), len(self.val_y)
        self.aug = a
        self.randaug = _randaugment(a["auto_augment"])
        self.erase = RandomErasing(a["reprob"], mode=a["remode"], max_count=a["recount"], device=device) \
            if a["reprob"] > 0 else None
        self.mixup = mixup(cfg, self.num_classes)

    def train_batches(self, epoch: int, start: int = 0):
        """Yield (update, [(x, target) per micro-batch]) from update `start` of `epoch`."""
        n, plan = len(self.train_y), self.plan
        # the epoch's indices go to the device in one copy: a copy per update would wait for the device every update
        order = torch.stack([i for u in range(start, self.steps_per_epoch) for i in plan.micro_indices(n, epoch, u)])
        order = order.to(self.device).view(-1, plan.accum, plan.micro)
        for u, indices in enumerate(order, start):
            micro = []
            for idx in indices:
                x = self._augment(self.train_x[idx].float().div_(255))
                x, y = (x - self.mean) / self.std, self.train_y[idx]
                if self.erase is not None:
                    x = self.erase(x)
                micro.append(self.mixup(x, y) if self.mixup is not None else (x, y))
            yield u, micro

    def val_batches(self, batch_size: int):
        """This rank's share of the held-out set, normalised, no augmentation."""
        idx = torch.arange(self.plan.rank, len(self.val_y), self.plan.world, device=self.device)
        for chunk in idx.split(batch_size):
            yield (self.val_x[chunk].float().div_(255) - self.mean) / self.std, self.val_y[chunk]

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random-resized crop + flip (one affine resampling), colour jitter, RandAugment; pixels stay in [0, 1].
        Jitter applies beside RandAugment here, where timm's folder transforms drop it once RandAugment is on (the
        paper protocol's 0.4 never acts on ImageNet): kept, as every embedded record was trained this way."""
        a, n = self.aug, len(x)
        area = torch.empty(n, device=x.device).uniform_(*a["scale"])
        logr = torch.empty(n, device=x.device).uniform_(math.log(3 / 4), math.log(4 / 3))
        sx = (area * logr.exp()).sqrt().clamp(max=1)
        sy = (area / logr.exp()).sqrt().clamp(max=1)
        flip = torch.where(torch.rand(n, device=x.device) < a["hflip"], -1.0, 1.0)
        tx = (torch.rand(n, device=x.device) * 2 - 1) * (1 - sx)
        ty = (torch.rand(n, device=x.device) * 2 - 1) * (1 - sy)
        zero = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx * flip, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode=a["interpolation"], align_corners=False)
        if a["color_jitter"]:
            j = a["color_jitter"]
            b, c, s = (torch.empty(3, n, 1, 1, 1, device=x.device).uniform_(1 - j, 1 + j)).unbind(0)
            x = x * b
            gray = x.mean(1, keepdim=True)
            x = gray + (x - gray) * s
            x = (x - gray.mean((2, 3), keepdim=True)) * c + gray.mean((2, 3), keepdim=True)
        x = x.clamp_(0, 1)
        if self.randaug is not None:
            ops, group = self.randaug
            x = torch.cat([ops(part) for part in x.split(group)])
        return x


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
"""The resampling modes of the embedded set's random crop (grid_sample's); lab.config refuses any other name."""


def _randaugment(spec: str | None):
    """timm's "rand-mM-nN-..." string as torchvision's batched RandAugment on the device, or None.

    timm's RandAugment works on PIL images one at a time on the CPU; torchvision's applies one random op pair to a
    whole tensor batch on the device, so it is applied per group of 8 images (magnitude M of timm's 10 levels maps to
    level M of 11 bins). mstd/inc variations of timm are not reproduced exactly.
    """
    if not spec:
        return None
    from torchvision.transforms import v2
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"aug.auto_augment {spec!r}: the embedded set supports RandAugment ('rand-m9-...') or null")
    opts = dict(re.fullmatch(r"([mn])([\d.]+)", p).groups() for p in parts[1:] if re.fullmatch(r"[mn][\d.]+", p))
    return v2.RandAugment(num_ops=int(opts.get("n", 2)), magnitude=min(round(float(opts.get("m", 9))), 10),
                          num_magnitude_bins=11), 8


def generate(num_classes: int, train_size: int, val_size: int, img_size: int, *, seed: int = 0,
             device="cpu", clutter: int = 2, noise: float = 0.05):
    """(train_x, train_y, val_x, val_y): uint8 images [N, 3, R, R] and balanced labels, deterministic in `seed`.

    One random stream on `device` draws the classes, then the training images, then the validation images: the
    validation set is the same for the same seed and sizes, but changes with train_size, and a CPU and a GPU draw
    different sets from one seed (a record names its device). Kept so: every committed record was drawn this way.

    A class is an object: a textured super-ellipse (shape exponent, aspect, grating frequency and orientation,
    colour) with a second part at a class-specific offset. Each image draws the object at a random position, scale,
    rotation and brightness over a random smooth background with `clutter` distractor shapes and pixel noise, so the
    class lies in shape, texture, colour and part layout rather than in any single pixel.
    """
    for name, value in (("num_classes", num_classes), ("train_size", train_size), ("val_size", val_size),
                        ("img_size", img_size)):
        if int(value) < (2 if name == "num_classes" else 1):
            raise ValueError(f"data.{name} must be positive (>= 2 classes), got {value}")
    g = torch.Generator(device=device).manual_seed(int(seed))
    rand = lambda *shape: torch.rand(*shape, generator=g, device=device)  # noqa: E731
    classes = {
        "p": 0.7 + 5 * rand(num_classes) ** 2, "aspect": 0.6 + 0.8 * rand(num_classes),
        "freq": 1 + 4 * rand(num_classes), "orient": math.pi * rand(num_classes),
        "color": rand(num_classes, 3), "color2": rand(num_classes, 3),
        "offset": (rand(num_classes, 2) * 2 - 1) * 0.9, "p2": 0.7 + 5 * rand(num_classes),
    }
    out = []
    for size in (train_size, val_size):
        labels = torch.arange(size, device=device) % num_classes
        labels = labels[torch.randperm(size, generator=g, device=device)]
        images = torch.cat([_render(classes, part, rand, img_size, clutter, noise, g)
                            for part in labels.split(4096)])
        out += [images, labels]
    return tuple(out)


def _render(classes, labels, rand, res, clutter, noise, g):
    n, device = len(labels), labels.device
    lin = (torch.arange(res, device=device) + 0.5) / res * 2 - 1
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    c = {k: v[labels] for k, v in classes.items()}
    img = rand(n, 3, 1, 1) * 0.8 + 0.1 + (rand(n, 3, 1, 1) - 0.5) * 0.6 * xx + (rand(n, 3, 1, 1) - 0.5) * 0.6 * yy
    for _ in range(clutter):
        mask, _ = _shape(xx, yy, rand(n) * 1.6 - 0.8, rand(n) * 1.6 - 0.8, 0.1 + 0.2 * rand(n), math.pi * rand(n),
                         0.7 + 5 * rand(n), 0.6 + 0.8 * rand(n))
        img = img + mask * (rand(n, 3, 1, 1) - img)
    angle, scale = (rand(n) - 0.5) * math.pi / 2, 0.25 + 0.2 * rand(n)
    cx, cy = (rand(n) - 0.5) * 0.8, (rand(n) - 0.5) * 0.8
    mask, (u, v) = _shape(xx, yy, cx, cy, scale, angle, c["p"], c["aspect"])
    grating = 0.5 + 0.5 * torch.sin(2 * math.pi * c["freq"].view(n, 1, 1) * (
        u * torch.cos(c["orient"]).view(n, 1, 1) + v * torch.sin(c["orient"]).view(n, 1, 1)))
    bright = (0.7 + 0.6 * rand(n, 1, 1, 1))
    body = (c["color"].view(n, 3, 1, 1) * (0.5 + 0.5 * grating.unsqueeze(1)) * bright).clamp(0, 1)
    img = img + mask * (body - img)
    ox = cx + scale * (c["offset"][:, 0] * torch.cos(angle) - c["offset"][:, 1] * torch.sin(angle)) * 1.6
    oy = cy + scale * (c["offset"][:, 0] * torch.sin(angle) + c["offset"][:, 1] * torch.cos(angle)) * 1.6
    mask2, _ = _shape(xx, yy, ox, oy, scale * 0.45, angle, c["p2"], torch.ones_like(scale))
    img = img + mask2 * ((c["color2"].view(n, 3, 1, 1) * bright).clamp(0, 1) - img)
    img = img + noise * torch.randn(img.shape, generator=g, device=device)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _shape(xx, yy, cx, cy, scale, angle, p, aspect):
    """Soft mask [n, 1, R, R] of a rotated super-ellipse |u|^p + |v|^p <= 1, and its object coordinates (u, v)."""
    view = lambda t: t.view(-1, 1, 1)  # noqa: E731
    dx, dy = xx - view(cx), yy - view(cy)
    cos, sin = view(torch.cos(angle)), view(torch.sin(angle))
    u = (dx * cos + dy * sin) / view(scale * aspect.sqrt())
    v = (-dx * sin + dy * cos) / view(scale / aspect.sqrt())
    d = (u.abs().clamp_min(1e-6) ** view(p) + v.abs().clamp_min(1e-6) ** view(p)) ** (1 / view(p))
    sharp = xx.shape[-1] * view(scale) / 2
    return torch.sigmoid((1 - d) * sharp * 2).unsqueeze(1), (u, v)


class ImageFolder:
    """ImageNet layout (ROOT/train/CLASS/*.jpg, ROOT/val/CLASS/*.jpg) through timm's datasets and paper transforms."""

    def __init__(self, cfg: dict, plan: Plan, device: torch.device):
        d, a = cfg["data"], cfg["aug"]
        self.plan, self.device, self.workers = plan, device, int(d.get("workers", 4))
        root = check_folder(d.get("path"))
        size = int(d["img_size"])
        self.train_set, self.val_set = (_images(root, split) for split in ("train", "val"))
        classes, val_classes = self.train_set.reader.class_to_idx, self.val_set.reader.class_to_idx
        if val_classes != classes:
            differ = [f"only in {split}/: {_few(sorted(set(a) - set(b)))}" for split, a, b in
                      (("train", classes, val_classes), ("val", val_classes, classes)) if set(a) - set(b)]
            raise ValueError(f"data.path {root}: val/ and train/ must hold the same class folders "
                             f"({'; '.join(differ)})")
        if len(classes) != int(d["num_classes"]):
            raise ValueError(f"data.path {root} has {len(classes)} classes but data.num_classes is "
                             f"{d['num_classes']}: set data.num_classes={len(classes)}")
        self.num_classes = len(classes)
        self.train_set.transform = create_transform(
            size, is_training=True, scale=tuple(a["scale"]), hflip=a["hflip"], color_jitter=a["color_jitter"],
            auto_augment=a["auto_augment"], interpolation=a["interpolation"], re_prob=a["reprob"],
            re_mode=a["remode"], re_count=a["recount"], mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
        self.val_set.transform = create_transform(
            size, is_training=False, interpolation=a["interpolation"], crop_pct=cfg["eval"]["crop_pct"],
            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
        self.steps_per_epoch = plan.steps_per_epoch(len(self.train_set))
        self.train_size, self.val_size = len(self.train_set), len(self.val_set)
        self.mixup = mixup(cfg, self.num_classes)

    def _loader(self, dataset, batches, generator=None):
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=self.workers,
                                           pin_memory=self.device.type == "cuda", generator=generator)

    def train_batches(self, epoch: int, start: int = 0):
        n, plan = len(self.train_set), self.plan
        order = [idx.tolist() for u in range(start, self.steps_per_epoch) for idx in plan.micro_indices(n, epoch, u)]
        loader = iter(self._loader(self.train_set, order))
        for u in range(start, self.steps_per_epoch):
            micro = []
            for _ in range(plan.accum):
                x, y = next(loader)
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                micro.append(self.mixup(x, y) if self.mixup is not None else (x, y))
            yield u, micro

    def val_batches(self, batch_size: int):
        idx = list(range(self.plan.rank, len(self.val_set), self.plan.world))
        chunks = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        # a generator of its own: a loader draws its workers' seed from one, and evaluation (no randomness) must not
        # move the training's random stream (how often a run evaluates would change what it learns)
        for x, y in self._loader(self.val_set, chunks, torch.Generator()):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def _posterize(img, bits_to_keep, **kw):
    """timm's posterize, keeping 0 bits as a black image like Pillow < 12 did.

    timm's "inc1" RandAugment reaches 0 bits whenever magnitude noise (mstd0.5) clips at 10 (~2% of posterize ops);
    Pillow >= 12 raises there, which would crash the paper's ImageNet pipeline at random.
    """
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return _timm_posterize(img, bits_to_keep, **kw)


_timm_posterize = auto_augment.posterize
for _name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    auto_augment.NAME_TO_OP[_name] = _posterize


class UnreadableImage(ValueError):
    """An image file that PIL cannot read. Raised in a DataLoader worker, it reaches the trainer with the worker's
    traceback as its message; its own last line is kept."""

    def __init__(self, message: str):
        super().__init__(message.rstrip().rsplit("\n", 1)[-1].removeprefix(f"{__name__}.UnreadableImage: "))


class _StrictImages(torch.utils.data.Dataset):
    """timm's folder dataset, except that an image PIL cannot read is an error naming its file: timm serves the next
    image in its place with a warning, which silently changes the training or validation set."""

    def __init__(self, dataset):
        self.dataset, self.reader = dataset, dataset.reader

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        path, target = self.reader.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except OSError as err:
            raise UnreadableImage(f"data.path: cannot read image {path} ({err}): fix or remove it") from None
        return self.transform(img), target

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, transform):
        self.dataset.transform = transform


def _images(root: Path, split: str) -> _StrictImages:
    """The images of root/split through timm's folder reader (its class order and image extensions). A class folder
    without images would silently drop its class (and shift every later label): an error naming it."""
    try:
        dataset = create_dataset("", root=str(root / split), search_split=False, is_training=split == "train")
    except RuntimeError as err:     # timm: "Found 0 images in subfolders of ..."
        raise ValueError(f"data.path {root}: {err}") from None
    found = dataset.reader.class_to_idx
    empty = sorted(p.name for p in (root / split).iterdir()     # hidden: .ipynb_checkpoints, a copy's metadata
                   if p.is_dir() and p.name not in found and not p.name.startswith("."))
    if empty:
        raise ValueError(f"data.path {root}: class folder(s) of {split}/ without images: {_few(empty)} (images: "
                         f"{', '.join(get_img_extensions())})")
    return _StrictImages(dataset)


def _few(names: list[str], shown: int = 10) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_folder(path) -> Path:
    """The image folder at `path`, or a ValueError saying what it lacks (an unset path, a file, no class folders)."""
    layout = "a folder with train/ and val/, each holding one subfolder of images per class (the ImageNet layout)"
    if not path:
        raise ValueError(f"data.path is not set: give {layout} (--set data_path=DIR)")
    root = Path(path).expanduser()
    if root.is_file():
        raise ValueError(f"data.path {str(root)!r} is a file: give {layout}")
    if not root.is_dir():
        raise ValueError(f"data.path {str(root)!r} does not exist: give {layout}")
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise ValueError(f"data.path {str(root)!r} has no class folders under {split}/: give {layout}")
    return root
