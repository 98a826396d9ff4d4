/*
 * wire: pure, allocation-free checks and edits of DNS messages in wire form.
 *
 * Everything here works on caller-owned buffers and never allocates, never calls ldns and never
 * includes uv.h, so it can be unit-tested and fuzzed alone. Names are walked with the bounds of
 * RFC 1035 §2.3.4 and §4.1.4 hardened as RFC 9267 asks: every compression pointer must point
 * strictly before the previous one (so loops are impossible) and never into the 12-byte header,
 * at most RRC_WIRE_MAX_HOPS hops,
 * labels of at most 63 octets, names of at most 255 octets, label types 01 and 10 rejected.
 * The cost of walking any packet is therefore linear in its length.
 */
#ifndef RRCACHE_WIRE_H
#define RRCACHE_WIRE_H

#include "rrcache/defs.h"

#define RRC_WIRE_HDR 12
/* RFC 1035 §2.3.4 */
#define RRC_WIRE_MAX_NAME 255
#define RRC_WIRE_MAX_LABEL 63
/* RFC 9267 §2: a name of 255 octets has at most 127 labels, so more hops is an attack. */
#define RRC_WIRE_MAX_HOPS 127
/* Key: lowercased QNAME, then a tail of QTYPE + QCLASS + one flags octet (C1). */
#define RRC_WIRE_KEY_TAIL 5
#define RRC_WIRE_KEY_MAX (RRC_WIRE_MAX_NAME + RRC_WIRE_KEY_TAIL)
/* The UDP payload size rrcache advertises and never exceeds (DNS flag day 2020). */
#define RRC_WIRE_EDNS_SIZE 1232
/* RFC 1035 §4.2.1: the UDP limit without EDNS; RFC 6891 §6.2.3: smaller sizes count as 512. */
#define RRC_WIRE_UDP_MIN 512
/* Our OPT record: root owner, type, class, TTL, RDLENGTH 0. */
#define RRC_WIRE_OPT_LEN 11
#define RRC_WIRE_MAX_MSG 65535
/* Name-walk steps (labels + pointers) one packet may cost: a few per byte, so a hostile
 * packet of pointer chains costs within a small factor of any packet of its size (RFC 9267).
 * Real answers use under one step per byte; 127-label names compressed into 12-byte records
 * would need ten and are refused as malformed. */
#define RRC_WIRE_STEPS_PER_BYTE 4
#define RRC_WIRE_STEPS_BASE 512
/* Records a query may carry in ADDITIONAL: an OPT and a TSIG or SIG(0). */
#define RRC_WIRE_QUERY_MAX_AR 2
/* Name-walk steps a query may cost: three names of the longest kind (255 octets, 127 hops). */
#define RRC_WIRE_QUERY_STEPS (3 * (RRC_WIRE_MAX_NAME + RRC_WIRE_MAX_HOPS + 1))

/* Header flag bits within the 16-bit flags word (octets 2-3). */
#define RRC_F_QR 0x8000
#define RRC_F_AA 0x0400
#define RRC_F_TC 0x0200
#define RRC_F_RD 0x0100
#define RRC_F_RA 0x0080
#define RRC_F_Z 0x0040
#define RRC_F_AD 0x0020
#define RRC_F_CD 0x0010

#define RRC_RCODE_NOERROR 0
#define RRC_RCODE_FORMERR 1
#define RRC_RCODE_SERVFAIL 2
#define RRC_RCODE_NXDOMAIN 3
#define RRC_RCODE_NOTIMP 4
#define RRC_RCODE_REFUSED 5
#define RRC_RCODE_BADVERS 16 /* extended, RFC 6891 §9 */

#define RRC_TYPE_A 1
#define RRC_TYPE_SOA 6
#define RRC_TYPE_HINFO 13
#define RRC_TYPE_AAAA 28
#define RRC_TYPE_ANY 255
/* The TTL of RFC 8482's HINFO answer to ANY (§4.2 leaves it open; an hour, as peers use). */
#define RRC_ANY_HINFO_TTL 3600
#define RRC_TYPE_OPT 41
/* DNSSEC records a client without DO must not be given unless it asked for their type
 * (RFC 4035 §3.2.1, RFC 5155 §7.2). */
#define RRC_TYPE_RRSIG 46
#define RRC_TYPE_NSEC 47
#define RRC_TYPE_NSEC3 50
#define RRC_TYPE_TSIG 250
/* RFC 7871 */
#define RRC_EDNS_OPT_ECS 8

