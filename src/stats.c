/*
 * stats: histograms, bounded label sets, rendering. See include/rrcache/stats.h.
 */
#include "rrcache/stats.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 100 us .. 2.5 s: a cache hit lands in the first buckets, an upstream answer in the middle,
 * a timeout in the last. */
const uint32_t rrc_hist_bounds_us[RRC_HIST_BOUNDS] = {100,    250,    500,     1000,   2500,
						      5000,   10000,  25000,   50000,  100000,
						      250000, 500000, 1000000, 2500000};

void rrc_hist_merge(struct rrc_hist *into, const struct rrc_hist *from)
{
	for (unsigned i = 0; i <= RRC_HIST_BOUNDS; i++)
		into->bucket[i] += from->bucket[i];
	into->count += from->count;
	into->sum_us += from->sum_us;
}

double rrc_hist_quantile(const struct rrc_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	double rank = q * (double)h->count;
	uint64_t seen = 0;
	for (unsigned i = 0; i <= RRC_HIST_BOUNDS; i++) {
		if (h->bucket[i] == 0 || (double)(seen + h->bucket[i]) < rank) {
			seen += h->bucket[i];
			continue;
		}
		double lo = i == 0 ? 0 : rrc_hist_bounds_us[i - 1];
		if (i == RRC_HIST_BOUNDS)
			return lo; /* +Inf: the last finite bound is all that is known */
		double hi = rrc_hist_bounds_us[i];
		return lo + (hi - lo) * ((rank - (double)seen) / (double)h->bucket[i]);
	}
	return rrc_hist_bounds_us[RRC_HIST_BOUNDS - 1];
}

/* ---- label sets ---- */

static const struct {
	uint16_t type;
	const char *name;
} qtypes[RRC_QT_OTHER] = {{1, "A"},	 {28, "AAAA"}, {5, "CNAME"}, {15, "MX"},     {16, "TXT"},
			  {2, "NS"},	 {6, "SOA"},   {12, "PTR"},  {33, "SRV"},    {64, "SVCB"},
			  {65, "HTTPS"}, {257, "CAA"}, {43, "DS"},   {48, "DNSKEY"}, {255, "ANY"}};

unsigned rrc_stats_qtype_slot(uint16_t qtype)
{
	for (unsigned i = 0; i < RRC_QT_OTHER; i++) {
		if (qtypes[i].type == qtype)
			return i;
	}
	return RRC_QT_OTHER;
}

const char *rrc_stats_qtype_name(unsigned slot)
{
	return slot < RRC_QT_OTHER ? qtypes[slot].name : "other";
}

unsigned rrc_stats_rcode_slot(unsigned rcode)
{
	switch (rcode) {
	case 0:
		return RRC_RC_NOERROR;
	case 1:
		return RRC_RC_FORMERR;
	case 2:
		return RRC_RC_SERVFAIL;
	case 3:
		return RRC_RC_NXDOMAIN;
	case 4:
		return RRC_RC_NOTIMP;
	case 5:
		return RRC_RC_REFUSED;
	case 16:
		return RRC_RC_BADVERS;
	default:
		return RRC_RC_OTHER;
	}
}

const char *rrc_stats_rcode_name(unsigned slot)
{
	static const char *const names[RRC_RC_COUNT] = {"NOERROR",  "FORMERR", "SERVFAIL",
							"NXDOMAIN", "NOTIMP",  "REFUSED",
							"BADVERS",  "other"};
	return slot < RRC_RC_COUNT ? names[slot] : "other";
}

/* ---- rendering ---- */

size_t rrc_stats_key_text(enum rrc_top_cat cat, const struct rrc_topk_entry *e, char *out,
			  size_t cap)
{
	if (cat != RRC_TOP_CLIENTS)
		return rrc_buf_name_text(e->key, e->len, out, cap);
	int family = e->len == 5 && e->key[0] == 4    ? AF_INET
		     : e->len == 17 && e->key[0] == 6 ? AF_INET6
						      : 0;
	if (!family || !inet_ntop(family, e->key + 1, out, (socklen_t)cap)) {
		snprintf(out, cap, "?");
		return 1;
	}
	return strlen(out);
}

static void family(struct rrc_buf *b, const char *name, const char *type, const char *help)
{
	rrc_buf_printf(b, "# HELP rrcache_%s %s\n# TYPE rrcache_%s %s\n", name, help, name, type);
}

