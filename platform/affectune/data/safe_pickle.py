"""Load pickles without executing arbitrary code: only containers, scalars and numpy arrays.

`pickle.load` calls whatever global a file names (`os.system`, `builtins.eval`, ...). Here
`find_class` admits an explicit allow-list: builtin containers and scalars, `collections`'
OrderedDict/defaultdict, and the few numpy callables that rebuild arrays, scalars and dtypes.
Anything else raises `DatasetError` naming the file and the refused global before it is ever
called. The opcode stream is checked first (`check_opcodes`) so a damaged memo index cannot
make the unpickler allocate gigabytes. Pickles written under numpy 1 name `numpy.core.*`; those names are mapped to numpy 2's
`numpy._core.*` so real MMSA files load under either numpy.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
import pickletools
from pathlib import Path

import numpy as np

from affectune.data.schema import DatasetError

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"

ALLOWED: frozenset[tuple[str, str]] = frozenset({
    *(("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray",
                                "bytes", "str", "int", "float", "complex", "bool", "slice")),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("_codecs", "encode"),  # protocol <= 2 stores bytes as latin-1 text
    ("numpy", "ndarray"), ("numpy", "dtype"),
    (f"{_NUMPY_CORE}.multiarray", "_reconstruct"), (f"{_NUMPY_CORE}.multiarray", "scalar"),
    (f"{_NUMPY_CORE}.numeric", "_frombuffer"),  # protocol 5 arrays
})
"""(module, name) pairs that `find_class` may return, after numpy 1 -> 2 renaming."""


def _normalise(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (`__builtin__`) as pickle's fix_imports maps them, then numpy 1's
    `numpy.core.x` as numpy 2's `numpy._core.x` (and vice versa)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    for old in ("numpy.core", "numpy._core"):
        if module == old or module.startswith(old + "."):
            return _NUMPY_CORE + module[len(old):], name
    return module, name


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global outside `ALLOWED`."""

    def __init__(self, file, *, name: str):
        super().__init__(file, encoding="latin1")
        self.name = name

    def find_class(self, module: str, name: str):
        real, real_name = _normalise(module, name)
        if (real, real_name) not in ALLOWED:
            raise DatasetError(
                f"refused to load global {module}.{name}: only builtin containers, scalars and "
                f"numpy arrays are allowed in dataset pickles (nothing was executed)",
                file=self.name)
        return getattr(importlib.import_module(real), real_name)

    def persistent_load(self, pid):
        raise DatasetError(f"refused persistent id {pid!r}: not a plain data pickle",
                           file=self.name)


_MEMO_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def check_opcodes(fh, *, name: str) -> None:
    """Walk the opcode stream without building anything (`pickletools.genops` only parses)
    and refuse memo indices beyond the opcode count: a pickler numbers its memo 0, 1, 2, ...,
    while the C unpickler sizes its memo table by the largest index it meets, so one damaged
    byte (e.g. LONG_BINPUT 0x40000000) would allocate gigabytes before any error."""
    count = 0
    for op, arg, pos in pickletools.genops(fh):
        count += 1
        if op.name in _MEMO_OPS and int(arg) > count:
            raise DatasetError(f"memo index {arg} at byte {pos} is beyond the {count} opcodes "
                               "read so far: a damaged pickle", file=name)


def safe_loads(data: bytes, *, name: str = "<bytes>"):
    """Unpickle `data` with the allow-list; errors name `name`."""
    try:
        check_opcodes(io.BytesIO(data), name=name)
        return SafeUnpickler(io.BytesIO(data), name=name).load()
    except DatasetError:
        raise
    except Exception as e:  # corrupt or truncated data of any kind
        raise DatasetError(f"not a readable pickle ({type(e).__name__}: {e})", file=name) from None


def safe_load(path: str | Path):
    """Unpickle the file at `path` with the allow-list."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            check_opcodes(fh, name=str(path))
            fh.seek(0)
            return SafeUnpickler(fh, name=str(path)).load()
    except DatasetError:
        raise
    except OSError as e:
        raise DatasetError(f"cannot open: {e.strerror or e}", file=str(path)) from None
    except Exception as e:
        raise DatasetError(f"not a readable pickle ({type(e).__name__}: {e})",
                           file=str(path)) from None
