"""The SASS lines with the most warp-stall samples, from
`ncu --import REP --page source --csv --print-source sass` on stdin
(scripts/ncu_profile.sh). Rows repeated in the listing are counted once."""
import csv
import sys


def main() -> None:
    rows = list(csv.reader(sys.stdin))
    hdr_i = next(i for i, r in enumerate(rows) if any(c.strip() == "Source" for c in r))
    hdr = rows[hdr_i]
    src = hdr.index("Source")
    samp = next(i for i, c in enumerate(hdr) if c.startswith("Warp Stall Sampling (All"))
    seen = {}
    for r in rows[hdr_i + 1:]:
        if len(r) <= max(src, samp):
            continue
        try:
            seen[(r[0], r[src])] = float(r[samp] or 0)
        except ValueError:
            pass
    total = sum(seen.values()) or 1.0
    print(f"total samples {total:.0f}, {len(seen)} lines")
    top = sorted(((s, a, t) for (a, t), s in seen.items()), reverse=True)
    for s, addr, text in top[:int(sys.argv[1]) if len(sys.argv) > 1 else 40]:
        print(f"{100 * s / total:5.1f}%  {addr:>8}  {text[:110]}")


if __name__ == "__main__":
    main()
