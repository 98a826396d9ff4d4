#!/usr/bin/python3
"""Writes the malformed-packet seed corpus of CONFORMANCE.md into corpus/.

Run it again after adding a case; the files are committed so that ctest replays them in every
build without Python.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def hdr(id=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", id, flags, qd, an, ns, ar)


def name(*labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\x00"


WWW = name(b"www", b"example", b"com")
Q = WWW + struct.pack("!HH", 1, 1)


def opt(size=1232, ttl=0, rdata=b"", owner=b"\x00"):
    return owner + struct.pack("!HHIH", 41, size, ttl, len(rdata)) + rdata


def rr(owner, rtype, ttl, rdata, rclass=1):
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def tsig():
    alg = name(b"hmac-sha256")
    rdata = alg + b"\x00\x00\x00\x00\x00\x01" + struct.pack("!HH", 300, 0) + \
        struct.pack("!HHH", 0x1234, 0, 0)
    return rr(name(b"key"), 250, 0, rdata, rclass=255)


def chains(query, size=4000):
    """RFC 9267 worst case: a 127-hop pointer chain hidden in RDATA, then as many records as
    fit whose owner walks the whole chain."""
    flags = 0x0100 if query else 0x8180
    body = bytearray(Q)
    start = 12 + len(body) + 11  # the first chain link: RDATA of a root-owned record
    links = bytearray(b"\x01a\x00")
    prev = start
    for _ in range(126):
        here = start + len(links)
        links += b"\x01a" + struct.pack("!H", 0xC000 | prev)
        prev = here
    first = b"\x00" + struct.pack("!HHIH", 16, 1, 60, len(links)) + bytes(links)
    n = 1
    recs = bytearray(first)
    while 12 + len(body) + len(recs) + 16 < size:
        recs += rr(struct.pack("!H", 0xC000 | prev), 1, 60, b"\x01\x02\x03\x04")
        n += 1
    return hdr(flags=flags, an=n) + bytes(body) + bytes(recs)


CASES = {
    "runt_0": b"",
    "runt_1": b"\x12",
    "runt_11": hdr()[:11],
    "good_query": hdr() + Q,
    "good_query_edns": hdr(ar=1) + Q + opt(ttl=0x8000),
    "qr_set": hdr(flags=0x8100) + Q,
    "tc_set": hdr(flags=0x0300) + Q,
    "qdcount_0": hdr(qd=0),
    "qdcount_2": hdr(qd=2) + Q + Q,
    "opcode_5": hdr(flags=0x2900) + Q,
    "z_flag": hdr(flags=0x0140) + Q,
    "self_pointer": hdr() + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
    "pointer_loop": hdr() + b"\xc0\x0e\xc0\x0c" + struct.pack("!HH", 1, 1),
    "pointer_loop_in_answer": hdr(an=2) + Q + rr(b"\xc0\x27", 1, 60, b"\x01\x02\x03\x04") +
    rr(b"\xc0\x1d", 1, 60, b"\x01\x02\x03\x04"),
    "forward_pointer": hdr() + b"\xc0\x20" + struct.pack("!HH", 1, 1) + WWW,
    "label_64": hdr() + bytes([64]) + b"a" * 64 + b"\x00" + struct.pack("!HH", 1, 1),
    "name_256": hdr() + (bytes([63]) + b"a" * 63) * 4 + b"\x00" + struct.pack("!HH", 1, 1),
    "label_type_40": hdr() + b"\x41" + b"a" * 10 + b"\x00" + struct.pack("!HH", 1, 1),
    "label_type_80": hdr() + b"\x81" + b"a" * 10 + b"\x00" + struct.pack("!HH", 1, 1),
    "rdlength_past_end": hdr(an=1) + Q + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 200) +
    b"\x01\x02",
    "ancount_65535": hdr(an=65535) + Q,
    "two_opt": hdr(ar=2) + Q + opt() + opt(),
    "opt_owner_a": hdr(ar=1) + Q + opt(owner=name(b"a")),
    "opt_in_answer": hdr(an=1) + Q + opt(),
    "edns_option_past_rdlength": hdr(ar=1) + Q + opt(rdata=struct.pack("!HH", 10, 20) + b"xx"),
    "three_tsig": hdr(ar=3) + Q + tsig() + tsig() + tsig(),
    "empty_chain_option": hdr(ar=1) + Q + opt(rdata=struct.pack("!HH", 13, 0)),
    "trailing_bytes": hdr() + Q + b"\xde\xad\xbe\xef",
    "edns_version_1": hdr(ar=1) + Q + opt(ttl=0x00010000),
    "ecs_query": hdr(ar=1) + Q + opt(rdata=struct.pack("!HHHBB", 8, 7, 1, 24, 0) +
                                      b"\xc0\x00\x02"),
    "unknown_type": hdr() + WWW + struct.pack("!HH", 1000, 1),
    "reply_a": hdr(flags=0x8180, an=1) + Q + rr(b"\xc0\x0c", 1, 300, b"\xc0\x00\x02\x01"),
    "reply_nxdomain_soa": hdr(flags=0x8183, ns=1) + Q +
    rr(b"\xc0\x10", 6, 3600, name(b"ns") + name(b"h") + struct.pack("!IIIII", 1, 2, 3, 4, 60)),
    "reply_with_opt": hdr(flags=0x8180, an=1, ar=1) + Q +
    rr(b"\xc0\x0c", 1, 300, b"\xc0\x00\x02\x01") + opt(),
    "reply_ttl_top_bit": hdr(flags=0x8180, an=1) + Q + rr(b"\xc0\x0c", 1, 0x80000001,
                                                          b"\xc0\x00\x02\x01"),
    "reply_header_only": hdr(flags=0x8180, qd=0),
    "answer_in_query": hdr(an=1) + Q + rr(b"\xc0\x0c", 1, 60, b"\x01\x02\x03\x04"),
    "pointer_chains_query": chains(query=True),
    "long_chain_in_query": chains(query=True, size=570),
    "pointer_chains_reply": chains(query=False),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for n, data in CASES.items():
        with open(os.path.join(OUT, n), "wb") as f:
            f.write(data)
    print(f"wrote {len(CASES)} files to {OUT}")


if __name__ == "__main__":
    main()
