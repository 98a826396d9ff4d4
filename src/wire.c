/*
 * wire: bounded checks and in-place edits of DNS messages. See include/rrcache/wire.h.
 *
 * Invariants: no allocation, no global state, no read outside the given length. Every loop is
 * bounded by the packet length (records) or by RRC_WIRE_MAX_HOPS (pointers).
 */
#include "rrcache/wire.h"

#include <string.h>

static const char *const reason_names[RRC_WR_COUNT] = {
	"none",	     "runt", "qr",	 "tc",	   "qdcount",	   "name",
	"truncated", "opt",  "trailing", "opcode", "edns_version", "sections"};

const char *rrc_wire_reason_name(enum rrc_wire_reason r)
{
	return (unsigned)r < RRC_WR_COUNT ? reason_names[r] : "unknown";
}

static inline uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

/* Bit i set: byte i of the message belongs to the fixed fields of a record or the question
 * (type, class, TTL, length), which no name may be read from. */
static inline bool forbidden(const uint8_t *forbid, size_t off, size_t n)
{
	for (size_t i = off; forbid && i < off + n; i++) {
		if ((forbid[i >> 3] >> (i & 7)) & 1)
			return true;
	}
	return false;
}

static inline void forbid_range(uint8_t *forbid, size_t off, size_t n)
{
	for (size_t i = off; forbid && i < off + n; i++)
		forbid[i >> 3] |= (uint8_t)(1u << (i & 7));
}

/* Walks a name; every label and pointer costs one step from *budget (RFC 9267 §2: bound the
 * work a packet can cause, not just each name). With forbid, a name that reads a byte of a
 * record's fixed fields is malformed: rrcache rewrites TTLs, which would change such a name. */
static int name_walk(const uint8_t *pkt, size_t len, size_t off, size_t *end, size_t *name_len,
		     uint8_t *out, size_t *budget, const uint8_t *forbid)
{
	size_t pos = off, total = 0, end_pos = 0;
	size_t limit = off;	 /* the next pointer must point strictly before this */
	size_t region_end = len; /* the labels being read must end before this */
	unsigned hops = 0;
	bool jumped = false;

	for (;;) {
		if (pos >= region_end || *budget == 0)
			return -1;
		(*budget)--;
		uint8_t b = pkt[pos];
		if ((b & 0xC0) == 0xC0) {
			if (pos + 1 >= region_end || forbidden(forbid, pos, 2))
				return -1;
			size_t target = ((size_t)(b & 0x3F) << 8) | pkt[pos + 1];
			if (!jumped) {
				end_pos = pos + 2;
				jumped = true;
				limit = pos;
			}
			/* RFC 9267 §2: strictly backward, and before the last target, so the
			 * walk can neither loop nor revisit. Never into the header: no name lives
			 * there, and rrcache rewrites those bytes (ID, flags) per client. */
			if (target >= limit || target < RRC_WIRE_HDR || ++hops > RRC_WIRE_MAX_HOPS)
				return -1;
			/* What a pointer refers to was written before it: its labels must end
			 * before the pointer, never run on over the bytes that follow it (which
			 * rrcache rewrites, e.g. TTLs). */
			region_end = pos;
			limit = target;
			pos = target;
			continue;
		}
		if (b & 0xC0) /* label types 01 and 10 (RFC 6891 §5, obsolete) */
			return -1;
		if (total + b + 1 > RRC_WIRE_MAX_NAME)
			return -1;
		if (forbidden(forbid, pos, (size_t)b + 1))
			return -1;
		if (b == 0) {
			if (out)
				out[total] = 0;
			total += 1;
			break;
		}
		if (pos + 1 + b > region_end)
			return -1;
		if (out) {
			out[total] = b;
			for (size_t i = 1; i <= b; i++)
				out[total + i] = lower(pkt[pos + i]);
		}
		total += (size_t)b + 1;
		pos += (size_t)b + 1;
	}
	*end = jumped ? end_pos : pos + 1;
	*name_len = total;
	return 0;
}

int rrc_wire_name(const uint8_t *pkt, size_t len, size_t off, size_t *end, size_t *name_len,
		  uint8_t *out)
{
	size_t budget = RRC_WIRE_MAX_NAME + RRC_WIRE_MAX_HOPS + 1; /* one name at most */
	return name_walk(pkt, len, off, end, name_len, out, &budget, NULL);
}

bool rrc_wire_name_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (lower(a[i]) != lower(b[i]))
			return false;
	}
	return true;
}

/* One resource record, as found by rr_next(). */
struct rr {
	size_t owner_off;
	size_t owner_len; /* uncompressed length */
	uint16_t type;
	uint16_t rclass;
	size_t ttl_off;
	uint16_t rdlen;
	size_t rdata_off;
	int section; /* 0 answer, 1 authority, 2 additional */
};

