/*
 * http: the statistics endpoint. See include/rrcache/http.h.
 */
#include "rrcache/http.h"
#include "rrcache/acl.h"
#include "rrcache/cache.h"
#include "rrcache/form.h"
#include "rrcache/log.h"
#include "rrcache/msg.h"
#include "rrcache/redis_admin.h"
#include "rrcache/server.h"
#include "rrcache/stats.h"

#include <errno.h>
#include <ldns/ldns.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* Connections one client may hold: a dashboard polls with one or two, Prometheus scrapes with
 * one; 8 leaves room for a few tabs and stops one client from taking stats.max_connections. */
#define HTTP_PER_CLIENT 8
/* Idle seconds before a connection is closed: Prometheus's default scrape timeout, so an idle
 * keep-alive connection goes soon and a client that stalls is cut when a scraper would give
 * up anyway. */
#define HTTP_TIMEOUT_S 10
/* Request memory per connection (headers and MHD's buffers): requests here are a line and a
 * few headers; 16 KiB is four times MHD's default read buffer floor. */
#define HTTP_MEMORY (16 * 1024)
/* A POST body: a flush names one domain (at most 255 octets, 1,020 characters escaped as
 * \DDD, more when percent-encoded); 4 KiB holds any of them. */
#define HTTP_MAX_BODY 4096
/* The whole of a request (its headers and body) must arrive within this; a connection past it
 * loses its slot to the next connection that needs one (a client trickling bytes resets an
 * idle timeout, not this). A scrape sends its request at once. */
#define HTTP_REQUEST_DEADLINE_MS 5000
/* Room for /metrics: a few hundred lines plus 64 upstreams' histograms and the top-K. */
#define HTTP_OUT_MAX (1024 * 1024)

/* src/dashboard.html, embedded at build time. */
extern const unsigned char rrc_dashboard_html[];
extern const size_t rrc_dashboard_html_len;

/* The token, the ACL and the top-K size are read from the configuration in force at each
 * request, so a reload changes them; the address and the connection limit are MHD's options,
 * fixed at start. */
struct rrc_http {
	struct rrc_server *server;
	struct MHD_Daemon *daemon;
	struct rrc_redis_admin *admin; /* the fleet flush, NULL without Redis */
	struct timespec started;
	unsigned max_connections; /* stats.max_connections */
	struct slot *slots;	  /* open connections (MHD's thread only) */
};

/*
 * One open connection. The slots are enforced here rather than by libmicrohttpd's limits, so
 * that a new connection can take the slot of one that is too slow sending its request: health
 * probes and scrapes keep getting in while slow clients hold connections. Only MHD's one
 * polling thread touches the list, and it is the thread that closes connections, so a
 * connection on the list still has its socket.
 */
struct slot {
	struct slot *prev, *next;
	int fd;
	struct sockaddr_storage addr;
	uint64_t since_ms; /* its current request began (connected, or the last one ended) */
	bool answering;	   /* its request is complete: it is being answered */
	bool evicted;	   /* shut down to make room; MHD closes it next */
};

enum flush_state { FLUSH_NONE, FLUSH_RUNNING, FLUSH_DONE };

/* One request's POST body, gathered across calls, and its fleet flush while the connection
 * waits (suspended) for the admin thread. */
