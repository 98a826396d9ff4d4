/*
 * Logging: levels, groups, rate limiting. Writes one line per message to stderr.
 *
 * rrc_log() checks the level before evaluating its arguments, so debug lines cost one load
 * when disabled. Nothing per packet is logged above debug; debug lines about network input go
 * through rrc_log_limited(), which allows RRC_LOG_BURST lines per second per group.
 * Thread-safe: the level is an atomic, each line is written with one write(2).
 */
#ifndef RRCACHE_LOG_H
#define RRCACHE_LOG_H

#include <stdatomic.h>
#include <stddef.h>

enum rrc_log_level { RRC_LOG_ERR = 0, RRC_LOG_WARN, RRC_LOG_INFO, RRC_LOG_DEBUG };
enum rrc_log_group {
	RRC_LG_MAIN = 0,
	RRC_LG_LISTEN,
	RRC_LG_UPSTREAM,
	RRC_LG_CACHE,
	RRC_LG_REDIS,
	RRC_LG_ACL,
	RRC_LG_HTTP,
	RRC_LG_CONFIG,
	RRC_LG_COUNT
};

/* Lines per second per group that rrc_log_limited() lets through: enough to see what a flood
 * is made of, too few for it to fill a disk (864,000 lines a day per group at most). */
#define RRC_LOG_BURST 10

extern atomic_int rrc_log_level_now;

void rrc_log_write(enum rrc_log_level lvl, enum rrc_log_group grp, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void rrc_log_write_limited(enum rrc_log_level lvl, enum rrc_log_group grp, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Returns 0 and sets *out for "error", "warning", "info", "debug"; -EINVAL otherwise. */
int rrc_log_level_parse(const char *s, enum rrc_log_level *out);
void rrc_log_set_level(enum rrc_log_level lvl);

#define rrc_log(lvl, grp, ...)                                                                     \
	do {                                                                                       \
		if ((int)(lvl) <= atomic_load_explicit(&rrc_log_level_now, memory_order_relaxed))  \
			rrc_log_write((lvl), (grp), __VA_ARGS__);                                  \
	} while (0)

#define rrc_log_limited(lvl, grp, ...)                                                             \
	do {                                                                                       \
		if ((int)(lvl) <= atomic_load_explicit(&rrc_log_level_now, memory_order_relaxed))  \
			rrc_log_write_limited((lvl), (grp), __VA_ARGS__);                          \
	} while (0)

#endif