struct rr_iter {
	const uint8_t *pkt;
	size_t len;
	size_t pos;
	unsigned idx;
	unsigned counts[3];
	size_t budget;	 /* name-walk steps left for the whole packet */
	uint8_t *forbid; /* fixed-field bitmap, or NULL */
};

static void rr_iter_init(struct rr_iter *it, const uint8_t *pkt, size_t len, size_t pos,
			 unsigned an, unsigned ns, unsigned ar)
{
	it->pkt = pkt;
	it->len = len;
	it->pos = pos;
	it->idx = 0;
	it->counts[0] = an;
	it->counts[1] = ns;
	it->counts[2] = ar;
	it->budget = RRC_WIRE_STEPS_PER_BYTE * len + RRC_WIRE_STEPS_BASE;
	it->forbid = NULL;
}

/* Returns 1 with *rr filled, 0 after the last record, -1 when malformed. */
static int rr_next(struct rr_iter *it, struct rr *rr)
{
	unsigned total = it->counts[0] + it->counts[1] + it->counts[2];
	if (it->idx >= total)
		return 0;
	unsigned i = it->idx++;
	rr->section = i < it->counts[0] ? 0 : (i < it->counts[0] + it->counts[1] ? 1 : 2);
	size_t end;
	rr->owner_off = it->pos;
	if (name_walk(it->pkt, it->len, it->pos, &end, &rr->owner_len, NULL, &it->budget,
		      it->forbid) != 0)
		return -1;
	if (end + 10 > it->len)
		return -1;
	forbid_range(it->forbid, end, 10);
	const uint8_t *p = it->pkt + end;
	rr->type = rrc_get16(p);
	rr->rclass = rrc_get16(p + 2);
	rr->ttl_off = end + 4;
	rr->rdlen = rrc_get16(p + 8);
	rr->rdata_off = end + 10;
	if (rr->rdata_off + rr->rdlen > it->len)
		return -1;
	it->pos = rr->rdata_off + rr->rdlen;
	return 1;
}

/* RFC 6891 §6.1.2: options are {code, length, data}; they must tile RDATA exactly. */
static int walk_edns_options(const uint8_t *rdata, size_t rdlen, bool *has_ecs)
{
	size_t o = 0;
	while (o < rdlen) {
		if (o + 4 > rdlen)
			return -1;
		uint16_t code = rrc_get16(rdata + o);
		uint16_t olen = rrc_get16(rdata + o + 2);
		if (o + 4 + olen > rdlen)
			return -1;
		if (code == RRC_EDNS_OPT_ECS)
			*has_ecs = true;
		o += 4 + (size_t)olen;
	}
	return 0;
}

enum rrc_wire_verdict rrc_wire_check_query(const uint8_t *pkt, size_t len, struct rrc_wire_query *q,
					   enum rrc_wire_reason *reason)
{
	memset(q, 0, sizeof(*q));
	*reason = RRC_WR_NONE;
	if (len < RRC_WIRE_HDR) {
		*reason = RRC_WR_RUNT;
		return RRC_WIRE_DROP;
	}
	q->id = rrc_get16(pkt);
	q->flags = rrc_get16(pkt + 2);
	q->opcode = (uint8_t)((q->flags >> 11) & 0x0F);
	if (q->flags & RRC_F_QR) {
		*reason = RRC_WR_QR;
		return RRC_WIRE_DROP;
	}
	if (q->flags & RRC_F_TC) {
		*reason = RRC_WR_TC;
		return RRC_WIRE_DROP;
	}
	uint16_t qd = rrc_get16(pkt + 4);

	/* The question; it must be uncompressed so that it can be echoed and case-patched. */
	size_t end = 0, nlen = 0;
	bool qparsed = false;
	if (qd == 1 && rrc_wire_name(pkt, len, RRC_WIRE_HDR, &end, &nlen, NULL) == 0 &&
	    end == RRC_WIRE_HDR + nlen && end + 4 <= len) {
		qparsed = true;
		q->qname_len = (uint16_t)nlen;
		q->qtype = rrc_get16(pkt + end);
		q->qclass = rrc_get16(pkt + end + 2);
		q->question_end = (uint16_t)(end + 4);
	}
	if (q->opcode != 0) {
		/* RFC 8906 §3.1.4: NOTIMP; the question is echoed only when it is sound. */
		q->question_ok = qparsed;
		*reason = RRC_WR_OPCODE;
		return RRC_WIRE_NOTIMP;
	}
	if (qd != 1) {
		*reason = RRC_WR_QDCOUNT;
		return RRC_WIRE_FORMERR;
	}
	if (!qparsed) {
		*reason = RRC_WR_NAME;
		return RRC_WIRE_FORMERR;
	}
	q->question_ok = true;

