#!/usr/bin/env python3
"""Independent HTTP/2 frame parser for the h2tunnel checks (conformance/tests/h2tunnel_hyperframe.rs).

Reads concatenated HTTP/2 frames from stdin and parses each with Python's `hyperframe`
(the frame layer of the `h2` library). Prints one line per frame:

    frame type=<t> class=<hyperframe class> flags=0x<raw byte> names=<flags hyperframe knows> sid=<id> len=<n> <detail>

or, when hyperframe rejects a frame (its length is taken from the header, so the frames
after it are still checked):

    reject type=<t> sid=<id> len=<n> error=<exception class>: <message>

and `trailing <n>` when the input ends inside a frame. Exit status 0 unless the input
cannot be read.
"""
import sys

from hyperframe.frame import Frame, DataFrame, PingFrame, GoAwayFrame, SettingsFrame


def detail(f):
    if isinstance(f, DataFrame):
        return "data=%s" % f.data.hex()
    if isinstance(f, PingFrame):
        return "opaque=%s" % f.opaque_data.hex()
    if isinstance(f, GoAwayFrame):
        return "last_sid=%d code=%d extra=%s" % (
            f.last_stream_id, f.error_code, f.additional_data.hex())
    if isinstance(f, SettingsFrame):
        return "settings=%d" % len(f.settings)
    return "-"


def main():
    buf = sys.stdin.buffer.read()
    off = 0
    while off < len(buf):
        if len(buf) - off < 9:
            print("trailing %d" % (len(buf) - off))
            break
        header = buf[off:off + 9]
        length = int.from_bytes(header[0:3], "big")
        typ = header[3]
        raw_flags = header[4]
        sid = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        if len(buf) - off - 9 < length:
            print("trailing %d" % (len(buf) - off))
            break
        body = buf[off + 9:off + 9 + length]
        off += 9 + length
        try:
            f, flen = Frame.parse_frame_header(memoryview(header))
            f.parse_body(memoryview(body))
        except Exception as e:  # noqa: BLE001 - every rejection is reported
            msg = str(e).replace("\n", " ")
            print("reject type=%d sid=%d len=%d error=%s: %s" % (
                typ, sid, length, type(e).__name__, msg))
            continue
        names = ",".join(sorted(f.flags)) or "-"
        print("frame type=%d class=%s flags=0x%02x names=%s sid=%d len=%d %s" % (
            typ, type(f).__name__, raw_flags, names, f.stream_id, flen, detail(f)))


if __name__ == "__main__":
    main()
