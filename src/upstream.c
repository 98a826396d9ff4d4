/*
 * upstream: servers, attempts, health checks. See include/rrcache/upstream.h.
 *
 * Limits: at most RRC_MAX_UPSTREAMS servers and RRC_MAX_UPSTREAM_SOCKETS UDP sockets open per
 * server (plus retired ones still waiting for replies); a TCP reply of at most 65535 bytes;
 * the random port search gives up after RRC_PORT_TRIES binds and lets the kernel choose.
 *
 * UDP (CONFORMANCE U2): per server, upstream.sockets slots, each holding a connected socket
 * bound to a random port. A query goes to a slot picked at random, with an ID that no other
 * query in flight on that socket has. A socket that has carried upstream.socket_reuse queries
 * or lived upstream.socket_lifetime is retired: it takes no new query, stays open until its
 * queries in flight end, and the slot gets a freshly bound socket at its next use. Idle
 * sockets past their lifetime are closed by a sweep.
 *
 * Sockets are plain non-blocking descriptors in one epoll set of the set's own, which the loop
 * watches with a single uv_poll_t (no uv_udp_t: libuv's extra read until EAGAIN and its
 * EPOLL_CTL_DEL before close each cost a system call). Queries are not sent at once but queued
 * on their socket and sent with one sendmmsg per socket just before the loop next waits (a
 * uv_prepare_t), so the misses of one batch of client datagrams leave together; replies are
 * read with recvmmsg. Sockets closed while a batch of events is being dispatched are freed
 * after the batch, since a later event of the same batch may still point at them.
 *
 * DNS over TLS (RFC 7858): per server, upstream.tls_connections slots of TLS connections, each
 * carrying up to upstream.tls_max_inflight queries at once, told apart by ID and answered in
 * any order (RFC 7766 §6.2.1.1). A new connection is opened only when the others are half
 * full; queries wait for its handshake. Queries are padded to 128 octets (RFC 8467) and carry
 * an edns-tcp-keepalive option; an idle connection closes after upstream.tls_idle_timeout or
 * sooner when the server's keepalive says so (RFC 7828). The server's last session ticket is
 * kept, so a new connection resumes instead of a full handshake. Each query keeps its own
 * deadline (the query's): one that times out while its connection has received nothing since
 * it was sent condemns the connection, whose other queries fail over at once, so a dead
 * connection is noticed within one timeout. Probes go through the same connections.
 */
#include "rrcache/upstream.h"
#include "rrcache/balancer.h"
#include "rrcache/dnstap.h"
#include "rrcache/log.h"
#include "rrcache/msg.h"
#include "rrcache/env.h"
#include "rrcache/pool.h"
#include "rrcache/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

/* Binds tried on random ports before falling back to an ephemeral one: with even half of the
 * 64,512 ports taken, eight tries all fail once in 256 queries, and the kernel's own choice
 * is random too (Linux picks ephemeral ports by a keyed hash since 4.x, RFC 6056 §3.3.4). */
#define RRC_PORT_TRIES 8
/* Lowest source port we pick: below it are the privileged and well-known ports. */
#define RRC_PORT_MIN 1024
/* Socket events taken from the set's epoll per readable event of the loop; more wait for the
 * next turn of the loop, which keeps timers and clients served during a flood of replies. */
#define RRC_EVENTS_BATCH 64
/* Datagrams read from one socket per recvmmsg, and sent per sendmmsg. */
#define RRC_RECV_BATCH 16
#define RRC_SEND_BATCH 64
/* Chains of a socket's queries in flight, by ID: at most 256 per socket (socket_reuse). */
#define RRC_SOCK_BUCKETS 64

struct usock;
struct tconn;

struct server {
	struct rrc_sockaddr addr;
	char name[64];
	char pool[32];	      /* its pool's name: a reload keeps a server by pool and address */
	unsigned refs;	      /* the set's array + live attempts + open sockets */
	int idx;	      /* position in the set, -1 once removed by a reload */
	uint32_t failures;    /* counted failures in a row (see server_failed) */
	uint32_t good_probes; /* while down: good probes in a row */
	uint64_t last_ok_us;  /* its last valid reply, to anything */
	bool suspect;	      /* max_failures reached while up: a probe decides */
	bool probing;	      /* a probe of it is in flight */
	struct usock *sock[RRC_MAX_UPSTREAM_SOCKETS]; /* UDP slots; NULL: open one at next use */
	bool tls;				      /* DNS over TLS */
	char tls_name[256];
	uint8_t pins[RRC_TLS_MAX_PINS][RRC_TLS_PIN_LEN];
	unsigned n_pins;
	struct tconn *tc[RRC_MAX_TLS_CONNS]; /* TLS slots; NULL: open one when needed */
	uint8_t ticket[RRC_TLS_SESSION_MAX]; /* its last session ticket (resumption) */
	size_t ticket_len;
};

/* One TLS connection to a server, carrying many queries (DNS over TLS). */
struct tconn {
	struct rrc_upstreams *u;
	struct server *srv; /* holds a reference */
	int slot;	    /* in srv->tc, -1 once retired (no new query) */
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_timer_t timer; /* idle close; at 0 ms: condemned */
	struct rrc_tls *tls;
	bool ready;	   /* handshake done */
	bool closing;	   /* handles being closed */
	bool counted;	   /* in the server's connection gauge */
	unsigned handles;  /* libuv handles not yet closed */
	unsigned inflight; /* attempts on it (sent or waiting) */
	uint64_t last_rx_us;
	int64_t keepalive_ms;		       /* the server's edns-tcp-keepalive, -1: none heard */
	struct rrc_attempt *wait, **wait_tail; /* until the handshake is done */
	struct rrc_attempt *by_id[RRC_SOCK_BUCKETS];
	struct tconn *prev, *next; /* u->tconns */
	struct tconn *tfnext;	   /* u->tflush: queries to write before the loop waits */
	bool in_tflush;
	uint8_t *out; /* those queries, framed: one TLS record for them all */
	size_t out_len, out_cap;
	size_t rlen;
	uint8_t rbuf[2 + RRC_WIRE_MAX_MSG]; /* plaintext being split into messages */
};

/* A write of TLS records to a connection; owns them until written. */
struct twrite {
	uv_write_t req;
	uint8_t *data;
};

/* One connected UDP socket to a server, carrying up to socket_reuse queries. */
struct usock {
	struct rrc_upstreams *u;
	struct server *srv; /* holds a reference */
	int fd;		    /* -1 once closed */
	int slot;	    /* its slot in srv->sock, -1 once retired */
	uint32_t sent;	    /* queries given to it */
	uint32_t inflight;  /* of those, attempts still registered */
	uint64_t born_us;
	struct usock *prev, *next;   /* u->socks, or u->dead once closed */
	struct usock *fprev, *fnext; /* u->flush: it has queries to send */
	bool in_flush;
	struct rrc_attempt *pend, **pend_tail; /* queued, not yet sent */
	struct rrc_attempt *by_id[RRC_SOCK_BUCKETS];
};

struct rrc_upstreams {
	const struct rrc_env *env;
	struct server *srv[RRC_MAX_UPSTREAMS];
	struct rrc_balancer_server bal[RRC_MAX_UPSTREAMS];
	unsigned n;
	unsigned cursor[1 + RRC_MAX_POOLS]; /* each pool's round-robin position */
	uv_timer_t probe_timer;
	uv_timer_t verdict;	      /* judges probes at their deadline (upstream.timeout) */
	uv_timer_t sweep;	      /* retires sockets past their lifetime */
	uv_prepare_t flusher;	      /* sends what is queued before the loop waits */
	struct rrc_attempt *attempts; /* every live attempt, for close-all */
	struct usock *socks;	      /* every open UDP socket */
	struct usock *flush;	      /* sockets with queries queued */
	struct usock *dead;	      /* closed during a batch, freed after it */
	struct tconn *tconns;	      /* every TLS connection not yet freed */
	struct tconn *tflush;	      /* TLS connections with queries to write */
	unsigned busy;		      /* depth of batches that may still see a socket */
	unsigned closes;	      /* handles not yet closed */
	bool closing;
	int epfd; /* the UDP sockets */
	uv_poll_t ep_poll;
	uint8_t rnd[256];
	size_t rnd_pos;
	struct rrc_pool pool; /* recycled attempts */
	/* Datagrams being read: at most 65,535 bytes each; pages are touched only as used. */
	uint8_t rbuf[RRC_RECV_BATCH][RRC_WIRE_MAX_MSG + 1];
	uint8_t tls_in[RRC_WIRE_MAX_MSG + 1];			     /* TLS records being read */
	uint8_t tls_out[2 + RRC_WIRE_MAX_MSG + RRC_PAD_QUERY_BLOCK]; /* a query being padded */
};

