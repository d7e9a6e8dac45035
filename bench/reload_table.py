"""The markdown table of bench/reload.sh from every run's result.json, on stdout.

    reload_table.py SCRATCH_DIR RUNS

Reads SCRATCH_DIR/{alone,restart,nginx}-1..RUNS/result.json (bench/reload_run_summary.py) and
SCRATCH_DIR/alone-*/alone.
"""
import json, os, statistics, sys
W, runs = sys.argv[1], int(sys.argv[2])
def load(mode):
    rs = []
    for i in range(1, runs + 1):
        r = json.load(open(f"{W}/{mode}-{i}/result.json"))
        if os.path.exists(f"{W}/{mode}-{i}/alone"):
            r["alone"] = open(f"{W}/{mode}-{i}/alone").read().strip() == "1"
        rs.append(r)
    return rs
A0, A, B = load("alone"), load("restart"), load("nginx")

def vals(rs, key, scale=1.0):
    return [r[key] * scale for r in rs if r.get("rc") == 0 and key in r]

def med(rs, key, scale=1.0):
    v = vals(rs, key, scale)
    if not v:
        return "—"
    s = f"{round(statistics.median(v))} ms"
    return s if len(v) == len(rs) else f"{s} ({len(v)}/{len(rs)} runs)"

def rng(rs, key, scale=1.0):
    v = vals(rs, key, scale)
    return f"{round(min(v))} – {round(max(v))} ms" if v else "—"

def ok(rs):
    return f"{sum(r['rc'] == 0 for r in rs)}/{len(rs)}"

va = vals(A, "verified_after_back_ms")
target = "—" if not va else ("met" if statistics.median(va) <= 500 else "MISSED")
back_new = sum(bool(r.get("back_serves_new")) for r in A)
failed_req, total_req = sum(r["failed_probes"] for r in B), sum(r["probes"] for r in B)
stale = [r["old_served_after_verified_ms"] for r in B if r.get("old_served_after_verified_ms", -1) > 0]
alone = sum(bool(r.get("alone")) for r in A0)

lines = []
w = lines.append
w(f"| measurement (median of {runs} runs of `regcert renew --force`) | median | min – max |")
w("|---|---|---|")
w(f"| **A. registry container, reload `docker` restart** (runs that exited 0: {ok(A)}) | | |")
w(f"| A: files written → verified (`installed` → `verified` log lines) | {med(A, 'written_to_verified_ms')} | {rng(A, 'written_to_verified_ms')} |")
w(f"| A: … of which files written → restart call returned (`reloaded`) | {med(A, 'written_to_reloaded_ms')} | {rng(A, 'written_to_reloaded_ms')} |")
w(f"| A: whole `renew --force` wall time (ACME + install + restart + verify) | {med(A, 'wall_s', 1000)} | {rng(A, 'wall_s', 1000)} |")
w(f"| A: registry restart gap (longest time without an answer, poller) | {med(A, 'gap_ms')} | {rng(A, 'gap_ms')} |")
w(f"| A: verification confirmed after the registry was back (target ≤ 500 ms: **{target}**) | {med(A, 'verified_after_back_ms')} | {rng(A, 'verified_after_back_ms')} |")
w(f"| A: first answer after the gap already served the new certificate | {back_new}/{len(A)} runs | |")
w(f"| **B. nginx in front of a plain-HTTP registry, reload `nginx -s reload`** (runs that exited 0: {ok(B)}) | | |")
w(f"| B: files written → verified | {med(B, 'written_to_verified_ms')} | {rng(B, 'written_to_verified_ms')} |")
w(f"| B: whole `renew --force` wall time | {med(B, 'wall_s', 1000)} | {rng(B, 'wall_s', 1000)} |")
w(f"| B: failed requests seen by the poller (all {runs} runs; target 0) | **{failed_req}** of {total_req} | |")
w(f"| B: runs in which a connection opened after `verified` still got the old certificate | {len(stale)}/{len(B)}"
  + (f" (up to {round(max(stale))} ms after)" if stale else "") + " | |")
w(f"| *A0. as A, but the registry alone on its Docker network* (exited 0: {ok(A0)}; really alone: {alone}/{len(A0)}) | | |")
w(f"| A0: files written → verified | {med(A0, 'written_to_verified_ms')} | {rng(A0, 'written_to_verified_ms')} |")
w(f"| A0: registry restart gap (poller) | {med(A0, 'gap_ms')} | {rng(A0, 'gap_ms')} |")
w(f"| A0: verification confirmed after the registry was back | {med(A0, 'verified_after_back_ms')} | {rng(A0, 'verified_after_back_ms')} |")
w("")
w("Per run (ms; \"old cert after verified\" > 0 means a connection opened that long after `verified` still got the old certificate):")
w("")
w("| run | rc | written → reloaded | written → verified | wall | gap | verified after back | old cert after verified | failed probes |")
w("|---|---|---|---|---|---|---|---|---|")
f = lambda r, k: f"{round(r[k])}" if k in r else "—"
for mode, rs in (("A", A), ("B", B), ("A0", A0)):
    for i, r in enumerate(rs, 1):
        w(f"| {mode}.{i} | {r['rc']} | {f(r, 'written_to_reloaded_ms')} | {f(r, 'written_to_verified_ms')} | {round(r['wall_s'] * 1000)} | "
          f"{f(r, 'gap_ms')} | {f(r, 'verified_after_back_ms')} | {f(r, 'old_served_after_verified_ms')} | {r['failed_probes']}"
          + (f" ({', '.join(r['errors'])})" if r['errors'] else "") + " |")
print("\n".join(lines))