	/* A query carries no answer or authority records, and at most an OPT and a TSIG in
	 * ADDITIONAL (Unbound refuses the same). Far more records than that are refused before
	 * any is read; a few are read first, so that an OPT in the wrong section is reported
	 * as such (R11) with our OPT in the FORMERR. */
	unsigned an = rrc_get16(pkt + 6), ns = rrc_get16(pkt + 8), ar = rrc_get16(pkt + 10);
	bool sections_ok = an == 0 && ns == 0 && ar <= RRC_WIRE_QUERY_MAX_AR;
	if (an + ns + ar > RRC_WIRE_QUERY_MAX_AR + 1) {
		*reason = RRC_WR_SECTIONS;
		return RRC_WIRE_FORMERR;
	}
	struct rr_iter it;
	struct rr rr;
	int rc;
	rr_iter_init(&it, pkt, len, q->question_end, an, ns, ar);
	it.budget = RRC_WIRE_QUERY_STEPS;
	while ((rc = rr_next(&it, &rr)) == 1) {
		if (rr.type != RRC_TYPE_OPT)
			continue;
		/* RFC 6891 §6.1.1: one OPT, in ADDITIONAL, owned by the root. */
		bool dup = q->has_edns;
		q->has_edns = true;
		if (dup || rr.section != 2 || rr.owner_len != 1) {
			*reason = RRC_WR_OPT;
			return RRC_WIRE_FORMERR;
		}
		uint32_t ttl = rrc_get32(pkt + rr.ttl_off);
		q->edns_size = rr.rclass;
		q->edns_version = (uint8_t)(ttl >> 16);
		q->edns_do = (ttl & 0x8000) != 0;
		if (walk_edns_options(pkt + rr.rdata_off, rr.rdlen, &q->has_ecs) != 0) {
			*reason = RRC_WR_OPT;
			return RRC_WIRE_FORMERR;
		}
	}
	if (rc < 0) {
		*reason = RRC_WR_TRUNCATED;
		return RRC_WIRE_FORMERR;
	}
	if (!sections_ok) {
		*reason = RRC_WR_SECTIONS;
		return RRC_WIRE_FORMERR;
	}
	if (it.pos != len) {
		/* CVE-2018-14663: never let extra bytes travel upstream. */
		*reason = RRC_WR_TRAILING;
		return RRC_WIRE_FORMERR;
	}
	if (q->has_edns && q->edns_version > 0) {
		*reason = RRC_WR_EDNS_VERSION;
		return RRC_WIRE_BADVERS;
	}
	return RRC_WIRE_OK;
}

size_t rrc_wire_key(const uint8_t *pkt, const struct rrc_wire_query *q, uint8_t *key)
{
	size_t n = q->qname_len;
	for (size_t i = 0; i < n; i++)
		key[i] = lower(pkt[RRC_WIRE_HDR + i]);
	rrc_put16(key + n, q->qtype);
	rrc_put16(key + n + 2, q->qclass);
	uint8_t f = 0;
	if (q->edns_do)
		f |= RRC_KEY_DO;
	if (q->flags & RRC_F_CD)
		f |= RRC_KEY_CD;
	if (q->flags & RRC_F_RD)
		f |= RRC_KEY_RD;
	if (q->has_edns)
		f |= RRC_KEY_EDNS;
	key[n + 4] = f;
	return n + RRC_WIRE_KEY_TAIL;
}

uint16_t rrc_wire_udp_limit(const struct rrc_wire_query *q)
{
	if (!q->has_edns)
		return RRC_WIRE_UDP_MIN;
	uint16_t s = RRC_MAX(q->edns_size, RRC_WIRE_UDP_MIN);
	return RRC_MIN(s, RRC_WIRE_EDNS_SIZE);
}

size_t rrc_wire_append_opt(uint8_t *msg, size_t len, size_t cap, bool do_bit, unsigned rcode)
{
	if (len < RRC_WIRE_HDR || len + RRC_WIRE_OPT_LEN > cap)
		return 0;
	uint8_t *p = msg + len;
	p[0] = 0;
	rrc_put16(p + 1, RRC_TYPE_OPT);
	rrc_put16(p + 3, RRC_WIRE_EDNS_SIZE);
	rrc_put32(p + 5, ((uint32_t)(rcode >> 4) << 24) | (do_bit ? 0x8000u : 0));
	rrc_put16(p + 9, 0);
	rrc_put16(msg + 10, (uint16_t)(rrc_get16(msg + 10) + 1));
	return len + RRC_WIRE_OPT_LEN;
}

