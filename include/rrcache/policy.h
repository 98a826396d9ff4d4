/*
 * policy: domain block and allow lists, compiled into one compact matcher.
 *
 * Lists are files of rules, one per line, the format detected per line:
 *
 *   0.0.0.0 ads.example.com  (a hosts file line: the names after the address, exactly)
 *   ads.example.com          (a plain name: the name and every name below it)
 *   ||ads.example.com^       (adblock style: the name and below; `$important` allowed)
 *   @@||good.example.com^    (adblock exception: allows the name and below, in any list)
 *   *.example.com            (the names below example.com, not example.com itself)
 *   # comment, ! comment, [Adblock Plus 2.0]
 *
 * A line that cannot be read (a regex, an unknown modifier, a bad name) is counted and the
 * first few are reported with file:line; it never fails the load. Names are compared without
 * regard to case.
 *
 * Matching a name: its suffixes are tried from the most specific (the name itself) to the
 * least (its TLD); the first suffix with a rule that applies decides: allowed if any allow rule
 * applies there (allow before deny), blocked otherwise. So a more specific rule wins over a
 * less specific one, whichever list each comes from.
 *
 * The matcher is one open-addressed table of 8-byte entries (a 56-bit keyed hash of the name
 * and its rule's kind and list), about 10 bytes per rule, immutable once built and shared by
 * every thread; a false match would need two names with the same 56-bit hash under a per-load
 * random key. Built off the workers' loops (at start and on reload, by main) and swapped in
 * with the configuration. Pure: no uv.h.
 */
#ifndef RRCACHE_POLICY_H
#define RRCACHE_POLICY_H

#include "rrcache/defs.h"
#include "rrcache/wire.h"

#include <stdatomic.h>

/* Lists per matcher (block and allow together). */
#define RRC_POLICY_MAX_LISTS 64
/* Client groups of a configuration (policy.groups), besides the default group. */
#define RRC_POLICY_MAX_GROUPS 16
/* Unreadable lines reported by file:line per load (the rest only counted). */
#define RRC_POLICY_REPORT_LINES 5

enum rrc_policy_kind {
	RRC_PK_EXACT = 0, /* the name only */
	RRC_PK_SUBTREE,	  /* the name and every name below it */
	RRC_PK_BELOW,	  /* the names below it only */
};

/* One rule read from a line. */
struct rrc_policy_rule {
	uint8_t name[RRC_WIRE_MAX_NAME]; /* wire form, lowercased */
	size_t name_len;
	enum rrc_policy_kind kind;
	bool allow; /* an exception (@@) in any list */
};

enum rrc_policy_line {
	RRC_PL_RULE = 0, /* rules[0..n) filled */
	RRC_PL_NONE,	 /* empty or a comment */
	RRC_PL_BAD,	 /* unreadable; why says what */
};

/*
 * Reads one line (len bytes, no newline needed) into up to cap rules (a hosts line may name
 * several). Returns the kind of line and, for RRC_PL_RULE, the number of rules in *n; for
 * RRC_PL_BAD a static reason in *why. Pure: fuzzed.
 */
enum rrc_policy_line rrc_policy_parse_line(const char *line, size_t len,
					   struct rrc_policy_rule *rules, size_t cap, size_t *n,
					   const char **why);

/* A list file and what became of it. */
struct rrc_policy_list_info {
	char path[256];
	bool allow;	/* an allowlist: its plain rules allow */
	uint64_t rules; /* rules taken from it */
	uint64_t bad;	/* lines that could not be read */
};

struct rrc_policy;

/*
 * Reads the block lists and the allow lists (in this order, at most RRC_POLICY_MAX_LISTS in
 * all) and builds the matcher. A file that cannot be opened or read fails the whole load
 * (NULL, the reason in err); unreadable lines do not (they are counted, the first
 * RRC_POLICY_REPORT_LINES reported into report, cap bytes, one per line). One reference for
 * the caller.
 */
struct rrc_policy *rrc_policy_load(const char *const *block, size_t n_block,
				   const char *const *allow, size_t n_allow, char *report,
				   size_t report_cap, char err[RRC_ERR_LEN]);
struct rrc_policy *rrc_policy_hold(struct rrc_policy *p);
void rrc_policy_put(struct rrc_policy *p);

enum rrc_policy_verdict {
	RRC_PV_PASS = 0, /* no rule applies */
	RRC_PV_BLOCK,	 /* a deny rule decided */
	RRC_PV_ALLOW,	 /* an allow rule decided (over a deny rule, or alone) */
};

/*
 * The verdict for a name (wire form, lowercased, name_len bytes with the root label), with
 * the lists whose bit is set in lists (bit i: list i in load order) taken into account.
 * *list is set to the list that decided (for RRC_PV_BLOCK and RRC_PV_ALLOW). p may be NULL
 * (RRC_PV_PASS). Any thread.
 */
enum rrc_policy_verdict rrc_policy_check(const struct rrc_policy *p, const uint8_t *name,
					 size_t name_len, uint64_t lists, unsigned *list);

/* What was loaded: lists in load order, total rules, table bytes, build time. */
size_t rrc_policy_lists(const struct rrc_policy *p, const struct rrc_policy_list_info **out);
uint64_t rrc_policy_rules(const struct rrc_policy *p);
size_t rrc_policy_bytes(const struct rrc_policy *p);

#endif