/* Bits of the flags octet that ends a cache key. */
#define RRC_KEY_DO 0x01
#define RRC_KEY_CD 0x02
#define RRC_KEY_RD 0x04
#define RRC_KEY_EDNS 0x08

/* What to do with a client query; see CONFORMANCE R1-R15. */
enum rrc_wire_verdict {
	RRC_WIRE_OK = 0,
	RRC_WIRE_DROP,	  /* runt, QR=1 or TC=1: no answer */
	RRC_WIRE_FORMERR, /* answer FORMERR (header only when !question_ok) */
	RRC_WIRE_NOTIMP,  /* unknown opcode */
	RRC_WIRE_BADVERS, /* EDNS version > 0 */
};

/* Why a query was not RRC_WIRE_OK; used as a metrics label, so the set is fixed. */
enum rrc_wire_reason {
	RRC_WR_NONE = 0,
	RRC_WR_RUNT,
	RRC_WR_QR,
	RRC_WR_TC,
	RRC_WR_QDCOUNT,
	RRC_WR_NAME,
	RRC_WR_TRUNCATED,
	RRC_WR_OPT,
	RRC_WR_TRAILING,
	RRC_WR_OPCODE,
	RRC_WR_EDNS_VERSION,
	RRC_WR_SECTIONS,
	RRC_WR_COUNT
};

const char *rrc_wire_reason_name(enum rrc_wire_reason r);

/* A checked client query. Offsets point into the packet it was made from. */
struct rrc_wire_query {
	uint16_t id;
	uint16_t flags;
	uint8_t opcode;
	bool question_ok;   /* QDCOUNT=1 and the question parsed (it can be echoed) */
	uint16_t qname_len; /* wire length of QNAME, starting at offset 12, uncompressed */
	uint16_t qtype;
	uint16_t qclass;
	uint16_t question_end; /* offset just after QCLASS */
	bool has_edns;
	bool edns_do;
	bool has_ecs;
	uint8_t edns_version;
	uint16_t edns_size; /* as sent by the client */
};

/*
 * Checks a client query of len bytes. Fills *q and *reason (RRC_WR_NONE when OK).
 * Never reads outside [pkt, pkt+len).
 */
enum rrc_wire_verdict rrc_wire_check_query(const uint8_t *pkt, size_t len, struct rrc_wire_query *q,
					   enum rrc_wire_reason *reason);

/*
 * Builds the cache key of a checked query (C1) into key[RRC_WIRE_KEY_MAX].
 * Returns its length.
 */
size_t rrc_wire_key(const uint8_t *pkt, const struct rrc_wire_query *q, uint8_t *key);

/* The largest answer a client can take over UDP (R13, R14). */
uint16_t rrc_wire_udp_limit(const struct rrc_wire_query *q);

/*
 * Writes a reply carrying rcode (extended rcodes go into the OPT) for the query into out.
 * The question is echoed when q->question_ok; our OPT is added when q->has_edns. tc sets TC=1.
 * Returns the length, or 0 when cap is too small.
 */
size_t rrc_wire_synth(const uint8_t *pkt, const struct rrc_wire_query *q, unsigned rcode, bool tc,
		      uint8_t *out, size_t cap);

/* Appends rrcache's OPT (size 1232, version 0, DO as given, extended rcode) and bumps ARCOUNT. */
/*
 * A synthesized answer (a blocked name, RFC 8482's answer to ANY): the question, then, when
 * rdata is given, one record of type rtype owned by the question's name with that RDATA (an
 * address of 4 or 16 bytes, HINFO's two strings); when soa, an SOA in AUTHORITY owned by the
 * question's name whose TTL and MINIMUM are ttl (negative caching, RFC 2308); our OPT when the
 * query had EDNS. rcode as given. Returns the length, or 0 when cap is too small.
 */
size_t rrc_wire_synth_answer(const uint8_t *pkt, const struct rrc_wire_query *q, unsigned rcode,
			     uint16_t rtype, const uint8_t *rdata, size_t rdlen, bool soa,
			     uint32_t ttl, uint8_t *out, size_t cap);
size_t rrc_wire_append_opt(uint8_t *msg, size_t len, size_t cap, bool do_bit, unsigned rcode);

/*
 * Calls fn with the target of each CNAME record in msg's answer section (uncompressed,
 * lowercased wire form), in order, until fn returns true; returns whether one did. A message
 * that cannot be walked gives false (it was checked before it was stored).
 */