size_t rrc_wire_synth(const uint8_t *pkt, const struct rrc_wire_query *q, unsigned rcode, bool tc,
		      uint8_t *out, size_t cap)
{
	size_t qlen = q->question_ok ? (size_t)q->question_end - RRC_WIRE_HDR : 0;
	size_t need = RRC_WIRE_HDR + qlen + (q->has_edns ? RRC_WIRE_OPT_LEN : 0);
	if (need > cap)
		return 0;
	uint16_t flags = RRC_F_QR | RRC_F_RA | (uint16_t)(q->opcode << 11) |
			 (q->flags & (RRC_F_RD | RRC_F_CD)) | (uint16_t)(rcode & 0x0F);
	if (tc)
		flags |= RRC_F_TC;
	rrc_put16(out, q->id);
	rrc_put16(out + 2, flags);
	rrc_put16(out + 4, q->question_ok ? 1 : 0);
	memset(out + 6, 0, 6);
	if (qlen)
		memcpy(out + RRC_WIRE_HDR, pkt + RRC_WIRE_HDR, qlen);
	size_t len = RRC_WIRE_HDR + qlen;
	if (q->has_edns)
		len = rrc_wire_append_opt(out, len, cap, q->edns_do, rcode);
	return len;
}

size_t rrc_wire_synth_answer(const uint8_t *pkt, const struct rrc_wire_query *q, unsigned rcode,
			     uint16_t rtype, const uint8_t *rdata, size_t rdlen, bool soa,
			     uint32_t ttl, uint8_t *out, size_t cap)
{
	/* SOA RDATA: MNAME and RNAME the root, then serial, refresh, retry, expire, minimum. */
	enum { RR_HEAD = 12, SOA_RDATA = 22 };
	size_t qlen = (size_t)q->question_end - RRC_WIRE_HDR;
	size_t need = RRC_WIRE_HDR + qlen + (rdata ? RR_HEAD + rdlen : 0) +
		      (soa ? RR_HEAD + SOA_RDATA : 0) + (q->has_edns ? RRC_WIRE_OPT_LEN : 0);
	if (!q->question_ok || need > cap)
		return 0;
	uint16_t flags = RRC_F_QR | RRC_F_RA | (uint16_t)(q->opcode << 11) |
			 (q->flags & (RRC_F_RD | RRC_F_CD)) | (uint16_t)(rcode & 0x0F);
	rrc_put16(out, q->id);
	rrc_put16(out + 2, flags);
	rrc_put16(out + 4, 1);
	rrc_put16(out + 6, rdata ? 1 : 0);
	rrc_put16(out + 8, soa ? 1 : 0);
	rrc_put16(out + 10, 0);
	memcpy(out + RRC_WIRE_HDR, pkt + RRC_WIRE_HDR, qlen);
	size_t len = RRC_WIRE_HDR + qlen;
	/* An RR header owned by the question's name (a pointer to offset 12). */
	uint8_t *p = out + len;
	if (rdata) {
		rrc_put16(p, 0xC000 | RRC_WIRE_HDR);
		rrc_put16(p + 2, rtype);
		rrc_put16(p + 4, 1); /* IN */
		rrc_put32(p + 6, ttl);
		rrc_put16(p + 10, (uint16_t)rdlen);
		memcpy(p + RR_HEAD, rdata, rdlen);
		p += RR_HEAD + rdlen;
	}
	if (soa) {
		static const uint32_t timers[4] = {1, 3600, 600, 86400};
		rrc_put16(p, 0xC000 | RRC_WIRE_HDR);
		rrc_put16(p + 2, 6); /* SOA */
		rrc_put16(p + 4, 1);
		rrc_put32(p + 6, ttl);
		rrc_put16(p + 10, SOA_RDATA);
		p[RR_HEAD] = 0;
		p[RR_HEAD + 1] = 0;
		for (int i = 0; i < 4; i++)
			rrc_put32(p + RR_HEAD + 2 + 4 * i, timers[i]);
		rrc_put32(p + RR_HEAD + 18, ttl);
		p += RR_HEAD + SOA_RDATA;
	}
	len = (size_t)(p - out);
	if (q->has_edns)
		len = rrc_wire_append_opt(out, len, cap, q->edns_do, rcode);
	return len;
}

/* The offset just past the name at off as written (up to its first pointer), without
 * following pointers; 0 when it runs past len or uses a reserved label type. */
