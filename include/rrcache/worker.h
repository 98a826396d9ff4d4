/*
 * worker: one thread with its own uv loop, its own listening sockets (SO_REUSEPORT), its own
 * upstream sockets, in-flight table and counters. Nothing here is touched by another thread
 * except through the uv_async_t (reload, stop) and the shared cache/server.
 *
 * This header is internal to the I/O modules (listener, query, upstream, worker): it defines
 * the structures they share. Pure modules never include it.
 */
#ifndef RRCACHE_WORKER_H
#define RRCACHE_WORKER_H

#include "rrcache/pool.h"
#include "rrcache/server.h"
#include "rrcache/stats.h"
#include "rrcache/wire.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

/* recvmmsg/sendmmsg batch: amortizes one syscall over this many datagrams. */
#define RRC_UDP_BATCH 32
/* Batches read per readable event before yielding to the loop, so that a flood on one socket
 * cannot starve timers and the other sockets (as libuv does for its own UDP reads). */
#define RRC_UDP_BATCHES_PER_EVENT 4
/* Largest client datagram we read. Queries are small; bigger ones are dropped as malformed. */
#define RRC_UDP_RECV_MAX 4096
/* Output slot: the largest UDP answer (1232) plus room to spare. */
#define RRC_UDP_SEND_MAX 1536
/* Grace for in-flight queries at shutdown. */
#define RRC_SHUTDOWN_GRACE_MS 2000
/* Free objects each pool keeps: enough for a burst of misses, bounded (about 1 MiB a pool). */
#define RRC_POOL_KEEP 1024
/* Messages up to this size are carried in pooled objects; larger ones are allocated alone. */
#define RRC_POOL_MSG 512
/* A TCP client that does not read its answers is closed beyond this much queued output. */
#define RRC_TCP_MAX_WRITE_QUEUE (256 * 1024)
/* uv_listen backlog */
#define RRC_TCP_BACKLOG 256

struct rrc_worker;
struct rrc_query;
struct rrc_upstreams;

/* The local address a UDP query arrived at, so the answer leaves from it (RFC 2181 §4.1). */
struct rrc_pktinfo {
	int family; /* 0 when unknown */
	union {
		struct in_pktinfo v4;
		struct in6_pktinfo v6;
	};
};

/* Datagrams that leave together in one sendmmsg: the answers to one recvmmsg batch, or the
 * answers that complete later (misses), which wait until the end of the loop iteration. */
struct rrc_udp_batch {
	unsigned n;
	struct mmsghdr msg[RRC_UDP_BATCH];
	struct iovec iov[RRC_UDP_BATCH];
	struct sockaddr_storage peer[RRC_UDP_BATCH]; /* kept client addresses (deferred answers) */
	uint8_t ctl[RRC_UDP_BATCH][64];
	uint8_t buf[RRC_UDP_BATCH][RRC_UDP_SEND_MAX];
};

struct rrc_udp_listener {
	struct rrc_worker *w;
	struct rrc_sockaddr addr; /* bound to */
	uv_poll_t poll;
	int fd;
	int family;
	bool polling;
	struct rrc_udp_batch *deferred; /* allocated with the listener */
};

struct rrc_tcp_listener {
	struct rrc_worker *w;
	uv_tcp_t handle;
};

struct rrc_tcp_conn {
	struct rrc_worker *w;
	uv_tcp_t handle;
	uv_timer_t idle;
	struct rrc_tcp_conn *prev, *next; /* the worker's list */
	struct sockaddr_storage peer;
	uint8_t *rbuf;
	size_t rlen, rcap;
	unsigned queries; /* complete messages read */
	unsigned pending; /* queries waiting for an answer */
	unsigned refs;	  /* waiters pointing here */
	unsigned writes;  /* uv_write requests not yet called back */
	unsigned closes;  /* handle closes outstanding */
	bool reading;
	bool closing;
	bool done_reading; /* limit reached or EOF: close when pending is 0 */
};

