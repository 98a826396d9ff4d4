/* Unit tests of config: scalars, the YAML walk, errors with file:line:column, flags, defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sched.h>

#include "rrcache/cfg_ref.h"
#include "rrcache/config.h"
#include "rrcache/msg.h"
#include "rrcache/wire.h"

#include <arpa/inet.h>

static char resolv[64];

static const char *write_tmp(const char *text)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/rrc-test-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static struct rrc_config *build(const char *text, char *err)
{
	struct rrc_config_overrides ov = {.resolv_conf = resolv};
	const char *p = write_tmp(text);
	struct rrc_config *cfg = rrc_config_build(p, &ov, err);
	unlink(p);
	return cfg;
}

static int setup(void **state)
{
	snprintf(resolv, sizeof(resolv), "/tmp/rrc-test-resolv-XXXXXX");
	int fd = mkstemp(resolv);
	const char text[] = "# comment\nsearch example\nnameserver 127.0.0.1\n"
			    "nameserver fe80::1%eth0\nnameserver ::1\n";
	assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	unlink(resolv);
	return 0;
}

static void test_sizes_durations(void **state)
{
	uint64_t v;
	assert_int_equal(rrc_config_parse_size("64MiB", &v), 0);
	assert_int_equal(v, 64ull << 20);
	assert_int_equal(rrc_config_parse_size("1GB", &v), 0);
	assert_int_equal(v, 1000000000ull);
	assert_int_equal(rrc_config_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_not_equal(rrc_config_parse_size("lots", &v), 0);
	assert_int_not_equal(rrc_config_parse_size("-1MiB", &v), 0);
	assert_int_not_equal(rrc_config_parse_size("5 parsecs", &v), 0);
	assert_int_equal(rrc_config_parse_duration_ms("500ms", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(rrc_config_parse_duration_ms("2s", &v), 0);
	assert_int_equal(v, 2000);
	assert_int_equal(rrc_config_parse_duration_ms("1h", &v), 0);
	assert_int_equal(v, 3600000);
	assert_int_not_equal(rrc_config_parse_duration_ms("1 fortnight", &v), 0);
}

static void test_addresses(void **state)
{
	struct rrc_sockaddr a;
	char buf[64];
	assert_int_equal(rrc_addr_parse("192.0.2.1", 53, &a), 0);
	rrc_addr_format(&a, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.1:53");
	assert_int_equal(rrc_addr_parse("192.0.2.1:5353", 53, &a), 0);
	rrc_addr_format(&a, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.1:5353");
	assert_int_equal(rrc_addr_parse("[::1]:53", 53, &a), 0);
	rrc_addr_format(&a, buf, sizeof(buf));
	assert_string_equal(buf, "[::1]:53");
	assert_int_equal(rrc_addr_parse("2001:db8::1", 53, &a), 0);
	assert_int_equal(a.sa.sa_family, AF_INET6);
	assert_int_not_equal(rrc_addr_parse("192.0.2.1:0", 53, &a), 0);
	assert_int_not_equal(rrc_addr_parse("192.0.2.1:70000", 53, &a), 0);
	assert_int_not_equal(rrc_addr_parse("[::1", 53, &a), 0);
	assert_int_not_equal(rrc_addr_parse("300.1.1.1", 53, &a), 0);
	assert_int_not_equal(rrc_addr_parse("dns.example", 53, &a), 0);
}

static void test_full_file(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_config *cfg =
		build("workers: 2\n"
		      "listen: ['127.0.0.1:5300', '[::1]:5300']\n"
		      "upstream:\n"
		      "  servers:\n"
		      "    - 192.0.2.1\n"
		      "    - {address: '192.0.2.2:5353', weight: 3}\n"
		      "  policy: weighted\n"
		      "  timeout: 300ms\n"
		      "  client_timeout: 1500ms\n"
		      "cache: {size: 8MiB, min_ttl: 5, max_ttl: 1d, max_negative_ttl: 60,\n"
		      "        serve_stale: yes, max_stale: 2h}\n"
		      "tcp: {idle_timeout: 3s, max_connections: 10}\n"
		      "acl: {action: refuse, allow: [10.0.0.0/8], deny: [10.9.0.0/16]}\n"
		      "log: {level: debug}\n",
		      err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->workers, 2);
	assert_int_equal(cfg->n_listen, 2);
	assert_int_equal(cfg->n_upstreams, 2);
	assert_int_equal(cfg->upstreams[1].weight, 3);
	assert_int_equal(cfg->balance, RRC_POLICY_WEIGHTED);
	assert_int_equal(cfg->upstream_timeout_ms, 300);
	assert_int_equal(cfg->client_timeout_ms, 1500);
	assert_int_equal(cfg->cache_size, 8u << 20);
	assert_int_equal(cfg->min_ttl, 5);
	assert_int_equal(cfg->max_ttl, 86400);
	assert_int_equal(cfg->max_negative_ttl, 60);
	assert_true(cfg->serve_stale);
	assert_int_equal(cfg->max_stale, 7200);
	assert_int_equal(cfg->tcp_idle_timeout_ms, 3000);
	assert_int_equal(cfg->tcp_max_connections, 10);
	assert_int_equal(cfg->tcp_max_per_client, 10); /* capped by the total */
	assert_int_equal(cfg->tcp_max_queries, 1000);
	assert_int_equal(cfg->acl_action, RRC_ACL_REFUSE);
	assert_int_equal(cfg->n_acl_rules, 2);
	assert_int_equal(cfg->log_level, RRC_LOG_DEBUG);
	rrc_config_free(cfg);
}

static void expect_error(const char *text, const char *fragment)
{
	char err[RRC_ERR_LEN];
	struct rrc_config *cfg = build(text, err);
	if (cfg)
		fail_msg("accepted: %s", text);
	if (!strstr(err, fragment))
		fail_msg("error '%s' lacks '%s'", err, fragment);
}

/* upstream.pools: servers after the default pool's, whatever the order in the file; each
 * pool's policy (else upstream.policy); domains routed, the most specific first; errors. */