struct rrc_attempt {
	struct rrc_upstreams *u;
	struct server *srv;
	struct rrc_attempt *prev, *next;
	rrc_attempt_cb cb;
	void *ctx;
	bool tcp;
	bool probe;
	bool closing;
	bool timed_out;
	bool delivered;
	bool queued;		     /* on its socket's send queue */
	struct usock *sock;	     /* UDP: its socket, NULL once detached */
	struct tconn *tc;	     /* TLS: its connection, NULL once detached */
	bool tls;		     /* sent over TLS */
	struct rrc_attempt *id_next; /* sock->by_id chain */
	struct rrc_attempt *q_next;  /* sock->pend */
	bool tcp_init;		     /* conn is a libuv handle that must be closed */
	uv_tcp_t conn;
	uv_connect_t connect_req;
	uv_write_t write_req;
	uint16_t id;
	uint64_t sent_us; /* for the round-trip time */
	uint8_t *rbuf;	  /* TCP reply */
	size_t rlen, rcap;
	size_t qlen; /* message length, without the TCP prefix */
	uint8_t q[]; /* 2-byte TCP length prefix, then the message */
};

static void random_bytes(struct rrc_upstreams *u, void *out, size_t n)
{
	if (u->rnd_pos + n > sizeof(u->rnd)) {
		ssize_t got = getrandom(u->rnd, sizeof(u->rnd), 0);
		RRC_REQUIRE(got == (ssize_t)sizeof(u->rnd));
		u->rnd_pos = 0;
	}
	memcpy(out, u->rnd + u->rnd_pos, n);
	u->rnd_pos += n;
}

/* The worker's counters of server s, or NULL once a reload removed it. */
static struct rrc_upstream_stats *ust(struct rrc_upstreams *u, const struct server *s)
{
	return s->idx >= 0 ? &u->env->st->up[s->idx] : NULL;
}

static void server_put(struct server *s)
{
	if (--s->refs == 0)
		free(s);
}

static void set_up(struct rrc_upstreams *u, struct server *s, bool up)
{
	if (s->idx < 0 || u->bal[s->idx].up == up)
		return;
	u->bal[s->idx].up = up;
	u->env->st->up[s->idx].up = up;
	rrc_log(up ? RRC_LOG_INFO : RRC_LOG_WARN, RRC_LG_UPSTREAM, "worker %u: upstream %s is %s",
		u->env->worker, s->name, up ? "up again" : "down");
}

/*
 * Health follows the server, not one name. A valid reply (to a client's query or a probe)
 * shows it alive. A failure (a timeout, an error, a malformed reply) counts against it only
 * when it has answered nothing since the failed attempt left: a server that answers others
 * while one name times out is alive, and the failure is that name's. max_failures counted
 * failures in a row make an up server suspect, and a probe decides: only a probe that fails
 * marks it down, so query failures alone never do, not even for the last server up.
 */
static void server_answered(struct server *s)
{
	s->last_ok_us = uv_hrtime() / 1000;
	s->failures = 0;
	s->suspect = false;
}

static void send_probe(struct rrc_upstreams *u, struct server *s);

static void server_failed(struct rrc_upstreams *u, struct server *s, uint64_t sent_us)
{
	if (s->idx < 0 || !u->bal[s->idx].up || s->last_ok_us >= sent_us)
		return;
	if (++s->failures < rrc_env_cfg(u->env)->max_failures || s->suspect)
		return;
	s->suspect = true;
	rrc_log(RRC_LOG_INFO, RRC_LG_UPSTREAM,
		"worker %u: upstream %s: %u failures in a row and no answer since; probing it",
		u->env->worker, s->name, s->failures);
	send_probe(u, s);
}

/* A probe's verdict. */
static void probe_result(struct rrc_upstreams *u, struct server *s, bool ok)
{
	if (s->idx < 0)
		return;
	bool up = u->bal[s->idx].up;
	if (ok) {
		server_answered(s);
		if (!up && ++s->good_probes >= rrc_env_cfg(u->env)->probe_successes) {
			s->good_probes = 0;
			set_up(u, s, true);
		}
		return;
	}
	s->good_probes = 0;
	if (up && s->suspect) {
		s->suspect = false;
		s->failures = 0;
		set_up(u, s, false);
	}
}

/* Errors of this machine, not of the server: no descriptor, no buffer, no port, no memory. */
static bool local_error(int rc)
{
	return rc == UV_EMFILE || rc == UV_ENFILE || rc == UV_ENOBUFS || rc == UV_ENOMEM ||
	       rc == UV_EADDRNOTAVAIL || rc == UV_EAGAIN;
}

static int fill_servers(struct rrc_upstreams *u, const struct rrc_config *cfg, struct server **old,
			unsigned n_old, struct rrc_balancer_server *old_bal)
{
	struct server *next[RRC_MAX_UPSTREAMS];
	int from[RRC_MAX_UPSTREAMS];
	struct rrc_balancer_server bal[RRC_MAX_UPSTREAMS];
	memset(bal, 0, sizeof(bal));

	/* First allocate, touching nothing, so that running out of memory changes nothing. */
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		from[i] = -1;
		const char *pool = cfg->pools[rrc_config_pool_of_server(cfg, i)].name;
		for (unsigned j = 0; j < n_old; j++) {
			const struct rrc_upstream_conf *uc = &cfg->upstreams[i];
			if (rrc_addr_equal(&old[j]->addr, &uc->addr) &&
			    strcmp(old[j]->pool, pool) == 0 && old[j]->tls == uc->tls &&
			    strcmp(old[j]->tls_name, uc->tls_name) == 0 &&
			    old[j]->n_pins == uc->n_pins &&
			    memcmp(old[j]->pins, uc->pins, uc->n_pins * sizeof(uc->pins[0])) == 0) {
				from[i] = (int)j;
				break;
			}
		}
		next[i] = from[i] >= 0 ? old[from[i]] : calloc(1, sizeof(struct server));
		if (!next[i]) {
			for (unsigned k = 0; k < i; k++) {
				if (from[k] < 0)
					free(next[k]);
			}
			return -ENOMEM;
		}
	}
	for (unsigned j = 0; j < n_old; j++)
		old[j]->idx = -1;
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		struct server *s = next[i];
		if (from[i] >= 0) {
			bal[i] = old_bal[from[i]];
			s->refs++;
		} else {
			s->refs = 1;
			s->addr = cfg->upstreams[i].addr;
			rrc_addr_format(&s->addr, s->name, sizeof(s->name));
			snprintf(s->pool, sizeof(s->pool), "%s",
				 cfg->pools[rrc_config_pool_of_server(cfg, i)].name);
			const struct rrc_upstream_conf *uc = &cfg->upstreams[i];
			s->tls = uc->tls;
			memcpy(s->tls_name, uc->tls_name, sizeof(s->tls_name));
			memcpy(s->pins, uc->pins, sizeof(s->pins));
			s->n_pins = uc->n_pins;
			bal[i].up = true;
		}
		s->idx = (int)i;
		bal[i].weight = cfg->upstreams[i].weight;
		bal[i].current = 0;
	}
	/* Counters follow their server to its new position; a new server starts at zero. */
	struct rrc_upstream_stats moved[RRC_MAX_UPSTREAMS];
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		if (from[i] >= 0)
			moved[i] = u->env->st->up[from[i]];
		else
			memset(&moved[i], 0, sizeof(moved[i]));
		moved[i].up = bal[i].up;
		moved[i].outstanding = bal[i].outstanding;
	}
	memset(u->env->st->up, 0, sizeof(u->env->st->up));
	memcpy(u->env->st->up, moved, cfg->n_upstreams * sizeof(moved[0]));
	/* The old array's references go; kept servers hold the one taken above. */
	for (unsigned j = 0; j < n_old; j++)
		server_put(old[j]);
	memcpy(u->srv, next, cfg->n_upstreams * sizeof(next[0]));
	memcpy(u->bal, bal, sizeof(bal));
	u->n = cfg->n_upstreams;
	memset(u->cursor, 0, sizeof(u->cursor));
	return 0;
}