bool rrc_wire_any_cname(const uint8_t *msg, size_t len,
			bool (*fn)(void *ctx, const uint8_t *name, size_t name_len), void *ctx);

/*
 * Walks a name starting at off. On success returns 0, sets *end to the offset after the name
 * as it appears at off (after the first pointer, if any) and *name_len to its uncompressed
 * wire length. If out is non-NULL, writes the uncompressed, lowercased name there
 * (RRC_WIRE_MAX_NAME bytes). Returns -1 on any malformation.
 */
int rrc_wire_name(const uint8_t *pkt, size_t len, size_t off, size_t *end, size_t *name_len,
		  uint8_t *out);

/* Case-insensitive comparison of two uncompressed wire names of equal length. */
bool rrc_wire_name_equal(const uint8_t *a, const uint8_t *b, size_t len);

/* Records whose TTL offsets a checked reply keeps (a reply with more is walked again). */
#define RRC_WIRE_REPLY_TTLS 32

/* A checked upstream reply (or a stored answer). */
struct rrc_wire_reply {
	uint16_t id;
	uint16_t flags;
	unsigned rcode; /* including the extended bits from the OPT */
	uint16_t qname_len;
	uint16_t qtype, qclass;
	uint16_t question_end;
	uint16_t ancount, nscount, arcount;
	uint16_t opt_off; /* offset of the OPT RR, 0 when absent */
	uint16_t opt_end;
	bool has_soa; /* an SOA in the authority section */
	uint32_t soa_ttl, soa_minimum;
	uint32_t min_ttl; /* over all RRs but OPT, top-bit TTLs counted as 0 (C2) */
	/* What the check found, carried forward so that nothing walks the records again: */
	uint16_t ar_before_opt;	   /* additional records before the OPT */
	uint32_t steps_before_opt; /* name-walk steps the records before the OPT took */
	uint16_t n_rr;		   /* records but the OPT */
	uint32_t soa_auth;	   /* bit i: record i (of ttl_off) is an SOA in AUTHORITY */
	/* RRSIG, NSEC and NSEC3 records the question did not ask for (anywhere but the answer
	 * section, or there of another type than QTYPE, which may be ANY): what a client
	 * without DO must not get (rrc_wire_dnssec_unasked). */
	uint16_t n_dnssec;
	uint16_t ttl_off[RRC_WIRE_REPLY_TTLS]; /* TTL offsets of the first records but the OPT */
};

/* True for a record of type rtype in section (0 answer, 1 authority, 2 additional) that a
 * client without DO must not get when it asked for qtype: an RRSIG, NSEC or NSEC3 outside the
 * answer section, or in it when the question asked for another type (ANY asks for all). */
static inline bool rrc_wire_dnssec_unasked(uint16_t rtype, int section, uint16_t qtype)
{
	if (rtype != RRC_TYPE_RRSIG && rtype != RRC_TYPE_NSEC && rtype != RRC_TYPE_NSEC3)
		return false;
	return section != 0 || (qtype != rtype && qtype != RRC_TYPE_ANY);
}

/*
 * Checks a reply of len bytes: QR=1, QDCOUNT=1 with a parseable question, every record inside
 * the packet, at most one OPT (in ADDITIONAL, root owner), no TSIG, no trailing bytes.
 * Returns 0 or -1 when malformed.
 */
int rrc_wire_check_reply(const uint8_t *pkt, size_t len, struct rrc_wire_reply *r);

/*
 * True when the reply's question equals the one of the query we sent (name case-insensitive,
 * type and class exact), RFC 5452 §9.1. Both must have been checked.
 */
bool rrc_wire_same_question(const uint8_t *reply, const struct rrc_wire_reply *r,
			    const uint8_t *query, size_t qname_len, uint16_t qtype,
			    uint16_t qclass);

/* TTL bounds applied when an answer is stored (C2, C4). */
struct rrc_wire_ttl_policy {
	uint32_t min_ttl;
	uint32_t max_ttl;
	uint32_t max_negative_ttl;
};

