"""The dataset loaders on tiny files written in each dataset's real published format."""

from __future__ import annotations

import http.server
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from miaray.data import Dataset, DatasetFileError, DatasetNotFoundError, load_dataset, resolve_root
from miaray.data.cache import cache_path
from miaray.data.images import CHMNIST_CLASSES, CIFAR_MEAN, CIFAR_STD, SVHN_MEAN, SVHN_STD
from miaray.data.registry import EMBEDDED_DATASETS, real_datasets
from miaray.data.sources import Remote, Source, file_digest, locate
from miaray.vocabulary import DATASETS

# The fake files cannot match the published checksums: the tests opt in to using them (the opt-in
# and the error without it are tested below) and ignore the warning it gives.
pytestmark = pytest.mark.filterwarnings("ignore:.*published file")

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def allow_checksum_mismatch(monkeypatch):
    monkeypatch.setenv("MIARAY_ALLOW_CHECKSUM_MISMATCH", "1")


# ---- writers of the real formats -------------------------------------------------------------------
def _tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _write(root: Path, members: dict[str, bytes], archive: str | None) -> None:
    """Write ``members`` extracted under ``root``, or as the .tgz/.tar.gz ``archive``."""
    if archive is not None:
        _tgz(root / archive, members)
        return
    for name, blob in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)


def write_cifar(root: Path, *, hundred: bool, archive: bool) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR python-pickle batches (2 images each); returns the images and labels in load order."""
    folder, files, key, classes = (("cifar-100-python", ["train", "test"], "fine_labels", 100) if hundred else
                                   ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)]
                                    + ["test_batch"], "labels", 10))
    members, images, labels = {}, [], []
    for file in files:
        data = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
        batch_labels = RNG.integers(0, classes, 2).tolist()
        batch = {"batch_label": file, key: batch_labels, "data": data, "filenames": ["a.png", "b.png"]}
        members[f"{folder}/{file}"] = pickle.dumps(batch, protocol=2)
        images.append(data.reshape(-1, 3, 32, 32))
        labels += batch_labels
    _write(root, members, ("cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz") if archive else None)
    return np.concatenate(images), np.array(labels)


def write_svhn(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN .mat files: X is 32 x 32 x 3 x N, y is N x 1 with 10 for the digit 0."""
    images, digits = [], []
    for file, y in (("train_32x32.mat", [10, 1, 5]), ("test_32x32.mat", [3, 10])):
        x = RNG.integers(0, 256, (32, 32, 3, len(y)), dtype=np.uint8)
        scipy.io.savemat(root / file, {"X": x, "y": np.array(y, dtype=np.uint8).reshape(-1, 1)})
        images.append(x.transpose(3, 2, 0, 1))
        digits += [label % 10 for label in y]
    return np.concatenate(images), np.array(digits)


def _tif(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, format="TIFF")
    return buffer.getvalue()


def write_chmnist(root: Path, *, archive: bool) -> None:
    """Kather 2016 layout: one folder per class of RGB .tif tiles (here 2 of 40 x 40 per class, each
    class a solid colour of red value 10 * class)."""
    folder = "Kather_texture_2016_image_tiles_5000"
    members = {f"{folder}/{cls}/tile_{k}.tif": _tif((10 * index, 100, 200))
               for index, cls in enumerate(CHMNIST_CLASSES) for k in range(2)}
    if archive:
        with zipfile.ZipFile(root / f"{folder}.zip", "w") as zipped:
            for name, blob in members.items():
                zipped.writestr(name, blob)
    else:
        _write(root, members, None)


def tabular_rows(n: int, n_features: int, num_classes: int, *, quoted: bool = False) -> tuple[str, np.ndarray]:
    """A header-less CSV, label (1-indexed) first; returns the text and the 0-indexed labels."""
    labels = RNG.integers(1, num_classes + 1, n)
    labels[0] = num_classes  # the largest label must map to num_classes - 1
    features = RNG.integers(0, 2, (n, n_features))
    lines = [",".join([f'"{label}"' if quoted else str(label)] + [str(v) for v in row])
             for label, row in zip(labels, features)]
    return "\n".join(lines) + "\n", labels - 1


