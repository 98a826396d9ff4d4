/*
 * Definitions shared by every module: assertions and small helpers.
 *
 * RRC_REQUIRE(x) aborts in every build: it guards invariants whose failure would corrupt
 * memory. RRC_FAILS(x) evaluates to true when x is false, logs file:line, and aborts only in
 * debug/sanitizer builds, so production keeps serving after a recoverable surprise.
 */
#ifndef RRCACHE_DEFS_H
#define RRCACHE_DEFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Size of the caller-provided buffer that constructors fill with a readable reason. */
#define RRC_ERR_LEN 512

#define RRC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define RRC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RRC_MAX(a, b) ((a) > (b) ? (a) : (b))

/* A keyed 64-bit hash of p[0..len) (wyhash's multiply-fold over 8-byte words), for tables whose
 * keys an outsider chooses (domain lists, rate-limit prefixes): key drawn at random. */
static inline uint64_t rrc_mix64(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)(r >> 64) ^ (uint64_t)r;
}

static inline uint64_t rrc_hash64(const uint64_t key[2], const uint8_t *p, size_t len)
{
	uint64_t h = key[0] ^ (len * 0x9E3779B97F4A7C15ull);
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		h = rrc_mix64(h ^ w, key[1] ^ 0xA0761D6478BD642Full);
		p += 8;
		len -= 8;
	}
	uint64_t w = 0;
	memcpy(&w, p, len);
	return rrc_mix64(h ^ w ^ 0xE7037ED1A0B428DBull, key[1] ^ 0x8EBC6AF09C88C6E3ull);
}

void rrc_require_failed(const char *expr, const char *file, int line);
bool rrc_fails_report(const char *expr, const char *file, int line);

#define RRC_REQUIRE(x)                                                                             \
	do {                                                                                       \
		if (!(x))                                                                          \
			rrc_require_failed(#x, __FILE__, __LINE__);                                \
	} while (0)

#define RRC_FAILS(x) ((x) ? false : rrc_fails_report(#x, __FILE__, __LINE__))

static inline uint16_t rrc_get16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rrc_get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void rrc_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void rrc_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

#endif
