/*
 * config: libyaml document -> struct rrc_config. See include/rrcache/config.h.
 *
 * The file is read with libyaml's document API; every node carries its start mark, which gives
 * the line and column of errors. Keys are looked up in static tables (one per section); a key
 * not in its table is an error, so a typo never passes silently.
 */
#include "rrcache/config.h"
#include "rrcache/msg.h"
#include "rrcache/stats.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <errno.h>
#include <ifaddrs.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

/* The one table of defaults. Lists (listen, upstreams, ACL) are filled in finalize(). */
static const struct rrc_config rrc_config_defaults = {
	.workers = 0,
	.balance = RRC_POLICY_ROUND_ROBIN,
	.pools = {{.name = "default"}},
	.n_pools = 1,
	.upstream_timeout_ms = 1000,
	.client_timeout_ms = 2000,
	.max_failures = 3,
	.probe_interval_ms = 1000,
	.probe_successes = 2,
	.max_inflight = 10000,
	.upstream_sockets = 8,
	.socket_reuse = 256,
	.socket_lifetime_ms = 10000,
	.max_waiters_per_query = 100,
	.max_waiters = 20000,
	.tls_connections = 2,
	.tls_max_inflight = 128,
	.tls_idle_timeout_ms = 10000,
	.tls = {.handshake_timeout_ms = 5000, .handshakes_per_client = 20},
	.cache_size = 64ull << 20,
	.min_ttl = 0,
	.max_ttl = 86400,
	.max_negative_ttl = 3600,
	.serve_stale = false,
	.max_stale = 86400,
	.servfail_ttl = 5,
	.prefetch = true,
	.prefetch_min_hits = 3,
	.tcp_idle_timeout_ms = 10000,
	.tcp_max_connections = 1024,
	.tcp_max_per_client = 64,
	.tcp_max_queries = 1000,
	.acl_action = RRC_ACL_DROP,
	.log_level = RRC_LOG_INFO,
	.redis =
		{
			.port = 6379,
			.timeout_ms = 20,
			.connect_timeout_ms = 1000,
			.max_pending = 1000,
			.max_failures = 5,
			.backoff_min_ms = 100,
			.backoff_max_ms = 10000,
			.fleet_coalescing = true,
			.fleet_wait_ms = 200,
			.key_prefix = "rrc:",
			.db_key = UINT32_MAX,
		},
	.policy = {.response = RRC_BLOCK_NXDOMAIN, .block_ttl = 60},
	.ratelimit = {.table = {.qps = 0,
				.burst = 0,
				.v4_prefix = 24,
				.v6_prefix = 56,
				.table_size = 65536},
		      .slip = 2},
	.local = {.ttl = 60, .private_reverse = true},
	.dynblock = {.nxdomain_rate = 0,
		     .miss_rate = 0,
		     .window_ms = 10000,
		     .duration_ms = 60000,
		     .action = RRC_DB_DROP,
		     .watched = 4096,
		     .max_blocks = 1024},
	.stats =
		{
			.enabled = true,
			.max_connections = 32,
			.top_k = 10,
			.top_sample = 8,
		},
	.dnstap =
		{
			.queue_size = 4096,
			.client_queries = true,
			.client_responses = true,
			.forwarder_queries = true,
			.forwarder_responses = true,
		},
};

static const char default_stats_listen[] = "127.0.0.1:9153";
static const char *const default_stats_allow[] = {"127.0.0.0/8", "::1/128"};

static const char *const default_listen[] = {"127.0.0.1:53", "[::1]:53"};

/* ---- scalar parsers ---- */

struct unit {
	const char *suffix;
	uint64_t mult;
};

/* A whole number followed by one of the units (spaces allowed between them only when
 * space_ok). Returns 0 or -EINVAL, also on overflow. */
static int parse_with_units(const char *s, const struct unit *units, size_t n, bool space_ok,
			    uint64_t *out)
{
	char *end;
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	while (space_ok && *end == ' ')
		end++;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			if (v > UINT64_MAX / units[i].mult)
				return -EINVAL;
			*out = v * units[i].mult;
			return 0;
		}
	}
	return -EINVAL;
}

int rrc_config_parse_size(const char *s, uint64_t *out)
{
	static const struct unit units[] = {
		{"", 1},	   {"B", 1},	       {"k", 1000},
		{"K", 1000},	   {"KB", 1000},       {"KiB", 1ull << 10},
		{"M", 1000000},	   {"MB", 1000000},    {"MiB", 1ull << 20},
		{"G", 1000000000}, {"GB", 1000000000}, {"GiB", 1ull << 30}};
	return parse_with_units(s, units, RRC_ARRAY_SIZE(units), true, out);
}

int rrc_config_parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct unit units[] = {{"", 1},	  {"ms", 1},	  {"s", 1000},
					    {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
	return parse_with_units(s, units, RRC_ARRAY_SIZE(units), false, out);
}

/* The first line of a file (a password or a secret), without its newline. */
static int read_secret_file(const char *file, char *out, size_t cap, char *err)
{
	FILE *f = fopen(file, "r");
	if (!f) {
		snprintf(err, RRC_ERR_LEN, "%.100s: %s", file, strerror(errno));
		return -EINVAL;
	}
	char line[512];
	bool ok = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	if (!ok) {
		snprintf(err, RRC_ERR_LEN, "%.100s is empty", file);
		return -EINVAL;
	}
	line[strcspn(line, "\r\n")] = '\0';
	if (line[0] == '\0' || strlen(line) >= cap) {
		snprintf(err, RRC_ERR_LEN, "%.100s: want one line of 1 to %zu bytes", file,
			 cap - 1);
		return -EINVAL;
	}
	memcpy(out, line, strlen(line) + 1);
	return 0;
}

/* Percent-decodes s[0..n) into out (cap bytes, NUL-terminated). Returns 0 or -EINVAL. */
static int url_unescape(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '%') {
			char hex[3] = {0};
			if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
			    !isxdigit((unsigned char)s[i + 2]))
				return -EINVAL;
			memcpy(hex, s + i + 1, 2);
			ch = (unsigned char)strtoul(hex, NULL, 16);
			i += 2;
		}
		if (ch == '\0' || o + 1 >= cap)
			return -EINVAL;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return 0;
}

static int parse_db(const char *s, uint32_t *db)
{
	char *e;
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	unsigned long v = strtoul(s, &e, 10);
	if (*e || errno || v > 65535)
		return -EINVAL;
	*db = (uint32_t)v;
	return 0;
}

/* The first address of host (a name, or only an address when lookups is false) with port,
 * into out. 0, or -EINVAL with "cannot resolve <what>'host': why" in err. */
static int lookup_host(const char *host, uint16_t port, bool lookups, int socktype,
		       const char *what, struct rrc_sockaddr *out, char err[RRC_ERR_LEN])
{
	struct addrinfo hints = {.ai_socktype = socktype, .ai_flags = lookups ? 0 : AI_NUMERICHOST},
			*ai = NULL;
	int gai = getaddrinfo(host, NULL, &hints, &ai);
	if (gai != 0 || !ai) {
		snprintf(err, RRC_ERR_LEN, "cannot resolve %s'%.60s': %s", what, host,
			 gai != 0 ? gai_strerror(gai) : "no address");
		return -EINVAL;
	}
	memset(out, 0, sizeof(*out));
	memcpy(&out->ss, ai->ai_addr, ai->ai_addrlen);
	out->len = ai->ai_addrlen;
	if (out->sa.sa_family == AF_INET)
		out->sin.sin_port = htons(port);
	else
		out->sin6.sin6_port = htons(port);
	freeaddrinfo(ai);
	return 0;
}

static int parse_redis_url(const char *url, struct rrc_redis_conf *rc, bool lookups,
			   char err[RRC_ERR_LEN])
{
	static const char tcp[] = "redis://", unx[] = "unix://";
	rc->db = 0;
	if (strncmp(url, unx, sizeof(unx) - 1) == 0) {
		const char *p = url + sizeof(unx) - 1;
		const char *q = strchr(p, '?');
		size_t n = q ? (size_t)(q - p) : strlen(p);
		if (p[0] != '/' || url_unescape(p, n, rc->path, sizeof(rc->path))) {
			snprintf(err, RRC_ERR_LEN, "bad unix socket path (want unix:///path?db=N)");
			return -EINVAL;
		}
		if (q && (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &rc->db))) {
			snprintf(err, RRC_ERR_LEN, "bad query '%.40s' (want ?db=N)", q);
			return -EINVAL;
		}
		rc->unix_socket = true;
		rc->enabled = true;
		return 0;
	}
	if (strncmp(url, tcp, sizeof(tcp) - 1) != 0) {
		snprintf(err, RRC_ERR_LEN,
			 "want redis://[user:password@]host[:port][/db] or unix:///path[?db=N]");
		return -EINVAL;
	}
	const char *p = url + sizeof(tcp) - 1;
	const char *slash = strchr(p, '/');
	const char *end = slash ? slash : p + strlen(p);
	const char *at = NULL;
	for (const char *x = p; x < end; x++) {
		if (*x == '@')
			at = x;
	}
	if (at) {
		/* redis://user:password@host, or redis://password@host (AUTH with a password
		 * alone, as before Redis 6). */
		const char *colon = memchr(p, ':', (size_t)(at - p));
		int bad =
			colon ? url_unescape(p, (size_t)(colon - p), rc->user, sizeof(rc->user)) ||
					url_unescape(colon + 1, (size_t)(at - colon - 1),
						     rc->password, sizeof(rc->password))
			      : url_unescape(p, (size_t)(at - p), rc->password,
					     sizeof(rc->password));
		if (bad) {
			snprintf(err, RRC_ERR_LEN, "bad user or password in the URL");
			return -EINVAL;
		}
		p = at + 1;
	}
	char host[256];
	uint16_t port = 6379;
	const char *hend = end;
	if (p[0] == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));
		if (!close || (size_t)(close - p - 1) >= sizeof(host)) {
			snprintf(err, RRC_ERR_LEN, "bad IPv6 address in the URL");
			return -EINVAL;
		}
		memcpy(host, p + 1, (size_t)(close - p - 1));
		host[close - p - 1] = '\0';
		hend = close + 1;
		if (hend < end && *hend != ':') {
			snprintf(err, RRC_ERR_LEN, "bad address in the URL");
			return -EINVAL;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		hend = colon ? colon : end;
		if ((size_t)(hend - p) >= sizeof(host) || hend == p) {
			snprintf(err, RRC_ERR_LEN, "bad host in the URL");
			return -EINVAL;
		}
		memcpy(host, p, (size_t)(hend - p));
		host[hend - p] = '\0';
	}
	if (hend < end && *hend == ':') {
		char ps[8];
		size_t n = (size_t)(end - hend - 1);
		if (n == 0 || n >= sizeof(ps)) {
			snprintf(err, RRC_ERR_LEN, "bad port in the URL");
			return -EINVAL;
		}
		memcpy(ps, hend + 1, n);
		ps[n] = '\0';
		if (rrc_addr_parse_port(ps, &port)) {
			snprintf(err, RRC_ERR_LEN, "bad port '%s' in the URL", ps);
			return -EINVAL;
		}
	}
	if (slash && slash[1] && parse_db(slash + 1, &rc->db)) {
		snprintf(err, RRC_ERR_LEN, "bad database number '%.20s' in the URL", slash + 1);
		return -EINVAL;
	}
	/* hiredis would resolve a name on the event loop; resolve it once here instead. */
	struct rrc_sockaddr a;
	if (lookup_host(host, port, lookups, SOCK_STREAM, "Redis host ", &a, err))
		return -EINVAL;
	inet_ntop(a.sa.sa_family,
		  a.sa.sa_family == AF_INET ? (const void *)&a.sin.sin_addr
					    : (const void *)&a.sin6.sin6_addr,
		  rc->host, sizeof(rc->host));
	rc->port = port;
	rc->unix_socket = false;
	rc->enabled = true;
	return 0;
}

int rrc_config_parse_redis_url(const char *url, struct rrc_redis_conf *rc, char err[RRC_ERR_LEN])
{
	return parse_redis_url(url, rc, true, err);
}

