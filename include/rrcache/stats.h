/*
 * stats: the pieces of rrcache's statistics that are not plain counters. Pure: no I/O, no
 * loop, no locks; every structure here belongs to one worker thread (or to a snapshot of it).
 *
 * - histograms with fixed bounds (latencies in microseconds);
 * - the fixed sets of query types and response codes that label counters ("other" for the
 *   rest), so that every label comes from a bounded set;
 * - the counters of one worker;
 * - rendering a view of them as Prometheus text and JSON (through buf's escaping writers).
 * The top-K summaries live in topk.h.
 */
#ifndef RRCACHE_STATS_H
#define RRCACHE_STATS_H

#include "rrcache/policy.h"
#include "rrcache/balancer.h"
#include "rrcache/buf.h"
#include "rrcache/cache.h"
#include "rrcache/defs.h"
#include "rrcache/doh.h"
#include "rrcache/dynblock.h"
#include "rrcache/topk.h"
#include "rrcache/wire.h"

/* ---- histograms ---- */

#define RRC_HIST_BOUNDS 14
/* Upper bounds of the buckets in microseconds; a last bucket (+Inf) follows. */
extern const uint32_t rrc_hist_bounds_us[RRC_HIST_BOUNDS];

struct rrc_hist {
	uint64_t bucket[RRC_HIST_BOUNDS + 1]; /* not cumulative */
	uint64_t count;
	uint64_t sum_us;
};

