#!/usr/bin/env python3
"""Reference KCP peer on real UDP, built on PyPI `kcp` 0.1.6 (the reference ikcp C code).

Modes (message mode only: the binding has no stream mode):
  echo --listen HOST:PORT [--conv N] [--lifetime S]
       echo every message back, one KCP per remote address
  send --to HOST:PORT --bytes N [--conv N] [--msg 4096] [--timeout S]
       send N bytes of the bulk pattern as messages, read the echo, print one line:
       `bytes=N seconds=S goodput_mbps=G sha256=HEX` (SHA-256 of what came back);
       exit 1 if the echo differs from what was sent or the timeout passes
The echo mode prints `listening HOST:PORT` on stdout once bound.

Knobs (both modes): mtu 1400, nodelay 1, interval 10, resend 2, no congestion window,
windows 256/256 -- tunnelbed's `--profile reference-peer`.

A stream-mode sender (tunnelbed's vproxy profiles) works against this peer: its segments
all carry frg=0, so ikcp here takes each segment as one message and echoes it as one;
the byte order is kept, message boundaries mean nothing to a byte-counting sender.

The bulk pattern is SHA-256 in counter mode: SHA-256(k as 8 little-endian bytes) for
k = 0, 1, 2, ..., concatenated (the same bytes `tunnelbed kcp send` sends). It does not
repeat, so a reordered or duplicated message always changes the digest.
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

# Datagrams read per loop turn before the KCP sessions are serviced.
DRAIN = 256
SOCK_BUF = 4 << 20


def now_ms(t0):
    return int((time.monotonic() - t0) * 1000) & 0xFFFFFFFF


def pattern(off, n):
    """n bytes of the bulk pattern from stream offset off."""
    first = off // 32
    last = (off + n + 31) // 32
    blob = b"".join(hashlib.sha256(k.to_bytes(8, "little")).digest() for k in range(first, last))
    skip = off - first * 32
    return blob[skip:skip + n]


def make_sock():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        except OSError:
            pass
    return sock


def make_kcp(conv, sock, addr):
    k = KCP(conv, max_transmission=1400, no_delay=True, update_interval=10, resend_count=2,
            no_congestion_control=True, send_window_size=256, receive_window_size=256)

    def out(_k, data):
        try:
            sock.sendto(data, addr)
        except OSError as e:  # e.g. ECONNREFUSED from an earlier ICMP error: KCP retransmits
            print("kcp_peer: sendto %s: %s" % (addr, e), file=sys.stderr)

    k.include_outbound_handler(out)
    return k


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


def drain(sock, timeout):
    """Waits up to timeout for a datagram, then returns every datagram already queued."""
    got = []
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return got
    while len(got) < DRAIN:
        try:
            got.append(sock.recvfrom(65536, socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            break
        except OSError as e:
            print("kcp_peer: recvfrom: %s" % e, file=sys.stderr)
            break
    return got


def echo(args):
    sock = make_sock()
    sock.bind(parse_addr(args.listen))
    print("listening %s:%d" % sock.getsockname(), flush=True)
    t0 = time.monotonic()
    peers = {}
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        for data, addr in drain(sock, 0.005):
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
    sock = make_sock()
    addr = parse_addr(args.to)
    k = make_kcp(args.conv, sock, addr)
    t0 = time.monotonic()
    sent = 0
    got = 0
    h = hashlib.sha256()
    first_bad = None
    deadline = time.monotonic() + args.timeout
    while got < args.bytes:
        if time.monotonic() > deadline:
            sys.exit("kcp_peer: timed out with %d of %d bytes echoed" % (got, args.bytes))
        # Keep a bounded amount in flight.
        while sent < args.bytes and sent - got < 512 * 1024:
            n = min(args.msg, args.bytes - sent)
            k.enqueue(pattern(sent, n))
            sent += n
        for d, _ in drain(sock, 0.005):
            try:
                k.receive(d)
            except Exception as e:
                print("kcp_peer: input error: %s" % e, file=sys.stderr)
        while True:
            m = k.get_received()
            if not m:
                break
            m = bytes(m)
            h.update(m)
            if first_bad is None and m != pattern(got, len(m)):
                want = pattern(got, len(m))
                first_bad = got + next(i for i in range(len(m)) if i >= len(want) or m[i] != want[i])
            got += len(m)
        k.update(now_ms(t0))
    secs = time.monotonic() - t0
    print("bytes=%d seconds=%.3f goodput_mbps=%.2f sha256=%s" % (got, secs, got * 8 / secs / 1e6, h.hexdigest()), flush=True)
    if first_bad is not None:
        sys.exit("kcp_peer: the echo differs from what was sent, first at byte offset %d" % first_bad)
    if got != args.bytes:
        sys.exit("kcp_peer: %d bytes echoed, %d sent" % (got, args.bytes))


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
