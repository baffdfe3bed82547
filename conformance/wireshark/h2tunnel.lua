-- Wireshark dissector for vproxy's h2tunnel: HTTP/2 frame headers (9 bytes, big endian)
-- carrying the tunnel's messages (seed 000, protocols/h2tunnel/src/wire.rs).
--
-- Over TCP it finds a connection by its first bytes (the handshake, an empty SETTINGS
-- frame on stream 0) and reassembles frames across segments. Over KCP, kcp.lua
-- reassembles the session and hands this dissector whole frames.
--
-- Messages are named as `tunnelbed replay` names them: "handshake (SETTINGS)",
-- "keepalive", "keepalive ack", "SYN / SYN-ACK", "RST", "DATA", "FIN", "PSH-FIN",
-- "shutdown (GOAWAY)", "ignored frame". Every length is checked before it is read.

local h2t = Proto("h2tunnel", "vproxy h2tunnel")

local HEADER_LEN = 9
local MAX_PAYLOAD = 16 * 1024
local HANDSHAKE = "\0\0\0\4\0\0\0\0\0"

local TYPES = { [0] = "DATA", [1] = "HEADERS", [4] = "SETTINGS", [6] = "PING", [7] = "GOAWAY" }

local f = h2t.fields
f.frame = ProtoField.none("h2tunnel.frame", "Frame")
f.length = ProtoField.uint24("h2tunnel.length", "Length", base.DEC)
f.type = ProtoField.uint8("h2tunnel.type", "Type", base.DEC, TYPES)
f.flags = ProtoField.uint8("h2tunnel.flags", "Flags", base.HEX)
f.flag_end = ProtoField.bool("h2tunnel.flags.end", "END_STREAM (DATA, HEADERS) / ACK (PING)", 8, nil, 0x01)
f.flag_gzip = ProtoField.bool("h2tunnel.flags.gzip", "GZIP (DATA payload is gzip)", 8, nil, 0x04)
f.reserved = ProtoField.uint32("h2tunnel.reserved", "Reserved bit", base.DEC, nil, 0x80000000)
f.sid = ProtoField.uint32("h2tunnel.sid", "Stream id", base.DEC, nil, 0x7fffffff)
f.msg = ProtoField.string("h2tunnel.msg", "Message")
f.data_len = ProtoField.uint32("h2tunnel.data_len", "Stream data bytes (after gunzip)", base.DEC)
f.data = ProtoField.bytes("h2tunnel.data", "Data")
f.keepalive_id = ProtoField.int64("h2tunnel.keepalive_id", "Keepalive id", base.DEC)
f.goaway_head = ProtoField.bytes("h2tunnel.goaway_head", "GOAWAY last stream id and error code")
f.reason = ProtoField.string("h2tunnel.reason", "Shutdown reason")

