/*
 * libFuzzer target for values read back from Redis (l2value): every byte of a value is
 * untrusted. The input is a value; it is decoded against the L1 key it names itself (so the
 * answer checks are reached), at a clock that makes it fresh, and what rrc_l2_accept takes is
 * checked to be a sound stored answer for that key, within the lifetime the value allows.
 */
#include "rrcache/l2value.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[RRC_WIRE_MAX_MSG];
	if (size < RRC_L2_HDR ||
	    size > RRC_L2_HDR + RRC_WIRE_KEY_MAX + RRC_WIRE_MAX_MSG + RRC_L2_SEAL)
		return 0;
	/* Unsealed keys: the seal is not checked, so what follows it is reached (a sealed
	 * fleet refuses any value whose seal was not written with its secret). */
	static struct rrc_l2_keys keys;
	static bool keys_made;
	if (!keys_made) {
		rrc_l2_derive_keys("", &keys);
		keys_made = true;
	}
	size_t klen = rrc_get16(data + 6);
	if (klen > RRC_WIRE_KEY_MAX || RRC_L2_HDR + klen > size)
		return 0;
	uint8_t key[RRC_WIRE_KEY_MAX];
	memcpy(key, data + RRC_L2_HDR, klen);
	uint64_t stored = (uint64_t)rrc_get32(data + 8) << 32 | rrc_get32(data + 12);
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	/* Decoded at three clocks: as stored, a little later, and far later. */
	const uint64_t later[] = {0, 3500, 400000000};
	for (size_t t = 0; t < sizeof(later) / sizeof(later[0]); t++) {
		struct rrc_l2_value v;
		enum rrc_l2_verdict vd =
			rrc_l2_decode(data, size, &keys, key, klen, stored + later[t], &v);
		if (vd != RRC_L2_FRESH && vd != RRC_L2_EXPIRED)
			continue;
		if (v.answer < data + RRC_L2_HDR ||
		    v.answer + v.alen + RRC_L2_SEAL != data + size || v.alen > sizeof(buf))
			abort();
		memcpy(buf, v.answer, v.alen);
		uint32_t remaining = (uint32_t)(v.remaining_ms / 1000);
		uint32_t life = 0;
		size_t n = rrc_l2_accept(buf, v.alen, key, klen, v.age, remaining, &pol, &life);
		if (n == 0)
			continue;
		struct rrc_wire_reply r;
		if (n > v.alen || life == 0 || life > remaining || life > pol.max_ttl ||
		    rrc_wire_check_reply(buf, n, &r) != 0 || r.qname_len != klen - 5 ||
		    (r.flags & RRC_F_TC) || r.opt_off != 0)
			abort();
	}
	return 0;
}
