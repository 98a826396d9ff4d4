/*
 * cfg_ref: a configuration in force, with what is compiled from it (the client ACL and the
 * statistics endpoint's ACL), shared read-only by every thread and freed by its last holder.
 *
 * A reload builds a new struct rrc_config, wraps it here, and hands a reference to each worker
 * and to the statistics endpoint; each drops its reference to the old one when it has moved
 * on, and the last drop frees it. Nothing in a ref is written after rrc_cfg_ref_new() but the
 * count. Pure: no uv.h.
 */
#ifndef RRCACHE_CFG_REF_H
#define RRCACHE_CFG_REF_H

#include "rrcache/acl.h"
#include "rrcache/config.h"
#include "rrcache/ratelimit.h"

#include <stdatomic.h>

struct rrc_cfg_ref {
	struct rrc_config *cfg;
	struct rrc_acl *acl;		   /* cfg's client ACL (acl.rules) */
	struct rrc_acl *stats_allow;	   /* cfg's stats.allow */
	struct rrc_ratelimit *ratelimit;   /* ratelimit.* (NULL: off); a reload starts a new one */
	struct rrc_acl *ratelimit_exempt;  /* ratelimit.exempt, also spared dynamic blocks (NULL:
					      none) */
	struct rrc_dynblock_conf dynblock; /* dynblock.* with ratelimit's prefix lengths */
	/* TLS handshakes per client address and second (tls.handshakes_per_client; NULL: off,
	 * or no TLS listener) */
	struct rrc_ratelimit *handshakes;
	atomic_int refs;
	unsigned generation; /* 0 at start, one more at each reload */
};

/* Wraps cfg (ownership passes to the ref on success) with one reference for the caller.
 * Returns NULL when out of memory; cfg then stays the caller's. */
struct rrc_cfg_ref *rrc_cfg_ref_new(struct rrc_config *cfg, unsigned generation);
/* Takes one more reference. Any thread. Returns ref. */
struct rrc_cfg_ref *rrc_cfg_ref_hold(struct rrc_cfg_ref *ref);
/* Drops one reference; the last frees the configuration and its ACLs. Any thread. */
void rrc_cfg_ref_put(struct rrc_cfg_ref *ref);

#endif