struct request {
	size_t len;
	bool too_big;
	struct MHD_Connection *conn;
	atomic_int flush;   /* enum flush_state */
	bool all;	    /* everything, not one name */
	bool busy;	    /* another flush was running: this one did not reach Redis */
	size_t l1_removed;  /* entries the flush took from this instance's L1 */
	long redis_deleted; /* keys, or -1 */
	char redis_err[RRC_ERR_LEN];
	char body[HTTP_MAX_BODY + 1];
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

static void evict(struct slot *sl)
{
	sl->evicted = true;
	shutdown(sl->fd, SHUT_RDWR); /* MHD sees the end and closes it */
}

/* The connection still sending its request for the longest, from host when given. */
static struct slot *slowest(struct rrc_http *h, const struct sockaddr *host)
{
	struct slot *pick = NULL;
	for (struct slot *sl = h->slots; sl; sl = sl->next) {
		if (sl->evicted || sl->answering || (host && !same_host(&sl->addr, host)))
			continue;
		if (!pick || sl->since_ms < pick->since_ms)
			pick = sl;
	}
	return pick;
}

/* Makes room for a new connection from addr: requests past their deadline lose their slot;
 * when the limits (in all, per client) are still reached, the slowest request in the way
 * loses its own. False when every slot is busy answering. */
static bool make_room(struct rrc_http *h, const struct sockaddr *addr)
{
	uint64_t now = mono_ms();
	unsigned total = 0, mine = 0;
	for (struct slot *sl = h->slots; sl; sl = sl->next) {
		if (!sl->evicted && !sl->answering && now - sl->since_ms > HTTP_REQUEST_DEADLINE_MS)
			evict(sl);
		if (sl->evicted)
			continue;
		total++;
		mine += same_host(&sl->addr, addr);
	}
	if (mine >= HTTP_PER_CLIENT) {
		struct slot *sl = slowest(h, addr);
		if (!sl)
			return false;
		evict(sl);
		total--;
	}
	if (total >= h->max_connections) {
		struct slot *sl = slowest(h, NULL);
		if (!sl)
			return false;
		evict(sl);
	}
	return true;
}

static enum MHD_Result allow_client(void *cls, const struct sockaddr *addr, socklen_t len)
{
	struct rrc_http *h = cls;
	(void)len;
	struct rrc_cfg_ref *ref = rrc_server_cfg_get(h->server);
	bool ok = rrc_acl_allows(ref->stats_allow, addr);
	rrc_cfg_ref_put(ref);
	return ok && make_room(h, addr) ? MHD_YES : MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct rrc_http *h = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *ad =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		struct slot *sl = calloc(1, sizeof(*sl));
		if (!sl || !fd || !ad) {
			free(sl);
			return; /* not tracked: it only ever counts in MHD's own limit */
		}
		sl->fd = fd->connect_fd;
		memcpy(&sl->addr, ad->client_addr,
		       ad->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							      : sizeof(struct sockaddr_in));
		sl->since_ms = mono_ms();
		sl->next = h->slots;
		if (h->slots)
			h->slots->prev = sl;
		h->slots = sl;
		*socket_context = sl;
		return;
	}
	struct slot *sl = *socket_context;
	if (!sl)
		return;
	if (sl->prev)
		sl->prev->next = sl->next;
	else
		h->slots = sl->next;
	if (sl->next)
		sl->next->prev = sl->prev;
	free(sl);
	*socket_context = NULL;
}