static void on_probe_tick(uv_timer_t *t);
static void sock_retire(struct usock *k);
static void end_batch(struct rrc_upstreams *u);
static void on_verdict(uv_timer_t *t);
static void on_sockets_readable(uv_poll_t *p, int status, int events);

struct rrc_upstreams *rrc_upstreams_create(const struct rrc_env *env, char err[RRC_ERR_LEN])
{
	const struct rrc_config *cfg = rrc_env_cfg(env);
	struct rrc_upstreams *u = calloc(1, sizeof(*u));
	if (!u) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return NULL;
	}
	u->env = env;
	u->rnd_pos = sizeof(u->rnd);
	rrc_pool_init(&u->pool, sizeof(struct rrc_attempt) + 2 + RRC_POOL_MSG, RRC_POOL_KEEP);
	if (fill_servers(u, cfg, NULL, 0, NULL)) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		free(u);
		return NULL;
	}
	u->epfd = epoll_create1(EPOLL_CLOEXEC);
	int rc = u->epfd < 0 ? -errno : uv_poll_init(env->loop, &u->ep_poll, u->epfd);
	if (rc != 0) {
		/* Not memory: the descriptor table (EMFILE) or the kernel's epoll limits. */
		snprintf(err, RRC_ERR_LEN, "cannot watch the upstream sockets: %s",
			 uv_strerror(rc));
		if (u->epfd >= 0)
			close(u->epfd);
		for (unsigned i = 0; i < u->n; i++)
			server_put(u->srv[i]);
		free(u);
		return NULL;
	}
	u->ep_poll.data = u;
	/* A fresh handle on a new descriptor: starting it cannot fail. */
	uv_poll_start(&u->ep_poll, UV_READABLE, on_sockets_readable);
	uv_timer_init(env->loop, &u->probe_timer);
	u->probe_timer.data = u;
	uv_timer_init(env->loop, &u->verdict);
	u->verdict.data = u;
	uv_timer_init(env->loop, &u->sweep);
	u->sweep.data = u;
	uv_prepare_init(env->loop, &u->flusher);
	u->flusher.data = u;
	uv_timer_start(&u->probe_timer, on_probe_tick, cfg->probe_interval_ms,
		       cfg->probe_interval_ms);
	return u;
}

int rrc_upstreams_reconfigure(struct rrc_upstreams *u)
{
	const struct rrc_config *cfg = rrc_env_cfg(u->env);
	struct server *old[RRC_MAX_UPSTREAMS];
	struct rrc_balancer_server old_bal[RRC_MAX_UPSTREAMS];
	unsigned n_old = u->n;
	memcpy(old, u->srv, n_old * sizeof(old[0]));
	memcpy(old_bal, u->bal, sizeof(old_bal));
	int rc = fill_servers(u, cfg, old, n_old, old_bal);
	if (rc)
		return rc;
	/* Sockets of removed servers, and of slots beyond upstream.sockets, take no new query. */
	u->busy++;
	for (struct usock *k = u->socks, *next; k; k = next) {
		next = k->next;
		if (k->slot >= 0 && (k->srv->idx < 0 || k->slot >= (int)cfg->upstream_sockets))
			sock_retire(k);
	}
	end_batch(u);
	uv_timer_start(&u->probe_timer, on_probe_tick, cfg->probe_interval_ms,
		       cfg->probe_interval_ms);
	return 0;
}

/* The pool of that index in force (the default for one a reload removed). */
static const struct rrc_forward_pool *pool_at(const struct rrc_upstreams *u, unsigned *pool)
{
	const struct rrc_config *cfg = rrc_env_cfg(u->env);
	if (*pool >= cfg->n_pools)
		*pool = 0;
	return &cfg->pools[*pool];
}

bool rrc_upstreams_any_up(const struct rrc_upstreams *u, unsigned pool)
{
	const struct rrc_forward_pool *p = pool_at(u, &pool);
	for (unsigned i = p->first; i < (unsigned)p->first + p->n && i < u->n; i++) {
		if (u->bal[i].up)
			return true;
	}
	return false;
}

unsigned rrc_upstreams_count(const struct rrc_upstreams *u)
{
	return u->n;
}

int rrc_upstreams_pick(struct rrc_upstreams *u, unsigned pool, uint64_t exclude)
{
	const struct rrc_forward_pool *p = pool_at(u, &pool);
	if (p->first >= u->n)
		return -1;
	int i = rrc_balancer_pick(p->balance, &u->cursor[pool], u->bal + p->first,
				  RRC_MIN((unsigned)p->n, u->n - p->first), exclude >> p->first);
	return i < 0 ? -1 : i + p->first;
}

static void maybe_free_set(struct rrc_upstreams *u)
{
	if (!u->closing || u->closes > 0 || u->socks || u->dead || u->busy || u->tconns)
		return;
	for (unsigned i = 0; i < u->n; i++) {
		u->srv[i]->idx = -1;
		server_put(u->srv[i]);
	}
	rrc_pool_drain(&u->pool);
	free(u);
}

/* ---- UDP sockets ---- */

static void sock_free(struct usock *k)
{
	server_put(k->srv);
	free(k);
}

/* Frees the sockets closed during batches once no batch is running. */
static void end_batch(struct rrc_upstreams *u)
{
	if (--u->busy > 0)
		return;
	while (u->dead) {
		struct usock *k = u->dead;
		u->dead = k->next;
		sock_free(k);
	}
	maybe_free_set(u);
}

static void flush_unlink(struct usock *k)
{
	struct rrc_upstreams *u = k->u;
	if (!k->in_flush)
		return;
	if (k->fprev)
		k->fprev->fnext = k->fnext;
	else
		u->flush = k->fnext;
	if (k->fnext)
		k->fnext->fprev = k->fprev;
	k->fprev = k->fnext = NULL;
	k->in_flush = false;
}

/* Closes a retired socket (out of its slot already); closing the descriptor also takes it out
 * of the epoll set. */
static void sock_close(struct usock *k)
{
	struct rrc_upstreams *u = k->u;
	close(k->fd);
	k->fd = -1;
	flush_unlink(k);
	if (k->prev)
		k->prev->next = k->next;
	else
		u->socks = k->next;
	if (k->next)
		k->next->prev = k->prev;
	u->env->st->upstream_sockets--;
	if (u->busy) {
		k->prev = NULL;
		k->next = u->dead;
		u->dead = k;
		return;
	}
	sock_free(k);
	maybe_free_set(u);
}

/* Takes the socket out of use: no new query; it closes once its queries in flight end. */
static void sock_retire(struct usock *k)
{
	if (k->slot >= 0 && k->srv->sock[k->slot] == k)
		k->srv->sock[k->slot] = NULL;
	k->slot = -1;
	if (k->inflight == 0 && k->fd >= 0)
		sock_close(k);
}

static struct rrc_attempt **sock_chain(struct usock *k, uint16_t id)
{
	return &k->by_id[id % RRC_SOCK_BUCKETS];
}

static struct rrc_attempt *sock_find(struct usock *k, uint16_t id)
{
	for (struct rrc_attempt *a = *sock_chain(k, id); a; a = a->id_next) {
		if (a->id == id)
			return a;
	}
	return NULL;
}

/* Takes a UDP attempt off its socket: a later reply with its ID is unwanted. */
static void sock_detach(struct rrc_attempt *a)
{
	struct usock *k = a->sock;
	if (!k)
		return;
	for (struct rrc_attempt **p = sock_chain(k, a->id); *p; p = &(*p)->id_next) {
		if (*p == a) {
			*p = a->id_next;
			break;
		}
	}
	if (a->queued) {
		for (struct rrc_attempt **p = &k->pend; *p; p = &(*p)->q_next) {
			if (*p == a) {
				*p = a->q_next;
				if (k->pend_tail == &a->q_next)
					k->pend_tail = p;
				break;
			}
		}
		a->queued = false;
		if (!k->pend)
			flush_unlink(k);
	}
	a->sock = NULL;
	a->id_next = a->q_next = NULL;
	if (--k->inflight == 0 && k->slot < 0 && k->fd >= 0)
		sock_close(k);
}

static void tconn_detach(struct rrc_attempt *a);
static void tconn_write_out(struct tconn *c);
static void tflush_unlink(struct tconn *c);
static void tconn_condemn(struct tconn *c);
static void tconn_keepalive(struct tconn *c, const uint8_t *pkt, const struct rrc_wire_reply *r);

