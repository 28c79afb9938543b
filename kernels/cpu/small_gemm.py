"""Float32 products of a few rows (a CPU decode step) through our own compiled kernel
(native/small_gemm.c): each thread reads its share of the weights once for all rows. This module
also builds and loads the library those kernels live in (with llama_step.py's).

OpenBLAS packs the whole weight matrix on every GEMM call, so from two rows on a product costs
up to twice its one-row time, though reading the weights is what bounds it. A step's 121
SmolLM2-135M products on the 2-core development machine, two threads, in one run
(docs/cpu_profile.md section 8):

    rows          1     2     4     8     16    32    64
    OpenBLAS ms   21.4  37.3  47.3  39.6  50.8  83.8  119.9
    this ms       20.0  21.7  23.5  33.5  47.3  71.3  133.1

Measured again (2026-12-04, same machine, a slower day; the 120 layer products of a step, two
threads): at 32 / 64 / 96 / 128 / 256 rows this kernel took 114 / 229 / 341 / 430 / 931 ms and
OpenBLAS over the row-major weights 135 / 323 / 491 / 526 / 1,458 (over column-major ones 131 /
228 / 350 / 471 / 973): both near the cores' peak from 64 rows on, this kernel never slower. At
1,024 and 2,048 rows it fell to 6.5 and 18.8 s against OpenBLAS's 3.7 and 7.8 (it streams all of
x again for each few rows of W, where OpenBLAS blocks). So products of up to ROWS_UP_TO rows come
here (blas_linear.py decides), larger ones (long prefill chunks) go to OpenBLAS. The library is C compiled on first use with the machine's C compiler ($CC,
else cc) for this CPU (-march=native) and cached under the radixserve cache directory, keyed by
the source, the flags and the CPU; where no compiler works, or RADIXSERVE_CPU_NATIVE=0, every
product stays with BLAS and a warning says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from ...utils.cache_dir import cache_dir
from .quantized import KIND_CODES, QuantizedWeight

logger = logging.getLogger(__name__)

NATIVE_DIR = Path(__file__).parent / "native"
# One library: the products (float32 and quantized weights) and the decode step that calls them
# (llama_step.py).
SOURCES = (
    NATIVE_DIR / "small_gemm.c",
    NATIVE_DIR / "quant_gemm.c",
    NATIVE_DIR / "lane_attention.c",
    NATIVE_DIR / "llama_step.c",
)
HEADERS = (NATIVE_DIR / "small_gemm.h", NATIVE_DIR / "vec.h", NATIVE_DIR / "lane_attention.h")
DISABLE_ENV = "RADIXSERVE_CPU_NATIVE"  # "0": no compiled kernels, BLAS only
ROWS_UP_TO = 256  # products of more rows go to BLAS (module docstring)
BLAS_OVER_ROWS = 128  # the kernel's own products of more rows call BLAS (native/small_gemm.c)
# numpy's OpenBLAS: its cblas_sgemm by the names its builds export, and whether that one takes
# 64-bit integers (scipy-openblas's ILP64 build, in numpy's wheels) or 32-bit ones.
CBLAS_SGEMM_NAMES = (
    ("scipy_cblas_sgemm64_", True),
    ("cblas_sgemm64_", True),
    ("cblas_sgemm", False),
)
MEASURED_ROWS = 16  # ADAPT_ROWS in native/small_gemm.c: the most rows whose form is measured
FLAGS = ("-O3", "-ffp-contract=fast", "-fPIC", "-shared", "-pthread")
ARCH_FLAG = "-march=native"  # tried first; a compiler that refuses it builds without
COMPILE_TIMEOUT_S = 300  # a loaded 2-core machine takes about 10 s


class WeightRef(ctypes.Structure):
    """small_gemm.h's rs_weight_t: a float32 or quantized W for the C products."""

    _fields_ = [
        ("kind", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("scales", ctypes.c_void_p),
        ("dense", ctypes.c_void_p),
    ]

    @classmethod
    def of(cls, weight: torch.Tensor | None, blocks: QuantizedWeight | None = None) -> WeightRef:
        """A reference to the float32 `weight` [N, K] (contiguous), or to its GGUF `blocks` with
        `weight` (may be None) for products of more rows than the blocks serve; the tensors
        must outlive it (the struct holds addresses)."""
        if blocks is not None:
            dense = None if weight is None else weight.data_ptr()
            code = KIND_CODES[blocks.kind]
            return cls(code, blocks.codes.data_ptr(), blocks.scales.data_ptr(), dense)
        if weight is None:
            raise ValueError("a weight or its blocks")
        return cls(0, weight.data_ptr(), None, None)


class SmallGemm:
    """The loaded library: y = x W^T (+ b) over a row-major float32 W or GGUF blocks
    (quantized.py), on `set_threads` threads."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.lib = lib
        self.path = path
        self._set_threads = lib.rs_set_threads
        self._set_threads.argtypes = [ctypes.c_int]
        self._set_threads.restype = ctypes.c_int
        self._linear = lib.rs_linear
        self._linear.argtypes = [
            ctypes.c_void_p,  # x
            ctypes.c_long,  # rows
            ctypes.c_long,  # in features
            ctypes.c_long,  # x's row stride
            ctypes.POINTER(WeightRef),
            ctypes.c_long,  # out features
            ctypes.c_void_p,  # bias or NULL
            ctypes.c_void_p,  # y
        ]
        self._linear.restype = None
        self._dequantize = lib.rs_dequantize
        self._dequantize.argtypes = [
            ctypes.POINTER(WeightRef),
            ctypes.c_long,
            ctypes.c_long,
            ctypes.c_void_p,
        ]
        self._dequantize.restype = None
        self._quantized_rows = lib.rs_quantized_rows
        self._quantized_rows.argtypes = [ctypes.c_int]
        self._quantized_rows.restype = ctypes.c_int
        self._set_measured_forms = lib.rs_set_measured_forms
        self._set_measured_forms.argtypes = [ctypes.c_int]
        self._set_measured_forms.restype = None
        self._set_blas = lib.rs_set_blas
        self._set_blas.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long]
        self._set_blas.restype = None

    def set_threads(self, threads: int) -> int:
        """Threads a product may use (workers start on first need); returns the count in force."""
        return int(self._set_threads(threads))

    def linear(
        self,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None = None,
        blocks: QuantizedWeight | None = None,
    ) -> torch.Tensor:
        """x [M, K] (rows may be strided, elements contiguous) W^T, W given as a contiguous
        float32 [N, K], its GGUF `blocks`, or both (the blocks then serve products of up to
        `quantized_rows` rows, the float32 W more). Every shape and layout is checked here (a
        QuantizedWeight checks its own), since C would read out of bounds."""
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 2:
            raise ValueError("small_gemm takes 2-D float32 CPU rows")
        if weight is not None:
            if weight.dtype != torch.float32 or weight.dim() != 2:
                raise ValueError("small_gemm takes a 2-D float32 W")
            if not weight.is_contiguous():
                raise ValueError("small_gemm needs a row-major (contiguous) W")
        shapes = {tuple(w.shape) for w in (weight, blocks) if w is not None}
        if len(shapes) != 1:
            raise ValueError(f"W and its blocks differ in shape: {sorted(shapes)}")
        shape = shapes.pop()
        if x.shape[1] != shape[1]:
            raise ValueError(f"shapes {tuple(x.shape)} x {shape}^T do not match")
        if x.stride(1) != 1:
            x = x.contiguous()
        rows, features = x.shape
        out_features = shape[0]
        if bias is not None and (bias.shape != (out_features,) or not bias.is_contiguous()):
            raise ValueError(f"bias of shape {tuple(bias.shape)} for {out_features} outputs")
        out = torch.empty((rows, out_features), dtype=torch.float32)
        if rows == 0:
            return out
        ref = WeightRef.of(weight, blocks)
        self._linear(
            x.data_ptr(),
            rows,
            features,
            x.stride(0),
            ctypes.byref(ref),
            out_features,
            None if bias is None else bias.data_ptr(),
            out.data_ptr(),
        )
        return out

    def use_blas(self, over_rows: int) -> bool:
        """Products of more than `over_rows` rows over a float32 W (or the float32 form of
        quantized weights) go through numpy's BLAS (native/small_gemm.c says why); 0: none do.
        False where numpy's BLAS has no cblas_sgemm we can find (our tiles then take them)."""
        found = _numpy_cblas_sgemm() if over_rows > 0 else None
        if found is None:
            self._set_blas(None, 0, 0)
            return over_rows <= 0
        address, ints64 = found
        self._set_blas(address, int(ints64), over_rows)
        return True

    def quantized_rows(self, blocks: QuantizedWeight) -> int:
        """Products of up to this many rows read `blocks` (when given a float32 W too)."""
        return int(self._quantized_rows(KIND_CODES[blocks.kind]))

    def set_measured_forms(self, on: bool) -> None:
        """Whether products of more than `quantized_rows` and up to MEASURED_ROWS rows, given both
        forms of W, read whichever each (weight, row count) has measured faster (on, the default)
        or always the float32 W; the two give the same bits. Clears what was measured."""
        self._set_measured_forms(int(on))

    def dequantize(self, weight: QuantizedWeight) -> torch.Tensor:
        """The float32 W the blocks stand for, by the products' own dequantization."""
        out = torch.empty(weight.shape, dtype=torch.float32)
        ref = WeightRef.of(None, weight)
        self._dequantize(ctypes.byref(ref), weight.shape[0], weight.shape[1], out.data_ptr())
        return out


_state: dict[str, object] = {"tried": False, "kernel": None, "threads": 1}


def small_gemm() -> SmallGemm | None:
    """The compiled kernel, built and loaded on the first call; None where it is turned off or
    cannot be built (the reason is logged once)."""
    if not _state["tried"]:
        _state["tried"] = True
        _state["kernel"] = _load()
        kernel = _state["kernel"]
        if isinstance(kernel, SmallGemm):
            kernel.set_threads(int(_state["threads"]))  # type: ignore[arg-type]
            kernel.use_blas(BLAS_OVER_ROWS)
    kernel = _state["kernel"]
    return kernel if isinstance(kernel, SmallGemm) else None


_CONTROLLERS: list = []


def numpy_openblas_controllers() -> list:
    """numpy's OpenBLAS, found once: threadpoolctl inspects the loaded libraries (slow), and a
    library controller's calls are then one call into it (blas_threads.py sets its threads;
    use_blas takes its cblas_sgemm)."""
    if not _CONTROLLERS:
        import numpy  # noqa: F401  # loads its BLAS
        from threadpoolctl import ThreadpoolController

        _CONTROLLERS.extend(ThreadpoolController().select(internal_api="openblas").lib_controllers)
    return _CONTROLLERS


def _numpy_cblas_sgemm() -> tuple[int, bool] | None:
    """The address of numpy's OpenBLAS cblas_sgemm and whether its integers are 64-bit."""
    for controller in numpy_openblas_controllers():
        for name, ints64 in CBLAS_SGEMM_NAMES:
            function = getattr(controller.dynlib, name, None)
            if function is not None:
                return ctypes.cast(function, ctypes.c_void_p).value or 0, ints64
    return None


def set_small_gemm_threads(threads: int) -> None:
    """The thread count for the kernel's products, applied now if it is loaded, else at load."""
    _state["threads"] = threads
    kernel = _state["kernel"]
    if isinstance(kernel, SmallGemm):
        kernel.set_threads(threads)


def _load() -> SmallGemm | None:
    if os.environ.get(DISABLE_ENV, "1") == "0":
        logger.info("compiled CPU kernels off (%s=0): products go through BLAS", DISABLE_ENV)
        return None
    try:
        path = _build()
        return SmallGemm(ctypes.CDLL(str(path)), path)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        logger.warning("compiled CPU kernels unavailable, products go through BLAS: %s", exc)
        return None


def _compiler() -> str:
    name = os.environ.get("CC") or "cc"
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"no C compiler: {name!r} is not on PATH (set CC)")
    return found


