/*
 * l2value: Redis keys and values of the L2 tier. See include/rrcache/l2value.h.
 */
#include "rrcache/l2value.h"
#include "rrcache/cache.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

static const uint8_t magic[4] = {'R', 'R', 'C', 'L'};

static void put64(uint8_t *p, uint64_t v)
{
	rrc_put32(p, (uint32_t)(v >> 32));
	rrc_put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)rrc_get32(p) << 32 | rrc_get32(p + 4);
}

static void derive(const char *secret, const char *label, uint8_t out[16])
{
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned mlen = 0;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)label, strlen(label), mac,
	     &mlen);
	RRC_REQUIRE(mlen >= 16);
	memcpy(out, mac, 16);
}

void rrc_l2_derive_keys(const char *secret, struct rrc_l2_keys *k)
{
	derive(secret, "rrcache L2 name v1", k->name);
	derive(secret, "rrcache L2 key v1", k->full);
	derive(secret, "rrcache L2 value seal v2", k->value);
	k->sealed = secret[0] != '\0';
}

static void hex64(uint64_t v, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 15; i >= 0; i--) {
		out[i] = digits[v & 0xF];
		v >>= 4;
	}
}

void rrc_l2_name_hash(const struct rrc_l2_keys *k, const uint8_t *name, size_t len, char out[17])
{
	hex64(rrc_cache_siphash(k->name, name, len), out);
	out[16] = '\0';
}

size_t rrc_l2_key(const struct rrc_l2_keys *k, const char *prefix, const uint8_t *key,
		  size_t keylen, uint64_t ns, unsigned flags, char out[RRC_L2_KEY_MAX])
{
	/* The L1 key starts with the lowercased name and ends with type, class and flags. */
	size_t plen = strnlen(prefix, 63);
	size_t n = 0;
	memcpy(out, prefix, plen);
	n += plen;
	if (flags & RRC_L2_KEY_LOCK) {
		memcpy(out + n, "lock:", 5);
		n += 5;
	}
	if (flags & RRC_L2_KEY_TAG)
		out[n++] = '{';
	hex64(rrc_cache_siphash(k->name, key, keylen - RRC_WIRE_KEY_TAIL), out + n);
	n += 16;
	out[n++] = ':';
	if (ns) {
		uint8_t tagged[RRC_WIRE_KEY_MAX + 8];
		size_t tl = RRC_MIN(keylen, (size_t)RRC_WIRE_KEY_MAX);
		memcpy(tagged, key, tl);
		memcpy(tagged + tl, &ns, 8);
		hex64(rrc_cache_siphash(k->full, tagged, tl + 8), out + n);
	} else {
		hex64(rrc_cache_siphash(k->full, key, keylen), out + n);
	}
	n += 16;
	if (flags & RRC_L2_KEY_TAG)
		out[n++] = '}';
	out[n] = '\0';
	return n;
}

size_t rrc_l2_encode(uint8_t *out, size_t cap, const struct rrc_l2_keys *k, const uint8_t *key,
		     size_t keylen, const uint8_t *answer, size_t alen, uint64_t now_ms,
		     uint32_t lifetime)
{
	size_t need = RRC_L2_HDR + keylen + alen + RRC_L2_SEAL;
	if (need > cap || keylen > RRC_WIRE_KEY_MAX)
		return 0;
	memcpy(out, magic, 4);
	out[4] = RRC_L2_VERSION;
	out[5] = 0;
	rrc_put16(out + 6, (uint16_t)keylen);
	put64(out + 8, now_ms);
	rrc_put32(out + 16, lifetime);
	put64(out + 20, now_ms + (uint64_t)lifetime * 1000);
	memcpy(out + RRC_L2_HDR, key, keylen);
	memcpy(out + RRC_L2_HDR + keylen, answer, alen);
	put64(out + need - RRC_L2_SEAL, rrc_cache_siphash(k->value, out, need - RRC_L2_SEAL));
	return need;
}

