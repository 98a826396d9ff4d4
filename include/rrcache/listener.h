/*
 * listener: the UDP and TCP front end of one worker, and the transport side of client.h.
 *
 * UDP: our own non-blocking SO_REUSEPORT socket per address, driven by a uv_poll_t, read with
 * recvmmsg and answered with sendmmsg in batches of RRC_UDP_BATCH. IP_PKTINFO/IPV6_RECVPKTINFO
 * give the address each query arrived at on a wildcard socket, and the answer leaves from it
 * (RFC 2181 §4.1). Answers given later (misses) wait in a per-socket batch that leaves at the
 * end of the loop iteration. A full send buffer drops the answer (counted): UDP may lose
 * packets and the client retries.
 *
 * TCP (RFC 7766): uv_tcp_t on our own SO_REUSEPORT socket; 2-octet framing with partial reads
 * and writes; pipelined queries answered as they complete, so out of order; the idle timer is
 * reset only by a complete message; limits on total connections and connections per client
 * (shared by all workers, conn_limit.h), on queries per connection, and on unread output.
 *
 * Every complete message goes to the query handler given at creation, with a struct
 * rrc_client whose ops answer it later. The listener measures client-visible latency (from a
 * message's arrival to its answer leaving) and counts what only it sees (datagrams too long to
 * read, answers that could not leave, TCP connections).
 *
 * Ownership: the set owns its sockets, connections and buffers; it frees itself once
 * rrc_listeners_close() has closed every handle and no held client points at a connection.
 */
#ifndef RRCACHE_LISTENER_H
#define RRCACHE_LISTENER_H

#include "rrcache/client.h"

/* recvmmsg/sendmmsg batch: amortizes one system call over this many datagrams. A full batch of
 * the largest answers (32 x 1232 bytes) fits in an idle socket's default send buffer
 * (net.core.wmem_default, 208 KiB), so sending one never meets EAGAIN on its own. */
#define RRC_UDP_BATCH 32
/* Batches read per readable event before yielding to the loop, so that a flood on one socket
 * cannot starve timers and the other sockets (as libuv does for its own UDP reads). */
#define RRC_UDP_BATCHES_PER_EVENT 4
/* Receive buffer of a UDP listening socket: about 4,000 queries (the kernel charges about
 * 1 KiB of buffer per datagram), 80 ms of a 50,000 qps burst while the loop is busy. */
#define RRC_UDP_RCVBUF (4 * 1024 * 1024)
/* Largest client datagram we read: EDNS queries are small (a name, an OPT, perhaps a cookie
 * or ECS option); a longer one is dropped as malformed (truncated). */
#define RRC_UDP_RECV_MAX 4096
/* Output slot: the largest UDP answer (1232, DNS flag day 2020) plus room to spare. */
#define RRC_UDP_SEND_MAX 1536
/* A TCP client that does not read its answers is closed beyond this much queued output:
 * four answers of the largest size. */
#define RRC_TCP_MAX_WRITE_QUEUE (256 * 1024)
/* uv_listen backlog: connections the kernel completes before the loop accepts them. The
 * loop accepts within one iteration, so this only absorbs a burst; Linux caps it at
 * net.core.somaxconn (4,096 since 5.4). */
#define RRC_TCP_BACKLOG 256

struct rrc_env;
struct rrc_conn_limit;
struct rrc_listeners;

/*
 * Opens a worker's listening sockets for every address of env's configuration (bound, not yet
 * polled) and hands every query to fn(ctx, ...). TCP connections are admitted through limit.
 * Returns NULL with the reason in err (an address that cannot be bound, or memory).
 */
struct rrc_listeners *rrc_listeners_create(const struct rrc_env *env, struct rrc_conn_limit *limit,
					   rrc_client_query_fn fn, void *ctx,
					   char err[RRC_ERR_LEN]);

/* Starts polling and accepting (in the worker's thread). Returns 0 or a libuv error. */
int rrc_listeners_start(struct rrc_listeners *l);

/* Stops reading new queries: UDP polling stops (the sockets stay open for answers in flight),
 * TCP listeners close, open connections stop reading and close once their answers are out. */
void rrc_listeners_stop_accepting(struct rrc_listeners *l);

/* TCP connections still open (a stopping worker waits for them). */
unsigned rrc_listeners_open(const struct rrc_listeners *l);

/* Sends the answers still batched, closes every socket and connection, and frees the set once
 * they are closed. */
void rrc_listeners_close(struct rrc_listeners *l);

#endif
