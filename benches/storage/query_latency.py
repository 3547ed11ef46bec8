#!/usr/bin/env python3
"""Side-by-side query latency over data read from blocks: Prometheus vs promflow.

Backfills the same OpenMetrics file once per system (promtool / promflow
`tsdb create-blocks-from openmetrics`), then starts each server alone in turn on its blocks
(pinned to CPU 1, empty scrape config) and times the same HTTP API queries from this process
(pinned to CPU 0): series and label values over the file's 2 h, a 1 h `query_range` of a
`rate()` over about 10k series and its `sum by (mode)`. Each query is warmed once, then timed
--runs times; the median per query, per server start, is kept; servers alternate
(Prometheus, promflow, Prometheus, ...) for --rounds rounds, each a fresh start, and the
report gives the median of the per-round medians. Result sizes (series, points, a value
checksum) are compared between the two servers and mismatches are reported, not hidden.

Stdlib only. Prints a Markdown report; raw figures go to WORKDIR/results.json.
"""
import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

T0 = 1793491200  # 2026-11-01T00:00:00Z, the generator's default start
SEL = 'node_cpu_seconds_total{mode=~"idle|user"}'  # 2 of 8 modes: 9,620 series in dataset (a) at 100k


def queries():
    rng = {"start": str(T0), "end": str(T0 + 7200)}
    qr = {"start": str(T0 + 1800 + 7), "end": str(T0 + 1800 + 7 + 3600), "step": "60"}
    return [
        ("series " + SEL, "/api/v1/series", dict({"match[]": SEL}, **rng)),
        ("label instance values", "/api/v1/label/instance/values", dict(rng)),
        ("label __name__ values", "/api/v1/label/__name__/values", dict(rng)),
        (f"query_range rate({SEL}[5m]) 1h step 60s", "/api/v1/query_range",
         dict({"query": f"rate({SEL}[5m])"}, **qr)),
        (f"query_range sum by (mode) (rate({SEL}[5m])) 1h step 60s", "/api/v1/query_range",
         dict({"query": f"sum by (mode) (rate({SEL}[5m]))"}, **qr)),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, params: dict, timeout: float = 300.0):
    url = f"http://127.0.0.1:{port}{path}?" + urllib.parse.urlencode(params)
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read()
    return time.perf_counter() - t, body


def shape(body: bytes) -> dict:
    """What must agree between the servers: counts and a value checksum."""
    d = json.loads(body)
    if d.get("status") != "success":
        return {"error": d}
    data = d["data"]
    if isinstance(data, list):  # series, label values
        return {"items": len(data)}
    res = data["result"]
    pts = 0
    total = 0.0
    for s in res:
        for _, v in s.get("values", []):
            pts += 1
            f = float(v)
            if math.isfinite(f):
                total += f
    return {"series": len(res), "points": pts, "value_sum": total}


