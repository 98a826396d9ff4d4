/*
 * config: YAML file + command-line flags -> one immutable, validated struct rrc_config.
 *
 * Every default lives in one table (rrc_config_defaults in config.c). Errors name the file,
 * line and column, and the key ("rrcache.yaml:12:5: cache.size: bad size 'lots'").
 * After rrc_config_build() returns, the struct is never written again: a reload builds a new
 * one and swaps pointers (see server.h). The caller owns it; free with rrc_config_free().
 */
#ifndef RRCACHE_CONFIG_H
#define RRCACHE_CONFIG_H

#include "rrcache/acl.h"
#include "rrcache/addr.h"
#include "rrcache/balancer.h"
#include "rrcache/defs.h"
#include "rrcache/log.h"
#include "rrcache/policy.h"
#include "rrcache/dynblock.h"
#include "rrcache/local.h"
#include "rrcache/ratelimit.h"
#include "rrcache/route.h"
#include "rrcache/tls.h"

/* Limits of the configuration itself, sized far above any real deployment. */
#define RRC_MAX_LISTEN 64
#define RRC_MAX_UPSTREAMS RRC_BALANCER_MAX
#define RRC_MAX_ACL_RULES 4096
#define RRC_MAX_WORKERS 256
#define RRC_MAX_UPSTREAM_SOCKETS 64

/* The port of DNS over TLS (RFC 7858 §3.1), and TLS connections per worker and upstream at
 * most. */
#define RRC_DOT_PORT 853
#define RRC_MAX_TLS_CONNS 16

struct rrc_upstream_conf {
	struct rrc_sockaddr addr;
	uint32_t weight;
	bool tls;	    /* DNS over TLS: tls://ADDR[:853][#NAME], or tls: true */
	char tls_name[256]; /* the name its certificate must have (also SNI): #NAME, its host
			       name, or its address */
	uint8_t pins[RRC_TLS_MAX_PINS][RRC_TLS_PIN_LEN]; /* SPKI SHA-256 pins; none: not pinned */
	unsigned n_pins;
};

/* Upstream pools chosen by domain (upstream.pools, --forward), besides the default one. */
#define RRC_MAX_POOLS 16
/* --forward options on one command line. */
#define RRC_MAX_FORWARD 64

/* A pool: its servers are upstreams[first, first + n) of the configuration. */
struct rrc_forward_pool {
	char name[32];
	enum rrc_balance balance;
	bool balance_given; /* internal: else upstream.policy */
	uint16_t first, n;
	uint64_t ns; /* what keeps its Redis keys apart from other pools' (0: the default) */
};

/* The Redis tier (L2), shared by a fleet of instances. enabled when a URL was given. */
/* Sentinels, or cluster seed nodes, one instance may be given. */
#define RRC_REDIS_MAX_SENTINELS 8

struct rrc_redis_conf {
	bool enabled;
	bool unix_socket;
	char host[64]; /* numeric address (a host name is resolved when the config is built) */
	uint16_t port;
	char path[108]; /* unix socket */
	uint32_t db;
	char user[64];
	char password[256];
	uint32_t timeout_ms;	     /* deadline of one command on the query's path */
	uint32_t connect_timeout_ms; /* of one connection attempt */
	uint32_t max_pending;	     /* commands in flight per worker; beyond, skip Redis */
	uint32_t max_failures;	     /* consecutive errors/timeouts that open the breaker */
	uint32_t backoff_min_ms, backoff_max_ms; /* reconnect delays while it is open */
	bool fleet_coalescing;			 /* one instance fetches, the others wait */
	uint32_t fleet_wait_ms;			 /* how long the others wait */
	char key_prefix[64];
	char key_secret[256]; /* shared by the fleet: keys are a keyed hash of the question */
	/* Redis Sentinel: the master's address comes from these (each a numeric address and
	 * port; host, port, path above are unused), asked for master_name. */
	unsigned n_sentinels;
	struct rrc_redis_addr {
		char host[64];
		uint16_t port;
	} sentinels[RRC_REDIS_MAX_SENTINELS];
	/* Redis Cluster: the seed nodes asked for the slot map (the url's host when none). */
	bool cluster;
	unsigned n_seeds;
	struct rrc_redis_addr seeds[RRC_REDIS_MAX_SENTINELS];
	char master_name[64];
	char sentinel_password[256];
	/* redis.db and redis.user, for Sentinel (a url carries its own): UINT32_MAX and ""
	 * when not given. */
	uint32_t db_key;
	char user_key[64];
};

