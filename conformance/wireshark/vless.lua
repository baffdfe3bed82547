-- Wireshark dissector for VLESS v0 and v1 (seed 004, protocols/vless/src/wire.rs).
-- A carrier connection starts with the client's request header
--   ver (0|1) | uuid[16] | M | addons[M] | cmd | [port u16 | atyp | addr]
-- (cmd 1 TCP, 2 UDP, 3 mux, 4 CRUMFURS in v1; atyp 1 IPv4, 2 domain, 3 IPv6; no
-- address after 3 and 4), then payload at once. The server answers `ver | M | addons`
-- (CRUMFURS: the one byte 0x14). After the header, command 1 carries raw bytes;
-- command 2 carries datagrams framed `len u16 | payload` both ways; a CRUMFURS channel
-- carries UMFURS messages downlink: `atyp (1|3) | ip | port | len u16 | payload`.
--
-- A TCP connection is VLESS when its first client segment (relative sequence number 1,
-- so keep TCP's relative sequence numbers on) is a complete, well-formed request header.

local vless = Proto("vless", "VLESS")

local CMDS = { [1] = "tcp", [2] = "udp", [3] = "mux", [4] = "crumfurs" }
local ATYPS = { [1] = "IPv4", [2] = "domain name", [3] = "IPv6" }
local CRUMFURS_ESTABLISHED = 0x14

local f = vless.fields
f.request = ProtoField.none("vless.request", "Request header")
f.version = ProtoField.uint8("vless.version", "Version", base.DEC)
f.uuid = ProtoField.guid("vless.uuid", "User id")
f.addons_len = ProtoField.uint8("vless.addons_len", "Addons length", base.DEC)
f.addons = ProtoField.bytes("vless.addons", "Addons")
f.cmd = ProtoField.uint8("vless.cmd", "Command", base.DEC, CMDS)
f.port = ProtoField.uint16("vless.port", "Port", base.DEC)
f.atyp = ProtoField.uint8("vless.atyp", "Address type", base.DEC, ATYPS)
f.ipv4 = ProtoField.ipv4("vless.ipv4", "IPv4 address")
f.ipv6 = ProtoField.ipv6("vless.ipv6", "IPv6 address")
f.domain_len = ProtoField.uint8("vless.domain_len", "Domain length", base.DEC)
f.domain = ProtoField.string("vless.domain", "Domain")
f.address = ProtoField.string("vless.address", "Target")
f.response = ProtoField.none("vless.response", "Response header")
f.resp_version = ProtoField.uint8("vless.resp_version", "Response version", base.DEC)
f.crumfurs_answer = ProtoField.uint8("vless.crumfurs_answer", "CRUMFURS answer", base.HEX)
f.data_len = ProtoField.uint32("vless.data_len", "Relayed bytes (command 1)", base.DEC)
f.udp = ProtoField.none("vless.udp", "UDP frame")
f.udp_len = ProtoField.uint16("vless.udp_len", "Datagram length", base.DEC)
f.udp_payload = ProtoField.bytes("vless.udp_payload", "Datagram")
f.umfurs = ProtoField.none("vless.umfurs", "UMFURS")
f.umfurs_from = ProtoField.string("vless.umfurs_from", "Source")
f.umfurs_len = ProtoField.uint16("vless.umfurs_len", "Length", base.DEC)
f.umfurs_payload = ProtoField.bytes("vless.umfurs_payload", "Datagram")

local e_bad_response = ProtoExpert.new("vless.bad_response", "Response version differs from the request's",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_bad_crumfurs = ProtoExpert.new("vless.bad_crumfurs", "CRUMFURS answer is not 0x14",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_bad_umfurs = ProtoExpert.new("vless.bad_umfurs", "Malformed UMFURS message (address type or empty)",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_incomplete = ProtoExpert.new("vless.incomplete", "Incomplete message at the end of the data",
    expert.group.REASSEMBLE, expert.severity.NOTE)
vless.experts = { e_bad_response, e_bad_crumfurs, e_bad_umfurs, e_incomplete }

local tcp_stream = Field.new("tcp.stream")
local tcp_seq = Field.new("tcp.seq")

-- Per TCP stream: the client's address and port, the request's version and command.
local conns = {}

function vless.init()
    conns = {}
end

-- Whether `a` is VLESS's addons message: protobuf fields 1 (flow) and 2 (seed), both
-- length-delimited, filling `a` exactly (the empty string is no addons).
local function addons_ok(a)
    local i, n = 1, #a
    while i <= n do
        local key = a:byte(i)
        if key ~= 0x0a and key ~= 0x12 then return false end
        local len = a:byte(i + 1)
        if len == nil or len > 127 then return false end
        i = i + 2 + len
        if i > n + 1 then return false end
    end
    return true
end

-- Whether `s` is a plausible host name (letters, digits, dots, dashes).
local function hostname_ok(s)
    return s:match("^[%w%.%-]+$") ~= nil
end

-- Length of the well-formed request header at the start of `s`, its version and
-- command; nil when `s` does not start with a whole one. Strict on purpose (this is a
-- heuristic over every TCP connection): commands 1 and 2 with a non-zero port and a
-- real address, or a v1 CRUMFURS request alone in its segment; mux (3) is not claimed.
local function header_len(s)
    local n = #s
    if n < 19 then return nil end
    local ver = s:byte(1)
    if ver ~= 0 and ver ~= 1 then return nil end
    local m = s:byte(18)
    local at = 19 + m
    if n < at or not addons_ok(s:sub(19, at - 1)) then return nil end
    local cmd = s:byte(at)
    if cmd == 4 and ver == 1 then
        if n ~= at then return nil end
        return at, ver, cmd
    end
    if cmd ~= 1 and cmd ~= 2 then return nil end
    if n < at + 3 then return nil end
    if s:byte(at + 1) == 0 and s:byte(at + 2) == 0 then return nil end
    local atyp = s:byte(at + 3)
    local need
    if atyp == 1 then
        need = at + 3 + 4
        if n >= need and s:sub(at + 4, need) == "\0\0\0\0" then return nil end
    elseif atyp == 3 then
        need = at + 3 + 16
    elseif atyp == 2 and n >= at + 4 and s:byte(at + 4) > 0 then
        need = at + 4 + s:byte(at + 4)
        if n >= need and not hostname_ok(s:sub(at + 5, need)) then return nil end
    end
    if need == nil or n < need then return nil end
    return need, ver, cmd
end

local function dissect_request(tvb, t, hlen, cmd)
    t:add(f.version, tvb(0, 1))
    t:add(f.uuid, tvb(1, 16))
    t:add(f.addons_len, tvb(17, 1))
    local m = tvb(17, 1):uint()
    if m > 0 then t:add(f.addons, tvb(18, m)) end
    local at = 18 + m
    t:add(f.cmd, tvb(at, 1))
    if cmd ~= 1 and cmd ~= 2 then return CMDS[cmd] end
    local p = at + 1
    t:add(f.port, tvb(p, 2))
    t:add(f.atyp, tvb(p + 2, 1))
    local atyp = tvb(p + 2, 1):uint()
    local port = tvb(p, 2):uint()
    local text
    if atyp == 1 then
        t:add(f.ipv4, tvb(p + 3, 4))
        text = string.format("%s:%d", tostring(tvb(p + 3, 4):ipv4()), port)
    elseif atyp == 3 then
        t:add(f.ipv6, tvb(p + 3, 16))
        text = string.format("[%s]:%d", tostring(tvb(p + 3, 16):ipv6()), port)
    else
        local n = tvb(p + 3, 1):uint()
        t:add(f.domain_len, tvb(p + 3, 1))
        t:add_packet_field(f.domain, tvb(p + 4, n), ENC_UTF_8)
        text = string.format("%s:%d", tvb(p + 4, n):string(ENC_UTF_8), port)
    end
    t:add(f.address, text):set_generated()
    return string.format("%s %s", CMDS[cmd], text)
end

-- Asks TCP for `more` bytes from `off` on; false when it cannot (the end of the data).
local function want_more(pinfo, root, off, more)
    if pinfo.can_desegment > 0 then
        pinfo.desegment_offset = off
        pinfo.desegment_len = more
        return true
    end
    root:add_proto_expert_info(e_incomplete)
    return false
end

-- UDP frames (command 2) from `off`; returns the count.
local function dissect_frames(tvb, pinfo, root, off)
    local n = tvb:len()
    local count = 0
    while off < n do
        local left = n - off
        if left < 2 then want_more(pinfo, root, off, DESEGMENT_ONE_MORE_SEGMENT) break end
        local len = tvb(off, 2):uint()
        if left < 2 + len then want_more(pinfo, root, off, 2 + len - left) break end
        local t = root:add(f.udp, tvb(off, 2 + len))
        t:add(f.udp_len, tvb(off, 2))
        if len > 0 then t:add(f.udp_payload, tvb(off + 2, len)) end
        off = off + 2 + len
        count = count + 1
    end
    return count
end

-- UMFURS messages from `off`; returns their summaries.
local function dissect_umfurs(tvb, pinfo, root, off, out)
    local n = tvb:len()
    while off < n do
        local left = n - off
        local atyp = tvb(off, 1):uint()
        local iplen = (atyp == 1 and 4) or (atyp == 3 and 16) or nil
        if iplen == nil then
            root:add(f.umfurs, tvb(off, left)):add_proto_expert_info(e_bad_umfurs)
            break
        end
        local hl = 1 + iplen + 4
        if left < hl then want_more(pinfo, root, off, hl - left) break end
        local len = tvb(off + 1 + iplen + 2, 2):uint()
        if len == 0 then
            root:add(f.umfurs, tvb(off, hl)):add_proto_expert_info(e_bad_umfurs)
            break
        end
        if left < hl + len then want_more(pinfo, root, off, hl + len - left) break end
        local ip = atyp == 1 and tostring(tvb(off + 1, 4):ipv4())
            or string.format("[%s]", tostring(tvb(off + 1, 16):ipv6()))
        local from = string.format("%s:%d", ip, tvb(off + 1 + iplen, 2):uint())
        local t = root:add(f.umfurs, tvb(off, hl + len))
        t:add(f.umfurs_from, from)
        t:add(f.umfurs_len, tvb(off + 1 + iplen + 2, 2))
        t:add(f.umfurs_payload, tvb(off + hl, len))
        t:append_text(": from " .. from)
        out[#out + 1] = "umfurs " .. from
        off = off + hl + len
    end
end

local function dissect(tvb, pinfo, tree)
    local n = tvb:len()
    if n == 0 then return 0 end
    local sf = tcp_stream()
    local conn = sf and conns[sf.value]
    if conn == nil then return 0 end
    pinfo.cols.protocol = "VLESS"
    local root = tree:add(vless, tvb())
    local seq = tcp_seq()
    local first = seq ~= nil and seq.value == 1
    local from_client = conn.client_addr == tostring(pinfo.src) and conn.client_port == pinfo.src_port
    local off = 0
    local info = {}
    if from_client and first then
        local hlen = conn.hlen
        local t = root:add(f.request, tvb(0, hlen))
        info[#info + 1] = dissect_request(tvb, t, hlen, conn.cmd)
        off = hlen
    elseif not from_client and first then
        if conn.cmd == 4 then
            local t = root:add(f.crumfurs_answer, tvb(0, 1))
            if tvb(0, 1):uint() ~= CRUMFURS_ESTABLISHED then t:add_proto_expert_info(e_bad_crumfurs) end
            info[#info + 1] = "crumfurs established"
            off = 1
        else
            if n < 2 then
                want_more(pinfo, root, 0, DESEGMENT_ONE_MORE_SEGMENT)
                return n
            end
            local m = tvb(1, 1):uint()
            if n < 2 + m then
                want_more(pinfo, root, 0, 2 + m - n)
                return n
            end
            local t = root:add(f.response, tvb(0, 2 + m))
            local v = t:add(f.resp_version, tvb(0, 1))
            if tvb(0, 1):uint() ~= conn.version then v:add_proto_expert_info(e_bad_response) end
            t:add(f.addons_len, tvb(1, 1))
            if m > 0 then t:add(f.addons, tvb(2, m)) end
            info[#info + 1] = "response"
            off = 2 + m
        end
    end
    if off < n then
        if conn.cmd == 2 then
            local c = dissect_frames(tvb, pinfo, root, off)
            if c > 0 then info[#info + 1] = string.format("%d datagram(s)", c) end
        elseif conn.cmd == 4 and not from_client then
            dissect_umfurs(tvb, pinfo, root, off, info)
        else
            root:add(f.data_len, n - off):set_generated()
            info[#info + 1] = string.format("data %dB", n - off)
        end
    end
    if #info > 0 then
        pinfo.cols.info = string.format("%d > %d [VLESS %s]", pinfo.src_port, pinfo.dst_port, table.concat(info, ", "))
    end
    return n
end
vless.dissector = dissect

-- The client's first segment (relative sequence number 1): a whole request header.
local function heur_tcp(tvb, pinfo, tree)
    local seq = tcp_seq()
    if seq == nil or seq.value ~= 1 then return false end
    local n = tvb:len()
    if n < 19 then return false end
    local hlen, ver, cmd = header_len(tvb(0, math.min(n, 18 + 255 + 1 + 3 + 256)):raw())
    if hlen == nil then return false end
    local sf = tcp_stream()
    if sf == nil then return false end
    if conns[sf.value] == nil then
        conns[sf.value] = {
            client_addr = tostring(pinfo.src),
            client_port = pinfo.src_port,
            hlen = hlen,
            version = ver,
            cmd = cmd,
        }
    end
    pinfo.conversation = vless
    dissect(tvb, pinfo, tree)
    return true
end
vless:register_heuristic("tcp", heur_tcp)
