/*
 * listener: the UDP and TCP front end of one worker.
 *
 * UDP: our own non-blocking SO_REUSEPORT socket per address, driven by a uv_poll_t, read with
 * recvmmsg and answered with sendmmsg in batches of RRC_UDP_BATCH. IP_PKTINFO/IPV6_RECVPKTINFO
 * give the address each query arrived at, and the answer leaves from it (RFC 2181 §4.1) even
 * on a wildcard socket. A full send buffer drops the answer (counted): UDP may lose packets
 * and the client retries.
 *
 * TCP (RFC 7766): uv_tcp_t on our own SO_REUSEPORT socket; 2-octet framing with partial reads
 * and writes; pipelined queries answered as they complete, so out of order; the idle timer is
 * reset only by a complete message; limits on total connections and connections per client
 * (shared by all workers), on queries per connection, and on unread output.
 */
#ifndef RRCACHE_LISTENER_H
#define RRCACHE_LISTENER_H

#include "rrcache/worker.h"

/* Opens worker w's listening sockets for every configured address. Returns 0 or -errno. */
int rrc_listener_open(struct rrc_worker *w, const struct rrc_config *cfg, char err[RRC_ERR_LEN]);

/* Starts polling/accepting on the worker's loop (in the worker's thread). */
int rrc_listener_start(struct rrc_worker *w);

/* Stops reading new queries: UDP polling stops (the socket stays open for answers in flight),
 * TCP listeners close, open connections stop reading. */
void rrc_listener_stop_accepting(struct rrc_worker *w);

/* Closes every socket and connection. */
void rrc_listener_close_all(struct rrc_worker *w);

/* Sends an answer (len 0: none) to a waiting client and releases its hold on a TCP
 * connection. Does not free the waiter. */
void rrc_listener_answer(struct rrc_worker *w, struct rrc_waiter *wt, const uint8_t *buf,
			 size_t len);

/* Number of open TCP connections of this worker. */
unsigned rrc_listener_tcp_count(const struct rrc_worker *w);

#endif