def write_texas(root: Path, *, prefix: str, archive: bool) -> np.ndarray:
    labels = RNG.integers(1, 101, 4)
    feats = "\n".join(",".join(str(v) for v in RNG.integers(0, 2, 6169)) for _ in labels) + "\n"
    members = {f"{prefix}feats": feats.encode(), f"{prefix}labels": "\n".join(map(str, labels)).encode() + b"\n"}
    _write(root, members, "dataset_texas.tgz" if archive else None)
    return labels - 1


# ---- registry ---------------------------------------------------------------------------------------
def test_registry_covers_exactly_the_configured_names():
    assert sorted({**real_datasets(), **EMBEDDED_DATASETS}) == sorted(DATASETS)


def test_unknown_name_and_option_are_rejected_with_the_valid_choices():
    with pytest.raises(ValueError, match="valid names: cifar10, .*synthetic_tabular"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown option.*colour.*valid options: n_samples"):
        load_dataset("synthetic_tabular", colour=3)


def test_root_falls_back_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MIARAY_DATA", str(tmp_path))
    assert resolve_root() == tmp_path.resolve()
    assert resolve_root(tmp_path / "x") == (tmp_path / "x").resolve()
    monkeypatch.delenv("MIARAY_DATA")
    assert resolve_root() == Path("~/.cache/miaray/data").expanduser().resolve()


# ---- image datasets --------------------------------------------------------------------------------
@pytest.mark.parametrize("hundred", [False, True], ids=["cifar10", "cifar100"])
@pytest.mark.parametrize("archive", [False, True], ids=["extracted", "archive"])
def test_cifar_batches_load_in_order_with_reference_normalisation(tmp_path, hundred, archive):
    images, labels = write_cifar(tmp_path, hundred=hundred, archive=archive)
    data = load_dataset("cifar100" if hundred else "cifar10", root=tmp_path, download=False)
    assert data.x.shape == (12 if not hundred else 4, 3, 32, 32) and data.input_shape == (3, 32, 32)
    assert data.is_image and data.num_classes == (100 if hundred else 10)
    assert data.y.dtype == torch.int64 and data.y.tolist() == labels.tolist()
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(data.x * std + mean, torch.from_numpy(images).float() / 255, atol=1e-5, rtol=0)


def test_a_file_with_another_checksum_is_refused_unless_the_user_opts_in(tmp_path, monkeypatch):
    write_cifar(tmp_path, hundred=False, archive=True)
    monkeypatch.delenv("MIARAY_ALLOW_CHECKSUM_MISMATCH")
    with pytest.raises(DatasetFileError, match=f"{tmp_path / 'cifar-10-python.tar.gz'} has md5 .* published file has "
                                               "c58f3010.*set MIARAY_ALLOW_CHECKSUM_MISMATCH=1 to use it anyway"):
        load_dataset("cifar10", root=tmp_path, download=False)
    monkeypatch.setenv("MIARAY_ALLOW_CHECKSUM_MISMATCH", "1")
    with pytest.warns(UserWarning, match="cifar-10-python.tar.gz has md5 .* published file has c58f3010.*\\(used because"):
        assert len(load_dataset("cifar10", root=tmp_path, download=False)) == 12


def test_svhn_concatenates_train_and_test_and_maps_label_10_to_digit_0(tmp_path):
    images, digits = write_svhn(tmp_path)
    data = load_dataset("svhn", root=tmp_path, download=False)
    assert data.x.shape == (5, 3, 32, 32) and data.num_classes == 10
    assert data.y.tolist() == [0, 1, 5, 3, 0] == digits.tolist()
    mean, std = torch.tensor(SVHN_MEAN).view(1, 3, 1, 1), torch.tensor(SVHN_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(data.x * std + mean, torch.from_numpy(images).float() / 255, atol=1e-5, rtol=0)


def test_svhn_needs_both_files(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="test_32x32.mat"):
        load_dataset("svhn", root=tmp_path, download=False)


@pytest.mark.parametrize("archive", [False, True], ids=["extracted", "zip"])
def test_chmnist_tiles_become_8_classes_of_32x32_images(tmp_path, archive):
    write_chmnist(tmp_path, archive=archive)
    data = load_dataset("chmnist", root=tmp_path, download=False)
    assert data.x.shape == (16, 3, 32, 32) and data.num_classes == 8
    assert data.y.tolist() == [label for label in range(8) for _ in range(2)]
    # Each tile is one solid colour, which resizing keeps: red = 10 * class, green 100, blue 200.
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = (data.x[:, :, 16, 16] * std + mean) * 255
    expected = torch.tensor([[10.0 * label, 100, 200] for label in data.y.tolist()])
    torch.testing.assert_close(pixels, expected, atol=1e-3, rtol=0)


def test_chmnist_with_a_class_folder_missing_names_it(tmp_path):
    write_chmnist(tmp_path, archive=False)
    for tile in (tmp_path / "Kather_texture_2016_image_tiles_5000" / "08_EMPTY").iterdir():
        tile.unlink()
    with pytest.raises(ValueError, match="08_EMPTY"):
        load_dataset("chmnist", root=tmp_path, download=False)


# ---- tabular datasets ------------------------------------------------------------------------------
@pytest.mark.parametrize("archive", [False, True], ids=["extracted", "archive"])
def test_purchase_label_first_1_to_100_becomes_0_to_99(tmp_path, archive):
    text, labels = tabular_rows(5, 600, 100)
    _write(tmp_path, {"dataset_purchase": text.encode()}, "dataset_purchase.tgz" if archive else None)
    data = load_dataset("purchase", root=tmp_path, download=False)
    assert data.x.shape == (5, 600) and data.x.dtype == torch.float32 and not data.is_image
    assert data.num_classes == 100 and data.y.tolist() == labels.tolist() and labels.max() == 99
    assert set(data.x.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("bad_row, message", [
    ("0," + ",".join(["1"] * 600), "row 2 is 0; labels must be integers 1..100"),      # 0-indexed label
    ("1.5," + ",".join(["1"] * 600), "row 2 is '1.5'; labels must be integers 1..100"),  # not an integer
    ("7," + ",".join(["1"] * 599) + ",42", "row 2 holds the feature value 42"),         # label last
    ("7," + ",".join(["1"] * 599), "cannot read .*expected a header-less CSV: the label 1..100 first, "
                                   "then 600 binary"),                                   # short row
], ids=["label_0", "label_1.5", "label_last", "short_row"])
def test_purchase_in_another_format_is_rejected_naming_the_file(tmp_path, bad_row, message):
    text, _ = tabular_rows(3, 600, 100)
    lines = text.splitlines()
    lines[1] = bad_row
    (tmp_path / "dataset_purchase").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message) as error:
        load_dataset("purchase", root=tmp_path, download=False)
    assert "dataset_purchase" in str(error.value)


def test_location_file_given_as_purchase_has_the_wrong_feature_count(tmp_path):
    text, _ = tabular_rows(3, 446, 30)
    (tmp_path / "dataset_purchase").write_text(text)
    with pytest.raises(ValueError, match="has 446 feature columns; expected .* 600 binary"):
        load_dataset("purchase", root=tmp_path, download=False)


@pytest.mark.parametrize("prefix, archive", [("", False), ("texas/100/", False), ("texas/100/", True)],
                         ids=["flat", "nested", "archive"])
def test_texas_feats_and_labels(tmp_path, prefix, archive):
    labels = write_texas(tmp_path, prefix=prefix, archive=archive)
    data = load_dataset("texas", root=tmp_path, download=False)
    assert data.x.shape == (4, 6169) and data.num_classes == 100
    assert data.y.tolist() == labels.tolist()


@pytest.mark.parametrize("archive", [False, True], ids=["extracted", "archive"])
def test_location_quoted_labels(tmp_path, archive):
    text, labels = tabular_rows(6, 446, 30, quoted=True)
    assert text.startswith('"')
    _write(tmp_path, {"bangkok": text.encode()}, "dataset_location.tgz" if archive else None)
    data = load_dataset("location", root=tmp_path, download=False)
    assert data.x.shape == (6, 446) and data.num_classes == 30
    assert data.y.tolist() == labels.tolist() and labels.max() == 29
    cached = load_dataset("location", root=tmp_path, download=False)  # 446 bits: not a whole number of bytes
    assert torch.equal(cached.x, data.x) and torch.equal(cached.y, data.y)


# ---- missing data, downloading ---------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [("purchase", "dataset_purchase.tgz"), ("texas", "texas/100/feats"),
                                            ("chmnist", "Kather_texture_2016_image_tiles_5000.zip"),
                                            ("cifar100", "cifar-100-python.tar.gz")])