/* Takes the attempt off its UDP socket or its TLS connection. */
static void detach(struct rrc_attempt *a)
{
	if (a->tc)
		tconn_detach(a);
	else
		sock_detach(a);
}

static void random_bytes(struct rrc_upstreams *u, void *out, size_t n);
static void on_sweep(uv_timer_t *t);

/* Opens a socket to s bound to a random port (RFC 5452 §9.2), connected and watched. */
static struct usock *sock_open(struct rrc_upstreams *u, struct server *s, int *err)
{
	struct usock *k = calloc(1, sizeof(*k));
	if (!k) {
		*err = UV_ENOMEM;
		return NULL;
	}
	int family = s->addr.sa.sa_family;
	int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc = fd < 0 ? -errno : 0;
	for (int i = 0; rc == 0 && i <= RRC_PORT_TRIES; i++) {
		uint16_t port = 0;
		if (i < RRC_PORT_TRIES) {
			random_bytes(u, &port, sizeof(port));
			port = (uint16_t)(RRC_PORT_MIN + port % (65536 - RRC_PORT_MIN));
		}
		struct rrc_sockaddr local;
		memset(&local, 0, sizeof(local));
		if (family == AF_INET) {
			local.sin.sin_family = AF_INET;
			local.sin.sin_port = htons(port);
			local.len = sizeof(local.sin);
		} else {
			local.sin6.sin6_family = AF_INET6;
			local.sin6.sin6_port = htons(port);
			local.len = sizeof(local.sin6);
		}
		rc = bind(fd, &local.sa, local.len) == 0 ? 0 : -errno;
		if (rc != -EADDRINUSE && rc != -EACCES)
			break;
		if (i < RRC_PORT_TRIES)
			rc = 0;
	}
	socklen_t alen =
		family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	if (rc == 0 && connect(fd, &s->addr.sa, alen) != 0)
		rc = -errno;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = k};
	if (rc == 0 && epoll_ctl(u->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		rc = -errno;
	if (rc) {
		if (fd >= 0)
			close(fd);
		free(k);
		*err = rc;
		return NULL;
	}
	k->u = u;
	k->srv = s;
	s->refs++;
	k->fd = fd;
	k->slot = -1;
	k->born_us = uv_hrtime() / 1000;
	k->pend_tail = &k->pend;
	k->next = u->socks;
	if (u->socks)
		u->socks->prev = k;
	u->socks = k;
	u->env->st->upstream_sockets++;
	u->env->st->upstream_sockets_opened++;
	if (!uv_is_active((uv_handle_t *)&u->sweep)) {
		uint64_t every = RRC_MIN(rrc_env_cfg(u->env)->socket_lifetime_ms, 1000);
		uv_timer_start(&u->sweep, on_sweep, every, every);
	}
	return k;
}

/* A socket of s for one more query: a random slot's, or a fresh one in its place when the slot
 * is empty or its socket is used up (socket_reuse queries, or socket_lifetime). */
static struct usock *sock_pick(struct rrc_upstreams *u, struct server *s, uint64_t now_us, int *err)
{
	const struct rrc_config *cfg = rrc_env_cfg(u->env);
	uint16_t r;
	random_bytes(u, &r, sizeof(r));
	int slot = (int)(r % RRC_MIN(cfg->upstream_sockets, RRC_MAX_UPSTREAM_SOCKETS));
	struct usock *k = s->sock[slot];
	if (k && (k->sent >= cfg->socket_reuse ||
		  now_us - k->born_us >= (uint64_t)cfg->socket_lifetime_ms * 1000)) {
		sock_retire(k);
		k = NULL;
	}
	if (!k) {
		k = sock_open(u, s, err);
		if (!k)
			return NULL;
		k->slot = slot;
		s->sock[slot] = k;
	}
	return k;
}

static void on_flush(uv_prepare_t *h);

/* Gives a an ID no query in flight on k has, and queues it for sending. */
static void sock_add(struct usock *k, struct rrc_attempt *a)
{
	struct rrc_upstreams *u = k->u;
	do {
		random_bytes(u, &a->id, sizeof(a->id));
	} while (sock_find(k, a->id));
	rrc_put16(a->q + 2, a->id);
	struct rrc_attempt **chain = sock_chain(k, a->id);
	a->id_next = *chain;
	*chain = a;
	a->sock = k;
	k->inflight++;
	a->q_next = NULL;
	*k->pend_tail = a;
	k->pend_tail = &a->q_next;
	a->queued = true;
	if (!k->in_flush) {
		k->in_flush = true;
		k->fprev = NULL;
		k->fnext = u->flush;
		if (u->flush)
			u->flush->fprev = k;
		u->flush = k;
		if (!uv_is_active((uv_handle_t *)&u->flusher))
			uv_prepare_start(&u->flusher, on_flush);
	}
	if (++k->sent >= rrc_env_cfg(u->env)->socket_reuse)
		sock_retire(k);
}

/* ---- attempts ---- */

static void attempt_free(struct rrc_attempt *a)
{
	struct rrc_upstreams *u = a->u;
	if (a->srv->idx >= 0 && u->bal[a->srv->idx].outstanding > 0) {
		u->bal[a->srv->idx].outstanding--;
		u->env->st->up[a->srv->idx].outstanding = u->bal[a->srv->idx].outstanding;
	}
	server_put(a->srv);
	free(a->rbuf);
	rrc_pool_put(&u->pool, a, sizeof(*a) + 2 + a->qlen);
	maybe_free_set(u);
}

static void unlink_attempt(struct rrc_attempt *a)
{
	struct rrc_upstreams *u = a->u;
	if (a->prev)
		a->prev->next = a->next;
	else
		u->attempts = a->next;
	if (a->next)
		a->next->prev = a->prev;
	a->prev = a->next = NULL;
}

static void on_tcp_closed(uv_handle_t *h)
{
	struct rrc_attempt *a = h->data;
	a->u->closes--;
	attempt_free(a);
}

/* Ends an attempt whose TCP handle (if any) was never initialized or is being closed here. */
static void attempt_end(struct rrc_attempt *a, bool tcp_handle)
{
	struct rrc_upstreams *u = a->u;
	a->closing = true;
	if (a->probe)
		a->srv->probing = false;
	unlink_attempt(a);
	if (tcp_handle) {
		u->closes++;
		uv_close((uv_handle_t *)&a->conn, on_tcp_closed);
		return;
	}
	detach(a);
	attempt_free(a);
}

void rrc_upstream_cancel(struct rrc_attempt *a)
{
	a->cb = NULL;
	a->ctx = NULL;
	if (a->closing)
		return;
	attempt_end(a, a->tcp_init);
}

int rrc_upstream_attempt_server(const struct rrc_attempt *a)
{
	return a->srv->idx;
}

bool rrc_upstream_attempt_tcp(const struct rrc_attempt *a)
{
	return a->tcp || a->tls; /* a stream: a TC=1 answer is not asked again over TCP */
}

void rrc_upstream_attempt_timeout(struct rrc_attempt *a)
{
	/* An attempt that already ended (failed, or handed over a TC=1 reply) was judged. */
	if (a->timed_out || a->delivered)
		return;
	a->timed_out = true;
	/* A TLS connection that has received nothing since this query left is presumed dead
	 * (a server gone without a word, a path that drops everything): its other queries
	 * fail over now rather than each at its own timeout, and no new one goes there. */
	if (a->tc && a->tc->last_rx_us < a->sent_us) {
		rrc_log_limited(RRC_LOG_INFO, RRC_LG_UPSTREAM,
				"worker %u: TLS connection to %s silent since a query left; closed",
				a->u->env->worker, a->srv->name);
		tconn_condemn(a->tc);
	}
	struct rrc_upstream_stats *us = ust(a->u, a->srv);
	if (us)
		us->timeouts++;
	a->u->env->st->upstream_timeouts++;
	server_failed(a->u, a->srv, a->sent_us);
}

/* Hands the outcome to the caller once; the attempt stays open until cancelled. local: it
 * could not be sent for want of a resource of this machine (a descriptor, a buffer, a port,
 * memory), counted as such and never against the server (H4). */
static void finish(struct rrc_attempt *a, uint8_t *pkt, size_t len, const struct rrc_wire_reply *r,
		   bool local)
{
	rrc_attempt_cb cb = a->cb;
	void *ctx = a->ctx;
	a->delivered = true;
	if (a->tcp)
		uv_read_stop((uv_stream_t *)&a->conn);
	else
		detach(a);
	struct rrc_upstream_stats *us = ust(a->u, a->srv);
	if (local) {
		a->u->env->st->upstream_local_errors++;
	} else if (!pkt) {
		if (us)
			us->errors++;
		a->u->env->st->upstream_errors++;
	} else if (us && !a->probe) {
		uint64_t now = uv_hrtime() / 1000;
		rrc_hist_add(&us->rtt, now > a->sent_us ? now - a->sent_us : 0);
	}
	if (a->probe) {
		if (!local)
			probe_result(a->u, a->srv, pkt != NULL);
		rrc_upstream_cancel(a);
		return;
	}
	if (pkt)
		server_answered(a->srv);
	else if (!local)
		server_failed(a->u, a->srv, a->sent_us);
	a->cb = NULL;
	if (cb)
		cb(ctx, a, pkt, len, r);
}

static void deliver(struct rrc_attempt *a, uint8_t *pkt, size_t len, const struct rrc_wire_reply *r)
{
	finish(a, pkt, len, r, false);
}

/* A queued query that could not be sent for want of a resource of this machine. */
static void fail_local(struct rrc_attempt *a, int rc)
{
	rrc_log_limited(RRC_LOG_WARN, RRC_LG_UPSTREAM, "cannot query %s: %s", a->srv->name,
			uv_strerror(rc));
	finish(a, NULL, 0, NULL, true);
}

/* Checks one reply against what the attempt sent. Returns true when it was delivered. */
static bool consider_reply(struct rrc_attempt *a, uint8_t *pkt, size_t len)
{
	const struct rrc_env *env = a->u->env;
	if (len < RRC_WIRE_HDR || rrc_get16(pkt) != a->id) {
		env->st->unwanted_replies++;
		return false;
	}
	struct rrc_wire_reply r;
	const uint8_t *sent = a->q + 2;
	if (rrc_wire_check_reply(pkt, len, &r) != 0) {
		/* Our ID but not a sound message: this server answers garbage (U5). */
		env->st->malformed_replies++;
		rrc_log_limited(RRC_LOG_DEBUG, RRC_LG_UPSTREAM, "malformed reply from %s",
				a->srv->name);
		deliver(a, NULL, 0, NULL);
		return true;
	}
	size_t qn_end, qn_len;
	if (rrc_wire_name(sent, a->qlen, RRC_WIRE_HDR, &qn_end, &qn_len, NULL) != 0 ||
	    !rrc_wire_same_question(pkt, &r, sent, qn_len, rrc_get16(sent + qn_end),
				    rrc_get16(sent + qn_end + 2))) {
		env->st->unwanted_replies++;
		return false;
	}
	if (a->tc)
		tconn_keepalive(a->tc, pkt, &r);
	if (!a->probe && rrc_tap_wants(env->tap, RRC_DT_FORWARDER_RESPONSE)) {
		struct rrc_dnstap_msg m = {.type = RRC_DT_FORWARDER_RESPONSE,
					   .tcp = a->tcp || a->tls,
					   .response_addr = &a->srv->addr.sa,
					   .query_time_us = rrc_tap_wall_us(env->tap, a->sent_us),
					   .response_time_us =
						   rrc_tap_wall_us(env->tap, uv_hrtime() / 1000),
					   .wire = pkt,
					   .len = len};
		rrc_tap_log(env->tap, &m);
	}
	deliver(a, pkt, len, &r);
	return true;
}

/* Every query on k fails (the socket reported an error: ICMP port unreachable on a connected
 * socket says nobody listens there) and k is retired. */
static void sock_fail(struct usock *k)
{
	struct rrc_upstreams *u = k->u;
	u->busy++;
	sock_retire(k);
	for (unsigned b = 0; b < RRC_SOCK_BUCKETS; b++) {
		while (k->by_id[b])
			deliver(k->by_id[b], NULL, 0, NULL);
	}
	end_batch(u);
}

/* Reads the datagrams queued on k, a batch at a time; the loop comes back while more are. */
static void sock_read(struct usock *k)
{
	struct rrc_upstreams *u = k->u;
	struct mmsghdr m[RRC_RECV_BATCH];
	struct iovec iov[RRC_RECV_BATCH];
	struct rrc_sockaddr from[RRC_RECV_BATCH];
	for (unsigned i = 0; i < RRC_RECV_BATCH; i++) {
		iov[i].iov_base = u->rbuf[i];
		iov[i].iov_len = sizeof(u->rbuf[i]);
		m[i].msg_hdr = (struct msghdr){.msg_name = &from[i].ss,
					       .msg_namelen = sizeof(from[i].ss),
					       .msg_iov = &iov[i],
					       .msg_iovlen = 1};
	}
	int n = recvmmsg(k->fd, m, RRC_RECV_BATCH, MSG_DONTWAIT, NULL);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			sock_fail(k);
		return;
	}
	for (int i = 0; i < n && k->fd >= 0; i++) {
		uint8_t *pkt = u->rbuf[i];
		size_t len = m[i].msg_len;
		struct rrc_attempt *a = NULL;
		from[i].len = m[i].msg_hdr.msg_namelen;
		/* The kernel only passes the connected peer's datagrams; checked again all the
		 * same. */
		if (rrc_addr_equal(&from[i], &k->srv->addr) &&
		    !(m[i].msg_hdr.msg_flags & MSG_TRUNC) && len >= RRC_WIRE_HDR)
			a = sock_find(k, rrc_get16(pkt));
		if (!a) {
			u->env->st->unwanted_replies++;
			continue;
		}
		consider_reply(a, pkt, len);
	}
}