/* The connection's request has arrived whole: it is being answered. */
static void answering(struct MHD_Connection *c, bool yes)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct slot *sl = ci ? ci->socket_context : NULL;
	if (!sl)
		return;
	sl->answering = yes;
	if (!yes)
		sl->since_ms = mono_ms();
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
			       const char *body, size_t len)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	enum MHD_Result rc = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned status, const char *text)
{
	return respond(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* Everything a page shows, gathered now. The top-K tables are merged only when asked for. */
struct view_data {
	struct rrc_worker_stats sum;
	struct rrc_cache_stats cache;
	char names[RRC_MAX_UPSTREAMS][64];
	const char *name_ptr[RRC_MAX_UPSTREAMS];
	char pools[RRC_MAX_UPSTREAMS][32];
	const char *pool_ptr[RRC_MAX_UPSTREAMS];
	struct rrc_topk top[RRC_TOP_CATS][2];
	struct rrc_policy_list_info lists[RRC_POLICY_MAX_LISTS];
	size_t n_lists;
	char groups[RRC_POLICY_MAX_GROUPS][32];
	const char *group_ptr[RRC_POLICY_MAX_GROUPS];
	unsigned n_groups;
	struct rrc_stats_view v;
};

static void gather(struct rrc_http *h, struct view_data *d, bool with_top)
{
	rrc_server_sum_stats(h->server, &d->sum);
	rrc_cache_get_stats(rrc_server_cache(h->server), &d->cache);
	struct rrc_cfg_ref *ref = rrc_server_cfg_get(h->server);
	const struct rrc_config *cfg = ref->cfg;
	memset(&d->v, 0, sizeof(d->v));
	d->v.n_upstreams = cfg->n_upstreams;
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		rrc_addr_format(&cfg->upstreams[i].addr, d->names[i], sizeof(d->names[i]));
		d->name_ptr[i] = d->names[i];
		snprintf(d->pools[i], sizeof(d->pools[i]), "%s",
			 cfg->pools[rrc_config_pool_of_server(cfg, i)].name);
		d->pool_ptr[i] = d->pools[i];
	}
	d->v.top_k = cfg->stats.top_k;
	const struct rrc_policy_list_info *li;
	d->n_lists = rrc_policy_lists(cfg->policy.matcher, &li);
	if (d->n_lists)
		memcpy(d->lists, li, d->n_lists * sizeof(*li));
	d->n_groups = cfg->policy.n_groups;
	for (unsigned i = 0; i < d->n_groups; i++) {
		snprintf(d->groups[i], sizeof(d->groups[i]), "%s", cfg->policy.groups[i].name);
		d->group_ptr[i] = d->groups[i];
	}
	rrc_cfg_ref_put(ref);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	d->v.sum = &d->sum;
	d->v.cache = &d->cache;
	d->v.n_workers = rrc_server_worker_count(h->server);
	d->v.upstream_names = d->name_ptr;
	d->v.upstream_pools = d->pool_ptr;
	d->v.lists = d->lists;
	d->v.n_lists = d->n_lists;
	d->v.group_names = d->group_ptr;
	d->v.n_groups = d->n_groups;
	d->v.redis_enabled = rrc_server_redis(h->server) != NULL;
	struct rrc_dynblock *db = rrc_server_dynblock(h->server);
	rrc_dynblock_totals(db, &d->v.dynblock);
	d->v.dynblock_active = rrc_dynblock_list(db, uv_hrtime() / 1000000, NULL, 0);
	d->v.version = RRC_VERSION;
	d->v.libuv_version = uv_version_string();
	d->v.ldns_version = ldns_version();
	d->v.uptime_s = (double)(now.tv_sec - h->started.tv_sec) +
			(double)(now.tv_nsec - h->started.tv_nsec) / 1e9;
	if (with_top) {
		for (unsigned cat = 0; cat < RRC_TOP_CATS; cat++) {
			for (int win = 0; win < 2; win++) {
				rrc_topk_init(&d->top[cat][win]);
				rrc_server_top(h->server, cat, win == 1, &d->top[cat][win]);
				d->v.top[cat][win] = &d->top[cat][win];
			}
		}
	}
}

typedef void (*render_fn)(const struct rrc_stats_view *v, int arg, struct rrc_buf *b);

/* The process metrics every Prometheus client library exports (the same names and units), read
 * from /proc at each scrape: CPU time, memory, descriptors, start time. */
static void process_metrics(struct rrc_buf *b)
{
	FILE *f = fopen("/proc/self/stat", "r");
	char line[1024];
	if (f && fgets(line, sizeof(line), f)) {
		/* After the command's closing parenthesis: state is field 3, utime 14, stime 15,
		 * starttime 22, vsize 23, rss 24 (pages). */
		const char *p = strrchr(line, ')');
		unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
		if (p && sscanf(p + 2,
				"%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
				"%*d %*d %*d %llu %llu %llu",
				&utime, &stime, &start, &vsize, &rss) == 5) {
			double hz = (double)sysconf(_SC_CLK_TCK);
			double boot = 0;
			FILE *up = fopen("/proc/uptime", "r");
			double uptime = 0;
			if (up && fscanf(up, "%lf", &uptime) == 1)
				boot = (double)time(NULL) - uptime;
			if (up)
				fclose(up);
			rrc_buf_printf(
				b,
				"# HELP process_cpu_seconds_total Total user and system CPU time "
				"spent in seconds.\n# TYPE process_cpu_seconds_total counter\n"
				"process_cpu_seconds_total %.2f\n",
				(double)(utime + stime) / hz);
			rrc_buf_printf(
				b,
				"# HELP process_resident_memory_bytes Resident memory size in "
				"bytes.\n# TYPE process_resident_memory_bytes gauge\n"
				"process_resident_memory_bytes %llu\n",
				rss * (unsigned long long)sysconf(_SC_PAGESIZE));
			rrc_buf_printf(b,
				       "# HELP process_virtual_memory_bytes Virtual memory size in "
				       "bytes.\n# TYPE process_virtual_memory_bytes gauge\n"
				       "process_virtual_memory_bytes %llu\n",
				       vsize);
			rrc_buf_printf(
				b,
				"# HELP process_start_time_seconds Start time of the process "
				"since unix epoch in seconds.\n"
				"# TYPE process_start_time_seconds gauge\n"
				"process_start_time_seconds %.2f\n",
				boot + (double)start / hz);
		}
	}
	if (f)
		fclose(f);
	unsigned long fds = 0;
	uv_fs_t req;
	if (uv_fs_scandir(NULL, &req, "/proc/self/fd", 0, NULL) >= 0) {
		uv_dirent_t ent;
		while (uv_fs_scandir_next(&req, &ent) != UV_EOF)
			fds++;
	}
	uv_fs_req_cleanup(&req);
	rrc_buf_printf(b,
		       "# HELP process_open_fds Number of open file descriptors.\n"
		       "# TYPE process_open_fds gauge\nprocess_open_fds %lu\n",
		       fds);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		rrc_buf_printf(b,
			       "# HELP process_max_fds Maximum number of open file descriptors.\n"
			       "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
			       (unsigned long long)rl.rlim_cur);
}

static void r_prom(const struct rrc_stats_view *v, int arg, struct rrc_buf *b)
{
	(void)arg;
	rrc_stats_prometheus(v, b);
	process_metrics(b);
}

static void r_stats(const struct rrc_stats_view *v, int arg, struct rrc_buf *b)
{
	(void)arg;
	rrc_stats_json(v, b);
}

static void r_upstreams(const struct rrc_stats_view *v, int arg, struct rrc_buf *b)
{
	(void)arg;
	rrc_stats_json_upstreams(v, b);
}

static void r_top(const struct rrc_stats_view *v, int arg, struct rrc_buf *b)
{
	rrc_stats_json_top(v, arg, b);
}

static enum MHD_Result render(struct rrc_http *h, struct MHD_Connection *c, render_fn fn, int arg,
			      bool with_top, const char *type)
{
	struct view_data *d = malloc(sizeof(*d));
	char *out = malloc(HTTP_OUT_MAX);
	enum MHD_Result rc;
	if (!d || !out) {
		rc = respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	} else {
		gather(h, d, with_top);
		struct rrc_buf b = {.p = out, .cap = HTTP_OUT_MAX};
		fn(&d->v, arg, &b);
		rc = b.overflow ? respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "too large\n")
				: respond(c, MHD_HTTP_OK, type, out, b.len);
	}
	free(d);
	free(out);
	return rc;
}

