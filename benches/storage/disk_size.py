#!/usr/bin/env python3
"""Side-by-side disk-size benchmark: bytes per sample on disk after a backfill.

Systems, each measured alone in turn on the same generated file, alternating, REPS times:
  promtool  `promtool tsdb create-blocks-from openmetrics FILE OUT` (Prometheus 2.42, Debian)
  vm        VictoriaMetrics (Debian `victoria-metrics`): the same samples POSTed to
            /api/v1/import/prometheus (timestamps rewritten to milliseconds, nothing else),
            then /internal/force_flush, /internal/force_merge, and a wait for the merges
  promflow  `$PROMFLOW tsdb create-blocks-from openmetrics FILE OUT` (the promtool arguments);
            skipped, with a message, while the binary lacks that subcommand

Pinning: every server / backfill process runs under `taskset -c 1`, every client (the curl
that streams the file to VictoriaMetrics) under `taskset -c 0`; promtool and promflow are
single processes and have no client. Go programs size GOMAXPROCS from the affinity mask, so
promtool and VictoriaMetrics run with GOMAXPROCS=1.

Fixed by this script (not by the caller): sample interval 15 s, no timestamp jitter, seed 1,
start 2026-11-01T00:00:00Z, VictoriaMetrics flags (-retentionPeriod=100y, no dedup, default
-precisionBits=64), merge poll period 1 s. The caller picks the size (--series, --hours) and
the number of repetitions (--reps, at least 3 for the report).

Measured per run: on-disk bytes (`du -sb`, apparent size) of the output directory / the
VictoriaMetrics data and indexdb directories after the forced merge, divided by the number of
samples in the file; wall-clock time of the backfill (promtool, promflow) or of the import
plus force_flush (VictoriaMetrics; the forced merge is timed separately).
Once per dataset (first repetition) VictoriaMetrics' data is exported back and compared with
the file bit for bit (vm_tool.py verify).

The report (Markdown, medians per system, ratios to promtool) goes to stdout; every run's raw
figures go to WORKDIR/results.json. Generated data stay in WORKDIR (default /tmp/bench-storage).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTERVAL = "15s"
JITTER_MS = 0
SEED = 1
START = "2026-11-01T00:00:00Z"
POLL_S = 1.0
CPU_SERVER = "1"
CPU_CLIENT = "0"
VM_FLAGS = ["-retentionPeriod=100y", "-loggerLevel=ERROR", "-search.maxUniqueTimeseries=10000000"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def du_sb(*paths: Path) -> int:
    total = 0
    for p in paths:
        if p.exists():
            total += int(subprocess.run(["du", "-sb", str(p)], capture_output=True, text=True,
                                        check=True).stdout.split()[0])
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 600) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def vm_metrics(base: str) -> dict[str, float]:
    out = {}
    for line in http_get(f"{base}/metrics", 60).splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


# ----------------------------------------------------------------------------------------------
# data

def ensure_data(workdir: Path, dataset: str, series: int, hours: float) -> tuple[Path, Path, dict]:
    om = workdir / f"{dataset}_{series}s_{hours:g}h.om"
    prom = om.with_suffix(".prom")
    manifest_path = Path(str(om) + ".json")
    want = {"dataset": dataset, "seed": SEED, "jitter_ms": JITTER_MS, "interval_ms": 15000}
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() and om.exists() else None
    if manifest is None or any(manifest.get(k) != v for k, v in want.items()) \
            or manifest.get("bytes") != om.stat().st_size:
        log(f"generating {om}")
        t = time.time()
        subprocess.run(["taskset", "-c", CPU_CLIENT, sys.executable, str(HERE / "gen_openmetrics.py"),
                        "--dataset", dataset, "--series", str(series), "--hours", f"{hours:g}",
                        "--interval", INTERVAL, "--jitter-ms", str(JITTER_MS), "--seed", str(SEED),
                        "--start", START, str(om)], check=True, stdout=subprocess.DEVNULL)
        log(f"generated in {time.time() - t:.0f}s")
        manifest = json.loads(manifest_path.read_text())
        if prom.exists():
            prom.unlink()
    if not prom.exists():
        log(f"converting {om.name} for VictoriaMetrics")
        subprocess.run(["taskset", "-c", CPU_CLIENT, sys.executable, str(HERE / "vm_tool.py"), "to-prom",
                        str(om), str(prom) + ".tmp"], check=True)
        os.rename(str(prom) + ".tmp", prom)
    return om, prom, manifest


# ----------------------------------------------------------------------------------------------
# systems

def run_blocks_tool(cmd: list[str], om: Path, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    t = time.monotonic()
    p = subprocess.run(["taskset", "-c", CPU_SERVER] + cmd + ["tsdb", "create-blocks-from", "openmetrics",
                                                             str(om), str(out)],
                       capture_output=True, text=True)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-2000:]}")
    # file sizes grouped by name (chunk segments under "chunks/"), over every block; the blocks
    # are the directories that hold a meta.json, wherever the tool puts them
    by_file: dict[str, int] = {}
    metas = list(out.rglob("meta.json")) if out.exists() else []
    for f in (out.rglob("*") if out.exists() else []):
        if f.is_file():
            name = f.parent.name + "/" if f.parent.name == "chunks" else f.name
            by_file[name] = by_file.get(name, 0) + f.stat().st_size
    return {"wall_s": wall, "bytes": du_sb(out), "blocks": len(metas), "bytes_by_file": by_file,
            "stdout_tail": p.stdout[-1500:]}


def run_promtool(om: Path, _prom: Path, run_dir: Path, _ctx: dict) -> dict:
    return run_blocks_tool(["promtool"], om, run_dir / "out")


def run_promflow(om: Path, _prom: Path, run_dir: Path, ctx: dict) -> dict:
    return run_blocks_tool([ctx["promflow"]], om, run_dir / "out")


def run_vm(om: Path, prom: Path, run_dir: Path, ctx: dict) -> dict:
    data = run_dir / "vmdata"
    if data.exists():
        shutil.rmtree(data)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    vlog = open(run_dir / "victoria-metrics.log", "w")
    server = subprocess.Popen(["taskset", "-c", CPU_SERVER, "victoria-metrics", f"-storageDataPath={data}",
                               f"-httpListenAddr=127.0.0.1:{port}"] + VM_FLAGS,
                              stdout=vlog, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            try:
                if http_get(f"{base}/health", 2).strip() == "OK":
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("victoria-metrics did not become healthy")
        t = time.monotonic()
        subprocess.run(["taskset", "-c", CPU_CLIENT, "curl", "-sS", "--fail", "-X", "POST", "-T", str(prom),
                        "-H", "Content-Type: text/plain", f"{base}/api/v1/import/prometheus"], check=True)
        http_get(f"{base}/internal/force_flush")
        ingest = time.monotonic() - t
        t = time.monotonic()
        http_get(f"{base}/internal/force_merge", 7200)  # all partitions
        # force_merge may return before the merge ends, and indexdb merges and part deletions
        # follow it: wait until no merge runs, each partition is down to one part and the
        # directory size has not changed for 3 polls
        # VictoriaMetrics 1.79 merges at most a handful of parts at once, so one force_merge can
        # leave a partition with two or more parts: ask again (up to 10 times) while it has.
        last, stable, merge_calls = -1, 0, 1
        for _ in range(7200):
            m = vm_metrics(base)
            active = sum(v for k, v in m.items() if k.startswith("vm_active_merges"))
            parts = sum(v for k, v in m.items() if k.startswith('vm_parts{type="storage/'))
            partitions = {p.name for sub in ("small", "big") if (data / "data" / sub).exists()
                          for p in (data / "data" / sub).iterdir() if p.is_dir() and p.name != "snapshots"}
            size = du_sb(data)
            idle = active == 0 and size == last
            if idle and parts > max(1, len(partitions)) and merge_calls < 10:
                http_get(f"{base}/internal/force_merge", 7200)
                merge_calls += 1
                last, stable = -1, 0
                time.sleep(POLL_S)
                continue
            settled = idle and (parts <= max(1, len(partitions)) or merge_calls >= 10)
            stable = stable + 1 if settled else 0
            last = size
            if stable >= 3:
                break
            time.sleep(POLL_S)
        merge = time.monotonic() - t - 3 * POLL_S
        m = vm_metrics(base)
        rows = int(sum(v for k, v in m.items() if k.startswith('vm_rows{type="storage/')))
        inserted = int(m.get('vm_rows_inserted_total{type="prometheus"}', -1))
        parts = int(sum(v for k, v in m.items() if k.startswith('vm_parts{type="storage/')))
        res = {"wall_s": ingest, "merge_s": merge, "rows_inserted": inserted, "rows_stored": rows,
               "data_parts": parts, "force_merge_calls": merge_calls,
               "bytes": du_sb(data / "data", data / "indexdb"),
               "bytes_data": du_sb(data / "data"), "bytes_indexdb": du_sb(data / "indexdb"),
               "bytes_whole_dir_running": du_sb(data)}
        if ctx.get("verify"):
            log("  exporting back from VictoriaMetrics and comparing bit for bit")
            t = time.monotonic()
            p = subprocess.run(["taskset", "-c", CPU_CLIENT, sys.executable, str(HERE / "vm_tool.py"), "verify",
                                str(om), base], capture_output=True, text=True, check=True)
            res["verify"] = json.loads(p.stdout)
            res["verify_s"] = time.monotonic() - t
            ctx["verify"] = False
        return res
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        vlog.close()
        if data.exists():
            shutil.rmtree(data)


def promflow_supported(promflow: str, workdir: Path) -> tuple[bool, str]:
    if not (os.path.isfile(promflow) and os.access(promflow, os.X_OK)) and not shutil.which(promflow):
        return False, f"{promflow} not found (set PROMFLOW=/path/to/promflow)"
    probe = workdir / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir(parents=True)
    om = probe / "probe.om"
    om.write_text('# TYPE probe gauge\nprobe{a="1"} 1 1793491200.000\nprobe{a="1"} 2 1793491215.000\n# EOF\n')
    try:
        p = subprocess.run([promflow, "tsdb", "create-blocks-from", "openmetrics", str(om), str(probe / "out")],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, f"`{promflow} tsdb create-blocks-from openmetrics` did not finish on a 2-sample file in 60 s"
    if p.returncode != 0:
        first = (p.stderr.strip() or p.stdout.strip()).splitlines()[:1]
        return False, (f"`{promflow} tsdb create-blocks-from openmetrics` exited {p.returncode}"
                       f" ({first[0] if first else 'no output'}): the subcommand is not implemented yet")
    return True, ""


SYSTEMS = {"promtool": run_promtool, "vm": run_vm, "promflow": run_promflow}
LABEL = {"promtool": "promtool 2.42 (TSDB blocks)", "vm": "VictoriaMetrics 1.79.5",
         "promflow": "promflow"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/bench-storage", help="data and scratch (default /tmp/bench-storage)")
    ap.add_argument("--series", type=int, default=100_000, help="minimum number of series (default 100000)")
    ap.add_argument("--hours", type=float, default=2.0, help="hours of 15 s samples (default 2)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per system (default 3)")
    ap.add_argument("--datasets", default="a,b", help="comma-separated, default a,b")
    ap.add_argument("--systems", default="promtool,vm,promflow", help="default promtool,vm,promflow")
    ap.add_argument("--no-verify", action="store_true", help="skip the VictoriaMetrics export round trip")
    args = ap.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    promflow = os.environ.get("PROMFLOW", "target/release/promflow")
    systems = [s for s in args.systems.split(",") if s]
    notes = []
    for tool in ("taskset", "curl", "du"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is required")
    if "promtool" in systems and not shutil.which("promtool"):
        notes.append("promtool not installed: skipped (apt-get install prometheus)")
        systems.remove("promtool")
    if "vm" in systems and not shutil.which("victoria-metrics"):
        notes.append("victoria-metrics not installed: skipped (apt-get install victoria-metrics)")
        systems.remove("vm")
    if "promflow" in systems:
        ok, why = promflow_supported(promflow, workdir)
        if not ok:
            notes.append(f"promflow skipped: {why}")
            log(notes[-1])
            systems.remove("promflow")
    versions = {}
    if "promtool" in systems:
        versions["promtool"] = subprocess.run(["promtool", "--version"], capture_output=True,
                                              text=True).stdout.splitlines()[0]
    if "vm" in systems:
        # the Debian build's -version prints nothing: ask dpkg
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"], capture_output=True, text=True)
        versions["vm"] = f"victoria-metrics (Debian package) {p.stdout.strip() or 'unknown version'}"

    results = {"args": vars(args), "versions": versions, "notes": notes, "datasets": {}}
    results_path = workdir / "results.json"
    for ds in args.datasets.split(","):
        om, prom, manifest = ensure_data(workdir, ds, args.series, args.hours)
        samples = manifest["samples"]
        dsr = results["datasets"][ds] = {"file": str(om), "file_bytes": manifest["bytes"],
                                         "prom_file_bytes": prom.stat().st_size, "series": manifest["series"],
                                         "samples": samples, "census": manifest["value_census_every_7th_series"],
                                         "runs": {s: [] for s in systems}}
        ctx = {"promflow": promflow, "verify": not args.no_verify}
        for rep in range(1, args.reps + 1):
            for sysname in systems:
                run_dir = workdir / "runs" / f"{ds}-{sysname}-{rep}"
                shutil.rmtree(run_dir, ignore_errors=True)
                run_dir.mkdir(parents=True)
                log(f"dataset {ds} rep {rep}/{args.reps}: {sysname}")
                r = SYSTEMS[sysname](om, prom, run_dir, ctx)
                r["bytes_per_sample"] = r["bytes"] / samples
                log(f"  {r['bytes']} bytes, {r['bytes_per_sample']:.4f} B/sample, {r['wall_s']:.1f}s")
                dsr["runs"][sysname].append(r)
                shutil.rmtree(run_dir / "out", ignore_errors=True)
                results_path.write_text(json.dumps(results, indent=1))
    print(report(results))


def report(results: dict) -> str:
    lines = []
    v = results["versions"]
    lines.append(f"Versions: {'; '.join(f'{k}: {x}' for k, x in v.items())}")
    for n in results["notes"]:
        lines.append(f"\nNote: {n}")
    for ds, d in results["datasets"].items():
        lines.append(f"\n### Dataset ({ds}): {d['series']} series, {d['samples']} samples, "
                     f"OpenMetrics file {d['file_bytes'] / 1e9:.2f} GB\n")
        lines.append("| system | bytes/sample (median) | min–max | on-disk bytes (median) | vs promtool "
                     "| backfill wall s (median) | runs |")
        lines.append("|---|---|---|---|---|---|---|")
        base = None
        for s, runs in d["runs"].items():
            if not runs:
                continue
            bps = [r["bytes_per_sample"] for r in runs]
            med = statistics.median(bps)
            if s == "promtool":
                base = med
            ratio = f"{med / base:.3f}×" if base else "—"
            lines.append(f"| {LABEL[s]} | {med:.4f} | {min(bps):.4f}–{max(bps):.4f} | "
                         f"{int(statistics.median(r['bytes'] for r in runs))} | {ratio} | "
                         f"{statistics.median(r['wall_s'] for r in runs):.1f} | {len(runs)} |")
        vm = d["runs"].get("vm") or []
        if vm:
            lines.append(f"\nVictoriaMetrics detail (medians): data/ "
                         f"{int(statistics.median(r['bytes_data'] for r in vm))} B, indexdb/ "
                         f"{int(statistics.median(r['bytes_indexdb'] for r in vm))} B, whole dir while running "
                         f"{int(statistics.median(r['bytes_whole_dir_running'] for r in vm))} B; forced merge "
                         f"{statistics.median(r['merge_s'] for r in vm):.1f} s; rows inserted/stored "
                         f"{vm[0]['rows_inserted']}/{vm[0]['rows_stored']}, parts after merge {vm[0]['data_parts']} "
                         f"(force_merge calls: {', '.join(str(r.get('force_merge_calls', 1)) for r in vm)})")
            ver = next((r["verify"] for r in vm if "verify" in r), None)
            if ver:
                lines.append(f"\nVictoriaMetrics round trip (/api/v1/export vs the file): "
                             f"{ver['samples_compared']} of {ver['samples_expected']} samples compared, "
                             f"{ver['values_differing']} values differ "
                             f"(max relative error {ver['max_rel_error']:.3g}, max {ver['max_ulps']} ULPs), "
                             f"missing series {ver['missing_series']}, extra {ver['extra_series']}, "
                             f"timestamp mismatches {ver['timestamp_mismatch_series']}")
                for ex in (ver.get("worst") or ver["examples"])[:3]:
                    lines.append(f"  - {ex['series']}: file {ex['file']} → VM {ex['vm']}")
                bm = {k: x for k, x in ver.get("by_metric", {}).items() if x["differing"]}
                if bm:
                    lines.append("\n| metric | values compared | differing | max relative error |")
                    lines.append("|---|---|---|---|")
                    for k, x in sorted(bm.items()):
                        lines.append(f"| {k} | {x['compared']} | {x['differing']} | {x['max_rel_error']:.3g} |")
        for s in ("promtool", "promflow"):
            runs = d["runs"].get(s) or []
            if runs:
                files = runs[0].get("bytes_by_file") or {}
                big = sorted(files.items(), key=lambda kv: -kv[1])
                lines.append(f"\n{LABEL[s]} wrote {runs[0]['blocks']} block(s) per run"
                             + (": " + ", ".join(f"{k} {v} B ({v / d['samples']:.3f} B/sample)" for k, v in big)
                                if big else "."))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