def rss_kb(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def backfill(name, cmd, out_dir, log_path):
    if os.path.exists(out_dir):
        print(f"# {name}: {out_dir} exists, no backfill", file=sys.stderr)
        return None
    # into a temporary directory, renamed on success: a partial backfill is never taken for done
    tmp = out_dir + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    print(f"# {name}: backfilling into {out_dir} ...", file=sys.stderr)
    t = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.run(["taskset", "-c", "1"] + cmd + [tmp], stdout=log, stderr=subprocess.STDOUT).returncode
    dt = time.time() - t
    if rc != 0:
        sys.exit(f"{name} backfill failed (rc {rc}), see {log_path}")
    os.rename(tmp, out_dir)
    return dt


def start_server(name, argv, log_path):
    log = open(log_path, "a")
    log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n")
    log.flush()
    p = subprocess.Popen(["taskset", "-c", "1"] + argv, stdout=log, stderr=subprocess.STDOUT)
    return p, log


def wait_ready(p, port, limit=120.0):
    t = time.time()
    while time.time() - t < limit:
        if p.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return time.time() - t
        except Exception:
            pass
        time.sleep(0.2)
    return None


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default="/tmp/bench-storage/full/a_100000s_2h.om")
    ap.add_argument("--workdir", default="/tmp/bench-storage/ql")
    ap.add_argument("--promflow", default=os.environ.get("PROMFLOW", "target/release/promflow"))
    ap.add_argument("--prometheus", default="prometheus")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=9)
    a = ap.parse_args(argv)

    os.sched_setaffinity(0, {0})  # the client; servers and backfills run under taskset -c 1
    os.makedirs(a.workdir, exist_ok=True)
    cfg = os.path.join(a.workdir, "empty.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 15s\n")

    systems = {
        "prometheus": {
            "data": os.path.join(a.workdir, "prom"),
            "backfill": [a.promtool, "tsdb", "create-blocks-from", "openmetrics", a.input],
            "serve": lambda d, port: [a.prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={d}",
                                      f"--web.listen-address=127.0.0.1:{port}",
                                      "--storage.tsdb.retention.time=100y"],
        },
        "promflow": {
            "data": os.path.join(a.workdir, "pf"),
            "backfill": [a.promflow, "tsdb", "create-blocks-from", "openmetrics", a.input],
            "serve": lambda d, port: [a.promflow, f"--config.file={cfg}", f"--storage.tsdb.path={d}",
                                      f"--web.listen-address=127.0.0.1:{port}"],
        },
    }
    results = {"input": a.input, "rounds": a.rounds, "runs": a.runs, "selector": SEL,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backfill_s": {}, "rounds_raw": []}
    for name, s in systems.items():
        results["backfill_s"][name] = backfill(name, s["backfill"], s["data"],
                                               os.path.join(a.workdir, f"backfill_{name}.log"))

    qs = queries()
    for rnd in range(a.rounds):
        for name, s in systems.items():
            port = free_port()
            p, log = start_server(name, s["serve"](s["data"], port), os.path.join(a.workdir, f"{name}.log"))
            entry = {"round": rnd, "system": name, "queries": {}}
            try:
                ready = wait_ready(p, port)
                if ready is None:
                    entry["error"] = f"not ready in 120 s (exit {p.poll()})"
                    print(f"# round {rnd} {name}: {entry['error']}", file=sys.stderr)
                    results["rounds_raw"].append(entry)
                    continue
                entry["ready_s"] = ready
                entry["rss_kb_start"] = rss_kb(p.pid)
                for label, path, params in qs:
                    q = {}
                    try:
                        dt, body = get(port, path, params)
                        q["warm_ms"] = dt * 1e3
                        q["bytes"] = len(body)
                        q["shape"] = shape(body)
                        times = []
                        for _ in range(a.runs):
                            dt, _b = get(port, path, params)
                            times.append(dt * 1e3)
                        q["ms"] = times
                        q["median_ms"] = statistics.median(times)
                    except Exception as e:  # noqa: BLE001 - report and go on
                        q["error"] = repr(e)
                    entry["queries"][label] = q
                    print(f"# round {rnd} {name}: {label}: "
                          f"{q.get('median_ms', float('nan')):.1f} ms {q.get('shape', q.get('error'))}",
                          file=sys.stderr)
                entry["rss_kb_after"] = rss_kb(p.pid)
            finally:
                stop(p)
                log.close()
            results["rounds_raw"].append(entry)

    # summary: median of the per-round medians; result shapes compared between the systems
    summary = []
    for label, _, _ in qs:
        row = {"query": label}
        for name in systems:
            meds = [e["queries"][label]["median_ms"] for e in results["rounds_raw"]
                    if e["system"] == name and "median_ms" in e["queries"].get(label, {})]
            row[name + "_ms"] = statistics.median(meds) if meds else None
            row[name + "_round_medians"] = meds
            shapes = [e["queries"][label].get("shape") for e in results["rounds_raw"]
                      if e["system"] == name and label in e["queries"]]
            row[name + "_shape"] = shapes[0] if shapes else None
        ps, fs = row["prometheus_shape"], row["promflow_shape"]
        diffs = []
        if ps and fs:
            for k in sorted(set(ps) | set(fs)):
                if k == "value_sum":
                    x, y = ps.get(k), fs.get(k)
                    if x is None or y is None or abs(x - y) > 1e-9 * max(abs(x), abs(y), 1.0):
                        diffs.append(f"{k}: {x!r} vs {y!r}")
                elif ps.get(k) != fs.get(k):
                    diffs.append(f"{k}: {ps.get(k)} vs {fs.get(k)}")
        row["mismatch"] = diffs
        pm, fm = row["prometheus_ms"], row["promflow_ms"]
        row["ratio"] = fm / pm if pm and fm else None
        summary.append(row)
    results["summary"] = summary
    results["rss_kb_after"] = {n: [e.get("rss_kb_after") for e in results["rounds_raw"] if e["system"] == n]
                               for n in systems}
    results["ready_s"] = {n: [e.get("ready_s") for e in results["rounds_raw"] if e["system"] == n]
                          for n in systems}
    with open(os.path.join(a.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    print(f"Median of {a.rounds} per-start medians of {a.runs} timed runs (1 warm-up each); "
          f"selector `{SEL}`.\n")
    print("| query | result (Prometheus) | Prometheus ms | promflow ms | promflow/Prometheus |")
    print("|---|---|---|---|---|")
    for r in summary:
        sh = r["prometheus_shape"] or {}
        res = (f"{sh['items']} items" if "items" in sh else
               f"{sh.get('series')} series, {sh.get('points')} points" if "series" in sh else str(sh))
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
        qlabel = r["query"].replace("|", "\\|")  # a bare | would split the Markdown cell
        print(f"| `{qlabel}` | {res} | {fmt(r['prometheus_ms'])} | {fmt(r['promflow_ms'])} | {ratio} |")
    print()
    for r in summary:
        if r["mismatch"]:
            print(f"* MISMATCH `{r['query']}`: " + "; ".join(r["mismatch"]))
    for n in systems:
        rss = [x.get("VmRSS") for x in results["rss_kb_after"][n] if x]
        hwm = [x.get("VmHWM") for x in results["rss_kb_after"][n] if x]
        rd = [x for x in results["ready_s"][n] if x is not None]
        print(f"* {n}: RSS after the queries {', '.join(f'{v / 1024:.0f}' for v in rss)} MiB "
              f"(peak {', '.join(f'{v / 1024:.0f}' for v in hwm)} MiB); "
              f"ready after {', '.join(f'{v:.1f}' for v in rd)} s")


if __name__ == "__main__":
    main()