/* Whether the request carries token (not empty) as its bearer token. */
static bool authorized(const char *token, struct MHD_Connection *c)
{
	if (!token[0])
		return false;
	const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	static const char bearer[] = "Bearer ";
	if (!a || strncmp(a, bearer, sizeof(bearer) - 1) != 0)
		return false;
	/* Compared in time independent of where they differ. */
	const char *given = a + sizeof(bearer) - 1;
	size_t n = strlen(token), m = strlen(given);
	unsigned diff = (unsigned)(n ^ m);
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned)(token[i] ^ (i < m ? given[i] : 0));
	return diff == 0;
}

/* A request argument, from the URL's query (decoded by libmicrohttpd) or else the form body.
 * RRC_FORM_BAD for a value that holds a NUL, a '%' left by a broken escape, or is too long. */
static enum rrc_form_field argument(struct MHD_Connection *c, const char *body, const char *field,
				    char *out, size_t cap)
{
	const char *q = NULL;
	size_t qlen = 0;
	if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, field, strlen(field), &q,
					  &qlen) == MHD_YES &&
	    q) {
		if (qlen != strlen(q) || qlen + 1 > cap || memchr(q, '%', qlen))
			return RRC_FORM_BAD;
		memcpy(out, q, qlen + 1);
		return RRC_FORM_OK;
	}
	return rrc_form_value(body, field, out, cap);
}

/* The flush's answer, once its Redis part (if any) is done. */
static enum MHD_Result flush_answer(struct MHD_Connection *c, struct request *req)
{
	char msg[RRC_ERR_LEN + 128];
	if (req->redis_deleted < 0) {
		bool busy = req->busy;
		return respond_text(c, busy ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_GATEWAY,
				    busy ? "L1 flushed; another Redis flush is running, try again\n"
					 : "L1 flushed; Redis failed\n");
	}
	int n = snprintf(msg, sizeof(msg), "{\"flushed\":%s,\"l1_entries_removed\":%zu",
			 req->all ? "\"all\"" : "\"name\"", req->l1_removed);
	if (req->redis_deleted >= 0 && atomic_load(&req->flush) == FLUSH_DONE)
		n += snprintf(msg + n, sizeof(msg) - (size_t)n, ",\"redis_keys_deleted\":%ld",
			      req->redis_deleted);
	snprintf(msg + n, sizeof(msg) - (size_t)n, "}\n");
	return respond(c, MHD_HTTP_OK, "application/json", msg, strlen(msg));
}

