"""Read safetensors files without torch: the header, and tensors as numpy arrays.

The format: 8-byte little-endian header length, a JSON header mapping tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the header),
an optional ``__metadata__`` entry, then the raw little-endian bytes. Nothing is unpickled.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from promptreg.errors import InputError

MAX_HEADER = 100 * 1024 * 1024
_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                 "I8": "i1", "U8": "u1", "BOOL": "?"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "U32": 4, "U64": 8, "C64": 8}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offset
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse and sanity-check a safetensors header. Returns (tensors by name, metadata).

    Every entry must have a string dtype, a list of non-negative int dimensions and int offsets
    inside the data region; for known dtypes the byte count must equal numel * itemsize (unknown
    dtypes are accepted so exotic checkpoints can still be fingerprinted)."""
    path = Path(path)
    bad = f"malformed safetensors file {path}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise InputError(f"{bad}: shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER or 8 + n > size:
                raise InputError(f"{bad}: header length {n} does not fit the file")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, or an int with too many digits
        raise InputError(f"{bad}: bad JSON header ({exc})") from None
    except RecursionError:
        raise InputError(f"{bad}: bad JSON header (nested too deeply)") from None
    if not isinstance(header, dict):
        raise InputError(f"{bad}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    base, data_len = 8 + n, size - 8 - n
    out: dict[str, TensorEntry] = {}
    for name, info in header.items():
        try:
            dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{bad}: bad entry for tensor {name!r}") from None
        if (not isinstance(dtype, str) or not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in (b, e))
                or not 0 <= b <= e <= data_len):
            raise InputError(f"{bad}: bad entry for tensor {name!r}")
        count = 1
        for d in shape:
            count *= d
        if dtype in _ITEMSIZE and e - b != count * _ITEMSIZE[dtype]:
            raise InputError(f"{bad}: tensor {name!r} has {e - b} bytes, expected {count * _ITEMSIZE[dtype]} "
                             f"for {dtype} {shape}")
        out[name] = TensorEntry(name, dtype, tuple(shape), base + b, base + e)
    return out, metadata


def load_numpy(path: Path, names: list[str] | None = None):
    """Load tensors as float/int numpy arrays (BF16 is widened to float32)."""
    import numpy as np

    entries, _ = read_header(path)
    result = {}
    with open(path, "rb") as f:
        for name, entry in entries.items():
            if names is not None and name not in names:
                continue
            f.seek(entry.begin)
            buf = f.read(entry.nbytes)
            if entry.dtype == "BF16":
                arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            elif entry.dtype in _NUMPY_DTYPES:
                arr = np.frombuffer(buf, dtype=_NUMPY_DTYPES[entry.dtype])
            else:
                raise InputError(f"{Path(path).name}: tensor {name!r} has unsupported dtype {entry.dtype}")
            result[name] = arr.reshape(entry.shape)
    return result
