"""The reference judge's grades must not depend on Python's hash seed (set iteration order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import json
from collections import Counter
from labeling import rubric
tied = sorted(p for p, n in Counter(p for p, _ in rubric._TYPE_PHRASES).items() if n > 1)
queries = [f"black {p} women" for p in tied] + ["black tights women", "navy leggings", "red denim skirt"]
products = ["Black Leggings | Leggings | Black | Women", "Black Tights | Tights | Black | Women", "Red Skirt | Skirts | Red | Women"]
print(json.dumps({"tied": tied, "grades": [[q, p, list(rubric.grade(q, p))] for q in queries for p in products],
                  "parses": [str(rubric.parse_query(q)) for q in queries]}))
"""


def test_grades_are_the_same_whatever_the_hash_seed():
    outs = []
    for seed in ("0", "3", "7", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert "tight" in outs[0]["tied"]  # the phrase that used to flip between two types
    assert all(o == outs[0] for o in outs[1:])
