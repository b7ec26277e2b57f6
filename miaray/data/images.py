"""The paper's image datasets in their published formats: CIFAR10/100, SVHN, CHMNIST (Kather 2016)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import scipy.io
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

from miaray.data.cache import Parsed
from miaray.data.real import RealDataset, checked_labels, reading
from miaray.data.safe_pickle import load_cifar_batch
from miaray.data.sources import DatasetFileError, Remote, Source

# Reference normalisation (docs/science.md, Dataset sources and formats): the authors' code's statistics for
# CIFAR (also used for CIFAR100), and its choices for SVHN (0.5, 0.5) and CHMNIST (ImageNet statistics).
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
SVHN_MEAN, SVHN_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CHMNIST_CLASSES = ("01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO",
                   "05_DEBRIS", "06_MUCOSA", "07_ADIPOSE", "08_EMPTY")
CHMNIST_FOLDER = "Kather_texture_2016_image_tiles_5000"
CHMNIST_ZIP = CHMNIST_FOLDER + ".zip"
CHMNIST_URL = "https://zenodo.org/records/53169/files/Kather_texture_2016_image_tiles_5000.zip?download=1"
CHMNIST_SHA384 = ("7d86abe1d04e68b77c055820c2a4c582a1d25d2983e38ab724e"
                  "ac75affce8b7cb2cbf5ba68848dcfd9d84005d87d6790")  # as published by OpenFL's loader
CHMNIST_SIZE = 32  # tiles are 150 x 150; the paper trains on 32 x 32


# ---- CIFAR ---------------------------------------------------------------------------------------
def _cifar(name: str, spec: type[CIFAR10], *, label_key: str, num_classes: int) -> RealDataset:
    """CIFAR as torchvision lays it out: the python-pickle batches, extracted or in the .tar.gz.
    Train batches then the test batch, the order of the authors' code's ConcatDataset."""
    batches = [f"{spec.base_folder}/{file}" for file, _ in spec.train_list + spec.test_list]
    checksums = {f"{spec.base_folder}/{file}": ("md5", md5) for file, md5 in spec.train_list + spec.test_list}
    checksums[spec.filename] = ("md5", spec.tgz_md5)

    expected = (f"a {name} python batch (a pickled dict with 'data', N x 3072 uint8, and {label_key!r}), "
                f"as in {spec.filename} from {spec.url}")

    def parse(root: Path, layout: tuple[str, ...]) -> Parsed:
        if layout == (spec.filename,):
            archive = root / spec.filename
            with reading(name, archive, expected=f"the gzip'd tar {spec.filename} from {spec.url}"), \
                    tarfile.open(archive) as tar:
                blobs = [(f"{archive}:{member}", _tar_member(tar, member, archive=archive)) for member in batches]
        else:
            blobs = [(str(root / member), (root / member).read_bytes()) for member in batches]
        images, labels = [], []
        for where, blob in blobs:
            with reading(name, where, expected=expected):
                batch = load_cifar_batch(blob)  # Python 2 strings as latin-1; nothing in it is executed
            try:
                if not isinstance(batch, dict):
                    raise TypeError(f"it holds a {type(batch).__name__}, not a dict")
                data, batch_labels = np.asarray(batch["data"], dtype=np.uint8), batch[label_key]
            except (KeyError, TypeError, ValueError) as error:
                raise DatasetFileError(f"{name}: {where} is not a CIFAR batch ({error!r}); "
                                       f"expected {expected}") from None
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DatasetFileError(f"{name}: {where} 'data' must be N x 3072 uint8, got {data.shape}")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(checked_labels(np.asarray(batch_labels), where=f"{name}: {where}",
                                         low=0, high=num_classes - 1))
        return Parsed(features=np.concatenate(images), labels=np.concatenate(labels))

    source = Source(name=name, layouts=(tuple(batches), (spec.filename,)),
                    remotes=(Remote(spec.filename, (spec.url,)),), checksums=checksums,
                    origin=f"{spec.url} (the archive torchvision downloads)")
    return RealDataset(source=source, num_classes=num_classes, parse=parse, mean=CIFAR_MEAN, std=CIFAR_STD)


def _tar_member(tar: tarfile.TarFile, member: str, *, archive: Path) -> bytes:
    try:
        handle = tar.extractfile(member)
    except KeyError:
        handle = None
    if handle is None:
        raise DatasetFileError(f"{archive} holds no file {member!r}; is it the published archive?")
    return handle.read()


# ---- SVHN ----------------------------------------------------------------------------------------
SVHN_ORIGIN = "http://ufldl.stanford.edu/housenumbers/ (cropped digits; torchvision.datasets.SVHN)"


def _parse_svhn(root: Path, layout: tuple[str, ...]) -> Parsed:
    """The cropped-digits .mat files: X is 32 x 32 x 3 x N uint8, y is N x 1 with 1..10 (10 = digit 0).
    Train then test, as the authors' code concatenates them."""
    images, labels = [], []
    for file in layout:
        with reading("svhn", root / file, expected=f"a MATLAB (v5) file {file} holding X and y, from {SVHN_ORIGIN}"):
            mat = scipy.io.loadmat(root / file)
        if "X" not in mat or "y" not in mat or mat["X"].ndim != 4 or mat["X"].shape[:3] != (32, 32, 3):
            raise DatasetFileError(f"svhn: {root / file} must hold X (32 x 32 x 3 x N) and y (N x 1)")
        shifted = checked_labels(mat["y"].reshape(-1), where=f"svhn: {root / file}", low=1, high=10)
        images.append(mat["X"].transpose(3, 2, 0, 1).astype(np.uint8))
        labels.append((shifted + 1) % 10)  # the file's label 10 is the digit 0
    return Parsed(features=np.concatenate(images), labels=np.concatenate(labels))


