/*
 * client: the boundary between a transport (the listener's UDP sockets and TCP connections,
 * later TLS and HTTP/2) and the query logic, in the spirit of Unbound's comm_point.
 *
 * A transport hands each complete DNS message to a handler (rrc_client_query_fn) together with
 * a struct rrc_client that says who sent it and how to answer. The handler either answers at
 * once (it writes the answer into the transport's buffer and returns its length), or keeps a
 * copy of the client to answer later: it calls hold() on its copy, then send() with the
 * answer, then release(). The transport implements the three; the query never touches the
 * connection behind conn, and never learns more of the transport than tcp, for statistics and
 * for the size limit of its answer.
 *
 * Lifetimes: the client passed to the handler is valid during the call only. A held copy keeps
 * what conn points at alive until release(); the transport outlives every held copy of a UDP
 * client (the worker ends its queries before it closes the listeners).
 */
#ifndef RRCACHE_CLIENT_H
#define RRCACHE_CLIENT_H

#include "rrcache/addr.h"

#include <netinet/in.h>

/* The local address a UDP query arrived at, so the answer leaves from it (RFC 2181 §4.1). */
struct rrc_pktinfo {
	int family; /* 0 when unknown (a socket bound to one address needs none) */
	union {
		struct in_pktinfo v4;
		struct in6_pktinfo v6;
	};
};

struct rrc_client;

struct rrc_client_ops {
	/* The handler keeps c (its own copy) past its return. */
	void (*hold)(struct rrc_client *c);
	/* Sends a later answer of len > 0 bytes. Never fails visibly: what cannot leave is
	 * dropped and counted by the transport (a client retries). */
	void (*send)(struct rrc_client *c, const uint8_t *msg, size_t len);
	/* The handler is done with its copy; c must not be used after. */
	void (*release)(struct rrc_client *c);
};

struct rrc_client {
	const struct rrc_client_ops *ops;
	void *conn; /* the transport's: a socket or a connection */
	const struct sockaddr
		*local_addr;	  /* the address listened on (for the query log), or NULL */
	uint64_t start_us;	  /* arrival, uv_hrtime() / 1000 */
	bool tcp;		  /* a stream transport: answers up to 65535 bytes */
	bool tls;		  /* over TLS (DNS over TLS; tcp is set too) */
	bool doh;		  /* over HTTP/2 (DNS over HTTPS; tls and tcp set too) */
	int32_t stream;		  /* DNS over HTTPS: the HTTP/2 stream of this query */
	struct rrc_pktinfo local; /* where a UDP query arrived */
	struct rrc_sockaddr peer; /* the client's address and port */
};

/*
 * A transport's handler for one message of len bytes from c. Returns the length of an answer
 * written into out (cap bytes) to send now, or 0 when there is nothing to send now: dropped,
 * or held to be answered later through c's ops.
 */
typedef size_t (*rrc_client_query_fn)(void *ctx, const struct rrc_client *c, const uint8_t *msg,
				      size_t len, uint8_t *out, size_t cap);

#endif
