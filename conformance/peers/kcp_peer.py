#!/usr/bin/env python3
"""Reference KCP peer on real UDP, built on PyPI `kcp` 0.1.6 (the reference ikcp C code).

Modes (message mode: the binding has no stream mode):
  echo --listen HOST:PORT [--conv N]    echo every message back, one KCP per remote address
  send --to HOST:PORT --bytes N [--conv N] [--msg 4096] [--timeout S]
       send N bytes of deterministic data as messages, read the echo, print one line:
       `bytes=N seconds=S goodput_mbps=G sha256=HEX` (SHA-256 of what came back)
The echo mode prints `listening HOST:PORT` on stdout once bound.
"""
import argparse
import hashlib
import select
import socket
import sys
import time

try:
    from kcp import KCP
except ImportError:
    sys.exit("kcp_peer: Python package `kcp` missing; run `bash .ci/setup` (pip install kcp==0.1.6)")


def now_ms(t0):
    return int((time.monotonic() - t0) * 1000) & 0xFFFFFFFF


def make_kcp(conv, sock, addr):
    k = KCP(conv, max_transmission=1400, no_delay=True, update_interval=10, resend_count=2,
            no_congestion_control=True, send_window_size=256, receive_window_size=256)
    k.include_outbound_handler(lambda _k, data: sock.sendto(data, addr))
    return k


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


def echo(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(parse_addr(args.listen))
    print("listening %s:%d" % sock.getsockname(), flush=True)
    t0 = time.monotonic()
    peers = {}
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.005)
        if r:
            data, addr = sock.recvfrom(65536)
            k = peers.get(addr)
            if k is None:
                if len(peers) >= 64:
                    continue
                k = peers[addr] = make_kcp(args.conv, sock, addr)
            try:
                k.receive(data)
            except Exception as e:  # bad datagram: report and go on, as ikcp does
                print("kcp_peer: input error from %s: %s" % (addr, e), file=sys.stderr)
        t = now_ms(t0)
        for k in peers.values():
            while True:
                m = k.get_received()
                if not m:
                    break
                k.enqueue(bytes(m))
            k.update(t)


def send(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = parse_addr(args.to)
    k = make_kcp(args.conv, sock, addr)
    data = bytes((i * 131 + 7) & 0xFF for i in range(min(args.bytes, 1 << 20)))
    t0 = time.monotonic()
    sent = 0
    got = 0
    h = hashlib.sha256()
    deadline = time.monotonic() + args.timeout
    while got < args.bytes:
        if time.monotonic() > deadline:
            sys.exit("kcp_peer: timed out with %d of %d bytes echoed" % (got, args.bytes))
        # Keep a bounded amount in flight.
        while sent < args.bytes and sent - got < 512 * 1024:
            n = min(args.msg, args.bytes - sent)
            off = sent % len(data)
            chunk = (data[off:] + data)[:n]
            k.enqueue(chunk)
            sent += n
        r, _, _ = select.select([sock], [], [], 0.005)
        if r:
            d, _ = sock.recvfrom(65536)
            try:
                k.receive(d)
            except Exception as e:
                print("kcp_peer: input error: %s" % e, file=sys.stderr)
        while True:
            m = k.get_received()
            if not m:
                break
            h.update(m)
            got += len(m)
        k.update(now_ms(t0))
    secs = time.monotonic() - t0
    print("bytes=%d seconds=%.3f goodput_mbps=%.2f sha256=%s" % (got, secs, got * 8 / secs / 1e6, h.hexdigest()), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--listen", required=True)
    e.add_argument("--conv", type=int, default=1)
    e.add_argument("--lifetime", type=float, default=120.0, help="exit after this many seconds")
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--conv", type=int, default=1)
    s.add_argument("--msg", type=int, default=4096)
    s.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()
    echo(a) if a.mode == "echo" else send(a)


if __name__ == "__main__":
    main()
