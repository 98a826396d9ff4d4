/*
 * rrcache: a caching DNS proxy with load balancing.
 *
 * main: the command line, the configuration, signals. SIGTERM/SIGINT stop gracefully (stop
 * accepting, finish in-flight queries for at most 2 s, exit 0); SIGHUP reloads the file with
 * the same command-line overrides, keeping the old configuration if the new one is bad.
 */
#include "rrcache/config.h"
#include "rrcache/http.h"
#include "rrcache/log.h"
#include "rrcache/msg.h"
#include "rrcache/notify.h"
#include "rrcache/redis_admin.h"
#include "rrcache/server.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fstrm.h>
#include <hiredis/hiredis.h>
#include <ldns/ldns.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <uv.h>
#include <yaml.h>

extern const char rrc_commit[]; /* commit.c, written at build time */

/* --version: the version and commit, then what is compiled in and the libraries it runs on
 * (the first line alone identifies the build). */
/* Runs the rest of the process (every thread) as user:group, keeping nothing of root: called
 * once every privileged socket is bound (listen addresses are not re-bound on reload). */
static int drop_privileges(const char *user, const char *group, char *err)
{
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		snprintf(err, RRC_ERR_LEN, "user: no user '%.60s' on this machine", user);
		return -1;
	}
	gid_t gid = pw->pw_gid;
	if (group[0]) {
		struct group *gr = getgrnam(group);
		if (!gr) {
			snprintf(err, RRC_ERR_LEN, "group: no group '%.60s' on this machine",
				 group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	uid_t uid = pw->pw_uid;
	if (geteuid() == uid && getegid() == gid)
		return 0;
	if (geteuid() != 0) {
		snprintf(err, RRC_ERR_LEN,
			 "user: switching to '%.60s' needs root (started as uid %u)", user,
			 (unsigned)geteuid());
		return -1;
	}
	/* Groups first (setgroups needs root), then the group, then the user; each for every
	 * thread (glibc applies set*id process-wide). */
	if (setgroups(1, &gid) != 0 || setresgid(gid, gid, gid) != 0 ||
	    setresuid(uid, uid, uid) != 0) {
		snprintf(err, RRC_ERR_LEN, "cannot run as %.60s: %s", user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		snprintf(err, RRC_ERR_LEN, "running as %.60s, root could be regained: refusing",
			 user);
		return -1;
	}
#if defined(__SANITIZE_ADDRESS__)
	/* Test builds only: the leak checker at exit needs to trace its own threads, which a
	 * process that changed its credentials may no longer do. */
	prctl(PR_SET_DUMPABLE, 1);
#endif
	rrc_log(RRC_LOG_INFO, RRC_LG_MAIN, "running as user %s (uid %u, gid %u)", user,
		(unsigned)uid, (unsigned)gid);
	return 0;
}

static void print_version(void)
{
	printf("rrcache %s (commit %s)\n", RRC_VERSION, rrc_commit);
	printf("features: DNS over UDP and TCP; L1 cache; Redis tier (L2) with fleet coalescing; "
	       "statistics endpoint (Prometheus, JSON, dashboard); dnstap\n");
	printf("libraries: libuv %s, ldns %s, hiredis %d.%d.%d, libmicrohttpd %s, %s, "
	       "libyaml %s, fstrm (no version API)\n",
	       uv_version_string(), ldns_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
	       MHD_get_version(), OpenSSL_version(OPENSSL_VERSION), yaml_get_version_string());
}

static const char usage[] =
	"Usage: rrcache [options]\n"
	"  -c, --config FILE        YAML configuration file (see config/rrcache.yaml)\n"
	"      --listen ADDR:PORT   listen here (UDP and TCP); repeatable; replaces the file's\n"
	"                           list. IPv6 as [::1]:53\n"
	"      --upstream ADDR[:PORT]  forward to this server (an address or a host name,\n"
	"                           resolved at start and reload); tls://ADDR[:853][#NAME] for\n"
	"                           DNS over TLS; repeatable; replaces the file's list\n"
	"                           (default: the nameservers of /etc/resolv.conf)\n"
	"      --forward DOMAIN=ADDR[,ADDR...]  names under DOMAIN go to these servers (a pool);\n"
	"                           repeatable; replaces upstream.pools\n"
	"      --cache-size SIZE    L1 cache budget, e.g. 64MiB\n"
	"      --workers N          worker threads (0 = one per CPU)\n"
	"      --log-level LEVEL    error, warning, info or debug\n"
	"      --log-target TARGET  stderr, file, syslog or journal\n"
	"      --log-format FORMAT  text or json (stderr and file)\n"
	"      --log-file FILE      log to FILE (reopened on SIGHUP, for rotation)\n"
	"      --metrics ADDR:PORT  statistics endpoint (default 127.0.0.1:9153), or off\n"
	"      --stats-allow CIDR   who may reach it (default loopback); repeatable; replaces\n"
	"                           the file's stats.allow\n"
	"      --redis URL          share answers through Redis: redis://[user:pass@]host:port/db\n"
	"                           or unix:///path/to/socket?db=N (password: "
	"redis.password_file)\n"
	"      --redis-password-file FILE, --redis-key-secret-file FILE, --stats-token-file FILE\n"
	"                           secrets read from files (first line)\n"
	"      --blocklist FILE     a domain list to block (hosts, plain, adblock); repeatable;\n"
	"                           replaces policy.blocklists\n"
	"      --allowlist FILE     a domain list never blocked; repeatable\n"
	"      --flush NAME         remove NAME (every type) from Redis and from the L1 cache of\n"
	"                           every instance sharing it, then exit\n"
	"      --flush-all          the same for everything under redis.key_prefix\n"
	"      --check-config       validate the configuration, print the reason, exit 0 or 1\n"
	"  -V, --version            print the version\n"
	"  -h, --help               this text\n"
	"Every option that takes a value can also come from the environment: --cache-size 64MiB\n"
	"is RRCACHE_CACHE_SIZE=64MiB (repeatable ones as a comma-separated list). The command\n"
	"line wins over the environment, which wins over the file.\n";

struct app {
	const char *path;
	struct rrc_config_overrides ov;
	struct rrc_server *server;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t log_timer; /* writes the counts of repeated log lines, watches the lists */
	/* The domain list and hosts files in force and what they looked like when loaded: a
	 * change seen twice in a row (a file no longer being written) reloads, as SIGHUP does. */
	struct list_watch {
		char path[256];
		struct stat st;
		bool exists, changed;
	} lists[2 * RRC_POLICY_MAX_LISTS];
	unsigned n_lists;
};

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void watch_one(struct app *app, const char *path)
{
	for (unsigned i = 0; i < app->n_lists; i++)
		if (strcmp(app->lists[i].path, path) == 0)
			return;
	if (app->n_lists >= RRC_ARRAY_SIZE(app->lists))
		return;
	struct list_watch *w = &app->lists[app->n_lists++];
	snprintf(w->path, sizeof(w->path), "%s", path);
	w->exists = stat(path, &w->st) == 0;
	w->changed = false;
}

/* Remembers the list files of cfg as they are now (after a load). */
static void watch_lists(struct app *app, const struct rrc_config *cfg)
{
	const struct rrc_policy_conf *pc = &cfg->policy;
	app->n_lists = 0;
	for (unsigned i = 0; i < pc->n_block; i++)
		watch_one(app, pc->blocklists[i]);
	for (unsigned i = 0; i < pc->n_allow; i++)
		watch_one(app, pc->allowlists[i]);
	for (unsigned g = 0; g < pc->n_groups; g++) {
		for (unsigned i = 0; i < pc->groups[g].n_block; i++)
			watch_one(app, pc->groups[g].blocklists[i]);
		for (unsigned i = 0; i < pc->groups[g].n_allow; i++)
			watch_one(app, pc->groups[g].allowlists[i]);
	}
	for (unsigned i = 0; i < cfg->local.n_hosts_files; i++)
		watch_one(app, cfg->local.hosts_files[i]);
}

/* True when a list file changed and has stayed the same since the last look. */
static bool lists_changed(struct app *app)
{
	bool reload = false;
	for (unsigned i = 0; i < app->n_lists; i++) {
		struct list_watch *w = &app->lists[i];
		struct stat st;
		bool exists = stat(w->path, &st) == 0;
		if (exists == w->exists && (!exists || same_file(&st, &w->st))) {
			if (w->changed && exists) {
				rrc_log(RRC_LOG_INFO, RRC_LG_CONFIG, "%s changed, reloading",
					w->path);
				reload = true;
			}
			w->changed = false;
			continue;
		}
		w->exists = exists;
		w->st = st;
		w->changed = true; /* look again in a second */
	}
	return reload;
}

/* At a stop, once the workers are gone: the cache for the next start (cache.save_file). */
static void save_cache(struct rrc_server *s)
{
	char err[RRC_ERR_LEN];
	struct rrc_cfg_ref *ref = rrc_server_cfg_get(s);
	bool on = ref->cfg->cache_save_file[0] != '\0';
	rrc_cfg_ref_put(ref);
	if (!on)
		return;
	uint64_t t0 = uv_hrtime();
	long n = rrc_server_save_cache(s, err);
	if (n >= 0)
		rrc_log(RRC_LOG_INFO, RRC_LG_CACHE, "cache: %ld entries saved in %llu ms", n,
			(unsigned long long)((uv_hrtime() - t0) / 1000000));
	else
		rrc_log(RRC_LOG_WARN, RRC_LG_CACHE, "cache: not saved: %s", err);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	struct app *app = h->data;
	rrc_log(RRC_LOG_INFO, RRC_LG_MAIN, "signal %d: stopping", signum);
	rrc_notify_stopping();
	uv_signal_stop(&app->sig_term);
	uv_signal_stop(&app->sig_int);
	uv_signal_stop(&app->sig_hup);
	uv_timer_stop(&app->log_timer);
	uv_stop(h->loop);
}

/* Raises the soft limit on open files to the hard one (once, at start) and returns it. */
static uint64_t raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			rrc_log(RRC_LOG_INFO, RRC_LG_MAIN,
				"open files: soft limit raised from %llu to %llu",
				(unsigned long long)was, (unsigned long long)rl.rlim_cur);
		else
			rl.rlim_cur = was;
	}
	return rl.rlim_cur == RLIM_INFINITY ? UINT32_MAX : (uint64_t)rl.rlim_cur;
}

/* Lowers the limits of cfg that all at once would need more descriptors than allowed. */
static void fit_descriptors(struct rrc_config *cfg)
{
	struct rlimit rl;
	char note[RRC_ERR_LEN];
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rrc_config_fit_descriptors(cfg, rl.rlim_cur == RLIM_INFINITY ? UINT32_MAX : rl.rlim_cur,
				   note, sizeof(note));
	if (note[0])
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG, "%s", note);
}