/* Clocks of a fleet differ a little; a value stored further in the future than this is a lie. */
#define RRC_L2_MAX_SKEW_MS 60000
/* No lifetime we store exceeds a week (cache.max_ttl's limit) plus the stale window (30 d). */
#define RRC_L2_MAX_LIFE_S (7u * 86400 + 30u * 86400)

enum rrc_l2_verdict rrc_l2_decode(const uint8_t *val, size_t len, const struct rrc_l2_keys *k,
				  const uint8_t *key, size_t keylen, uint64_t now_ms,
				  struct rrc_l2_value *out)
{
	memset(out, 0, sizeof(*out));
	if (len < RRC_L2_HDR || memcmp(val, magic, 4) != 0 || val[4] != RRC_L2_VERSION ||
	    val[5] != 0)
		return RRC_L2_MALFORMED;
	size_t klen = rrc_get16(val + 6);
	uint64_t stored = get64(val + 8);
	uint32_t life = rrc_get32(val + 16);
	uint64_t expiry = get64(val + 20);
	if (klen > RRC_WIRE_KEY_MAX || len < RRC_L2_HDR + klen + RRC_WIRE_HDR + RRC_L2_SEAL ||
	    life > RRC_L2_MAX_LIFE_S || expiry != stored + (uint64_t)life * 1000 ||
	    stored > now_ms + RRC_L2_MAX_SKEW_MS)
		return RRC_L2_MALFORMED;
	if (k->sealed) {
		/* Written by the fleet, or refused. */
		if (get64(val + len - RRC_L2_SEAL) !=
		    rrc_cache_siphash(k->value, val, len - RRC_L2_SEAL))
			return RRC_L2_MALFORMED;
		out->sealed = true;
	}
	if (klen != keylen || memcmp(val + RRC_L2_HDR, key, keylen) != 0)
		return RRC_L2_OTHER_KEY;
	out->answer = val + RRC_L2_HDR + klen;
	out->alen = len - RRC_L2_HDR - klen - RRC_L2_SEAL;
	out->age = stored < now_ms ? (uint32_t)((now_ms - stored) / 1000) : 0;
	if (expiry <= now_ms) {
		out->expired_ms = now_ms - expiry;
		return RRC_L2_EXPIRED;
	}
	out->remaining_ms = expiry - now_ms;
	return RRC_L2_FRESH;
}

size_t rrc_l2_accept(uint8_t *buf, size_t len, const uint8_t *key, size_t keylen, uint32_t age,
		     uint32_t remaining_s, const struct rrc_wire_ttl_policy *pol,
		     uint32_t *lifetime)
{
	struct rrc_wire_reply r;
	*lifetime = 0;
	if (keylen < RRC_WIRE_KEY_TAIL + 1 || rrc_wire_check_reply(buf, len, &r) != 0)
		return 0;
	size_t qlen = keylen - RRC_WIRE_KEY_TAIL;
	const uint8_t *tail = key + qlen;
	/* The answer must be for the key's question (RFC 5452 §9.1 holds for Redis too). */
	if (r.qname_len != qlen || !rrc_wire_name_equal(buf + RRC_WIRE_HDR, key, qlen) ||
	    r.qtype != rrc_get16(tail) || r.qclass != rrc_get16(tail + 2) || (r.flags & RRC_F_TC) ||
	    r.opt_off != 0)
		return 0;
	/* An instance stores no DNSSEC records a client without DO must not get (RFC 4035
	 * §3.2.1), so a value with them under such a key was not written by one. */
	if (r.n_dnssec && !(tail[4] & RRC_KEY_DO))
		return 0;
	if (age > 0)
		rrc_wire_reply_age(buf, len, &r, age);
	uint32_t life = 0;
	size_t slen = rrc_wire_make_stored(buf, len, &r, pol, &life);
	if (slen == 0 || life == 0)
		return 0;
	*lifetime = life < remaining_s ? life : remaining_s;
	return *lifetime ? slen : 0;
}