/* One client waiting for an answer. */
struct rrc_waiter {
	struct rrc_waiter *next;
	bool tcp;
	struct rrc_udp_listener *ul;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	struct rrc_pktinfo local;
	struct rrc_tcp_conn *conn;
	uint64_t start_us; /* arrival (uv_hrtime / 1000), for the latency histogram */
	uint16_t id, flags;
	bool has_edns, edns_do;
	uint16_t limit;
	uint16_t qname_len;
	uint8_t qname[RRC_WIRE_MAX_NAME];
};

struct rrc_worker {
	unsigned index;
	struct rrc_server *server;
	struct rrc_cache *cache;
	struct rrc_cfg_ref *cfg;
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t async;
	uv_timer_t grace;
	uv_check_t flush; /* sends deferred UDP answers after each poll phase */
	bool flush_ready;
	bool deferred_pending;

	struct rrc_udp_listener *udp;
	unsigned n_udp;
	struct rrc_tcp_listener *tcp;
	unsigned n_tcp;
	struct rrc_tcp_conn *conns;

	struct rrc_upstreams *ups;
	struct rrc_redis_tier *redis; /* NULL without Redis */
	struct rrc_dnstap *tap;	      /* the query log, or NULL */
	int64_t wall_offset_us;	      /* wall clock - uv_hrtime, for dnstap's timestamps */

	/* In-flight queries by cache key (coalescing, RFC 5452 §5). */
	struct rrc_query **inflight;
	size_t inflight_buckets;
	size_t n_inflight;
	uint8_t hash_key[16];

	struct rrc_worker_stats st;
	uint64_t batch_start_us; /* arrival of the datagrams being handled */
	struct rrc_top top;	 /* top-K, this worker's own */
	uv_timer_t stats_timer;	 /* ticks top-K windows, publishes them */
	unsigned stats_ticks;
	atomic_bool top_reset;			  /* set by any thread: start the top-K afresh */
	pthread_mutex_t top_lock;		  /* guards top_pub */
	struct rrc_topk top_pub[RRC_TOP_CATS][2]; /* last minute, last hour: for readers */

	/* Recycled miss-path objects (see pool.h). */
	struct rrc_pool pool_query;
	struct rrc_pool pool_waiter;
	struct rrc_pool pool_attempt;

	atomic_bool stopping; /* set by the server's thread */
	bool stop_begun;

	/* Scratch for UDP batches and for answers to TCP and deferred clients. */
	struct mmsghdr rmsg[RRC_UDP_BATCH];
	struct iovec riov[RRC_UDP_BATCH];
	struct sockaddr_storage rpeer[RRC_UDP_BATCH];
	uint8_t rctl[RRC_UDP_BATCH][64];
	uint8_t rbuf[RRC_UDP_BATCH][RRC_UDP_RECV_MAX];
	struct rrc_udp_batch send;
	uint8_t big[RRC_WIRE_MAX_MSG + 2];   /* answers being built */
	uint8_t upbuf[RRC_WIRE_MAX_MSG + 2]; /* datagrams from upstreams */
};

/* Creates worker index for server s and binds its listening sockets. */
struct rrc_worker *rrc_worker_create(struct rrc_server *s, unsigned index, struct rrc_cfg_ref *cfg,
				     char err[RRC_ERR_LEN]);
int rrc_worker_start(struct rrc_worker *w);
/* Wakes the worker to adopt the server's current configuration. Any thread. */
void rrc_worker_notify(struct rrc_worker *w);
/* Asks the worker to stop (any thread) and joins it. */
void rrc_worker_stop_join(struct rrc_worker *w);
void rrc_worker_destroy(struct rrc_worker *w);
/* Merges the worker's last published top-K window of cat (the last minute or hour) into
 * into. Any thread. */
void rrc_worker_top(struct rrc_worker *w, enum rrc_top_cat cat, bool hour, struct rrc_topk *into);
struct rrc_dnstap_msg;
/* Logs m to dnstap when it is on and wants this type; counts it sent or dropped. */
void rrc_worker_tap(struct rrc_worker *w, const struct rrc_dnstap_msg *m);
/* Wall-clock microseconds of a uv_hrtime()/1000 reading. */
uint64_t rrc_worker_wall_us(const struct rrc_worker *w, uint64_t mono_us);
/* Called by query.c whenever a query ends, so a stopping worker can finish. */
void rrc_worker_check_done(struct rrc_worker *w);

#endif