static int parse_stats_listen(const char *s, struct rrc_stats_conf *st)
{
	if (strcmp(s, "off") == 0 || s[0] == '\0') {
		st->enabled = false;
		return 0;
	}
	if (rrc_addr_parse(s, 9153, &st->listen))
		return -EINVAL;
	st->enabled = true;
	return 0;
}

/* ---- the YAML walk ---- */

enum kind {
	K_SECTION,
	K_UINT,	    /* uint32_t */
	K_SIZE,	    /* uint64_t bytes */
	K_DURATION, /* uint32_t milliseconds */
	K_TTL,	    /* uint32_t seconds: a number, or a duration with a unit */
	K_BOOL,	    /* bool: true/false, yes/no, on/off */
	K_POLICY,
	K_ACL_ACTION,
	K_LOG_LEVEL,
	K_LOG_TARGET,
	K_LOG_FORMAT,
	K_LISTEN,
	K_LISTEN_TLS,
	K_LISTEN_HTTPS,
	K_SERVERS,
	K_ALLOW,
	K_DENY,
	K_STRING,      /* char[max] at off: a string of at most max - 1 bytes */
	K_REDIS_URL,   /* redis.url */
	K_SENTINELS,   /* redis.sentinels */
	K_SEEDS,       /* redis.nodes */
	K_SECRET_FILE, /* char[max] at off, read from the file named by the value */
	K_STATS_LISTEN,
	K_STATS_ALLOW,
	K_BLOCKLISTS,
	K_ALLOWLISTS,
	K_BLOCK_RESPONSE,
	K_GROUPS,
	K_ANY_UDP,
	K_DB_ACTION,
	K_POOLS,
	K_RECORDS,
	K_HOSTS_FILES,
	K_EXEMPT,
	K_POW2, /* uint32_t, a power of two in [min, max] */
};

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	uint64_t min, max;
	const struct key *sub;
};

#define F(field) offsetof(struct rrc_config, field)