static void test_pools(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_config *cfg = build("upstream:\n"
				       "  pools:\n"
				       "    - name: corp\n"
				       "      domains: [corp.example, 10.in-addr.arpa]\n"
				       "      servers: [\"10.0.0.53\", \"10.0.0.54:5353\"]\n"
				       "      policy: first-available\n"
				       "    - domains: b.corp.example\n"
				       "      name: lab\n"
				       "      servers: 10.9.0.1\n"
				       "  servers: [192.0.2.1, 192.0.2.2]\n"
				       "  policy: least-outstanding\n",
				       err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_pools, 3);
	assert_int_equal(cfg->n_upstreams, 5);
	assert_string_equal(cfg->pools[0].name, "default");
	assert_int_equal(cfg->pools[0].first, 0);
	assert_int_equal(cfg->pools[0].n, 2);
	assert_int_equal(cfg->pools[0].balance, RRC_POLICY_LEAST_OUTSTANDING);
	assert_int_equal(cfg->pools[0].ns, 0);
	assert_string_equal(cfg->pools[1].name, "corp");
	assert_int_equal(cfg->pools[1].first, 2);
	assert_int_equal(cfg->pools[1].n, 2);
	assert_int_equal(cfg->pools[1].balance, RRC_POLICY_FIRST_AVAILABLE);
	assert_int_equal(ntohs(cfg->upstreams[3].addr.sin.sin_port), 5353);
	assert_int_equal(cfg->pools[2].first, 4);
	assert_int_equal(cfg->pools[2].balance, RRC_POLICY_LEAST_OUTSTANDING);
	assert_true(cfg->pools[1].ns != 0 && cfg->pools[1].ns != cfg->pools[2].ns);
	assert_int_equal(rrc_config_pool_of_server(cfg, 1), 0);
	assert_int_equal(rrc_config_pool_of_server(cfg, 3), 1);
	assert_int_equal(rrc_config_pool_of_server(cfg, 4), 2);
	const struct {
		const char *name;
		unsigned pool;
	} routes[] = {{"www.corp.example", 1}, {"x.b.corp.example", 2},
		      {"b.corp.example", 2},   {"corp.example", 1},
		      {"xcorp.example", 0},    {"5.0.0.10.in-addr.arpa", 1},
		      {"www.example.org", 0}};
	for (size_t i = 0; i < RRC_ARRAY_SIZE(routes); i++) {
		uint8_t w[256];
		size_t len;
		assert_int_equal(rrc_msg_name_from_text(routes[i].name, w, &len), 0);
		assert_int_equal(rrc_config_pool_of(cfg, w, len), routes[i].pool);
	}
	rrc_config_free(cfg);
	expect_error("upstream:\n  pools:\n    - {name: a, domains: [x.test]}\n",
		     "pool 'a' needs domains and servers");
	expect_error("upstream:\n  pools:\n    - {domains: [x.test], servers: [192.0.2.9]}\n",
		     "a pool's name has 1 to 31 characters");
	expect_error(
		"upstream:\n  pools:\n    - {name: a, domains: [x.test], servers: [192.0.2.9]}\n"
		"    - {name: b, domains: [X.test.], servers: [192.0.2.8]}\n",
		"domain 'X.test.' is in another pool already");
	expect_error(
		"upstream:\n  pools:\n    - {name: a, domains: [x.test], servers: [192.0.2.9]}\n"
		"    - {name: a, domains: [y.test], servers: [192.0.2.8]}\n",
		"pool 'a' given twice");
	expect_error("upstream:\n  pools:\n    - {name: a, domains: [x.test], servers: [192.0.2.9],"
		     " policy: random}\n",
		     "unknown policy");
	expect_error("upstream:\n  pools:\n    - {name: a, domains: [x.test], servers: [192.0.2.9],"
		     " timeout: 1s}\n",
		     "unknown key (name, domains, servers, policy)");
}

/* --forward: pools without a file; an item without '=' adds to the domain before it. */
static void test_forward_flag(void **state)
{
	char err[RRC_ERR_LEN];
	const char *fw[] = {"corp.example=10.0.0.53,10.0.0.54", "10.0.0.55", "lan.=192.168.1.1"};
	struct rrc_config_overrides ov = {
		.resolv_conf = resolv, .n_forward = 3, .n_upstream = 1, .upstream = {"192.0.2.1"}};
	memcpy(ov.forward, fw, sizeof(fw));
	struct rrc_config *cfg = rrc_config_build(NULL, &ov, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_pools, 3);
	assert_string_equal(cfg->pools[1].name, "corp.example");
	assert_int_equal(cfg->pools[1].n, 3);
	assert_string_equal(cfg->pools[2].name, "lan");
	assert_int_equal(cfg->pools[2].n, 1);
	uint8_t w[256];
	size_t len;
	rrc_msg_name_from_text("printer.lan", w, &len);
	assert_int_equal(rrc_config_pool_of(cfg, w, len), 2);
	rrc_config_free(cfg);
	const char *bad[][2] = {{"10.0.0.1", "want DOMAIN=ADDR"},
				{"x.test=", "has no address"},
				{"x.test=not an address", "bad address"},
				{"a..b=10.0.0.1", "bad domain"}};
	for (size_t i = 0; i < RRC_ARRAY_SIZE(bad); i++) {
		ov.forward[0] = bad[i][0];
		ov.n_forward = 1;
		assert_null(rrc_config_build(NULL, &ov, err));
		if (!strstr(err, "--forward: ") || !strstr(err, bad[i][1]))
			fail_msg("%s: %s", bad[i][0], err);
	}
}

/* local.*: records read once local.ttl is known, whatever the order; a bad record reported
 * with its file:line:column; a missing hosts file fails; private_reverse off. */
