#!/usr/bin/env python3
"""Deterministic generator of node_exporter-like and application-like data as OpenMetrics text.

The output is accepted by `promtool tsdb create-blocks-from openmetrics FILE DIR` (Prometheus
2.42) and is meant to be fed, unchanged, to every storage engine that the disk-size benchmark
compares (see README.md beside this file for the two datasets' value mixes).

Layout of the file: one `# TYPE` line per metric family, then that family's series one after
the other, each series' samples in time order, and `# EOF` at the end. Timestamps are in
seconds with exactly three decimals (milliseconds), e.g. `1793491200.015`.

Values: integers (and integer-valued floats) are written as integers (`42`); every other float
is written with Python's repr, the shortest decimal that reads back to the same double, so the
file states each sample's float64 bit for bit.

Everything depends only on the command-line arguments: the same arguments give the same bytes.
Next to the output, `OUTPUT.json` records the parameters, the series and sample counts per
family and a census of the values (integers, short decimals, full-precision floats).

Stdlib only; Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from datetime import datetime, timezone

DEFAULT_START = "2026-11-01T00:00:00Z"


# ----------------------------------------------------------------------------------------------
# small helpers

def parse_duration(s: str) -> int:
    """'15s', '1m', '500ms', '2h' -> milliseconds."""
    units = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
    for suffix, mult in units:
        if s.endswith(suffix) and s[: -len(suffix)].replace(".", "", 1).isdigit():
            return int(round(float(s[: -len(suffix)]) * mult))
    raise argparse.ArgumentTypeError(f"bad duration {s!r} (use e.g. 15s, 1m, 500ms)")


def parse_start(s: str) -> int:
    """RFC 3339 ('2026-11-01T00:00:00Z') or epoch seconds -> epoch milliseconds."""
    if s.replace(".", "", 1).isdigit():
        return int(round(float(s) * 1000))
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def fmt_float(v: float) -> str:
    """Integer-valued floats as integers, everything else as the shortest round-trip repr."""
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def fmt_scaled(n: int, scale: int) -> str:
    """n / scale (scale a power of ten) as the short decimal, e.g. (1234, 100) -> '12.34'."""
    if n % scale == 0:
        return str(n // scale)
    return repr(n / scale)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0.0:
        return 0
    if lam < 30.0:
        # Knuth
        limit = math.exp(-lam)
        k = 0
        p = rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))


def labels_str(pairs) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


def lognormal_cdf(x: float, median: float, sigma: float) -> float:
    if x == math.inf:
        return 1.0
    return 0.5 * (1.0 + math.erf((math.log(x) - math.log(median)) / (sigma * math.sqrt(2.0))))


# client_golang's default buckets, as its text exposition writes them
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf]
BUCKET_LE = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]


def bucket_mid(i: int) -> float:
    """A representative latency (seconds) for observations falling into bucket interval i."""
    hi = BUCKETS[i]
    lo = BUCKETS[i - 1] if i > 0 else 0.0
    if hi == math.inf:
        return lo * 1.5
    if lo == 0.0:
        return hi * 0.6
    return math.sqrt(lo * hi)


# ----------------------------------------------------------------------------------------------
# the fleet: hosts, each running node_exporter and one application instance

ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c", "us-east-1a", "us-east-1b", "us-east-1d"]
SERVICES = {
    # service: [(method, handler)]
    "checkout": [("GET", "/api/v1/cart"), ("POST", "/api/v1/cart"), ("POST", "/api/v1/checkout"),
                 ("GET", "/api/v1/orders"), ("GET", "/healthz"), ("GET", "/metrics")],
    "catalog": [("GET", "/api/v1/products"), ("GET", "/api/v1/products/:id"), ("GET", "/api/v1/categories"),
                ("GET", "/api/v1/search"), ("POST", "/api/v1/products"), ("GET", "/healthz"), ("GET", "/metrics")],
    "auth": [("POST", "/oauth/token"), ("GET", "/oauth/userinfo"), ("POST", "/login"), ("GET", "/healthz"),
             ("GET", "/metrics")],
    "frontend": [("GET", "/"), ("GET", "/static/*"), ("GET", "/product/:id"), ("GET", "/cart"), ("POST", "/cart"),
                 ("GET", "/healthz"), ("GET", "/metrics")],
    "payments": [("POST", "/v2/charges"), ("GET", "/v2/charges/:id"), ("POST", "/v2/refunds"), ("GET", "/healthz"),
                 ("GET", "/metrics")],
}
SERVICE_NAMES = list(SERVICES)


def codes_for(method: str, handler: str) -> list[str]:
    if handler in ("/healthz", "/metrics"):
        return ["200"]
    if method == "POST":
        return ["201", "400", "500"] if handler.endswith("s") else ["200", "400", "401", "500"]
    return ["200", "304", "404", "500"] if handler.startswith("/static") or ":id" in handler else ["200", "404", "500"]


CODE_SHARE = {"200": 0.95, "201": 0.9, "304": 0.3, "400": 0.03, "401": 0.02, "404": 0.02, "500": 0.004}

CPU_MODES = ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"]
MEM_FIELDS = ["MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Active", "Inactive", "Dirty",
              "SwapTotal", "SwapFree"]
FILESYSTEMS = [("/dev/nvme0n1p1", "ext4", "/"), ("/dev/nvme0n1p2", "vfat", "/boot/efi"),
               ("/dev/nvme1n1", "xfs", "/var/lib/data"), ("tmpfs", "tmpfs", "/run")]


class Host:
    def __init__(self, seed: int, i: int, n_steps: int):
        r = random.Random(f"{seed}:host:{i}")
        self.i = i
        self.ip = f"10.{1 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}"
        self.zone = ZONES[r.randrange(len(ZONES))]
        self.env = "prod" if r.random() < 0.85 else "staging"
        self.ncpu = r.choice([2, 4, 4, 8, 8, 8, 16, 32])
        self.mem_gib = r.choice([4, 8, 16, 16, 32, 64, 128])
        self.ndisks = 1 if r.random() < 0.6 else 2
        self.busy = r.uniform(0.03, 0.85)  # mean CPU utilisation
        self.uptime_s = r.uniform(600, 120 * 86400)
        # ~1% of hosts reboot during the window: node counters restart from zero
        self.reboot_at = r.randrange(1, n_steps) if (n_steps > 1 and r.random() < 0.01) else -1
        self.service = SERVICE_NAMES[r.randrange(len(SERVICE_NAMES))]
        self.app_uptime_s = r.uniform(300, 14 * 86400)
        # ~20% of application instances restart (deploy, crash) once: app counters reset to zero
        self.app_restart_at = r.randrange(1, n_steps) if (n_steps > 1 and r.random() < 0.2) else -1
        self.app_scale = 10 ** r.uniform(-1.0, 1.3)  # traffic multiplier of this instance

    def node_labels(self):
        return [("env", self.env), ("instance", f"{self.ip}:9100"), ("job", "node"), ("zone", self.zone)]

    def app_labels(self):
        return [("env", self.env), ("instance", f"{self.ip}:8080"), ("job", self.service), ("zone", self.zone)]

    def cpus(self):
        return [str(c) for c in range(self.ncpu)]

    def disks(self):
        return ["nvme0n1", "nvme1n1"][: self.ndisks]

    def filesystems(self):
        return FILESYSTEMS if self.ndisks == 2 else [f for f in FILESYSTEMS if f[2] != "/var/lib/data"]

    def endpoints(self):
        return SERVICES[self.service]


def counter_path(rng, n_steps, start, rate, reset_at, step_noise=0.3, integer=True):
    """A counter: start value, then per-step increments ~ rate*(1±noise); restarts from 0 at reset_at."""
    out = []
    v = start
    for k in range(n_steps):
        inc = rate * (1.0 + rng.uniform(-step_noise, step_noise))
        if integer:
            inc = int(inc)
        if k == reset_at:
            v = inc
        elif k > 0:
            v += inc
        out.append(v)
    return out


# ----------------------------------------------------------------------------------------------
# families. Each yields (family, type, [(sample_name, labels, [value strings])]) per host.

class Ctx:
    def __init__(self, seed, n_steps, interval_ms, start_ms):
        self.seed = seed
        self.start_s = start_ms // 1000
        self.n = n_steps
        self.dt = interval_ms / 1000.0

    def rng(self, family: str, host: Host, extra: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{family}:{host.i}:{extra}")


# ---- dataset (a): values as real exporters write them ----------------------------------------

def a_node_cpu(ctx: Ctx, h: Host):
    share = {"idle": 1.0 - h.busy, "iowait": 0.02 * h.busy, "irq": 0.005 * h.busy, "nice": 0.01 * h.busy,
             "softirq": 0.02 * h.busy, "steal": 0.01 * h.busy, "system": 0.25 * h.busy, "user": 0.69 * h.busy}
    for cpu in h.cpus():
        for mode in CPU_MODES:
            r = ctx.rng("cpu", h, cpu + mode)
            rate_cs = share[mode] * ctx.dt * 100.0  # centiseconds per step
            start = int(h.uptime_s * share[mode] * 100.0 * r.uniform(0.8, 1.2))
            if mode in ("steal", "irq") and r.random() < 0.5:
                vals = [0 if (h.reboot_at >= 0 and k >= h.reboot_at) else start for k in range(ctx.n)]
            else:
                vals = counter_path(r, ctx.n, start, rate_cs, h.reboot_at, 0.5)
            yield "node_cpu_seconds_total", h.node_labels() + [("cpu", cpu), ("mode", mode)], \
                [fmt_scaled(c, 100) for c in vals]


def a_node_memory(ctx: Ctx, h: Host):
    total_kb = h.mem_gib * 1024 * 1024 - 181_236
    swap_kb = 0 if h.mem_gib >= 32 else 2 * 1024 * 1024
    r = ctx.rng("mem", h)
    free = total_kb * r.uniform(0.05, 0.5)
    cached = total_kb * r.uniform(0.1, 0.4)
    buffers = total_kb * r.uniform(0.005, 0.03)
    dirty = r.uniform(0, 20_000)
    swap_free = swap_kb * r.uniform(0.7, 1.0)
    series = {f: [] for f in MEM_FIELDS}
    for _ in range(ctx.n):
        free = min(total_kb * 0.9, max(total_kb * 0.01, free + r.gauss(0, total_kb * 0.002)))
        cached = min(total_kb * 0.6, max(0, cached + r.gauss(0, total_kb * 0.001)))
        buffers = max(0, buffers + r.gauss(0, 200))
        dirty = max(0, dirty + r.gauss(0, 2000))
        swap_free = min(swap_kb, max(0, swap_free + r.gauss(0, 100)))
        kb = {"MemTotal": total_kb, "MemFree": free, "MemAvailable": free + cached * 0.8 + buffers,
              "Buffers": buffers, "Cached": cached, "Active": (total_kb - free) * 0.6,
              "Inactive": (total_kb - free) * 0.3, "Dirty": dirty, "SwapTotal": swap_kb, "SwapFree": swap_free}
        for f in MEM_FIELDS:
            series[f].append(str(int(kb[f]) * 1024))
    for f in MEM_FIELDS:
        yield f"node_memory_{f}_bytes", h.node_labels(), series[f]


def a_node_network(ctx: Ctx, h: Host, direction: str):
    for dev in ["eth0", "lo"]:
        r = ctx.rng("net" + direction, h, dev)
        rate = (10 ** r.uniform(3, 7.5)) * ctx.dt if dev == "eth0" else (10 ** r.uniform(2, 4.5)) * ctx.dt
        vals = counter_path(r, ctx.n, int(rate / ctx.dt * h.uptime_s * r.uniform(0.5, 1.5)), rate, h.reboot_at, 0.8)
        yield f"node_network_{direction}_bytes_total", h.node_labels() + [("device", dev)], list(map(str, vals))


def a_node_filesystem(ctx: Ctx, h: Host, what: str):
    for device, fstype, mnt in h.filesystems():
        r = ctx.rng("fs", h, mnt)
        size_blocks = {"/": r.randint(5_000_000, 50_000_000), "/boot/efi": 130_812,
                       "/var/lib/data": r.randint(100_000_000, 900_000_000), "/run": h.mem_gib * 26_214}[mnt]
        avail = int(size_blocks * r.uniform(0.1, 0.9))
        vals = []
        for _ in range(ctx.n):
            if what == "avail_bytes" and mnt != "/boot/efi":
                avail = max(0, min(size_blocks, avail + int(r.gauss(-2, 40))))
            vals.append(str((avail if what == "avail_bytes" else size_blocks) * 4096))
        yield f"node_filesystem_{what}", h.node_labels() + [("device", device), ("fstype", fstype),
                                                             ("mountpoint", mnt)], vals


def a_node_load(ctx: Ctx, h: Host):
    r = ctx.rng("load", h)
    mean = h.busy * h.ncpu
    l1 = l5 = l15 = mean
    out = {"node_load1": [], "node_load5": [], "node_load15": []}
    a1, a5, a15 = (math.exp(-ctx.dt / w) for w in (60.0, 300.0, 900.0))
    for _ in range(ctx.n):
        x = max(0.0, r.gauss(mean, mean * 0.3 + 0.05))
        l1 = l1 * a1 + x * (1 - a1)
        l5 = l5 * a5 + x * (1 - a5)
        l15 = l15 * a15 + x * (1 - a15)
        # /proc/loadavg has two decimals
        out["node_load1"].append(fmt_scaled(int(round(l1 * 100)), 100))
        out["node_load5"].append(fmt_scaled(int(round(l5 * 100)), 100))
        out["node_load15"].append(fmt_scaled(int(round(l15 * 100)), 100))
    for name, vals in out.items():
        yield name, h.node_labels(), vals


def a_node_boot_time(ctx: Ctx, h: Host):
    # node_exporter exposes the boot time from /proc/stat btime: an integer
    boot = ctx.start_s - int(h.uptime_s)
    vals = [str(boot if (h.reboot_at < 0 or k < h.reboot_at) else ctx.start_s + h.reboot_at * int(ctx.dt))
            for k in range(ctx.n)]
    yield "node_boot_time_seconds", h.node_labels(), vals


def a_node_context_switches(ctx: Ctx, h: Host):
    r = ctx.rng("ctxt", h)
    rate = h.ncpu * r.uniform(500, 20_000) * ctx.dt
    vals = counter_path(r, ctx.n, int(rate / ctx.dt * h.uptime_s), rate, h.reboot_at)
    yield "node_context_switches_total", h.node_labels(), list(map(str, vals))


def a_node_disk(ctx: Ctx, h: Host, what: str):
    for dev in h.disks():
        r = ctx.rng("disk" + what, h, dev)
        if what == "io_time_seconds_total":  # milliseconds in /proc/diskstats
            rate = ctx.dt * 1000 * r.uniform(0.001, 0.3)
            vals = counter_path(r, ctx.n, int(rate / ctx.dt * h.uptime_s), rate, h.reboot_at, 0.9)
            yield f"node_disk_{what}", h.node_labels() + [("device", dev)], [fmt_scaled(v, 1000) for v in vals]
        else:  # sectors of 512 bytes
            rate = ctx.dt * (10 ** r.uniform(1, 4.5))
            vals = counter_path(r, ctx.n, int(rate / ctx.dt * h.uptime_s), rate, h.reboot_at, 0.9)
            yield f"node_disk_{what}", h.node_labels() + [("device", dev)], [str(v * 512) for v in vals]


def a_http_requests(ctx: Ctx, h: Host):
    for method, handler in h.endpoints():
        base = 0.05 if handler == "/metrics" else (0.2 if handler == "/healthz" else 10 ** random.Random(
            f"{ctx.seed}:rate:{h.service}:{method}{handler}").uniform(-0.5, 2.0))
        for code in codes_for(method, handler):
            r = ctx.rng("http", h, method + handler + code)
            rate = base * h.app_scale * CODE_SHARE[code] * ctx.dt
            vals = []
            v = int(rate / ctx.dt * h.app_uptime_s * r.uniform(0.7, 1.3))
            for k in range(ctx.n):
                inc = poisson(r, rate)
                v = inc if k == h.app_restart_at else (v + inc if k > 0 else v)
                vals.append(str(v))
            yield "http_requests_total", h.app_labels() + [("code", code), ("handler", handler),
                                                           ("method", method)], vals


def histogram_paths(ctx: Ctx, h: Host, family: str, key: str, rate: float, median: float, sigma: float,
                    float_sum: bool):
    """Cumulative bucket counters, _sum and _count of one histogram, all restarting at app_restart_at.

    float_sum=False: the sum is kept in integer milliseconds (a short decimal, dataset a);
    float_sum=True: the sum accumulates float products (full-precision float, dataset b)."""
    r = ctx.rng(family, h, key)
    cdf = [lognormal_cdf(le, median, sigma) for le in BUCKETS]
    p = [cdf[0]] + [cdf[i] - cdf[i - 1] for i in range(1, len(cdf))]
    mids = [bucket_mid(i) for i in range(len(BUCKETS))]
    mids_ms = [int(m * 1000) + 1 for m in mids]
    lam = [rate * ctx.dt * pi for pi in p]
    warm = h.app_uptime_s / ctx.dt  # steps of history before the window
    counts = [int(l * warm) for l in lam]
    s_ms = sum(c * m for c, m in zip(counts, mids_ms))
    s_f = s_ms / 1000.0 * r.uniform(0.9, 1.1)
    buckets = [[] for _ in BUCKETS]
    sums, cnts = [], []
    for k in range(ctx.n):
        d = [poisson(r, l) for l in lam]
        if k == h.app_restart_at:
            counts = [0] * len(counts)
            s_ms = 0
            s_f = 0.0
        if k > 0 or k == h.app_restart_at:
            for i, di in enumerate(d):
                if di:
                    counts[i] += di
                    if float_sum:
                        s_f += di * mids[i] * r.uniform(0.7, 1.3)
                    else:
                        s_ms += di * int(mids_ms[i] * r.uniform(0.7, 1.3))
        cum = 0
        for i, c in enumerate(counts):
            cum += c
            buckets[i].append(str(cum))
        cnts.append(str(cum))
        sums.append(fmt_float(s_f) if float_sum else fmt_scaled(s_ms, 1000))
    return buckets, sums, cnts


def histogram_series(ctx, h, family, labels, rate, median, sigma, float_sum):
    key = labels_str(labels)
    buckets, sums, cnts = histogram_paths(ctx, h, family, key, rate, median, sigma, float_sum)
    base = h.app_labels() + labels
    for i, le in enumerate(BUCKET_LE):
        yield f"{family}_bucket", base + [("le", le)], buckets[i]
    yield f"{family}_sum", base, sums
    yield f"{family}_count", base, cnts


def a_http_duration(ctx: Ctx, h: Host):
    for method, handler in h.endpoints():
        rr = random.Random(f"{ctx.seed}:latency:{h.service}:{method}{handler}")
        rate = 0.05 if handler == "/metrics" else (0.2 if handler == "/healthz" else 10 ** rr.uniform(-0.5, 2.0))
        median = 0.002 if handler in ("/metrics", "/healthz") else 10 ** rr.uniform(-2.3, -0.5)
        yield from histogram_series(ctx, h, "http_request_duration_seconds",
                                    [("handler", handler), ("method", method)], rate * h.app_scale, median,
                                    rr.uniform(0.4, 1.1), float_sum=False)


def a_process(ctx: Ctx, h: Host, what: str):
    r = ctx.rng("proc" + what, h)
    if what == "cpu_seconds_total":
        rate = ctx.dt * 100 * r.uniform(0.01, 1.5) * h.app_scale ** 0.5
        vals = counter_path(r, ctx.n, int(rate / ctx.dt * h.app_uptime_s), rate, h.app_restart_at, 0.4)
        yield "process_cpu_seconds_total", h.app_labels(), [fmt_scaled(v, 100) for v in vals]
        return
    if what == "resident_memory_bytes":
        v = r.randint(30_000, 2_000_000)  # pages
        out = []
        for k in range(ctx.n):
            if k == h.app_restart_at:
                v = r.randint(20_000, 40_000)
            v = max(5_000, v + int(r.gauss(10, 300)))
            out.append(str(v * 4096))
        yield "process_resident_memory_bytes", h.app_labels(), out
        return
    # go_goroutines / process_open_fds: small integers
    lo, hi = (20, 3000) if what == "go_goroutines" else (10, 500)
    v = r.randint(lo, hi)
    out = []
    for _ in range(ctx.n):
        v = max(lo // 2, v + r.randint(-3, 3))
        out.append(str(v))
    yield (what if what == "go_goroutines" else f"process_{what}"), h.app_labels(), out


FAMILIES_A = [
    # (TYPE name, type, generator)
    ("node_cpu_seconds", "counter", a_node_cpu),
    ("node_context_switches", "counter", a_node_context_switches),
    ("node_boot_time_seconds", "gauge", a_node_boot_time),
    ("node_load1", "gauge", lambda c, h: (s for s in a_node_load(c, h) if s[0] == "node_load1")),
    ("node_load5", "gauge", lambda c, h: (s for s in a_node_load(c, h) if s[0] == "node_load5")),
    ("node_load15", "gauge", lambda c, h: (s for s in a_node_load(c, h) if s[0] == "node_load15")),
] + [
    (f"node_memory_{f}_bytes", "gauge", (lambda f: lambda c, h: (s for s in a_node_memory(c, h)
                                                                 if s[0] == f"node_memory_{f}_bytes"))(f))
    for f in MEM_FIELDS
] + [
    ("node_network_receive_bytes", "counter", lambda c, h: a_node_network(c, h, "receive")),
    ("node_network_transmit_bytes", "counter", lambda c, h: a_node_network(c, h, "transmit")),
    ("node_filesystem_avail_bytes", "gauge", lambda c, h: a_node_filesystem(c, h, "avail_bytes")),
    ("node_filesystem_size_bytes", "gauge", lambda c, h: a_node_filesystem(c, h, "size_bytes")),
    ("node_disk_read_bytes", "counter", lambda c, h: a_node_disk(c, h, "read_bytes_total")),
    ("node_disk_written_bytes", "counter", lambda c, h: a_node_disk(c, h, "written_bytes_total")),
    ("node_disk_io_time_seconds", "counter", lambda c, h: a_node_disk(c, h, "io_time_seconds_total")),
    ("http_requests", "counter", a_http_requests),
    ("http_request_duration_seconds", "histogram", a_http_duration),
    ("process_cpu_seconds", "counter", lambda c, h: a_process(c, h, "cpu_seconds_total")),
    ("process_resident_memory_bytes", "gauge", lambda c, h: a_process(c, h, "resident_memory_bytes")),
    ("process_open_fds", "gauge", lambda c, h: a_process(c, h, "open_fds")),
    ("go_goroutines", "gauge", lambda c, h: a_process(c, h, "go_goroutines")),
]


def a_series_per_host(h: Host) -> int:
    ep = h.endpoints()
    return (h.ncpu * len(CPU_MODES) + 1 + 1 + 3 + len(MEM_FIELDS) + 2 * 2 + 2 * len(h.filesystems())
            + 3 * h.ndisks + sum(len(codes_for(m, p)) for m, p in ep) + len(ep) * (len(BUCKETS) + 2) + 4)


# ---- dataset (b): full-precision floats -------------------------------------------------------

HWMON = [("coretemp", "Package id 0"), ("coretemp", "Core 0"), ("coretemp", "Core 1"), ("nvme", "Composite"),
         ("acpitz", "temp1"), ("drivetemp", "temp1")]
QUEUES = ["ingest", "email", "webhooks", "billing"]


def b_temperature(ctx: Ctx, h: Host):
    # a sensor read as an integer count and converted with a factor of 1/3: repeating binary fractions
    for chip, sensor in HWMON:
        r = ctx.rng("temp", h, chip + sensor)
        raw = r.randint(90, 240)
        vals = []
        for _ in range(ctx.n):
            raw = min(300, max(60, raw + r.choice((-1, 0, 0, 0, 1))))
            vals.append(fmt_float(raw * 1.0 / 3))
        yield "node_hwmon_temp_celsius", h.node_labels() + [("chip", chip), ("sensor", sensor)], vals


def b_queue_ratio(ctx: Ctx, h: Host):
    # a bounded random walk with Gaussian steps: full 53-bit mantissas
    for q in QUEUES:
        r = ctx.rng("queue", h, q)
        x = r.random()
        vals = []
        for _ in range(ctx.n):
            x += r.gauss(0.0, 0.02)
            if x < 0.0:
                x = -x
            if x > 1.0:
                x = 2.0 - x
            vals.append(fmt_float(x))
        yield "app_queue_fill_ratio", h.app_labels() + [("queue", q)], vals


def b_power(ctx: Ctx, h: Host):
    for psu in ("1", "2"):
        r = ctx.rng("power", h, psu)
        w = r.uniform(80.0, 400.0)
        vals = []
        for _ in range(ctx.n):
            w = max(20.0, w + r.gauss(0.0, 1.5))
            vals.append(fmt_float(w))
        yield "node_power_supply_watts", h.node_labels() + [("psu", psu)], vals


def b_cpu_rate(ctx: Ctx, h: Host):
    # recording rule instance:node_cpu_utilisation:rate5m: (delta of 0.01 s counters) / 300 s
    for cpu in h.cpus():
        r = ctx.rng("cpurate", h, cpu)
        vals = []
        for _ in range(ctx.n):
            busy_cs = max(0, int(r.gauss(h.busy * 30000, 3000)))  # centiseconds busy over 300 s
            vals.append(fmt_float(busy_cs / 100 / 300))
        yield "instance:node_cpu_utilisation:rate5m", h.node_labels() + [("cpu", cpu)], vals


def b_http_rate(ctx: Ctx, h: Host):
    # recording rule job:http_requests:rate5m: integer increase over 5m / 300
    for method, handler in h.endpoints():
        for code in codes_for(method, handler)[:2]:
            r = ctx.rng("httprate", h, method + handler + code)
            lam = 300 * h.app_scale * CODE_SHARE[code] * r.uniform(0.05, 20)
            vals = [fmt_float(poisson(r, lam) / 300) for _ in range(ctx.n)]
            yield "job:http_requests:rate5m", h.app_labels() + [("code", code), ("handler", handler),
                                                                ("method", method)], vals


def b_summary(ctx: Ctx, h: Host):
    # a summary: quantiles from a lognormal (float), _sum accumulating float latencies, _count integer
    for method, handler in h.endpoints()[:4]:
        r = ctx.rng("summary", h, method + handler)
        rate = 10 ** r.uniform(-1, 2) * h.app_scale * ctx.dt
        mu, sigma = math.log(10 ** r.uniform(-2.5, -0.5)), r.uniform(0.3, 1.0)
        q = {"0.5": [], "0.9": [], "0.99": []}
        z = {"0.5": 0.0, "0.9": 1.2815515655446004, "0.99": 2.3263478740408408}
        sums, cnts = [], []
        s = r.uniform(10, 1e5)
        c = int(s * 20)
        for k in range(ctx.n):
            n = poisson(r, rate)
            if k == h.app_restart_at:
                s, c = 0.0, 0
            if k > 0 or k == h.app_restart_at:
                c += n
                for _ in range(min(n, 8)):
                    s += r.expovariate(1.0 / math.exp(mu)) * (n / min(n, 8))
            wobble = r.gauss(0.0, 0.05)
            for qq in q:
                q[qq].append(fmt_float(math.exp(mu + sigma * z[qq] + wobble)))
            sums.append(fmt_float(s))
            cnts.append(str(c))
        base = h.app_labels() + [("handler", handler), ("method", method)]
        for qq in q:
            yield "app_request_latency_seconds", base + [("quantile", qq)], q[qq]
        yield "app_request_latency_seconds_sum", base, sums
        yield "app_request_latency_seconds_count", base, cnts


def b_ewma(ctx: Ctx, h: Host):
    r = ctx.rng("ewma", h)
    windows = [("1m", 60.0), ("5m", 300.0), ("15m", 900.0)]
    alphas = [math.exp(-ctx.dt / w) for _, w in windows]
    xs = [h.busy * 100.0] * 3
    out = [[] for _ in windows]
    for _ in range(ctx.n):
        sample = max(0.0, r.gauss(h.busy * 100.0, 15.0))
        for j, a in enumerate(alphas):
            xs[j] = xs[j] * a + sample * (1.0 - a)
            out[j].append(fmt_float(xs[j]))
    for (w, _), vals in zip(windows, out):
        yield "app_requests_per_second_ewma", h.app_labels() + [("window", w)], vals


def b_rpc_duration(ctx: Ctx, h: Host):
    for method in ("Get",):
        rr = random.Random(f"{ctx.seed}:rpc:{h.service}:{method}")
        yield from histogram_series(ctx, h, "rpc_duration_seconds", [("rpc_method", method)],
                                    10 ** rr.uniform(-0.5, 1.5) * h.app_scale, 10 ** rr.uniform(-2.5, -1.0),
                                    rr.uniform(0.4, 1.1), float_sum=True)


FAMILIES_B = [
    ("node_hwmon_temp_celsius", "gauge", b_temperature),
    ("node_power_supply_watts", "gauge", b_power),
    ("instance:node_cpu_utilisation:rate5m", "gauge", b_cpu_rate),
    ("app_queue_fill_ratio", "gauge", b_queue_ratio),
    ("app_requests_per_second_ewma", "gauge", b_ewma),
    ("job:http_requests:rate5m", "gauge", b_http_rate),
    ("app_request_latency_seconds", "summary", b_summary),
    ("rpc_duration_seconds", "histogram", b_rpc_duration),
]


def b_series_per_host(h: Host) -> int:
    ep = h.endpoints()
    return (len(HWMON) + 2 + h.ncpu + len(QUEUES) + 3 + sum(min(2, len(codes_for(m, p))) for m, p in ep)
            + min(4, len(ep)) * 5 + (len(BUCKETS) + 2))


# ----------------------------------------------------------------------------------------------

def value_class(v: str) -> str:
    """'integer', 'decimal_le_12_digits' (a non-integer whose shortest decimal has at most 12
    significant digits) or 'decimal_gt_12_digits'. 12 digits is what VictoriaMetrics keeps of
    values below 1e6 (see README.md)."""
    if "." not in v and "e" not in v and "E" not in v:
        return "integer"
    mant = v.split("e")[0].replace("-", "").replace(".", "").strip("0")
    return "decimal_le_12_digits" if len(mant) <= 12 else "decimal_gt_12_digits"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["a", "b"], required=True,
                    help="a: values real exporters write (VictoriaMetrics round-trips them exactly); "
                         "b: full-precision float mix")
    ap.add_argument("--series", type=int, default=100_000,
                    help="minimum number of series (whole hosts are added until reached; default 100000)")
    ap.add_argument("--hours", type=float, default=2.0, help="time span in hours (default 2)")
    ap.add_argument("--interval", type=parse_duration, default=parse_duration("15s"),
                    help="sample interval (default 15s)")
    ap.add_argument("--jitter-ms", type=int, default=0,
                    help="each timestamp moves by a uniform random -J..+J ms (default 0: exact interval)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--start", default=DEFAULT_START,
                    help=f"first timestamp, RFC 3339 or epoch seconds (default {DEFAULT_START})")
    ap.add_argument("output", help="output file (OpenMetrics text); OUTPUT.json gets the manifest")
    args = ap.parse_args(argv)

    interval_ms = args.interval
    if args.jitter_ms * 2 >= interval_ms:
        ap.error("--jitter-ms must be less than half the interval")
    start_ms = parse_start(args.start)
    n_steps = int(round(args.hours * 3_600_000 / interval_ms))
    if n_steps < 1:
        ap.error("--hours too small for one sample")

    families = FAMILIES_A if args.dataset == "a" else FAMILIES_B
    per_host = a_series_per_host if args.dataset == "a" else b_series_per_host
    hosts, total = [], 0
    while total < args.series:
        h = Host(args.seed, len(hosts), n_steps)
        hosts.append(h)
        total += per_host(h)

    ctx = Ctx(args.seed, n_steps, interval_ms, start_ms)
    exact_ts = [start_ms + k * interval_ms for k in range(n_steps)]

    def ts_str(ms: int) -> str:
        return f" {ms // 1000}.{ms % 1000:03d}\n"

    shared_ts = [ts_str(t) for t in exact_ts]

    t0 = time.time()
    n_series = n_samples = 0
    census = {"integer": 0, "decimal_le_12_digits": 0, "decimal_gt_12_digits": 0}
    fam_stats = {}
    seen = set()
    with open(args.output, "w", encoding="utf-8", newline="\n", buffering=8 << 20) as f:
        for fam, typ, gen in families:
            f.write(f"# TYPE {fam} {typ}\n")
            fs = fam_stats.setdefault(fam, {"type": typ, "series": 0, "samples": 0})
            for h in hosts:
                for name, labels, vals in gen(ctx, h):
                    assert len(vals) == n_steps, (name, len(vals))
                    key = (name, tuple(sorted(labels)))
                    assert key not in seen, key
                    seen.add(key)
                    prefix = f"{name}{{{labels_str(labels)}}} "
                    if args.jitter_ms:
                        jr = random.Random(f"{args.seed}:jitter:{prefix}")
                        ts = [ts_str(t + jr.randint(-args.jitter_ms, args.jitter_ms)) for t in exact_ts]
                    else:
                        ts = shared_ts
                    f.write("".join([prefix + v + t for v, t in zip(vals, ts)]))
                    if n_series % 7 == 0:  # a census on every 7th series keeps it cheap
                        for v in vals:
                            census[value_class(v)] += 1
                    n_series += 1
                    n_samples += n_steps
                    fs["series"] += 1
                    fs["samples"] += n_steps
            if n_series and len(fam_stats) % 5 == 0:
                print(f"  {fam}: {n_series} series so far, {time.time() - t0:.0f}s", file=sys.stderr)
        f.write("# EOF\n")
    assert n_series == total, (n_series, total)
    size = f_size = __import__("os").path.getsize(args.output)
    counted = sum(census.values()) or 1
    manifest = {
        "generator": "benches/storage/gen_openmetrics.py",
        "dataset": args.dataset, "seed": args.seed, "hosts": len(hosts), "series": n_series,
        "samples": n_samples, "samples_per_series": n_steps, "interval_ms": interval_ms,
        "jitter_ms": args.jitter_ms, "start_ms": start_ms, "end_ms": exact_ts[-1], "bytes": size,
        "value_census_every_7th_series": {k: round(v / counted, 4) for k, v in census.items()},
        "families": fam_stats,
    }
    with open(args.output + ".json", "w") as mf:
        json.dump(manifest, mf, indent=1)
    print(f"wrote {args.output}: dataset {args.dataset}, {len(hosts)} hosts, {n_series} series, "
          f"{n_samples} samples ({n_steps} per series), {f_size / 1e6:.1f} MB, {time.time() - t0:.0f}s",
          file=sys.stderr)
    print(n_samples)


if __name__ == "__main__":
    main()