/*
 * Rewrites a checked reply in place into the stored form: the OPT and anything after it are
 * removed (U8), ID 0, Z cleared, every TTL clamped to the policy, and for a negative answer the
 * SOA TTL set to min(SOA TTL, MINIMUM, max_negative_ttl) (RFC 2308 §5). Returns the new length
 * and sets *lifetime to the seconds the answer may be cached: 0 when it must not be (TTL 0, TC,
 * SERVFAIL and other failures, negative without SOA, C3/C4). r must come from
 * rrc_wire_check_reply on these bytes: the records are not walked again (the check refused any
 * name that reads a TTL, so rewriting TTLs changes no name). Returns 0 when the shorter result
 * would not pass the check (its records took more name-walk steps than its length allows):
 * treat the reply as malformed.
 */
/* Takes age seconds off every TTL of a checked reply without an OPT (an answer read back from
 * Redis), and updates r to match, as a new check would. */
void rrc_wire_reply_age(uint8_t *pkt, size_t len, struct rrc_wire_reply *r, uint32_t age);

size_t rrc_wire_make_stored(uint8_t *pkt, size_t len, const struct rrc_wire_reply *r,
			    const struct rrc_wire_ttl_policy *pol, uint32_t *lifetime);

/* What finishing an answer needs to know about the client that gets it. */
struct rrc_wire_client {
	uint16_t id;
	uint16_t flags;	      /* the query's flags: RD and CD are copied back */
	const uint8_t *qname; /* the client's QNAME bytes, for its case (C6) */
	uint16_t qname_len;
	bool has_edns;
	bool edns_do;
	uint16_t limit; /* largest answer the transport takes */
};

/* Fills a client descriptor from a checked query; limit is the transport's limit. */
void rrc_wire_client_from_query(struct rrc_wire_client *c, const uint8_t *pkt,
				const struct rrc_wire_query *q, uint16_t limit);

/*
 * Turns a stored answer copied into buf (len bytes, cap >= len) into the client's answer:
 * its ID, its QNAME case, its RD/CD, every TTL decreased by age seconds, and our OPT when the
 * client sent one (R12); AD only when the client's query had DO or AD (RFC 6840 §5.8). If the
 * result exceeds c->limit, buf instead gets header + question
 * (+ OPT) with TC=1 (R14). Returns the length, or 0 if cap is too small for even that.
 */
size_t rrc_wire_finish(uint8_t *buf, size_t len, size_t cap, uint32_t age,
		       const struct rrc_wire_client *c);

/*
 * Writes header + question (+ our OPT) with rcode for a client known only by its descriptor
 * (a waiter whose packet is gone). Returns the length, or 0 when cap is too small.
 */
size_t rrc_wire_synth_client(const struct rrc_wire_client *c, uint16_t qtype, uint16_t qclass,
			     unsigned rcode, uint8_t *out, size_t cap);

/* Sets every record's TTL in a stored answer to ttl (serve-stale, RFC 8767 §4). Returns 0, or
 * -1 if the message does not walk. */
int rrc_wire_set_ttls(uint8_t *msg, size_t len, uint32_t ttl);

/*
 * Builds a query for an upstream: id, the name (uncompressed wire), type, class, the RD, CD and
 * AD bits of flags (AD in a query asks for AD in the answer, RFC 6840 §5.7), and an OPT with the DO
 * bit when edns. Returns the length or 0 if cap is too small.
 */
size_t rrc_wire_build_query(uint8_t *out, size_t cap, uint16_t id, const uint8_t *qname,
			    size_t qname_len, uint16_t qtype, uint16_t qclass, uint16_t flags,
			    bool edns, bool do_bit);

/* EDNS options of DNS over TLS: RFC 7828 (TCP keepalive), RFC 7830 (padding). */
#define RRC_EDNS_OPT_KEEPALIVE 11
#define RRC_EDNS_OPT_PADDING 12
/* RFC 8467 §4.1: queries padded to a multiple of 128 octets. */
#define RRC_PAD_QUERY_BLOCK 128

/*
 * For a query that ends with an OPT without options (as rrc_wire_build_query writes it):
 * appends an empty edns-tcp-keepalive option when keepalive, then a padding option that
 * makes the message a multiple of block octets long. Returns the new length; len when the
 * query does not end with such an OPT (it goes as it is); 0 when cap is too small.
 */
size_t rrc_wire_pad_query(uint8_t *msg, size_t len, size_t cap, unsigned block, bool keepalive);

/* The edns-tcp-keepalive timeout of a checked reply, in units of 100 ms (RFC 7828 §3.2), or
 * -1 when it has none. */
int rrc_wire_keepalive(const uint8_t *pkt, const struct rrc_wire_reply *r);

#endif
