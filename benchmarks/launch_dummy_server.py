"""The radixserve server on a named model shape with random weights, for serving benchmarks
where no model can be downloaded (the GPU lease):

    python benchmarks/launch_dummy_server.py --model-path llama-3.1-8b-shape --load-format dummy \
        --port 30000 [any server flag]

`--model-path` takes a shape of benchmarks/dummy_model.py (llama-3.1-8b-shape,
tiny-llama-shape); its config and word-level tokenizer are written to a temporary folder, which
the server loads like any model directory (`--served-model-name` defaults to the shape's name),
and which is removed when the server exits. bench_serving reads the tokenizer's path from the
server's /model_info, so it measures prompts with the same tokenizer. Any other model path is
passed through unchanged.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dummy_model import is_shape_name, write_dummy_model_dir  # noqa: E402
from radixserve.runtime.entrypoints.launch_server import parse_args, serve  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="[server] %(asctime)s %(levelname)s %(message)s"
    )
    shape = args.model_path
    if not is_shape_name(shape):
        return serve(args)
    if args.load_format != "dummy":
        raise SystemExit(f"{shape} is a shape without weights: add --load-format dummy")
    with tempfile.TemporaryDirectory(prefix="radixserve-shape-") as folder:
        model_dir = write_dummy_model_dir(str(shape), Path(folder))
        named = args.served_model_name or shape
        return serve(args.replace(model_path=str(model_dir), served_model_name=named))


if __name__ == "__main__":
    sys.exit(main())
