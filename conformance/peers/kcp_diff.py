#!/usr/bin/env python3
"""Differential driver for the reference ikcp (PyPI `kcp` 0.1.6 compiles ikcp.c).

Reads scripts as JSON lines on stdin and writes one transcript line per event, so that
tunnelbed's KCP can be run on the same script and compared line by line:
  {"op":"begin","id":N,"conv":C,"knobs":[mtu,nodelay,interval,resend,nc,snd,rcv]}
      creates two endpoints (side 0 and 1) with the same knobs
  {"op":"send","side":S,"data":HEX}          ikcp_send (enqueue); prints its outcome
  {"op":"send","side":S,"fill":B,"len":N}    the same with N copies of byte B
  {"op":"update","side":S,"ts":MS}           ikcp_update at MS (32-bit)
  {"op":"deliver","from":S,"index":K}        input the K-th datagram side S emitted
                                             into the other side
  {"op":"raw","side":S,"data":HEX}           input arbitrary bytes into side S
  {"op":"recv","side":S}                     take every complete message
  {"op":"end"}                               prints "end N"
Transcript lines: "out S HEX", "msg S HEX", "err S CODE", "send S ok", "send S err CODE",
"bad-index S K", "end N".
"""
import json
import sys

try:
    from kcp import KCP
    from kcp.exceptions import KCPConvMismatchError, KCPException
except ImportError:
    sys.exit("kcp_diff: Python package `kcp` missing; run `bash .ci/setup` (pip install kcp==0.1.6)")

out = sys.stdout
sides = [None, None]
emitted = [[], []]


def make(side, conv, knobs):
    mtu, nodelay, interval, resend, nc, snd, rcv = knobs
    k = KCP(conv, max_transmission=mtu, no_delay=bool(nodelay), update_interval=interval,
            resend_count=resend, no_congestion_control=bool(nc), send_window_size=snd,
            receive_window_size=rcv)

    def handler(_k, data, side=side):
        emitted[side].append(bytes(data))
        out.write("out %d %s\n" % (side, bytes(data).hex()))

    k.include_outbound_handler(handler)
    return k


def feed(side, data):
    try:
        sides[side].receive(data)
    except KCPConvMismatchError:
        out.write("err %d -1\n" % side)
    except KCPException as e:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else str(e)
        out.write("err %d %s\n" % (side, code))


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    op = json.loads(line)
    kind = op["op"]
    if kind == "begin":
        emitted = [[], []]
        sides = [make(0, op["conv"], op["knobs"]), make(1, op["conv"], op["knobs"])]
        current_id = op["id"]
    elif kind == "send":
        s = op["side"]
        data = bytes.fromhex(op["data"]) if "data" in op else bytes([op["fill"]]) * op["len"]
        try:
            sides[s].enqueue(data)
            out.write("send %d ok\n" % s)
        except KCPException as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else str(e)
            out.write("send %d err %s\n" % (s, code))
        except ValueError as e:
            out.write("send %d err %s\n" % (s, e))
    elif kind == "update":
        sides[op["side"]].update(op["ts"])
    elif kind == "deliver":
        s, k = op["from"], op["index"]
        if k >= len(emitted[s]):
            out.write("bad-index %d %d\n" % (s, k))
        else:
            feed(1 - s, emitted[s][k])
    elif kind == "raw":
        feed(op["side"], bytes.fromhex(op["data"]))
    elif kind == "recv":
        s = op["side"]
        while True:
            m = sides[s].get_received()
            if not m:
                break
            out.write("msg %d %s\n" % (s, bytes(m).hex()))
    elif kind == "end":
        out.write("end %d\n" % current_id)
        out.flush()