def test_missing_data_names_the_files_the_directory_and_the_source(tmp_path, monkeypatch, name, expected):
    monkeypatch.setenv("MIARAY_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(name, root=tmp_path / "empty")
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert expected in message and str(tmp_path / "empty") in message and "Source: " in message
    assert "https://" in message and "MIARAY_OFFLINE" in message and time.perf_counter() - start < 1.0
    assert not (tmp_path / "empty").exists()


def _location_source(url: str, checksum: tuple[str, str] | None) -> Source:
    return Source(name="location", layouts=(("dataset_location.tgz",),),
                  remotes=(Remote("dataset_location.tgz", (url,)),), origin="a local mirror",
                  checksums={"dataset_location.tgz": checksum} if checksum else {})


def test_download_fetches_verifies_and_places_the_archive(tmp_path):
    mirror, root = tmp_path / "mirror", tmp_path / "data"
    mirror.mkdir()
    text, labels = tabular_rows(4, 446, 30, quoted=True)
    _tgz(mirror / "dataset_location.tgz", {"bangkok": text.encode()})
    good = ("sha256", file_digest(mirror / "dataset_location.tgz", "sha256"))
    source = _location_source((mirror / "dataset_location.tgz").as_uri(), good)
    assert locate(source, root, download=True) == ("dataset_location.tgz",)
    assert (root / "dataset_location.tgz").read_bytes() == (mirror / "dataset_location.tgz").read_bytes()
    assert load_dataset("location", root=root, download=False).y.tolist() == labels.tolist()


def test_download_with_a_wrong_checksum_keeps_nothing(tmp_path):
    mirror, root = tmp_path / "mirror", tmp_path / "data"
    mirror.mkdir()
    _tgz(mirror / "dataset_location.tgz", {"bangkok": b'"1",0\n'})
    source = _location_source((mirror / "dataset_location.tgz").as_uri(), ("sha256", "0" * 64))
    with pytest.raises(DatasetNotFoundError, match="Downloading failed .*expected 0000"):
        locate(source, root, download=True)
    assert list(root.iterdir()) == []


def test_unreachable_download_fails_fast_into_the_not_found_error(tmp_path):
    source = _location_source("http://127.0.0.1:9/dataset_location.tgz", None)  # port 9: nothing listens
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="Downloading failed"):
        locate(source, tmp_path, download=True)
    assert time.perf_counter() - start < 5.0


