#!/usr/bin/env bash
# Soak: one tracecar under moderate, steady, open-loop load for a long time, with connections
# churning and the Zipkin collector going away now and then; its memory is sampled every few
# seconds. Verdict: no RSS growth beyond 10 % after the warm-up. See benches/README.md ("Soak").
#
# Usage: benches/soak.sh [--binary PATH] [--duration 30m] [--rate 500] [--out DIR] [options]
#        benches/soak.sh --help
#
# Needs bash, python3 (standard library only), nginx, h2load (nghttp2-client) and curl; the
# Debian packages are installed with apt-get when missing. Every process it starts listens on
# or talks to 127.0.0.1 only, and is stopped on exit.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"

binary="$repo/target/dist/tracecar"
duration_arg="30m"
warmup_arg=""
rate=500
clients=5
interval=10
out="$repo/benches/results"
outage_every_arg="5m"
outage_len_arg="20s"
churn_every=2
name_arg=""
keep_temp=0

usage() {
  cat <<'EOF'
Usage: benches/soak.sh [options]

  --binary PATH         tracecar binary (default target/dist/tracecar, the build users deploy);
                        copied first, so a rebuild during the soak does not touch the run
  --duration DUR        length of the load (default 30m; 90s, 45m, 1h, or plain seconds)
  --warm-up DUR         excluded from the verdict (default: 1/6 of the duration, at least 60s)
  --rate RPS            steady requests/s, half HTTP/1.1, half h2c (default 500)
  --clients N           long-lived connections per protocol (default 5)
  --interval SECS       sampling period (default 10)
  --churn-every SECS    a burst of fresh connections every SECS seconds (default 2; 0 = none)
  --outage-every DUR    take the Zipkin collector down every DUR (default 5m; 0 = never);
                        the first outage is in the warm-up, none in the last minute
  --outage-length DUR   how long each outage lasts (default 20s)
  --out DIR             where the results go (default benches/results)
  --name NAME           results are DIR/NAME.{csv,svg,md} (default soak-<date>, plus -short
                        when the run is shorter than 30 minutes; -2, -3… rather than
                        overwriting)
  --keep-temp           keep the temporary folder (configs, logs) after the run
EOF
}

# "90", "90s", "5m", "1h" -> seconds.
seconds() {
  local v="$1"
  case "$v" in
    *h) echo $((${v%h} * 3600)) ;;
    *m) echo $((${v%m} * 60)) ;;
    *s) echo $((${v%s})) ;;
    *) echo $((v)) ;;
  esac
}

while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --duration) duration_arg="$2"; shift 2 ;;
    --warm-up | --warmup) warmup_arg="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --churn-every) churn_every="$2"; shift 2 ;;
    --outage-every) outage_every_arg="$2"; shift 2 ;;
    --outage-length) outage_len_arg="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --name) name_arg="$2"; shift 2 ;;
    --keep-temp) keep_temp=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

duration=$(seconds "$duration_arg")
outage_every=$(seconds "$outage_every_arg")
outage_len=$(seconds "$outage_len_arg")
if [ -n "$warmup_arg" ]; then
  warmup=$(seconds "$warmup_arg")
else
  warmup=$((duration / 6))
  ((warmup >= 60)) || warmup=60
fi
if ((duration < 60 || warmup >= duration || rate < 2 || clients < 1 || interval < 1)); then
  echo "soak: need --duration >= 60s, --warm-up < --duration, --rate >= 2, --clients >= 1" >&2
  exit 2
fi
if [ ! -x "$binary" ]; then
  echo "soak: no tracecar binary at $binary (cargo build --profile dist, or --binary PATH)" >&2
  exit 2
fi