/* s as a Prometheus label value: backslash, double quote and newline escaped. */
static void label_value(const char *s, char *out, size_t cap)
{
	size_t o = 0;
	for (; *s && o + 3 < cap; s++) {
		if (*s == '\\' || *s == '"') {
			out[o++] = '\\';
			out[o++] = *s;
		} else if (*s == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
}

/* A family of one sample without labels. */
static void single(struct rrc_buf *b, const char *name, const char *type, const char *help,
		   uint64_t value)
{
	family(b, name, type, help);
	rrc_buf_printf(b, "rrcache_%s %llu\n", name, (unsigned long long)value);
}

static void hist_prom(struct rrc_buf *b, const char *name, const char *labels,
		      const struct rrc_hist *h)
{
	uint64_t cum = 0;
	const char *sep = labels[0] ? "," : "";
	for (unsigned i = 0; i < RRC_HIST_BOUNDS; i++) {
		cum += h->bucket[i];
		rrc_buf_printf(b, "rrcache_%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
			       rrc_hist_bounds_us[i] / 1e6, (unsigned long long)cum);
	}
	cum += h->bucket[RRC_HIST_BOUNDS];
	rrc_buf_printf(b, "rrcache_%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
		       (unsigned long long)cum);
	rrc_buf_printf(b, "rrcache_%s_sum%s%s%s %.6f\n", name, labels[0] ? "{" : "", labels,
		       labels[0] ? "}" : "", (double)h->sum_us / 1e6);
	rrc_buf_printf(b, "rrcache_%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels,
		       labels[0] ? "}" : "", (unsigned long long)h->count);
}

#define U(x) ((unsigned long long)(x))

void rrc_stats_prometheus(const struct rrc_stats_view *v, struct rrc_buf *b)
{
	const struct rrc_worker_stats *s = v->sum;
	const struct rrc_cache_stats *c = v->cache;

	family(b, "build_info", "gauge", "Version of rrcache and of the libraries it runs on.");
	rrc_buf_printf(b, "rrcache_build_info{version=\"");
	rrc_buf_prom_label(b, (const uint8_t *)v->version, strlen(v->version));
	rrc_buf_printf(b, "\",libuv=\"");
	rrc_buf_prom_label(b, (const uint8_t *)v->libuv_version, strlen(v->libuv_version));
	rrc_buf_printf(b, "\",ldns=\"");
	rrc_buf_prom_label(b, (const uint8_t *)v->ldns_version, strlen(v->ldns_version));
	rrc_buf_printf(b, "\"} 1\n");
	family(b, "uptime_seconds", "gauge", "Seconds since rrcache started.");
	rrc_buf_printf(b, "rrcache_uptime_seconds %.3f\n", v->uptime_s);
	family(b, "workers", "gauge", "Worker threads.");
	rrc_buf_printf(b, "rrcache_workers %u\n", v->n_workers);

	family(b, "queries_total", "counter", "Client queries received, by transport.");
	rrc_buf_printf(b, "rrcache_queries_total{transport=\"udp\"} %llu\n", U(s->queries_udp));
	rrc_buf_printf(b, "rrcache_queries_total{transport=\"tcp\"} %llu\n", U(s->queries_tcp));
	rrc_buf_printf(b, "rrcache_queries_total{transport=\"dot\"} %llu\n", U(s->queries_dot));
	rrc_buf_printf(b, "rrcache_queries_total{transport=\"doh\"} %llu\n", U(s->queries_doh));
	family(b, "queries_by_type_total", "counter",
	       "Well-formed client queries, by query type (a fixed set, the rest as other).");
	for (unsigned i = 0; i < RRC_QT_COUNT; i++)
		rrc_buf_printf(b, "rrcache_queries_by_type_total{qtype=\"%s\"} %llu\n",
			       rrc_stats_qtype_name(i), U(s->qtype[i]));
	family(b, "responses_total", "counter", "Answers sent to clients, by response code.");
	for (unsigned i = 0; i < RRC_RC_COUNT; i++)
		rrc_buf_printf(b, "rrcache_responses_total{rcode=\"%s\"} %llu\n",
			       rrc_stats_rcode_name(i), U(s->rcode[i]));
	single(b, "responses_truncated_total", "counter", "Answers sent with TC=1.", s->truncated);
	family(b, "response_latency_seconds", "histogram",
	       "Client-visible latency: from the query's arrival to its answer leaving.");
	hist_prom(b, "response_latency_seconds", "", &s->latency);

	family(b, "cache_requests_total", "counter", "L1 cache lookups by result.");
	rrc_buf_printf(b, "rrcache_cache_requests_total{result=\"hit\"} %llu\n", U(c->hits));
	rrc_buf_printf(b, "rrcache_cache_requests_total{result=\"miss\"} %llu\n", U(c->misses));
	rrc_buf_printf(b, "rrcache_cache_requests_total{result=\"stale\"} %llu\n", U(c->stale));
	single(b, "cache_expired_total", "counter", "Entries found expired by a lookup.",
	       c->expired);
	single(b, "cache_inserted_total", "counter", "Answers stored in L1.", c->inserted);
	single(b, "cache_insert_failures_total", "counter",
	       "Answers L1 could not take (out of memory, or larger than a shard's budget).",
	       s->cache_insert_failures);
	single(b, "cache_evicted_total", "counter", "Entries evicted to keep the byte budget.",
	       c->evicted);
	single(b, "cache_entries", "gauge", "Entries in L1.", c->entries);
	single(b, "cache_bytes", "gauge", "Bytes L1 holds, as charged against its budget.",
	       c->bytes);
	single(b, "cache_budget_bytes", "gauge", "L1's byte budget (cache.size).", c->budget);
	single(b, "stale_answers_total", "counter", "Expired answers served (RFC 8767).",
	       s->stale_served);
	single(b, "coalesced_queries_total", "counter",
	       "Queries that joined an identical one already in flight.", s->coalesced);

	/* Each upstream's label, escaped once for all its families. */
	char lab[RRC_BALANCER_MAX][160];
	for (unsigned i = 0; i < v->n_upstreams; i++) {
		struct rrc_buf lb = {.p = lab[i], .cap = sizeof(lab[i]) - 1};
		rrc_buf_printf(&lb, "upstream=\"");
		rrc_buf_prom_label(&lb, (const uint8_t *)v->upstream_names[i],
				   strlen(v->upstream_names[i]));
		rrc_buf_printf(&lb, "\",pool=\"");
		rrc_buf_prom_label(&lb, (const uint8_t *)v->upstream_pools[i],
				   strlen(v->upstream_pools[i]));
		rrc_buf_printf(&lb, "\"");
		lab[i][lb.overflow ? 0 : lb.len] = '\0';
	}
	static const struct {
		const char *name, *type, *help;
		size_t off;
	} per_up[] = {
		{"upstream_queries_total", "counter", "Queries sent to each upstream.",
		 offsetof(struct rrc_upstream_stats, queries)},
		{"upstream_timeouts_total", "counter",
		 "Upstream attempts that got no answer in time.",
		 offsetof(struct rrc_upstream_stats, timeouts)},
		{"upstream_errors_total", "counter",
		 "Upstream attempts that failed (refused, socket error, malformed reply).",
		 offsetof(struct rrc_upstream_stats, errors)},
		{"upstream_outstanding", "gauge", "Queries in flight to each upstream.",
		 offsetof(struct rrc_upstream_stats, outstanding)},
		{"upstream_up", "gauge",
		 "Workers that count the upstream up (rrcache_workers when all do, 0 when it is "
		 "down).",
		 offsetof(struct rrc_upstream_stats, up)},
		{"upstream_tls_handshakes_total", "counter",
		 "TLS handshakes completed with each DNS-over-TLS upstream.",
		 offsetof(struct rrc_upstream_stats, tls_handshakes)},
		{"upstream_tls_resumed_total", "counter",
		 "Of those, handshakes that resumed an earlier session (a ticket).",
		 offsetof(struct rrc_upstream_stats, tls_resumed)},
		{"upstream_tls_connections", "gauge",
		 "TLS connections open to each DNS-over-TLS upstream.",
		 offsetof(struct rrc_upstream_stats, tls_connections)},
	};
	for (size_t f = 0; f < RRC_ARRAY_SIZE(per_up); f++) {
		family(b, per_up[f].name, per_up[f].type, per_up[f].help);
		for (unsigned i = 0; i < v->n_upstreams; i++) {
			uint64_t val;
			memcpy(&val, (const uint8_t *)&s->up[i] + per_up[f].off, sizeof(val));
			rrc_buf_printf(b, "rrcache_%s{%s} %llu\n", per_up[f].name, lab[i], U(val));
		}
	}
	family(b, "upstream_rtt_seconds", "histogram",
	       "Round-trip time of answered upstream queries.");
	for (unsigned i = 0; i < v->n_upstreams; i++)
		hist_prom(b, "upstream_rtt_seconds", lab[i], &s->up[i].rtt);
	single(b, "upstream_tcp_queries_total", "counter",
	       "Upstream queries retried over TCP (TC=1).", s->upstream_tcp);
	single(b, "unwanted_replies_total", "counter",
	       "Upstream datagrams ignored: wrong address, port, ID or question (RFC 5452).",
	       s->unwanted_replies);
	single(b, "malformed_replies_total", "counter", "Upstream replies refused as malformed.",
	       s->malformed_replies);
	single(b, "upstream_local_errors_total", "counter",
	       "Upstream queries this machine could not send (no descriptor, buffer, port or "
	       "memory); never counted against the upstream.",
	       s->upstream_local_errors);
	single(b, "upstream_sockets", "gauge",
	       "UDP sockets to upstreams open now (upstream.sockets per upstream and worker, and "
	       "retired ones still waiting for replies).",
	       s->upstream_sockets);
	single(b, "upstream_sockets_opened_total", "counter",
	       "UDP sockets to upstreams opened, each bound to a new random port.",
	       s->upstream_sockets_opened);

	family(b, "malformed_queries_total", "counter", "Client queries refused, by reason.");
	for (unsigned i = 1; i < RRC_WR_COUNT; i++)
		rrc_buf_printf(b, "rrcache_malformed_queries_total{reason=\"%s\"} %llu\n",
			       rrc_wire_reason_name((enum rrc_wire_reason)i), U(s->malformed[i]));
	family(b, "acl_total", "counter", "Queries from clients outside the ACL, by action.");
	rrc_buf_printf(b, "rrcache_acl_total{action=\"drop\"} %llu\n", U(s->acl_dropped));
	rrc_buf_printf(b, "rrcache_acl_total{action=\"refuse\"} %llu\n", U(s->acl_refused));
	family(b, "policy_answers_total", "counter",
	       "Queries decided by a domain list: blocked (answered policy.block_response) or "
	       "allowed (an allow rule over a block rule), by list.");
	for (size_t i = 0; i < v->n_lists; i++) {
		char path[300];
		label_value(v->lists[i].path, path, sizeof(path));
		rrc_buf_printf(
			b, "rrcache_policy_answers_total{action=\"blocked\",list=\"%s\"} %llu\n",
			path, U(s->policy_blocked[i]));
		rrc_buf_printf(
			b, "rrcache_policy_answers_total{action=\"allowed\",list=\"%s\"} %llu\n",
			path, U(s->policy_allowed[i]));
	}
	family(b, "ratelimit_total", "counter",
	       "UDP queries over their prefix's ratelimit.qps: dropped, or answered TC=1 (slipped) "
	       "so that a real client asks again over TCP.");
	rrc_buf_printf(b, "rrcache_ratelimit_total{action=\"dropped\"} %llu\n",
		       U(s->ratelimit_dropped));
	rrc_buf_printf(b, "rrcache_ratelimit_total{action=\"slipped\"} %llu\n",
		       U(s->ratelimit_slipped));
	family(b, "dynblock_queries_total", "counter",
	       "Queries from client prefixes under a dynamic block, by what they got "
	       "(dynblock.action).");
	static const char *const db_actions[] = {"dropped", "refused", "truncated"};
	for (unsigned i = 0; i < 3; i++)
		rrc_buf_printf(b, "rrcache_dynblock_queries_total{action=\"%s\"} %llu\n",
			       db_actions[i], U(s->dynblock_queries[i]));
	family(b, "dynblock_started_total", "counter",
	       "Dynamic blocks started: by the rate of NXDOMAIN answers, of queries past the "
	       "cache, or by hand through /api/v1/blocks.");
	for (unsigned i = 0; i < RRC_DB_REASONS; i++)
		rrc_buf_printf(b, "rrcache_dynblock_started_total{reason=\"%s\"} %llu\n",
			       rrc_dynblock_reason_name((enum rrc_dynblock_reason)i),
			       U(v->dynblock.started[i]));
	single(b, "dynblock_active", "gauge", "Client prefixes under a dynamic block now.",
	       v->dynblock_active);
	single(b, "dynblock_refused_total", "counter",
	       "Dynamic blocks not started: dynblock.max_blocks were in force.",
	       v->dynblock.refused);
	single(b, "dynblock_removed_total", "counter",
	       "Dynamic blocks ended early through /api/v1/blocks.", v->dynblock.removed);
	single(b, "prefetches_total", "counter",
	       "Cache entries refreshed in the background: asked cache.prefetch_min_hits times and "
	       "again in the last tenth of their TTL.",
	       s->prefetches);
	single(b, "prefetch_fleet_skipped_total", "counter",
	       "Of those, refreshes left to another instance of the fleet (it held the key's Redis "
	       "lock).",
	       s->prefetch_fleet_skipped);
	family(b, "local_answers_total", "counter",
	       "Queries answered from rrcache's own data (local.*), by source: records, hosts "
	       "files, or an empty zone (RFC 6303, home.arpa).");
	static const char *const local_src[] = {"records", "hosts", "empty_zone"};
	for (unsigned i = 0; i < 3; i++)
		rrc_buf_printf(b, "rrcache_local_answers_total{source=\"%s\"} %llu\n", local_src[i],
			       U(s->local_answers[i]));
	single(b, "any_udp_total", "counter",
	       "ANY queries over UDP answered by rrcache per RFC 8482 (policy.any_udp).",
	       s->any_udp);
	family(b, "policy_group_blocked_total", "counter",
	       "Queries answered as blocked, by the client's group (policy.groups; \"default\" for "
	       "clients in none).");
	rrc_buf_printf(b, "rrcache_policy_group_blocked_total{group=\"default\"} %llu\n",
		       U(s->policy_blocked_group[0]));
	for (unsigned i = 0; i < v->n_groups; i++) {
		char name[80];
		label_value(v->group_names[i], name, sizeof(name));
		rrc_buf_printf(b, "rrcache_policy_group_blocked_total{group=\"%s\"} %llu\n", name,
			       U(s->policy_blocked_group[1 + i]));
	}
	family(b, "policy_rules", "gauge", "Rules loaded from each domain list.");
	for (size_t i = 0; i < v->n_lists; i++) {
		char path[300];
		label_value(v->lists[i].path, path, sizeof(path));
		rrc_buf_printf(b, "rrcache_policy_rules{list=\"%s\",kind=\"%s\"} %llu\n", path,
			       v->lists[i].allow ? "allow" : "block", U(v->lists[i].rules));
	}
	family(b, "policy_unreadable_lines", "gauge",
	       "Lines of each domain list that could not be read (see the log).");
	for (size_t i = 0; i < v->n_lists; i++) {
		char path[300];
		label_value(v->lists[i].path, path, sizeof(path));
		rrc_buf_printf(b, "rrcache_policy_unreadable_lines{list=\"%s\"} %llu\n", path,
			       U(v->lists[i].bad));
	}
	single(b, "inflight_limit_total", "counter",
	       "Misses answered SERVFAIL because upstream.max_inflight was reached.",
	       s->inflight_limit);
	single(b, "waiters_refused_total", "counter",
	       "Misses answered SERVFAIL because upstream.max_waiters_per_query or max_waiters "
	       "was reached.",
	       s->waiters_refused);
	single(b, "udp_send_dropped_total", "counter", "UDP answers the socket could not take.",
	       s->udp_send_dropped);

	family(b, "tcp_connections_total", "counter", "TCP connections, by outcome.");
	rrc_buf_printf(b, "rrcache_tcp_connections_total{outcome=\"accepted\"} %llu\n",
		       U(s->tcp_accepted));
	rrc_buf_printf(b, "rrcache_tcp_connections_total{outcome=\"refused_limit\"} %llu\n",
		       U(s->tcp_refused_limit));
	rrc_buf_printf(b, "rrcache_tcp_connections_total{outcome=\"refused_acl\"} %llu\n",
		       U(s->tcp_refused_acl));
	rrc_buf_printf(b, "rrcache_tcp_connections_total{outcome=\"closed_idle\"} %llu\n",
		       U(s->tcp_closed_idle));
	single(b, "tcp_connections_open", "gauge", "TCP client connections open now.", s->tcp_open);
	single(b, "dot_handshakes_total", "counter",
	       "TLS handshakes completed with DNS-over-TLS clients (listen_tls).",
	       s->dot_handshakes);
	single(b, "dot_resumed_total", "counter",
	       "Of those, handshakes that resumed a session with a ticket.", s->dot_resumed);
	family(b, "dot_handshake_failures_total", "counter",
	       "DNS-over-TLS and HTTPS clients whose handshake failed, did not end within "
	       "tls.handshake_timeout, or was not begun (over tls.handshakes_per_client).");
	rrc_buf_printf(b, "rrcache_dot_handshake_failures_total{reason=\"failed\"} %llu\n",
		       U(s->dot_handshake_failures));
	rrc_buf_printf(b, "rrcache_dot_handshake_failures_total{reason=\"timeout\"} %llu\n",
		       U(s->dot_handshake_timeouts));
	rrc_buf_printf(b, "rrcache_dot_handshake_failures_total{reason=\"rate\"} %llu\n",
		       U(s->dot_handshake_refused));
	family(b, "doh_refused_total", "counter",
	       "DNS-over-HTTPS requests answered with an HTTP error, by status.");
	const struct rrc_doh_refusals *dr = &s->doh_refused;
	rrc_buf_printf(b,
		       "rrcache_doh_refused_total{status=\"400\"} %llu\n"
		       "rrcache_doh_refused_total{status=\"404\"} %llu\n"
		       "rrcache_doh_refused_total{status=\"405\"} %llu\n"
		       "rrcache_doh_refused_total{status=\"413\"} %llu\n"
		       "rrcache_doh_refused_total{status=\"415\"} %llu\n",
		       U(dr->bad_request), U(dr->not_found), U(dr->bad_method), U(dr->too_large),
		       U(dr->bad_type));
	single(b, "doh_connections_closed_total", "counter",
	       "DNS-over-HTTPS connections closed for not speaking HTTP/2 (no ALPN h2) or for an "
	       "HTTP/2 protocol error.",
	       s->doh_no_h2 + s->doh_protocol_errors);

	family(b, "dnstap_messages_total", "counter",
	       "dnstap messages queued for the log, and dropped because its queue was full.");
	rrc_buf_printf(b, "rrcache_dnstap_messages_total{outcome=\"sent\"} %llu\n",
		       U(s->dnstap_sent));
	rrc_buf_printf(b, "rrcache_dnstap_messages_total{outcome=\"dropped\"} %llu\n",
		       U(s->dnstap_dropped));

	if (v->redis_enabled) {
		family(b, "redis_requests_total", "counter", "Redis lookups, by result.");
		static const struct {
			const char *result;
			size_t off;
		} rr[] = {
			{"hit", offsetof(struct rrc_worker_stats, redis_hits)},
			{"miss", offsetof(struct rrc_worker_stats, redis_misses)},
			{"expired", offsetof(struct rrc_worker_stats, redis_expired)},
			{"bad_value", offsetof(struct rrc_worker_stats, redis_bad_values)},
			{"skipped", offsetof(struct rrc_worker_stats, redis_skipped)},
		};
		for (size_t i = 0; i < RRC_ARRAY_SIZE(rr); i++) {
			uint64_t val;
			memcpy(&val, (const uint8_t *)s + rr[i].off, sizeof(val));
			rrc_buf_printf(b, "rrcache_redis_requests_total{result=\"%s\"} %llu\n",
				       rr[i].result, U(val));
		}
		single(b, "redis_errors_total", "counter", "Redis commands that failed.",
		       s->redis_errors);
		single(b, "redis_timeouts_total", "counter", "Redis commands past their deadline.",
		       s->redis_timeouts);
		single(b, "redis_sets_total", "counter", "Answers written to Redis.",
		       s->redis_sets);
		single(b, "redis_fleet_waits_total", "counter",
		       "Lookups that found another instance resolving the name.",
		       s->redis_fleet_waits);
		single(b, "redis_breaker_opens_total", "counter",
		       "Times the circuit breaker opened.", s->redis_breaker_opens);
		single(b, "redis_protocol_errors_total", "counter",
		       "Connections dropped for what the server sent (a reply nobody asked for, "
		       "one too large).",
		       s->redis_protocol_errors);
		single(b, "redis_up", "gauge",
		       "Workers whose Redis connection is ready (breaker closed).", s->redis_up);
		single(b, "redis_master_changes_total", "counter",
		       "Redis Sentinel: times the master moved (failovers followed).",
		       s->redis_master_changes);
		single(b, "redis_sentinel_up", "gauge",
		       "Redis Sentinel: 1 while a sentinel's failover messages are followed.",
		       s->redis_sentinel_up);
		family(b, "redis_cluster_redirects_total", "counter",
		       "Redis Cluster: MOVED and ASK redirects followed.");
		rrc_buf_printf(b, "rrcache_redis_cluster_redirects_total{kind=\"moved\"} %llu\n",
			       U(s->redis_moved));
		rrc_buf_printf(b, "rrcache_redis_cluster_redirects_total{kind=\"ask\"} %llu\n",
			       U(s->redis_ask));
		single(b, "redis_cluster_unavailable_total", "counter",
		       "Redis Cluster: TRYAGAIN and CLUSTERDOWN replies (the query went upstream).",
		       s->redis_cluster_unavailable);
		single(b, "redis_cluster_maps_total", "counter",
		       "Redis Cluster: slot maps read (at start, after a MOVED, a node lost).",
		       s->redis_cluster_maps);
	}

	family(b, "top_queries", "gauge",
	       "Top-K over the last minute and hour (space-saving estimates, top_k per table).");
	for (unsigned cat = 0; cat < RRC_TOP_CATS; cat++) {
		for (int win = 0; win < 2; win++) {
			const struct rrc_topk *t = v->top[cat][win];
			const struct rrc_topk_entry *top[RRC_TOPK_MAX_SHOWN];
			size_t n =
				t ? rrc_topk_top(t, top, RRC_MIN(v->top_k, RRC_TOPK_MAX_SHOWN)) : 0;
			for (size_t i = 0; i < n; i++) {
				char text[1100];
				size_t tl = rrc_stats_key_text(cat, top[i], text, sizeof(text));
				rrc_buf_printf(b,
					       "rrcache_top_queries{table=\"%s\",window=\"%s\","
					       "rank=\"%zu\",key=\"",
					       rrc_top_cat_name(cat), win ? "1h" : "1m", i + 1);
				rrc_buf_prom_label(b, (const uint8_t *)text, tl);
				rrc_buf_printf(b, "\"} %llu\n", U(top[i]->count));
			}
		}
	}
}

static void json_kv(struct rrc_buf *b, const char *k, uint64_t v, bool comma)
{
	rrc_buf_printf(b, "\"%s\":%llu%s", k, U(v), comma ? "," : "");
}

struct kv {
	const char *k;
	uint64_t v;
};

/* "name":{"k":v,...} */
static void json_object(struct rrc_buf *b, const char *name, const struct kv *kvs, size_t n)
{
	rrc_buf_printf(b, "\"%s\":{", name);
	for (size_t i = 0; i < n; i++)
		json_kv(b, kvs[i].k, kvs[i].v, i + 1 < n);
	rrc_buf_printf(b, "}");
}

/* Count, sum, percentiles since start, and the buckets (bounds in seconds, counts per bucket
 * with +Inf last) so that a reader can compute percentiles between two polls. */
static void json_hist(struct rrc_buf *b, const char *k, const struct rrc_hist *h)
{
	rrc_buf_printf(b,
		       "\"%s\":{\"count\":%llu,\"sum_seconds\":%.6f,\"p50_seconds\":%.6f,"
		       "\"p90_seconds\":%.6f,\"p99_seconds\":%.6f,\"bounds\":[",
		       k, U(h->count), (double)h->sum_us / 1e6, rrc_hist_quantile(h, 0.5) / 1e6,
		       rrc_hist_quantile(h, 0.9) / 1e6, rrc_hist_quantile(h, 0.99) / 1e6);
	for (unsigned i = 0; i < RRC_HIST_BOUNDS; i++)
		rrc_buf_printf(b, "%s%g", i ? "," : "", rrc_hist_bounds_us[i] / 1e6);
	rrc_buf_printf(b, "],\"buckets\":[");
	for (unsigned i = 0; i <= RRC_HIST_BOUNDS; i++)
		rrc_buf_printf(b, "%s%llu", i ? "," : "", U(h->bucket[i]));
	rrc_buf_printf(b, "]}");
}

void rrc_stats_json(const struct rrc_stats_view *v, struct rrc_buf *b)
{
	const struct rrc_worker_stats *s = v->sum;
	const struct rrc_cache_stats *c = v->cache;
	rrc_buf_printf(b, "{\"version\":");
	rrc_buf_json_string(b, (const uint8_t *)v->version, strlen(v->version));
	rrc_buf_printf(b, ",\"uptime_seconds\":%.3f,\"workers\":%u,", v->uptime_s, v->n_workers);
	rrc_buf_printf(b, "\"queries\":{");
	json_kv(b, "udp", s->queries_udp, true);
	json_kv(b, "tcp", s->queries_tcp, true);
	json_kv(b, "dot", s->queries_dot, true);
	json_kv(b, "doh", s->queries_doh, true);
	json_kv(b, "total", s->queries_udp + s->queries_tcp + s->queries_dot + s->queries_doh,
		false);
	rrc_buf_printf(b, "},\"qtypes\":{");
	for (unsigned i = 0; i < RRC_QT_COUNT; i++)
		json_kv(b, rrc_stats_qtype_name(i), s->qtype[i], i + 1 < RRC_QT_COUNT);
	rrc_buf_printf(b, "},\"rcodes\":{");
	for (unsigned i = 0; i < RRC_RC_COUNT; i++)
		json_kv(b, rrc_stats_rcode_name(i), s->rcode[i], i + 1 < RRC_RC_COUNT);
	rrc_buf_printf(b, "},");
	uint64_t malformed = 0;
	for (unsigned i = 0; i < RRC_WR_COUNT; i++)
		malformed += s->malformed[i];
	const struct kv cache[] = {
		{"hits", c->hits},	     {"misses", c->misses},
		{"stale", c->stale},	     {"expired", c->expired},
		{"inserted", c->inserted},   {"evicted", c->evicted},
		{"entries", c->entries},     {"bytes", c->bytes},
		{"budget_bytes", c->budget}, {"insert_failures", s->cache_insert_failures}};
	const struct kv upstream[] = {{"queries", s->upstream_queries},
				      {"tcp", s->upstream_tcp},
				      {"timeouts", s->upstream_timeouts},
				      {"errors", s->upstream_errors},
				      {"unwanted_replies", s->unwanted_replies},
				      {"malformed_replies", s->malformed_replies},
				      {"local_errors", s->upstream_local_errors},
				      {"sockets_open", s->upstream_sockets},
				      {"sockets_opened", s->upstream_sockets_opened}};
	const struct kv clients[] = {
		{"malformed", malformed},	   {"acl_dropped", s->acl_dropped},
		{"acl_refused", s->acl_refused},   {"coalesced", s->coalesced},
		{"stale_served", s->stale_served}, {"tcp_open", s->tcp_open}};
	const struct kv redis[] = {{"hits", s->redis_hits},
				   {"misses", s->redis_misses},
				   {"errors", s->redis_errors},
				   {"timeouts", s->redis_timeouts},
				   {"skipped", s->redis_skipped},
				   {"breaker_opens", s->redis_breaker_opens},
				   {"protocol_errors", s->redis_protocol_errors},
				   {"up_workers", s->redis_up},
				   {"master_changes", s->redis_master_changes},
				   {"sentinel_up", s->redis_sentinel_up}};
	json_object(b, "cache", cache, RRC_ARRAY_SIZE(cache));
	rrc_buf_printf(b, ",");
	json_hist(b, "latency", &s->latency);
	rrc_buf_printf(b, ",");
	json_object(b, "upstream", upstream, RRC_ARRAY_SIZE(upstream));
	rrc_buf_printf(b, ",");
	json_object(b, "clients", clients, RRC_ARRAY_SIZE(clients));
	if (v->redis_enabled) {
		rrc_buf_printf(b, ",");
		json_object(b, "redis", redis, RRC_ARRAY_SIZE(redis));
	}
	rrc_buf_printf(b, "}\n");
}

void rrc_stats_json_upstreams(const struct rrc_stats_view *v, struct rrc_buf *b)
{
	rrc_buf_printf(b, "{\"upstreams\":[");
	for (unsigned i = 0; i < v->n_upstreams; i++) {
		const struct rrc_upstream_stats *u = &v->sum->up[i];
		rrc_buf_printf(b, "%s{\"address\":", i ? "," : "");
		rrc_buf_json_string(b, (const uint8_t *)v->upstream_names[i],
				    strlen(v->upstream_names[i]));
		rrc_buf_printf(b, ",\"pool\":");
		rrc_buf_json_string(b, (const uint8_t *)v->upstream_pools[i],
				    strlen(v->upstream_pools[i]));
		rrc_buf_printf(b, ",\"up\":%s,\"up_workers\":%llu,", u->up ? "true" : "false",
			       U(u->up));
		json_kv(b, "queries", u->queries, true);
		json_kv(b, "timeouts", u->timeouts, true);
		json_kv(b, "errors", u->errors, true);
		json_kv(b, "outstanding", u->outstanding, true);
		json_kv(b, "tls_handshakes", u->tls_handshakes, true);
		json_kv(b, "tls_resumed", u->tls_resumed, true);
		json_kv(b, "tls_connections", u->tls_connections, true);
		json_hist(b, "rtt", &u->rtt);
		rrc_buf_printf(b, "}");
	}
	rrc_buf_printf(b, "]}\n");
}

void rrc_stats_json_top(const struct rrc_stats_view *v, int window, struct rrc_buf *b)
{
	rrc_buf_printf(b, "{\"window\":\"%s\",\"k\":%u", window ? "1h" : "1m", v->top_k);
	for (unsigned cat = 0; cat < RRC_TOP_CATS; cat++) {
		const struct rrc_topk *t = v->top[cat][window ? 1 : 0];
		const struct rrc_topk_entry *top[RRC_TOPK_MAX_SHOWN];
		size_t n = t ? rrc_topk_top(t, top, RRC_MIN(v->top_k, RRC_TOPK_MAX_SHOWN)) : 0;
		rrc_buf_printf(b, ",\"%s\":[", rrc_top_cat_name(cat));
		for (size_t i = 0; i < n; i++) {
			char text[1100];
			size_t tl = rrc_stats_key_text(cat, top[i], text, sizeof(text));
			rrc_buf_printf(b, "%s{\"key\":", i ? "," : "");
			rrc_buf_json_string(b, (const uint8_t *)text, tl);
			rrc_buf_printf(b, ",\"count\":%llu,\"error\":%llu}", U(top[i]->count),
				       U(top[i]->error));
		}
		rrc_buf_printf(b, "]");
	}
	rrc_buf_printf(b, "}\n");
}

/* Seconds since the epoch as "2026-12-04T05:40:00Z". */
static void json_time(struct rrc_buf *b, const char *k, double t)
{
	time_t s = (time_t)t;
	struct tm tm;
	char text[32] = "";
	if (gmtime_r(&s, &tm))
		strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
	rrc_buf_printf(b, "\"%s\":\"%s\"", k, text);
}

void rrc_stats_json_blocks(const struct rrc_dynblock_entry *e, size_t n, size_t total,
			   uint64_t now_ms, double wall_now, struct rrc_buf *b)
{
	rrc_buf_printf(b, "{\"active\":%zu,\"blocks\":[", total);
	for (size_t i = 0; i < n; i++) {
		char prefix[RRC_DYNBLOCK_TEXT];
		rrc_dynblock_prefix_text(&e[i], prefix, sizeof(prefix));
		double age = (double)(now_ms - RRC_MIN(e[i].since_ms, now_ms)) / 1000;
		double left = (double)(e[i].until_ms - RRC_MIN(e[i].until_ms, now_ms)) / 1000;
		rrc_buf_printf(b, "%s{\"prefix\":\"%s\",\"reason\":\"%s\",\"rate\":%u,",
			       i ? "," : "", prefix, rrc_dynblock_reason_name(e[i].reason),
			       e[i].rate);
		json_time(b, "since", wall_now - age);
		rrc_buf_printf(b, ",");
		json_time(b, "until", wall_now + left);
		rrc_buf_printf(b, ",\"seconds_left\":%.3f,\"queries\":%llu}", left,
			       U(e[i].queries));
	}
	rrc_buf_printf(b, "]}\n");
}