/* The statistics endpoint (HTTP: /metrics, /api/v1/..., the dashboard). */
struct rrc_stats_conf {
	bool enabled; /* stats.listen not "off" */
	struct rrc_sockaddr listen;
	struct rrc_acl_rule *allow; /* who may connect (default: loopback) */
	size_t n_allow;
	char token[128]; /* writes (flush, reset) need "Authorization: Bearer <token>"; "" = none */
	uint32_t max_connections;
	uint32_t top_k;	     /* entries shown per top-K table */
	uint32_t top_sample; /* 1 query in top_sample is counted in the top-K (a power of two) */
};

/* The dnstap query log (one of file or socket). */
struct rrc_dnstap_conf {
	bool enabled;
	char file[256];
	char socket[108];
	char identity[256];  /* "" = the host name */
	uint32_t queue_size; /* per worker, a power of two */
	bool client_queries, client_responses, forwarder_queries, forwarder_responses;
};

/* What a blocked name is answered. */
enum rrc_block_response {
	RRC_BLOCK_NXDOMAIN = 0, /* NXDOMAIN, with an SOA giving block_ttl for negative caching */
	RRC_BLOCK_NODATA,	/* NOERROR, no answer, the same SOA */
	RRC_BLOCK_NULL,		/* A 0.0.0.0 / AAAA ::, NODATA for other types */
	RRC_BLOCK_REFUSED,	/* REFUSED */
};

/* What an ANY query over UDP gets (RFC 8482). */
enum rrc_any_udp {
	RRC_ANY_HINFO = 0, /* one synthesized HINFO "RFC8482" "" (RFC 8482 §4.2) */
	RRC_ANY_TC,	   /* TC=1: ask again over TCP, where ANY is forwarded */
	RRC_ANY_FORWARD,   /* forwarded like any other type */
};

/* Client groups of the policy: named sets of client networks with lists of their own. */
#define RRC_POLICY_GROUP_LISTS 8
struct rrc_policy_group {
	char name[32];
	struct rrc_acl_rule *clients; /* networks (the longest prefix over all groups decides) */
	size_t n_clients;
	char *blocklists[RRC_POLICY_GROUP_LISTS]; /* in addition to the global ones */
	unsigned n_block;
	char *allowlists[RRC_POLICY_GROUP_LISTS];
	unsigned n_allow;
	bool use_global; /* the global lists apply too (default true) */
	uint64_t mask;	 /* the matcher's lists that apply (rrc_config_load_policy) */
};

/* Domain block and allow lists (policy.h). The matcher is loaded from the files by
 * rrc_config_load_policy(), not by rrc_config_build(). */
struct rrc_policy_conf {
	char *blocklists[RRC_POLICY_MAX_LISTS]; /* paths, owned */
	unsigned n_block;
	char *allowlists[RRC_POLICY_MAX_LISTS];
	unsigned n_allow;
	enum rrc_block_response response;
	uint32_t block_ttl;
	enum rrc_any_udp any_udp;
	struct rrc_policy_group groups[RRC_POLICY_MAX_GROUPS];
	unsigned n_groups;
	uint64_t default_mask;	    /* lists of a client in no group: the global ones */
	struct rrc_policy *matcher; /* one reference, or NULL (no lists) */
};

/* The group of a client (longest prefix over every group's networks): its index, or -1 for
 * the default group. */
int rrc_policy_conf_group(const struct rrc_policy_conf *pc, const struct sockaddr *sa);
/* The lists that apply to a client of group (rrc_policy_conf_group): a mask for
 * rrc_policy_check. */
uint64_t rrc_policy_conf_mask(const struct rrc_policy_conf *pc, int group);

struct rrc_config {
	char *path;	  /* the file it came from, or NULL */
	unsigned workers; /* 0 in the file means one per CPU; resolved here */
	char user[64];	  /* once the sockets are bound, run as this user ("": stay) */
	char group[64];	  /* and this group ("": the user's)*/

	struct rrc_sockaddr listen[RRC_MAX_LISTEN];
	unsigned n_listen;
	struct rrc_sockaddr listen_tls[RRC_MAX_LISTEN]; /* DNS over TLS for clients (port 853) */
	unsigned n_listen_tls;
	struct rrc_sockaddr listen_https[RRC_MAX_LISTEN]; /* DNS over HTTPS (port 443) */
	unsigned n_listen_https;