# --- tools -------------------------------------------------------------------------------------
apt_needed=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_needed+=(nginx)
command -v h2load >/dev/null 2>&1 || apt_needed+=(nghttp2-client)
command -v curl >/dev/null 2>&1 || apt_needed+=(curl)
command -v python3 >/dev/null 2>&1 || apt_needed+=(python3)
if ((${#apt_needed[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "soak: installing ${apt_needed[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

# --- temporary folder, binary copy, ports -----------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/tracecar-soak.XXXXXX")"
cp "$binary" "$tmp/tracecar"
chmod +x "$tmp/tracecar"

tracecar_pid="" nginx_pid="" sampler_pid="" churn_pid="" collector_pid="" h1_pid="" h2_pid=""
cleaned=0
stop_pid() { # pid grace_seconds: SIGTERM, then SIGKILL after the grace period
  local pid="$1" grace="${2:-5}" i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  ((cleaned)) && return 0
  cleaned=1
  # The loops first (they start processes), then what they started, then the servers.
  for pid in "$churn_pid" "$collector_pid"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "$churn_pid" "$collector_pid"; do
    [ -n "$pid" ] && pkill -TERM -P "$pid" 2>/dev/null || true
  done
  stop_pid "$h1_pid" 5
  stop_pid "$h2_pid" 5
  stop_pid "$churn_pid" 5
  stop_pid "$collector_pid" 5
  [ -f "$tmp/receiver.pid" ] && stop_pid "$(cat "$tmp/receiver.pid")" 5
  stop_pid "$sampler_pid" 5
  stop_pid "$tracecar_pid" 15
  stop_pid "$nginx_pid" 5
  if ((keep_temp)); then
    echo "soak: temporary folder kept: $tmp"
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT TERM

read -r up_h1 up_h2c zipkin_port in_h1 in_h2c admin_port < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)

# --- python helpers (standard library only) ---------------------------------------------------
cat >"$tmp/receiver.py" <<'PY'
# A Zipkin collector on 127.0.0.1: accepts span batches on any path, answers 202, counts the
# spans (one "traceId" key per JSON v2 span) into a file, so the total survives restarts.
import http.server, os, sys, threading

port, state = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
try:
    total = int(open(state).read().strip() or 0)
except (OSError, ValueError):
    total = 0

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global total
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        spans = body.count(b'"traceId"')
        with lock:
            total += spans
            with open(state + ".tmp", "w") as f:
                f.write(str(total))
            os.replace(state + ".tmp", state)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

Server(("127.0.0.1", port), Handler).serve_forever()
PY

cat >"$tmp/sampler.py" <<'PY'
# Every INTERVAL seconds from T0 until T0 + DURATION: tracecar's memory, fds, threads, CPU and
# its own counters from the admin /metrics, one CSV row each.
import csv, os, sys, time, urllib.request

pid, admin, path, receiver_state, down_flag = sys.argv[1:6]
t0, duration, interval = float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
ticks = os.sysconf("SC_CLK_TCK")

def status():
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out

def cpu_seconds():
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / ticks

def metrics():
    sums = {}
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return sums
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            v = float(value)
        except ValueError:
            continue
        sums[name] = sums.get(name, 0.0) + v
        if name == "tracecar_spans_dropped_total":
            for reason in ("queue_full", "export_failed", "shutdown", "too_large"):
                if f'reason="{reason}"' in name_labels:
                    sums["dropped_" + reason] = sums.get("dropped_" + reason, 0.0) + v
    return sums

columns = ["t_s", "rss_kib", "hwm_kib", "fds", "threads", "cpu_s", "requests", "spans_sampled",
           "spans_exported", "spans_dropped", "dropped_queue_full", "dropped_export_failed",
           "export_queue", "receiver_spans", "collector_up"]
with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(columns)
    f.flush()
    k = 0
    while k * interval <= duration:
        target = t0 + k * interval
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            s = status()
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            cpu = cpu_seconds()
        except OSError:
            print("sampler: tracecar is gone", file=sys.stderr)
            sys.exit(1)
        m = metrics()
        try:
            received = int(open(receiver_state).read().strip() or 0)
        except (OSError, ValueError):
            received = 0
        g = lambda name: int(m[name]) if name in m else ""
        w.writerow([round(time.time() - t0, 1), s.get("VmRSS", ""), s.get("VmHWM", ""), fds,
                    s.get("Threads", ""), round(cpu, 2), g("tracecar_requests_total"),
                    g("tracecar_spans_sampled_total"), g("tracecar_spans_exported_total"),
                    g("tracecar_spans_dropped_total"), g("dropped_queue_full"),
                    g("dropped_export_failed"), g("tracecar_export_queue_spans"), received,
                    0 if os.path.exists(down_flag) else 1])
        f.flush()
        k += 1
PY

cat >"$tmp/report.py" <<'PY'
# The verdict, the curve as an SVG, and a markdown summary, from the sampler's CSV.
import csv, html, os, re, statistics, sys

tmp, base = sys.argv[1], sys.argv[2]  # base: results path without extension
meta = dict(line.rstrip("\n").split("=", 1) for line in open(os.path.join(tmp, "meta.env")))
warmup, duration = int(meta["warmup"]), int(meta["duration"])
rows = list(csv.DictReader(open(os.path.join(tmp, "samples.csv"))))
num = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else None
t = [float(r["t_s"]) for r in rows]
rss = [num(r, "rss_kib") for r in rows]

outages = []  # (start_s, end_s)
if os.path.exists(os.path.join(tmp, "outages.log")):
    for line in open(os.path.join(tmp, "outages.log")):
        a, b = line.split()
        outages.append((float(a), float(b)))

# Baseline: the median of the samples in the last 20 s of the warm-up. End: the median of the
# last 3 samples. Growth: against the baseline, for every sample after the warm-up.
base_samples = [r for ti, r in zip(t, rss) if warmup - 20 <= ti <= warmup]
if not base_samples:
    base_samples = [min(zip(t, rss), key=lambda p: abs(p[0] - warmup))[1]]
baseline = statistics.median(base_samples)
after = [(ti, r) for ti, r in zip(t, rss) if ti > warmup]
# The run itself must have been whole: tracecar up to the end, every sample taken, a clean exit.
problems = []
if meta.get("alive") != "1":
    problems.append(f"tracecar exited during the run (status {meta.get('exit')})")
elif meta.get("exit") != "0":
    problems.append(f"exit status {meta.get('exit')} on SIGTERM")
expected = duration // int(meta["interval"]) + 1
if len(rows) < expected:
    problems.append(f"{len(rows)} samples of {expected}")
if len(after) < 3:
    problems.append("fewer than 3 samples after the warm-up")
    after = after or [(t[-1], rss[-1])]
end = statistics.median([r for _, r in after[-3:]])
peak_t, peak = max(after, key=lambda p: p[1])
end_growth = (end - baseline) / baseline * 100
peak_growth = (peak - baseline) / baseline * 100
# Least-squares slope after the warm-up, KiB per minute.
n = len(after)
mt = sum(p[0] for p in after) / n
mr = sum(p[1] for p in after) / n
var = sum((p[0] - mt) ** 2 for p in after)
slope = (sum((p[0] - mt) * (p[1] - mr) for p in after) / var * 60) if var else 0.0
limit = 10.0
if peak_growth > limit:
    problems.insert(0, f"RSS {peak_growth:+.1f} % over the baseline at {peak_t / 60:.1f} min")
verdict = "FAIL" if problems else "PASS"

def h2load_totals(name):
    path = os.path.join(tmp, name)
    text = open(path).read() if os.path.exists(path) else ""
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    rate = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not m:
        return None
    keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
    out = dict(zip(keys, map(int, m.groups())))
    out["rps"] = float(rate.group(2)) if rate else 0.0
    out["5xx"] = int(codes.group(4)) if codes else 0
    return out

h1, h2 = h2load_totals("h2load-h1.txt"), h2load_totals("h2load-h2c.txt")
churn = {"runs": 0, "2xx": 0, "4xx": 0, "5xx": 0, "errored": 0, "curl_ok": 0, "curl_other": 0}
if os.path.exists(os.path.join(tmp, "churn.log")):
    for line in open(os.path.join(tmp, "churn.log")):
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, \d+ failed, (\d+) errored, (\d+) timeout", line)
        c = re.search(r"status codes: (\d+) 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", line)
        if m:
            churn["runs"] += 1
            churn["errored"] += int(m.group(1)) + int(m.group(2))
        elif c:
            churn["2xx"] += int(c.group(1))
            churn["4xx"] += int(c.group(2))
            churn["5xx"] += int(c.group(3))
        elif line.startswith("curl "):
            churn["curl_ok" if line.split()[-1] == "200" else "curl_other"] += 1

end_metrics = {}
if os.path.exists(os.path.join(tmp, "metrics-end.txt")):
    for line in open(os.path.join(tmp, "metrics-end.txt")):
        if line.startswith("tracecar_spans_") or line.startswith("tracecar_export_queue"):
            k, _, v = line.rpartition(" ")
            end_metrics[k] = float(v)
def msum(prefix):
    return int(sum(v for k, v in end_metrics.items() if k.startswith(prefix)))
sampled, exported = msum("tracecar_spans_sampled_total"), msum("tracecar_spans_exported_total")
dropped = {r: msum(f'tracecar_spans_dropped_total{{backend="zipkin",reason="{r}"}}')
           for r in ("queue_full", "export_failed", "shutdown", "too_large")}
queue_end = msum("tracecar_export_queue_spans")
last = rows[-1]
received = int(last["receiver_spans"] or 0)
if os.path.exists(os.path.join(tmp, "receiver.state")):
    received = int(open(os.path.join(tmp, "receiver.state")).read().strip() or 0)

# CPU per request after the warm-up.
first = next(r for ti, r in zip(t, rows) if ti > warmup)
d_req = (num(last, "requests") or 0) - (num(first, "requests") or 0)
d_cpu = (num(last, "cpu_s") or 0) - (num(first, "cpu_s") or 0)
cpu_us = d_cpu / d_req * 1e6 if d_req > 0 else 0.0
fds = [num(r, "fds") for r in rows if num(r, "fds") is not None]

mib = lambda kib: kib / 1024

# --- SVG -----------------------------------------------------------------------------------
W, LM, RM = 860, 70, 20
panels = []
def rates(key):
    out = []
    for a, b in zip(rows, rows[1:]):
        va, vb = num(a, key), num(b, key)
        dt = float(b["t_s"]) - float(a["t_s"])
        if va is not None and vb is not None and dt > 0:
            out.append((float(b["t_s"]), (vb - va) / dt))
    return out

series_rss = [(ti, mib(r)) for ti, r in zip(t, rss) if r is not None]
series_hwm = [(float(r["t_s"]), mib(num(r, "hwm_kib"))) for r in rows if num(r, "hwm_kib")]
panels.append(("RSS (MiB)", [("VmRSS", series_rss, "#1f77b4", ""), ("VmHWM", series_hwm, "#999", "4 3")],
               [(mib(baseline), "#2ca02c", "baseline"), (mib(baseline) * (1 + limit / 100), "#d62728", "+10 %")], 230))
panels.append(("open fds", [("fds", [(float(r["t_s"]), num(r, "fds")) for r in rows], "#9467bd", "")], [], 120))
panels.append(("per second", [("requests/s", rates("requests"), "#ff7f0e", ""),
                              ("spans dropped/s", rates("spans_dropped"), "#d62728", "")], [], 140))

svg, y0 = [], 62
tmax = max(duration, t[-1])
X = lambda ti: LM + (W - LM - RM) * ti / tmax
for title, series, hlines, height in panels:
    values = [v for _, s, _, _ in series for _, v in s if v is not None] + [v for v, _, _ in hlines]
    lo, hi = min(values + [0]), max(values + [1])
    if title.startswith("RSS"):
        lo = 0
    hi = hi * 1.08 if hi > 0 else 1
    Y = lambda v: y0 + height - (height * (v - lo) / (hi - lo) if hi > lo else 0)
    svg.append(f'<rect x="{LM}" y="{y0}" width="{X(warmup) - LM:.1f}" height="{height}" fill="#f2f2f2"/>')
    for a, b in outages:
        svg.append(f'<rect x="{X(a):.1f}" y="{y0}" width="{max(1, X(b) - X(a)):.1f}" height="{height}" fill="#fde0dd"/>')
    svg.append(f'<rect x="{LM}" y="{y0}" width="{W - LM - RM}" height="{height}" fill="none" stroke="#ccc"/>')
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        svg.append(f'<line x1="{LM - 4}" y1="{Y(v):.1f}" x2="{LM}" y2="{Y(v):.1f}" stroke="#666"/>')
        label = f"{v:.1f}" if title.startswith("RSS") else f"{v:.0f}"
        svg.append(f'<text x="{LM - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{label}</text>')
    for v, color, label in hlines:
        svg.append(f'<line x1="{LM}" y1="{Y(v):.1f}" x2="{W - RM}" y2="{Y(v):.1f}" stroke="{color}" stroke-dasharray="2 3"/>')
        svg.append(f'<text x="{W - RM - 4}" y="{Y(v) - 3:.1f}" text-anchor="end" fill="{color}">{html.escape(label)} {v:.1f}</text>')
    legend_x = LM + 8
    for label, points, color, dash in series:
        pts = " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in points if b is not None)
        if pts:
            svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" stroke-dasharray="{dash}" points="{pts}"/>')
        svg.append(f'<text x="{legend_x}" y="{y0 + 14}" fill="{color}">{html.escape(label)}</text>')
        legend_x += 9 * len(label) + 20
    svg.append(f'<text x="{LM}" y="{y0 - 6}" font-weight="bold">{html.escape(title)}</text>')
    y0 += height + 40
step = 60 if tmax <= 900 else 300
for s in range(0, int(tmax) + 1, step):
    svg.append(f'<text x="{X(s):.1f}" y="{y0 - 24}" text-anchor="middle">{s // 60}</text>')
svg.append(f'<text x="{(LM + W - RM) / 2}" y="{y0 - 8}" text-anchor="middle">minutes (grey: warm-up; red bands: collector down)</text>')
H = y0
svg_text = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            f'font-family="sans-serif" font-size="11">\n<rect width="{W}" height="{H}" fill="white"/>\n'
            f'<text x="{LM}" y="16" font-size="13" font-weight="bold">tracecar soak, {html.escape(meta["date"])}: '
            f'{meta["rate"]} req/s for {duration / 60:g} min, warm-up {warmup / 60:g} min</text>\n'
            f'<text x="{LM}" y="34" font-size="12">RSS after warm-up: peak {peak_growth:+.1f} %, end {end_growth:+.1f} %, '
            f'trend {slope:+.0f} KiB/min against a baseline of {mib(baseline):.2f} MiB: {verdict} (limit +{limit:.0f} %)</text>\n'
            + "\n".join(svg) + "\n</svg>\n")
open(base + ".svg", "w").write(svg_text)

# --- markdown ------------------------------------------------------------------------------
name = os.path.basename(base)
def fmt(n):
    return f"{n:,}"
lines = [
    f"# Soak {meta['date']}{' (short run)' if duration < 1800 else ''}",
    "",
    f"`{meta['command']}`",
    "",
    f"- binary: `{meta['binary']}` (sha256 `{meta['sha256'][:16]}…`, {meta['version']}), tree `{meta['commit']}`",
    f"- machine: {meta['cpus']} cores, load average at start {meta['loadavg']}",
    f"- load: {meta['rate']} req/s open loop (h2load `--rps`): HTTP/1.1 {meta['clients']} conns × {meta['rps_per_client']}/s,"
    f" h2c {meta['clients']} conns × {meta['rps_per_client']}/s; churn every {meta['churn_every']} s"
    f" (10 new HTTP/1.1 or h2c connections × 2 requests, plus curl with a `b3` header);"
    f" collector down {meta['outage_len']} s every {int(meta['outage_every']) // 60 or '—'} min"
    f" ({len(outages)} outages); upstream nginx 1 KiB; `tracecar run --workers 1`, sampling 100 %",
    f"- duration {duration // 60} min {duration % 60} s, warm-up {warmup} s, a sample every {meta['interval']} s",
    "",
    f"## Verdict: **{verdict}** — no RSS growth beyond {limit:.0f} % after warm-up",
    "",
] + ([f"Failed: {'; '.join(problems)}.", ""] if problems else []) + [
    "| | |",
    "|---|---:|",
    f"| RSS at end of warm-up (baseline) | {mib(baseline):.2f} MiB |",
    f"| RSS at end | {mib(end):.2f} MiB ({end_growth:+.1f} %) |",
    f"| peak RSS after warm-up | {mib(peak):.2f} MiB at {peak_t / 60:.1f} min ({peak_growth:+.1f} %) |",
    f"| trend after warm-up (least squares) | {slope:+.1f} KiB/min |",
    f"| VmHWM at end | {mib(num(last, 'hwm_kib') or 0):.2f} MiB |",
    f"| open fds min / max | {int(min(fds))} / {int(max(fds))} |",
    f"| CPU per request after warm-up | {cpu_us:.1f} µs |",
    f"| requests seen by tracecar | {fmt(int(num(last, 'requests') or 0))} |",
]
for label, r in (("h2load HTTP/1.1", h1), ("h2load h2c", h2)):
    if r:
        lines.append(f"| {label}: succeeded / failed / errored / 5xx | {fmt(r['succeeded'])} / {r['failed']} / {r['errored']} / {r['5xx']} ({r['rps']:.0f} req/s) |")
    else:
        lines.append(f"| {label} | no result |")
lines += [
    f"| churn: short h2load runs; requests 2xx / 404 (expected) / 5xx / errored | {churn['runs']}; {fmt(churn['2xx'])} / {fmt(churn['4xx'])} / {churn['5xx']} / {churn['errored']} |",
    f"| churn: curl requests with a B3 context, 200 / other | {churn['curl_ok']} / {churn['curl_other']} |",
    f"| spans sampled / exported (at rest, before SIGTERM) | {fmt(sampled)} / {fmt(exported)} |",
    f"| spans dropped: queue_full / export_failed / shutdown / too_large | {fmt(dropped['queue_full'])} / {fmt(dropped['export_failed'])} / {dropped['shutdown']} / {dropped['too_large']} |",
    f"| sampled − exported − dropped (0 at rest) / export queue | {sampled - exported - sum(dropped.values())} / {queue_end} |",
    f"| spans the collector received | {fmt(received)} |",
    f"| tracecar exit status on SIGTERM | {meta.get('exit', '?')} |",
    "",
    f"![RSS, open fds and rates over the run]({name}.svg)",
    "",
    "## The curve (one sample a minute; every sample is in " + f"[`{name}.csv`]({name}.csv))",
    "",
    "| min | RSS MiB | HWM MiB | fds | requests | spans dropped | collector |",
    "|---:|---:|---:|---:|---:|---:|---|",
]
per_minute = int(60 / int(meta["interval"])) or 1
for i, r in enumerate(rows):
    if i % per_minute == 0 or i == len(rows) - 1:
        lines.append(f"| {float(r['t_s']) / 60:.1f} | {mib(num(r, 'rss_kib') or 0):.2f} | {mib(num(r, 'hwm_kib') or 0):.2f} | "
                     f"{r['fds']} | {fmt(int(num(r, 'requests') or 0))} | {fmt(int(num(r, 'spans_dropped') or 0))} | "
                     f"{'up' if r['collector_up'] == '1' else 'down'} |")
open(base + ".md", "w").write("\n".join(lines) + "\n")

print(f"soak: RSS baseline {mib(baseline):.2f} MiB, end {mib(end):.2f} MiB ({end_growth:+.1f} %), "
      f"peak after warm-up {mib(peak):.2f} MiB ({peak_growth:+.1f} %), trend {slope:+.1f} KiB/min")
print(f"soak: {verdict}: " + ("; ".join(problems) if problems else f"RSS growth after warm-up within {limit:.0f} %"))
PY

# --- upstream: nginx, 1 worker, 1 KiB on HTTP/1.1 and h2c -----------------------------------
mkdir -p "$tmp/nginx/tmp"
body="$(python3 -c 'import itertools,string; a=string.ascii_lowercase+string.digits; print("".join(itertools.islice(itertools.cycle(a),1024)))')"
p="$tmp/nginx"
cat >"$p/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $p/nginx.pid;
error_log $p/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $p/tmp/body;
  proxy_temp_path $p/tmp/proxy;
  fastcgi_temp_path $p/tmp/fastcgi;
  uwsgi_temp_path $p/tmp/uwsgi;
  scgi_temp_path $p/tmp/scgi;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$up_h1 backlog=4096;
    listen 127.0.0.1:$up_h2c http2 backlog=4096;
    location = /1k { default_type text/plain; return 200 "$body"; }
    location / { return 404; }
  }
}
EOF
"$nginx_bin" -p "$p/" -c "$p/nginx.conf" -e "$p/error.log" </dev/null >/dev/null 2>&1 &
nginx_pid=$!

