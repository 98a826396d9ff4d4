/*
 * acl: client address rules. Pure (no uv.h).
 *
 * Rules are CIDR prefixes (IPv4 and IPv6) with an action; the longest matching prefix wins,
 * deny wins over allow on an equal prefix (whatever their order in the file), and an address
 * that matches no rule is denied. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d)
 * are matched as IPv4. The compiled table is immutable and may be read by many threads.
 * Lookup is a scan of the rules sorted longest-prefix first: the first match is the answer.
 */
#ifndef RRCACHE_ACL_H
#define RRCACHE_ACL_H

#include "rrcache/defs.h"

#include <sys/socket.h>

struct rrc_acl_rule {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t prefix;
	bool allow;
	uint8_t addr[16]; /* network bytes; IPv4 in the first 4 */
};

/* What happens to a denied client. */
enum rrc_acl_action { RRC_ACL_DROP = 0, RRC_ACL_REFUSE };

struct rrc_acl;

/*
 * Parses "10.0.0.0/8", "fe80::/10", "192.0.2.1" (a host) into *r. Host bits beyond the prefix
 * must be zero. Returns 0 or -EINVAL.
 */
int rrc_acl_rule_parse(const char *text, bool allow, struct rrc_acl_rule *r);

/* The rules rrcache uses when none are configured: loopback and private ranges allowed. */
size_t rrc_acl_default_rules(struct rrc_acl_rule *out, size_t cap);

/* Compiles n rules (copied). Returns NULL when out of memory. Free with rrc_acl_destroy. */
struct rrc_acl *rrc_acl_create(const struct rrc_acl_rule *rules, size_t n);
void rrc_acl_destroy(struct rrc_acl *acl);

/* True when sa lies in r's network (an IPv4-mapped address as IPv4), whatever r's action. */
bool rrc_acl_rule_matches(const struct rrc_acl_rule *r, const struct sockaddr *sa);

/* True when the client address is allowed. */
bool rrc_acl_allows(const struct rrc_acl *acl, const struct sockaddr *sa);

#endif
