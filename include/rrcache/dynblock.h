/*
 * dynblock: dynamic blocks. A client prefix whose rate of NXDOMAIN answers, or of queries the
 * cache could not answer, stays above a threshold over a window is blocked for a while
 * (dynblock.* settings); blocks can also be added and removed by hand (/api/v1/blocks).
 *
 * Two fixed tables, shared by every worker and kept across reloads (the server owns them):
 *
 * - Watched prefixes: sets of 8 entries, a set chosen by a keyed hash of the prefix, each set
 *   under its own spin lock (held for a few dozen instructions; only queries that end in an
 *   NXDOMAIN or go past the cache take it). An entry counts events in two fixed windows, the
 *   current one and the one before, and estimates the count over the last window as
 *   current + previous x (the share of the previous window still inside it), the sliding
 *   window of rate limiters. A prefix not in its set takes an empty entry or the one with the
 *   lowest estimate, so a busy prefix is not pushed out by many quiet ones: a million sources
 *   cost what the table costs.
 * - Blocks: buckets of 8 slots (one cache line of keys), a bucket chosen by a keyed hash of
 *   the prefix and its length. Queries read it without a lock (a slot's key, its end, its key
 *   again); adding, removing and listing take one mutex. When no block is in force a query
 *   pays one atomic load: the latest end of any block.
 *
 * Times are milliseconds of one monotonic clock (libuv's uv_now and uv_hrtime agree).
 * Pure: no uv.h.
 */
#ifndef RRCACHE_DYNBLOCK_H
#define RRCACHE_DYNBLOCK_H

#include "rrcache/defs.h"

#include <sys/socket.h>

struct rrc_dynblock;

/* Why a prefix is blocked. */
enum rrc_dynblock_reason { RRC_DB_NXDOMAIN, RRC_DB_MISS, RRC_DB_MANUAL, RRC_DB_REASONS };

/* What a blocked prefix's queries get. */
enum rrc_dynblock_action { RRC_DB_DROP, RRC_DB_REFUSED, RRC_DB_TC };

/* The settings read at each event (they may change at a reload; the tables do not). */
struct rrc_dynblock_conf {
	uint32_t nxdomain_rate; /* NXDOMAIN answers a second, over the window (0: not watched) */
	uint32_t miss_rate;	/* queries past the cache a second, over the window (0: same) */
	uint32_t window_ms;	/* the window the rates are averaged over */
	uint32_t duration_ms;	/* how long a block lasts */
	uint32_t v4_prefix;	/* bits of an IPv4 address that make its prefix */
	uint32_t v6_prefix;	/* and of an IPv6 one */
};

/* One block, as listed. */
struct rrc_dynblock_entry {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t bits;
	uint8_t addr[16]; /* the network, host bits zero */
	enum rrc_dynblock_reason reason;
	uint32_t rate;	   /* events a second over the window when it started (0: by hand) */
	uint64_t since_ms; /* when it started */
	uint64_t until_ms; /* when it ends */
	uint64_t queries;  /* queries it has stopped */
};

/* What the tables have done since they were made. */
struct rrc_dynblock_totals {
	uint64_t started[RRC_DB_REASONS]; /* blocks started, by reason */
	uint64_t refused;		  /* blocks not started: max_blocks in force */
	uint64_t removed;		  /* blocks removed by hand */
};

/* Tables for `watched` prefixes (rounded up to a multiple of 8) and at most max_blocks blocks
 * at once. NULL when out of memory. */
struct rrc_dynblock *rrc_dynblock_create(uint32_t watched, uint32_t max_blocks);
void rrc_dynblock_destroy(struct rrc_dynblock *db);

/* True when conf watches anything. */
static inline bool rrc_dynblock_on(const struct rrc_dynblock_conf *conf)
{
	return conf->nxdomain_rate || conf->miss_rate;
}

/*
 * Counts one event (RRC_DB_NXDOMAIN or RRC_DB_MISS) of sa's prefix at now_ms; when the
 * estimate over the window reaches the rate, blocks the prefix for duration_ms and starts its
 * counts afresh; returns true when that started a block, described in *started (if not
 * NULL). Any thread.
 */
bool rrc_dynblock_count(struct rrc_dynblock *db, const struct rrc_dynblock_conf *conf,
			const struct sockaddr *sa, enum rrc_dynblock_reason kind, uint64_t now_ms,
			struct rrc_dynblock_entry *started);

/* True when a block in force at now_ms covers sa (and counts the query against it). Any
 * thread, no lock. db NULL: false (as for count). */
bool rrc_dynblock_blocked(struct rrc_dynblock *db, const struct sockaddr *sa, uint64_t now_ms);

/* Blocks family/addr/bits (host bits are cleared) until now_ms + duration_ms (1), or extends
 * the block of that prefix in force to then if that is later (0). Returns 1, 0, -EINVAL (bad
 * family or length) or -ENOSPC (max_blocks in force, or the prefix's bucket full). */
int rrc_dynblock_add(struct rrc_dynblock *db, uint8_t family, const uint8_t *addr, unsigned bits,
		     enum rrc_dynblock_reason reason, uint32_t rate, uint64_t now_ms,
		     uint64_t duration_ms);

/* Ends the block of exactly that prefix in force at now_ms (1), or finds none (0). */
int rrc_dynblock_remove(struct rrc_dynblock *db, uint8_t family, const uint8_t *addr, unsigned bits,
			uint64_t now_ms);
/* Ends every block; returns how many were in force. */
unsigned rrc_dynblock_clear(struct rrc_dynblock *db, uint64_t now_ms);

/* The blocks in force at now_ms, at most cap of them into out (NULL: only counted), in no
 * particular order. Returns how many are in force. */
size_t rrc_dynblock_list(struct rrc_dynblock *db, uint64_t now_ms, struct rrc_dynblock_entry *out,
			 size_t cap);

void rrc_dynblock_totals(struct rrc_dynblock *db, struct rrc_dynblock_totals *out);

/* Bytes the tables take. */
size_t rrc_dynblock_bytes(const struct rrc_dynblock *db);

/* An entry's prefix as "192.0.2.0/24" or "2001:db8::/56". */
#define RRC_DYNBLOCK_TEXT 48
void rrc_dynblock_prefix_text(const struct rrc_dynblock_entry *e, char *out, size_t cap);

/* "nxdomain", "miss", "manual". */
const char *rrc_dynblock_reason_name(enum rrc_dynblock_reason r);

#endif
