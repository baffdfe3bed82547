#!/usr/bin/env python3
"""Kernel-socket endpoints for tests/candy_real.rs (standard library only).

  sink HOST PORT                    accept one TCP connection, read to EOF, print
                                    "bytes N sha256 HEX"
  source HOST PORT NBYTES           connect, send NBYTES deterministic bytes, print the same
  udp-listen HOST PORT MARKER       print "got PAYLOAD" for every datagram until MARKER
  udp-send SRC DST PORT TEXT COUNT  send COUNT datagrams "TEXT-i" from address SRC

Every wait is bounded (60 s without progress ends the run with exit code 3).
"""
import hashlib
import random
import socket
import sys

IDLE = 60.0


def block():
    return random.Random(7).randbytes(1 << 20)


def main():
    cmd = sys.argv[1]
    if cmd == "sink":
        host, port = sys.argv[2], int(sys.argv[3])
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)
        s.settimeout(IDLE)
        print("listening", flush=True)
        c, _ = s.accept()
        c.settimeout(IDLE)
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            h.update(d)
            n += len(d)
        print(f"bytes {n} sha256 {h.hexdigest()}", flush=True)
    elif cmd == "source":
        host, port, total = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        c = socket.create_connection((host, port), timeout=IDLE)
        b = bytearray(block())
        h = hashlib.sha256()
        sent = 0
        i = 0
        while sent < total:
            b[:8] = i.to_bytes(8, "big")
            chunk = bytes(b[: min(len(b), total - sent)])
            c.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
            i += 1
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        print(f"bytes {sent} sha256 {h.hexdigest()}", flush=True)
    elif cmd == "udp-listen":
        host, port, marker = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, port))
        s.settimeout(IDLE)
        print("listening", flush=True)
        while True:
            d, _ = s.recvfrom(65535)
            t = d.decode(errors="replace")
            print(f"got {t}", flush=True)
            if t == marker:
                break
    elif cmd == "udp-send":
        src, dst, port, text, count = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        for i in range(count):
            s.sendto(f"{text}-{i}".encode() if count > 1 else text.encode(), (dst, port))
        print("sent", flush=True)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    try:
        main()
    except socket.timeout:
        print("timeout", flush=True)
        sys.exit(3)
