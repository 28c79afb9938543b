"""Keeping Python's garbage collector out of the scheduling loop.

After start-up, hundreds of thousands of long-lived objects (model modules, tokenizer tables)
sit in the oldest generation, and every full collection walks them all: a 100+ ms pause in the
middle of a step. Freezing them moves them out of the collector's sight; a larger young-generation
threshold keeps collections of the loop's short-lived objects rare.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 50_000


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def release_frozen_objects() -> None:
    """Hands frozen objects back to the collector. An offline Engine froze its model with the
    rest of the process at start-up; without this, a shut-down Engine's reference cycles are never
    collected, and a second Engine in the same process finds the first one's GPU memory taken."""
    gc.unfreeze()
