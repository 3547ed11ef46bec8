#!/usr/bin/env python3
"""VictoriaMetrics helpers for the disk-size benchmark (stdlib only, Python 3.11).

  vm_tool.py to-prom OM_FILE OUT_FILE
      Rewrites the generator's OpenMetrics file as Prometheus text exposition with millisecond
      timestamps, the form /api/v1/import/prometheus takes: comment lines (# TYPE, # EOF) are
      dropped, `... 1793491200.015` becomes `... 1793491200015` (a textual rewrite, no float
      arithmetic), series and value text are copied byte for byte.

  vm_tool.py verify OM_FILE URL
      Exports every series from VictoriaMetrics at URL (/api/v1/export over the file's time
      range) and compares each exported sample with the file's: the same series, the same
      timestamps, the same float64 bits. Prints a JSON summary (samples compared, missing, extra,
      values differing, max relative error, max error in ULPs, examples).
"""

from __future__ import annotations

import json
import math
import struct
import sys
import urllib.parse
import urllib.request
from array import array


def om_ts_to_ms(ts: str) -> str:
    if "." in ts:
        sec, frac = ts.split(".", 1)
        if len(frac) > 3 or not frac.isdigit():
            raise ValueError(f"timestamp {ts!r} is not at millisecond precision")
        return sec + frac.ljust(3, "0")
    return ts + "000"


def to_prom(om_path: str, out_path: str) -> None:
    n = 0
    with open(om_path, encoding="utf-8") as src, open(out_path, "w", encoding="utf-8", buffering=8 << 20) as dst:
        buf = []
        for line in src:
            if line.startswith("#"):
                continue
            head, ts = line.rstrip("\n").rsplit(" ", 1)
            buf.append(f"{head} {om_ts_to_ms(ts)}\n")
            n += 1
            if len(buf) >= 100_000:
                dst.write("".join(buf))
                buf.clear()
        dst.write("".join(buf))
    print(f"wrote {out_path}: {n} samples", file=sys.stderr)


def parse_series(s: str) -> tuple:
    """'name{a="x",b="y"}' -> (name, (('a','x'),('b','y'))) with labels sorted. No escapes expected."""
    if "{" not in s:
        return (s, ())
    name, rest = s.split("{", 1)
    rest = rest.rstrip("}")
    labels = []
    i = 0
    while i < len(rest):
        eq = rest.index("=", i)
        k = rest[i:eq]
        assert rest[eq + 1] == '"'
        j = eq + 2
        v = []
        while rest[j] != '"':
            if rest[j] == "\\":
                j += 1
                v.append({"n": "\n"}.get(rest[j], rest[j]))
            else:
                v.append(rest[j])
            j += 1
        labels.append((k, "".join(v)))
        i = j + 1
        if i < len(rest) and rest[i] == ",":
            i += 1
    return (name, tuple(sorted(labels)))


def load_expected(om_path: str):
    series = {}
    prev_head, cur = None, None
    tmin, tmax = None, None
    with open(om_path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            head, val, ts = line.rstrip("\n").rsplit(" ", 2)
            if head != prev_head:
                key = parse_series(head)
                cur = series.setdefault(key, (array("q"), array("d")))
                prev_head = head
            t = int(om_ts_to_ms(ts))
            cur[0].append(t)
            cur[1].append(float(val))
            if tmin is None or t < tmin:
                tmin = t
            if tmax is None or t > tmax:
                tmax = t
    return series, tmin, tmax


def bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def verify(om_path: str, url: str) -> dict:
    expected, tmin, tmax = load_expected(om_path)
    n_expected = sum(len(v[0]) for v in expected.values())
    q = urllib.parse.urlencode({"match[]": '{__name__=~".+"}', "start": f"{tmin / 1000:.3f}",
                                "end": f"{tmax / 1000:.3f}"})
    stats = {"series_expected": len(expected), "samples_expected": n_expected, "series_exported": 0,
             "samples_exported": 0, "samples_compared": 0, "missing_series": 0, "extra_series": 0,
             "timestamp_mismatch_series": 0, "values_differing": 0, "max_rel_error": 0.0, "max_ulps": 0,
             "examples": [], "worst": [], "by_metric": {}}
    worst = []  # (rel, series, file value, vm value), the largest few
    seen = set()
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}", timeout=3600) as resp:
        for raw in resp:
            if not raw.strip():
                continue
            obj = json.loads(raw)
            m = obj["metric"]
            key = (m.get("__name__", ""), tuple(sorted((k, v) for k, v in m.items() if k != "__name__")))
            stats["series_exported"] += 1
            stats["samples_exported"] += len(obj["values"])
            exp = expected.get(key)
            if exp is None:
                stats["extra_series"] += 1
                continue
            seen.add(key)
            ets, evals = exp
            # the export is in time order per series; the file is too
            if list(ets) != obj["timestamps"]:
                stats["timestamp_mismatch_series"] += 1
                continue
            bm = stats["by_metric"].setdefault(key[0], {"compared": 0, "differing": 0, "max_rel_error": 0.0})
            for want, got in zip(evals, obj["values"]):
                got = float(got)
                stats["samples_compared"] += 1
                bm["compared"] += 1
                if bits(want) != bits(got):
                    stats["values_differing"] += 1
                    bm["differing"] += 1
                    rel = abs(got - want) / abs(want) if want != 0 else math.inf
                    ulps = abs(bits(got) - bits(want)) if (want > 0) == (got > 0) else -1
                    stats["max_rel_error"] = max(stats["max_rel_error"], rel)
                    bm["max_rel_error"] = max(bm["max_rel_error"], rel)
                    stats["max_ulps"] = max(stats["max_ulps"], ulps)
                    if len(stats["examples"]) < 8:
                        stats["examples"].append({"series": key[0], "file": repr(want), "vm": repr(got)})
                    if len(worst) < 8 or rel > worst[0][0]:
                        worst.append((rel, key[0], repr(want), repr(got)))
                        worst.sort()
                        del worst[:-8]
    stats["missing_series"] = len(expected) - len(seen)
    stats["worst"] = [{"rel_error": r, "series": n, "file": w, "vm": g} for r, n, w, g in reversed(worst)]
    return stats


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "to-prom":
        to_prom(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "verify":
        print(json.dumps(verify(sys.argv[2], sys.argv[3].rstrip("/")), indent=1))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