wait_port() { # port name pid
  local i
  for ((i = 0; i < 150; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "soak: $2 did not listen on 127.0.0.1:$1" >&2
  return 1
}
wait_port "$up_h1" nginx "$nginx_pid" || { cat "$p/error.log" >&2; exit 1; }
wait_port "$up_h2c" nginx "$nginx_pid" || { cat "$p/error.log" >&2; exit 1; }

# --- tracecar -----------------------------------------------------------------------------------
cat >"$tmp/dataplane.yaml" <<EOF
type: Dataplane
mesh: default
name: soak-1
networking:
  address: 127.0.0.1
  inbound:
    - port: $in_h1
      servicePort: $up_h1
      tags: {kuma.io/service: soak-http, kuma.io/protocol: http}
    - port: $in_h2c
      servicePort: $up_h2c
      tags: {kuma.io/service: soak-h2c, kuma.io/protocol: http2}
EOF
cat >"$tmp/policy.yaml" <<EOF
type: Mesh
name: default
tracing:
  defaultBackend: zipkin
  backends:
    - name: zipkin
      type: zipkin
      sampling: 100
      conf:
        url: http://127.0.0.1:$zipkin_port/api/v2/spans
---
type: TrafficTrace
name: trace-all
mesh: default
selectors:
  - match:
      kuma.io/service: '*'
EOF

start_receiver() {
  python3 "$tmp/receiver.py" "$zipkin_port" "$tmp/receiver.state" </dev/null >>"$tmp/receiver.log" 2>&1 &
  echo $! >"$tmp/receiver.pid"
  wait_port "$zipkin_port" receiver "$!"
}
start_receiver

env -u TRACECAR_DATAPLANE -u TRACECAR_POLICY -u TRACECAR_ADMIN -u TRACECAR_WORKERS \
  TRACECAR_LOG=warn "$tmp/tracecar" run --dataplane "$tmp/dataplane.yaml" \
  --policy "$tmp/policy.yaml" --admin "127.0.0.1:$admin_port" --workers 1 \
  </dev/null >/dev/null 2>"$tmp/tracecar.log" &
tracecar_pid=$!
ready=0
for ((i = 0; i < 150; i++)); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/ready")" = 200 ]; then
    ready=1
    break
  fi
  kill -0 "$tracecar_pid" 2>/dev/null || break
  sleep 0.1
done
if ((!ready)); then
  echo "soak: tracecar did not become ready:" >&2
  cat "$tmp/tracecar.log" >&2
  exit 1
fi

# Both inbounds answer 1 KiB before the load starts.
h1_url="http://127.0.0.1:$in_h1/1k"
h2_url="http://127.0.0.1:$in_h2c/1k"
for args in "$h1_url" "--http2-prior-knowledge $h2_url"; do
  # shellcheck disable=SC2086
  got="$(curl -s -m 5 -o /dev/null -w '%{http_code} %{size_download}' $args)"
  if [ "$got" != "200 1024" ]; then
    echo "soak: sanity request ($args) got '$got', expected '200 1024'" >&2
    cat "$tmp/tracecar.log" >&2
    exit 1
  fi
done

# --- the run ------------------------------------------------------------------------------------
half=$((rate / 2))
rps_per_client=$(((half + clients / 2) / clients))
((rps_per_client >= 1)) || rps_per_client=1
if ((2 * clients * rps_per_client != rate)); then
  echo "soak: --rate $rate rounded to $((2 * clients * rps_per_client)) (2 × $clients connections × $rps_per_client/s)"
  rate=$((2 * clients * rps_per_client))
fi
date_tag="$(date -u +%F)"
mkdir -p "$out"
if [ -n "$name_arg" ]; then
  stem="$name_arg"
else
  stem="soak-$date_tag"
  ((duration >= 1800)) || stem="$stem-short"
  n=2
  base_stem="$stem"
  while [ -e "$out/$stem.md" ] || [ -e "$out/$stem.csv" ]; do
    stem="$base_stem-$n"
    n=$((n + 1))
  done
fi
results="$out/$stem"

# Outages: the first in the middle of the warm-up (so the baseline has seen the export queue
# fill once), then every --outage-every; none that would end within the last minute.
outages=()
if ((outage_every > 0 && outage_len > 0)); then
  at=$((warmup / 2))
  while ((at + outage_len + 60 <= duration)); do
    outages+=("$at")
    at=$((at + outage_every))
  done
fi

echo "soak: $tmp/tracecar (copy of $binary), ${duration}s at $rate req/s" \
  "(2 × $clients conns × $rps_per_client/s), warm-up ${warmup}s, ${#outages[@]} collector outages," \
  "results: $results.{csv,svg,md}"

cat >"$tmp/meta.env" <<EOF
date=$(date -u '+%F %H:%M UTC')
command=benches/soak.sh --duration ${duration}s --warm-up ${warmup}s --rate $rate --clients $clients --interval $interval --churn-every $churn_every --outage-every ${outage_every}s --outage-length ${outage_len}s
binary=$binary
sha256=$(sha256sum "$tmp/tracecar" | cut -d' ' -f1)
version=$("$tmp/tracecar" --version 2>/dev/null || echo unknown)
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
cpus=$(nproc)
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
rate=$rate
clients=$clients
rps_per_client=$rps_per_client
churn_every=$churn_every
outage_every=$outage_every
outage_len=$outage_len
duration=$duration
warmup=$warmup
interval=$interval
EOF

t0="$(date +%s.%N)"
t0s="${t0%.*}"
python3 "$tmp/sampler.py" "$tracecar_pid" "127.0.0.1:$admin_port" "$tmp/samples.csv" \
  "$tmp/receiver.state" "$tmp/collector.down" "$t0" "$duration" "$interval" 2>"$tmp/sampler.log" &
sampler_pid=$!

# Steady load: long-lived connections, open loop at a fixed rate per connection.
timeout -k 10 $((duration + 30)) h2load --h1 -c "$clients" --rps "$rps_per_client" -D "$duration" \
  "$h1_url" >"$tmp/h2load-h1.txt" 2>&1 &
h1_pid=$!
timeout -k 10 $((duration + 30)) h2load -c "$clients" -m 4 --rps "$rps_per_client" -D "$duration" \
  "$h2_url" >"$tmp/h2load-h2c.txt" 2>&1 &
h2_pid=$!

# Churn: fresh connections every few seconds, both protocols, a 404 now and then, and curl
# with an incoming B3 context (shared SERVER spans).
if ((churn_every > 0)); then
  (
    trap 'exit 0' TERM
    i=0
    while (($(date +%s) < t0s + duration - 2)); do
      case $((i % 4)) in
        0) timeout -k 2 10 h2load --h1 -n 20 -c 10 "$h1_url" 2>&1 | grep -E '^(requests|status codes):' || true ;;
        1) timeout -k 2 10 h2load -n 20 -c 10 "$h2_url" 2>&1 | grep -E '^(requests|status codes):' || true ;;
        2) timeout -k 2 10 h2load --h1 -n 10 -c 5 "http://127.0.0.1:$in_h1/missing" 2>&1 | grep -E '^(requests|status codes):' || true ;;
        3)
          tid="$(printf '%016x' "$((RANDOM * 32768 + RANDOM))")$(printf '%016x' "$i")"
          echo "curl h1 $(curl -s -m 5 -o /dev/null -w '%{http_code}' -H "b3: $tid-$(printf '%016x' "$((i + 1))")-1" "$h1_url")"
          echo "curl h2c $(curl -s -m 5 -o /dev/null -w '%{http_code}' --http2-prior-knowledge -H "x-b3-traceid: $tid" -H "x-b3-spanid: $(printf '%016x' "$((i + 7))")" -H 'x-b3-sampled: 1' "$h2_url")"
          ;;
      esac
      i=$((i + 1))
      sleep "$churn_every"
    done
  ) >"$tmp/churn.log" 2>&1 &
  churn_pid=$!
