"""Shared fixtures."""
import pytest
from PIL import Image


@pytest.fixture
def jpeg_folder(tmp_path):
    """A tiny ImageNet-layout folder: ROOT/{train,val}/{c0,c1,c2}/*.jpg, one colour per class (6 + 2 per class)."""
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]
    for split, n in (("train", 6), ("val", 2)):
        for c, colour in enumerate(colours):
            folder = tmp_path / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + i, 36), colour).save(folder / f"{i}.jpg")
    return tmp_path
