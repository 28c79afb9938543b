"""`python -m radixserve.launch_server --model-path PATH --port 30000` (SGLang's entry point name).

The command line lives in `radixserve.runtime.entrypoints.launch_server`; this module only forwards to it.
"""

from __future__ import annotations

from .runtime.entrypoints.launch_server import main

if __name__ == "__main__":
    main()