static size_t skip_name(const uint8_t *msg, size_t len, size_t off)
{
	while (off < len) {
		uint8_t b = msg[off];
		if (b == 0)
			return off + 1;
		if ((b & 0xC0) == 0xC0)
			return off + 2 <= len ? off + 2 : 0;
		if (b & 0xC0)
			return 0;
		off += (size_t)b + 1;
	}
	return 0;
}

bool rrc_wire_any_cname(const uint8_t *msg, size_t len,
			bool (*fn)(void *ctx, const uint8_t *name, size_t name_len), void *ctx)
{
	if (len < RRC_WIRE_HDR || rrc_get16(msg + 4) != 1)
		return false;
	unsigned an = rrc_get16(msg + 6);
	/* Owner names are only skipped (most are a 2-byte pointer); a CNAME's target alone is
	 * decompressed, with every bound checked. This runs on cache hits. */
	size_t off = skip_name(msg, len, RRC_WIRE_HDR);
	if (!off)
		return false;
	off += 4;
	uint8_t target[RRC_WIRE_MAX_NAME];
	for (unsigned i = 0; i < an; i++) {
		size_t end = skip_name(msg, len, off);
		if (!end || end + 10 > len)
			return false;
		uint16_t type = rrc_get16(msg + end);
		size_t rdlen = rrc_get16(msg + end + 8), rd = end + 10;
		if (rd + rdlen > len)
			return false;
		if (type == 5) { /* CNAME */
			size_t tend, nlen;
			if (rrc_wire_name(msg, len, rd, &tend, &nlen, target) != 0 ||
			    tend != rd + rdlen)
				return false;
			if (fn(ctx, target, nlen))
				return true;
		}
		off = rd + rdlen;
	}
	return false;
}

int rrc_wire_check_reply(const uint8_t *pkt, size_t len, struct rrc_wire_reply *r)
{
	memset(r, 0, sizeof(*r));
	if (len < RRC_WIRE_HDR)
		return -1;
	r->id = rrc_get16(pkt);
	r->flags = rrc_get16(pkt + 2);
	r->rcode = r->flags & 0x0F;
	if (!(r->flags & RRC_F_QR) || rrc_get16(pkt + 4) != 1)
		return -1;
	size_t end, nlen;
	if (rrc_wire_name(pkt, len, RRC_WIRE_HDR, &end, &nlen, NULL) != 0 ||
	    end != RRC_WIRE_HDR + nlen || end + 4 > len)
		return -1;
	r->qname_len = (uint16_t)nlen;
	r->qtype = rrc_get16(pkt + end);
	r->qclass = rrc_get16(pkt + end + 2);
	r->question_end = (uint16_t)(end + 4);
	r->ancount = rrc_get16(pkt + 6);
	r->nscount = rrc_get16(pkt + 8);
	r->arcount = rrc_get16(pkt + 10);
	r->min_ttl = UINT32_MAX;

	uint8_t forbid[(RRC_WIRE_MAX_MSG >> 3) + 1];
	memset(forbid, 0, (len >> 3) + 1);
	forbid_range(forbid, end, 4); /* the question's type and class */
	struct rr_iter it;
	struct rr rr;
	int rc;
	rr_iter_init(&it, pkt, len, r->question_end, r->ancount, r->nscount, r->arcount);
	it.forbid = forbid;
	size_t budget0 = it.budget, budget_before = it.budget;
	while ((rc = rr_next(&it, &rr)) == 1) {
		uint32_t ttl = rrc_get32(pkt + rr.ttl_off);
		if (rr.type == RRC_TYPE_OPT) {
			if (r->opt_off || rr.section != 2 || rr.owner_len != 1)
				return -1;
			r->opt_off = (uint16_t)rr.owner_off;
			r->opt_end = (uint16_t)(rr.rdata_off + rr.rdlen);
			r->rcode |= (ttl >> 24) << 4;
			r->steps_before_opt = (uint32_t)(budget0 - budget_before);
			budget_before = it.budget;
			continue;
		}
		budget_before = it.budget;
		if (r->n_rr < RRC_WIRE_REPLY_TTLS) {
			r->ttl_off[r->n_rr] = (uint16_t)rr.ttl_off;
			if (rr.type == RRC_TYPE_SOA && rr.section == 1)
				r->soa_auth |= 1u << r->n_rr;
		}
		r->n_rr++;
		if (rr.section == 2 && !r->opt_off)
			r->ar_before_opt++;
		if (rrc_wire_dnssec_unasked(rr.type, rr.section, r->qtype))
			r->n_dnssec++;
		/* rrcache signs nothing, so no reply it asked for carries a TSIG (RFC 8945 §5.3:
		 * only a signed request gets a signed answer); and ldns 1.8.3 leaks memory on
		 * malformed ones, which a hostile upstream could send at will. */
		if (rr.type == RRC_TYPE_TSIG)
			return -1;
		if (ttl & 0x80000000u) /* RFC 2181 §8 */
			ttl = 0;
		r->min_ttl = RRC_MIN(r->min_ttl, ttl);
		if (rr.type == RRC_TYPE_SOA && rr.section == 1 && !r->has_soa) {
			size_t e1, e2, l1, l2, rd_end = rr.rdata_off + rr.rdlen;
			if (name_walk(pkt, rd_end, rr.rdata_off, &e1, &l1, NULL, &it.budget,
				      it.forbid) != 0 ||
			    name_walk(pkt, rd_end, e1, &e2, &l2, NULL, &it.budget, it.forbid) !=
				    0 ||
			    e2 + 20 != rd_end)
				return -1;
			r->has_soa = true;
			r->soa_ttl = ttl;
			uint32_t mn = rrc_get32(pkt + e2 + 16);
			r->soa_minimum = (mn & 0x80000000u) ? 0 : mn;
		}
	}
	if (rc < 0 || it.pos != len)
		return -1;
	if (r->min_ttl == UINT32_MAX)
		r->min_ttl = 0;
	return 0;
}