/* Called on the admin thread when the Redis part of a flush has ended. */
static void on_flushed(void *ctx, long deleted, const char *err)
{
	struct request *req = ctx;
	req->redis_deleted = deleted;
	snprintf(req->redis_err, sizeof(req->redis_err), "%s", err ? err : "");
	atomic_store(&req->flush, FLUSH_DONE);
	MHD_resume_connection(req->conn); /* MHD calls on_request again for it */
}

/* A flush names one domain (name=) or asks for everything (all=1), never both, never
 * neither: a name that does not decode and parse cleanly is refused and flushes nothing. */
static enum MHD_Result flush(struct rrc_http *h, struct MHD_Connection *c, struct request *req)
{
	char name[1100] = "", all[8] = "";
	enum rrc_form_field fn = argument(c, req->body, "name", name, sizeof(name));
	enum rrc_form_field fa = argument(c, req->body, "all", all, sizeof(all));
	if (fn == RRC_FORM_BAD || fa == RRC_FORM_BAD)
		return respond_text(c, MHD_HTTP_BAD_REQUEST, "a value does not decode\n");
	bool everything = fa == RRC_FORM_OK && strcmp(all, "1") == 0;
	if (fa == RRC_FORM_OK && !everything)
		return respond_text(c, MHD_HTTP_BAD_REQUEST, "all: only all=1\n");
	if ((fn == RRC_FORM_OK) == everything)
		return respond_text(c, MHD_HTTP_BAD_REQUEST,
				    "give name=NAME (one domain) or all=1 (everything)\n");
	uint8_t name_wire[RRC_WIRE_MAX_NAME];
	size_t wlen = 0;
	if (!everything) {
		for (const char *p = name; *p; p++) {
			if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7F)
				return respond_text(
					c, MHD_HTTP_BAD_REQUEST,
					"not a domain name (write other bytes as \\DDD)\n");
		}
		if (rrc_msg_name_from_text(name, name_wire, &wlen) != 0)
			return respond_text(c, MHD_HTTP_BAD_REQUEST, "not a domain name\n");
	}
	const uint8_t *wire = everything ? NULL : name_wire;
	struct rrc_cache *cache = rrc_server_cache(h->server);
	req->all = wire == NULL;
	if (wire) {
		req->l1_removed = rrc_cache_remove_name(cache, wire, wlen);
	} else {
		struct rrc_cache_stats st;
		rrc_cache_get_stats(cache, &st);
		req->l1_removed = st.entries;
		rrc_cache_clear(cache);
	}
	rrc_log(RRC_LOG_INFO, RRC_LG_HTTP, "cache flush (%s) from the API",
		name[0] ? "one name" : "all");
	if (!h->admin)
		return flush_answer(c, req);
	/* The fleet too: Redis's keys, and every instance's L1 through pub/sub. It runs on the
	 * admin's thread while this connection waits, suspended, so that MHD's thread keeps
	 * serving scrapes; it is suspended before the flush starts, so the flush's end always
	 * finds it suspended. */
	req->conn = c;
	atomic_store(&req->flush, FLUSH_RUNNING);
	MHD_suspend_connection(c);
	int rc = rrc_redis_admin_start(h->admin, wire, wlen, on_flushed, req);
	if (rc != 0) {
		req->busy = rc == -EBUSY;
		on_flushed(req, -1, req->busy ? "another flush is running" : "no thread");
	}
	return MHD_YES;
}

static int by_start(const void *a, const void *b)
{
	const struct rrc_dynblock_entry *x = a, *y = b;
	return (x->since_ms > y->since_ms) - (x->since_ms < y->since_ms);
}