static void on_sockets_readable(uv_poll_t *p, int status, int events)
{
	struct rrc_upstreams *u = p->data;
	struct epoll_event ev[RRC_EVENTS_BATCH];
	(void)status;
	(void)events;
	int n = epoll_wait(u->epfd, ev, RRC_EVENTS_BATCH, 0);
	u->busy++;
	for (int i = 0; i < n; i++) {
		struct usock *k = ev[i].data.ptr;
		if (k->fd >= 0)
			sock_read(k);
	}
	end_batch(u);
}

/* Sends the queries queued on k, as few sendmmsg calls as the socket takes. */
static void sock_send(struct usock *k)
{
	struct mmsghdr m[RRC_SEND_BATCH];
	struct iovec iov[RRC_SEND_BATCH];
	while (k->pend && k->fd >= 0) {
		unsigned n = 0;
		for (struct rrc_attempt *a = k->pend; a && n < RRC_SEND_BATCH; a = a->q_next) {
			iov[n].iov_base = a->q + 2;
			iov[n].iov_len = a->qlen;
			memset(&m[n], 0, sizeof(m[n]));
			m[n].msg_hdr.msg_iov = &iov[n];
			m[n].msg_hdr.msg_iovlen = 1;
			n++;
		}
		int sent = sendmmsg(k->fd, m, n, 0);
		int err = sent < 0 ? errno : 0;
		for (int i = 0; i < sent; i++) {
			struct rrc_attempt *a = k->pend;
			k->pend = a->q_next;
			a->q_next = NULL;
			a->queued = false;
		}
		if (!k->pend)
			k->pend_tail = &k->pend;
		if (sent >= 0 || err == EINTR)
			continue;
		if (local_error(-err)) {
			/* The first queued message could not go: this machine's shortage. */
			fail_local(k->pend, -err);
			continue;
		}
		/* An error of the socket (a refusal reported by ICMP): nobody listens there. */
		sock_fail(k);
		return;
	}
}

/* Before the loop waits: every queued query leaves, a sendmmsg per socket. Failures may queue
 * retries on other sockets, which leave in the same pass. */
static void on_flush(uv_prepare_t *h)
{
	struct rrc_upstreams *u = h->data;
	u->busy++;
	while (u->flush) {
		struct usock *k = u->flush;
		flush_unlink(k);
		sock_send(k);
	}
	while (u->tflush) {
		struct tconn *c = u->tflush;
		tflush_unlink(c);
		size_t n = c->out_len;
		c->out_len = 0;
		if (rrc_tls_write(c->tls, c->out, n) != RRC_TLS_OK)
			tconn_condemn(c);
		else
			tconn_write_out(c);
	}
	uv_prepare_stop(&u->flusher);
	end_batch(u);
}

