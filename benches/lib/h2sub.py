#!/usr/bin/env python3
"""Simulated proxies subscribed to the controller's destination API.

    h2sub.py --controller 127.0.0.1:8086 --name weft-controller.weft.… --ca ca.crt
             --conns 100 --targets 198.19.1.0:80,198.19.1.1:80,… --per-conn 5

Opens --conns TLS 1.3 connections (ALPN h2, the server's certificate verified against the
trust anchors in --ca for exactly the identity --name, like a proxy does; no client
certificate), and on each one --per-conn HTTP/2 streams
`GET /weft.destination.v1/get?addr=…`, taking the targets round-robin. When every stream
has received its first `snapshot` line it prints one JSON line to stdout
({"connections", "streams", "seconds", "bytes"}) and then holds every stream open,
answering PINGs and SETTINGS, until SIGTERM or SIGINT.

A minimal HTTP/2 client on the standard library: requests are HPACK-encoded with static
table entries and literals (no Huffman, no dynamic table), responses are not decoded
beyond `:status 200` (the indexed static entry 0x88) and the DATA payloads.
"""

import argparse
import asyncio
import json
import signal
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, stream & 0x7FFFFFFF) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    b = s.encode()
    return hpack_int(len(b), 7) + b


def request_headers(authority, path):
    # :method GET (static 2), :scheme https (static 7), then literals without indexing
    # with indexed names :authority (1) and :path (4).
    return (
        b"\x82\x87"
        + hpack_int(1, 4) + hpack_str(authority)
        + hpack_int(4, 4) + hpack_str(path)
    )


class Sub:
    def __init__(self, args, targets, done):
        self.args, self.targets, self.done = args, targets, done
        self.bytes = 0

    async def run(self, ctx):
        host, port = self.args.controller.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=ctx, server_hostname=self.args.name
        )
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn != "h2":
            raise RuntimeError(f"controller negotiated ALPN {alpn!r}, not h2")
        settings = struct.pack(">HI", 2, 0) + struct.pack(">HI", 4, 1 << 20)  # no push; 1 MiB windows
        writer.write(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 24)))
        pending = {}
        for i, target in enumerate(self.targets):
            sid = 1 + 2 * i
            pending[sid] = b""
            hdr = request_headers(self.args.name + ":" + port, f"/weft.destination.v1/get?addr={target}")
            writer.write(frame(HEADERS, END_HEADERS | END_STREAM, sid, hdr))
        await writer.drain()
        while True:
            head = await reader.readexactly(9)
            n = (head[0] << 16) | (head[1] << 8) | head[2]
            kind, flags = head[3], head[4]
            sid = struct.unpack(">I", head[5:9])[0] & 0x7FFFFFFF
            payload = await reader.readexactly(n) if n else b""
            if kind == SETTINGS and not flags & ACK:
                writer.write(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                writer.write(frame(PING, ACK, 0, payload))
            elif kind == HEADERS and sid in pending:
                block = payload
                if flags & 0x8:  # PADDED
                    block = block[1:len(block) - block[0]]
                if flags & 0x20:  # PRIORITY
                    block = block[5:]
                if not block.startswith(b"\x88"):
                    raise RuntimeError(f"stream {sid} ({self.targets[(sid - 1) // 2]}): status is not 200")
            elif kind == DATA:
                self.bytes += n
                if n:
                    writer.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", n)) + frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", n)))
                if sid in pending:
                    pending[sid] += payload
                    if b'"snapshot"' in pending[sid] and b"\n" in pending[sid]:
                        del pending[sid]
                        if not pending:
                            self.done()
                if flags & END_STREAM:
                    raise RuntimeError(f"stream {sid} ended: the controller closed a subscription")
            elif kind == RST_STREAM:
                raise RuntimeError(f"stream {sid} reset by the controller (code {struct.unpack('>I', payload)[0]})")
            elif kind == GOAWAY:
                raise RuntimeError("the controller sent GOAWAY")
            await writer.drain()


async def main_async(args):
    targets = [t for t in args.targets.split(",") if t]
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    ready = 0
    all_ready = asyncio.Event()
    t0 = time.monotonic()

    def one_ready():
        nonlocal ready
        ready += 1
        if ready == args.conns:
            all_ready.set()

    subs = []
    for c in range(args.conns):
        mine = [targets[(c * args.per_conn + k) % len(targets)] for k in range(args.per_conn)]
        subs.append(Sub(args, mine, one_ready))
    tasks = [asyncio.create_task(s.run(ctx)) for s in subs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def first_failure():
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception():
                raise t.exception()

    watcher = asyncio.create_task(first_failure())
    waiter = asyncio.create_task(all_ready.wait())
    done, _ = await asyncio.wait({watcher, waiter}, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED)
    if watcher in done:
        watcher.result()
    if waiter not in done:
        raise RuntimeError(f"only {ready} of {args.conns} subscribers got all their snapshots within {args.timeout} s")
    print(json.dumps({
        "connections": args.conns,
        "streams": args.conns * args.per_conn,
        "seconds": round(time.monotonic() - t0, 3),
        "bytes": sum(s.bytes for s in subs),
    }), flush=True)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if watcher in done:
        watcher.result()
    for t in tasks:
        t.cancel()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--controller", required=True, help="IP:PORT of the proxy API")
    ap.add_argument("--name", required=True, help="the identity the controller's certificate must name")
    ap.add_argument("--ca", required=True, help="trust anchors (PEM)")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--per-conn", type=int, default=5)
    ap.add_argument("--targets", required=True, help="comma-separated IP:PORT addresses to watch")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    try:
        asyncio.run(main_async(args))
    except (RuntimeError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as e:
        print(f"h2sub: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