static void test_local_section(void **state)
{
	char err[RRC_ERR_LEN];
	char hosts[] = "/tmp/rrc-test-hosts-XXXXXX";
	int fd = mkstemp(hosts);
	assert_int_equal(write(fd, "192.168.1.9 nas\n", 16), 16);
	close(fd);
	char text[512];
	snprintf(text, sizeof(text),
		 "upstream: {servers: [192.0.2.1]}\n"
		 "local:\n"
		 "  records:\n"
		 "    - \"printer.lan. A 192.168.1.20\"\n"
		 "  hosts_files: [\"%s\"]\n"
		 "  domain: lan\n"
		 "  ttl: 5m\n",
		 hosts);
	struct rrc_config *cfg = build(text, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->local.ttl, 300);
	assert_int_equal(cfg->local.hosts_names, 2); /* nas and nas.lan */
	assert_int_equal(rrc_local_records(cfg->local.data), 1 + 2 + 1);
	uint8_t w[64], out[512];
	size_t len;
	enum rrc_local_source src;
	rrc_msg_name_from_text("printer.lan", w, &len);
	size_t n =
		rrc_local_answer(cfg->local.data, w, len, 1, 1, cfg->route, out, sizeof(out), &src);
	assert_true(n > 0);
	assert_int_equal(rrc_get32(out + n - 10), 300); /* the record's TTL: local.ttl */
	rrc_config_free(cfg);
	unlink(hosts);
	expect_error("upstream: {servers: [192.0.2.1]}\nlocal:\n  records:\n"
		     "    - \"ok.lan. A 192.0.2.1\"\n    - \"bad.lan. A 300.0.0.1\"\n",
		     ":5:7: local.records: bad.lan. A 300.0.0.1: ");
	expect_error("upstream: {servers: [192.0.2.1]}\nlocal: {hosts_files: [/nonexistent/h]}\n",
		     "local.hosts_files: /nonexistent/h: No such file");
	/* Off: no local data at all. */
	cfg = build("upstream: {servers: [192.0.2.1]}\nlocal: {private_reverse: false}\n", err);
	assert_non_null(cfg);
	assert_null(cfg->local.data);
	rrc_config_free(cfg);
}

static void test_errors(void **state)
{
	expect_error("cache:\n  size: lots\n", ":2:9: cache.size: bad size 'lots'");
	expect_error("cache:\n  sise: 1MiB\n", ":2:3: cache.sise: unknown key");
	expect_error("listen: [127.0.0.1:99999]\n", ":1:10: listen: bad address");
	expect_error("upstream: {servers: ['not an ip']}\n", "upstream.servers: bad address");
	expect_error("upstream: {servers: [\"resolver:0\"]}\n", "upstream.servers: bad address");
	/* RFC 6761: .invalid never resolves. */
	expect_error("upstream: {servers: [nothing.invalid]}\n",
		     "upstream.servers: cannot resolve 'nothing.invalid'");
	expect_error("upstream: {policy: random}\n", "unknown policy 'random'");
	expect_error("tcp: {idle_timeout: forever}\n", "tcp.idle_timeout: bad duration");
	expect_error("acl: {allow: [10.0.0.1/8]}\n", "acl.allow: bad network");
	expect_error("acl: {action: shrug}\n", "acl.action: unknown action");
	expect_error("workers: 100000\n", "workers: 100000 is out of range");
	expect_error("upstream: {servers: [192.0.2.1]}\ncache: {min_ttl: 100, max_ttl: 10}\n",
		     "above cache.max_ttl");
	expect_error("upstream: {servers: [192.0.2.1], timeout: 3s}\n",
		     "above upstream.client_timeout");
	expect_error("cache: {size: 1MiB}\ncache: {size: 2MiB}\n", ":2:1: cache: given twice");
	expect_error("listen: [\n", "YAML");
	expect_error("- a\n- b\n", "expected a mapping");
	expect_error("log: {level: loud}\n", "log.level: unknown level");
	expect_error("cache: {serve_stale: maybe}\n", "cache.serve_stale: want true or false");
	char err[RRC_ERR_LEN];
	struct rrc_config_overrides ov = {.resolv_conf = resolv};
	assert_null(rrc_config_build("/nonexistent/rrcache.yaml", &ov, err));
	assert_non_null(strstr(err, "/nonexistent/rrcache.yaml"));
}

/* TLS upstreams: tls://ADDR[:853][#NAME], the map form with tls, name and pins; the name
 * defaults to the address; the trust store built once; mistakes refused. */