local e_too_large = ProtoExpert.new("h2tunnel.too_large", "Frame payload over 16384 bytes (the tunnel fails)",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_headers_payload = ProtoExpert.new("h2tunnel.headers_payload", "HEADERS frame with a payload (protocol error)",
    expert.group.PROTOCOL, expert.severity.ERROR)
local e_unexpected = ProtoExpert.new("h2tunnel.unexpected_type", "Frame type not valid after the handshake",
    expert.group.PROTOCOL, expert.severity.ERROR)
local e_bad_gzip = ProtoExpert.new("h2tunnel.bad_gzip", "GZIP DATA that does not gunzip",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_incomplete = ProtoExpert.new("h2tunnel.incomplete", "Incomplete frame at the end of the data",
    expert.group.REASSEMBLE, expert.severity.NOTE)
h2t.experts = { e_too_large, e_headers_payload, e_unexpected, e_bad_gzip, e_incomplete }

-- The payload of a gzip DATA frame, gunzipped, or nil when it does not gunzip.
local function gunzip(range)
    local ok, r = pcall(function()
        if range.uncompress_zlib then
            return range:uncompress_zlib("gunzipped data")
        end
        return range:uncompress("gunzipped data")
    end)
    if ok then return r end
    return nil
end

-- Dissects the frame at `off` (the caller checked that all of it is in `tvb`); returns a
-- short summary for the Info column.
local function dissect_frame(tvb, off, tree, pinfo)
    local len = tvb(off, 3):uint()
    local typ = tvb(off + 3, 1):uint()
    local flags = tvb(off + 4, 1):uint()
    local sid = tvb(off + 5, 4):uint() % 0x80000000
    local fin = flags % 2 == 1
    local gz = math.floor(flags / 4) % 2 == 1
    local t = tree:add(f.frame, tvb(off, HEADER_LEN + len))
    t:add(f.length, tvb(off, 3))
    t:add(f.type, tvb(off + 3, 1))
    local ft = t:add(f.flags, tvb(off + 4, 1))
    ft:add(f.flag_end, tvb(off + 4, 1))
    ft:add(f.flag_gzip, tvb(off + 4, 1))
    t:add(f.reserved, tvb(off + 5, 4))
    t:add(f.sid, tvb(off + 5, 4))
    local payload = len > 0 and tvb(off + HEADER_LEN, len) or nil
    local msg
    local data_len = 0
    if typ == 0 then
        data_len = len
        if payload and gz then
            local z = gunzip(payload)
            if z then
                data_len = z:len()
            else
                t:add_proto_expert_info(e_bad_gzip)
            end
        end
        if data_len == 0 then
            msg = fin and "FIN" or "DATA"
        elseif fin then
            msg = "PSH-FIN"
        else
            msg = "DATA"
        end
        if payload then t:add(f.data, payload) end
    elseif typ == 1 then
        if len > 0 then
            msg = "HEADERS with payload"
            t:add_proto_expert_info(e_headers_payload)
        elseif fin then
            msg = "RST"
        else
            msg = "SYN / SYN-ACK"
        end
    elseif typ == 4 and len == 0 and flags == 0 and sid == 0 and tvb(off + 5, 4):uint() == 0 then
        msg = "handshake (SETTINGS)"
    elseif typ == 6 then
        if len < 8 then
            msg = "ignored frame"
        else
            t:add(f.keepalive_id, tvb(off + HEADER_LEN, 8))
            msg = fin and "keepalive ack" or "keepalive"
        end
    elseif typ == 7 then
        msg = "shutdown (GOAWAY)"
        if len >= 8 then
            t:add(f.goaway_head, tvb(off + HEADER_LEN, 8))
            if len > 8 then
                t:add_packet_field(f.reason, tvb(off + HEADER_LEN + 8, len - 8), ENC_UTF_8)
            end
        end
    else
        msg = "unexpected frame type " .. typ
        t:add_proto_expert_info(e_unexpected)
    end
    t:add(f.msg, msg):set_generated()
    t:add(f.data_len, data_len):set_generated()
    local summary
    if sid ~= 0 or typ == 0 or typ == 1 then
        summary = string.format("%s sid=%d", msg, sid)
        if data_len > 0 then summary = summary .. string.format(" %dB", data_len) end
    else
        summary = msg
    end
    t:append_text(": " .. summary)
    return summary
end

-- Dissects the frames in `tvb`. Over TCP (pinfo.can_desegment > 0) an incomplete frame
-- asks for more segments; otherwise it is noted as incomplete.
-- Called directly by the heuristic below: going through `h2t.dissector` would be a
-- dissector call, which takes away TCP's permission to ask for more segments.
local function dissect(tvb, pinfo, tree)
    local n = tvb:len()
    if n == 0 then return 0 end
    pinfo.cols.protocol = "h2tunnel"
    local root = tree:add(h2t, tvb())
    local off = 0
    local summaries = {}
    while off < n do
        local left = n - off
        if left < HEADER_LEN then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = off
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                break
            end
            root:add_proto_expert_info(e_incomplete)
            break
        end
        local len = tvb(off, 3):uint()
        if len > MAX_PAYLOAD then
            local t = root:add(f.frame, tvb(off, left))
            t:add(f.length, tvb(off, 3))
            t:add_proto_expert_info(e_too_large)
            summaries[#summaries + 1] = "frame too large"
            off = n
            break
        end
        if left < HEADER_LEN + len then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = off
                pinfo.desegment_len = HEADER_LEN + len - left
                break
            end
            root:add_proto_expert_info(e_incomplete)
            break
        end
        summaries[#summaries + 1] = dissect_frame(tvb, off, root, pinfo)
        off = off + HEADER_LEN + len
    end
    if #summaries > 0 then
        local shown = {}
        for i = 1, math.min(#summaries, 6) do shown[i] = summaries[i] end
        local info = table.concat(shown, ", ")
        if #summaries > 6 then info = info .. string.format(", +%d frames", #summaries - 6) end
        pinfo.cols.info:append(" [h2tunnel " .. info .. "]")
    end
    root:append_text(string.format(", %d frames", #summaries))
    return n
end

local tcp_seq = Field.new("tcp.seq")
h2t.dissector = dissect

-- TCP: a connection whose first bytes (relative sequence number 1) are the handshake is
-- h2tunnel from then on (both directions start with it).
local function heur_tcp(tvb, pinfo, tree)
    local seq = tcp_seq()
    if seq == nil or seq.value ~= 1 then return false end
    if tvb:len() < HEADER_LEN then return false end
    if tvb(0, HEADER_LEN):raw() ~= HANDSHAKE then return false end
    pinfo.conversation = h2t
    dissect(tvb, pinfo, tree)
    return true
end
h2t:register_heuristic("tcp", heur_tcp)