/* GET /api/v1/blocks: the dynamic blocks in force, oldest first. */
static enum MHD_Result blocks_list(struct rrc_http *h, struct MHD_Connection *c)
{
	struct rrc_dynblock *db = rrc_server_dynblock(h->server);
	uint64_t now = mono_ms();
	/* Room for a few that start between the count and the copy. */
	size_t cap = rrc_dynblock_list(db, now, NULL, 0) + 16;
	struct rrc_dynblock_entry *e = calloc(cap, sizeof(*e));
	size_t out_cap = 64 + cap * 256;
	char *out = malloc(out_cap);
	enum MHD_Result rc = MHD_NO;
	if (e && out) {
		size_t total = rrc_dynblock_list(db, now, e, cap);
		size_t n = RRC_MIN(total, cap);
		qsort(e, n, sizeof(*e), by_start);
		struct timespec wall;
		clock_gettime(CLOCK_REALTIME, &wall);
		struct rrc_buf b = {.p = out, .cap = out_cap};
		rrc_stats_json_blocks(e, n, total, now,
				      (double)wall.tv_sec + (double)wall.tv_nsec / 1e9, &b);
		rc = b.overflow ? respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "too large\n")
				: respond(c, MHD_HTTP_OK, "application/json", out, b.len);
	}
	free(e);
	free(out);
	return rc;
}

/* POST /api/v1/blocks (prefix=, duration=: a block by hand, or a longer one) and DELETE
 * /api/v1/blocks (prefix=: that block ends; all=1: every block ends). A prefix is written
 * as in the ACL, host bits zero: 192.0.2.0/24, 2001:db8::/48, 192.0.2.7. */
static enum MHD_Result blocks_write(struct rrc_http *h, struct MHD_Connection *c,
				    struct request *req, bool add, uint32_t default_ms)
{
	char prefix[64] = "", all[8] = "", dur[32] = "";
	enum rrc_form_field fp = argument(c, req->body, "prefix", prefix, sizeof(prefix));
	enum rrc_form_field fa = argument(c, req->body, "all", all, sizeof(all));
	enum rrc_form_field fd = argument(c, req->body, "duration", dur, sizeof(dur));
	if (fp == RRC_FORM_BAD || fa == RRC_FORM_BAD || fd == RRC_FORM_BAD)
		return respond_text(c, MHD_HTTP_BAD_REQUEST, "a value does not decode\n");
	bool everything = !add && fa == RRC_FORM_OK && strcmp(all, "1") == 0;
	if (fa == RRC_FORM_OK && !everything)
		return respond_text(c, MHD_HTTP_BAD_REQUEST, "all: only all=1, only to remove\n");
	if ((fp == RRC_FORM_OK) == everything)
		return respond_text(c, MHD_HTTP_BAD_REQUEST,
				    add ? "give prefix=NETWORK/LENGTH\n"
					: "give prefix=NETWORK/LENGTH or all=1\n");
	struct rrc_dynblock *db = rrc_server_dynblock(h->server);
	uint64_t now = mono_ms();
	char msg[160];
	if (everything) {
		unsigned n = rrc_dynblock_clear(db, now);
		rrc_log(RRC_LOG_INFO, RRC_LG_HTTP, "%u dynamic blocks removed through the API", n);
		snprintf(msg, sizeof(msg), "{\"removed\":%u}\n", n);
		return respond(c, MHD_HTTP_OK, "application/json", msg, strlen(msg));
	}
	struct rrc_acl_rule r;
	if (rrc_acl_rule_parse(prefix, true, &r) != 0)
		return respond_text(c, MHD_HTTP_BAD_REQUEST,
				    "prefix: a network with its host bits zero (192.0.2.0/24, "
				    "2001:db8::/48) or an address\n");
	struct rrc_dynblock_entry e = {.family = r.family, .bits = r.prefix};
	memcpy(e.addr, r.addr, sizeof(e.addr));
	char text[RRC_DYNBLOCK_TEXT];
	rrc_dynblock_prefix_text(&e, text, sizeof(text));
	if (!add) {
		int n = rrc_dynblock_remove(db, r.family, r.addr, r.prefix, now);
		if (n)
			rrc_log(RRC_LOG_INFO, RRC_LG_HTTP,
				"dynamic block of %s removed through the API", text);
		snprintf(msg, sizeof(msg), "{\"removed\":%d}\n", n);
		return respond(c, n ? MHD_HTTP_OK : MHD_HTTP_NOT_FOUND, "application/json", msg,
			       strlen(msg));
	}
	uint64_t ms = default_ms;
	if (fd == RRC_FORM_OK &&
	    (rrc_config_parse_duration_ms(dur, &ms) != 0 || ms < 1000 || ms > 86400000))
		return respond_text(c, MHD_HTTP_BAD_REQUEST,
				    "duration: 1s to 24h (e.g. 90s, 10m)\n");
	int rc = rrc_dynblock_add(db, r.family, r.addr, r.prefix, RRC_DB_MANUAL, 0, now, ms);
	if (rc < 0)
		return respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
				    "no room: dynblock.max_blocks blocks are in force\n");
	rrc_log(RRC_LOG_INFO, RRC_LG_HTTP, "dynamic block of %s for %llu s through the API", text,
		(unsigned long long)(ms / 1000));
	snprintf(msg, sizeof(msg), "{\"blocked\":\"%s\",\"seconds\":%llu,\"new\":%s}\n", text,
		 (unsigned long long)(ms / 1000), rc == 1 ? "true" : "false");
	return respond(c, MHD_HTTP_OK, "application/json", msg, strlen(msg));
}

