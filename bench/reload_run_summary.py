"""The numbers of one `regcert renew --force` run of bench/reload.sh, as one JSON object on stdout.

    reload_run_summary.py MODE RUN_DIR

RUN_DIR holds regcert.log (regcert's JSON log), poller.log (bench/tls_poller.py), domain.crt (the
certificate installed by the run), wall and rc. MODE "restart" adds the registry restart gap.
"""
import datetime, hashlib, json, re, ssl, sys
mode, d = sys.argv[1], sys.argv[2]

def ts(s):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", s)
    base = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) if m.group(3) != "Z" else "+00:00"))
    return base.timestamp() + (float(m.group(2)) if m.group(2) else 0.0)

events = {}
for line in open(f"{d}/regcert.log"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    obj = json.loads(line)
    msg = obj.get("fields", {}).get("message", "")
    key = {"installed": "installed", "reloaded": "reloaded",
           "verified: the registry serves the new certificate": "verified"}.get(msg)
    if key and key not in events:
        events[key] = ts(obj["timestamp"])

pem = open(f"{d}/domain.crt").read()
first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
new_fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()[:16]

probes = []
for line in open(f"{d}/poller.log"):
    parts = line.split()
    if len(parts) == 4:
        probes.append((float(parts[0]), float(parts[1]), parts[2] == "1", parts[3]))
wall = float(open(f"{d}/wall").read().split()[0])
rc = int(open(f"{d}/rc").read().strip())
r = {"rc": rc, "wall_s": wall, "probes": len(probes), "failed_probes": sum(1 for p in probes if not p[2])}
r["errors"] = sorted({p[3] for p in probes if not p[2]})
if "installed" in events and "verified" in events:
    r["written_to_verified_ms"] = (events["verified"] - events["installed"]) * 1000
if "installed" in events and "reloaded" in events:
    r["written_to_reloaded_ms"] = (events["reloaded"] - events["installed"]) * 1000
ok = [p for p in probes if p[2]]
new = [p for p in ok if p[3] == new_fp]
if new and "verified" in events:
    r["first_new_served_to_verified_ms"] = (events["verified"] - new[0][1]) * 1000
old = [p for p in ok if p[3] != new_fp]
if old and "verified" in events:
    # > 0: a connection opened after regcert logged "verified" still got the old certificate.
    r["old_served_after_verified_ms"] = (old[-1][0] - events["verified"]) * 1000
if mode == "restart" and len(ok) >= 2:
    # Longest interval between two consecutive successful probes (end of one to end of the next):
    # the registry did not answer in between. "Back" is the end of the first probe after it.
    gaps = [(b[1] - a[1], a, b) for a, b in zip(ok, ok[1:])]
    gap, before, after = max(gaps, key=lambda g: g[0])
    r["gap_ms"] = gap * 1000
    r["back_serves_new"] = after[3] == new_fp
    if "installed" in events:
        r["gap_start_after_written_ms"] = (before[1] - events["installed"]) * 1000
    if "verified" in events:
        r["verified_after_back_ms"] = (events["verified"] - after[1]) * 1000
print(json.dumps(r))