fi

# The collector goes away and comes back.
if ((${#outages[@]})); then
  (
    trap 'exit 0' TERM
    for at in "${outages[@]}"; do
      while (($(date +%s) < t0s + at)); do sleep 1; done
      rpid="$(cat "$tmp/receiver.pid")"
      touch "$tmp/collector.down"
      start_s=$(($(date +%s) - t0s))
      kill -TERM "$rpid" 2>/dev/null || true
      wait "$rpid" 2>/dev/null || true
      sleep "$outage_len"
      start_receiver || true
      rm -f "$tmp/collector.down"
      echo "$start_s $(($(date +%s) - t0s))" >>"$tmp/outages.log"
    done
  ) &
  collector_pid=$!
fi

# Wait for the load to end; stop it early if tracecar goes away.
alive=1
while kill -0 "$h1_pid" 2>/dev/null || kill -0 "$h2_pid" 2>/dev/null; do
  if ! kill -0 "$tracecar_pid" 2>/dev/null; then
    alive=0
    echo "soak: tracecar exited during the run; stopping the load" >&2
    stop_pid "$h1_pid" 5
    stop_pid "$h2_pid" 5
    break
  fi
  sleep 1
done
h1_rc=0 h2_rc=0
wait "$h1_pid" || h1_rc=$?
wait "$h2_pid" || h2_rc=$?
h1_pid="" h2_pid=""
kill -0 "$tracecar_pid" 2>/dev/null || alive=0
if ((!alive)); then stop_pid "$sampler_pid" 5; fi
wait "$sampler_pid" || echo "soak: the sampler stopped early: $(cat "$tmp/sampler.log")" >&2
sampler_pid=""
stop_pid "$churn_pid" 15
churn_pid=""
stop_pid "$collector_pid" 5
collector_pid=""
((h1_rc == 0)) || echo "soak: h2load (HTTP/1.1) exited with $h1_rc" >&2
((h2_rc == 0)) || echo "soak: h2load (h2c) exited with $h2_rc" >&2

echo "soak: load done at $(date -u +%T); stopping tracecar"
# At rest: let the last batch go out, read the counters, then stop tracecar.
sleep 3
curl -s -m 5 "http://127.0.0.1:$admin_port/metrics" >"$tmp/metrics-end.txt" || true
exit_status="killed"
kill -TERM "$tracecar_pid" 2>/dev/null || true
for ((i = 0; i < 150; i++)); do
  kill -0 "$tracecar_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$tracecar_pid" 2>/dev/null; then
  kill -KILL "$tracecar_pid" 2>/dev/null || true
  wait "$tracecar_pid" 2>/dev/null || true
else
  rc=0
  wait "$tracecar_pid" || rc=$?
  exit_status="$rc"
fi
tracecar_pid=""
echo "soak: tracecar stopped at $(date -u +%T), exit status $exit_status"
echo "exit=$exit_status" >>"$tmp/meta.env"
echo "alive=$alive" >>"$tmp/meta.env"
if [ -s "$tmp/tracecar.log" ]; then
  echo "soak: tracecar logged $(wc -l <"$tmp/tracecar.log") lines at warn and above; the first:" >&2
  head -5 "$tmp/tracecar.log" >&2
fi

cp "$tmp/samples.csv" "$results.csv"
python3 "$tmp/report.py" "$tmp" "$results"
echo "soak: wrote $results.csv, $results.svg, $results.md"
grep -q '^## Verdict: \*\*PASS' "$results.md"