static const struct key upstream_keys[] = {
	{"servers", K_SERVERS, 0, 0, 0, NULL},
	{"pools", K_POOLS, 0, 0, 0, NULL},
	{"policy", K_POLICY, 0, 0, 0, NULL},
	{"trust_ad", K_BOOL, F(trust_ad), 0, 1, NULL},
	{"timeout", K_DURATION, F(upstream_timeout_ms), 10, 60000, NULL},
	{"client_timeout", K_DURATION, F(client_timeout_ms), 10, 60000, NULL},
	{"max_failures", K_UINT, F(max_failures), 1, 1000, NULL},
	{"probe_interval", K_DURATION, F(probe_interval_ms), 10, 3600000, NULL},
	{"probe_successes", K_UINT, F(probe_successes), 1, 1000, NULL},
	{"max_inflight", K_UINT, F(max_inflight), 1, 1000000, NULL},
	/* CONFORMANCE U2: several sockets per upstream, each retired after at most 256 queries
	 * or 10 s. */
	{"sockets", K_UINT, F(upstream_sockets), 1, RRC_MAX_UPSTREAM_SOCKETS, NULL},
	{"socket_reuse", K_UINT, F(socket_reuse), 1, 256, NULL},
	{"socket_lifetime", K_DURATION, F(socket_lifetime_ms), 10, 10000, NULL},
	{"max_waiters_per_query", K_UINT, F(max_waiters_per_query), 1, 1000000, NULL},
	{"max_waiters", K_UINT, F(max_waiters), 1, 10000000, NULL},
	{"tls_connections", K_UINT, F(tls_connections), 1, RRC_MAX_TLS_CONNS, NULL},
	{"tls_max_inflight", K_UINT, F(tls_max_inflight), 1, 65535, NULL},
	{"tls_idle_timeout", K_DURATION, F(tls_idle_timeout_ms), 100, 3600000, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

#define FTS(field) F(tls.field), 0, sizeof(((struct rrc_config *)0)->tls.field)

static const struct key tls_keys[] = {
	{"ca_file", K_STRING, FTS(ca_file), NULL},
	{"insecure", K_BOOL, F(tls.insecure), 0, 1, NULL},
	{"cert_file", K_STRING, FTS(cert_file), NULL},
	{"key_file", K_STRING, FTS(key_file), NULL},
	{"handshake_timeout", K_DURATION, F(tls.handshake_timeout_ms), 100, 60000, NULL},
	{"handshakes_per_client", K_UINT, F(tls.handshakes_per_client), 0, 1000000, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

static const struct key cache_keys[] = {
	{"size", K_SIZE, F(cache_size), 1ull << 16, 1ull << 40, NULL},
	{"min_ttl", K_TTL, F(min_ttl), 0, 604800, NULL},
	{"max_ttl", K_TTL, F(max_ttl), 1, 604800, NULL},
	{"max_negative_ttl", K_TTL, F(max_negative_ttl), 0, 604800, NULL},
	{"serve_stale", K_BOOL, F(serve_stale), 0, 1, NULL},
	{"max_stale", K_TTL, F(max_stale), 1, 2592000, NULL},
	/* RFC 2308 §7.1: a server failure may be cached, for at most five minutes. */
	{"servfail_ttl", K_TTL, F(servfail_ttl), 0, 300, NULL},
	{"save_file", K_STRING, F(cache_save_file), 0,
	 sizeof(((struct rrc_config *)0)->cache_save_file), NULL},
	{"prefetch", K_BOOL, F(prefetch), 0, 1, NULL},
	{"prefetch_min_hits", K_UINT, F(prefetch_min_hits), 1, 65535, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

static const struct key tcp_keys[] = {
	{"idle_timeout", K_DURATION, F(tcp_idle_timeout_ms), 100, 3600000, NULL},
	{"max_connections", K_UINT, F(tcp_max_connections), 1, 1000000, NULL},
	{"max_connections_per_client", K_UINT, F(tcp_max_per_client), 1, 1000000, NULL},
	{"max_queries_per_connection", K_UINT, F(tcp_max_queries), 1, 1000000000, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

static const struct key acl_keys[] = {{"action", K_ACL_ACTION, 0, 0, 0, NULL},
				      {"allow", K_ALLOW, 0, 0, 0, NULL},
				      {"deny", K_DENY, 0, 0, 0, NULL},
				      {NULL, 0, 0, 0, 0, NULL}};

#define FR(field) offsetof(struct rrc_config, redis.field)
#define FRS(field) FR(field), 0, sizeof(((struct rrc_config *)0)->redis.field)

static const struct key redis_keys[] = {
	{"url", K_REDIS_URL, 0, 0, 0, NULL},
	{"password_file", K_SECRET_FILE, FRS(password), NULL},
	{"timeout", K_DURATION, FR(timeout_ms), 1, 10000, NULL},
	{"connect_timeout", K_DURATION, FR(connect_timeout_ms), 10, 60000, NULL},
	{"max_pending", K_UINT, FR(max_pending), 1, 1000000, NULL},
	{"max_failures", K_UINT, FR(max_failures), 1, 1000, NULL},
	{"backoff_min", K_DURATION, FR(backoff_min_ms), 10, 600000, NULL},
	{"backoff_max", K_DURATION, FR(backoff_max_ms), 10, 3600000, NULL},
	{"fleet_coalescing", K_BOOL, FR(fleet_coalescing), 0, 1, NULL},
	{"fleet_wait", K_DURATION, FR(fleet_wait_ms), 1, 10000, NULL},
	{"key_prefix", K_STRING, FRS(key_prefix), NULL},
	{"key_secret", K_STRING, FRS(key_secret), NULL},
	{"key_secret_file", K_SECRET_FILE, FRS(key_secret), NULL},
	{"sentinels", K_SENTINELS, 0, 0, 0, NULL},
	{"cluster", K_BOOL, FR(cluster), 0, 1, NULL},
	{"nodes", K_SEEDS, 0, 0, 0, NULL},
	{"master_name", K_STRING, FRS(master_name), NULL},
	{"sentinel_password_file", K_SECRET_FILE, FRS(sentinel_password), NULL},
	{"db", K_UINT, FR(db_key), 0, 1000000, NULL},
	{"user", K_STRING, FRS(user_key), NULL},
	{NULL, 0, 0, 0, 0, NULL}};

#define FS(field) offsetof(struct rrc_config, stats.field)

static const struct key stats_keys[] = {
	{"listen", K_STATS_LISTEN, 0, 0, 0, NULL},
	{"allow", K_STATS_ALLOW, 0, 0, 0, NULL},
	{"token", K_STRING, FS(token), 0, sizeof(((struct rrc_config *)0)->stats.token), NULL},
	{"token_file", K_SECRET_FILE, FS(token), 0, sizeof(((struct rrc_config *)0)->stats.token),
	 NULL},
	{"max_connections", K_UINT, FS(max_connections), 1, 10000, NULL},
	{"top_k", K_UINT, FS(top_k), 1, RRC_TOPK_MAX_SHOWN, NULL},
	{"top_sample", K_POW2, FS(top_sample), 1, 1024, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

#define FD(field) offsetof(struct rrc_config, dnstap.field)
#define FDS(field) FD(field), 0, sizeof(((struct rrc_config *)0)->dnstap.field)

static const struct key dnstap_keys[] = {
	{"file", K_STRING, FDS(file), NULL},
	{"socket", K_STRING, FDS(socket), NULL},
	{"identity", K_STRING, FDS(identity), NULL},
	{"queue_size", K_POW2, FD(queue_size), 2, 16384, NULL},
	{"client_queries", K_BOOL, FD(client_queries), 0, 1, NULL},
	{"client_responses", K_BOOL, FD(client_responses), 0, 1, NULL},
	{"forwarder_queries", K_BOOL, FD(forwarder_queries), 0, 1, NULL},
	{"forwarder_responses", K_BOOL, FD(forwarder_responses), 0, 1, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

static const struct key log_keys[] = {
	{"level", K_LOG_LEVEL, 0, 0, 0, NULL},
	{"target", K_LOG_TARGET, 0, 0, 0, NULL},
	{"format", K_LOG_FORMAT, 0, 0, 0, NULL},
	{"file", K_STRING, F(log_file), 0, sizeof(((struct rrc_config *)0)->log_file), NULL},
	{NULL, 0, 0, 0, 0, NULL}};

#define FP(field) offsetof(struct rrc_config, policy.field)

static const struct key policy_keys[] = {{"blocklists", K_BLOCKLISTS, 0, 0, 0, NULL},
					 {"allowlists", K_ALLOWLISTS, 0, 0, 0, NULL},
					 {"block_response", K_BLOCK_RESPONSE, 0, 0, 0, NULL},
					 {"block_ttl", K_TTL, FP(block_ttl), 0, 86400, NULL},
					 {"groups", K_GROUPS, 0, 0, 0, NULL},
					 {"any_udp", K_ANY_UDP, 0, 0, 0, NULL},
					 {NULL, 0, 0, 0, 0, NULL}};

#define FL(field) offsetof(struct rrc_config, ratelimit.field)

static const struct key ratelimit_keys[] = {
	{"qps", K_UINT, FL(table.qps), 0, 1000000, NULL},
	{"burst", K_UINT, FL(table.burst), 0, 1u << 23, NULL},
	{"ipv4_prefix", K_UINT, FL(table.v4_prefix), 8, 32, NULL},
	{"ipv6_prefix", K_UINT, FL(table.v6_prefix), 16, 128, NULL},
	{"slip", K_UINT, FL(slip), 0, 100, NULL},
	{"exempt", K_EXEMPT, 0, 0, 0, NULL},
	{"table_size", K_UINT, FL(table.table_size), 64, 1u << 26, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

#define FLO(field) offsetof(struct rrc_config, local.field)

static const struct key local_keys[] = {
	{"records", K_RECORDS, 0, 0, 0, NULL},
	{"hosts_files", K_HOSTS_FILES, 0, 0, 0, NULL},
	{"domain", K_STRING, FLO(domain), 0, sizeof(((struct rrc_config *)0)->local.domain), NULL},
	{"ttl", K_TTL, FLO(ttl), 0, 86400, NULL},
	{"private_reverse", K_BOOL, FLO(private_reverse), 0, 1, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

#define FB(field) offsetof(struct rrc_config, dynblock.field)

static const struct key dynblock_keys[] = {
	{"nxdomain_rate", K_UINT, FB(nxdomain_rate), 0, 1000000, NULL},
	{"miss_rate", K_UINT, FB(miss_rate), 0, 1000000, NULL},
	{"window", K_DURATION, FB(window_ms), 1000, 600000, NULL},
	{"duration", K_DURATION, FB(duration_ms), 1000, 86400000, NULL},
	{"action", K_DB_ACTION, 0, 0, 0, NULL},
	{"watched", K_UINT, FB(watched), 64, 1u << 24, NULL},
	{"max_blocks", K_UINT, FB(max_blocks), 1, 1u << 20, NULL},
	{NULL, 0, 0, 0, 0, NULL}};

static const struct key top_keys[] = {
	{"workers", K_UINT, F(workers), 0, RRC_MAX_WORKERS, NULL},
	{"user", K_STRING, F(user), 0, sizeof(((struct rrc_config *)0)->user), NULL},
	{"group", K_STRING, F(group), 0, sizeof(((struct rrc_config *)0)->group), NULL},
	{"listen", K_LISTEN, 0, 0, 0, NULL},
	{"listen_tls", K_LISTEN_TLS, 0, 0, 0, NULL},
	{"listen_https", K_LISTEN_HTTPS, 0, 0, 0, NULL},
	{"upstream", K_SECTION, 0, 0, 0, upstream_keys},
	{"cache", K_SECTION, 0, 0, 0, cache_keys},
	{"tcp", K_SECTION, 0, 0, 0, tcp_keys},
	{"acl", K_SECTION, 0, 0, 0, acl_keys},
	{"log", K_SECTION, 0, 0, 0, log_keys},
	{"redis", K_SECTION, 0, 0, 0, redis_keys},
	{"stats", K_SECTION, 0, 0, 0, stats_keys},
	{"dnstap", K_SECTION, 0, 0, 0, dnstap_keys},
	{"policy", K_SECTION, 0, 0, 0, policy_keys},
	{"ratelimit", K_SECTION, 0, 0, 0, ratelimit_keys},
	{"dynblock", K_SECTION, 0, 0, 0, dynblock_keys},
	{"local", K_SECTION, 0, 0, 0, local_keys},
	{"tls", K_SECTION, 0, 0, 0, tls_keys},
	{NULL, 0, 0, 0, 0, NULL}};

struct ctx {
	const char *file;
	yaml_document_t *doc;
	char *err;
	struct rrc_config *cfg;
	bool acl_given;
	bool stats_allow_given;
};

__attribute__((format(printf, 4, 5))) static int fail(struct ctx *c, const yaml_node_t *n,
						      const char *key, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, RRC_ERR_LEN, "%s:%zu:%zu: %s: %s", c->file, n->start_mark.line + 1,
		 n->start_mark.column + 1, key, msg);
	return -EINVAL;
}

static const char *scalar(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* An address of listen_tls, or of listen_https (https). */
static int add_listen_tls(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
			  bool https)
{
	struct rrc_config *cfg = c->cfg;
	unsigned *count = https ? &cfg->n_listen_https : &cfg->n_listen_tls;
	struct rrc_sockaddr *to = https ? cfg->listen_https : cfg->listen_tls;
	if (*count >= RRC_MAX_LISTEN)
		return fail(c, n, key, "more than %d addresses", RRC_MAX_LISTEN);
	if (rrc_addr_parse(s, https ? 443 : RRC_DOT_PORT, &to[*count]))
		return fail(c, n, key, "bad address '%.60s' (want 192.0.2.1:%u or [::1]:%u)", s,
			    https ? 443 : RRC_DOT_PORT, https ? 443 : RRC_DOT_PORT);
	(*count)++;
	return 0;
}

static int add_listen(struct ctx *c, const yaml_node_t *n, const char *key, const char *s)
{
	struct rrc_config *cfg = c->cfg;
	if (cfg->n_listen >= RRC_MAX_LISTEN)
		return fail(c, n, key, "more than %d addresses", RRC_MAX_LISTEN);
	if (rrc_addr_parse(s, 53, &cfg->listen[cfg->n_listen]))
		return fail(c, n, key, "bad address '%.60s' (want 192.0.2.1:53 or [::1]:53)", s);
	cfg->n_listen++;
	return 0;
}

/* An upstream written as an address, or as a host name with an optional port
 * ("dns.internal", "resolver:5353"): the name is resolved here, at start and at each reload,
 * and the first address it has is used. 0, or -EINVAL with the reason in why. */
static int resolve_server(const char *s, uint16_t default_port, bool lookups,
			  struct rrc_sockaddr *out, char why[RRC_ERR_LEN])
{
	if (rrc_addr_parse(s, default_port, out) == 0)
		return 0;
	char host[256];
	uint16_t port = default_port;
	const char *colon = strrchr(s, ':');
	size_t hlen = colon ? (size_t)(colon - s) : strlen(s);
	bool ok = hlen > 0 && hlen < sizeof(host) &&
		  !(colon && rrc_addr_parse_port(colon + 1, &port));
	for (size_t i = 0; ok && i < hlen; i++) {
		unsigned char ch = (unsigned char)s[i];
		ok = isalnum(ch) || ch == '-' || ch == '.' || ch == '_';
	}
	if (!ok) {
		snprintf(
			why, RRC_ERR_LEN,
			"bad address '%.60s' (want 192.0.2.1[:53], [::1]:53 or a host name[:port])",
			s);
		return -EINVAL;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	return lookup_host(host, port, lookups, SOCK_DGRAM, "", out, why);
}

/*
 * An upstream as written: an address or host name with an optional port (53), or
 * "tls://ADDR[:853][#NAME]" for DNS over TLS; tls forces TLS (the map form's "tls: true"),
 * name (when not NULL or "") is the name its certificate must have. Fills u but its weight
 * and pins. 0, or -EINVAL with the reason in why.
 */
static int parse_server(const char *s, bool tls, const char *name, bool lookups,
			struct rrc_upstream_conf *u, char why[RRC_ERR_LEN])
{
	char text[300];
	if (strncmp(s, "tls://", 6) == 0) {
		tls = true;
		s += 6;
	}
	snprintf(text, sizeof(text), "%s", s);
	char *hash = strchr(text, '#');
	if (hash) {
		*hash = '\0';
		if (!tls || !hash[1]) {
			snprintf(why, RRC_ERR_LEN, "'%.60s': #NAME needs tls:// and a name", s);
			return -EINVAL;
		}
		if (!name || !*name)
			name = hash + 1;
	}
	memset(u, 0, sizeof(*u));
	if (resolve_server(text, tls ? RRC_DOT_PORT : 53, lookups, &u->addr, why))
		return -EINVAL;
	u->tls = tls;
	if (tls) {
		/* Without a name: the host name as written, or the address (then checked
		 * against the certificate's IP addresses). */
		char host[sizeof(u->tls_name)];
		if (name && *name) {
			snprintf(host, sizeof(host), "%s", name);
		} else {
			struct rrc_sockaddr probe;
			if (rrc_addr_parse(text, RRC_DOT_PORT, &probe) == 0) {
				const void *ip = probe.sa.sa_family == AF_INET6
							 ? (const void *)&probe.sin6.sin6_addr
							 : (const void *)&probe.sin.sin_addr;
				inet_ntop(probe.sa.sa_family, ip, host, sizeof(host));
			} else {
				snprintf(host, sizeof(host), "%.255s", text);
				char *colon = strrchr(host, ':');
				if (colon)
					*colon = '\0';
			}
		}
		if (strlen(host) >= sizeof(u->tls_name) || strchr(host, ' ')) {
			snprintf(why, RRC_ERR_LEN, "'%.60s': bad TLS name", host);
			return -EINVAL;
		}
		snprintf(u->tls_name, sizeof(u->tls_name), "%s", host);
	}
	return 0;
}

static int add_server(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
		      uint32_t weight, bool tls, const char *name, const uint8_t (*pins)[32],
		      unsigned n_pins)
{
	struct rrc_config *cfg = c->cfg;
	if (cfg->n_upstreams >= RRC_MAX_UPSTREAMS)
		return fail(c, n, key, "more than %d servers", RRC_MAX_UPSTREAMS);
	struct rrc_upstream_conf *u = &cfg->upstreams[cfg->n_upstreams];
	char why[RRC_ERR_LEN];
	if (parse_server(s, tls, name, !cfg->no_lookups, u, why))
		return fail(c, n, key, "%s", why);
	if (n_pins && !u->tls)
		return fail(c, n, key, "pins need a TLS upstream");
	u->weight = weight;
	if (n_pins)
		memcpy(u->pins, pins, n_pins * sizeof(u->pins[0]));
	u->n_pins = n_pins;
	cfg->n_upstreams++;
	return 0;
}

static int add_rule(struct rrc_acl_rule **rules, size_t *n, const char *s, bool allow)
{
	if (*n >= RRC_MAX_ACL_RULES)
		return -E2BIG;
	if (*n % 64 == 0) {
		void *p = realloc(*rules, (*n + 64) * sizeof(**rules));
		if (!p)
			return -ENOMEM;
		*rules = p;
	}
	if (rrc_acl_rule_parse(s, allow, &(*rules)[*n]))
		return -EINVAL;
	(*n)++;
	return 0;
}

/* Adds a rule parsed from s to a list of the file's, reporting what went wrong at node n. */
static int add_rule_at(struct ctx *c, const yaml_node_t *n, const char *key,
		       struct rrc_acl_rule **rules, size_t *count, const char *s, bool allow,
		       const char *example)
{
	int rc = add_rule(rules, count, s, allow);
	if (rc == -E2BIG)
		return fail(c, n, key, "more than %d rules", RRC_MAX_ACL_RULES);
	if (rc == -EINVAL)
		return fail(c, n, key, "bad network '%.60s' (want %s)", s, example);
	if (rc)
		return fail(c, n, key, "out of memory");
	return 0;
}

static int add_stats_allow(struct ctx *c, const yaml_node_t *n, const char *key, const char *s)
{
	int rc = add_rule_at(c, n, key, &c->cfg->stats.allow, &c->cfg->stats.n_allow, s, true,
			     "127.0.0.0/8 or ::1/128");
	if (rc == 0)
		c->stats_allow_given = true;
	return rc;
}

/* A sentinel of redis.sentinels (port 26379 unless given) or a seed of redis.nodes (6379):
 * an address, or a host name resolved here like the URL's. */
static int add_redis_addr(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
			  bool seed)
{
	struct rrc_redis_conf *rc = &c->cfg->redis;
	unsigned *count = seed ? &rc->n_seeds : &rc->n_sentinels;
	if (*count >= RRC_REDIS_MAX_SENTINELS)
		return fail(c, n, key, "more than %d %s", RRC_REDIS_MAX_SENTINELS,
			    seed ? "nodes" : "sentinels");
	struct rrc_sockaddr a;
	char why[RRC_ERR_LEN];
	if (resolve_server(s, seed ? 6379 : 26379, !c->cfg->no_lookups, &a, why))
		return fail(c, n, key, "%s", why);
	struct rrc_redis_addr *to = seed ? &rc->seeds[(*count)++] : &rc->sentinels[(*count)++];
	inet_ntop(a.sa.sa_family,
		  a.sa.sa_family == AF_INET ? (const void *)&a.sin.sin_addr
					    : (const void *)&a.sin6.sin6_addr,
		  to->host, sizeof(to->host));
	to->port = ntohs(a.sa.sa_family == AF_INET ? a.sin.sin_port : a.sin6.sin6_port);
	return 0;
}

static int add_acl(struct ctx *c, const yaml_node_t *n, const char *key, const char *s, bool allow)
{
	int rc = add_rule_at(c, n, key, &c->cfg->acl_rules, &c->cfg->n_acl_rules, s, allow,
			     "10.0.0.0/8 or fd00::/8");
	if (rc == 0)
		c->acl_given = true;
	return rc;
}

static void free_paths(char **paths, unsigned *n)
{
	for (unsigned i = 0; i < *n; i++)
		free(paths[i]);
	*n = 0;
}

/* A list file's path into policy.blocklists or policy.allowlists. */
/* A list file's path appended to paths (count of them so far; the caller checks the room). */
static int add_path(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
		    char **paths, unsigned *count)
{
	if (!s[0])
		return fail(c, n, key, "an empty path");
	if (!(paths[*count] = strdup(s)))
		return fail(c, n, key, "out of memory");
	(*count)++;
	return 0;
}

/* A path into policy.blocklists or policy.allowlists. */
static int add_list_path(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
			 bool allow)
{
	struct rrc_policy_conf *pc = &c->cfg->policy;
	if (pc->n_block + pc->n_allow >= RRC_POLICY_MAX_LISTS)
		return fail(c, n, key, "more than %d lists in all", RRC_POLICY_MAX_LISTS);
	return allow ? add_path(c, n, key, s, pc->allowlists, &pc->n_allow)
		     : add_path(c, n, key, s, pc->blocklists, &pc->n_block);
}

/* A list of scalars, or one scalar; for servers, also {address: ..., weight: ...} maps. */
static int walk_list(struct ctx *c, const yaml_node_t *n, const char *key, enum kind kind)
{
	const yaml_node_item_t *items, *end;
	yaml_node_item_t single;
	if (n->type == YAML_SCALAR_NODE) {
		single = (yaml_node_item_t)(n - c->doc->nodes.start + 1);
		items = &single;
		end = items + 1;
	} else if (n->type == YAML_SEQUENCE_NODE) {
		items = n->data.sequence.items.start;
		end = n->data.sequence.items.top;
	} else {
		return fail(c, n, key, "expected a list");
	}
	for (const yaml_node_item_t *it = items; it < end; it++) {
		const yaml_node_t *item = yaml_document_get_node(c->doc, *it);
		const char *s = scalar(item);
		int rc;
		if (kind == K_SERVERS && item->type == YAML_MAPPING_NODE) {
			const char *addr = NULL, *name = NULL;
			uint32_t weight = 1;
			bool tls = false;
			uint8_t pins[RRC_TLS_MAX_PINS][RRC_TLS_PIN_LEN];
			unsigned n_pins = 0;
			for (yaml_node_pair_t *p = item->data.mapping.pairs.start;
			     p < item->data.mapping.pairs.top; p++) {
				const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
				const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
				const char *ks = scalar(k), *vs = scalar(v);
				if (ks && vs && strcmp(ks, "address") == 0) {
					addr = vs;
				} else if (ks && vs && strcmp(ks, "name") == 0) {
					name = vs;
				} else if (ks && vs && strcmp(ks, "tls") == 0) {
					if (strcmp(vs, "true") && strcmp(vs, "false"))
						return fail(c, v, "upstream.servers.tls",
							    "want true or false");
					tls = strcmp(vs, "true") == 0;
				} else if (ks && strcmp(ks, "pins") == 0) {
					if (v->type != YAML_SEQUENCE_NODE)
						return fail(c, v, "upstream.servers.pins",
							    "expected a list");
					for (yaml_node_item_t *pi = v->data.sequence.items.start;
					     pi < v->data.sequence.items.top; pi++) {
						const yaml_node_t *pn =
							yaml_document_get_node(c->doc, *pi);
						const char *ps = scalar(pn);
						if (n_pins >= RRC_TLS_MAX_PINS)
							return fail(c, pn, "upstream.servers.pins",
								    "more than %d pins",
								    RRC_TLS_MAX_PINS);
						if (!ps || rrc_tls_pin_parse(ps, pins[n_pins]))
							return fail(c, pn, "upstream.servers.pins",
								    "want the base64 of a SHA-256 "
								    "(32 bytes) of a public key");
						n_pins++;
					}
				} else if (ks && vs && strcmp(ks, "weight") == 0) {
					char *e;
					long w = strtol(vs, &e, 10);
					if (*e || w < 1 || w > 1000)
						return fail(c, v, "upstream.servers.weight",
							    "want 1..1000");
					weight = (uint32_t)w;
				} else {
					return fail(c, k, "upstream.servers",
						    "unknown key '%.40s' (address, weight, tls, "
						    "name, pins)",
						    ks ? ks : "?");
				}
			}
			if (!addr)
				return fail(c, item, key, "missing 'address'");
			rc = add_server(c, item, key, addr, weight, tls, name,
					(const uint8_t(*)[32])pins, n_pins);
		} else if (!s) {
			return fail(c, item, key, "expected a plain value");
		} else if (kind == K_LISTEN) {
			rc = add_listen(c, item, key, s);
		} else if (kind == K_LISTEN_TLS || kind == K_LISTEN_HTTPS) {
			rc = add_listen_tls(c, item, key, s, kind == K_LISTEN_HTTPS);
		} else if (kind == K_SERVERS) {
			rc = add_server(c, item, key, s, 1, false, NULL, NULL, 0);
		} else if (kind == K_STATS_ALLOW) {
			rc = add_stats_allow(c, item, key, s);
		} else if (kind == K_SENTINELS || kind == K_SEEDS) {
			rc = add_redis_addr(c, item, key, s, kind == K_SEEDS);
		} else if (kind == K_EXEMPT) {
			rc = add_rule_at(c, item, key, &c->cfg->ratelimit.exempt,
					 &c->cfg->ratelimit.n_exempt, s, true,
					 "10.0.0.0/8 or fd00::/8");
		} else if (kind == K_BLOCKLISTS || kind == K_ALLOWLISTS) {
			rc = add_list_path(c, item, key, s, kind == K_ALLOWLISTS);
		} else {
			rc = add_acl(c, item, key, s, kind == K_ALLOW);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int walk_value(struct ctx *c, const struct key *k, const yaml_node_t *v, const char *path);

static int walk_map(struct ctx *c, const yaml_node_t *n, const struct key *table,
		    const char *prefix)
{
	if (n->type != YAML_MAPPING_NODE)
		return fail(c, n, prefix[0] ? prefix : "top level", "expected a mapping");
	uint64_t seen = 0;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		const yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
		const yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
		const char *ks = scalar(kn);
		char path[96];
		snprintf(path, sizeof(path), "%s%s%.40s", prefix, prefix[0] ? "." : "",
			 ks ? ks : "?");
		const struct key *k = NULL;
		unsigned idx = 0;
		for (const struct key *t = table; ks && t->name; t++, idx++) {
			if (strcmp(t->name, ks) == 0) {
				k = t;
				break;
			}
		}
		if (!k)
			return fail(c, kn, path, "unknown key");
		if (seen & (1ull << idx))
			return fail(c, kn, path, "given twice");
		seen |= 1ull << idx;
		int rc = walk_value(c, k, vn, path);
		if (rc)
			return rc;
	}
	return 0;
}

/* The scalars of a list (or one scalar) at n, each given to fn. */
static int each_scalar(struct ctx *c, const yaml_node_t *n, const char *key,
		       int (*fn)(struct ctx *c, const yaml_node_t *n, const char *key,
				 const char *s, void *arg),
		       void *arg)
{
	if (n->type == YAML_SCALAR_NODE)
		return scalar(n)[0] ? fn(c, n, key, scalar(n), arg) : 0;
	if (n->type != YAML_SEQUENCE_NODE)
		return fail(c, n, key, "expected a list");
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		const yaml_node_t *item = yaml_document_get_node(c->doc, *it);
		const char *s = scalar(item);
		if (!s)
			return fail(c, item, key, "expected a plain value");
		int rc = fn(c, item, key, s, arg);
		if (rc)
			return rc;
	}
	return 0;
}

static int group_client(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
			void *arg)
{
	struct rrc_policy_group *g = arg;
	return add_rule_at(c, n, key, &g->clients, &g->n_clients, s, true,
			   "192.168.1.0/24 or fd00::/8");
}

/* A group's lists, block or allow. */
struct group_paths {
	char **paths;
	unsigned *n;
};

static int group_list(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
		      void *arg)
{
	struct group_paths *gp = arg;
	if (*gp->n >= RRC_POLICY_GROUP_LISTS)
		return fail(c, n, key, "more than %d lists", RRC_POLICY_GROUP_LISTS);
	return add_path(c, n, key, s, gp->paths, gp->n);
}

/* Calls fn for each key of the mapping n with its key and value nodes, their scalars (NULL
 * when not plain) and the key's path (path.key); stops at the first non-zero. */
typedef int (*pair_fn)(struct ctx *c, const yaml_node_t *k, const yaml_node_t *v, const char *ks,
		       const char *vs, const char *kp, void *arg);

static int each_pair(struct ctx *c, const yaml_node_t *n, const char *path, pair_fn fn, void *arg)
{
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
		const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
		const char *ks = scalar(k);
		char kp[128];
		snprintf(kp, sizeof(kp), "%s.%.40s", path, ks ? ks : "?");
		int rc = fn(c, k, v, ks, scalar(v), kp, arg);
		if (rc)
			return rc;
	}
	return 0;
}

/* The items of a list of mappings (or an empty value: none), each given to fn. */
static int each_mapping(struct ctx *c, const yaml_node_t *n, const char *path, const char *what,
			int (*fn)(struct ctx *c, const yaml_node_t *m, const char *path))
{
	if (n->type == YAML_SCALAR_NODE && scalar(n)[0] == '\0')
		return 0;
	if (n->type != YAML_SEQUENCE_NODE)
		return fail(c, n, path, "expected a list of %ss", what);
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		const yaml_node_t *m = yaml_document_get_node(c->doc, *it);
		if (m->type != YAML_MAPPING_NODE)
			return fail(c, m, path, "a %s is a mapping", what);
		int rc = fn(c, m, path);
		if (rc)
			return rc;
	}
	return 0;
}

static int group_key(struct ctx *c, const yaml_node_t *k, const yaml_node_t *v, const char *ks,
		     const char *vs, const char *kp, void *arg)
{
	struct rrc_policy_conf *pc = &c->cfg->policy;
	struct rrc_policy_group *g = arg;
	if (ks && strcmp(ks, "name") == 0) {
		if (!vs || !vs[0] || strlen(vs) >= sizeof(g->name))
			return fail(c, v, kp, "want a name of 1 to %zu characters",
				    sizeof(g->name) - 1);
		for (unsigned i = 0; i + 1 < pc->n_groups; i++)
			if (strcmp(pc->groups[i].name, vs) == 0)
				return fail(c, v, kp, "'%.31s' given twice", vs);
		snprintf(g->name, sizeof(g->name), "%s", vs);
		return 0;
	}
	if (ks && strcmp(ks, "clients") == 0)
		return each_scalar(c, v, kp, group_client, g);
	if (ks && (strcmp(ks, "blocklists") == 0 || strcmp(ks, "allowlists") == 0)) {
		struct group_paths gp = {ks[0] == 'a' ? g->allowlists : g->blocklists,
					 ks[0] == 'a' ? &g->n_allow : &g->n_block};
		return each_scalar(c, v, kp, group_list, &gp);
	}
	if (ks && strcmp(ks, "use_global") == 0) {
		if (!vs || (strcmp(vs, "true") && strcmp(vs, "false")))
			return fail(c, v, kp, "want true or false");
		g->use_global = vs[0] == 't';
		return 0;
	}
	return fail(c, k, kp, "unknown key (name, clients, blocklists, allowlists, use_global)");
}

static int one_group(struct ctx *c, const yaml_node_t *gn, const char *path)
{
	struct rrc_policy_conf *pc = &c->cfg->policy;
	if (pc->n_groups >= RRC_POLICY_MAX_GROUPS)
		return fail(c, gn, path, "more than %d groups", RRC_POLICY_MAX_GROUPS);
	struct rrc_policy_group *g = &pc->groups[pc->n_groups++];
	g->use_global = true;
	int rc = each_pair(c, gn, path, group_key, g);
	if (rc == 0 && (!g->name[0] || g->n_clients == 0))
		return fail(c, gn, path, "a group needs a name and clients");
	return rc;
}

/* policy.groups: a list of {name, clients, blocklists, allowlists, use_global}. */
static int walk_groups(struct ctx *c, const yaml_node_t *n, const char *path)
{
	return each_mapping(c, n, path, "group", one_group);
}

/* A new pool named name (the first of n_pools), or NULL with the reason in why. */
static struct rrc_forward_pool *new_pool(struct rrc_config *cfg, const char *name,
					 char why[RRC_ERR_LEN])
{
	if (cfg->n_pools >= 1 + RRC_MAX_POOLS) {
		snprintf(why, RRC_ERR_LEN, "more than %d pools", RRC_MAX_POOLS);
		return NULL;
	}
	if (!name[0] || strlen(name) >= sizeof(cfg->pools[0].name)) {
		snprintf(why, RRC_ERR_LEN, "a pool's name has 1 to %zu characters",
			 sizeof(cfg->pools[0].name) - 1);
		return NULL;
	}
	for (unsigned i = 0; i < cfg->n_pools; i++) {
		if (strcmp(cfg->pools[i].name, name) == 0) {
			snprintf(why, RRC_ERR_LEN, "pool '%.31s' given twice", name);
			return NULL;
		}
	}
	struct rrc_forward_pool *p = &cfg->pools[cfg->n_pools++];
	*p = (struct rrc_forward_pool){.first = (uint16_t)cfg->n_pool_servers};
	snprintf(p->name, sizeof(p->name), "%s", name);
	return p;
}

/* A domain of the last pool. 0, or -EINVAL with the reason in why. */
static int pool_domain(struct rrc_config *cfg, const char *text, char why[RRC_ERR_LEN])
{
	uint8_t wire[RRC_WIRE_MAX_NAME];
	size_t len;
	if (rrc_msg_name_from_text(text, wire, &len) != 0) {
		snprintf(why, RRC_ERR_LEN, "bad domain '%.60s'", text);
		return -EINVAL;
	}
	if (!cfg->route && !(cfg->route = rrc_route_create())) {
		snprintf(why, RRC_ERR_LEN, "out of memory");
		return -ENOMEM;
	}
	int rc = rrc_route_add(cfg->route, wire, len, (uint16_t)(cfg->n_pools - 1));
	if (rc == -EEXIST)
		snprintf(why, RRC_ERR_LEN, "domain '%.60s' is in another pool already", text);
	else if (rc)
		snprintf(why, RRC_ERR_LEN, "out of memory");
	return rc;
}

/* A server of the last pool. 0, or -EINVAL with the reason in why. */
static int pool_server(struct rrc_config *cfg, const char *text, uint32_t weight,
		       char why[RRC_ERR_LEN])
{
	if (cfg->n_pool_servers >= RRC_MAX_UPSTREAMS) {
		snprintf(why, RRC_ERR_LEN, "more than %d servers in the pools", RRC_MAX_UPSTREAMS);
		return -EINVAL;
	}
	struct rrc_upstream_conf *u = &cfg->pool_servers[cfg->n_pool_servers];
	if (parse_server(text, false, NULL, !cfg->no_lookups, u, why))
		return -EINVAL;
	u->weight = weight;
	cfg->n_pool_servers++;
	cfg->pools[cfg->n_pools - 1].n++;
	return 0;
}

static int pool_domain_at(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
			  void *arg)
{
	char why[RRC_ERR_LEN];
	return pool_domain(c->cfg, s, why) ? fail(c, n, key, "%s", why) : 0;
}

static int pool_server_at(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
			  void *arg)
{
	char why[RRC_ERR_LEN];
	return pool_server(c->cfg, s, 1, why) ? fail(c, n, key, "%s", why) : 0;
}

/* local.records: kept as written with where they were, read once local.ttl is known. */
static int local_record(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
			void *arg)
{
	struct rrc_config *cfg = c->cfg;
	unsigned i = cfg->local.n_records;
	if (i >= 100000)
		return fail(c, n, key, "more than 100000 records (use a hosts file)");
	if (i % 64 == 0) {
		char **r = realloc(cfg->local.records, (i + 64) * sizeof(*r));
		if (r)
			cfg->local.records = r;
		uint32_t *ln = realloc(cfg->local.record_line, (i + 64) * sizeof(*ln));
		if (ln)
			cfg->local.record_line = ln;
		uint32_t *col = realloc(cfg->local.record_col, (i + 64) * sizeof(*col));
		if (col)
			cfg->local.record_col = col;
		if (!r || !ln || !col)
			return fail(c, n, key, "out of memory");
	}
	if (!(cfg->local.records[i] = strdup(s)))
		return fail(c, n, key, "out of memory");
	cfg->local.record_line[i] = (uint32_t)n->start_mark.line + 1;
	cfg->local.record_col[i] = (uint32_t)n->start_mark.column + 1;
	cfg->local.n_records++;
	return 0;
}

static int local_hosts(struct ctx *c, const yaml_node_t *n, const char *key, const char *s,
		       void *arg)
{
	struct rrc_config *cfg = c->cfg;
	if (cfg->local.n_hosts_files >= RRC_POLICY_MAX_LISTS)
		return fail(c, n, key, "more than %d files", RRC_POLICY_MAX_LISTS);
	if (!cfg->local.hosts_files &&
	    !(cfg->local.hosts_files = calloc(RRC_POLICY_MAX_LISTS, sizeof(char *))))
		return fail(c, n, key, "out of memory");
	return add_path(c, n, key, s, cfg->local.hosts_files, &cfg->local.n_hosts_files);
}

struct pool_ctx {
	struct rrc_forward_pool *pool;
	bool has_domains;
};

static int pool_key(struct ctx *c, const yaml_node_t *k, const yaml_node_t *v, const char *ks,
		    const char *vs, const char *kp, void *arg)
{
	struct pool_ctx *pc = arg;
	if (ks && strcmp(ks, "name") == 0)
		return 0; /* read first */
	if (ks && strcmp(ks, "domains") == 0) {
		pc->has_domains = true;
		return each_scalar(c, v, kp, pool_domain_at, NULL);
	}
	if (ks && strcmp(ks, "servers") == 0)
		return each_scalar(c, v, kp, pool_server_at, NULL);
	if (ks && strcmp(ks, "policy") == 0) {
		if (!vs || rrc_balancer_policy_parse(vs, &pc->pool->balance))
			return fail(c, v, kp,
				    "unknown policy (round-robin, first-available, "
				    "least-outstanding, weighted)");
		pc->pool->balance_given = true;
		return 0;
	}
	return fail(c, k, kp, "unknown key (name, domains, servers, policy)");
}

static int one_pool(struct ctx *c, const yaml_node_t *pn, const char *path)
{
	/* The name first, wherever it is written: the domains point at the pool. */
	const char *name = NULL;
	for (yaml_node_pair_t *p = pn->data.mapping.pairs.start; p < pn->data.mapping.pairs.top;
	     p++) {
		const char *ks = scalar(yaml_document_get_node(c->doc, p->key));
		if (ks && strcmp(ks, "name") == 0)
			name = scalar(yaml_document_get_node(c->doc, p->value));
	}
	char why[RRC_ERR_LEN];
	struct pool_ctx pc = {.pool = new_pool(c->cfg, name ? name : "", why)};
	if (!pc.pool)
		return fail(c, pn, path, "%s", why);
	int rc = each_pair(c, pn, path, pool_key, &pc);
	if (rc == 0 && (!pc.has_domains || pc.pool->n == 0))
		return fail(c, pn, path, "pool '%.31s' needs domains and servers", pc.pool->name);
	return rc;
}

/* upstream.pools: a list of {name, domains, servers, policy}. */
static int walk_pools(struct ctx *c, const yaml_node_t *n, const char *path)
{
	return each_mapping(c, n, path, "pool", one_pool);
}

static int walk_value(struct ctx *c, const struct key *k, const yaml_node_t *v, const char *path)
{
	struct rrc_config *cfg = c->cfg;
	uint8_t *base = (uint8_t *)cfg;
	if (k->kind == K_SECTION)
		return walk_map(c, v, k->sub, path);
	if (k->kind == K_POOLS)
		return walk_pools(c, v, path);
	if (k->kind == K_RECORDS || k->kind == K_HOSTS_FILES) {
		if (v->type == YAML_SCALAR_NODE && scalar(v)[0] == '\0')
			return 0;
		return each_scalar(c, v, path, k->kind == K_RECORDS ? local_record : local_hosts,
				   NULL);
	}
	if (k->kind == K_GROUPS)
		return walk_groups(c, v, path);
	if (k->kind == K_LISTEN || k->kind == K_LISTEN_TLS || k->kind == K_LISTEN_HTTPS ||
	    k->kind == K_SERVERS || k->kind == K_ALLOW || k->kind == K_DENY ||
	    k->kind == K_STATS_ALLOW || k->kind == K_BLOCKLISTS || k->kind == K_ALLOWLISTS ||
	    k->kind == K_EXEMPT || k->kind == K_SENTINELS || k->kind == K_SEEDS) {
		if (v->type == YAML_SCALAR_NODE && scalar(v)[0] == '\0')
			return 0; /* an empty value: an empty list */
		return walk_list(c, v, path, k->kind);
	}
	const char *s = scalar(v);
	if (!s)
		return fail(c, v, path, "expected a plain value");
	uint64_t val = 0;
	switch (k->kind) {
	case K_UINT:
	case K_POW2: {
		char *e;
		errno = 0;
		bool number = isdigit((unsigned char)s[0]);
		if (number)
			val = strtoull(s, &e, 10);
		number = number && !*e && !errno;
		if (k->kind == K_POW2 && (!number || val == 0 || (val & (val - 1))))
			return fail(c, v, path, "want a power of two, got '%.40s'", s);
		if (!number)
			return fail(c, v, path, "bad number '%.40s'", s);
		break;
	}
	case K_SIZE:
		if (rrc_config_parse_size(s, &val))
			return fail(c, v, path, "bad size '%.40s' (e.g. 64MiB)", s);
		break;
	case K_DURATION:
		if (rrc_config_parse_duration_ms(s, &val))
			return fail(c, v, path, "bad duration '%.40s' (e.g. 1s, 500ms)", s);
		break;
	case K_TTL: {
		char *e;
		errno = 0;
		if (!isdigit((unsigned char)s[0]))
			return fail(c, v, path, "bad TTL '%.40s' (seconds, or e.g. 1h)", s);
		val = strtoull(s, &e, 10);
		if (*e) {
			if (rrc_config_parse_duration_ms(s, &val) || val % 1000)
				return fail(c, v, path, "bad TTL '%.40s' (seconds, or e.g. 1h)", s);
			val /= 1000;
		}
		break;
	}
	case K_BOOL:
		if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
			*(bool *)(base + k->off) = true;
		else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
			*(bool *)(base + k->off) = false;
		else
			return fail(c, v, path, "want true or false, got '%.40s'", s);
		return 0;
	case K_POLICY:
		if (rrc_balancer_policy_parse(s, &cfg->balance))
			return fail(c, v, path,
				    "unknown policy '%.40s' (round-robin, first-available, "
				    "least-outstanding, weighted)",
				    s);
		return 0;
	case K_ACL_ACTION:
		if (strcmp(s, "drop") == 0)
			cfg->acl_action = RRC_ACL_DROP;
		else if (strcmp(s, "refuse") == 0)
			cfg->acl_action = RRC_ACL_REFUSE;
		else
			return fail(c, v, path, "unknown action '%.40s' (drop, refuse)", s);
		return 0;
	case K_LOG_LEVEL:
		if (rrc_log_level_parse(s, &cfg->log_level))
			return fail(c, v, path,
				    "unknown level '%.40s' (error, warning, info, debug)", s);
		return 0;
	case K_BLOCK_RESPONSE: {
		static const char *const names[] = {"nxdomain", "nodata", "null", "refused"};
		for (size_t i = 0; i < RRC_ARRAY_SIZE(names); i++) {
			if (strcmp(s, names[i]) == 0) {
				cfg->policy.response = (enum rrc_block_response)i;
				return 0;
			}
		}
		return fail(c, v, path,
			    "unknown response '%.40s' (nxdomain, nodata, null, refused)", s);
	}
	case K_ANY_UDP: {
		static const char *const names[] = {"hinfo", "tc", "forward"};
		for (size_t i = 0; i < RRC_ARRAY_SIZE(names); i++) {
			if (strcmp(s, names[i]) == 0) {
				cfg->policy.any_udp = (enum rrc_any_udp)i;
				return 0;
			}
		}
		return fail(c, v, path, "unknown answer '%.40s' (hinfo, tc, forward)", s);
	}
	case K_DB_ACTION: {
		static const char *const names[] = {"drop", "refused", "tc"};
		for (size_t i = 0; i < RRC_ARRAY_SIZE(names); i++) {
			if (strcmp(s, names[i]) == 0) {
				cfg->dynblock.action = (enum rrc_dynblock_action)i;
				return 0;
			}
		}
		return fail(c, v, path, "unknown action '%.40s' (drop, refused, tc)", s);
	}
	case K_LOG_TARGET:
		if (rrc_log_target_parse(s, &cfg->log_target))
			return fail(c, v, path,
				    "unknown target '%.40s' (stderr, file, syslog, journal)", s);
		return 0;
	case K_LOG_FORMAT:
		if (rrc_log_format_parse(s, &cfg->log_format))
			return fail(c, v, path, "unknown format '%.40s' (text, json)", s);
		return 0;
	case K_STRING:
		if (strlen(s) >= k->max)
			return fail(c, v, path, "longer than %llu bytes",
				    (unsigned long long)k->max - 1);
		memcpy(base + k->off, s, strlen(s) + 1);
		return 0;
	case K_SECRET_FILE: {
		char why[RRC_ERR_LEN];
		if (read_secret_file(s, (char *)base + k->off, k->max, why))
			return fail(c, v, path, "%s", why);
		return 0;
	}
	case K_STATS_LISTEN:
		if (parse_stats_listen(s, &cfg->stats))
			return fail(c, v, path,
				    "bad address '%.60s' (want 127.0.0.1:9153, "
				    "[::1]:9153 or off)",
				    s);
		return 0;
	case K_REDIS_URL: {
		char why[RRC_ERR_LEN];
		if (parse_redis_url(s, &cfg->redis, !cfg->no_lookups, why))
			return fail(c, v, path, "%s", why);
		return 0;
	}
	default:
		return fail(c, v, path, "internal: unhandled kind");
	}
	if (val < k->min || val > k->max)
		return fail(c, v, path, "%llu is out of range [%llu, %llu]",
			    (unsigned long long)val, (unsigned long long)k->min,
			    (unsigned long long)k->max);
	if (k->kind == K_SIZE)
		*(uint64_t *)(base + k->off) = val;
	else
		*(uint32_t *)(base + k->off) = (uint32_t)val;
	return 0;
}

static int load_file(struct rrc_config *cfg, const char *path, char *err, bool *acl_given)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, RRC_ERR_LEN, "%s: %s", path, strerror(errno));
		return -errno;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	int rc = 0;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, RRC_ERR_LEN, "%s:%zu:%zu: YAML syntax error: %s", path,
			 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			 parser.problem ? parser.problem : "unreadable");
		yaml_parser_delete(&parser);
		fclose(f);
		return -EINVAL;
	}
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0)) {
		struct ctx c = {.file = path, .doc = &doc, .err = err, .cfg = cfg};
		rc = walk_map(&c, root, top_keys, "");
		*acl_given = c.acl_given;
		cfg->stats_allow_given = c.stats_allow_given;
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

/* CPUs this process may use: its affinity mask, lowered to the cgroup's CPU quota (cgroup v2
 * cpu.max "QUOTA PERIOD", rounded up) when there is one, as in a container with a CPU limit. */
unsigned rrc_config_cpus(const char *cgroup_dir)
{
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
							      : sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	char path[512];
	if (!cgroup_dir) {
		/* Our own cgroup, from /proc/self/cgroup's "0::/PATH" line (cgroup v2). */
		FILE *f = fopen("/proc/self/cgroup", "r");
		char line[400], rel[400] = "";
		while (f && fgets(line, sizeof(line), f)) {
			if (!strncmp(line, "0::", 3)) {
				snprintf(rel, sizeof(rel), "%s", line + 3);
				rel[strcspn(rel, "\n")] = '\0';
			}
		}
		if (f)
			fclose(f);
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max", rel);
	} else {
		snprintf(path, sizeof(path), "%s/cpu.max", cgroup_dir);
	}
	FILE *f = fopen(path, "r");
	char quota[32] = "";
	unsigned long long period = 0;
	if (f && fscanf(f, "%31s %llu", quota, &period) == 2 && strcmp(quota, "max") != 0 &&
	    period > 0) {
		unsigned long long q = strtoull(quota, NULL, 10);
		long limit = (long)((q + period - 1) / period);
		if (limit >= 1 && limit < n)
			n = limit;
	}
	if (f)
		fclose(f);
	return (unsigned)n;
}

/* An address of this machine: loopback, the wildcard, or one of its interfaces'. */
static bool is_local(const struct rrc_sockaddr *a)
{
	if (rrc_addr_is_wildcard(a))
		return true;
	if (a->sa.sa_family == AF_INET6 ? IN6_IS_ADDR_LOOPBACK(&a->sin6.sin6_addr)
					: (ntohl(a->sin.sin_addr.s_addr) >> 24) == 127)
		return true;
	struct ifaddrs *ifs = NULL;
	if (getifaddrs(&ifs) != 0)
		return false;
	bool found = false;
	for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != a->sa.sa_family)
			continue;
		if (a->sa.sa_family == AF_INET6)
			found = !memcmp(&((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr,
					&a->sin6.sin6_addr, sizeof(struct in6_addr));
		else
			found = ((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr.s_addr ==
				a->sin.sin_addr.s_addr;
	}
	freeifaddrs(ifs);
	return found;
}

/* U9: the listen address an upstream would reach (queries would loop back to rrcache), or -1: the
 * same address and port, or the port of a wildcard listen on any address of this machine. */
static int listen_reached(const struct rrc_config *cfg, const struct rrc_sockaddr *a)
{
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		const struct rrc_sockaddr *l = &cfg->listen[i];
		if (rrc_addr_equal(a, l))
			return (int)i;
		if (rrc_addr_is_wildcard(l) && l->sa.sa_family == a->sa.sa_family &&
		    rrc_addr_port(l) == rrc_addr_port(a) && is_local(a))
			return (int)i;
	}
	return -1;
}

static int read_resolv_conf(struct rrc_config *cfg, const char *path, char *err)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, RRC_ERR_LEN, "no upstream configured and %s cannot be read: %s", path,
			 strerror(errno));
		return -EINVAL;
	}
	char line[512];
	while (fgets(line, sizeof(line), f) && cfg->n_upstreams < RRC_MAX_UPSTREAMS) {
		char word[32], addr[128];
		if (sscanf(line, " %31s %127s", word, addr) != 2 || strcmp(word, "nameserver"))
			continue;
		char *pct = strchr(addr, '%'); /* a link-local scope cannot be kept */
		if (pct)
			continue;
		struct rrc_sockaddr a;
		if (rrc_addr_parse(addr, 53, &a))
			continue;
		if (listen_reached(cfg, &a) >= 0) {
			rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
				"%s: skipping nameserver %s, which is rrcache itself", path, addr);
			continue;
		}
		cfg->upstreams[cfg->n_upstreams].addr = a;
		cfg->upstreams[cfg->n_upstreams].weight = 1;
		cfg->n_upstreams++;
	}
	fclose(f);
	if (cfg->n_upstreams == 0) {
		snprintf(err, RRC_ERR_LEN, "no upstream configured and no usable nameserver in %s",
			 path);
		return -EINVAL;
	}
	cfg->upstreams_from_resolv_conf = true;
	return 0;
}

static int apply_overrides(struct rrc_config *cfg, const struct rrc_config_overrides *ov, char *err)
{
	if (ov->n_listen) {
		cfg->n_listen = 0;
		for (unsigned i = 0; i < ov->n_listen; i++) {
			if (rrc_addr_parse(ov->listen[i], 53, &cfg->listen[cfg->n_listen++])) {
				snprintf(err, RRC_ERR_LEN, "--listen: bad address '%.60s'",
					 ov->listen[i]);
				return -EINVAL;
			}
		}
	}
	if (ov->n_upstream) {
		cfg->n_upstreams = 0;
		for (unsigned i = 0; i < ov->n_upstream; i++) {
			struct rrc_upstream_conf *u = &cfg->upstreams[cfg->n_upstreams++];
			char why[RRC_ERR_LEN];
			int bad =
				parse_server(ov->upstream[i], false, NULL, !ov->no_lookups, u, why);
			u->weight = 1;
			if (bad) {
				snprintf(err, RRC_ERR_LEN, "--upstream: %.480s", why);
				return -EINVAL;
			}
		}
	}
	if (ov->n_forward) {
		/* --forward replaces the file's pools: DOMAIN=ADDR[,ADDR...]; an item without '='
		 * is one more address of the domain before it (RRCACHE_FORWARD is split at the
		 * commas), and a domain given again adds to its pool. */
		cfg->n_pools = 1;
		cfg->n_pool_servers = 0;
		rrc_route_destroy(cfg->route);
		cfg->route = NULL;
		char why[RRC_ERR_LEN];
		for (unsigned i = 0; i < ov->n_forward; i++) {
			char item[512];
			snprintf(item, sizeof(item), "%s", ov->forward[i]);
			char *eq = strchr(item, '=');
			char *addrs = item;
			int rc = 0;
			if (eq) {
				*eq = '\0';
				addrs = eq + 1;
				size_t dl = strlen(item);
				while (dl > 1 && item[dl - 1] == '.')
					item[--dl] = '\0';
				unsigned p = 1;
				while (p < cfg->n_pools && strcmp(cfg->pools[p].name, item) != 0)
					p++;
				if (p < cfg->n_pools) {
					if (cfg->pools[p].first + cfg->pools[p].n !=
					    cfg->n_pool_servers) {
						snprintf(why, RRC_ERR_LEN,
							 "give the addresses of '%.60s' together",
							 item);
						rc = -EINVAL;
					}
				} else if (!new_pool(cfg, item, why) ||
					   pool_domain(cfg, item, why)) {
					rc = -EINVAL;
				}
			} else if (cfg->n_pools == 1) {
				snprintf(why, RRC_ERR_LEN,
					 "want DOMAIN=ADDR[,ADDR...], not '%.60s'", item);
				rc = -EINVAL;
			}
			for (char *a = strtok(addrs, ","); !rc && a; a = strtok(NULL, ","))
				rc = pool_server(cfg, a, 1, why);
			if (!rc && cfg->pools[cfg->n_pools - 1].n == 0) {
				snprintf(why, RRC_ERR_LEN, "'%.60s' has no address",
					 ov->forward[i]);
				rc = -EINVAL;
			}
			if (rc) {
				snprintf(err, RRC_ERR_LEN, "--forward: %.480s", why);
				return -EINVAL;
			}
		}
	}
	if (ov->cache_size) {
		uint64_t v;
		if (rrc_config_parse_size(ov->cache_size, &v) || v < (1u << 16)) {
			snprintf(err, RRC_ERR_LEN, "--cache-size: bad size '%.40s' (e.g. 64MiB)",
				 ov->cache_size);
			return -EINVAL;
		}
		cfg->cache_size = v;
	}
	if (ov->log_level && rrc_log_level_parse(ov->log_level, &cfg->log_level)) {
		snprintf(err, RRC_ERR_LEN,
			 "--log-level: unknown level '%.40s' (error, warning, info, debug)",
			 ov->log_level);
		return -EINVAL;
	}
	if (ov->log_target && rrc_log_target_parse(ov->log_target, &cfg->log_target)) {
		snprintf(err, RRC_ERR_LEN,
			 "--log-target: unknown target '%.40s' (stderr, file, syslog, journal)",
			 ov->log_target);
		return -EINVAL;
	}
	if (ov->log_format && rrc_log_format_parse(ov->log_format, &cfg->log_format)) {
		snprintf(err, RRC_ERR_LEN, "--log-format: unknown format '%.40s' (text, json)",
			 ov->log_format);
		return -EINVAL;
	}
	if (ov->log_file) {
		if (strlen(ov->log_file) >= sizeof(cfg->log_file)) {
			snprintf(err, RRC_ERR_LEN, "--log-file: longer than %zu bytes",
				 sizeof(cfg->log_file) - 1);
			return -EINVAL;
		}
		snprintf(cfg->log_file, sizeof(cfg->log_file), "%s", ov->log_file);
		if (!ov->log_target)
			cfg->log_target = RRC_LOG_TO_FILE;
	}
	const struct {
		const char *const *paths;
		unsigned n;
		char **dst;
		unsigned *dst_n;
	} lists[] = {
		{ov->blocklist, ov->n_blocklist, cfg->policy.blocklists, &cfg->policy.n_block},
		{ov->allowlist, ov->n_allowlist, cfg->policy.allowlists, &cfg->policy.n_allow},
	};
	for (size_t i = 0; i < RRC_ARRAY_SIZE(lists); i++) {
		if (!lists[i].n)
			continue;
		free_paths(lists[i].dst, lists[i].dst_n);
		for (unsigned k = 0; k < lists[i].n; k++) {
			if (cfg->policy.n_block + cfg->policy.n_allow >= RRC_POLICY_MAX_LISTS) {
				snprintf(err, RRC_ERR_LEN, "--blocklist, --allowlist: more than %d",
					 RRC_POLICY_MAX_LISTS);
				return -EINVAL;
			}
			if (!(lists[i].dst[*lists[i].dst_n] = strdup(lists[i].paths[k]))) {
				snprintf(err, RRC_ERR_LEN, "out of memory");
				return -ENOMEM;
			}
			(*lists[i].dst_n)++;
		}
	}
	/* Secrets from files, so that none is in the command line or the environment. */
	const struct {
		const char *file, *flag;
		char *dst;
		size_t cap;
	} secrets[] = {
		{ov->redis_password_file, "--redis-password-file", cfg->redis.password,
		 sizeof(cfg->redis.password)},
		{ov->redis_key_secret_file, "--redis-key-secret-file", cfg->redis.key_secret,
		 sizeof(cfg->redis.key_secret)},
		{ov->stats_token_file, "--stats-token-file", cfg->stats.token,
		 sizeof(cfg->stats.token)},
	};
	for (size_t i = 0; i < RRC_ARRAY_SIZE(secrets); i++) {
		char why[RRC_ERR_LEN];
		if (secrets[i].file &&
		    read_secret_file(secrets[i].file, secrets[i].dst, secrets[i].cap, why)) {
			snprintf(err, RRC_ERR_LEN, "%s: %.400s", secrets[i].flag, why);
			return -EINVAL;
		}
	}
	if (ov->redis_url && parse_redis_url(ov->redis_url, &cfg->redis, !ov->no_lookups, err)) {
		char why[RRC_ERR_LEN];
		snprintf(why, sizeof(why), "--redis: %s", err);
		memcpy(err, why, RRC_ERR_LEN);
		return -EINVAL;
	}
	if (ov->redis_url) {
		/* One Redis named on the command line replaces the file's, Sentinel or not. */
		cfg->redis.n_sentinels = 0;
		cfg->redis.cluster = false;
		cfg->redis.n_seeds = 0;
		cfg->redis.master_name[0] = '\0';
		cfg->redis.db_key = UINT32_MAX;
		cfg->redis.user_key[0] = '\0';
	}
	if (ov->n_stats_allow) {
		/* Replaces the file's list, as --listen does: a sidecar opens its endpoint to the
		 * probes' network from flags alone. */
		free(cfg->stats.allow);
		cfg->stats.allow = NULL;
		cfg->stats.n_allow = 0;
		for (unsigned i = 0; i < ov->n_stats_allow; i++) {
			int rc = add_rule(&cfg->stats.allow, &cfg->stats.n_allow,
					  ov->stats_allow[i], true);
			if (rc) {
				snprintf(err, RRC_ERR_LEN,
					 rc == -EINVAL ? "--stats-allow: bad network '%.60s' (want "
							 "10.0.0.0/8 or fd00::/8)"
						       : "--stats-allow: cannot add '%.60s'",
					 ov->stats_allow[i]);
				return -EINVAL;
			}
		}
		cfg->stats_allow_given = true;
	}
	if (ov->metrics && parse_stats_listen(ov->metrics, &cfg->stats)) {
		snprintf(err, RRC_ERR_LEN, "--metrics: bad address '%.60s' (want ADDR:PORT or off)",
			 ov->metrics);
		return -EINVAL;
	}
	if (ov->workers) {
		char *e;
		long w = strtol(ov->workers, &e, 10);
		if (*e || w < 0 || w > RRC_MAX_WORKERS) {
			snprintf(err, RRC_ERR_LEN, "--workers: want 0..%d, got '%.40s'",
				 RRC_MAX_WORKERS, ov->workers);
			return -EINVAL;
		}
		cfg->workers = (unsigned)w;
	}
	return 0;
}

/* local.*: the records, the hosts files and the empty zones into one table. */
static int build_local(struct rrc_config *cfg, char *err)
{
	if (!cfg->local.n_records && !cfg->local.n_hosts_files && !cfg->local.private_reverse)
		return 0;
	struct rrc_local *l = rrc_local_create(cfg->local.ttl);
	if (!l) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return -ENOMEM;
	}
	cfg->local.data = l;
	char why[RRC_ERR_LEN];
	for (unsigned i = 0; i < cfg->local.n_records; i++) {
		if (rrc_local_add_record(l, cfg->local.records[i], why)) {
			snprintf(err, RRC_ERR_LEN, "%s:%u:%u: local.records: %.60s: %.200s",
				 cfg->path ? cfg->path : "-", cfg->local.record_line[i],
				 cfg->local.record_col[i], cfg->local.records[i], why);
			return -EINVAL;
		}
	}
	for (unsigned i = 0; i < cfg->local.n_hosts_files; i++) {
		unsigned skipped = 0;
		int n = rrc_local_add_hosts(l, cfg->local.hosts_files[i], cfg->local.domain,
					    &skipped, why);
		if (n < 0) {
			snprintf(err, RRC_ERR_LEN, "local.hosts_files: %.400s", why);
			return -EINVAL;
		}
		cfg->local.hosts_names += (unsigned)n;
		cfg->local.hosts_skipped += skipped;
	}
	if (cfg->local.private_reverse && rrc_local_add_empty_zones(l)) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int finalize(struct rrc_config *cfg, const struct rrc_config_overrides *ov, bool acl_given,
		    char *err)
{
	if (cfg->log_target == RRC_LOG_TO_FILE && !cfg->log_file[0]) {
		snprintf(err, RRC_ERR_LEN, "log.target: file needs log.file (or --log-file)");
		return -EINVAL;
	}
	if (cfg->n_listen == 0) {
		for (size_t i = 0; i < RRC_ARRAY_SIZE(default_listen); i++)
			rrc_addr_parse(default_listen[i], 53, &cfg->listen[cfg->n_listen++]);
	}
	if (cfg->n_upstreams == 0) {
		int rc = read_resolv_conf(
			cfg, ov && ov->resolv_conf ? ov->resolv_conf : "/etc/resolv.conf", err);
		if (rc)
			return rc;
	}
	/* The pools' servers after the default pool's. */
	if (cfg->n_upstreams + cfg->n_pool_servers > RRC_MAX_UPSTREAMS) {
		snprintf(err, RRC_ERR_LEN, "more than %d upstream servers in all pools",
			 RRC_MAX_UPSTREAMS);
		return -EINVAL;
	}
	cfg->pools[0].first = 0;
	cfg->pools[0].n = (uint16_t)cfg->n_upstreams;
	cfg->pools[0].balance = cfg->balance;
	for (unsigned p = 1; p < cfg->n_pools; p++) {
		struct rrc_forward_pool *pool = &cfg->pools[p];
		memcpy(&cfg->upstreams[cfg->n_upstreams], &cfg->pool_servers[pool->first],
		       pool->n * sizeof(cfg->upstreams[0]));
		pool->first = (uint16_t)cfg->n_upstreams;
		cfg->n_upstreams += pool->n;
		if (!pool->balance_given)
			pool->balance = cfg->balance;
		static const uint64_t ns_key[2] = {0x452821E638D01377ull, 0xBE5466CF34E90C6Cull};
		pool->ns = rrc_hash64(ns_key, (const uint8_t *)pool->name, strlen(pool->name)) | 1;
	}
	cfg->n_pool_servers = 0;
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		int j = listen_reached(cfg, &cfg->upstreams[i].addr);
		if (j >= 0) {
			char a[64], l[64];
			rrc_addr_format(&cfg->upstreams[i].addr, a, sizeof(a));
			rrc_addr_format(&cfg->listen[j], l, sizeof(l));
			snprintf(err, RRC_ERR_LEN,
				 "upstream %s is rrcache itself (listen %s): queries would loop", a,
				 l);
			return -EINVAL;
		}
	}
	if (build_local(cfg, err))
		return -EINVAL;
	/* The trust store, once, when an upstream speaks TLS. */
	bool any_tls = false;
	for (unsigned i = 0; i < cfg->n_upstreams; i++)
		any_tls = any_tls || cfg->upstreams[i].tls;
	if (any_tls) {
		char why[RRC_ERR_LEN];
		cfg->tls_client = rrc_tls_client_creds(cfg->tls.ca_file, cfg->tls.insecure, why);
		if (!cfg->tls_client) {
			snprintf(err, RRC_ERR_LEN, "tls.ca_file: %.480s", why);
			return -EINVAL;
		}
		if (cfg->tls.insecure)
			rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
				"tls.insecure: the certificates of TLS upstreams are not verified; "
				"anyone on the path can answer for them (for tests only)");
	}
	/* The certificate clients are shown, read again at each reload (a renewed one is
	 * served to new connections without a restart). */
	if (cfg->n_listen_tls || cfg->n_listen_https) {
		char why[RRC_ERR_LEN];
		if (!cfg->tls.cert_file[0] || !cfg->tls.key_file[0]) {
			snprintf(err, RRC_ERR_LEN, "%s needs tls.cert_file and tls.key_file",
				 cfg->n_listen_tls ? "listen_tls" : "listen_https");
			return -EINVAL;
		}
		cfg->tls_server = rrc_tls_server_creds(cfg->tls.cert_file, cfg->tls.key_file, why);
		if (!cfg->tls_server) {
			snprintf(err, RRC_ERR_LEN, "tls.cert_file: %.480s", why);
			return -EINVAL;
		}
	}
	if (!acl_given) {
		cfg->acl_rules = calloc(16, sizeof(*cfg->acl_rules));
		if (!cfg->acl_rules) {
			snprintf(err, RRC_ERR_LEN, "out of memory");
			return -ENOMEM;
		}
		cfg->n_acl_rules = rrc_acl_default_rules(cfg->acl_rules, 16);
	}
	if (cfg->stats.listen.len == 0)
		rrc_addr_parse(default_stats_listen, 9153, &cfg->stats.listen);
	if (!cfg->stats_allow_given) {
		for (size_t i = 0; i < RRC_ARRAY_SIZE(default_stats_allow); i++) {
			if (add_rule(&cfg->stats.allow, &cfg->stats.n_allow, default_stats_allow[i],
				     true)) {
				snprintf(err, RRC_ERR_LEN, "out of memory");
				return -ENOMEM;
			}
		}
	}
	struct rrc_redis_conf *rc = &cfg->redis;
	if (rc->cluster || rc->n_seeds) {
		const char *bad =
			!rc->cluster	  ? "redis.nodes goes with redis.cluster: true"
			: rc->n_sentinels ? "redis: cluster or sentinels, not both"
			: rc->unix_socket ? "redis.cluster: a unix socket is no cluster"
			: rc->db || (rc->db_key != UINT32_MAX && rc->db_key)
				? "redis.cluster: a cluster has database 0 only"
			: !rc->n_seeds && !rc->enabled ? "redis.cluster: give redis.nodes "
							 "(or a url)"
			: strpbrk(rc->key_prefix, "{}")
				? "redis.key_prefix: no { or } with a cluster (keys carry "
				  "their own hash tag)"
				: NULL;
		if (bad) {
			snprintf(err, RRC_ERR_LEN, "%s", bad);
			return -EINVAL;
		}
		if (!rc->n_seeds) {
			/* The url's host is the one seed. */
			memcpy(rc->seeds[0].host, rc->host, sizeof(rc->seeds[0].host));
			rc->seeds[0].port = rc->port;
			rc->n_seeds = 1;
		}
		rc->enabled = true;
		if (rc->user_key[0])
			memcpy(rc->user, rc->user_key, sizeof(rc->user));
	} else if (rc->n_sentinels) {
		if (rc->enabled) {
			snprintf(err, RRC_ERR_LEN, "redis: give url or sentinels, not both");
			return -EINVAL;
		}
		if (!rc->master_name[0]) {
			snprintf(err, RRC_ERR_LEN,
				 "redis.sentinels: redis.master_name is needed (the name the "
				 "sentinels monitor the master under)");
			return -EINVAL;
		}
		rc->enabled = true;
		rc->unix_socket = false;
		rc->host[0] = '\0';
		rc->port = 0;
		if (rc->db_key != UINT32_MAX)
			rc->db = rc->db_key;
		memcpy(rc->user, rc->user_key, sizeof(rc->user_key));
	} else if (rc->db_key != UINT32_MAX || rc->user_key[0] || rc->master_name[0] ||
		   rc->sentinel_password[0]) {
		snprintf(err, RRC_ERR_LEN,
			 "redis.master_name, db, user and sentinel_password_file go with "
			 "redis.sentinels (a url carries its own user and db; user also goes with "
			 "redis.cluster)");
		return -EINVAL;
	}
	if (cfg->redis.enabled && !cfg->redis.key_secret[0])
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"redis: no key_secret: the keys are hashes anyone can compute from a name "
			"(so whether a name was asked can be told from Redis), and values are not "
			"sealed (each L2 hit is parsed again); give every instance of the fleet "
			"the same redis.key_secret_file");
	if (cfg->dnstap.file[0] && cfg->dnstap.socket[0]) {
		snprintf(err, RRC_ERR_LEN, "dnstap: give file or socket, not both");
		return -EINVAL;
	}
	cfg->dnstap.enabled = cfg->dnstap.file[0] || cfg->dnstap.socket[0];
	if (cfg->min_ttl > cfg->max_ttl) {
		snprintf(err, RRC_ERR_LEN, "cache.min_ttl (%u) is above cache.max_ttl (%u)",
			 cfg->min_ttl, cfg->max_ttl);
		return -EINVAL;
	}
	if (cfg->upstream_timeout_ms > cfg->client_timeout_ms) {
		snprintf(err, RRC_ERR_LEN,
			 "upstream.timeout (%ums) is above upstream.client_timeout (%ums)",
			 cfg->upstream_timeout_ms, cfg->client_timeout_ms);
		return -EINVAL;
	}
	if (cfg->redis.backoff_min_ms > cfg->redis.backoff_max_ms) {
		snprintf(err, RRC_ERR_LEN,
			 "redis.backoff_min (%ums) is above redis.backoff_max (%ums)",
			 cfg->redis.backoff_min_ms, cfg->redis.backoff_max_ms);
		return -EINVAL;
	}
	if (cfg->tcp_max_per_client > cfg->tcp_max_connections)
		cfg->tcp_max_per_client = cfg->tcp_max_connections;
	if (cfg->workers == 0) {
		unsigned n = rrc_config_cpus(ov && ov->cgroup_dir ? ov->cgroup_dir : NULL);
		cfg->workers = RRC_MIN(n, RRC_MAX_WORKERS);
	}
	return 0;
}

/* The index of path among the n in list, adding it when absent (a file named by several
 * groups is loaded once). -1 when there are too many. */
static int list_index(const char **list, size_t *n, const char *path)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(list[i], path) == 0)
			return (int)i;
	if (*n >= RRC_POLICY_MAX_LISTS)
		return -1;
	list[*n] = path;
	return (int)(*n)++;
}

int rrc_config_load_policy(struct rrc_config *cfg, const struct rrc_config *previous, char *report,
			   size_t report_cap, char err[RRC_ERR_LEN])
{
	struct rrc_policy_conf *pc = &cfg->policy;
	if (report && report_cap)
		report[0] = '\0';
	rrc_policy_put(pc->matcher);
	pc->matcher = NULL;
	/* Every file once: the blocklists (global, then each group's), then the allowlists;
	 * the matcher numbers them in that order, block ones first. */
	const char *block[RRC_POLICY_MAX_LISTS], *allow[RRC_POLICY_MAX_LISTS];
	size_t nb = 0, na = 0;
	int bi[RRC_POLICY_MAX_LISTS], ai[RRC_POLICY_MAX_LISTS];
	int gbi[RRC_POLICY_MAX_GROUPS][RRC_POLICY_GROUP_LISTS];
	int gai[RRC_POLICY_MAX_GROUPS][RRC_POLICY_GROUP_LISTS];
	bool full = false;
	for (unsigned i = 0; i < pc->n_block; i++)
		full |= (bi[i] = list_index(block, &nb, pc->blocklists[i])) < 0;
	for (unsigned g = 0; g < pc->n_groups; g++)
		for (unsigned i = 0; i < pc->groups[g].n_block; i++)
			full |= (gbi[g][i] = list_index(block, &nb, pc->groups[g].blocklists[i])) <
				0;
	for (unsigned i = 0; i < pc->n_allow; i++)
		full |= (ai[i] = list_index(allow, &na, pc->allowlists[i])) < 0;
	for (unsigned g = 0; g < pc->n_groups; g++)
		for (unsigned i = 0; i < pc->groups[g].n_allow; i++)
			full |= (gai[g][i] = list_index(allow, &na, pc->groups[g].allowlists[i])) <
				0;
	if (full || nb + na > RRC_POLICY_MAX_LISTS) {
		snprintf(err, RRC_ERR_LEN, "policy: more than %d different lists",
			 RRC_POLICY_MAX_LISTS);
		return -1;
	}
	/* The lists that apply to each group, as bits of the matcher's numbering. */
	pc->default_mask = 0;
	for (unsigned i = 0; i < pc->n_block; i++)
		pc->default_mask |= (uint64_t)1 << bi[i];
	for (unsigned i = 0; i < pc->n_allow; i++)
		pc->default_mask |= (uint64_t)1 << (nb + (size_t)ai[i]);
	for (unsigned g = 0; g < pc->n_groups; g++) {
		struct rrc_policy_group *gr = &pc->groups[g];
		gr->mask = gr->use_global ? pc->default_mask : 0;
		for (unsigned i = 0; i < gr->n_block; i++)
			gr->mask |= (uint64_t)1 << gbi[g][i];
		for (unsigned i = 0; i < gr->n_allow; i++)
			gr->mask |= (uint64_t)1 << (nb + (size_t)gai[g][i]);
	}
	if (nb + na == 0)
		return 0;
	pc->matcher = rrc_policy_load(block, nb, allow, na, report, report_cap, err);
	if (pc->matcher)
		return 0;
	if (previous) {
		/* The lists loaded before, with the groups' lists as they were numbered then. */
		const struct rrc_policy_conf *old = &previous->policy;
		pc->matcher = rrc_policy_hold(old->matcher);
		pc->default_mask = old->default_mask;
		for (unsigned g = 0; g < pc->n_groups; g++) {
			pc->groups[g].mask = old->default_mask;
			for (unsigned k = 0; k < old->n_groups; k++)
				if (strcmp(old->groups[k].name, pc->groups[g].name) == 0)
					pc->groups[g].mask = old->groups[k].mask;
		}
	}
	return -1;
}

unsigned rrc_config_pool_of_server(const struct rrc_config *cfg, unsigned i)
{
	for (unsigned p = 1; p < cfg->n_pools; p++)
		if (i >= cfg->pools[p].first && i < (unsigned)cfg->pools[p].first + cfg->pools[p].n)
			return p;
	return 0;
}

int rrc_policy_conf_group(const struct rrc_policy_conf *pc, const struct sockaddr *sa)
{
	int best = -1, best_len = -1;
	for (unsigned g = 0; g < pc->n_groups; g++)
		for (size_t i = 0; i < pc->groups[g].n_clients; i++) {
			const struct rrc_acl_rule *r = &pc->groups[g].clients[i];
			if ((int)r->prefix > best_len && rrc_acl_rule_matches(r, sa)) {
				best = (int)g;
				best_len = r->prefix;
			}
		}
	return best;
}

uint64_t rrc_policy_conf_mask(const struct rrc_policy_conf *pc, int group)
{
	return group < 0 ? pc->default_mask : pc->groups[group].mask;
}

struct rrc_config *rrc_config_build(const char *path, const struct rrc_config_overrides *ov,
				    char err[RRC_ERR_LEN])
{
	struct rrc_config *cfg = malloc(sizeof(*cfg));
	bool acl_given = false;
	if (!cfg) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return NULL;
	}
	*cfg = rrc_config_defaults;
	cfg->no_lookups = ov && ov->no_lookups;
	err[0] = '\0';
	if (path) {
		cfg->path = strdup(path);
		if (!cfg->path || load_file(cfg, path, err, &acl_given))
			goto fail;
	}
	if (ov && apply_overrides(cfg, ov, err))
		goto fail;
	if (finalize(cfg, ov, acl_given, err))
		goto fail;
	return cfg;
fail:
	if (!err[0])
		snprintf(err, RRC_ERR_LEN, "out of memory");
	rrc_config_free(cfg);
	return NULL;
}

void rrc_config_free(struct rrc_config *cfg)
{
	if (!cfg)
		return;
	free_paths(cfg->policy.blocklists, &cfg->policy.n_block);
	free_paths(cfg->policy.allowlists, &cfg->policy.n_allow);
	for (unsigned i = 0; i < cfg->policy.n_groups; i++) {
		struct rrc_policy_group *g = &cfg->policy.groups[i];
		free_paths(g->blocklists, &g->n_block);
		free_paths(g->allowlists, &g->n_allow);
		free(g->clients);
	}
	rrc_policy_put(cfg->policy.matcher);
	rrc_route_destroy(cfg->route);
	for (unsigned i = 0; i < cfg->local.n_records; i++)
		free(cfg->local.records[i]);
	free(cfg->local.records);
	free(cfg->local.record_line);
	free(cfg->local.record_col);
	if (cfg->local.hosts_files)
		free_paths(cfg->local.hosts_files, &cfg->local.n_hosts_files);
	free(cfg->local.hosts_files);
	rrc_local_destroy(cfg->local.data);
	rrc_tls_creds_unref(cfg->tls_client);
	rrc_tls_creds_unref(cfg->tls_server);
	free(cfg->ratelimit.exempt);
	free(cfg->acl_rules);
	free(cfg->stats.allow);
	free(cfg->path);
	free(cfg);
}

void rrc_config_fit_descriptors(struct rrc_config *cfg, uint64_t fd_limit, char *note, size_t cap)
{
	note[0] = '\0';
	uint64_t reserve = RRC_FD_RESERVE((uint64_t)cfg->workers, cfg->n_listen);
	uint64_t left = fd_limit > reserve ? fd_limit - reserve : 0;
	uint32_t tcp = cfg->tcp_max_connections, inflight = cfg->max_inflight;
	/* Client connections take at most half of what is left; upstream queries the rest. */
	if (tcp > left / 2)
		tcp = (uint32_t)RRC_MAX(left / 2, 1);
	uint64_t rest = left > tcp ? left - tcp : 0;
	uint64_t per_worker = rest / RRC_FD_PER_INFLIGHT / cfg->workers;
	if (inflight > per_worker)
		inflight = (uint32_t)RRC_MAX(per_worker, 1);
	if (tcp == cfg->tcp_max_connections && inflight == cfg->max_inflight)
		return;
	snprintf(note, cap,
		 "%llu file descriptors allowed: tcp.max_connections %u -> %u, "
		 "upstream.max_inflight %u -> %u per worker",
		 (unsigned long long)fd_limit, cfg->tcp_max_connections, tcp, cfg->max_inflight,
		 inflight);
	cfg->tcp_max_connections = tcp;
	if (cfg->tcp_max_per_client > tcp)
		cfg->tcp_max_per_client = tcp;
	cfg->max_inflight = inflight;
}