/* Loads cfg's domain lists (keeping previous's when one cannot be read on a reload) and says
 * what was loaded. 0, or -1 when a start cannot go on. */
static int load_policy(struct rrc_config *cfg, const struct rrc_config *previous)
{
	char report[1024], err[RRC_ERR_LEN];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = rrc_config_load_policy(cfg, previous, report, sizeof(report), err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	for (char *line = report, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG, "policy: unreadable line %s", line);
	}
	if (rc) {
		rrc_log(RRC_LOG_ERR, RRC_LG_CONFIG, "%s%s", err,
			previous ? "; the lists loaded before stay in force" : "");
		return previous ? 0 : -1;
	}
	const struct rrc_policy_list_info *li;
	size_t n = rrc_policy_lists(cfg->policy.matcher, &li);
	if (n) {
		uint64_t bad = 0;
		for (size_t i = 0; i < n; i++)
			bad += li[i].bad;
		rrc_log(RRC_LOG_INFO, RRC_LG_CONFIG,
			"policy: %llu rules from %zu list(s) in %.0f ms, %zu bytes; %llu "
			"unreadable "
			"line(s)",
			(unsigned long long)rrc_policy_rules(cfg->policy.matcher), n,
			(double)(t1.tv_sec - t0.tv_sec) * 1e3 +
				(double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
			rrc_policy_bytes(cfg->policy.matcher), (unsigned long long)bad);
	}
	return 0;
}

static void on_hup(uv_signal_t *h, int signum)
{
	struct app *app = h->data;
	char err[RRC_ERR_LEN];
	rrc_notify_reloading();
	/* Log rotation: the log file and the query log's file are opened again under their
	 * names, whatever becomes of the configuration. */
	if (rrc_log_reopen(err, sizeof(err)) != 0)
		rrc_log(RRC_LOG_ERR, RRC_LG_MAIN, "%s", err);
	rrc_server_reopen_files(app->server);
	struct rrc_config *cfg = rrc_config_build(app->path, &app->ov, err);
	if (!cfg) {
		rrc_log(RRC_LOG_ERR, RRC_LG_CONFIG,
			"reload rejected, keeping the old "
			"configuration: %s",
			err);
		rrc_notify_ready("answering; the last reload was rejected (see the log)");
		return;
	}
	struct rrc_cfg_ref *cur = rrc_server_cfg_get(app->server);
	load_policy(cfg, cur->cfg);
	rrc_cfg_ref_put(cur);
	watch_lists(app, cfg);
	fit_descriptors(cfg);
	if (rrc_server_reload(app->server, cfg) == 0) {
		rrc_log(RRC_LOG_INFO, RRC_LG_CONFIG, "configuration reloaded%s%s",
			app->path ? " from " : "", app->path ? app->path : "");
		rrc_notify_ready("answering; configuration reloaded");
	} else {
		rrc_notify_ready("answering; the last reload was rejected (see the log)");
	}
}

static void log_summary(struct rrc_server *s)
{
	struct rrc_worker_stats st;
	rrc_server_sum_stats(s, &st);
	uint64_t malformed = 0;
	for (int i = 0; i < RRC_WR_COUNT; i++)
		malformed += st.malformed[i];
	rrc_log(RRC_LOG_INFO, RRC_LG_MAIN,
		"totals: queries udp=%llu tcp=%llu, cache hits=%llu misses=%llu coalesced=%llu "
		"stale=%llu, "
		"upstream queries=%llu tcp=%llu timeouts=%llu errors=%llu unwanted=%llu "
		"malformed=%llu, client malformed=%llu formerr=%llu servfail=%llu, acl "
		"dropped=%llu refused=%llu",
		(unsigned long long)st.queries_udp, (unsigned long long)st.queries_tcp,
		(unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses,
		(unsigned long long)st.coalesced, (unsigned long long)st.stale_served,
		(unsigned long long)st.upstream_queries, (unsigned long long)st.upstream_tcp,
		(unsigned long long)st.upstream_timeouts, (unsigned long long)st.upstream_errors,
		(unsigned long long)st.unwanted_replies, (unsigned long long)st.malformed_replies,
		(unsigned long long)malformed, (unsigned long long)st.formerr,
		(unsigned long long)st.servfail, (unsigned long long)st.acl_dropped,
		(unsigned long long)st.acl_refused);
	if (rrc_server_redis(s))
		rrc_log(RRC_LOG_INFO, RRC_LG_MAIN,
			"totals: redis hits=%llu misses=%llu expired=%llu bad=%llu errors=%llu "
			"timeouts=%llu skipped=%llu sets=%llu fleet_waits=%llu breaker_opens=%llu "
			"protocol_errors=%llu",
			(unsigned long long)st.redis_hits, (unsigned long long)st.redis_misses,
			(unsigned long long)st.redis_expired,
			(unsigned long long)st.redis_bad_values,
			(unsigned long long)st.redis_errors, (unsigned long long)st.redis_timeouts,
			(unsigned long long)st.redis_skipped, (unsigned long long)st.redis_sets,
			(unsigned long long)st.redis_fleet_waits,
			(unsigned long long)st.redis_breaker_opens,
			(unsigned long long)st.redis_protocol_errors);
	for (unsigned i = 0; i < rrc_server_worker_count(s); i++) {
		const struct rrc_worker_stats *ws = rrc_server_worker_stats(s, i);
		rrc_log(RRC_LOG_INFO, RRC_LG_MAIN,
			"worker %u: queries udp=%llu tcp=%llu, cache hits=%llu, upstream "
			"queries=%llu",
			i, (unsigned long long)ws->queries_udp, (unsigned long long)ws->queries_tcp,
			(unsigned long long)ws->cache_hits,
			(unsigned long long)ws->upstream_queries);
	}
}

enum {
	OPT_LISTEN = 256,
	OPT_UPSTREAM,
	OPT_CACHE_SIZE,
	OPT_LOG_LEVEL,
	OPT_CHECK,
	OPT_WORKERS,
	OPT_REDIS,
	OPT_FLUSH,
	OPT_FLUSH_ALL,
	OPT_METRICS,
	OPT_STATS_ALLOW,
	OPT_LOG_TARGET,
	OPT_LOG_FORMAT,
	OPT_LOG_FILE,
	OPT_REDIS_PASSWORD_FILE,
	OPT_REDIS_KEY_SECRET_FILE,
	OPT_STATS_TOKEN_FILE,
	OPT_BLOCKLIST,
	OPT_ALLOWLIST,
	OPT_FORWARD
};

/* The value of --NAME from the environment (RRCACHE_ and NAME in capitals, '-' as '_'), or
 * NULL. */
static const char *env_value(const char *name)
{
	char var[64] = "RRCACHE_";
	size_t n = strlen(var);
	for (const char *p = name; *p && n + 1 < sizeof(var); p++)
		var[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	var[n] = '\0';
	const char *v = getenv(var);
	return v && v[0] ? v : NULL;
}

/* Appends the comma-separated items of list to out[*n] (at most cap), in place (list is a
 * copy the caller keeps). Returns -1 when there are too many. */
static int split_list(char *list, const char **out, unsigned *n, unsigned cap)
{
	for (char *save = NULL, *t = strtok_r(list, ", \t", &save); t;
	     t = strtok_r(NULL, ", \t", &save)) {
		if (*n >= cap)
			return -1;
		out[(*n)++] = t;
	}
	return 0;
}

/* The admin flush: NAME (NULL: everything) out of Redis and every instance's L1. */
static int flush(const struct rrc_config *cfg, const char *name)
{
	char err[RRC_ERR_LEN];
	if (!cfg->redis.enabled) {
		fprintf(stderr, "rrcache: --flush needs Redis (redis.url or --redis)\n");
		return 1;
	}
	uint8_t wire[RRC_WIRE_MAX_NAME];
	size_t wlen = 0;
	if (name && rrc_msg_name_from_text(name, wire, &wlen) != 0) {
		fprintf(stderr, "rrcache: --flush: '%s' is not a domain name\n", name);
		return 1;
	}
	long n = rrc_redis_admin_flush(&cfg->redis, name ? wire : NULL, wlen, err);
	if (n < 0) {
		fprintf(stderr, "rrcache: %s\n", err);
		return 1;
	}
	printf("rrcache: flushed %s: %ld key(s) deleted from Redis; every instance told\n",
	       name ? name : "everything", n);
	return 0;
}

/* A repeatable option: where its items go, and the environment's copy they point into. */
struct list_opt {
	int opt;
	const char *name;
	const char **items;
	unsigned *n;
	unsigned cap;
	bool given; /* on the command line */
	char *env;
};

static struct list_opt *list_opt(struct list_opt *lists, int opt)
{
	for (struct list_opt *lo = lists; lo->name; lo++)
		if (lo->opt == opt)
			return lo;
	return NULL;
}

/* An option with one value, from the command line or the environment. */
static void set_option(struct app *app, int opt, const char *v)
{
	switch (opt) {
	case 'c':
		app->path = v;
		break;
	case OPT_CACHE_SIZE:
		app->ov.cache_size = v;
		break;
	case OPT_WORKERS:
		app->ov.workers = v;
		break;
	case OPT_LOG_LEVEL:
		app->ov.log_level = v;
		break;
	case OPT_REDIS:
		app->ov.redis_url = v;
		break;
	case OPT_METRICS:
		app->ov.metrics = v;
		break;
	case OPT_LOG_TARGET:
		app->ov.log_target = v;
		break;
	case OPT_LOG_FORMAT:
		app->ov.log_format = v;
		break;
	case OPT_LOG_FILE:
		app->ov.log_file = v;
		break;
	case OPT_REDIS_PASSWORD_FILE:
		app->ov.redis_password_file = v;
		break;
	case OPT_REDIS_KEY_SECRET_FILE:
		app->ov.redis_key_secret_file = v;
		break;
	case OPT_STATS_TOKEN_FILE:
		app->ov.stats_token_file = v;
		break;
	default:
		break;
	}
}

static void on_log_timer(uv_timer_t *t)
{
	rrc_log_flush_repeats(false);
	struct app *app = t->data;
	if (lists_changed(app))
		on_hup(&app->sig_hup, SIGHUP);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"listen", required_argument, NULL, OPT_LISTEN},
		{"upstream", required_argument, NULL, OPT_UPSTREAM},
		{"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
		{"workers", required_argument, NULL, OPT_WORKERS},
		{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
		{"check-config", no_argument, NULL, OPT_CHECK},
		{"redis", required_argument, NULL, OPT_REDIS},
		{"flush", required_argument, NULL, OPT_FLUSH},
		{"flush-all", no_argument, NULL, OPT_FLUSH_ALL},
		{"metrics", required_argument, NULL, OPT_METRICS},
		{"stats-allow", required_argument, NULL, OPT_STATS_ALLOW},
		{"log-target", required_argument, NULL, OPT_LOG_TARGET},
		{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
		{"log-file", required_argument, NULL, OPT_LOG_FILE},
		{"redis-password-file", required_argument, NULL, OPT_REDIS_PASSWORD_FILE},
		{"redis-key-secret-file", required_argument, NULL, OPT_REDIS_KEY_SECRET_FILE},
		{"stats-token-file", required_argument, NULL, OPT_STATS_TOKEN_FILE},
		{"blocklist", required_argument, NULL, OPT_BLOCKLIST},
		{"allowlist", required_argument, NULL, OPT_ALLOWLIST},
		{"forward", required_argument, NULL, OPT_FORWARD},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	static struct app app; /* static: what the lists below point into stays reachable */
	bool check = false, flush_all = false;
	const char *flush_name = NULL;
	/* The environment first (every option with a value but the one-shot --flush), then the
	 * command line over it; a list given on the command line replaces the environment's. */
	/* The repeatable options: a list given on the command line replaces the environment's. */
	static struct list_opt lists[] = {
		{OPT_LISTEN, "listen", app.ov.listen, &app.ov.n_listen, RRC_MAX_LISTEN},
		{OPT_UPSTREAM, "upstream", app.ov.upstream, &app.ov.n_upstream, RRC_MAX_UPSTREAMS},
		{OPT_STATS_ALLOW, "stats-allow", app.ov.stats_allow, &app.ov.n_stats_allow,
		 RRC_MAX_LISTEN},
		{OPT_BLOCKLIST, "blocklist", app.ov.blocklist, &app.ov.n_blocklist,
		 RRC_POLICY_MAX_LISTS},
		{OPT_ALLOWLIST, "allowlist", app.ov.allowlist, &app.ov.n_allowlist,
		 RRC_POLICY_MAX_LISTS},
		{OPT_FORWARD, "forward", app.ov.forward, &app.ov.n_forward, RRC_MAX_FORWARD},
		{0, NULL, NULL, NULL, 0},
	};
	for (const struct option *o = opts; o->name; o++) {
		const char *v = o->has_arg == required_argument && o->val != OPT_FLUSH
					? env_value(o->name)
					: NULL;
		if (!v)
			continue;
		int rc = 0;
		struct list_opt *lo = list_opt(lists, o->val);
		if (lo) {
			lo->env = strdup(v);
			rc = split_list(lo->env, lo->items, lo->n, lo->cap);
		} else {
			set_option(&app, o->val, v);
		}
		if (rc) {
			fprintf(stderr, "rrcache: too many items in the environment's --%s\n",
				o->name);
			return 1;
		}
	}
	int c;
	while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_CHECK:
			check = true;
			break;
		case OPT_FLUSH:
			flush_name = optarg;
			break;
		case OPT_FLUSH_ALL:
			flush_all = true;
			break;
		case 'c':
		case OPT_CACHE_SIZE:
		case OPT_WORKERS:
		case OPT_LOG_LEVEL:
		case OPT_REDIS:
		case OPT_METRICS:
		case OPT_LOG_TARGET:
		case OPT_LOG_FORMAT:
		case OPT_LOG_FILE:
		case OPT_REDIS_PASSWORD_FILE:
		case OPT_REDIS_KEY_SECRET_FILE:
		case OPT_STATS_TOKEN_FILE:
			set_option(&app, c, optarg);
			break;
		case OPT_LISTEN:
		case OPT_UPSTREAM:
		case OPT_STATS_ALLOW:
		case OPT_BLOCKLIST:
		case OPT_ALLOWLIST:
		case OPT_FORWARD: {
			struct list_opt *lo = list_opt(lists, c);
			if (!lo->given)
				*lo->n = 0;
			lo->given = true;
			if (*lo->n >= lo->cap) {
				fprintf(stderr, "rrcache: at most %u --%s\n", lo->cap, lo->name);
				return 1;
			}
			lo->items[(*lo->n)++] = optarg;
			break;
		}
		case 'V':
			print_version();
			return 0;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "rrcache: unexpected argument '%s'\n%s", argv[optind], usage);
		return 1;
	}
	app.ov.resolv_conf = getenv("RRCACHE_RESOLV_CONF");

	char err[RRC_ERR_LEN];
	struct rrc_config *cfg = rrc_config_build(app.path, &app.ov, err);
	if (!cfg) {
		fprintf(stderr, "rrcache: %s\n", err);
		return 1;
	}
	if (check) {
		/* The lists too (reported as at a start): a file that cannot be read makes the
		 * configuration invalid. */
		if (load_policy(cfg, NULL) != 0) {
			rrc_config_free(cfg);
			return 1;
		}
		printf("rrcache: configuration %s is valid\n", app.path ? app.path : "(flags)");
		rrc_config_free(cfg);
		return 0;
	}
	if (flush_name || flush_all) {
		int frc = flush(cfg, flush_name);
		rrc_config_free(cfg);
		return frc;
	}
	rrc_log_set_level(cfg->log_level);
	if (rrc_log_open(cfg->log_target, cfg->log_format, cfg->log_file, err, sizeof(err)) != 0) {
		fprintf(stderr, "rrcache: %s\n", err);
		rrc_config_free(cfg);
		return 1;
	}
	if (load_policy(cfg, NULL) != 0) {
		rrc_config_free(cfg);
		return 1;
	}
	watch_lists(&app, cfg);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	fit_descriptors(cfg);

	char up[64], lst[64], dot[160] = "";
	rrc_addr_format(&cfg->upstreams[0].addr, up, sizeof(up));
	rrc_addr_format(&cfg->listen[0], lst, sizeof(lst));
	if (cfg->n_listen_tls || cfg->n_listen_https) {
		char a[64];
		bool tls = cfg->n_listen_tls > 0;
		rrc_addr_format(tls ? &cfg->listen_tls[0] : &cfg->listen_https[0], a, sizeof(a));
		snprintf(dot, sizeof(dot),
			 ", DNS over %s on %s (%u address(es) over TLS, %u over HTTPS)",
			 tls ? "TLS" : "HTTPS", a, cfg->n_listen_tls, cfg->n_listen_https);
	}
	unsigned workers = cfg->workers, n_up = cfg->n_upstreams, n_listen = cfg->n_listen;
	char run_user[sizeof(cfg->user)], run_group[sizeof(cfg->group)];
	memcpy(run_user, cfg->user, sizeof(run_user));
	memcpy(run_group, cfg->group, sizeof(run_group));
	bool stats_on = cfg->stats.enabled;
	/* The endpoint reads the settings it starts with; the server owns cfg from here on. */
	struct rrc_cfg_ref *start_ref = NULL;
	const struct rrc_config *stats_cfg = NULL;
	app.server = rrc_server_create(cfg, err);
	if (!app.server) {
		fprintf(stderr, "rrcache: %s\n", err);
		return 1;
	}

	start_ref = rrc_server_cfg_get(app.server);
	stats_cfg = start_ref->cfg;
	uv_loop_t loop;
	uv_loop_init(&loop);
	uv_signal_init(&loop, &app.sig_term);
	uv_signal_init(&loop, &app.sig_int);
	uv_signal_init(&loop, &app.sig_hup);
	app.sig_term.data = app.sig_int.data = app.sig_hup.data = &app;
	uv_signal_start(&app.sig_term, on_stop_signal, SIGTERM);
	uv_signal_start(&app.sig_int, on_stop_signal, SIGINT);
	uv_signal_start(&app.sig_hup, on_hup, SIGHUP);
	uv_timer_init(&loop, &app.log_timer);
	app.log_timer.data = &app;
	uv_timer_start(&app.log_timer, on_log_timer, 1000, 1000);

	if (stats_cfg->cache_save_file[0]) {
		/* The cache of the last run, if it left one (cache.save_file). */
		struct rrc_cachefile_stats cst;
		uint64_t t0 = uv_hrtime();
		int lrc = rrc_server_load_cache(app.server, &cst, err);
		if (lrc == 0)
			rrc_log(RRC_LOG_INFO, RRC_LG_CACHE,
				"cache: %llu entries loaded from %s in %llu ms (%llu expired, %llu "
				"refused)",
				(unsigned long long)cst.loaded, stats_cfg->cache_save_file,
				(unsigned long long)((uv_hrtime() - t0) / 1000000),
				(unsigned long long)cst.expired, (unsigned long long)cst.refused);
		else if (lrc != -ENOENT)
			rrc_log(RRC_LOG_WARN, RRC_LG_CACHE, "cache: not loaded: %s", err);
	}
	int rc = rrc_server_start(app.server);
	struct rrc_http *http = NULL;
	if (rc == 0 && stats_on) {
		http = rrc_http_start(app.server, stats_cfg, err);
		if (!http) {
			rrc_log(RRC_LOG_ERR, RRC_LG_MAIN, "%s", err);
			rrc_server_stop(app.server);
			rc = -1;
		}
	}
	if (rc == 0 && run_user[0] && drop_privileges(run_user, run_group, err) != 0) {
		rrc_log(RRC_LOG_ERR, RRC_LG_MAIN, "%s", err);
		rrc_http_stop(http);
		rrc_server_stop(app.server);
		rc = -1;
	} else if (rc == 0 && !run_user[0] && geteuid() == 0) {
		rrc_log(RRC_LOG_WARN, RRC_LG_MAIN,
			"running as root: set user: (e.g. user: nobody) to drop privileges once "
			"the "
			"sockets are bound");
	}
	if (rc == 0) {
		rrc_log(RRC_LOG_INFO, RRC_LG_MAIN,
			"rrcache %s ready: %u worker(s), listening on %s (%u address(es))%s, "
			"upstream %s (%u server(s))",
			RRC_VERSION, workers, lst, n_listen, dot, up, n_up);
		char status[160];
		snprintf(status, sizeof(status),
			 "answering on %s (%u address(es)), %u worker(s), %u upstream(s)", lst,
			 n_listen, workers, n_up);
		rrc_notify_ready(status);
		uv_run(&loop, UV_RUN_DEFAULT);
		rrc_http_stop(http);
		rrc_server_stop(app.server);
		save_cache(app.server);
		log_summary(app.server);
	}
	uv_close((uv_handle_t *)&app.sig_term, NULL);
	uv_close((uv_handle_t *)&app.sig_int, NULL);
	uv_close((uv_handle_t *)&app.sig_hup, NULL);
	uv_close((uv_handle_t *)&app.log_timer, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	int lc = uv_loop_close(&loop);
	rrc_cfg_ref_put(start_ref);
	rrc_server_destroy(app.server);
	if (lc != 0) {
		rrc_log(RRC_LOG_ERR, RRC_LG_MAIN, "event loop did not close cleanly");
		return 1;
	}
	rrc_log(RRC_LOG_INFO, RRC_LG_MAIN, "stopped");
	rrc_log_close();
	for (struct list_opt *lo = lists; lo->name; lo++)
		free(lo->env);
	return rc == 0 ? 0 : 1;
}