static void test_tls_upstreams(void **state)
{
	char err[RRC_ERR_LEN];
	char text[1024];
	snprintf(text, sizeof(text),
		 "upstream:\n"
		 "  servers:\n"
		 "    - tls://192.0.2.1#dns.example\n"
		 "    - tls://192.0.2.2:8853\n"
		 "    - tls://[2001:db8::3]\n"
		 "    - {address: 192.0.2.4, tls: true, name: four.example, pins: "
		 "[\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]}\n"
		 "    - 192.0.2.5\n"
		 "  tls_connections: 3\n"
		 "  tls_max_inflight: 50\n"
		 "  tls_idle_timeout: 2s\n"
		 "tls:\n"
		 "  ca_file: %s/ca.pem\n",
		 RRC_TLS_DIR);
	struct rrc_config *cfg = build(text, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_upstreams, 5);
	const struct rrc_upstream_conf *u = cfg->upstreams;
	assert_true(u[0].tls);
	assert_string_equal(u[0].tls_name, "dns.example");
	assert_int_equal(rrc_addr_port(&u[0].addr), 853);
	assert_true(u[1].tls);
	assert_string_equal(u[1].tls_name, "192.0.2.2");
	assert_int_equal(rrc_addr_port(&u[1].addr), 8853);
	assert_string_equal(u[2].tls_name, "2001:db8::3");
	assert_int_equal(rrc_addr_port(&u[2].addr), 853);
	assert_true(u[3].tls);
	assert_string_equal(u[3].tls_name, "four.example");
	assert_int_equal(u[3].n_pins, 1);
	assert_int_equal(u[3].pins[0][31], 31);
	assert_false(u[4].tls);
	assert_int_equal(rrc_addr_port(&u[4].addr), 53);
	assert_int_equal(cfg->tls_connections, 3);
	assert_int_equal(cfg->tls_max_inflight, 50);
	assert_int_equal(cfg->tls_idle_timeout_ms, 2000);
	assert_non_null(cfg->tls_client);
	rrc_config_free(cfg);
	/* No TLS upstream: no trust store is read, not even a missing one. */
	cfg = build("upstream: {servers: [192.0.2.1]}\ntls: {ca_file: /nonexistent.pem}\n", err);
	assert_non_null(cfg);
	assert_null(cfg->tls_client);
	rrc_config_free(cfg);
	/* --upstream and pools take the same forms. */
	struct rrc_config_overrides ov = {.resolv_conf = resolv,
					  .upstream = {"tls://192.0.2.9#nine.example"},
					  .n_upstream = 1};
	cfg = rrc_config_build(NULL, &ov, err);
	assert_non_null(cfg);
	assert_true(cfg->upstreams[0].tls);
	assert_string_equal(cfg->upstreams[0].tls_name, "nine.example");
	rrc_config_free(cfg);

	expect_error("upstream: {servers: [\"192.0.2.1#name\"]}\n", "#NAME needs tls://");
	expect_error("upstream: {servers: [\"tls://192.0.2.1#\"]}\n", "#NAME needs tls://");
	expect_error("upstream: {servers: [{address: 192.0.2.1, pins: [abc]}]}\n",
		     "upstream.servers.pins: want the base64");
	expect_error("upstream: {servers: [{address: 192.0.2.1, tls: maybe}]}\n",
		     "upstream.servers.tls: want true or false");
	expect_error("upstream: {servers: [{address: 192.0.2.1, pins: "
		     "[AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=]}]}\n",
		     "pins need a TLS upstream");
	expect_error(
		"upstream: {servers: [\"tls://192.0.2.1\"]}\ntls: {ca_file: /nonexistent.pem}\n",
		"tls.ca_file: /nonexistent.pem");
	expect_error("upstream: {servers: [192.0.2.1], tls_connections: 17}\n",
		     "upstream.tls_connections: 17 is out of range");

	/* listen_tls: port 853 unless given; the certificate read once per configuration. */
	snprintf(
		text, sizeof(text),
		"listen_tls: [127.0.0.1, \"[::1]:8853\"]\n"
		"listen_https: [127.0.0.1]\n"
		"upstream: {servers: [192.0.2.1]}\n"
		"tls: {cert_file: %s/server.pem, key_file: %s/server.key, handshake_timeout: 2s}\n",
		RRC_TLS_DIR, RRC_TLS_DIR);
	cfg = build(text, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_listen_tls, 2);
	assert_int_equal(rrc_addr_port(&cfg->listen_tls[0]), 853);
	assert_int_equal(rrc_addr_port(&cfg->listen_tls[1]), 8853);
	assert_int_equal(cfg->n_listen_https, 1);
	assert_int_equal(rrc_addr_port(&cfg->listen_https[0]), 443);
	assert_non_null(cfg->tls_server);
	assert_int_equal(cfg->tls.handshake_timeout_ms, 2000);
	rrc_config_free(cfg);
	expect_error("listen_tls: [127.0.0.1]\nupstream: {servers: [192.0.2.1]}\n",
		     "listen_tls needs tls.cert_file and tls.key_file");
	expect_error("listen_tls: [127.0.0.1]\nupstream: {servers: [192.0.2.1]}\n"
		     "tls: {cert_file: /nonexistent.pem, key_file: /nonexistent.key}\n",
		     "tls.cert_file: /nonexistent.pem");
	expect_error("listen_tls: [nowhere]\n", "listen_tls: bad address");
	expect_error("listen_https: [127.0.0.1]\nupstream: {servers: [192.0.2.1]}\n",
		     "listen_https needs tls.cert_file and tls.key_file");
}

/* dynblock: defaults off; values taken; the prefix lengths come from ratelimit (cfg_ref);
 * an unknown action or a window out of range refused. */
static void test_dynblock_section(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_config *cfg = build("upstream: {servers: [192.0.2.1]}\n", err);
	assert_non_null(cfg);
	assert_int_equal(cfg->dynblock.nxdomain_rate, 0);
	assert_int_equal(cfg->dynblock.window_ms, 10000);
	assert_int_equal(cfg->dynblock.duration_ms, 60000);
	assert_int_equal(cfg->dynblock.action, RRC_DB_DROP);
	assert_int_equal(cfg->dynblock.watched, 4096);
	assert_int_equal(cfg->dynblock.max_blocks, 1024);
	rrc_config_free(cfg);
	cfg = build("upstream: {servers: [192.0.2.1]}\n"
		    "ratelimit: {ipv4_prefix: 20, ipv6_prefix: 48, exempt: [10.0.0.0/8]}\n"
		    "dynblock: {nxdomain_rate: 50, miss_rate: 200, window: 5s, duration: 2m,\n"
		    "           action: tc, watched: 100, max_blocks: 7}\n",
		    err);
	assert_non_null(cfg);
	assert_int_equal(cfg->dynblock.nxdomain_rate, 50);
	assert_int_equal(cfg->dynblock.miss_rate, 200);
	assert_int_equal(cfg->dynblock.window_ms, 5000);
	assert_int_equal(cfg->dynblock.duration_ms, 120000);
	assert_int_equal(cfg->dynblock.action, RRC_DB_TC);
	assert_int_equal(cfg->dynblock.watched, 100);
	assert_int_equal(cfg->dynblock.max_blocks, 7);
	struct rrc_cfg_ref *ref = rrc_cfg_ref_new(cfg, 0);
	assert_non_null(ref);
	assert_int_equal(ref->dynblock.v4_prefix, 20);
	assert_int_equal(ref->dynblock.v6_prefix, 48);
	assert_int_equal(ref->dynblock.window_ms, 5000);
	assert_null(ref->ratelimit);		/* qps 0 */
	assert_non_null(ref->ratelimit_exempt); /* for the dynamic blocks */
	rrc_cfg_ref_put(ref);
	expect_error("dynblock: {action: shun}\n", "dynblock.action: unknown action 'shun'");
	expect_error("dynblock: {window: 500ms}\n", "dynblock.window");
	expect_error("dynblock: {max_blocks: 0}\n", "dynblock.max_blocks");
}

/* Upstreams by host name (a compose service, a cluster DNS name): resolved when the
 * configuration is built, so at start and at every reload; the port as written or 53. */
