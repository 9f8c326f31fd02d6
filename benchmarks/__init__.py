"""Speed and comparison benchmarks: scripts that print tables and write JSON results (never timed assertions)."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | Path, data: dict) -> Path:
    """A benchmark's results file (its folder created), indented, and a line saying where it went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
    return path
