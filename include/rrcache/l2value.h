/*
 * l2value: the keys and values rrcache keeps in Redis (the L2 tier). Pure: no I/O, no loop.
 *
 * Key: key_prefix + hex(SipHash(k_name, lowercased QNAME)) + ":" + hex(SipHash(k_full, L1 key)),
 * where k_name and k_full are derived from the fleet's key_secret (HMAC-SHA-256). No name
 * ever appears in a key, so a command never carries client-chosen bytes as its structure; the
 * name part lets a flush of one name find all its keys (SCAN MATCH prefix + hex + ":*").
 * The fleet-coalescing lock of a key is key_prefix + "lock:" + the same two hashes.
 *
 * Value (network byte order):
 *   0  magic "RRCL"            4
 *   4  format version (2)      1
 *   5  reserved (0)            1
 *   6  key length              2
 *   8  stored at, Unix ms      8
 *  16  original lifetime, s    4
 *  20  expires at, Unix ms     8
 *  28  the L1 key              key length
 *  ..  the answer in stored form (rrc_wire_make_stored), TTLs as at "stored at"
 *  ..  seal: SipHash-2-4(k_value, everything before it)   8
 *
 * Every value read back is untrusted: rrc_l2_decode() and rrc_l2_accept() check all of it.
 * The seal says a value was written by an instance holding the fleet's key_secret, which
 * writes only answers it checked itself, ldns's parse included. With a key_secret configured,
 * a value whose seal is wrong is refused, and one whose seal is right need not be parsed by
 * ldns again; with none (the keys derive from the empty secret, which anyone can), the seal
 * proves nothing and every value is parsed.
 */
#ifndef RRCACHE_L2VALUE_H
#define RRCACHE_L2VALUE_H

#include "rrcache/wire.h"

#define RRC_L2_HDR 28
#define RRC_L2_VERSION 2
#define RRC_L2_SEAL 8
/* Longest key: prefix (< 64) + "lock:" + 16 hex + ":" + 16 hex. */
#define RRC_L2_KEY_MAX 112

struct rrc_l2_keys {
	uint8_t name[16];
	uint8_t full[16];
	uint8_t value[16];
	bool sealed; /* a key_secret was configured: seals are checked and mean something */
};

/* Derives the fleet's hash keys from key_secret (any length, may be empty). */
void rrc_l2_derive_keys(const char *secret, struct rrc_l2_keys *k);

/* The 16 hex digits of a name's hash (name: lowercased wire form). out: 17 bytes. */
void rrc_l2_name_hash(const struct rrc_l2_keys *k, const uint8_t *name, size_t len, char out[17]);

/* Flags of rrc_l2_key. */
#define RRC_L2_KEY_LOCK 1u /* the key of the value's fleet-coalescing lock */
#define RRC_L2_KEY_TAG                                                                             \
	2u /* Redis Cluster: the hashes as a hash tag, "{name:question}", so a                     \
	    * value and its lock share a slot */

/* Writes the Redis key of an L1 key (or of its lock) into out. ns is the upstream pool's (0:
 * the default pool): the same question forwarded to another pool is another key, while the
 * name's part (what a flush by name looks for) stays the same. flags: RRC_L2_KEY_*. Returns
 * its length. */
size_t rrc_l2_key(const struct rrc_l2_keys *k, const char *prefix, const uint8_t *key,
		  size_t keylen, uint64_t ns, unsigned flags, char out[RRC_L2_KEY_MAX]);

/* Writes the value for a stored answer, sealed with k. Returns its length, 0 if cap is too
 * small. */
size_t rrc_l2_encode(uint8_t *out, size_t cap, const struct rrc_l2_keys *k, const uint8_t *key,
		     size_t keylen, const uint8_t *answer, size_t alen, uint64_t now_ms,
		     uint32_t lifetime);

enum rrc_l2_verdict {
	RRC_L2_FRESH,	  /* usable: answer, age and remaining describe it */
	RRC_L2_EXPIRED,	  /* a sound value past its expiry (a stale candidate) */
	RRC_L2_MALFORMED, /* not our format, truncated, impossible times */
	RRC_L2_OTHER_KEY, /* a sound value for another question */
};

struct rrc_l2_value {
	const uint8_t *answer; /* inside the value */
	size_t alen;
	uint32_t age;	       /* seconds since it was stored */
	uint64_t remaining_ms; /* until its expiry; 0 when expired */
	uint64_t expired_ms;   /* how long ago it expired; 0 when fresh */
	bool sealed;	       /* its seal checked out under a configured key_secret */
};

/* Checks a value's header (and, when k->sealed, its seal: a wrong one is MALFORMED) against the
 * L1 key it was looked up by, at now_ms. */
enum rrc_l2_verdict rrc_l2_decode(const uint8_t *val, size_t len, const struct rrc_l2_keys *k,
				  const uint8_t *key, size_t keylen, uint64_t now_ms,
				  struct rrc_l2_value *out);

/*
 * Checks an answer taken from a value like an upstream reply and makes it ready for L1: it must
 * pass rrc_wire_check_reply, be a response for the key's question, and survive
 * rrc_wire_make_stored under pol after its TTLs were aged by age seconds. buf holds a mutable
 * copy of the answer (len bytes). Returns the stored length (0: refuse it) and the lifetime
 * left, capped by remaining_s.
 */
size_t rrc_l2_accept(uint8_t *buf, size_t len, const uint8_t *key, size_t keylen, uint32_t age,
		     uint32_t remaining_s, const struct rrc_wire_ttl_policy *pol,
		     uint32_t *lifetime);

#endif
