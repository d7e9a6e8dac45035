"""Polls a TLS registry in a tight loop and logs every probe (bench/reload.sh).

    tls_poller.py OUT STOPFILE HOST PORT SNI CAFILE

Each probe: TCP connect (timeout 50 ms, TCP_NODELAY) + TLS handshake verified against CAFILE with
SNI (timeout 2 s) + GET /v2/ on a fresh connection. One line per probe in OUT:
    t_start t_end ok leaf_sha256_prefix|error
ok = 1 when the handshake succeeded and /v2/ answered 200 or 401. Stops when STOPFILE exists
(or after 180 s).
"""
import hashlib, socket, ssl, sys, time, os
out, stopfile, host, port, sni, cafile = sys.argv[1:7]
port = int(port)
ctx = ssl.create_default_context(cafile=cafile)
req = f"GET /v2/ HTTP/1.1\r\nHost: {sni}:{port}\r\nUser-Agent: reload-bench\r\nConnection: close\r\n\r\n".encode()
deadline = time.time() + 180
with open(out, "w", buffering=1) as f:
    while time.time() < deadline and not os.path.exists(stopfile):
        t0 = time.time()
        fp = ""
        ok = 0
        try:
            s = socket.create_connection((host, port), timeout=0.05)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(2.0)
            with ctx.wrap_socket(s, server_hostname=sni) as tls:
                fp = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()[:16]
                tls.sendall(req)
                data = b""
                while b"\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                status = data.split(b"\r\n", 1)[0].split()
                code = int(status[1]) if len(status) > 1 else 0
                if code in (200, 401):
                    ok = 1
                else:
                    fp = f"http-{code}"
        except Exception as e:  # noqa: BLE001 - every failure is a data point
            fp = type(e).__name__
        t1 = time.time()
        f.write(f"{t0:.6f} {t1:.6f} {ok} {fp}\n")
        time.sleep(0.002)