bool rrc_wire_same_question(const uint8_t *reply, const struct rrc_wire_reply *r,
			    const uint8_t *query, size_t qname_len, uint16_t qtype, uint16_t qclass)
{
	return r->qname_len == qname_len && r->qtype == qtype && r->qclass == qclass &&
	       rrc_wire_name_equal(reply + RRC_WIRE_HDR, query + RRC_WIRE_HDR, qname_len);
}

static uint32_t clamp_ttl(uint32_t ttl, uint32_t lo, uint32_t hi)
{
	if (ttl & 0x80000000u)
		ttl = 0;
	if (ttl < lo)
		ttl = lo;
	if (ttl > hi)
		ttl = hi;
	return ttl;
}

/* The TTLs of a checked reply's records but the OPT that lie before its OPT (all of them when
 * it has none): from the offsets the check kept or, for a reply with more records than that,
 * by walking them again. */
struct ttl_iter {
	const struct rrc_wire_reply *r;
	unsigned i;
	size_t end;
	bool walk;
	struct rr_iter it;
};

static void ttl_iter_init(struct ttl_iter *t, const uint8_t *pkt, size_t len,
			  const struct rrc_wire_reply *r)
{
	t->r = r;
	t->i = 0;
	t->end = r->opt_off ? r->opt_off : len;
	t->walk = r->n_rr > RRC_WIRE_REPLY_TTLS;
	if (t->walk)
		rr_iter_init(&t->it, pkt, t->end, r->question_end, r->ancount, r->nscount,
			     r->opt_off ? r->ar_before_opt : r->arcount);
}

static bool ttl_next(struct ttl_iter *t, size_t *off, bool *soa_auth)
{
	if (!t->walk) {
		if (t->i >= t->r->n_rr || t->r->ttl_off[t->i] >= t->end)
			return false;
		*off = t->r->ttl_off[t->i];
		*soa_auth = (t->r->soa_auth >> t->i) & 1;
		t->i++;
		return true;
	}
	struct rr rr;
	if (rr_next(&t->it, &rr) != 1)
		return false;
	*off = rr.ttl_off;
	*soa_auth = rr.type == RRC_TYPE_SOA && rr.section == 1;
	return true;
}

void rrc_wire_reply_age(uint8_t *pkt, size_t len, struct rrc_wire_reply *r, uint32_t age)
{
	struct ttl_iter t;
	size_t off;
	bool soa;
	ttl_iter_init(&t, pkt, len, r);
	while (ttl_next(&t, &off, &soa)) {
		uint32_t ttl = rrc_get32(pkt + off);
		rrc_put32(pkt + off, ttl > age ? ttl - age : 0);
	}
	/* As a new check would find them: every TTL lost the same, top-bit ones stay 0. */
	r->min_ttl = r->min_ttl > age ? r->min_ttl - age : 0;
	r->soa_ttl = r->soa_ttl > age ? r->soa_ttl - age : 0;
}

