-- Wireshark dissector for Candy's WebSocket VPN messages (seed 003,
-- protocols/candy/src/wire.rs): one message per WebSocket binary message, type byte
-- first, integers big endian:
--   0 AUTH       ip[4] timestamp i64 hash[32] confusion
--   1 FORWARD    a raw IPv4 packet (handed to Wireshark's IP dissector)
--   2 DHCP       timestamp i64 cidr[32] (NUL-terminated text) hash[32] confusion
--   3 PEER INFO  src[4] dst[4] ip[4] port u16
--   4 VMAC       vmac[16] timestamp i64 hash[32] confusion
--   5 DISCOVERY  src[4] dst[4]
--   6 ROUTE      count u8 reserved u16, count x (dst[4] mask[4] nexthop[4])
--   255 GENERAL  subtype u8 extra u16 src[4] dst[4] data (subtype 0: LAN ip[4] port u16)
--
-- It is a heuristic on Wireshark's WebSocket payloads ("ws" list): a payload whose type
-- byte and length fit one of the messages above. Wireshark dissects WebSocket on the
-- ports it takes for HTTP (8080 among them; "Decode As... HTTP" for others).

local candy = Proto("candy", "Candy WebSocket VPN")

local TYPES = {
    [0] = "AUTH", [1] = "FORWARD", [2] = "DHCP", [3] = "PEER INFO", [4] = "VMAC",
    [5] = "DISCOVERY", [6] = "ROUTE", [255] = "GENERAL",
}
local SUBTYPES = { [0] = "LAN address" }

local f = candy.fields
f.type = ProtoField.uint8("candy.type", "Type", base.DEC, TYPES)
f.ip = ProtoField.ipv4("candy.ip", "Virtual address")
f.timestamp = ProtoField.int64("candy.timestamp", "Timestamp (Unix seconds)", base.DEC)
f.hash = ProtoField.bytes("candy.hash", "Hash (SHA-256)")
f.confusion = ProtoField.bytes("candy.confusion", "Confusion padding")
f.cidr = ProtoField.string("candy.cidr", "CIDR")
f.src = ProtoField.ipv4("candy.src", "Source")
f.dst = ProtoField.ipv4("candy.dst", "Destination")
f.pub_ip = ProtoField.ipv4("candy.public_ip", "Public address")
f.port = ProtoField.uint16("candy.port", "Port", base.DEC)
f.vmac = ProtoField.string("candy.vmac", "Vmac")
f.count = ProtoField.uint8("candy.route_count", "Routes", base.DEC)
f.reserved = ProtoField.uint16("candy.reserved", "Reserved", base.HEX)
f.rt_dst = ProtoField.ipv4("candy.route_dst", "Route destination")
f.rt_mask = ProtoField.ipv4("candy.route_mask", "Route mask")
f.rt_next = ProtoField.ipv4("candy.route_nexthop", "Route next hop")
f.subtype = ProtoField.uint8("candy.subtype", "Subtype", base.DEC, SUBTYPES)
f.extra = ProtoField.uint16("candy.extra", "Extra", base.HEX)
f.data = ProtoField.bytes("candy.data", "Data")
f.lan_ip = ProtoField.ipv4("candy.lan_ip", "LAN address")

local ip_dissector = Dissector.get("ip")

-- Whether a payload of `len` bytes starting with `t` can be a Candy message.
local function fits(t, len, tvb)
    if t == 0 then return len >= 45 end
    if t == 1 then return len >= 21 and bit.rshift(tvb(1, 1):uint(), 4) == 4 end
    if t == 2 then return len >= 73 end
    if t == 3 then return len == 15 end
    if t == 4 then return len >= 57 end
    if t == 5 then return len == 9 end
    if t == 6 then return len >= 4 and len == 4 + 12 * tvb(1, 1):uint() end
    if t == 255 then return len >= 12 end
    return false
end

local function dissect(tvb, pinfo, tree)
    local len = tvb:len()
    local t = tvb(0, 1):uint()
    pinfo.cols.protocol = "Candy"
    local st = tree:add(candy, tvb(), "Candy " .. (TYPES[t] or "?"))
    st:add(f.type, tvb(0, 1))
    local function pad(from)
        if len > from then st:add(f.confusion, tvb(from, len - from)) end
    end
    local info = TYPES[t] or "?"
    if t == 0 then
        st:add(f.ip, tvb(1, 4)); st:add(f.timestamp, tvb(5, 8)); st:add(f.hash, tvb(13, 32)); pad(45)
        info = "AUTH " .. tostring(tvb(1, 4):ipv4())
    elseif t == 1 then
        ip_dissector:call(tvb(1):tvb(), pinfo, tree)
        pinfo.cols.protocol = "Candy"
        info = "FORWARD " .. tostring(tvb(13, 4):ipv4()) .. " -> " .. tostring(tvb(17, 4):ipv4())
    elseif t == 2 then
        st:add(f.timestamp, tvb(1, 8)); st:add(f.cidr, tvb(9, 32)); st:add(f.hash, tvb(41, 32)); pad(73)
        info = "DHCP " .. tvb(9, 32):stringz()
    elseif t == 3 then
        st:add(f.src, tvb(1, 4)); st:add(f.dst, tvb(5, 4)); st:add(f.pub_ip, tvb(9, 4)); st:add(f.port, tvb(13, 2))
    elseif t == 4 then
        st:add(f.vmac, tvb(1, 16)); st:add(f.timestamp, tvb(17, 8)); st:add(f.hash, tvb(25, 32)); pad(57)
    elseif t == 5 then
        st:add(f.src, tvb(1, 4)); st:add(f.dst, tvb(5, 4))
    elseif t == 6 then
        st:add(f.count, tvb(1, 1)); st:add(f.reserved, tvb(2, 2))
        for i = 0, tvb(1, 1):uint() - 1 do
            local o = 4 + 12 * i
            st:add(f.rt_dst, tvb(o, 4)); st:add(f.rt_mask, tvb(o + 4, 4)); st:add(f.rt_next, tvb(o + 8, 4))
        end
    elseif t == 255 then
        st:add(f.subtype, tvb(1, 1)); st:add(f.extra, tvb(2, 2)); st:add(f.src, tvb(4, 4)); st:add(f.dst, tvb(8, 4))
        if tvb(1, 1):uint() == 0 and len == 18 then
            st:add(f.lan_ip, tvb(12, 4)); st:add(f.port, tvb(16, 2))
        elseif len > 12 then
            st:add(f.data, tvb(12, len - 12))
        end
    end
    pinfo.cols.info:set(info)
    return len
end

local function heuristic(tvb, pinfo, tree)
    local len = tvb:len()
    if len < 1 then return false end
    local t = tvb(0, 1):uint()
    if not fits(t, len, tvb) then return false end
    dissect(tvb, pinfo, tree)
    return true
end

candy:register_heuristic("ws", heuristic)
