#!/usr/bin/env python3
"""Bulk TCP transfer for the opaque-throughput bench.

    bulk.py serve --listen 0.0.0.0:5432 --bytes N   # each client gets N bytes, then EOF
    bulk.py fetch --addr IP:PORT                     # read to EOF, print JSON

The server speaks first (like PostgreSQL or SMTP), so nothing waits on protocol detection:
on an opaque port the proxy copies bytes from the first moment. `fetch` prints
{"bytes": …, "seconds": …} measured from before connect() to EOF.
"""

import argparse
import json
import socket
import sys
import time

CHUNK = 1 << 20


def serve(listen, total):
    host, port = listen.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(16)
    buf = memoryview(b"\x5a" * CHUNK)
    while True:
        conn, _ = srv.accept()
        try:
            left = total
            while left > 0:
                n = min(left, CHUNK)
                conn.sendall(buf[:n])
                left -= n
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(CHUNK):  # until the client closes too
                pass
        except OSError:
            pass
        finally:
            conn.close()


def fetch(addr, timeout):
    host, port = addr.rsplit(":", 1)
    buf = bytearray(CHUNK)
    got = 0
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        while True:
            n = s.recv_into(buf)
            if n == 0:
                break
            got += n
    dt = time.monotonic() - t0
    print(json.dumps({"bytes": got, "seconds": round(dt, 6)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", required=True)
    s.add_argument("--bytes", type=int, required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--addr", required=True)
    f.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    try:
        if a.cmd == "serve":
            serve(a.listen, a.bytes)
        else:
            fetch(a.addr, a.timeout)
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"bulk: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