size_t rrc_wire_make_stored(uint8_t *pkt, size_t len, const struct rrc_wire_reply *r,
			    const struct rrc_wire_ttl_policy *pol, uint32_t *lifetime)
{
	*lifetime = 0;
	struct ttl_iter t;
	ttl_iter_init(&t, pkt, len, r);
	if (r->opt_off) {
		/* Drop the OPT and what follows it (a TSIG is meaningless to our client). The
		 * records before it must pass a check of the shorter message, whose name-walk
		 * budget is smaller (RFC 9267 §2). */
		if (r->steps_before_opt >
		    RRC_WIRE_STEPS_PER_BYTE * (size_t)r->opt_off + RRC_WIRE_STEPS_BASE)
			return 0;
		len = r->opt_off;
		rrc_put16(pkt + 10, r->ar_before_opt);
	}
	rrc_put16(pkt, 0);
	rrc_put16(pkt + 2, r->flags & (uint16_t)~RRC_F_Z);

	unsigned rcode = r->rcode;
	bool negative =
		rcode == RRC_RCODE_NXDOMAIN || (rcode == RRC_RCODE_NOERROR && r->ancount == 0);
	/* RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM); 0 means "do not
	 * cache", whatever min_ttl says. */
	uint32_t neg_ttl = RRC_MIN(r->soa_ttl, r->soa_minimum);
	bool cacheable = (rcode == RRC_RCODE_NOERROR || rcode == RRC_RCODE_NXDOMAIN) &&
			 !(r->flags & RRC_F_TC) && r->min_ttl > 0 &&
			 (!negative || (r->has_soa && neg_ttl > 0));
	uint32_t life = UINT32_MAX;
	size_t off;
	bool soa;
	while (ttl_next(&t, &off, &soa)) {
		uint32_t ttl = rrc_get32(pkt + off);
		if (negative && soa) {
			/* Raised to min_ttl like any TTL, capped by max_negative_ttl. */
			ttl = clamp_ttl(neg_ttl, pol->min_ttl, pol->max_negative_ttl);
		} else {
			ttl = clamp_ttl(ttl, pol->min_ttl, pol->max_ttl);
		}
		rrc_put32(pkt + off, ttl);
		life = RRC_MIN(life, ttl);
	}
	if (life == UINT32_MAX || !cacheable)
		life = 0;
	*lifetime = life;
	return len;
}

void rrc_wire_client_from_query(struct rrc_wire_client *c, const uint8_t *pkt,
				const struct rrc_wire_query *q, uint16_t limit)
{
	c->id = q->id;
	c->flags = q->flags;
	c->qname = pkt + RRC_WIRE_HDR;
	c->qname_len = q->qname_len;
	c->has_edns = q->has_edns;
	c->edns_do = q->edns_do;
	c->limit = limit;
}

size_t rrc_wire_finish(uint8_t *buf, size_t len, size_t cap, uint32_t age,
		       const struct rrc_wire_client *c)
{
	if (len < RRC_WIRE_HDR + (size_t)c->qname_len + 4)
		return 0;
	uint16_t flags = rrc_get16(buf + 2);
	flags = (uint16_t)((flags & ~(RRC_F_RD | RRC_F_CD | RRC_F_Z)) |
			   (c->flags & (RRC_F_RD | RRC_F_CD)));
	/* RFC 6840 §5.8: AD only to a client that asked with DO or AD. */
	if (!c->edns_do && !(c->flags & RRC_F_AD))
		flags &= (uint16_t)~RRC_F_AD;
	rrc_put16(buf, c->id);
	rrc_put16(buf + 2, flags);
	memcpy(buf + RRC_WIRE_HDR, c->qname, c->qname_len);
	unsigned rcode = flags & 0x0F;
	size_t opt = c->has_edns ? RRC_WIRE_OPT_LEN : 0;

	if (len + opt > c->limit || len + opt > cap) {
		/* RFC 1035 §4.2.1: what does not fit is cut to the question with TC=1. */
		len = RRC_WIRE_HDR + (size_t)c->qname_len + 4;
		rrc_put16(buf + 2, flags | RRC_F_TC);
		memset(buf + 6, 0, 6);
		if (c->has_edns)
			return rrc_wire_append_opt(buf, len, cap, c->edns_do, rcode);
		return len;
	}
	if (age > 0) {
		struct rr_iter it;
		struct rr rr;
		rr_iter_init(&it, buf, len, RRC_WIRE_HDR + (size_t)c->qname_len + 4,
			     rrc_get16(buf + 6), rrc_get16(buf + 8), rrc_get16(buf + 10));
		while (rr_next(&it, &rr) == 1) {
			uint32_t ttl = rrc_get32(buf + rr.ttl_off);
			rrc_put32(buf + rr.ttl_off, ttl > age ? ttl - age : 0);
		}
	}
	if (c->has_edns)
		return rrc_wire_append_opt(buf, len, cap, c->edns_do, rcode);
	return len;
}