/* POST /api/v1/cache/save: the L1 cache to cache.save_file, now. */
static enum MHD_Result save_cache(struct rrc_http *h, struct MHD_Connection *c)
{
	char err[RRC_ERR_LEN], msg[RRC_ERR_LEN + 64];
	uint64_t t0 = mono_ms();
	long n = rrc_server_save_cache(h->server, err);
	if (n < 0) {
		snprintf(msg, sizeof(msg), "not saved: %s\n", err);
		return respond_text(
			c, n == -EINVAL ? MHD_HTTP_CONFLICT : MHD_HTTP_INTERNAL_SERVER_ERROR, msg);
	}
	rrc_log(RRC_LOG_INFO, RRC_LG_HTTP, "cache: %ld entries saved through the API", n);
	snprintf(msg, sizeof(msg), "{\"saved\":%ld,\"ms\":%llu}\n", n,
		 (unsigned long long)(mono_ms() - t0));
	return respond(c, MHD_HTTP_OK, "application/json", msg, strlen(msg));
}

static bool ready(struct rrc_http *h)
{
	if (!rrc_server_running(h->server))
		return false;
	struct rrc_worker_stats *sum = malloc(sizeof(*sum));
	if (!sum)
		return false;
	rrc_server_sum_stats(h->server, sum);
	struct rrc_cfg_ref *ref = rrc_server_cfg_get(h->server);
	bool any = false;
	for (unsigned i = 0; i < ref->cfg->n_upstreams; i++)
		any |= sum->up[i].up > 0;
	rrc_cfg_ref_put(ref);
	free(sum);
	return any;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct rrc_http *h = cls;
	(void)version;
	bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	bool del = strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
	bool write = post || del;
	if (!write || (*con_cls && *upload_size == 0))
		answering(c, true);
	bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
		   strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	if (write) {
		struct request *req = *con_cls;
		if (!req) {
			req = calloc(1, sizeof(*req));
			if (!req)
				return MHD_NO;
			*con_cls = req;
			return MHD_YES;
		}
		int fs = atomic_load(&req->flush);
		if (fs == FLUSH_DONE)
			return flush_answer(c, req);
		if (fs == FLUSH_RUNNING)
			return MHD_YES; /* suspended: MHD does not call while it waits */
		if (*upload_size) {
			size_t take = *upload_size;
			if (req->len + take > HTTP_MAX_BODY)
				req->too_big = true;
			else
				memcpy(req->body + req->len, upload, take);
			req->len += req->too_big ? 0 : take;
			*upload_size = 0;
			return MHD_YES;
		}
		req->body[req->len] = '\0';
		if (req->too_big)
			return respond_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "body too large\n");
		bool blocks = strcmp(url, "/api/v1/blocks") == 0;
		if (del && !blocks)
			return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
		if (!blocks && strcmp(url, "/api/v1/cache/flush") != 0 &&
		    strcmp(url, "/api/v1/cache/save") != 0 && strcmp(url, "/api/v1/top/reset") != 0)
			return respond_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
		struct rrc_cfg_ref *ref = rrc_server_cfg_get(h->server);
		bool has_token = ref->cfg->stats.token[0] != '\0';
		bool ok = authorized(ref->cfg->stats.token, c);
		uint32_t block_ms = ref->cfg->dynblock.duration_ms;
		rrc_cfg_ref_put(ref);
		if (!ok)
			return respond_text(
				c, has_token ? MHD_HTTP_UNAUTHORIZED : MHD_HTTP_FORBIDDEN,
				has_token ? "a valid bearer token is needed\n"
					  : "writes are off: no stats.token configured\n");
		if (blocks)
			return blocks_write(h, c, req, post, block_ms);
		if (strcmp(url, "/api/v1/cache/save") == 0)
			return save_cache(h, c);
		if (strcmp(url, "/api/v1/top/reset") == 0) {
			rrc_server_top_reset(h->server);
			return respond(c, MHD_HTTP_OK, "application/json", "{\"reset\":true}\n",
				       15);
		}
		return flush(h, c, req);
	}
	if (!get)
		return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	if (strcmp(url, "/metrics") == 0)
		return render(h, c, r_prom, 0, true, "text/plain; version=0.0.4; charset=utf-8");
	if (strcmp(url, "/api/v1/stats") == 0)
		return render(h, c, r_stats, 0, false, "application/json");
	if (strcmp(url, "/api/v1/upstreams") == 0)
		return render(h, c, r_upstreams, 0, false, "application/json");
	if (strcmp(url, "/api/v1/blocks") == 0)
		return blocks_list(h, c);
	if (strcmp(url, "/api/v1/top") == 0) {
		const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "window");
		if (w && strcmp(w, "1m") != 0 && strcmp(w, "1h") != 0)
			return respond_text(c, MHD_HTTP_BAD_REQUEST, "window: 1m or 1h\n");
		return render(h, c, r_top, w && strcmp(w, "1h") == 0, true, "application/json");
	}
	if (strcmp(url, "/") == 0) {
		struct MHD_Response *r = MHD_create_response_from_buffer(
			rrc_dashboard_html_len, (void *)rrc_dashboard_html, MHD_RESPMEM_PERSISTENT);
		if (!r)
			return MHD_NO;
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
					"text/html; charset=utf-8");
		/* The page loads nothing from anywhere but this endpoint. */
		MHD_add_response_header(r, "Content-Security-Policy",
					"default-src 'none'; script-src 'unsafe-inline'; "
					"style-src 'unsafe-inline'; connect-src 'self'");
		MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
		enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
		MHD_destroy_response(r);
		return rc;
	}
	if (strcmp(url, "/healthz") == 0)
		return respond_text(c, MHD_HTTP_OK, "ok\n");
	if (strcmp(url, "/readyz") == 0)
		return ready(h) ? respond_text(c, MHD_HTTP_OK, "ready\n")
				: respond_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
					       "not ready: not listening or no upstream up\n");
	return respond_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)toe;
	answering(c, false); /* the next request's clock starts now */
	free(*con_cls);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[256];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	rrc_log_limited(RRC_LOG_WARN, RRC_LG_HTTP, "%s", msg);
}

