"""Rewrite tests/durations.json (seconds per test file) from a pytest JUnit XML report.

Usage: python tests/durations.py REPORT.xml   (see tests/README.md)
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def per_file(report: Path) -> dict[str, float]:
    seconds: Counter[str] = Counter()
    for case in ET.parse(report).iter("testcase"):
        parts = (case.get("classname") or "").split(".")
        while parts and not Path(*parts).with_suffix(".py").is_file():
            parts.pop()             # a test class's name after the module's
        if parts:
            seconds[str(Path(*parts).with_suffix(".py"))] += float(case.get("time") or 0)
    return {f: round(s, 1) for f, s in sorted(seconds.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        sys.exit("usage: python tests/durations.py REPORT.xml (a pytest --junitxml report)")
    out = Path(__file__).with_name("durations.json")
    out.write_text(json.dumps(per_file(Path(sys.argv[1])), indent=1) + "\n")
    print(f"{out}: {len(json.loads(out.read_text()))} files")
