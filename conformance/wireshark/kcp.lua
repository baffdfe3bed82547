-- Wireshark dissector for KCP (the reference ikcp's wire format, protocols/kcp/src/wire.rs):
-- each UDP datagram packs segments of a 24-byte little-endian header (conv, cmd, frg,
-- wnd, ts, sn, una, len) and `len` bytes of data.
--
-- A datagram is KCP when it splits exactly into well-formed segments (cmd 81..84, every
-- length inside the datagram); it is found on any UDP port by that heuristic, and the
-- scenarios' ports (4000, 4001, 4100, 4200) are registered so that other dissectors
-- (ICQ on 4000) do not take them first.
--
-- Each direction of a session (addresses, ports, conv) is reassembled in sequence order,
-- as `tunnelbed replay` does (a copy of a segment already seen is marked, not used
-- twice). When the byte stream starts with the h2tunnel handshake, the frames each
-- packet completes are handed to the h2tunnel dissector in a tab of their own.

local kcp = Proto("kcp", "KCP")

local OVERHEAD = 24
local CMDS = { [81] = "PUSH", [82] = "ACK", [83] = "WASK", [84] = "WINS" }
local HANDSHAKE = "\0\0\0\4\0\0\0\0\0"
local H2T_MAX_PAYLOAD = 16 * 1024

local f = kcp.fields
f.segment = ProtoField.none("kcp.segment", "Segment")
f.conv = ProtoField.uint32("kcp.conv", "Conversation", base.DEC)
f.cmd = ProtoField.uint8("kcp.cmd", "Command", base.DEC, CMDS)
f.frg = ProtoField.uint8("kcp.frg", "Fragments left", base.DEC)
f.wnd = ProtoField.uint16("kcp.wnd", "Window (free receive slots)", base.DEC)
f.ts = ProtoField.uint32("kcp.ts", "Timestamp (ms)", base.DEC)
f.sn = ProtoField.uint32("kcp.sn", "Sequence number", base.DEC)
f.una = ProtoField.uint32("kcp.una", "Unacknowledged (next expected sn)", base.DEC)
f.len = ProtoField.uint32("kcp.len", "Data length", base.DEC)
f.data = ProtoField.bytes("kcp.data", "Data")
f.copy = ProtoField.bool("kcp.copy", "Data segment seen before (the receiving host's copy of a captured datagram, a retransmission or a duplicate)")
f.stream_offset = ProtoField.uint64("kcp.stream_offset", "Offset of the data in the direction's byte stream", base.DEC)
f.segments = ProtoField.uint32("kcp.segments", "Segments in the datagram", base.DEC)

local e_h2t_broken = ProtoExpert.new("kcp.h2tunnel_broken",
    "h2tunnel frame over 16384 bytes in the KCP stream: frames after it are not decoded",
    expert.group.MALFORMED, expert.severity.ERROR)
kcp.experts = { e_h2t_broken }

-- Per direction: next sn to deliver, segments waiting for a gap, what the stream is.
local dirs = {}
-- Per packet number: per segment copy flag and stream offset, and the h2tunnel frames
-- (bytes) that became complete in this packet.
local packets = {}

function kcp.init()
    dirs = {}
    packets = {}
end

local function le32(s, i)
    local a, b, c, d = s:byte(i, i + 3)
    return a + b * 256 + c * 65536 + d * 16777216
end

-- Whether `tvb` splits exactly into well-formed KCP segments; returns their count.
local function segment_count(tvb)
    local n = tvb:len()
    if n < OVERHEAD then return 0 end
    local off, count = 0, 0
    while n - off >= OVERHEAD do
        local cmd = tvb(off + 4, 1):uint()
        if cmd < 81 or cmd > 84 then return 0 end
        local len = tvb(off + 20, 4):le_uint()
        if len > n - off - OVERHEAD then return 0 end
        off = off + OVERHEAD + len
        count = count + 1
    end
    if off ~= n then return 0 end
    return count
end

-- Appends in-order bytes to a direction; records complete h2tunnel frames in `out`.
local function deliver(d, data, out)
    d.delivered = d.delivered + #data
    if d.kind == nil then
        d.buf = d.buf .. data
        if #d.buf < #HANDSHAKE then return end
        if d.buf:sub(1, #HANDSHAKE) == HANDSHAKE then
            d.kind = "h2tunnel"
        else
            d.kind = "raw"
            d.buf = ""
            return
        end
    elseif d.kind == "h2tunnel" then
        d.buf = d.buf .. data
    else
        return
    end
    while #d.buf >= 9 do
        local a, b, c = d.buf:byte(1, 3)
        local len = a * 65536 + b * 256 + c
        if len > H2T_MAX_PAYLOAD then
            d.kind = "broken"
            d.buf = ""
            out.broken = true
            return
        end
        if #d.buf < 9 + len then return end
        out[#out + 1] = d.buf:sub(1, 9 + len)
        d.buf = d.buf:sub(10 + len)
    end
end

-- First pass: feeds the datagram's data segments to their directions' reassembly.
local function track(tvb, pinfo, count)
    local rec = { segs = {}, frames = {} }
    local off = 0
    local base_key = tostring(pinfo.src) .. ":" .. pinfo.src_port .. ">" ..
        tostring(pinfo.dst) .. ":" .. pinfo.dst_port .. "#"
    for i = 1, count do
        local len = tvb(off + 20, 4):le_uint()
        if tvb(off + 4, 1):uint() == 81 then
            local conv = tvb(off, 4):le_uint()
            local sn = tvb(off + 12, 4):le_uint()
            local key = base_key .. conv
            local d = dirs[key]
            if d == nil then
                -- Sessions start at sn 0; a capture that begins mid-session starts here.
                local first = sn < 1024 and 0 or sn
                d = { next_sn = first, pending = {}, kind = nil, buf = "", delivered = 0, offsets = {} }
                dirs[key] = d
            end
            local seg = {}
            if sn < d.next_sn or d.pending[sn] ~= nil then
                seg.copy = true
                seg.offset = d.offsets[sn]
            else
                seg.copy = false
                d.pending[sn] = len > 0 and tvb(off + OVERHEAD, len):raw() or ""
                while d.pending[d.next_sn] ~= nil do
                    local data = d.pending[d.next_sn]
                    d.pending[d.next_sn] = nil
                    d.offsets[d.next_sn] = d.delivered
                    deliver(d, data, rec.frames)
                    d.next_sn = d.next_sn + 1
                end
                seg.offset = d.offsets[sn]
            end
            rec.segs[i] = seg
        end
        off = off + OVERHEAD + len
    end
    packets[pinfo.number] = rec
    return rec
end

-- Called directly by the heuristic below (`kcp.dissector` is a dissector handle, and
-- the three files share this shape: over TCP a handle call forbids desegmentation).
local function dissect(tvb, pinfo, tree)
    local count = segment_count(tvb)
    if count == 0 then return 0 end
    pinfo.cols.protocol = "KCP"
    local rec = packets[pinfo.number]
    if rec == nil and not pinfo.visited then
        rec = track(tvb, pinfo, count)
    end
    rec = rec or { segs = {}, frames = {} }
    local root = tree:add(kcp, tvb())
    root:add(f.segments, count):set_generated()
    root:append_text(string.format(", %d segment%s", count, count == 1 and "" or "s"))
    local off = 0
    local info = {}
    for i = 1, count do
        local cmd = tvb(off + 4, 1):uint()
        local sn = tvb(off + 12, 4):le_uint()
        local una = tvb(off + 16, 4):le_uint()
        local len = tvb(off + 20, 4):le_uint()
        local t = root:add(f.segment, tvb(off, OVERHEAD + len))
        t:add_le(f.conv, tvb(off, 4))
        t:add(f.cmd, tvb(off + 4, 1))
        t:add(f.frg, tvb(off + 5, 1))
        t:add_le(f.wnd, tvb(off + 6, 2))
        t:add_le(f.ts, tvb(off + 8, 4))
        t:add_le(f.sn, tvb(off + 12, 4))
        t:add_le(f.una, tvb(off + 16, 4))
        t:add_le(f.len, tvb(off + 20, 4))
        if len > 0 then t:add(f.data, tvb(off + OVERHEAD, len)) end
        local seg = rec.segs[i]
        if seg ~= nil then
            t:add(f.copy, seg.copy):set_generated()
            if seg.offset ~= nil then
                t:add(f.stream_offset, UInt64(seg.offset)):set_generated()
            end
        end
        local name = CMDS[cmd] or tostring(cmd)
        local s
        if cmd == 81 then
            s = string.format("PUSH sn=%d una=%d len=%d%s", sn, una, len, (seg and seg.copy) and " (seen before)" or "")
        elseif cmd == 82 then
            s = string.format("ACK sn=%d una=%d", sn, una)
        else
            s = string.format("%s una=%d", name, una)
        end
        t:append_text(": " .. s)
        if #info < 4 then info[#info + 1] = s end
        off = off + OVERHEAD + len
    end
    local text = string.format("conv=%d %s", tvb(0, 4):le_uint(), table.concat(info, ", "))
    if count > #info then text = text .. string.format(", +%d segments", count - #info) end
    pinfo.cols.info = text
    if rec.frames.broken then
        root:add_proto_expert_info(e_h2t_broken)
    end
    if #rec.frames > 0 then
        local bytes = table.concat(rec.frames)
        local ntvb = ByteArray.new(bytes, true):tvb("h2tunnel frames completed here")
        local ok, h2t = pcall(Dissector.get, "h2tunnel")
        if ok and h2t then
            h2t:call(ntvb, pinfo, tree)
        end
    end
    return tvb:len()
end
kcp.dissector = dissect

local function heur_udp(tvb, pinfo, tree)
    if segment_count(tvb) == 0 then return false end
    dissect(tvb, pinfo, tree)
    return true
end
kcp:register_heuristic("udp", heur_udp)

local udp_port = DissectorTable.get("udp.port")
for _, port in ipairs({ 4000, 4001, 4100, 4200 }) do
    udp_port:add(port, kcp)
end