static inline void rrc_hist_add(struct rrc_hist *h, uint64_t us)
{
	unsigned i = 0;
	while (i < RRC_HIST_BOUNDS && us > rrc_hist_bounds_us[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum_us += us;
}

/* n samples of the same value (a batch answered at once). */
static inline void rrc_hist_add_n(struct rrc_hist *h, uint64_t us, uint64_t n)
{
	unsigned i = 0;
	while (i < RRC_HIST_BOUNDS && us > rrc_hist_bounds_us[i])
		i++;
	h->bucket[i] += n;
	h->count += n;
	h->sum_us += us * n;
}

void rrc_hist_merge(struct rrc_hist *into, const struct rrc_hist *from);
/* The value below which a fraction q (0..1) of the samples lie, in microseconds, interpolated
 * inside its bucket; 0 with no samples. */
double rrc_hist_quantile(const struct rrc_hist *h, double q);

/* ---- bounded label sets ---- */

enum rrc_qtype_slot {
	RRC_QT_A,
	RRC_QT_AAAA,
	RRC_QT_CNAME,
	RRC_QT_MX,
	RRC_QT_TXT,
	RRC_QT_NS,
	RRC_QT_SOA,
	RRC_QT_PTR,
	RRC_QT_SRV,
	RRC_QT_SVCB,
	RRC_QT_HTTPS,
	RRC_QT_CAA,
	RRC_QT_DS,
	RRC_QT_DNSKEY,
	RRC_QT_ANY,
	RRC_QT_OTHER,
	RRC_QT_COUNT
};
unsigned rrc_stats_qtype_slot(uint16_t qtype);
const char *rrc_stats_qtype_name(unsigned slot);

enum rrc_rcode_slot {
	RRC_RC_NOERROR,
	RRC_RC_FORMERR,
	RRC_RC_SERVFAIL,
	RRC_RC_NXDOMAIN,
	RRC_RC_NOTIMP,
	RRC_RC_REFUSED,
	RRC_RC_BADVERS,
	RRC_RC_OTHER,
	RRC_RC_COUNT
};
unsigned rrc_stats_rcode_slot(unsigned rcode);
const char *rrc_stats_rcode_name(unsigned slot);

/* ---- the counters of one worker ---- */

/* One upstream server (by its position in the configuration) as one worker sees it. */
struct rrc_upstream_stats {
	uint64_t queries, timeouts, errors;
	uint64_t outstanding;	  /* gauge */
	uint64_t up;		  /* gauge: 1 when this worker counts it up */
	uint64_t tls_handshakes;  /* TLS upstreams: handshakes completed */
	uint64_t tls_resumed;	  /* of those, resumed with a session ticket */
	uint64_t tls_connections; /* gauge: TLS connections open */
	struct rrc_hist rtt;
};

/*
 * Written only by the worker's thread, plain uint64_t all through (no lock, no atomic on the
 * query path); a reader sums the workers' structs word by word (rrc_server_sum_stats), so a
 * scrape may see a counter one increment behind, never a torn one on a 64-bit machine.
 */
struct rrc_worker_stats {
	uint64_t queries_udp, queries_tcp, queries_dot, queries_doh;
	struct rrc_doh_refusals doh_refused; /* DNS over HTTPS requests refused, by status */
	uint64_t doh_no_h2;		     /* listen_https clients that did not agree on HTTP/2 */
	uint64_t doh_protocol_errors;	     /* connections closed for an HTTP/2 protocol error */
	uint64_t dot_handshakes, dot_resumed; /* DNS over TLS clients: handshakes completed */
	uint64_t dot_handshake_failures, dot_handshake_timeouts;
	uint64_t dot_handshake_refused; /* over tls.handshakes_per_client */
	uint64_t qtype[RRC_QT_COUNT];	/* queries that passed the checks, by type */
	uint64_t rcode[RRC_RC_COUNT];	/* answers sent, by rcode */
	uint64_t answered;
	uint64_t cache_hits, cache_misses, stale_served;
	uint64_t cache_insert_failures; /* answers L1 could not take (memory, or too big) */
	uint64_t coalesced;
	uint64_t malformed[RRC_WR_COUNT];
	uint64_t formerr, notimp, badvers, servfail, truncated;
	uint64_t acl_dropped, acl_refused;
	/* Policy: answers decided by a list (index in load order: blocklists, then allowlists). */
	uint64_t policy_blocked[RRC_POLICY_MAX_LISTS], policy_allowed[RRC_POLICY_MAX_LISTS];
	/* ... and blocked by the client's group: [0] the default group, [1 + i] policy.groups[i].
	 */
	uint64_t policy_blocked_group[1 + RRC_POLICY_MAX_GROUPS];
	uint64_t ratelimit_dropped, ratelimit_slipped; /* UDP queries over ratelimit.qps */
	uint64_t dynblock_queries[3];	 /* queries of blocked prefixes, by dynblock.action */
	uint64_t any_udp;		 /* ANY over UDP answered per RFC 8482 (policy.any_udp) */
	uint64_t local_answers[3];	 /* answered from local data, by enum rrc_local_source */
	uint64_t prefetches;		 /* refreshes started by a late hit (cache.prefetch) */
	uint64_t prefetch_fleet_skipped; /* of those, left to the instance holding the lock */
	uint64_t upstream_queries, upstream_tcp, upstream_timeouts, upstream_errors;
	uint64_t unwanted_replies, malformed_replies;
	uint64_t upstream_local_errors; /* upstream queries this machine could not send */
	uint64_t upstream_sockets;	/* gauge: UDP sockets to upstreams open now */
	uint64_t upstream_sockets_opened;
	uint64_t udp_send_dropped;
	uint64_t tcp_accepted, tcp_refused_limit, tcp_refused_acl, tcp_closed_idle;
	uint64_t tcp_open; /* gauge */
	uint64_t inflight_limit;
	uint64_t waiters_refused; /* clients refused by max_waiters(_per_query) */
	/* The Redis tier (L2) */
	uint64_t redis_hits, redis_misses, redis_expired, redis_bad_values;
	uint64_t redis_errors, redis_timeouts, redis_skipped;
	uint64_t redis_sets, redis_fleet_waits, redis_breaker_opens;
	uint64_t redis_protocol_errors;	    /* connections dropped for what the server sent */
	uint64_t redis_up;		    /* gauge: the data connection is ready */
	uint64_t redis_master_changes;	    /* Sentinel: failovers followed */
	uint64_t redis_sentinel_up;	    /* gauge: subscribed to a sentinel's failovers */
	uint64_t redis_moved, redis_ask;    /* Cluster: redirects followed */
	uint64_t redis_cluster_unavailable; /* Cluster: TRYAGAIN, CLUSTERDOWN */
	uint64_t redis_cluster_maps;	    /* Cluster: slot maps read */
	uint64_t dnstap_sent, dnstap_dropped;
	struct rrc_hist latency; /* client-visible: from the datagram's arrival to the answer */
	struct rrc_upstream_stats up[RRC_BALANCER_MAX];
};

/* ---- rendering ---- */

/* Everything a scrape shows, gathered by the caller (http) from the workers and the cache. */
struct rrc_stats_view {
	const struct rrc_worker_stats *sum; /* summed over the workers */
	const struct rrc_cache_stats *cache;
	unsigned n_workers;
	unsigned n_upstreams;
	const char *const *upstream_names; /* "192.0.2.1:53", one per upstream */
	const char *const *upstream_pools; /* the pool of each ("default", upstream.pools) */
	bool redis_enabled;
	const char *version, *libuv_version, *ldns_version;
	double uptime_s;
	unsigned top_k;
	const struct rrc_topk *top[RRC_TOP_CATS][2]; /* [cat][0 = last minute, 1 = last hour] */
	const struct rrc_policy_list_info *lists;    /* the policy's lists in force, n_lists */
	size_t n_lists;
	const char *const *group_names; /* policy.groups' names, n_groups */
	unsigned n_groups;
	struct rrc_dynblock_totals dynblock; /* what the dynamic blocks have done */
	size_t dynblock_active;		     /* blocks in force */
};

/* Prometheus text format 0.0.4: every family with # HELP and # TYPE, rrcache_ prefix, base
 * units, labels from bounded sets only (the top-K family is capped at top_k per table). */
void rrc_stats_prometheus(const struct rrc_stats_view *v, struct rrc_buf *b);
/* GET /api/v1/stats, /api/v1/upstreams, /api/v1/top (window: 0 minute, 1 hour). */
void rrc_stats_json(const struct rrc_stats_view *v, struct rrc_buf *b);
void rrc_stats_json_upstreams(const struct rrc_stats_view *v, struct rrc_buf *b);
void rrc_stats_json_top(const struct rrc_stats_view *v, int window, struct rrc_buf *b);

/* GET /api/v1/blocks: the n blocks of e (of total in force) at now_ms, with wall-clock
 * times from wall_now (seconds since the epoch at now_ms). */
void rrc_stats_json_blocks(const struct rrc_dynblock_entry *e, size_t n, size_t total,
			   uint64_t now_ms, double wall_now, struct rrc_buf *b);

/* A top-K key as text: a name in presentation format, or a client address. */
size_t rrc_stats_key_text(enum rrc_top_cat cat, const struct rrc_topk_entry *e, char *out,
			  size_t cap);

#endif
