/*
 * cachefile: the L1 cache written to a file and read back, so that a restart answers its first
 * queries from cache (cache.save_file).
 *
 * File (network byte order):
 *   0  magic "RRCF"                      4
 *   4  format version (1)                1
 *   5  reserved (0)                      3
 *   8  entries                           8
 *  16  each entry: its length (4), then an L2 value (l2value.h: the times as Unix
 *      milliseconds, the L1 key, the answer, the seal under the fleet's keys)
 *  ..  checksum of the entries (rrc_cachefile_checksum)                  8
 *
 * The checksum catches a truncated or damaged file (it says nothing of who wrote it); each
 * entry is then checked as a value read from Redis is (rrc_l2_decode, rrc_l2_accept, and
 * ldns unless the fleet's seal vouches for it), expired ones skipped. A file that is not
 * ours, of another version, truncated or damaged is refused whole.
 *
 * Written to a temporary file beside it, fsync'd, renamed over it, and the directory
 * fsync'd: a crash leaves the old file or the new one, never half of one. Pure: no uv.h.
 */
#ifndef RRCACHE_CACHEFILE_H
#define RRCACHE_CACHEFILE_H

#include "rrcache/cache.h"
#include "rrcache/l2value.h"

/* A load uses one thread per CPU, at most this many, each for at least RRC_CACHEFILE_PART_MIN
 * entries. */
#define RRC_CACHEFILE_THREADS 8
#define RRC_CACHEFILE_PART_MIN 20000

struct rrc_cachefile_stats {
	uint64_t loaded;  /* entries put into the cache */
	uint64_t expired; /* skipped: past their expiry */
	uint64_t refused; /* skipped: failed a check */
};

/* Writes c's fresh entries to path. now_mono_ms is the cache's clock, now_wall_ms the Unix
 * time at that instant. Returns the entries written (>= 0), or -errno with err set. */
long rrc_cachefile_save(struct rrc_cache *c, const char *path, const struct rrc_l2_keys *keys,
			uint64_t now_mono_ms, uint64_t now_wall_ms, char err[RRC_ERR_LEN]);

/* Reads path into c. Returns 0 with *st, -ENOENT when there is no file, or -errno (-EINVAL:
 * refused whole) with err set. */
int rrc_cachefile_load(struct rrc_cache *c, const char *path, const struct rrc_l2_keys *keys,
		       const struct rrc_wire_ttl_policy *pol, uint64_t now_mono_ms,
		       uint64_t now_wall_ms, struct rrc_cachefile_stats *st, char err[RRC_ERR_LEN]);

/* The same from a buffer (the fuzz target's way in). */
int rrc_cachefile_load_buf(struct rrc_cache *c, const uint8_t *buf, size_t len,
			   const struct rrc_l2_keys *keys, const struct rrc_wire_ttl_policy *pol,
			   uint64_t now_mono_ms, uint64_t now_wall_ms,
			   struct rrc_cachefile_stats *st, char err[RRC_ERR_LEN]);

/* The checksum of count entries laid out as in the file (each its 4-byte length and value),
 * len bytes: for whoever builds a file (the fuzz target). */
uint64_t rrc_cachefile_checksum(const uint8_t *entries, size_t len, uint64_t count);

#endif