size_t rrc_wire_build_query(uint8_t *out, size_t cap, uint16_t id, const uint8_t *qname,
			    size_t qname_len, uint16_t qtype, uint16_t qclass, uint16_t flags,
			    bool edns, bool do_bit)
{
	size_t need = RRC_WIRE_HDR + qname_len + 4 + (edns ? RRC_WIRE_OPT_LEN : 0);
	if (need > cap)
		return 0;
	rrc_put16(out, id);
	rrc_put16(out + 2, flags & (RRC_F_RD | RRC_F_CD | RRC_F_AD));
	rrc_put16(out + 4, 1);
	memset(out + 6, 0, 6);
	memcpy(out + RRC_WIRE_HDR, qname, qname_len);
	size_t len = RRC_WIRE_HDR + qname_len;
	rrc_put16(out + len, qtype);
	rrc_put16(out + len + 2, qclass);
	len += 4;
	if (edns)
		len = rrc_wire_append_opt(out, len, cap, do_bit, 0);
	return len;
}

size_t rrc_wire_synth_client(const struct rrc_wire_client *c, uint16_t qtype, uint16_t qclass,
			     unsigned rcode, uint8_t *out, size_t cap)
{
	size_t len = RRC_WIRE_HDR + (size_t)c->qname_len + 4;
	if (len + (c->has_edns ? RRC_WIRE_OPT_LEN : 0) > cap)
		return 0;
	rrc_put16(out, c->id);
	rrc_put16(out + 2, (uint16_t)(RRC_F_QR | RRC_F_RA | (c->flags & (RRC_F_RD | RRC_F_CD)) |
				      (rcode & 0x0F)));
	rrc_put16(out + 4, 1);
	memset(out + 6, 0, 6);
	memcpy(out + RRC_WIRE_HDR, c->qname, c->qname_len);
	rrc_put16(out + RRC_WIRE_HDR + c->qname_len, qtype);
	rrc_put16(out + RRC_WIRE_HDR + c->qname_len + 2, qclass);
	if (c->has_edns)
		len = rrc_wire_append_opt(out, len, cap, c->edns_do, rcode);
	return len;
}

int rrc_wire_set_ttls(uint8_t *msg, size_t len, uint32_t ttl)
{
	size_t end, nlen;
	if (len < RRC_WIRE_HDR || rrc_wire_name(msg, len, RRC_WIRE_HDR, &end, &nlen, NULL) != 0 ||
	    end + 4 > len)
		return -1;
	struct rr_iter it;
	struct rr rr;
	int rc;
	rr_iter_init(&it, msg, len, end + 4, rrc_get16(msg + 6), rrc_get16(msg + 8),
		     rrc_get16(msg + 10));
	while ((rc = rr_next(&it, &rr)) == 1) {
		if (rr.type != RRC_TYPE_OPT)
			rrc_put32(msg + rr.ttl_off, ttl);
	}
	return rc;
}

size_t rrc_wire_pad_query(uint8_t *msg, size_t len, size_t cap, unsigned block, bool keepalive)
{
	/* The last record: root owner, type OPT, class, TTL, RDLENGTH 0. */
	if (len < RRC_WIRE_HDR + RRC_WIRE_OPT_LEN || rrc_get16(msg + 10) == 0 || block == 0)
		return len;
	uint8_t *opt = msg + len - RRC_WIRE_OPT_LEN;
	if (opt[0] != 0 || rrc_get16(opt + 1) != RRC_TYPE_OPT || rrc_get16(opt + 9) != 0)
		return len;
	size_t ka = keepalive ? 4 : 0;
	size_t pad = (block - (len + ka + 4) % block) % block;
	size_t total = len + ka + 4 + pad;
	if (total > cap || total > RRC_WIRE_MAX_MSG)
		return 0;
	uint8_t *o = msg + len;
	if (keepalive) {
		rrc_put16(o, RRC_EDNS_OPT_KEEPALIVE);
		rrc_put16(o + 2, 0);
		o += 4;
	}
	rrc_put16(o, RRC_EDNS_OPT_PADDING);
	rrc_put16(o + 2, (uint16_t)pad);
	memset(o + 4, 0, pad);
	rrc_put16(opt + 9, (uint16_t)(ka + 4 + pad));
	return total;
}

int rrc_wire_keepalive(const uint8_t *pkt, const struct rrc_wire_reply *r)
{
	if (!r->opt_off)
		return -1;
	size_t off = (size_t)r->opt_off + RRC_WIRE_OPT_LEN, end = r->opt_end;
	while (off + 4 <= end) {
		uint16_t code = rrc_get16(pkt + off), olen = rrc_get16(pkt + off + 2);
		if (off + 4 + olen > end)
			return -1;
		if (code == RRC_EDNS_OPT_KEEPALIVE && olen == 2)
			return rrc_get16(pkt + off + 4);
		off += 4 + (size_t)olen;
	}
	return -1;
}
