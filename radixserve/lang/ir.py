"""`sglang.lang.ir`'s public names that programs import: the dtype regexes."""

from __future__ import annotations

from ..frontend_lang.ir import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR

__all__ = ["REGEX_BOOL", "REGEX_FLOAT", "REGEX_INT", "REGEX_STR"]
