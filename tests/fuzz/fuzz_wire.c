/*
 * libFuzzer target for the wire checks, the key builder and the answer edits.
 *
 * The input is treated both as a client query and as an upstream reply; whatever passes is
 * pushed through the edits the hit and miss paths make. Invariants checked: no read or write
 * outside the buffers (the sanitizers see it), keys within RRC_WIRE_KEY_MAX, answers within the
 * client's limit, and a stored answer that still passes the reply check.
 */
#include "rrcache/wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[RRC_WIRE_MAX_MSG + 64];
	static uint8_t out[RRC_WIRE_MAX_MSG + 64];
	if (size > RRC_WIRE_MAX_MSG)
		return 0;

	struct rrc_wire_query q;
	enum rrc_wire_reason reason;
	enum rrc_wire_verdict v = rrc_wire_check_query(data, size, &q, &reason);
	if (v != RRC_WIRE_DROP) {
		size_t n = rrc_wire_synth(data, &q, RRC_RCODE_FORMERR, false, out, 1536);
		if (n == 0 || n > 1536)
			abort();
	}
	struct rrc_wire_client c;
	if (v == RRC_WIRE_OK) {
		uint8_t key[RRC_WIRE_KEY_MAX];
		size_t klen = rrc_wire_key(data, &q, key);
		if (klen > RRC_WIRE_KEY_MAX || klen != (size_t)q.qname_len + 5)
			abort();
		uint16_t limit = rrc_wire_udp_limit(&q);
		if (limit < 512 || limit > RRC_WIRE_EDNS_SIZE)
			abort();
		rrc_wire_client_from_query(&c, data, &q, limit);
		size_t n = rrc_wire_build_query(out, sizeof(out), 1, key, q.qname_len, q.qtype,
						q.qclass, q.flags, q.has_edns, q.edns_do);
		struct rrc_wire_query q2;
		if (n == 0 || rrc_wire_check_query(out, n, &q2, &reason) != RRC_WIRE_OK)
			abort();
	}

	struct rrc_wire_reply r;
	memcpy(buf, data, size);
	if (rrc_wire_check_reply(buf, size, &r) == 0) {
		struct rrc_wire_ttl_policy pol = {
			.min_ttl = 5, .max_ttl = 86400, .max_negative_ttl = 3600};
		uint32_t life;
		size_t slen = rrc_wire_make_stored(buf, size, &r, &pol, &life);
		struct rrc_wire_reply r2;
		if (slen == 0) /* refused: it did not survive its own edits */
			return 0;
		if (slen > size || rrc_wire_check_reply(buf, slen, &r2) != 0 || r2.opt_off)
			abort();
		if (life && (life < pol.min_ttl || life > pol.max_ttl))
			abort();
		/* Served stale: every TTL rewritten, still a sound message. */
		memcpy(out, buf, slen);
		if (rrc_wire_set_ttls(out, slen, 30) != 0 ||
		    rrc_wire_check_reply(out, slen, &r2) != 0)
			abort();
		/* Finish it for a client asking the same question, as a hit would. */
		struct rrc_wire_client cl = {.id = 7,
					     .flags = RRC_F_RD,
					     .qname = data + RRC_WIRE_HDR,
					     .qname_len = r.qname_len,
					     .has_edns = size & 1,
					     .edns_do = size & 2,
					     .limit = 512};
		memcpy(out, buf, slen);
		size_t n = rrc_wire_finish(out, slen, sizeof(out), 17, &cl);
		if (n > cl.limit)
			abort();
	}
	return 0;
}
