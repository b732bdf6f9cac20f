"""Shared fixtures, and the split of the cores between pytest-xdist's workers (`make test`)."""
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image


def pytest_configure(config):
    """Each xdist worker takes its share of torch's threads, so that the workers' threads together do not outnumber
    the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    torch.set_num_threads(max(1, torch.get_num_threads() // workers))


@pytest.fixture(autouse=True)
def same_random_state():
    """Each test starts from one RNG state, whichever tests ran before it in its worker. LAB_TEST_SEED=N starts them
    from another: a test that holds for one draw alone then fails."""
    seed = int(os.environ.get("LAB_TEST_SEED", 0))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


OWN_TABLE = """title: "Gradient descent on erf's slope"
panels:
- row_header: [f]
  col_header: λ
  spec: "{row}|hshift={lam}"
  columns: [{label: "0", lam: 0}, {label: "0.3", lam: 0.3}, {label: "3", lam: 3}]
  rows:
    - {label: erf, paper: [82.6, null, ×]}
    - {label: tanh}
"""


@pytest.fixture
def own_table(tmp_path):
    """A researcher's table of their own, my/table_gd.yaml: 2 x 3 cells, paper values for three of them (one ×)."""
    path = tmp_path / "my" / "table_gd.yaml"
    path.parent.mkdir()
    path.write_text(OWN_TABLE, encoding="utf-8")
    return path
