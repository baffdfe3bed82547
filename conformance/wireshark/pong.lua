-- Wireshark dissector for pong (seed 001, protocols/pong/src/wire.rs): the local opens a
-- TCP carrier with a 17-byte connection header (version 0, a 16-byte client id) and
-- then both sides exchange frames of `len (u16, counts the 7-byte header) | stream id
-- (u32) | type (u8) | payload`, all big endian.
--
-- A TCP connection is pong when its first segment (relative sequence number 1, so keep
-- TCP's relative sequence numbers on) is a connection header followed by a complete,
-- well-formed connect or relay frame with an odd stream id (as `tunnelbed replay`
-- recognises it); from then on both directions are dissected, with frames reassembled
-- across segments. Frame types and rst codes are named as in the seed.

local pong = Proto("pong", "pong multiplexed proxy")

local CONN_HEADER_LEN = 17
local FRAME_HEADER_LEN = 7
local MAX_FRAME_LEN = FRAME_HEADER_LEN + 65500

local TYPES = {
    [0] = "data", [1] = "connect", [2] = "bind", [3] = "associate", [5] = "relay",
    [6] = "set", [7] = "finish", [8] = "close", [9] = "rst",
}
local RST_CODES = {
    [1] = "ERR (proxy server error)",
    [2] = "ERR_RULE (proxy server rule refuse)",
    [3] = "ERR_NET (network unreachable)",
    [4] = "ERR_DST (host unreachable)",
    [5] = "ERR_DST_REFUSE (refused by dst)",
    [6] = "ERR_TTL_EXPIRED (TTL expired)",
    [7] = "ERR_COMMAND_UNKNOWN (command not supported)",
    [8] = "ERR_ADDR_TYPE (address type not supported)",
    [9] = "ERR_REPEAT_ID (repeat stream id)",
    [10] = "ERR_DIAL_TIMEOUT (dial dst i/o timeout)",
    [11] = "ERR_DST_RESET (reset by peer)",
    [12] = "ERR_CONN_TIMEOUT (forcibly closed by the remote host)",
}
local ATYPS = { [1] = "IPv4", [3] = "domain name", [4] = "IPv6" }

local f = pong.fields
f.header = ProtoField.none("pong.header", "Connection header")
f.version = ProtoField.uint8("pong.version", "Version", base.DEC)
f.client_id = ProtoField.guid("pong.client_id", "Client id")
f.frame = ProtoField.none("pong.frame", "Frame")
f.len = ProtoField.uint16("pong.len", "Length (with the 7-byte header)", base.DEC)
f.sid = ProtoField.uint32("pong.sid", "Stream id", base.DEC)
f.type = ProtoField.uint8("pong.type", "Type", base.HEX, TYPES)
f.payload = ProtoField.bytes("pong.payload", "Payload")
f.data_len = ProtoField.uint32("pong.data_len", "Stream data bytes (data frames)", base.DEC)
f.atyp = ProtoField.uint8("pong.atyp", "Address type", base.DEC, ATYPS)
f.ipv4 = ProtoField.ipv4("pong.ipv4", "IPv4 address")
f.ipv6 = ProtoField.ipv6("pong.ipv6", "IPv6 address")
f.domain_len = ProtoField.uint8("pong.domain_len", "Domain length", base.DEC)
f.domain = ProtoField.string("pong.domain", "Domain")
f.port = ProtoField.uint16("pong.port", "Port", base.DEC)
f.address = ProtoField.string("pong.address", "Address")
f.rst_code = ProtoField.uint8("pong.rst_code", "Rst code", base.DEC, RST_CODES)
f.rst_desc = ProtoField.string("pong.rst_description", "Rst description")

local e_bad_len = ProtoExpert.new("pong.bad_len", "Frame len under 7 or over 65507 (the connection ends)",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_bad_addr = ProtoExpert.new("pong.bad_address", "Malformed address payload (the stream is answered rst)",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_unknown_type = ProtoExpert.new("pong.unknown_type", "Unknown frame type (answered rst 7)",
    expert.group.PROTOCOL, expert.severity.WARN)
local e_incomplete = ProtoExpert.new("pong.incomplete", "Incomplete frame at the end of the data",
    expert.group.REASSEMBLE, expert.severity.NOTE)
pong.experts = { e_bad_len, e_bad_addr, e_unknown_type, e_incomplete }

local tcp_stream = Field.new("tcp.stream")
local tcp_seq = Field.new("tcp.seq")

-- Per TCP stream: the local's address and port, and the packet holding its header.
local conns = {}

function pong.init()
    conns = {}
end

-- Length of a well-formed address at the start of `s` that fills it exactly, or nil.
local function address_len(s)
    local atyp = s:byte(1)
    local need
    if atyp == 1 then
        need = 7
    elseif atyp == 4 then
        need = 19
    elseif atyp == 3 and #s >= 2 and s:byte(2) > 0 then
        need = 2 + s:byte(2) + 2
    end
    if need == nil or need ~= #s then return nil end
    return need
end

-- Dissects a connect/relay address payload; returns its text or nil when malformed.
local function dissect_address(tvb, off, len, t)
    if len < 1 or address_len(tvb(off, len):raw()) == nil then
        t:add_proto_expert_info(e_bad_addr)
        return nil
    end
    local atyp = tvb(off, 1):uint()
    t:add(f.atyp, tvb(off, 1))
    local text
    if atyp == 1 then
        t:add(f.ipv4, tvb(off + 1, 4))
        t:add(f.port, tvb(off + 5, 2))
        text = string.format("%s:%d", tostring(tvb(off + 1, 4):ipv4()), tvb(off + 5, 2):uint())
    elseif atyp == 4 then
        t:add(f.ipv6, tvb(off + 1, 16))
        t:add(f.port, tvb(off + 17, 2))
        text = string.format("[%s]:%d", tostring(tvb(off + 1, 16):ipv6()), tvb(off + 17, 2):uint())
    else
        local n = tvb(off + 1, 1):uint()
        t:add(f.domain_len, tvb(off + 1, 1))
        t:add_packet_field(f.domain, tvb(off + 2, n), ENC_UTF_8)
        t:add(f.port, tvb(off + 2 + n, 2))
        text = string.format("%s:%d", tvb(off + 2, n):string(ENC_UTF_8), tvb(off + 2 + n, 2):uint())
    end
    t:add(f.address, text):set_generated()
    return text
end

-- Dissects the complete frame at `off`; returns a summary for the Info column.
local function dissect_frame(tvb, off, len, tree)
    local sid = tvb(off + 2, 4):uint()
    local typ = tvb(off + 6, 1):uint()
    local plen = len - FRAME_HEADER_LEN
    local t = tree:add(f.frame, tvb(off, len))
    t:add(f.len, tvb(off, 2))
    t:add(f.sid, tvb(off + 2, 4))
    t:add(f.type, tvb(off + 6, 1))
    local p = off + FRAME_HEADER_LEN
    if plen > 0 then t:add(f.payload, tvb(p, plen)) end
    local name = TYPES[typ]
    local summary
    if name == nil then
        t:add_proto_expert_info(e_unknown_type)
        summary = string.format("type 0x%02x", typ)
    elseif typ == 0 then
        summary = string.format("data %dB", plen)
    elseif typ == 1 or typ == 5 then
        local a = dissect_address(tvb, p, plen, t)
        summary = string.format("%s %s", name, a or "(bad address)")
    elseif typ == 9 then
        if plen == 0 then
            summary = "rst (no code)"
        else
            local code = tvb(p, 1):uint()
            t:add(f.rst_code, tvb(p, 1))
            if plen > 1 then
                t:add_packet_field(f.rst_desc, tvb(p + 1, plen - 1), ENC_UTF_8)
            end
            summary = string.format("rst %d %s", code, RST_CODES[code] or "(unknown code)")
        end
    else
        summary = name
    end
    t:add(f.data_len, typ == 0 and plen or 0):set_generated()
    summary = string.format("s%d %s", sid, summary)
    t:append_text(": " .. summary)
    return summary
end

-- Called directly by the heuristic below: going through `pong.dissector` would be a
-- dissector call, which takes away TCP's permission to ask for more segments.
local function dissect(tvb, pinfo, tree)
    local n = tvb:len()
    if n == 0 then return 0 end
    local sf = tcp_stream()
    local conn = sf and conns[sf.value]
    pinfo.cols.protocol = "pong"
    local root = tree:add(pong, tvb())
    local off = 0
    local summaries = {}
    local from_local = conn ~= nil and conn.local_addr == tostring(pinfo.src) and conn.local_port == pinfo.src_port
    if from_local and conn.header_packet == pinfo.number and n >= CONN_HEADER_LEN then
        local h = root:add(f.header, tvb(0, CONN_HEADER_LEN))
        h:add(f.version, tvb(0, 1))
        h:add(f.client_id, tvb(1, 16))
        summaries[1] = "header"
        off = CONN_HEADER_LEN
    end
    while off < n do
        local left = n - off
        if left < 2 then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = off
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                break
            end
            root:add_proto_expert_info(e_incomplete)
            break
        end
        local len = tvb(off, 2):uint()
        if len < FRAME_HEADER_LEN or len > MAX_FRAME_LEN then
            local t = root:add(f.frame, tvb(off, left))
            t:add(f.len, tvb(off, 2))
            t:add_proto_expert_info(e_bad_len)
            summaries[#summaries + 1] = "bad len"
            break
        end
        if left < len then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = off
                pinfo.desegment_len = len - left
                break
            end
            root:add_proto_expert_info(e_incomplete)
            break
        end
        summaries[#summaries + 1] = dissect_frame(tvb, off, len, root)
        off = off + len
    end
    if #summaries > 0 then
        local shown = {}
        for i = 1, math.min(#summaries, 6) do shown[i] = summaries[i] end
        local info = table.concat(shown, ", ")
        if #summaries > 6 then info = info .. string.format(", +%d frames", #summaries - 6) end
        pinfo.cols.info = string.format("%d > %d [pong %s]", pinfo.src_port, pinfo.dst_port, info)
    end
    return n
end
pong.dissector = dissect

-- The local's first segment (relative sequence number 1): the header, then a complete,
-- well-formed connect or relay frame with an odd stream id.
local function heur_tcp(tvb, pinfo, tree)
    local n = tvb:len()
    local seq = tcp_seq()
    if seq == nil or seq.value ~= 1 then return false end
    if n < CONN_HEADER_LEN + FRAME_HEADER_LEN or tvb(0, 1):uint() ~= 0 then return false end
    local len = tvb(CONN_HEADER_LEN, 2):uint()
    local sid = tvb(CONN_HEADER_LEN + 2, 4):uint()
    local typ = tvb(CONN_HEADER_LEN + 6, 1):uint()
    if len < FRAME_HEADER_LEN or len > MAX_FRAME_LEN then return false end
    if sid % 2 ~= 1 or (typ ~= 1 and typ ~= 5) then return false end
    local plen = len - FRAME_HEADER_LEN
    if n < CONN_HEADER_LEN + len or plen < 1 then return false end
    if address_len(tvb(CONN_HEADER_LEN + FRAME_HEADER_LEN, plen):raw()) == nil then return false end
    local sf = tcp_stream()
    if sf == nil then return false end
    if conns[sf.value] == nil then
        conns[sf.value] = {
            local_addr = tostring(pinfo.src),
            local_port = pinfo.src_port,
            header_packet = pinfo.number,
        }
    end
    pinfo.conversation = pong
    dissect(tvb, pinfo, tree)
    return true
end
pong:register_heuristic("tcp", heur_tcp)
