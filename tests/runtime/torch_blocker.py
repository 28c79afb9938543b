"""Python source that, run first in a process, refuses to load torch there and says who tried.

A probe (`importlib.util.find_spec("torch")`, as transformers does) is allowed; loading the module
is refused with an ImportError and reported on stdout after the `BLOCKED` marker.
"""

from __future__ import annotations

import textwrap

BLOCKED = "TORCH IMPORT BLOCKED"
BLOCK_TORCH = textwrap.dedent(
    f"""
    import importlib.abc, sys, traceback

    class RefuseToLoad(importlib.abc.Loader):
        def create_module(self, spec):
            stack = "".join(traceback.format_stack(limit=12))
            print({BLOCKED!r}, spec.name, stack, flush=True)
            raise ImportError("torch may not be imported in this process")

        def exec_module(self, module):
            raise ImportError("torch may not be imported in this process")

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "torch" and not name.startswith("torch."):
                return None
            for finder in sys.meta_path:
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(name, path, target)
                    if spec is not None:
                        spec.loader = RefuseToLoad()
                        return spec
            return None

    sys.meta_path.insert(0, BlockTorch())
    """
)