def _cpu_signature() -> str:
    """What -march=native compiles for: the CPU's model and flags (cached builds stay valid on
    this CPU only)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _build() -> Path:
    """The shared library for these sources, flags and CPU: from the cache, else compiled into
    it (written under a temporary name and renamed, so concurrent builds never load a partial
    file)."""
    compiler = _compiler()
    texts = [path.read_bytes() for path in (*SOURCES, *HEADERS)]
    signature = [" ".join(FLAGS).encode(), compiler.encode(), _cpu_signature().encode()]
    key = hashlib.sha256(b"\0".join([*texts, *signature])).hexdigest()[:16]
    target = Path(cache_dir()) / "cpu_kernels" / f"radixserve_cpu-{platform.machine()}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    started = time.monotonic()
    errors = []
    for arch in (ARCH_FLAG, None):
        sources = [str(path) for path in SOURCES]
        command = [compiler, *FLAGS, *([arch] if arch else []), *sources, "-o", str(partial)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
        )
        if done.returncode == 0:
            os.replace(partial, target)
            logger.info(
                "compiled the CPU kernels in %.1f s: %s",
                time.monotonic() - started,
                target,
            )
            return target
        errors.append(f"{' '.join(command)}: {done.stderr.strip()[-500:]}")
    partial.unlink(missing_ok=True)
    raise RuntimeError("compiling failed: " + " | ".join(errors))
