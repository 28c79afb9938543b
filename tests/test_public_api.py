"""`import radixserve` is cheap (no torch) and every public name resolves to what it says."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_public_names_resolve_and_the_import_stays_light() -> None:
    code = textwrap.dedent(
        """
        import sys
        import radixserve as rs

        assert "torch" not in sys.modules, "import radixserve loaded torch"
        assert sorted(rs.__all__) == sorted(rs._LAZY)
        for name in rs.__all__:
            value = getattr(rs, name)
            assert getattr(value, "__name__", name) == name, (name, value)
        print("OK", len(rs.__all__))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK")


def test_sglang_module_paths_alias_the_language() -> None:
    """`from sglang.lang.ir import REGEX_INT` ports as `from radixserve.lang.ir import ...`."""
    import radixserve as rs
    from radixserve.lang import choices, ir

    assert (ir.REGEX_INT, ir.REGEX_FLOAT, ir.REGEX_BOOL, ir.REGEX_STR) == (
        rs.REGEX_INT,
        rs.REGEX_FLOAT,
        rs.REGEX_BOOL,
        rs.REGEX_STR,
    )
    assert choices.greedy_token_selection is rs.greedy_token_selection
    assert choices.unconditional_likelihood_normalized is rs.unconditional_likelihood_normalized