	struct rrc_upstream_conf
		upstreams[RRC_MAX_UPSTREAMS]; /* every pool's, the default's first */
	unsigned n_upstreams;
	bool upstreams_from_resolv_conf;
	/* pools[0] is the default (upstream.servers); route maps each other pool's domains to its
	 * index (NULL: none). */
	struct rrc_forward_pool pools[1 + RRC_MAX_POOLS];
	unsigned n_pools;
	struct rrc_route *route;
	struct rrc_upstream_conf pool_servers[RRC_MAX_UPSTREAMS]; /* internal: while reading */
	unsigned n_pool_servers;
	enum rrc_balance balance;     /* upstream.policy */
	bool trust_ad;		      /* keep the AD bit of upstream answers (RFC 4035 §4.6) */
	uint32_t upstream_timeout_ms; /* one attempt */
	uint32_t client_timeout_ms;   /* the client's whole budget */
	uint32_t max_failures;	      /* consecutive, before an upstream is marked down */
	uint32_t probe_interval_ms;
	uint32_t probe_successes;	/* good probes before it is up again */
	uint32_t max_inflight;		/* upstream queries in flight per worker */
	uint32_t upstream_sockets;	/* UDP sockets open at once per upstream and worker */
	uint32_t socket_reuse;		/* queries one such socket carries (1: one per query) */
	uint32_t socket_lifetime_ms;	/* and how long it is used at most */
	uint32_t max_waiters_per_query; /* clients waiting on one query in flight */
	uint32_t max_waiters;		/* clients waiting, per worker */
	uint32_t tls_connections;	/* per worker and TLS upstream */
	uint32_t tls_max_inflight;	/* queries in flight on one TLS connection */
	uint32_t tls_idle_timeout_ms;	/* an idle TLS connection closes (or at the server's
					   EDNS keepalive, RFC 7828, if shorter) */
	struct {
		char ca_file[256];   /* trust store for TLS upstreams ("": the system's) */
		bool insecure;	     /* no verification at all (tests only; logged) */
		char cert_file[256]; /* listen_tls: the certificate chain (PEM) */
		char key_file[256];  /* and its key */
		uint32_t handshake_timeout_ms;	/* a client's handshake must end within it */
		uint32_t handshakes_per_client; /* a second, per client address (0: no limit) */
	} tls;
	struct rrc_tls_creds *tls_client; /* built when an upstream uses TLS; owned */
	struct rrc_tls_creds *tls_server; /* built when listen_tls is set (each reload reads the
					     files again); owned */

	uint64_t cache_size;
	uint32_t min_ttl, max_ttl, max_negative_ttl;
	bool serve_stale;      /* RFC 8767: answer from expired data when the refresh fails */
	uint32_t max_stale;    /* seconds past expiry such data may be served */
	uint32_t servfail_ttl; /* a name whose upstream queries all failed: SERVFAIL this long */
	char cache_save_file[256];  /* L1 written here at a stop and read at a start ("": off) */
	bool prefetch;		    /* refresh popular entries late in their life */
	uint32_t prefetch_min_hits; /* hits in an entry's life that make it popular */

	uint32_t tcp_idle_timeout_ms;
	uint32_t tcp_max_connections;
	uint32_t tcp_max_per_client;
	uint32_t tcp_max_queries;

	struct rrc_acl_rule *acl_rules;
	size_t n_acl_rules;
	enum rrc_acl_action acl_action;

	enum rrc_log_level log_level;
	enum rrc_log_target log_target; /* where lines go (a restart changes it) */
	enum rrc_log_format log_format; /* text or JSON lines (stderr and file) */
	char log_file[256];		/* the file of log.target: file, reopened on SIGHUP */

	struct rrc_redis_conf redis;
	struct rrc_stats_conf stats;
	struct rrc_dnstap_conf dnstap;
	struct rrc_policy_conf policy;
	struct {
		char **records;			    /* local.records, as written */
		uint32_t *record_line, *record_col; /* where each was written, for errors */
		unsigned n_records;
		char **hosts_files;
		unsigned n_hosts_files;
		char domain[256];	/* qualifies the hosts files' names without a dot */
		uint32_t ttl;		/* of hosts-file records and of a NODATA's SOA */
		bool private_reverse;	/* the empty zones of RFC 6303 and home.arpa */
		struct rrc_local *data; /* all of it, built with the configuration (NULL: none) */
		unsigned hosts_names, hosts_skipped; /* what the hosts files gave */
	} local;
	struct {
		struct rrc_ratelimit_conf table; /* qps 0: off */
		uint32_t slip;			 /* 1 limited answer in slip is TC=1 (0: none) */
		struct rrc_acl_rule *exempt;	 /* networks never limited */
		size_t n_exempt;
	} ratelimit;
	struct {
		uint32_t nxdomain_rate, miss_rate; /* a second over the window (0: not watched) */
		uint32_t window_ms, duration_ms;
		enum rrc_dynblock_action action;
		uint32_t watched, max_blocks; /* the tables' sizes (fixed at start) */
	} dynblock;
	bool stats_allow_given; /* internal: the file listed stats.allow */
	bool no_lookups; /* internal: host names refused, not resolved (rrc_config_overrides) */
};