# ---- the parsed-data cache -------------------------------------------------------------------------
def _purchase_text(labels: list[int]) -> str:
    features = ",".join(["0", "1"] * 300)
    return "".join(f"{label},{features}\n" for label in labels)


def test_second_load_reads_the_cache_until_the_source_changes(tmp_path):
    source = tmp_path / "dataset_purchase"
    source.write_text(_purchase_text([3, 5, 7]))
    first = load_dataset("purchase", root=tmp_path, download=False)
    assert first.y.tolist() == [2, 4, 6] and cache_path(tmp_path, "purchase").is_file()
    # Other labels at the same size and mtime: a loader that re-parsed would see them.
    stat = source.stat()
    source.write_text(_purchase_text([4, 6, 8]))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = load_dataset("purchase", root=tmp_path, download=False)
    assert torch.equal(second.x, first.x) and second.y.tolist() == [2, 4, 6]
    # A new mtime invalidates the cache: the new labels appear.
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_dataset("purchase", root=tmp_path, download=False).y.tolist() == [3, 5, 7]


def test_cached_images_load_without_reading_the_source(tmp_path):
    write_chmnist(tmp_path, archive=True)
    archive = tmp_path / "Kather_texture_2016_image_tiles_5000.zip"
    first = load_dataset("chmnist", root=tmp_path, download=False)
    # Garbage of the same size and mtime: only the cache can still give the images.
    stat = archive.stat()
    archive.write_bytes(b"\0" * stat.st_size)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = load_dataset("chmnist", root=tmp_path, download=False)
    assert torch.equal(second.x, first.x) and torch.equal(second.y, first.y)
    cache_path(tmp_path, "chmnist").unlink()
    with pytest.raises(DatasetFileError, match=f"chmnist: cannot read {archive} \\(BadZipFile"):
        load_dataset("chmnist", root=tmp_path, download=False)


