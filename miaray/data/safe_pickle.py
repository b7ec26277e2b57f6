"""Reading CIFAR's pickled batches without executing anything they contain.

A pickle can name any importable callable and have it called while loading (`__reduce__`), so a
batch file is parsed by an unpickler that resolves only what the CIFAR batches use: a dict of
str/bytes keys holding lists (labels, file names), strings and one numpy uint8 array. The published
batches were written by Python 2's cPickle with an old numpy: the array is rebuilt by
`numpy.core.multiarray._reconstruct` (numpy 2 spells it `numpy._core.multiarray._reconstruct`; both are
admitted), `numpy.ndarray` and `numpy.dtype`. A batch pickled again by Python 3 at protocol 2 writes
bytes as `_codecs.encode(text, "latin1")`, admitted for that codec only. Nothing else resolves.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` restricted to latin-1, the only codec a protocol-2 pickle of bytes uses."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed in a CIFAR batch")
    return codecs.encode(text, "latin1", errors)


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]  # numpy's _reconstruct, whatever its module
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,   # numpy < 2 (the published batches)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names in ALLOWED; any other global is an error."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a CIFAR batch (allowed: "
                f"{', '.join(f'{m}.{n}' for m, n in ALLOWED)}); the file is not a published CIFAR batch") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a CIFAR batch")


def load_cifar_batch(blob: bytes) -> Any:
    """The object pickled in a CIFAR batch file's bytes, Python 2 strings decoded as latin-1 (as
    torchvision does). Raises pickle.UnpicklingError for anything outside the batch format."""
    return CifarUnpickler(io.BytesIO(blob), encoding="latin1").load()