/* Command-line values that override the file. NULL / 0 = not given. */
struct rrc_config_overrides {
	const char *listen[RRC_MAX_LISTEN];
	unsigned n_listen;
	const char *upstream[RRC_MAX_UPSTREAMS];
	unsigned n_upstream;
	const char *cache_size;
	const char *log_level;
	const char *log_target;
	const char *log_format;
	const char *log_file; /* implies log.target: file unless a target is given */
	const char *forward[RRC_MAX_FORWARD]; /* --forward DOMAIN=ADDR[,ADDR]: replaces pools */
	unsigned n_forward;
	const char *blocklist[RRC_POLICY_MAX_LISTS]; /* --blocklist: replaces policy.blocklists */
	unsigned n_blocklist;
	const char *allowlist[RRC_POLICY_MAX_LISTS]; /* --allowlist: replaces policy.allowlists */
	unsigned n_allowlist;
	const char *redis_password_file;
	const char *redis_key_secret_file;
	const char *stats_token_file;
	const char *workers;
	const char *resolv_conf; /* where to read nameservers; default /etc/resolv.conf */
	const char *redis_url;
	const char *metrics;			 /* --metrics ADDR:PORT or off */
	const char *stats_allow[RRC_MAX_LISTEN]; /* --stats-allow CIDR: replaces stats.allow */
	unsigned n_stats_allow;
	const char *cgroup_dir; /* where cpu.max is read (tests); default: this process's cgroup */
	bool no_lookups; /* host names are refused instead of resolved (the config fuzz target) */
};

/* CPUs this process may use (workers: 0): its CPU affinity, lowered to the cgroup v2 CPU quota
 * (cpu.max, rounded up) of cgroup_dir, or of its own cgroup when NULL. At least 1. */
unsigned rrc_config_cpus(const char *cgroup_dir);

/*
 * Builds a config: defaults, then the file (when path is not NULL), then the overrides, then
 * validation. Returns NULL and writes the reason into err on any error.
 */
struct rrc_config *rrc_config_build(const char *path, const struct rrc_config_overrides *ov,
				    char err[RRC_ERR_LEN]);
void rrc_config_free(struct rrc_config *cfg);

/*
 * Loads cfg's block and allow lists into cfg->policy.matcher (nothing without lists). When a
 * list cannot be read and previous is given (a reload), previous's matcher is kept instead and
 * -1 is returned with the reason in err, cfg still usable; without previous (the start), -1
 * means the configuration cannot be used. Unreadable lines are reported into report (first
 * few, file:line: why). Blocking (reads files): call it on main's thread, never a worker's.
 */
int rrc_config_load_policy(struct rrc_config *cfg, const struct rrc_config *previous, char *report,
			   size_t report_cap, char err[RRC_ERR_LEN]);

/* Descriptors rrcache keeps for itself whatever the load: listening sockets, epoll sets,
 * eventfds, Redis and HTTP connections, the query log, files (a generous count). */
#define RRC_FD_RESERVE(workers, listen) (64 + (workers) * (8 + 2 * (listen)))
/* Descriptors an upstream query in flight may hold: its first attempt and one retry sent
 * while the first stays open (more are rare: a retry comes only each upstream.timeout). */
#define RRC_FD_PER_INFLIGHT 2

/*
 * Fits the limits of cfg to a process allowed fd_limit descriptors: tcp.max_connections and
 * upstream.max_inflight (per worker) are lowered where all of them at once would not fit, so
 * that a burst ends in counted refusals rather than failed sockets. Writes what was chosen
 * into note (empty when nothing changed). Call before the configuration is used.
 */
void rrc_config_fit_descriptors(struct rrc_config *cfg, uint64_t fd_limit, char *note, size_t cap);

/* The pool the name (lowercased wire form) is forwarded to: an index into cfg->pools. */
static inline unsigned rrc_config_pool_of(const struct rrc_config *cfg, const uint8_t *name,
					  size_t len)
{
	int p = rrc_route_find(cfg->route, name, len, NULL);
	return p > 0 && (unsigned)p < cfg->n_pools ? (unsigned)p : 0;
}

/* The pool upstream server i belongs to. */
unsigned rrc_config_pool_of_server(const struct rrc_config *cfg, unsigned i);

/* "64MiB", "1GB", "4096", "512KiB" -> bytes. Returns 0 or -EINVAL. */
int rrc_config_parse_size(const char *s, uint64_t *out);
/* "1s", "500ms", "2m", "1h", "250" (ms) -> milliseconds. Returns 0 or -EINVAL. */
int rrc_config_parse_duration_ms(const char *s, uint64_t *out);
/*
 * "redis://[user:password@]host[:port][/db]" or "unix:///path/to/socket[?db=N]" -> rc (enabled,
 * address, db, and the credentials when the URL has them (else those of password_file stay);
 * the other fields untouched). A host name is resolved here.
 * Returns 0, or -EINVAL with the reason in err (never containing the password).
 */
int rrc_config_parse_redis_url(const char *url, struct rrc_redis_conf *rc, char err[RRC_ERR_LEN]);

#endif
