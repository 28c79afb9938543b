"""pyright, in basic mode over the package (configured in pyproject.toml), reports no error.

The seams between the processes and parts are typed (Protocols and ABCs, msgspec Structs); this
keeps them checked. Runs pyright's own CLI, as a developer would: `.venv/bin/pyright`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pyright_reports_no_errors() -> None:
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent)) or shutil.which(
        "pyright"
    )
    assert pyright, "pyright is not installed: pip install -e '.[test]'"
    done = subprocess.run(
        # This interpreter's packages, wherever its environment lives.
        [pyright, "--outputjson", "--project", str(ROOT), "--pythonpath", sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(done.stdout)
    errors = [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert report["summary"]["filesAnalyzed"] > 100
    assert errors == [], "\n".join(errors)