# ---- offline datasets ------------------------------------------------------------------------------
def test_digits_are_normalised_1x8x8_images():
    data = load_dataset("digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.is_image and data.num_classes == 10
    assert abs(float(data.x.mean())) < 1e-5 and abs(float(data.x.std()) - 1) < 1e-5
    assert sorted(data.y.unique().tolist()) == list(range(10))


def test_synthetic_tabular_is_purchase_shaped_and_deterministic_by_seed():
    data = load_dataset("synthetic_tabular")
    assert data.x.shape == (4000, 600) and data.num_classes == 100 and not data.is_image
    assert set(data.x.unique().tolist()) == {0.0, 1.0} and data.y.bincount().tolist() == [40] * 100
    again, other = load_dataset("synthetic_tabular"), load_dataset("synthetic_tabular", seed=1)
    assert torch.equal(data.x, again.x) and torch.equal(data.y, again.y)
    assert not torch.equal(data.x, other.x)


def test_synthetic_tabular_flips_features_around_class_prototypes():
    small = dict(n_samples=2000, n_features=50, n_classes=4)
    clean = load_dataset("synthetic_tabular", flip_prob=0.0, **small)
    noisy = load_dataset("synthetic_tabular", flip_prob=0.2, **small)
    for label in range(4):  # without flips every sample of a class is its prototype
        assert clean.x[clean.y == label].unique(dim=0).shape[0] == 1
    assert torch.equal(clean.y, noisy.y)
    assert abs(float((clean.x != noisy.x).float().mean()) - 0.2) < 0.01
    with pytest.raises(ValueError, match="flip_prob"):
        load_dataset("synthetic_tabular", flip_prob=0.7)


def test_dataset_rejects_labels_outside_its_classes():
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        Dataset(x=torch.zeros(2, 3), y=torch.tensor([0, 3]), num_classes=3, name="t")


# ---- untrusted and damaged files ---------------------------------------------------------------------
class _Payload:
    """What a malicious batch file carries: unpickling it would call Path.touch(marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("archive", [False, True], ids=["extracted", "archive"])
@pytest.mark.parametrize("allowed", [False, True], ids=["checksum_checked", "checksum_mismatch_allowed"])
def test_a_pickle_payload_in_a_cifar_batch_is_never_run(tmp_path, monkeypatch, archive, allowed):
    marker = tmp_path / "payload_ran"
    members = {"cifar-10-batches-py/data_batch_1": pickle.dumps(
        {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": _Payload(marker)}, protocol=2)}
    members |= {f"cifar-10-batches-py/{f}": pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})
                for f in ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")}
    _write(tmp_path, members, "cifar-10-python.tar.gz" if archive else None)
    where = tmp_path / ("cifar-10-python.tar.gz" if archive else "cifar-10-batches-py/data_batch_1")
    if not allowed:  # the checksum stops it before it is parsed
        monkeypatch.delenv("MIARAY_ALLOW_CHECKSUM_MISMATCH")
        message = f"{where} has md5"
    else:  # parsed, by an unpickler that resolves nothing outside the batch format
        message = f"cannot read {where}{':cifar-10-batches-py/data_batch_1' if archive else ''} .*is not allowed in a CIFAR batch"
    with pytest.raises(DatasetFileError, match=message):
        load_dataset("cifar10", root=tmp_path, download=False)
    assert not marker.exists()


def _py2_cifar_batch(data: np.ndarray, labels: list[int], label_key: str) -> bytes:
    """The bytes Python 2's cPickle.dump(batch, f, 2) writes with numpy < 2, as in the published batches:
    str keys and data as byte strings, the array rebuilt by numpy.core.multiarray._reconstruct."""
    def string(b: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING or BINSTRING
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + len(b).to_bytes(4, "little") + b

    def integer(n: int) -> bytes:  # BININT1 or BININT2
        return b"K" + bytes([n]) if n < 256 else b"M" + n.to_bytes(2, "little")

    dtype = (b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
             + b"(" + integer(3) + string(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + integer(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b")
             + b"\x87R(" + integer(1) + integer(data.shape[0]) + integer(data.shape[1]) + b"\x86" + dtype
             + b"\x89" + string(data.tobytes()) + b"tb")
    return (b"\x80\x02}(" + string(b"data") + array + string(label_key.encode())
            + b"](" + b"".join(integer(v) for v in labels) + b"e"
            + string(b"batch_label") + string(b"training batch 1 of 5") + b"u.")


def test_python2_batches_written_with_old_numpy_load(tmp_path):
    folder, images, labels = tmp_path / "cifar-100-python", [], []
    folder.mkdir()
    for file in ("train", "test"):
        data, batch_labels = RNG.integers(0, 256, (2, 3072), dtype=np.uint8), RNG.integers(0, 100, 2).tolist()
        (folder / file).write_bytes(_py2_cifar_batch(data, batch_labels, "fine_labels"))
        images.append(data.reshape(-1, 3, 32, 32))
        labels += batch_labels
    assert b"numpy.core.multiarray" in (folder / "train").read_bytes()
    data = load_dataset("cifar100", root=tmp_path, download=False)
    assert data.y.tolist() == labels
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(data.x * std + mean, torch.from_numpy(np.concatenate(images)).float() / 255,
                               atol=1e-5, rtol=0)


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _junk(path: Path) -> None:
    path.write_bytes(b"this is not the file you are looking for\n" * 20)


def _cifar_tgz(root: Path) -> Path:
    write_cifar(root, hundred=False, archive=True)
    return root / "cifar-10-python.tar.gz"


def _cifar_batch(root: Path) -> Path:
    write_cifar(root, hundred=False, archive=False)
    return root / "cifar-10-batches-py" / "data_batch_3"


def _svhn(root: Path) -> Path:
    write_svhn(root)
    return root / "test_32x32.mat"


def _chmnist_zip(root: Path) -> Path:
    write_chmnist(root, archive=True)
    return root / "Kather_texture_2016_image_tiles_5000.zip"


def _chmnist_tile(root: Path) -> Path:
    write_chmnist(root, archive=False)
    return root / "Kather_texture_2016_image_tiles_5000" / "03_COMPLEX" / "tile_1.tif"


def _purchase_tgz(root: Path) -> Path:
    _write(root, {"dataset_purchase": tabular_rows(3, 600, 100)[0].encode()}, "dataset_purchase.tgz")
    return root / "dataset_purchase.tgz"


def _texas_tgz(root: Path) -> Path:
    write_texas(root, prefix="texas/100/", archive=True)
    return root / "dataset_texas.tgz"


def _location_csv(root: Path) -> Path:
    (root / "bangkok").write_bytes(bytes(range(256)) * 8)
    return root / "bangkok"


@pytest.mark.parametrize("name, make, spoil, expected", [
    ("cifar10", _cifar_tgz, _cut, "expected the gzip'd tar cifar-10-python.tar.gz"),
    ("cifar10", _cifar_tgz, _junk, "expected the gzip'd tar cifar-10-python.tar.gz"),
    ("cifar10", _cifar_batch, _cut, "expected a cifar10 python batch"),
    ("cifar10", _cifar_batch, _junk, "expected a cifar10 python batch"),
    ("svhn", _svhn, _cut, "expected a MATLAB \\(v5\\) file test_32x32.mat"),
    ("svhn", _svhn, _junk, "expected a MATLAB \\(v5\\) file test_32x32.mat"),
    ("chmnist", _chmnist_zip, _cut, "expected the zip Kather_texture_2016_image_tiles_5000.zip"),
    ("chmnist", _chmnist_tile, _cut, "expected an RGB .tif tile"),
    ("chmnist", _chmnist_tile, _junk, "expected an RGB .tif tile"),
    ("purchase", _purchase_tgz, _cut, "expected .*dataset_purchase.tgz|expected a header-less CSV"),
    ("texas", _texas_tgz, _junk, "expected the gzip'd tar dataset_texas.tgz"),
    ("location", _location_csv, lambda path: None, "expected a header-less CSV: the label 1..30 first"),
], ids=["cifar_tgz_cut", "cifar_tgz_junk", "cifar_batch_cut", "cifar_batch_junk", "svhn_mat_cut", "svhn_mat_junk",
        "chmnist_zip_cut", "chmnist_tif_cut", "chmnist_tif_junk", "purchase_tgz_cut", "texas_tgz_junk",
        "location_csv_binary"])
def test_a_damaged_file_gives_one_error_naming_it_and_what_was_expected(tmp_path, name, make, spoil, expected):
    damaged = make(tmp_path)
    spoil(damaged)
    with pytest.raises(DatasetFileError, match=expected) as error:
        load_dataset(name, root=tmp_path, download=False)
    assert str(damaged) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("spoil", [_cut, _junk, lambda path: path.write_bytes(b"")], ids=["cut", "junk", "empty"])
def test_a_damaged_parsed_data_cache_is_reported_and_rebuilt(tmp_path, spoil):
    text, labels = tabular_rows(4, 600, 100)
    (tmp_path / "dataset_purchase").write_text(text)
    load_dataset("purchase", root=tmp_path, download=False)
    cache = cache_path(tmp_path, "purchase")
    spoil(cache)
    with pytest.warns(UserWarning, match=f"the parsed-data cache {cache} is damaged .*parsing the source files again"):
        assert load_dataset("purchase", root=tmp_path, download=False).y.tolist() == labels.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # healed: the next load reads the new cache without a warning
        assert load_dataset("purchase", root=tmp_path, download=False).y.tolist() == labels.tolist()


# ---- concurrent downloads --------------------------------------------------------------------------
class _SlowArchive(http.server.BaseHTTPRequestHandler):
    """Serves one archive in 20 pieces over about a second, counting the requests."""

    body = b""
    requests: list[str] = []

    def do_GET(self):  # noqa: N802  (http.server's name)
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        step = len(self.body) // 20 + 1
        for start in range(0, len(self.body), step):
            self.wfile.write(self.body[start:start + step])
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, *args):
        pass


# A process that downloads the archive once `go` exists (so both ask at the same moment, imports done).
FETCH = """
import json, sys, time
from pathlib import Path
from miaray.data.sources import Remote, Source, locate
url, digest, root, ready, go = sys.argv[1:]
source = Source(name="location", layouts=(("dataset_location.tgz",),), origin="a local mirror",
                remotes=(Remote("dataset_location.tgz", (url,)),), checksums={"dataset_location.tgz": ("sha256", digest)})
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
print(json.dumps(locate(source, Path(root), download=True)))
"""


def test_two_processes_downloading_one_archive_fetch_it_once(tmp_path):
    mirror, root = tmp_path / "mirror", tmp_path / "data"
    mirror.mkdir()
    _tgz(mirror / "dataset_location.tgz", {"bangkok": tabular_rows(300, 446, 30)[0].encode()})
    _SlowArchive.body, _SlowArchive.requests = (mirror / "dataset_location.tgz").read_bytes(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowArchive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dataset_location.tgz"
    checksum = ("sha256", file_digest(mirror / "dataset_location.tgz", "sha256"))
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        procs = [subprocess.Popen([sys.executable, "-c", FETCH, url, checksum[1], str(root), str(flag), str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for flag in ready]
        deadline = time.monotonic() + 120
        while not all(flag.exists() for flag in ready):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        server.shutdown()
    answers = [tuple(json.loads(out)) if p.returncode == 0 else err for p, (out, err) in zip(procs, outputs)]
    assert answers == [("dataset_location.tgz",)] * 2
    assert _SlowArchive.requests == ["/dataset_location.tgz"]  # fetched once; the other process waited
    assert (root / "dataset_location.tgz").read_bytes() == _SlowArchive.body
    assert sorted(path.name for path in root.iterdir()) == ["dataset_location.tgz"]  # no lock or partial file left