/* Retires the sockets past their lifetime; the sweep stops when no socket is left. */
static void on_sweep(uv_timer_t *t)
{
	struct rrc_upstreams *u = t->data;
	const struct rrc_config *cfg = rrc_env_cfg(u->env);
	uint64_t now = uv_hrtime() / 1000, life = (uint64_t)cfg->socket_lifetime_ms * 1000;
	u->busy++;
	for (struct usock *k = u->socks, *next; k; k = next) {
		next = k->next;
		if (k->slot >= 0 &&
		    (now - k->born_us >= life || k->slot >= (int)cfg->upstream_sockets))
			sock_retire(k);
	}
	if (!u->socks)
		uv_timer_stop(&u->sweep);
	end_batch(u);
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct rrc_attempt *a = h->data;
	if (!a->rbuf) {
		a->rcap = 2 + RRC_WIRE_MAX_MSG;
		a->rbuf = malloc(a->rcap);
	}
	buf->base = a->rbuf ? (char *)a->rbuf + a->rlen : NULL;
	buf->len = a->rbuf ? a->rcap - a->rlen : 0;
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct rrc_attempt *a = s->data;
	if (a->closing || nread == 0)
		return;
	if (nread < 0 || !a->rbuf) {
		deliver(a, NULL, 0, NULL);
		return;
	}
	a->rlen += (size_t)nread;
	/* RFC 1035 §4.2.2: a two-octet length, then the message. One reply per connection. */
	while (a->rlen >= 2) {
		size_t mlen = rrc_get16(a->rbuf);
		if (a->rlen < 2 + mlen)
			return;
		if (consider_reply(a, a->rbuf + 2, mlen))
			return;
		memmove(a->rbuf, a->rbuf + 2 + mlen, a->rlen - 2 - mlen);
		a->rlen -= 2 + mlen;
	}
}

static void on_tcp_written(uv_write_t *req, int status)
{
	struct rrc_attempt *a = req->data;
	if (status < 0 && status != UV_ECANCELED && !a->closing)
		deliver(a, NULL, 0, NULL);
}

static void on_tcp_connected(uv_connect_t *req, int status)
{
	struct rrc_attempt *a = req->data;
	if (status == UV_ECANCELED || a->closing)
		return;
	if (status < 0 || uv_read_start((uv_stream_t *)&a->conn, on_tcp_alloc, on_tcp_read) != 0) {
		deliver(a, NULL, 0, NULL);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)a->q, (unsigned)(a->qlen + 2));
	a->write_req.data = a;
	if (uv_write(&a->write_req, (uv_stream_t *)&a->conn, &b, 1, on_tcp_written) != 0)
		deliver(a, NULL, 0, NULL);
}

static int start_tcp(struct rrc_attempt *a)
{
	int rc = uv_tcp_init(a->u->env->loop, &a->conn);
	if (rc)
		return rc;
	a->tcp_init = true;
	a->conn.data = a;
	uv_tcp_nodelay(&a->conn, 1);
	a->connect_req.data = a;
	return uv_tcp_connect(&a->connect_req, &a->conn, &a->srv->addr.sa, on_tcp_connected);
}

/* ---- TLS connections (DNS over TLS) ---- */

static struct rrc_attempt **tconn_chain(struct tconn *c, uint16_t id)
{
	return &c->by_id[id & (RRC_SOCK_BUCKETS - 1)];
}

static struct rrc_attempt *tconn_find(struct tconn *c, uint16_t id)
{
	for (struct rrc_attempt *a = *tconn_chain(c, id); a; a = a->id_next)
		if (a->id == id)
			return a;
	return NULL;
}

/* Frees a connection once its handles are closed. */
static void tconn_free(struct tconn *c)
{
	struct rrc_upstreams *u = c->u;
	if (c->prev)
		c->prev->next = c->next;
	else
		u->tconns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	rrc_tls_free(c->tls);
	server_put(c->srv);
	free(c->out);
	free(c);
	maybe_free_set(u);
}

static void on_tconn_closed(uv_handle_t *h)
{
	struct tconn *c = h->data;
	c->u->closes--;
	if (--c->handles == 0)
		tconn_free(c);
}

/* Takes the connection out of its slot: no new query goes to it. */
static void tconn_retire(struct tconn *c)
{
	if (c->slot < 0)
		return;
	c->srv->tc[c->slot] = NULL;
	c->slot = -1;
}

static void tconn_write_out(struct tconn *c);

static void tflush_unlink(struct tconn *c)
{
	if (!c->in_tflush)
		return;
	for (struct tconn **p = &c->u->tflush; *p; p = &(*p)->tfnext) {
		if (*p == c) {
			*p = c->tfnext;
			break;
		}
	}
	c->tfnext = NULL;
	c->in_tflush = false;
}

/* Closes a connection with no attempt left (saying goodbye when the session is up). */
static void tconn_close(struct tconn *c)
{
	if (c->closing)
		return;
	tconn_retire(c);
	tflush_unlink(c);
	c->closing = true;
	if (c->ready) {
		rrc_tls_bye(c->tls);
		tconn_write_out(c);
	}
	if (c->counted) {
		struct rrc_upstream_stats *us = ust(c->u, c->srv);
		if (us && us->tls_connections)
			us->tls_connections--;
		c->counted = false;
	}
	c->u->closes += 2;
	uv_close((uv_handle_t *)&c->timer, on_tconn_closed);
	uv_close((uv_handle_t *)&c->tcp, on_tconn_closed);
}

/* Every query on the connection fails (they go to another attempt at once) and it closes. */
static void tconn_fail(struct tconn *c)
{
	tconn_retire(c);
	while (c->wait)
		deliver(c->wait, NULL, 0, NULL);
	for (unsigned b = 0; b < RRC_SOCK_BUCKETS; b++)
		while (c->by_id[b])
			deliver(c->by_id[b], NULL, 0, NULL);
	tconn_close(c);
}

static void on_tconn_idle(uv_timer_t *t)
{
	struct tconn *c = t->data;
	if (c->inflight)
		tconn_fail(c); /* condemned */
	else
		tconn_close(c);
}

/* No new query goes to the connection, and its queries fail from the loop, not from inside
 * the caller (who may be a query starting an attempt). */
static void tconn_condemn(struct tconn *c)
{
	if (c->closing)
		return;
	tconn_retire(c);
	uv_timer_start(&c->timer, on_tconn_idle, 0, 0);
}

/* With no query left: closes after the idle time (the server's keepalive when shorter), or
 * at once when retired. */
static void tconn_idle(struct tconn *c)
{
	if (c->inflight || c->closing)
		return;
	if (c->slot < 0) {
		tconn_close(c);
		return;
	}
	uint64_t ms = rrc_env_cfg(c->u->env)->tls_idle_timeout_ms;
	/* RFC 7828 §3.3.2: close before the server would, with a little room. */
	if (c->keepalive_ms >= 0 && (uint64_t)c->keepalive_ms * 9 / 10 < ms)
		ms = (uint64_t)c->keepalive_ms * 9 / 10;
	uv_timer_start(&c->timer, on_tconn_idle, ms, 0);
}

static void tconn_detach(struct rrc_attempt *a)
{
	struct tconn *c = a->tc;
	if (!c)
		return;
	if (a->queued) {
		for (struct rrc_attempt **p = &c->wait; *p; p = &(*p)->q_next) {
			if (*p == a) {
				*p = a->q_next;
				if (c->wait_tail == &a->q_next)
					c->wait_tail = p;
				break;
			}
		}
		a->queued = false;
	} else {
		for (struct rrc_attempt **p = tconn_chain(c, a->id); *p; p = &(*p)->id_next) {
			if (*p == a) {
				*p = a->id_next;
				break;
			}
		}
	}
	a->tc = NULL;
	a->id_next = a->q_next = NULL;
	c->inflight--;
	tconn_idle(c);
}

static void on_tconn_written(uv_write_t *req, int status)
{
	struct twrite *w = (struct twrite *)req;
	struct tconn *c = req->data;
	free(w->data);
	free(w);
	if (status < 0 && status != UV_ECANCELED && !c->closing)
		tconn_fail(c);
}

/* Writes what the session has for the server. */
static void tconn_write_out(struct tconn *c)
{
	uint8_t *data;
	size_t n = rrc_tls_take_output(c->tls, &data);
	if (!n)
		return;
	struct twrite *w = malloc(sizeof(*w));
	if (!w) {
		free(data);
		tconn_condemn(c);
		return;
	}
	w->data = data;
	w->req.data = c;
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_tconn_written) != 0) {
		free(data);
		free(w);
		tconn_condemn(c);
	}
}

