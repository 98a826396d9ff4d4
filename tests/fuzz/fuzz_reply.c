/*
 * libFuzzer target for upstream replies on the miss path: wire's bounded checks, then ldns's
 * parse (msg, the only data-path user of ldns), then the stored form and a client's answer.
 * Invariants: what is stored checks again as a sound reply, and a client's answer never
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
	(void)rrc_msg_check_reply(buf, size); /* ldns may refuse it; it must not crash or leak */
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