struct rrc_http *rrc_http_start(struct rrc_server *s, const struct rrc_config *cfg,
				char err[RRC_ERR_LEN])
{
	struct rrc_http *h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return NULL;
	}
	h->server = s;
	h->max_connections = cfg->stats.max_connections;
	clock_gettime(CLOCK_MONOTONIC, &h->started);
	const struct rrc_redis_conf *redis = rrc_server_redis(s);
	if (redis && !(h->admin = rrc_redis_admin_create(redis))) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		free(h);
		return NULL;
	}
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
			 MHD_ALLOW_SUSPEND_RESUME;
	if (cfg->stats.listen.sa.sa_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	uint16_t port = ntohs(cfg->stats.listen.sin.sin_port); /* same offset for both families */
	h->daemon = MHD_start_daemon(
		flags, port, allow_client, h, on_request, h,
		/* The logger first, so that every message of MHD's goes through rrcache's log. */
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_SOCK_ADDR, &cfg->stats.listen.sa,
		/* Twice the slots: connections that lost theirs still count until MHD has closed
		 * them (make_room enforces stats.max_connections and HTTP_PER_CLIENT). */
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->stats.max_connections * 2,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned)HTTP_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MEMORY,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
	if (!h->daemon) {
		char a[64];
		rrc_addr_format(&cfg->stats.listen, a, sizeof(a));
		snprintf(err, RRC_ERR_LEN, "cannot serve statistics on %s (stats.listen)", a);
		rrc_redis_admin_destroy(h->admin);
		free(h);
		return NULL;
	}
	return h;
}

void rrc_http_stop(struct rrc_http *h)
{
	if (!h)
		return;
	/* First the admin: a flush in progress is interrupted and its connection resumed, as
	 * MHD wants every connection resumed before it stops. */
	rrc_redis_admin_destroy(h->admin);
	MHD_stop_daemon(h->daemon);
	free(h);
}
