"""A GGUF file's tensor table, read straight from its header.

gguf-py's GGUFReader decodes every metadata value into numpy views first: 8-12 s on the
development machine for the embedded model's 49k-entry vocabulary, where this reads the same
table in a fraction of a second by skipping over the values it does not need. Both the float32
weights (gguf_weights.py) and the CPU's quantized blocks (gguf_blocks.py) are read through it.
Little-endian files only (what llama.cpp writes); anything else is a ValueError, on which the
weights go to transformers' own reader and the products keep the float32 weights.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

# Bytes of GGUF's scalar metadata types (strings and arrays have their own layouts).
_V = GGUFValueType
_SCALAR_BYTES: dict[int, int] = {
    _V.UINT8: 1, _V.INT8: 1, _V.UINT16: 2, _V.INT16: 2, _V.UINT32: 4, _V.INT32: 4,
    _V.FLOAT32: 4, _V.BOOL: 1, _V.UINT64: 8, _V.INT64: 8, _V.FLOAT64: 8,
}  # fmt: skip
# Tensor types gguf-py hands out as typed elements; every other type as its raw bytes.
_G = GGMLQuantizationType
_ELEMENT_TYPES: dict[int, type[np.generic]] = {
    _G.F16: np.float16, _G.F32: np.float32, _G.F64: np.float64, _G.I8: np.int8,
    _G.I16: np.int16, _G.I32: np.int32, _G.I64: np.int64,
}  # fmt: skip
_MAX_DIMS = 4  # ggml's GGML_MAX_DIMS


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    ggml_type: int
    dims: tuple[int, ...]  # fastest first, as GGUF lists them
    offset: int  # from the start of the file


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    architecture: str  # "general.architecture"
    keys: frozenset[str]  # the metadata keys present (their values are not read)
    tensors: dict[str, TensorInfo]  # in file order


class _Cursor:
    def __init__(self, data: np.ndarray) -> None:
        self.data, self.pos = data.data, 0  # ndarray.data: a memoryview of the map

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.take("Q")
        self.pos += size
        return bytes(self.data[self.pos - size : self.pos]).decode("utf-8", "replace")

    def skip_value(self, kind: int) -> None:
        if kind == GGUFValueType.STRING:
            size = self.take("Q")  # read before adding: `pos += take()` loses take's advance
            self.pos += size
        elif kind == GGUFValueType.ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALAR_BYTES:
                self.pos += count * _SCALAR_BYTES[item]  # count is read: no lost advance
            else:
                for _ in range(count):
                    self.skip_value(item)
        else:
            self.pos += _SCALAR_BYTES[kind]


def open_gguf(path: str) -> tuple[np.ndarray, GGUFHeader]:
    """The file mapped read-only (numpy's map: views of it keep it open, so it closes when the
    last one goes) and its header; a ValueError naming `path` for anything that is not a
    readable little-endian GGUF of version 2 or later."""
    try:
        data = np.memmap(path, np.uint8, mode="r")
    except ValueError as exc:  # an empty file cannot be mapped
        raise ValueError(f"{path!r} is not a GGUF file: {exc}") from exc
    if bytes(data[:4]) != b"GGUF":
        raise ValueError(f"{path!r} is not a GGUF file")
    try:
        return data, _read_header(data)
    except (struct.error, KeyError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"unreadable GGUF header in {path!r}: {exc!r}") from exc


def _read_header(data: np.ndarray) -> GGUFHeader:
    cursor = _Cursor(data)
    cursor.pos = 4
    version, count, fields = cursor.take("I"), cursor.take("Q"), cursor.take("Q")
    if not 2 <= version < 2**16:  # a big-endian file reads as a huge version here
        raise ValueError(f"GGUF version {version} is not supported")
    alignment, architecture, keys = 32, "", set()
    for _ in range(fields):
        key, kind = cursor.string(), cursor.take("I")
        keys.add(key)
        if key == "general.alignment" and kind == GGUFValueType.UINT32:
            alignment = cursor.take("I")
        elif key == "general.architecture" and kind == GGUFValueType.STRING:
            architecture = cursor.string()
        else:
            cursor.skip_value(kind)
    table = []
    for _ in range(count):
        name = cursor.string()
        n_dims = cursor.take("I")
        if not 0 < n_dims <= _MAX_DIMS:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
        dims = tuple(cursor.take("Q") for _ in range(n_dims))
        table.append((name, cursor.take("I"), dims, cursor.take("Q")))
    start = -(-cursor.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, ggml_type, dims, offset in table:
        if name in tensors:
            raise ValueError(f"tensor {name!r} appears twice")
        info = TensorInfo(name, ggml_type, dims, start + offset)
        if info.offset + tensor_bytes(info) > len(data):
            raise ValueError(f"tensor {name!r} runs past the end of the file")
        tensors[name] = info
    return GGUFHeader(architecture, frozenset(keys), tensors)


def tensor_bytes(info: TensorInfo) -> int:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
    return int(np.prod(info.dims)) * size // block


def tensor_array(data: np.ndarray, info: TensorInfo) -> np.ndarray:
    """The tensor as gguf-py's reader hands it to `gguf.quants.dequantize` (a read-only view of
    `data`, the mapped file): typed elements for float and integer types, shaped with the
    slowest dimension first; for block types the raw bytes, each row's blocks as the last."""
    shape = tuple(reversed(info.dims))
    element = _ELEMENT_TYPES.get(info.ggml_type)
    if element is not None:
        return np.frombuffer(data, element, int(np.prod(shape)), info.offset).reshape(shape)
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
    byte_shape = (*shape[:-1], shape[-1] // block * size)
    raw = np.frombuffer(data, np.uint8, int(np.prod(byte_shape)), info.offset)
    return raw.reshape(byte_shape)