/* Sends an attempt's query on a connection whose handshake is done: framed, padded. */
static void tconn_send(struct tconn *c, struct rrc_attempt *a)
{
	struct rrc_upstreams *u = c->u;
	struct rrc_attempt **chain = tconn_chain(c, a->id);
	a->id_next = *chain;
	*chain = a;
	memcpy(u->tls_out + 2, a->q + 2, a->qlen);
	size_t n = rrc_wire_pad_query(u->tls_out + 2, a->qlen, sizeof(u->tls_out) - 2,
				      RRC_PAD_QUERY_BLOCK, true);
	if (n == 0)
		n = a->qlen;
	rrc_put16(u->tls_out, (uint16_t)n);
	a->sent_us = uv_hrtime() / 1000;
	/* Sent with the other queries of this turn of the loop: one TLS record and one write
	 * for them all (a record costs thousands of instructions whatever it carries). */
	if (c->out_len + n + 2 > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n + 2)
			cap *= 2;
		uint8_t *grown = realloc(c->out, cap);
		if (!grown) {
			tconn_condemn(c);
			return;
		}
		c->out = grown;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, u->tls_out, n + 2);
	c->out_len += n + 2;
	if (!c->in_tflush) {
		c->in_tflush = true;
		c->tfnext = u->tflush;
		u->tflush = c;
		uv_prepare_start(&u->flusher, on_flush);
	}
}

/* The server's edns-tcp-keepalive in a reply on this connection. */
static void tconn_keepalive(struct tconn *c, const uint8_t *pkt, const struct rrc_wire_reply *r)
{
	int k = rrc_wire_keepalive(pkt, r);
	if (k >= 0)
		c->keepalive_ms = (int64_t)k * 100;
}

/* The handshake is done: counted, and the queries that waited for it go. */
static void tconn_ready(struct tconn *c)
{
	c->ready = true;
	struct rrc_upstream_stats *us = ust(c->u, c->srv);
	bool resumed = rrc_tls_resumed(c->tls);
	if (us) {
		us->tls_handshakes++;
		if (resumed)
			us->tls_resumed++;
	}
	rrc_log(RRC_LOG_DEBUG, RRC_LG_UPSTREAM, "worker %u: %s with %s (%s)%s", c->u->env->worker,
		rrc_tls_version(c->tls), c->srv->name, c->srv->tls_name,
		resumed ? ", resumed" : "");
	while (c->wait && !c->closing) {
		struct rrc_attempt *a = c->wait;
		c->wait = a->q_next;
		if (!c->wait)
			c->wait_tail = &c->wait;
		a->q_next = NULL;
		a->queued = false;
		tconn_send(c, a);
	}
}

/* Splits the plaintext into messages and hands each to its attempt. */
static void tconn_messages(struct tconn *c)
{
	struct rrc_upstreams *u = c->u;
	size_t off = 0;
	while (!c->closing && c->rlen - off >= 2) {
		size_t mlen = rrc_get16(c->rbuf + off);
		if (c->rlen - off < 2 + mlen)
			break;
		uint8_t *pkt = c->rbuf + off + 2;
		off += 2 + mlen;
		struct rrc_attempt *a = mlen >= RRC_WIRE_HDR ? tconn_find(c, rrc_get16(pkt)) : NULL;
		if (!a) {
			u->env->st->unwanted_replies++;
			continue;
		}
		consider_reply(a, pkt, mlen);
	}
	if (off && !c->closing) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
}

static void tls_failed(struct tconn *c, const char *what)
{
	rrc_log_limited(RRC_LOG_WARN, RRC_LG_UPSTREAM, "worker %u: TLS with %s (%s): %s",
			c->u->env->worker, c->srv->name, c->srv->tls_name, what);
	tconn_fail(c);
}

static void on_tconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct tconn *c = h->data;
	buf->base = (char *)c->u->tls_in;
	buf->len = sizeof(c->u->tls_in);
}

static void on_tconn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct tconn *c = st->data;
	if (c->closing || nread == 0)
		return;
	if (nread < 0) {
		tconn_fail(c); /* the server closed it, or an error */
		return;
	}
	c->last_rx_us = uv_hrtime() / 1000;
	if (rrc_tls_feed(c->tls, (const uint8_t *)buf->base, (size_t)nread) != 0) {
		tconn_fail(c);
		return;
	}
	if (!c->ready) {
		enum rrc_tls_status hs = rrc_tls_handshake(c->tls);
		tconn_write_out(c);
		if (hs == RRC_TLS_ERROR) {
			tls_failed(c, rrc_tls_error(c->tls));
			return;
		}
		if (hs != RRC_TLS_OK || c->closing)
			return;
		tconn_ready(c);
	}
	for (;;) {
		size_t got = 0;
		enum rrc_tls_status rs =
			rrc_tls_read(c->tls, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, &got);
		if (rs == RRC_TLS_OK) {
			c->rlen += got;
			tconn_messages(c);
			if (c->closing)
				return;
			continue;
		}
		tconn_write_out(c);
		if (rs == RRC_TLS_AGAIN)
			break;
		if (rs == RRC_TLS_ERROR)
			tls_failed(c, rrc_tls_error(c->tls));
		else
			tconn_fail(c); /* close_notify */
		return;
	}
	/* TLS 1.3 sends the ticket after the handshake: kept once it came. */
	if (c->srv->ticket_len == 0 || rrc_tls_resumed(c->tls) == false) {
		size_t n = rrc_tls_session(c->tls, c->srv->ticket, sizeof(c->srv->ticket));
		if (n)
			c->srv->ticket_len = n;
	}
}

static void on_tconn_connected(uv_connect_t *req, int status)
{
	struct tconn *c = req->data;
	if (status == UV_ECANCELED || c->closing)
		return;
	if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_tconn_alloc, on_tconn_read)) {
		tls_failed(c, status < 0 ? uv_strerror(status) : "cannot read");
		return;
	}
	if (rrc_tls_handshake(c->tls) == RRC_TLS_ERROR) {
		tls_failed(c, rrc_tls_error(c->tls));
		return;
	}
	tconn_write_out(c);
}

