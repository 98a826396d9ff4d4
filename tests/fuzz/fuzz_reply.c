/*
 * libFuzzer target for upstream replies on the miss path: wire's bounded checks, then ldns's
 * parse (msg, the only data-path user of ldns), the DNSSEC records taken out for a client
 * without DO, then the stored form and a client's answer.
 * Invariants: a reply without those records has none left and the same question; what is
 * stored checks again as a sound reply, and a client's answer never
 * exceeds the client's limit (R14); every CNAME target the policy's walk of a stored answer
 * gives is a well-formed name.
 */
#include "rrcache/msg.h"
#include "rrcache/wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool cname_target(void *ctx, const uint8_t *name, size_t name_len)
{
	size_t end, nlen;
	if (name_len > RRC_WIRE_MAX_NAME ||
	    rrc_wire_name(name, name_len, 0, &end, &nlen, NULL) != 0 || end != name_len)
		abort();
	(*(unsigned *)ctx)++;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[RRC_WIRE_MAX_MSG], out[RRC_WIRE_MAX_MSG + 2];
	if (size > sizeof(buf))
		return 0;
	memcpy(buf, data, size);
	struct rrc_wire_reply r;
	if (rrc_wire_check_reply(buf, size, &r) != 0)
		return 0;
	/* ldns may refuse it; it must not crash or leak */
	bool parsed = rrc_msg_check_reply(buf, size) == 0;
	if (parsed && r.n_dnssec) {
		/* The DNSSEC records a client without DO must not get, taken out: what is left
		 * checks as a reply to the same question without any of them. */
		static uint8_t strip[RRC_WIRE_MAX_MSG];
		memcpy(strip, buf, size);
		size_t sn = rrc_msg_strip_dnssec(strip, size);
		struct rrc_wire_reply sr;
		if (sn && rrc_wire_check_reply(strip, sn, &sr) == 0 &&
		    (sr.n_dnssec != 0 || !rrc_wire_same_question(strip, &sr, buf, r.qname_len,
								   r.qtype, r.qclass)))
			abort();
	}
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	uint32_t life = 0;
	size_t n = rrc_wire_make_stored(buf, size, &r, &pol, &life);
	if (n == 0)
		return 0;
	struct rrc_wire_reply stored;
	if (rrc_wire_check_reply(buf, n, &stored) != 0 || stored.opt_off != 0)
		abort();
	(void)rrc_msg_check_reply(buf, n);
	unsigned targets = 0;
	if (rrc_wire_any_cname(buf, n, cname_target, &targets))
		abort(); /* the callback never says stop */
	static const uint16_t limits[] = {512, 1232, RRC_WIRE_MAX_MSG};
	for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		struct rrc_wire_client c = {.id = 0x1234,
					    .flags = RRC_F_RD,
					    .qname = buf + RRC_WIRE_HDR,
					    .qname_len = stored.qname_len,
					    .has_edns = i > 0,
					    .edns_do = i == 2,
					    .limit = limits[i]};
		memcpy(out, buf, n);
		size_t m = rrc_wire_finish(out, n, sizeof(out), 7, &c);
		if (m > limits[i] || (m && rrc_get16(out) != 0x1234))
			abort();
	}
	return 0;
}