static void test_host_name_upstreams(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_config *cfg =
		build("listen: [127.0.0.1:5300]\nupstream:\n  servers: [localhost, "
		      "\"localhost:5353\", {address: \"localhost:54\", weight: 3}]\n",
		      err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_upstreams, 3);
	char a[RRC_ADDR_TEXT];
	const uint16_t ports[] = {53, 5353, 54};
	for (unsigned i = 0; i < 3; i++) {
		/* localhost is 127.0.0.1 or ::1 in /etc/hosts: either is loopback. */
		rrc_addr_format(&cfg->upstreams[i].addr, a, sizeof(a));
		assert_true(strncmp(a, "127.0.0.1:", 10) == 0 || strncmp(a, "[::1]:", 6) == 0);
		assert_int_equal(rrc_addr_port(&cfg->upstreams[i].addr), ports[i]);
	}
	assert_int_equal(cfg->upstreams[2].weight, 3);
	rrc_config_free(cfg);

	struct rrc_config_overrides ov = {.resolv_conf = resolv, .n_upstream = 1};
	ov.upstream[0] = "localhost:5354";
	ov.listen[0] = "127.0.0.1:5300";
	ov.n_listen = 1;
	cfg = rrc_config_build(NULL, &ov, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(rrc_addr_port(&cfg->upstreams[0].addr), 5354);
	rrc_config_free(cfg);
	ov.upstream[0] = "nothing.invalid";
	assert_null(rrc_config_build(NULL, &ov, err));
	assert_non_null(strstr(err, "--upstream: cannot resolve 'nothing.invalid'"));
}

static void test_defaults_and_flags(void **state)
{
	char err[RRC_ERR_LEN];
	/* No file, default listen addresses 127.0.0.1:53 and [::1]:53: both nameservers of the
	 * resolv.conf are rrcache itself and the scoped one cannot be used, so none is left. */
	struct rrc_config_overrides ov = {.resolv_conf = resolv};
	struct rrc_config *cfg = rrc_config_build(NULL, &ov, err);
	assert_null(cfg);
	assert_non_null(strstr(err, "no usable nameserver"));
}

static void test_resolv_conf_self(void **state)
{
	/* Listening elsewhere, both unscoped nameservers are used; flags override defaults. */
	char err[RRC_ERR_LEN];
	struct rrc_config_overrides ov2 = {.resolv_conf = resolv,
					   .listen = {"127.0.0.1:5300"},
					   .n_listen = 1,
					   .cache_size = "1MiB",
					   .log_level = "warning",
					   .workers = "3"};
	struct rrc_config *cfg = rrc_config_build(NULL, &ov2, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_listen, 1);
	assert_int_equal(cfg->n_upstreams, 2);
	assert_true(cfg->upstreams_from_resolv_conf);
	assert_int_equal(cfg->cache_size, 1u << 20);
	assert_int_equal(cfg->log_level, RRC_LOG_WARN);
	assert_int_equal(cfg->workers, 3);
	assert_int_equal(cfg->n_acl_rules, 9);
	rrc_config_free(cfg);

	/* --upstream replaces the file's list; an upstream that is a listen address is an error. */
	const char *p = write_tmp("listen: ['127.0.0.1:5300']\nupstream: {servers: [192.0.2.9]}\n");
	struct rrc_config_overrides ov3 = {.resolv_conf = resolv,
					   .upstream = {"192.0.2.10:53", "[2001:db8::1]"},
					   .n_upstream = 2};
	cfg = rrc_config_build(p, &ov3, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_upstreams, 2);
	char buf[64];
	rrc_addr_format(&cfg->upstreams[0].addr, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.10:53");
	rrc_config_free(cfg);
	struct rrc_config_overrides ov4 = {
		.resolv_conf = resolv, .upstream = {"127.0.0.1:5300"}, .n_upstream = 1};
	assert_null(rrc_config_build(p, &ov4, err));
	assert_non_null(strstr(err, "loop"));
	struct rrc_config_overrides ov9 = {.resolv_conf = resolv,
					   .stats_allow = {"10.1.0.0/16", "nonsense"},
					   .n_stats_allow = 2};
	assert_null(rrc_config_build(p, &ov9, err));
	assert_non_null(strstr(err, "--stats-allow: bad network 'nonsense'"));
	struct rrc_config_overrides ov10 = {
		.resolv_conf = resolv, .stats_allow = {"10.1.0.0/16"}, .n_stats_allow = 1};
	cfg = rrc_config_build(p, &ov10, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->stats.n_allow, 1); /* replaces the loopback default */
	rrc_config_free(cfg);
	struct rrc_config_overrides ov5 = {.resolv_conf = resolv, .cache_size = "huge"};
	assert_null(rrc_config_build(p, &ov5, err));
	assert_non_null(strstr(err, "--cache-size"));
	unlink(p);
	/* A wildcard listen is reached through loopback and every address of this machine, on its
	 * port; another port is another server. */
	const char *w = write_tmp("listen: ['0.0.0.0:5300']\n");
	struct rrc_config_overrides ov6 = {
		.resolv_conf = resolv, .upstream = {"127.0.0.2:5300"}, .n_upstream = 1};
	assert_null(rrc_config_build(w, &ov6, err));
	assert_non_null(strstr(err, "rrcache itself (listen 0.0.0.0:5300)"));
	struct rrc_config_overrides ov7 = {
		.resolv_conf = resolv, .upstream = {"127.0.0.1:5301"}, .n_upstream = 1};
	cfg = rrc_config_build(w, &ov7, err);
	if (!cfg)
		fail_msg("%s", err);
	rrc_config_free(cfg);
	unlink(w);
	/* resolv.conf's 127.0.0.1 is rrcache itself when it listens on 0.0.0.0:53; ::1 is not. */
	struct rrc_config_overrides ov8 = {
		.resolv_conf = resolv, .listen = {"0.0.0.0:53"}, .n_listen = 1};
	cfg = rrc_config_build(NULL, &ov8, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->n_upstreams, 1);
	rrc_addr_format(&cfg->upstreams[0].addr, buf, sizeof(buf));
	assert_string_equal(buf, "[::1]:53");
	rrc_config_free(cfg);
}

/* workers: 0 follows the CPU affinity and a cgroup's CPU quota (a container's --cpus). */
static void test_workers_follow_cpu_limits(void **state)
{
	char dir[] = "/tmp/rrc-cg-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[64];
	snprintf(path, sizeof(path), "%s/cpu.max", dir);
	cpu_set_t set;
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	unsigned affinity = (unsigned)CPU_COUNT(&set);
	/* No quota: the affinity. */
	FILE *f = fopen(path, "w");
	fputs("max 100000\n", f);
	fclose(f);
	assert_int_equal(rrc_config_cpus(dir), affinity);
	/* A quota of 1.5 CPUs: 2, or fewer if the affinity is smaller. */
	f = fopen(path, "w");
	fputs("150000 100000\n", f);
	fclose(f);
	assert_int_equal(rrc_config_cpus(dir), affinity < 2 ? affinity : 2);
	/* Half a CPU: 1. */
	f = fopen(path, "w");
	fputs("50000 100000\n", f);
	fclose(f);
	assert_int_equal(rrc_config_cpus(dir), 1);
	char err[RRC_ERR_LEN];
	const char *p = write_tmp("workers: 0\nlisten: ['127.0.0.1:5300']\n");
	struct rrc_config_overrides ov = {.resolv_conf = resolv, .cgroup_dir = dir};
	struct rrc_config *cfg = rrc_config_build(p, &ov, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->workers, 1);
	rrc_config_free(cfg);
	unlink(p);
	unlink(path);
	rmdir(dir);
}

static void test_shipped_file(void **state)
{
	/* The shipped file must load, and its values must be the built-in defaults. */
	char err[RRC_ERR_LEN];
	struct rrc_config_overrides ov = {
		.resolv_conf = resolv, .upstream = {"192.0.2.53"}, .n_upstream = 1};
	struct rrc_config *shipped = rrc_config_build(RRC_CONFIG_DIR "/rrcache.yaml", &ov, err);
	if (!shipped)
		fail_msg("%s", err);
	struct rrc_config *defaults = rrc_config_build(NULL, &ov, err);
	assert_non_null(defaults);
	assert_int_equal(shipped->n_listen, defaults->n_listen);
	assert_int_equal(shipped->cache_size, defaults->cache_size);
	assert_int_equal(shipped->upstream_timeout_ms, defaults->upstream_timeout_ms);
	assert_int_equal(shipped->client_timeout_ms, defaults->client_timeout_ms);
	assert_int_equal(shipped->max_failures, defaults->max_failures);
	assert_int_equal(shipped->probe_interval_ms, defaults->probe_interval_ms);
	assert_int_equal(shipped->probe_successes, defaults->probe_successes);
	assert_int_equal(shipped->max_inflight, defaults->max_inflight);
	assert_int_equal(shipped->max_ttl, defaults->max_ttl);
	assert_int_equal(shipped->min_ttl, defaults->min_ttl);
	assert_int_equal(shipped->max_negative_ttl, defaults->max_negative_ttl);
	assert_int_equal(shipped->serve_stale, defaults->serve_stale);
	assert_int_equal(shipped->max_stale, defaults->max_stale);
	assert_int_equal(shipped->tcp_idle_timeout_ms, defaults->tcp_idle_timeout_ms);
	assert_int_equal(shipped->tcp_max_connections, defaults->tcp_max_connections);
	assert_int_equal(shipped->tcp_max_per_client, defaults->tcp_max_per_client);
	assert_int_equal(shipped->tcp_max_queries, defaults->tcp_max_queries);
	assert_int_equal(shipped->acl_action, defaults->acl_action);
	assert_int_equal(shipped->n_acl_rules, defaults->n_acl_rules);
	assert_memory_equal(shipped->acl_rules, defaults->acl_rules,
			    defaults->n_acl_rules * sizeof(defaults->acl_rules[0]));
	assert_int_equal(shipped->log_level, defaults->log_level);
	assert_int_equal(shipped->log_target, defaults->log_target);
	assert_int_equal(shipped->log_format, defaults->log_format);
	assert_string_equal(shipped->log_file, defaults->log_file);
	assert_int_equal(shipped->policy.n_block + shipped->policy.n_allow, 0);
	assert_int_equal(shipped->policy.response, defaults->policy.response);
	assert_int_equal(shipped->policy.block_ttl, defaults->policy.block_ttl);
	assert_int_equal(shipped->balance, defaults->balance);
	assert_int_equal(shipped->workers, defaults->workers);
	/* The shipped file documents the Redis keys with the default values, commented out. */
	assert_false(shipped->redis.enabled);
	assert_int_equal(shipped->redis.timeout_ms, defaults->redis.timeout_ms);
	assert_int_equal(shipped->redis.fleet_wait_ms, defaults->redis.fleet_wait_ms);
	assert_true(shipped->stats.enabled && defaults->stats.enabled);
	assert_true(rrc_addr_equal(&shipped->stats.listen, &defaults->stats.listen));
	assert_int_equal(shipped->stats.n_allow, defaults->stats.n_allow);
	assert_memory_equal(shipped->stats.allow, defaults->stats.allow,
			    defaults->stats.n_allow * sizeof(defaults->stats.allow[0]));
	assert_int_equal(shipped->stats.top_k, defaults->stats.top_k);
	assert_int_equal(shipped->stats.top_sample, defaults->stats.top_sample);
	assert_int_equal(shipped->stats.max_connections, defaults->stats.max_connections);
	assert_false(shipped->dnstap.enabled);
	assert_int_equal(shipped->dnstap.queue_size, defaults->dnstap.queue_size);
	rrc_config_free(shipped);
	rrc_config_free(defaults);
}

static void test_redis_urls(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_redis_conf rc;

	memset(&rc, 0, sizeof(rc));
	assert_int_equal(rrc_config_parse_redis_url("redis://127.0.0.1:6380/2", &rc, err), 0);
	assert_true(rc.enabled);
	assert_false(rc.unix_socket);
	assert_string_equal(rc.host, "127.0.0.1");
	assert_int_equal(rc.port, 6380);
	assert_int_equal(rc.db, 2);
	assert_string_equal(rc.password, "");

	memset(&rc, 0, sizeof(rc));
	assert_int_equal(rrc_config_parse_redis_url("redis://app:p%40ss%3Aw@[::1]/0", &rc, err), 0);
	assert_string_equal(rc.host, "::1");
	assert_int_equal(rc.port, 6379);
	assert_string_equal(rc.user, "app");
	assert_string_equal(rc.password, "p@ss:w");

	memset(&rc, 0, sizeof(rc));
	assert_int_equal(rrc_config_parse_redis_url("redis://only-pass@localhost", &rc, err), 0);
	assert_string_equal(rc.user, "");
	assert_string_equal(rc.password, "only-pass");
	assert_true(strcmp(rc.host, "127.0.0.1") == 0 || strcmp(rc.host, "::1") == 0);

	memset(&rc, 0, sizeof(rc));
	assert_int_equal(rrc_config_parse_redis_url("unix:///run/redis/redis.sock?db=5", &rc, err),
			 0);
	assert_true(rc.unix_socket);
	assert_string_equal(rc.path, "/run/redis/redis.sock");
	assert_int_equal(rc.db, 5);

	static const char *const bad[] = {"rediss://127.0.0.1",
					  "http://x",
					  "redis://",
					  "redis://127.0.0.1:0",
					  "redis://127.0.0.1:99999",
					  "redis://127.0.0.1/x",
					  "redis://[::1",
					  "unix://relative.sock",
					  "unix:///s?database=1",
					  "redis://u:p%zz@127.0.0.1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&rc, 0, sizeof(rc));
		if (rrc_config_parse_redis_url(bad[i], &rc, err) == 0)
			fail_msg("accepted %s", bad[i]);
		/* Reasons never repeat a password. */
		assert_null(strstr(err, "%zz"));
	}
}

static void test_redis_section(void **state)
{
	char err[RRC_ERR_LEN];
	char pw[] = "/tmp/rrc-test-pw-XXXXXX";
	int fd = mkstemp(pw);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "from-file\nignored\n", 19), 19);
	close(fd);
	char text[512];
	snprintf(text, sizeof(text),
		 "upstream:\n  servers: [192.0.2.1]\nredis:\n  url: redis://127.0.0.1:7000\n"
		 "  password_file: %s\n  timeout: 15ms\n  max_pending: 50\n  fleet_wait: 1s\n"
		 "  fleet_coalescing: no\n  key_prefix: \"fleet-a:\"\n  key_secret: shh\n",
		 pw);
	struct rrc_config *cfg = build(text, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_true(cfg->redis.enabled);
	assert_int_equal(cfg->redis.port, 7000);
	assert_string_equal(cfg->redis.password, "from-file");
	assert_int_equal(cfg->redis.timeout_ms, 15);
	assert_int_equal(cfg->redis.max_pending, 50);
	assert_int_equal(cfg->redis.fleet_wait_ms, 1000);
	assert_false(cfg->redis.fleet_coalescing);
	assert_string_equal(cfg->redis.key_prefix, "fleet-a:");
	assert_string_equal(cfg->redis.key_secret, "shh");
	rrc_config_free(cfg);

	/* Errors point at the line. */
	cfg = build("upstream:\n  servers: [192.0.2.1]\nredis:\n  url: redis://x:1:2\n", err);
	assert_null(cfg);
	assert_non_null(strstr(err, ":4:8: redis.url:"));
	cfg = build("upstream:\n  servers: [192.0.2.1]\nredis:\n  password_file: /nonexistent\n",
		    err);
	assert_null(cfg);
	assert_non_null(strstr(err, "redis.password_file"));
	cfg = build("upstream:\n  servers: [192.0.2.1]\nredis:\n  key_prefix: "
		    "\"0123456789012345678901234567890123456789012345678901234567890123456789\"\n",
		    err);
	assert_null(cfg);
	assert_non_null(strstr(err, "longer than 63 bytes"));
	cfg = build("upstream:\n  servers: [192.0.2.1]\nredis:\n  backoff_min: 5s\n"
		    "  backoff_max: 1s\n",
		    err);
	assert_null(cfg);
	unlink(pw);

	/* --redis overrides the file. */
	struct rrc_config_overrides ov = {.resolv_conf = resolv,
					  .upstream = {"192.0.2.53"},
					  .n_upstream = 1,
					  .redis_url = "unix:///tmp/r.sock"};
	cfg = rrc_config_build(NULL, &ov, err);
	assert_non_null(cfg);
	assert_true(cfg->redis.unix_socket);
	rrc_config_free(cfg);
	ov.redis_url = "redis://";
	assert_null(rrc_config_build(NULL, &ov, err));
	assert_non_null(strstr(err, "--redis:"));
}

/* Redis Sentinel: the sentinels (port 26379 unless given), the master's name, db and user;
 * the settings that do not go together are refused; --redis replaces them. */
static void test_redis_sentinels(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_config *cfg = build(
		"upstream:\n  servers: [192.0.2.1]\nredis:\n  sentinels: [\"192.0.2.10\", "
		"\"[2001:db8::1]:26380\", \"192.0.2.11:5000\"]\n  master_name: fleet\n  db: 3\n"
		"  user: app\n",
		err);
	if (!cfg)
		fail_msg("%s", err);
	const struct rrc_redis_conf *rc = &cfg->redis;
	assert_true(rc->enabled);
	assert_int_equal(rc->n_sentinels, 3);
	assert_string_equal(rc->sentinels[0].host, "192.0.2.10");
	assert_int_equal(rc->sentinels[0].port, 26379);
	assert_string_equal(rc->sentinels[1].host, "2001:db8::1");
	assert_int_equal(rc->sentinels[1].port, 26380);
	assert_int_equal(rc->sentinels[2].port, 5000);
	assert_string_equal(rc->master_name, "fleet");
	assert_int_equal(rc->db, 3);
	assert_string_equal(rc->user, "app");
	assert_string_equal(rc->host, "");
	rrc_config_free(cfg);

	/* Redis Cluster: seeds (port 6379 unless given), or the url's host as the one seed. */
	cfg = build("upstream:\n  servers: [192.0.2.1]\nredis:\n  cluster: true\n  nodes: "
		    "[\"192.0.2.20\", \"192.0.2.21:7001\"]\n  user: app\n",
		    err);
	if (!cfg)
		fail_msg("%s", err);
	assert_true(cfg->redis.enabled && cfg->redis.cluster);
	assert_int_equal(cfg->redis.n_seeds, 2);
	assert_int_equal(cfg->redis.seeds[0].port, 6379);
	assert_int_equal(cfg->redis.seeds[1].port, 7001);
	assert_string_equal(cfg->redis.user, "app");
	rrc_config_free(cfg);
	cfg = build("upstream:\n  servers: [192.0.2.1]\nredis:\n  cluster: true\n  url: "
		    "redis://192.0.2.22:7002\n",
		    err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->redis.n_seeds, 1);
	assert_string_equal(cfg->redis.seeds[0].host, "192.0.2.22");
	assert_int_equal(cfg->redis.seeds[0].port, 7002);
	rrc_config_free(cfg);

	/* Sentinel and Cluster settings that do not go together, each refused with its reason. */
	static const struct {
		const char *text, *want;
	} bad[] = {
		{"  sentinels: [\"192.0.2.10\"]\n", "redis.master_name is needed"},
		{"  url: redis://127.0.0.1\n  sentinels: [\"192.0.2.10\"]\n  master_name: m\n",
		 "give url or sentinels, not both"},
		{"  url: redis://127.0.0.1\n  master_name: m\n", "go with redis.sentinels"},
		{"  url: redis://127.0.0.1\n  db: 2\n", "go with redis.sentinels"},
		{"  sentinels: [\"192.0.2.10:0\"]\n  master_name: m\n", "redis.sentinels"},
		{"  sentinels: [192.0.2.1, 192.0.2.2, 192.0.2.3, 192.0.2.4, 192.0.2.5, 192.0.2.6, "
		 "192.0.2.7, 192.0.2.8, 192.0.2.9]\n  master_name: m\n",
		 "more than 8"},
		{"  nodes: [\"192.0.2.20\"]\n", "goes with redis.cluster: true"},
		{"  cluster: true\n", "give redis.nodes"},
		{"  cluster: true\n  url: redis://192.0.2.22/3\n", "database 0 only"},
		{"  cluster: true\n  nodes: [\"192.0.2.20\"]\n  key_prefix: \"a{b}:\"\n",
		 "no { or }"},
		{"  cluster: true\n  nodes: [\"192.0.2.20\"]\n  sentinels: [\"192.0.2.1\"]\n"
		 "  master_name: m\n",
		 "cluster or sentinels"},
		{"  cluster: true\n  url: unix:///tmp/r.sock\n", "unix socket"},
	};
	for (size_t i = 0; i < RRC_ARRAY_SIZE(bad); i++) {
		char text[512];
		snprintf(text, sizeof(text), "upstream:\n  servers: [192.0.2.1]\nredis:\n%s",
			 bad[i].text);
		cfg = build(text, err);
		if (cfg)
			fail_msg("accepted: %s", bad[i].text);
		if (!strstr(err, bad[i].want))
			fail_msg("%s: %s", bad[i].text, err);
	}

	/* One Redis on the command line replaces the file's sentinels. */
	char path[] = "/tmp/rrc-test-sentinel-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char file[] = "redis:\n  sentinels: [\"192.0.2.10\"]\n  master_name: m\n";
	assert_int_equal(write(fd, file, sizeof(file) - 1), (ssize_t)(sizeof(file) - 1));
	close(fd);
	struct rrc_config_overrides ov = {.resolv_conf = resolv,
					  .upstream = {"192.0.2.53"},
					  .n_upstream = 1,
					  .redis_url = "redis://127.0.0.1:7001"};
	cfg = rrc_config_build(path, &ov, err);
	if (!cfg)
		fail_msg("%s", err);
	assert_int_equal(cfg->redis.n_sentinels, 0);
	assert_int_equal(cfg->redis.port, 7001);
	rrc_config_free(cfg);
	unlink(path);
}

/* The limits are fitted to the descriptors the process may open, and say so. */
static void test_fit_descriptors(void **state)
{
	char err[RRC_ERR_LEN], note[RRC_ERR_LEN];
	struct rrc_config_overrides ov = {.upstream = {"192.0.2.1"},
					  .n_upstream = 1,
					  .listen = {"127.0.0.1:5300", "[::1]:5300"},
					  .n_listen = 2,
					  .workers = "2"};
	struct rrc_config *cfg = rrc_config_build(NULL, &ov, err);
	assert_non_null(cfg);
	rrc_config_fit_descriptors(cfg, 1 << 20, note, sizeof(note));
	assert_string_equal(note, "");
	assert_int_equal(cfg->max_inflight, 10000);
	assert_int_equal(cfg->tcp_max_connections, 1024);
	/* 1024 descriptors: 88 kept back, half the rest for TCP clients, the other half for
	 * two workers' upstream queries at two descriptors each. */
	rrc_config_fit_descriptors(cfg, 1024, note, sizeof(note));
	assert_int_equal(cfg->tcp_max_connections, 468);
	assert_int_equal(cfg->max_inflight, 117);
	assert_true(cfg->tcp_max_per_client <= 468);
	assert_non_null(strstr(note, "upstream.max_inflight 10000 -> 117 per worker"));
	/* Absurdly few: still at least one of each. */
	rrc_config_fit_descriptors(cfg, 10, note, sizeof(note));
	assert_int_equal(cfg->tcp_max_connections, 1);
	assert_int_equal(cfg->max_inflight, 1);
	rrc_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fit_descriptors),
		cmocka_unit_test(test_sizes_durations),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_dynblock_section),
		cmocka_unit_test(test_tls_upstreams),
		cmocka_unit_test(test_pools),
		cmocka_unit_test(test_forward_flag),
		cmocka_unit_test(test_local_section),
		cmocka_unit_test(test_host_name_upstreams),
		cmocka_unit_test(test_defaults_and_flags),
		cmocka_unit_test(test_resolv_conf_self),
		cmocka_unit_test(test_workers_follow_cpu_limits),
		cmocka_unit_test(test_redis_urls),
		cmocka_unit_test(test_redis_section),
		cmocka_unit_test(test_redis_sentinels),
		cmocka_unit_test(test_shipped_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