/* Opens a TLS connection in slot of s. NULL with *rc set when it cannot. */
static struct tconn *tconn_open(struct rrc_upstreams *u, struct server *s, int slot, int *rc)
{
	const struct rrc_config *cfg = rrc_env_cfg(u->env);
	if (!cfg->tls_client) {
		*rc = UV_EINVAL; /* a configuration without TLS upstreams: cannot happen */
		return NULL;
	}
	struct tconn *c = calloc(1, sizeof(*c));
	if (!c) {
		*rc = UV_ENOMEM;
		return NULL;
	}
	char err[RRC_ERR_LEN];
	struct rrc_tls_client_opts o = {.name = s->tls_name,
					.alpn = "dot",
					.pins = (const uint8_t(*)[RRC_TLS_PIN_LEN])s->pins,
					.n_pins = s->n_pins,
					.session = s->ticket_len ? s->ticket : NULL,
					.session_len = s->ticket_len};
	c->tls = rrc_tls_client(cfg->tls_client, &o, err);
	if (!c->tls) {
		rrc_log_limited(RRC_LOG_WARN, RRC_LG_UPSTREAM, "TLS with %s: %s", s->name, err);
		free(c);
		*rc = UV_ENOMEM;
		return NULL;
	}
	*rc = uv_tcp_init(u->env->loop, &c->tcp);
	if (*rc) {
		rrc_tls_free(c->tls);
		free(c);
		return NULL;
	}
	uv_timer_init(u->env->loop, &c->timer);
	c->u = u;
	c->srv = s;
	s->refs++;
	c->slot = slot;
	s->tc[slot] = c;
	c->handles = 2;
	c->keepalive_ms = -1;
	c->wait_tail = &c->wait;
	c->tcp.data = c;
	c->timer.data = c;
	c->creq.data = c;
	c->next = u->tconns;
	if (u->tconns)
		u->tconns->prev = c;
	u->tconns = c;
	struct rrc_upstream_stats *us = ust(u, s);
	if (us) {
		us->tls_connections++;
		c->counted = true;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	*rc = uv_tcp_connect(&c->creq, &c->tcp, &s->addr.sa, on_tconn_connected);
	if (*rc) {
		tconn_close(c);
		return NULL;
	}
	return c;
}

/*
 * Puts an attempt on a TLS connection of its server: the least busy; a new one in a free
 * slot when every open one is at least half full. 0, or a libuv error (UV_EAGAIN: every
 * connection is full, this machine's limit, not the server's fault).
 */
static int tconn_add(struct rrc_upstreams *u, struct rrc_attempt *a)
{
	const struct rrc_config *cfg = rrc_env_cfg(u->env);
	struct server *s = a->srv;
	unsigned slots = RRC_MIN(cfg->tls_connections, (uint32_t)RRC_MAX_TLS_CONNS);
	struct tconn *best = NULL;
	int free_slot = -1;
	for (unsigned i = 0; i < slots; i++) {
		struct tconn *c = s->tc[i];
		if (!c) {
			if (free_slot < 0)
				free_slot = (int)i;
		} else if (!best || c->inflight < best->inflight) {
			best = c;
		}
	}
	int rc = 0;
	if ((!best || best->inflight * 2 >= cfg->tls_max_inflight) && free_slot >= 0) {
		struct tconn *c = tconn_open(u, s, free_slot, &rc);
		if (c)
			best = c;
		else if (!best)
			return rc;
	}
	if (best->inflight >= cfg->tls_max_inflight)
		return UV_EAGAIN;
	struct tconn *c = best;
	/* An ID no other query on this connection has. */
	do
		random_bytes(u, &a->id, sizeof(a->id));
	while (tconn_find(c, a->id));
	rrc_put16(a->q + 2, a->id);
	a->tc = c;
	c->inflight++;
	uv_timer_stop(&c->timer);
	if (c->ready) {
		tconn_send(c, a);
	} else {
		a->queued = true;
		*c->wait_tail = a;
		c->wait_tail = &a->q_next;
	}
	return 0;
}

static struct rrc_attempt *attempt_new(struct rrc_upstreams *u, int idx, bool tcp,
				       const uint8_t *query, size_t len, bool probe,
				       rrc_attempt_cb cb, void *ctx)
{
	if (idx < 0 || (unsigned)idx >= u->n || len > RRC_WIRE_MAX_MSG || len < RRC_WIRE_HDR)
		return NULL;
	struct rrc_attempt *a = rrc_pool_get(&u->pool, sizeof(*a) + 2 + len);
	if (!a)
		return NULL;
	a->u = u;
	a->srv = u->srv[idx];
	a->srv->refs++;
	a->tcp = tcp;
	a->probe = probe;
	a->cb = cb;
	a->ctx = ctx;
	a->qlen = len;
	if (probe)
		a->srv->probing = true;
	rrc_put16(a->q, (uint16_t)len);
	memcpy(a->q + 2, query, len);
	a->next = u->attempts;
	if (u->attempts)
		u->attempts->prev = a;
	u->attempts = a;
	u->bal[idx].outstanding++;
	struct rrc_worker_stats *st = u->env->st;
	st->up[idx].outstanding = u->bal[idx].outstanding;
	if (!probe)
		st->up[idx].queries++;
	a->sent_us = uv_hrtime() / 1000;
	int rc = 0;
	if (a->srv->tls) {
		a->tls = true;
		rc = tconn_add(u, a);
	} else if (tcp) {
		/* A connection of its own: the ID needs only be unpredictable. */
		random_bytes(u, &a->id, sizeof(a->id));
		rrc_put16(a->q + 2, a->id);
		rc = start_tcp(a);
	} else {
		struct usock *k = sock_pick(u, a->srv, a->sent_us, &rc);
		if (k)
			sock_add(k, a);
	}
	if (rc) {
		rrc_log_limited(RRC_LOG_WARN, RRC_LG_UPSTREAM, "cannot query %s: %s", a->srv->name,
				uv_strerror(rc));
		if (local_error(rc)) {
			/* This machine's shortage: the server is not to blame. */
			st->upstream_local_errors++;
		} else {
			st->up[idx].errors++;
			st->upstream_errors++;
			if (probe)
				probe_result(u, a->srv, false);
			else
				server_failed(u, a->srv, a->sent_us);
		}
		rrc_upstream_cancel(a);
		return NULL;
	}
	if (!probe && rrc_tap_wants(u->env->tap, RRC_DT_FORWARDER_QUERY)) {
		struct rrc_dnstap_msg m = {.type = RRC_DT_FORWARDER_QUERY,
					   .tcp = tcp,
					   .response_addr = &a->srv->addr.sa,
					   .query_time_us =
						   rrc_tap_wall_us(u->env->tap, a->sent_us),
					   .wire = a->q + 2,
					   .len = a->qlen};
		rrc_tap_log(u->env->tap, &m);
	}
	if (!probe) {
		st->upstream_queries++;
		if (tcp)
			st->upstream_tcp++;
	}
	return a;
}

struct rrc_attempt *rrc_upstream_send(struct rrc_upstreams *u, int idx, bool tcp,
				      const uint8_t *query, size_t len, rrc_attempt_cb cb,
				      void *ctx)
{
	return attempt_new(u, idx, tcp, query, len, false, cb, ctx);
}

/* Slack on a probe's deadline: a timer may fire a little before the deadline is up by the
 * monotonic clock (timers run on the loop's millisecond clock). */
#define RRC_PROBE_SLACK_US 10000

/* A probe without a reply after upstream.timeout has failed. The verdict timer is armed for
 * the next probe still waiting. */
static void judge_probes(struct rrc_upstreams *u)
{
	const struct rrc_config *cfg = rrc_env_cfg(u->env);
	uint64_t now = uv_hrtime() / 1000;
	uint64_t patience = (uint64_t)cfg->upstream_timeout_ms * 1000;
	uint64_t next_due = 0;
	struct rrc_attempt *next;
	for (struct rrc_attempt *a = u->attempts; a; a = next) {
		next = a->next;
		if (!a->probe || a->closing)
			continue;
		if (now + RRC_PROBE_SLACK_US >= a->sent_us + patience) {
			probe_result(u, a->srv, false);
			rrc_upstream_cancel(a);
		} else if (!next_due || a->sent_us + patience < next_due) {
			next_due = a->sent_us + patience;
		}
	}
	if (next_due)
		uv_timer_start(&u->verdict, on_verdict, (next_due - now) / 1000 + 1, 0);
}

static void on_verdict(uv_timer_t *t)
{
	judge_probes(t->data);
}

static void send_probe(struct rrc_upstreams *u, struct server *s)
{
	if (s->probing || s->idx < 0)
		return;
	uint8_t probe[32];
	size_t len = rrc_msg_build_probe(0, probe, sizeof(probe));
	if (attempt_new(u, s->idx, false, probe, len, true, NULL, NULL) &&
	    !uv_is_active((uv_handle_t *)&u->verdict))
		uv_timer_start(&u->verdict, on_verdict, rrc_env_cfg(u->env)->upstream_timeout_ms,
			       0);
}

/* Every probe_interval: probes past their deadline fail; a server that is down, or suspect,
 * and has no probe in flight gets one. */
static void on_probe_tick(uv_timer_t *t)
{
	struct rrc_upstreams *u = t->data;
	judge_probes(u);
	for (unsigned i = 0; i < u->n; i++) {
		if (!u->bal[i].up || u->srv[i]->suspect)
			send_probe(u, u->srv[i]);
	}
}

static void on_probe_timer_closed(uv_handle_t *h)
{
	struct rrc_upstreams *u = h->data;
	u->closes--;
	maybe_free_set(u);
}

static void on_sockets_poll_closed(uv_handle_t *h)
{
	struct rrc_upstreams *u = h->data;
	close(u->epfd);
	u->closes--;
	maybe_free_set(u);
}

void rrc_upstreams_close(struct rrc_upstreams *u)
{
	u->closing = true;
	u->closes += 5;
	uv_close((uv_handle_t *)&u->probe_timer, on_probe_timer_closed);
	uv_close((uv_handle_t *)&u->verdict, on_probe_timer_closed);
	uv_close((uv_handle_t *)&u->sweep, on_probe_timer_closed);
	uv_close((uv_handle_t *)&u->flusher, on_probe_timer_closed);
	uv_close((uv_handle_t *)&u->ep_poll, on_sockets_poll_closed);
	u->busy++;
	struct rrc_attempt *next;
	for (struct rrc_attempt *a = u->attempts; a; a = next) {
		next = a->next;
		rrc_upstream_cancel(a);
	}
	/* With no attempt left, retiring a socket closes it. */
	for (struct usock *k = u->socks, *knext; k; k = knext) {
		knext = k->next;
		sock_retire(k);
	}
	for (struct tconn *c = u->tconns; c; c = c->next)
		tconn_close(c);
	end_batch(u);
}