_SVHN_FILES = {split: SVHN.split_list[split] for split in ("train", "test")}  # url, filename, md5
SVHN_DATASET = RealDataset(
    source=Source(name="svhn", layouts=((_SVHN_FILES["train"][1], _SVHN_FILES["test"][1]),),
                  remotes=tuple(Remote(file, (url,)) for url, file, _ in _SVHN_FILES.values()),
                  checksums={file: ("md5", md5) for _, file, md5 in _SVHN_FILES.values()},
                  origin=SVHN_ORIGIN),
    num_classes=10, parse=_parse_svhn, mean=SVHN_MEAN, std=SVHN_STD)


# ---- CHMNIST -------------------------------------------------------------------------------------
def _parse_chmnist(root: Path, layout: tuple[str, ...]) -> Parsed:
    """Kather et al. 2016 tiles: one folder per class (01_TUMOR .. 08_EMPTY) of RGB .tif files, read in
    sorted order (as torchvision's ImageFolder) and resized to 32 x 32 (bilinear, as torchvision)."""
    where = root / layout[0]
    if where.is_dir():
        tiles = [(path.parent.name, str(path), path.read_bytes) for path in where.rglob("*")]
        return _decode_tiles(tiles, where=where)
    with reading("chmnist", where, expected=f"the zip {CHMNIST_ZIP} from {CHMNIST_URL}"), \
            zipfile.ZipFile(where) as archive:
        tiles = [(PurePosixPath(entry).parent.name, f"{where}:{entry}", partial(archive.read, entry))
                 for entry in archive.namelist() if "__MACOSX" not in PurePosixPath(entry).parts]
        return _decode_tiles(tiles, where=where)


def _decode_tiles(tiles: list[tuple[str, str, Callable[[], bytes]]], *, where: Path) -> Parsed:
    """Decode the (class folder, path, reader) entries that are .tif tiles in one of the 8 class folders."""
    chosen = sorted((CHMNIST_CLASSES.index(folder), path, read) for folder, path, read in tiles
                    if folder in CHMNIST_CLASSES and PurePosixPath(path).suffix.lower() in (".tif", ".tiff"))
    present = {label for label, _, _ in chosen}
    missing = [folder for index, folder in enumerate(CHMNIST_CLASSES) if index not in present]
    if missing:
        raise DatasetFileError(f"chmnist: {where} has no .tif tiles in the class folder(s) {', '.join(missing)}; "
                         f"expected the folders {', '.join(CHMNIST_CLASSES)}")
    images = np.stack([_resized(read, where=path) for _, path, read in chosen])
    return Parsed(features=images, labels=np.array([label for label, _, _ in chosen], dtype=np.int64))


def _resized(read: Callable[[], bytes], *, where: str) -> np.ndarray:
    with reading("chmnist", where, expected="an RGB .tif tile of the Kather 2016 texture set"):
        with Image.open(io.BytesIO(read())) as tile:
            small = tile.convert("RGB").resize((CHMNIST_SIZE, CHMNIST_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)


CHMNIST_DATASET = RealDataset(
    source=Source(name="chmnist", layouts=((CHMNIST_FOLDER,), (CHMNIST_ZIP,)),
                  remotes=(Remote(CHMNIST_ZIP, (CHMNIST_URL,)),),
                  checksums={CHMNIST_ZIP: ("sha384", CHMNIST_SHA384)},
                  origin=f"Zenodo record 53169 (Kather et al. 2016), {CHMNIST_URL}"),
    num_classes=len(CHMNIST_CLASSES), parse=_parse_chmnist, mean=IMAGENET_MEAN, std=IMAGENET_STD)

IMAGE_DATASETS: dict[str, RealDataset] = {
    "cifar10": _cifar("cifar10", CIFAR10, label_key="labels", num_classes=10),
    "cifar100": _cifar("cifar100", CIFAR100, label_key="fine_labels", num_classes=100),
    "svhn": SVHN_DATASET,
    "chmnist": CHMNIST_DATASET,
}
