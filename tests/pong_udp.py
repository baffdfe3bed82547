#!/usr/bin/env python3
"""A small SOCKS5 UDP ASSOCIATE client (RFC 1928), standard library only.

python-socks (the SOCKS5 client in .venv) has no UDP ASSOCIATE, so tests/pong_real.rs
uses this one. Usage:

    pong_udp.py SOCKS_HOST:PORT TARGET_HOST:PORT SIZE [SIZE ...]

It asks the SOCKS5 server for a UDP association (no authentication), then for each
SIZE sends one datagram of that many bytes (a pattern that differs per datagram) to
TARGET through the relay and waits for one answer. Every answer must name TARGET in
its SOCKS5 UDP header and carry the same bytes (the target is an echo). Prints
`ok SIZE` per datagram and exits 0; on any mismatch or timeout prints why and exits 1.
The association's TCP connection stays open until the end, as RFC 1928 requires.
"""

import ipaddress
import socket
import struct
import sys


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("SOCKS5 server closed the control connection")
        buf += chunk
    return buf


def encode_addr(host, port):
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raw = host.encode("idna")
        return bytes([3, len(raw)]) + raw + struct.pack(">H", port)
    atyp = 1 if ip.version == 4 else 4
    return bytes([atyp]) + ip.packed + struct.pack(">H", port)


def decode_addr(buf, off):
    """Returns ((host, port), next offset)."""
    atyp = buf[off]
    off += 1
    if atyp == 1:
        host = str(ipaddress.IPv4Address(buf[off : off + 4]))
        off += 4
    elif atyp == 4:
        host = str(ipaddress.IPv6Address(buf[off : off + 16]))
        off += 16
    elif atyp == 3:
        n = buf[off]
        host = buf[off + 1 : off + 1 + n].decode()
        off += 1 + n
    else:
        raise RuntimeError(f"unknown ATYP {atyp}")
    (port,) = struct.unpack(">H", buf[off : off + 2])
    return (host, port), off + 2


def norm(addr):
    host, port = addr
    try:
        return (ipaddress.ip_address(host), port)
    except ValueError:
        return (host.lower(), port)


def associate(socks):
    ctl = socket.create_connection(socks, timeout=10)
    ctl.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
    ver, method = recv_exact(ctl, 2)
    if ver != 5 or method != 0:
        raise RuntimeError(f"method selection answered {ver} {method}")
    # UDP ASSOCIATE; we do not know our sending address yet: 0.0.0.0:0.
    ctl.sendall(b"\x05\x03\x00" + encode_addr("0.0.0.0", 0))
    ver, rep, _rsv, atyp = recv_exact(ctl, 4)
    if ver != 5 or rep != 0:
        raise RuntimeError(f"UDP ASSOCIATE answered version {ver} reply {rep}")
    if atyp == 1:
        rest = recv_exact(ctl, 6)
    elif atyp == 4:
        rest = recv_exact(ctl, 18)
    elif atyp == 3:
        n = recv_exact(ctl, 1)
        rest = n + recv_exact(ctl, n[0] + 2)
    else:
        raise RuntimeError(f"unknown ATYP {atyp} in the reply")
    (host, port), _ = decode_addr(bytes([atyp]) + rest, 0)
    if ipaddress.ip_address(host).is_unspecified:
        host = socks[0]  # "use the address you reached me at"
    return ctl, (host, port)


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    socks = split_hostport(sys.argv[1])
    target = split_hostport(sys.argv[2])
    sizes = [int(x) for x in sys.argv[3:]]
    ctl, relay = associate(socks)
    family = socket.AF_INET6 if ":" in relay[0] else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.settimeout(10)
    header = b"\x00\x00\x00" + encode_addr(*target)  # RSV RSV FRAG=0 ADDR
    for i, size in enumerate(sizes):
        payload = bytes((k * 7 + i * 31 + size) & 0xFF for k in range(size))
        udp.sendto(header + payload, relay)
        try:
            data, _ = udp.recvfrom(65535)
        except socket.timeout:
            print(f"no answer to the {size}-byte datagram within 10 s")
            return 1
        if data[:3] != b"\x00\x00\x00":
            print(f"bad SOCKS5 UDP header {data[:3]!r}")
            return 1
        src, off = decode_addr(data, 3)
        if norm(src) != norm(target):
            print(f"answer names {src}, expected {target}")
            return 1
        got = data[off:]
        if got != payload:
            print(f"{size}-byte datagram came back as {len(got)} different bytes")
            return 1
        print(f"ok {size}", flush=True)
    ctl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
