/*
 * cfg_ref: a shared, counted configuration. See include/rrcache/cfg_ref.h.
 */
#include "rrcache/cfg_ref.h"

#include <stdlib.h>

struct rrc_cfg_ref *rrc_cfg_ref_new(struct rrc_config *cfg, unsigned generation)
{
	struct rrc_cfg_ref *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->acl = rrc_acl_create(cfg->acl_rules, cfg->n_acl_rules);
	r->stats_allow = rrc_acl_create(cfg->stats.allow, cfg->stats.n_allow);
	r->dynblock = (struct rrc_dynblock_conf){.nxdomain_rate = cfg->dynblock.nxdomain_rate,
						 .miss_rate = cfg->dynblock.miss_rate,
						 .window_ms = cfg->dynblock.window_ms,
						 .duration_ms = cfg->dynblock.duration_ms,
						 .v4_prefix = cfg->ratelimit.table.v4_prefix,
						 .v6_prefix = cfg->ratelimit.table.v6_prefix};
	if (cfg->ratelimit.table.qps)
		r->ratelimit = rrc_ratelimit_create(&cfg->ratelimit.table);
	/* Per address, not per prefix: a client that opens a connection per query pays its
	 * handshakes, its neighbours do not. */
	bool hs = cfg->tls.handshakes_per_client && (cfg->n_listen_tls || cfg->n_listen_https);
	struct rrc_ratelimit_conf hsc = {.qps = cfg->tls.handshakes_per_client,
					 .burst = 2 * cfg->tls.handshakes_per_client,
					 .v4_prefix = 32,
					 .v6_prefix = 64,
					 .table_size = 4096};
	if (hs)
		r->handshakes = rrc_ratelimit_create(&hsc);
	bool exempt = cfg->ratelimit.n_exempt &&
		      (cfg->ratelimit.table.qps || rrc_dynblock_on(&r->dynblock));
	if (exempt)
		r->ratelimit_exempt =
			rrc_acl_create(cfg->ratelimit.exempt, cfg->ratelimit.n_exempt);
	if (!r->acl || !r->stats_allow || (cfg->ratelimit.table.qps && !r->ratelimit) ||
	    (exempt && !r->ratelimit_exempt) || (hs && !r->handshakes)) {
		rrc_acl_destroy(r->acl);
		rrc_acl_destroy(r->stats_allow);
		rrc_ratelimit_destroy(r->ratelimit);
		rrc_ratelimit_destroy(r->handshakes);
		rrc_acl_destroy(r->ratelimit_exempt);
		free(r);
		return NULL;
	}
	r->cfg = cfg;
	r->generation = generation;
	atomic_init(&r->refs, 1);
	return r;
}

struct rrc_cfg_ref *rrc_cfg_ref_hold(struct rrc_cfg_ref *ref)
{
	atomic_fetch_add(&ref->refs, 1);
	return ref;
}

void rrc_cfg_ref_put(struct rrc_cfg_ref *ref)
{
	if (!ref || atomic_fetch_sub(&ref->refs, 1) != 1)
		return;
	rrc_acl_destroy(ref->acl);
	rrc_acl_destroy(ref->stats_allow);
	rrc_ratelimit_destroy(ref->ratelimit);
	rrc_ratelimit_destroy(ref->handshakes);
	rrc_acl_destroy(ref->ratelimit_exempt);
	rrc_config_free(ref->cfg);
	free(ref);
}
