"""Medians (and ranges) per case, key and variant of scripts/ab/time.py's JSON lines."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
vals = defaultdict(list)
vars_, cases, keys = [], [], []
for r in rows:
    for k, v in r.items():
        if k in ("var", "round", "case"):
            continue
        vals[(r["case"], k, r["var"])].append(v)
        if k not in keys:
            keys.append(k)
    if r["var"] not in vars_:
        vars_.append(r["var"])
    if r["case"] not in cases:
        cases.append(r["case"])
print("case  key        " + "".join(f"{v:>22}" for v in vars_))
for c in cases:
    for k in keys:
        cells = []
        for v in vars_:
            x = vals.get((c, k, v))
            cells.append(f"{statistics.median(x):10.4f} [{min(x):.4f}-{max(x):.4f}]" if x else " " * 22)
        if any(s.strip() for s in cells):
            print(f"{c:5} {k:10} " + " ".join(f"{s:>21}" for s in cells))
