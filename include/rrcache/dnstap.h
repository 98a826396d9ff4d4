/*
 * dnstap: the query log, in the format dnsdist, Unbound, Knot and CoreDNS share (dnstap
 * protobuf messages in a Frame Streams file or unix socket, content type
 * "protobuf:dnstap.Dnstap").
 *
 * Messages: CLIENT_QUERY / CLIENT_RESPONSE (a client and rrcache), FORWARDER_QUERY /
 * FORWARDER_RESPONSE (rrcache and an upstream), each switchable. They are encoded on the
 * worker's thread (protobuf by hand: a few fields, no library) into a malloc'd frame and handed
 * to fstrm's I/O thread through one bounded single-producer queue per worker; a full queue
 * drops the message and counts it (rrcache_dnstap_dropped_total): the query path never waits.
 * Only when dnstap is configured does it cost anything (a frame's allocation and copy).
 */
#ifndef RRCACHE_DNSTAP_H
#define RRCACHE_DNSTAP_H

#include "rrcache/config.h"
#include "rrcache/stats.h"

#include <sys/socket.h>

struct rrc_dnstap;

enum rrc_dnstap_type {
	RRC_DT_CLIENT_QUERY = 5,
	RRC_DT_CLIENT_RESPONSE = 6,
	RRC_DT_FORWARDER_QUERY = 7,
	RRC_DT_FORWARDER_RESPONSE = 8,
};

/* One message: the query's side (the asker) and the response's side (the one asked). */
struct rrc_dnstap_msg {
	enum rrc_dnstap_type type;
	bool tcp;
	bool tls;			      /* DNS over TLS: the socket protocol DOT */
	bool doh;			      /* DNS over HTTPS: DOH */
	const struct sockaddr *query_addr;    /* may be NULL */
	const struct sockaddr *response_addr; /* may be NULL */
	uint64_t query_time_us;		      /* wall clock, 0 when unknown */
	uint64_t response_time_us;
	const uint8_t *wire; /* the DNS message */
	size_t len;
};

/* Starts the I/O thread with one input queue per worker. NULL with the reason in err. */
struct rrc_dnstap *rrc_dnstap_start(const struct rrc_config *cfg, unsigned n_workers,
				    char err[RRC_ERR_LEN]);
/* Flushes what is queued and stops. */
void rrc_dnstap_stop(struct rrc_dnstap *d);
/* A file output moves to a new file under its name (after a rotation) before its next write:
 * the old file ends with a STOP frame, the new one starts with its own START frame. Nothing
 * for a socket output or d NULL. Any thread. */
void rrc_dnstap_reopen(struct rrc_dnstap *d);

/* True when messages of this type are logged. */
bool rrc_dnstap_wants(const struct rrc_dnstap *d, enum rrc_dnstap_type type);

/* Logs m from worker's queue. Returns false when it was dropped (queue full). */
bool rrc_dnstap_log(struct rrc_dnstap *d, unsigned worker, const struct rrc_dnstap_msg *m);

/*
 * One worker's side of the query log: its queue, its clock offset and its counters. The
 * worker keeps one (it is the `tap` of its env when dnstap is on); the modules log through it.
 */
struct rrc_tap {
	struct rrc_dnstap *d;
	unsigned worker;	     /* the queue it writes to */
	int64_t wall_offset_us;	     /* wall clock - uv_hrtime()/1000, read once at start */
	struct rrc_worker_stats *st; /* dnstap_sent, dnstap_dropped */
};

/* Sets tap up for worker's queue of d, counting into st. */
void rrc_tap_init(struct rrc_tap *tap, struct rrc_dnstap *d, unsigned worker,
		  struct rrc_worker_stats *st);
/* True when tap is on and logs messages of this type. tap may be NULL. */
static inline bool rrc_tap_wants(const struct rrc_tap *tap, enum rrc_dnstap_type type)
{
	return tap && rrc_dnstap_wants(tap->d, type);
}
/* Logs m when tap wants its type; counts it sent or dropped. tap may be NULL. */
void rrc_tap_log(struct rrc_tap *tap, const struct rrc_dnstap_msg *m);
/* The wall-clock microseconds of a uv_hrtime()/1000 reading. */
static inline uint64_t rrc_tap_wall_us(const struct rrc_tap *tap, uint64_t mono_us)
{
	return (uint64_t)((int64_t)mono_us + tap->wall_offset_us);
}

/* Encodes m as a dnstap protobuf (Dnstap{identity, version, message, type}) into out.
 * Returns the length, 0 if cap is too small. Pure: exposed for tests. */
size_t rrc_dnstap_encode(const char *identity, const struct rrc_dnstap_msg *m, uint8_t *out,
			 size_t cap);

#endif
