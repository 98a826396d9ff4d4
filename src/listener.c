/*
 * listener: UDP (recvmmsg/sendmmsg on our own sockets) and TCP (RFC 7766) front end.
 * See include/rrcache/listener.h.
 *
 * Lifetimes: the set's own handles (one poll per UDP socket, one uv_tcp_t per TCP address and
 * the one it refuses connections with, the check that flushes later answers) are counted in
 * closes; connections in conn_objs, from their allocation to their free. A connection is freed
 * once both its handles have closed and no held client points at it (refs); the set is freed
 * once it is closing and both counts are zero.
 */
#include "rrcache/listener.h"
#include "rrcache/acl.h"
#include "rrcache/conn_limit.h"
#include "rrcache/doh.h"
#include "rrcache/env.h"
#include "rrcache/frame.h"
#include "rrcache/log.h"
#include "rrcache/tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* First read buffer of a TCP connection; grows to the largest frame it must hold. */
#define RRC_TCP_RBUF_INITIAL 4096
/* After a connection's last answer and our FIN, what the client still sends is read and
 * discarded for at most this long, so that closing does not reset the connection under
 * answers it has not read yet: a client that has them closes within a round trip. */
#define RRC_TCP_LINGER_MS 2000
/* Room for one IP_PKTINFO or IPV6_PKTINFO control message (CMSG_SPACE of 20 or 24 bytes). */
#define RRC_CTL_LEN 64

/* Datagrams that leave together in one sendmmsg: the answers to one recvmmsg batch, or the
 * answers that complete later (misses), which wait until the end of the loop iteration. */
struct udp_batch {
	unsigned n;
	struct mmsghdr msg[RRC_UDP_BATCH];
	struct iovec iov[RRC_UDP_BATCH];
	struct sockaddr_storage peer[RRC_UDP_BATCH]; /* kept client addresses (later answers) */
	uint8_t ctl[RRC_UDP_BATCH][RRC_CTL_LEN];
	uint8_t buf[RRC_UDP_BATCH][RRC_UDP_SEND_MAX];
};

struct udp_sock {
	struct rrc_listeners *l;
	struct rrc_sockaddr addr; /* bound to */
	uv_poll_t poll;
	int fd; /* -1 once closed */
	bool polling;
	struct udp_batch *deferred; /* later answers; freed with the socket */
};

struct tcp_sock {
	struct rrc_listeners *l;
	uv_tcp_t handle;
	/* A connection that cannot be kept (no memory) is still accepted, into this handle, and
	 * closed: libuv stops polling a listener whose connection callback does not accept. */
	uv_tcp_t reject;
	bool reject_busy; /* reject is open or closing */
	bool reject_owed; /* a connection waits for reject to be free */
	bool tls;	  /* DNS over TLS (listen_tls), or over HTTPS (listen_https, https too) */
	bool https;
};

struct conn {
	struct rrc_listeners *l;
	uv_tcp_t handle;
	uv_timer_t idle;	  /* idle timeout, then the linger after our FIN */
	uv_shutdown_t shutdown;	  /* our FIN, after the last answer */
	struct conn *prev, *next; /* the set's list of open connections */
	struct rrc_client client; /* what each of its queries is handed */
	struct rrc_frame in;	  /* the client's stream, cut into messages */
	unsigned queries;	  /* complete messages read */
	unsigned pending;	  /* queries held, waiting for an answer */
	unsigned refs;		  /* held clients pointing here */
	unsigned writes;	  /* uv_write requests not yet called back */
	unsigned closes;	  /* handle closes outstanding */
	bool reading;
	bool closing;
	bool admitted;	     /* counted by the connection limit */
	bool done_reading;   /* limit reached or EOF: close when pending is 0 */
	bool at_limit;	     /* tcp.max_queries_per_connection reached: end with a FIN */
	bool shutting;	     /* our FIN is on its way; the client's input is discarded */
	struct rrc_tls *tls; /* DNS over TLS: the session (NULL over plain TCP) */
	struct rrc_doh *doh; /* DNS over HTTPS: the HTTP/2 session, once the handshake is done */
	bool https;	     /* a listen_https connection */
};

struct rrc_listeners {
	const struct rrc_env *env;
	struct rrc_conn_limit *limit;
	rrc_client_query_fn on_query;
	void *ctx;
	struct udp_sock *udp;
	unsigned n_udp; /* with an initialized poll handle */
	struct tcp_sock *tcp;
	unsigned n_tcp; /* with an initialized handle */
	struct conn *conns;
	unsigned n_conns;	 /* open: on the list */
	unsigned conn_objs;	 /* allocated, not yet freed */
	unsigned closes;	 /* the set's own handles being closed */
	uv_check_t flush;	 /* sends later answers after each poll phase */
	uv_prepare_t flush_late; /* and those given outside it (timers) before the loop waits */
	bool flush_init;
	bool deferred_pending;
	bool stopping, closing;

	/* Scratch for one UDP batch, and the answer to one TCP message. */
	struct mmsghdr rmsg[RRC_UDP_BATCH];
	struct iovec riov[RRC_UDP_BATCH];
	struct rrc_client rcl[RRC_UDP_BATCH]; /* the senders, their addresses read in place */
	uint8_t rctl[RRC_UDP_BATCH][RRC_CTL_LEN];
	uint8_t rbuf[RRC_UDP_BATCH][RRC_UDP_RECV_MAX];
	struct udp_batch send;
	uint8_t tcp_out[RRC_WIRE_MAX_MSG + 2];
	uint8_t tls_in[RRC_WIRE_MAX_MSG + 1];	 /* TLS records being read */
	uint8_t tls_frame[RRC_WIRE_MAX_MSG + 2]; /* an answer framed before it is encrypted */
	/* The answers given while one DNS-over-TLS connection's input is read, framed, to go
	 * out as one TLS record rather than one each (RRC_TLS_RECORD: a record's plaintext). */
	struct conn *batch;
	size_t batch_len;
	uint8_t tls_batch[RRC_TLS_RECORD];
};

static inline uint64_t now_us(void)
{
	return uv_hrtime() / 1000;
}

/* Client-visible latency of one answer that leaves now. */
static void add_latency(struct rrc_listeners *l, uint64_t start_us)
{
	uint64_t t = now_us();
	rrc_hist_add(&l->env->st->latency, t > start_us ? t - start_us : 0);
}

static void maybe_free_set(struct rrc_listeners *l)
{
	if (!l->closing || l->closes > 0 || l->conn_objs > 0)
		return;
	free(l->udp);
	free(l->tcp);
	free(l);
}

static void on_set_handle_closed(uv_handle_t *h)
{
	struct rrc_listeners *l = h->data;
	l->closes--;
	maybe_free_set(l);
}

/* ---- sockets ---- */

static int open_socket(const struct rrc_sockaddr *a, int type, char *err)
{
	char name[RRC_ADDR_TEXT];
	int one = 1;
	int family = a->sa.sa_family;
	rrc_addr_format(a, name, sizeof(name));
	int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* One socket per worker on the same address; the kernel spreads clients over them. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		goto fail;
	if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)))
		goto fail;
	/* The destination address of each query is needed only on a wildcard address, where the
	 * answer must leave from it (RFC 2181 §4.1); on a specific address the kernel uses that
	 * one, and asking for it would cost a control message per datagram each way. */
	bool wildcard = rrc_addr_is_wildcard(a);
	if (type == SOCK_DGRAM) {
		/* Room for a burst while the loop is busy elsewhere: the default (208 KiB) holds
		 * about 300 datagrams. Past net.core.rmem_max when allowed (CAP_NET_ADMIN). */
		int size = RRC_UDP_RCVBUF;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0)
			(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	}
	if (type == SOCK_DGRAM && wildcard) {
		int rc = family == AF_INET6
				 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one))
				 : setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
		if (rc)
			goto fail;
	}
	if (bind(fd, &a->sa, a->len))
		goto fail;
	return fd;
fail:;
	int e = errno;
	const char *hint = "";
	if ((e == EACCES || e == EPERM) && rrc_addr_port(a) < 1024)
		hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE: run it from the "
		       "systemd unit, or setcap cap_net_bind_service=+ep on the binary, or listen "
		       "on a port above 1023)";
	else if (e == EADDRINUSE)
		hint = " (another server holds it: often systemd-resolved (127.0.0.53), dnsmasq, "
		       "unbound, knot or bind9; 'ss -lunp' names it)";
	snprintf(err, RRC_ERR_LEN, "cannot listen on %s/%s: %s%s", name,
		 type == SOCK_DGRAM ? "udp" : "tcp", strerror(e), hint);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* ---- UDP ---- */

static void read_pktinfo(struct msghdr *mh, struct rrc_pktinfo *pi)
{
	pi->family = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
			memcpy(&pi->v4, CMSG_DATA(cm), sizeof(pi->v4));
			pi->family = AF_INET;
		} else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
			memcpy(&pi->v6, CMSG_DATA(cm), sizeof(pi->v6));
			pi->family = AF_INET6;
		}
	}
}

/* Sets the source address of an answer to the query's destination (RFC 2181 §4.1). */
static void write_pktinfo(struct msghdr *mh, uint8_t *ctl, size_t cap, const struct rrc_pktinfo *pi)
{
	mh->msg_control = NULL;
	mh->msg_controllen = 0;
	if (pi->family == 0)
		return;
	memset(ctl, 0, cap);
	mh->msg_control = ctl;
	struct cmsghdr *cm = (struct cmsghdr *)ctl;
	if (pi->family == AF_INET) {
		struct in_pktinfo out = {.ipi_ifindex = 0, .ipi_spec_dst = pi->v4.ipi_addr};
		mh->msg_controllen = CMSG_SPACE(sizeof(out));
		cm->cmsg_level = IPPROTO_IP;
		cm->cmsg_type = IP_PKTINFO;
		cm->cmsg_len = CMSG_LEN(sizeof(out));
		memcpy(CMSG_DATA(cm), &out, sizeof(out));
	} else {
		struct in6_pktinfo out = pi->v6;
		mh->msg_controllen = CMSG_SPACE(sizeof(out));
		cm->cmsg_level = IPPROTO_IPV6;
		cm->cmsg_type = IPV6_PKTINFO;
		cm->cmsg_len = CMSG_LEN(sizeof(out));
		memcpy(CMSG_DATA(cm), &out, sizeof(out));
	}
}

/* Adds datagram b->n, whose len bytes are already in b->buf[b->n], for peer, leaving from
 * the local address the query came to. */
static void batch_push(struct udp_batch *b, size_t len, void *peer, socklen_t peer_len,
		       const struct rrc_pktinfo *local)
{
	unsigned i = b->n++;
	b->iov[i].iov_base = b->buf[i];
	b->iov[i].iov_len = len;
	struct msghdr *mh = &b->msg[i].msg_hdr;
	mh->msg_name = peer;
	mh->msg_namelen = peer_len;
	mh->msg_iov = &b->iov[i];
	mh->msg_iovlen = 1;
	mh->msg_flags = 0;
	write_pktinfo(mh, b->ctl[i], sizeof(b->ctl[i]), local);
}

/* Sends the batch and empties it. */
static void send_batch(struct udp_sock *us, struct udp_batch *b)
{
	struct rrc_worker_stats *st = us->l->env->st;
	struct mmsghdr *msgs = b->msg;
	unsigned n = b->n, sent = 0;
	b->n = 0;
	while (sent < n) {
		int r = sendmmsg(us->fd, msgs + sent, n - sent, 0);
		if (r > 0) {
			sent += (unsigned)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* The socket buffer is full: UDP may drop, the client will retry. */
			st->udp_send_dropped += n - sent;
			return;
		}
		/* This one datagram cannot go (e.g. no route back): skip it. */
		st->udp_send_dropped++;
		sent++;
	}
}

static void flush_deferred(struct udp_sock *us)
{
	struct udp_batch *d = us->deferred;
	if (d && d->n) {
		if (us->fd >= 0)
			send_batch(us, d);
		else
			d->n = 0; /* the socket is gone: nothing can leave */
	}
}

static void flush_all_deferred(struct rrc_listeners *l)
{
	for (unsigned i = 0; i < l->n_udp; i++)
		flush_deferred(&l->udp[i]);
	l->deferred_pending = false;
}

static void on_flush(uv_check_t *h)
{
	struct rrc_listeners *l = h->data;
	if (l->deferred_pending)
		flush_all_deferred(l);
}

/* Answers given by a timer's callback (a budget spent) would otherwise wait for the next poll
 * phase to end, which waits for the next event. */
static void on_flush_late(uv_prepare_t *h)
{
	struct rrc_listeners *l = h->data;
	if (l->deferred_pending)
		flush_all_deferred(l);
	uv_prepare_stop(h);
}

/* A UDP socket outlives every query that holds one of its clients. */
static void udp_hold(struct rrc_client *c)
{
	(void)c;
}

static void udp_release(struct rrc_client *c)
{
	(void)c;
}

/* A later answer joins the socket's batch, which leaves at the end of the loop iteration. */
static void udp_send(struct rrc_client *c, const uint8_t *msg, size_t len)
{
	struct udp_sock *us = c->conn;
	struct rrc_listeners *l = us->l;
	add_latency(l, c->start_us);
	struct udp_batch *d = us->deferred;
	if (us->fd < 0 || !d)
		return;
	if (len > RRC_UDP_SEND_MAX) {
		l->env->st->udp_send_dropped++;
		return;
	}
	unsigned i = d->n;
	memcpy(d->buf[i], msg, len);
	memcpy(&d->peer[i], &c->peer.ss, RRC_MIN((size_t)c->peer.len, sizeof(d->peer[i])));
	batch_push(d, len, &d->peer[i], c->peer.len, &c->local);
	if (!l->deferred_pending && !l->stopping)
		uv_prepare_start(&l->flush_late, on_flush_late);
	l->deferred_pending = true;
	if (d->n == RRC_UDP_BATCH)
		flush_deferred(us);
}

static const struct rrc_client_ops udp_ops = {
	.hold = udp_hold, .send = udp_send, .release = udp_release};

/* Reads and answers up to RRC_UDP_BATCHES_PER_EVENT batches; true when the last batch was
 * full (more may be waiting). */
static bool udp_read(struct udp_sock *us)
{
	struct rrc_listeners *l = us->l;
	struct rrc_worker_stats *st = l->env->st;
	for (int batch = 0; batch < RRC_UDP_BATCHES_PER_EVENT; batch++) {
		for (unsigned i = 0; i < RRC_UDP_BATCH; i++) {
			struct msghdr *mh = &l->rmsg[i].msg_hdr;
			l->riov[i].iov_base = l->rbuf[i];
			l->riov[i].iov_len = RRC_UDP_RECV_MAX;
			mh->msg_name = &l->rcl[i].peer.ss;
			mh->msg_namelen = sizeof(l->rcl[i].peer.ss);
			mh->msg_iov = &l->riov[i];
			mh->msg_iovlen = 1;
			mh->msg_control = l->rctl[i];
			mh->msg_controllen = sizeof(l->rctl[i]);
			mh->msg_flags = 0;
		}
		int n = recvmmsg(us->fd, l->rmsg, RRC_UDP_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return false;
		/* One clock reading per batch: every query of it arrived by now. */
		uint64_t t0 = now_us();
		struct udp_batch *out = &l->send;
		for (int i = 0; i < n; i++) {
			struct msghdr *mh = &l->rmsg[i].msg_hdr;
			if (mh->msg_flags & MSG_TRUNC) {
				st->queries_udp++;
				st->malformed[RRC_WR_TRUNCATED]++;
				continue;
			}
			struct rrc_client *c = &l->rcl[i];
			c->ops = &udp_ops;
			c->conn = us;
			c->local_addr = &us->addr.sa;
			c->start_us = t0;
			c->tcp = false;
			c->peer.len = mh->msg_namelen;
			read_pktinfo(mh, &c->local);
			size_t len = l->on_query(l->ctx, c, l->rbuf[i], l->rmsg[i].msg_len,
						 out->buf[out->n], RRC_UDP_SEND_MAX);
			if (len)
				batch_push(out, len, &c->peer.ss, c->peer.len, &c->local);
		}
		if (out->n) {
			/* Counted before they leave: a client that has its answer and reads the
			 * statistics finds it there. */
			rrc_hist_add_n(&st->latency, now_us() - t0, out->n);
			send_batch(us, out);
		}
		if (n < RRC_UDP_BATCH)
			return false;
	}
	return true;
}

static void on_udp_readable(uv_poll_t *h, int status, int events)
{
	if (status < 0 || !(events & UV_READABLE))
		return;
	udp_read(h->data);
}

/*
 * A restart without losing queries (docs/operations.md): a new rrcache is started on the same
 * addresses (SO_REUSEPORT puts its sockets in the same group) before this one is stopped.
 * Closing a socket of the group drops the datagrams queued on it; instead, the socket is first
 * connected to a peer that sends nothing (port 9, discard, on loopback), which takes it out of
 * the choice for every other client at once, and then what was already queued is read and
 * answered.
 */
static void udp_leave_and_drain(struct udp_sock *us)
{
	struct rrc_sockaddr nowhere;
	rrc_addr_parse(us->addr.sa.sa_family == AF_INET6 ? "[::1]:9" : "127.0.0.1:9", 9, &nowhere);
	if (connect(us->fd, &nowhere.sa, nowhere.len) != 0) {
		rrc_log(RRC_LOG_DEBUG, RRC_LG_LISTEN, "stop: cannot detach a UDP socket: %s",
			strerror(errno));
		return;
	}
	/* Bounded: nothing new arrives, so at most the receive buffer's worth is read. */
	for (int i = 0; i < 64 && udp_read(us); i++)
		;
}

/* ---- TCP ---- */

struct tcp_write {
	uv_write_t req;
	struct conn *conn;
	uint8_t data[];
};

static void conn_free_if_unused(struct conn *c)
{
	if (c->closing && c->closes == 0 && c->refs == 0 && !c->shutting) {
		struct rrc_listeners *l = c->l;
		rrc_frame_free(&c->in);
		rrc_doh_free(c->doh);
		rrc_tls_free(c->tls);
		free(c);
		l->conn_objs--;
		maybe_free_set(l);
	}
}

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->closes--;
	conn_free_if_unused(c);
}

/* Takes the connection off the set's list and closes its handles; it is freed once both
 * have closed and no held client points at it. */
static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	struct rrc_listeners *l = c->l;
	c->closing = true;
	if (c->admitted) {
		rrc_conn_limit_release(l->limit, &c->client.peer.sa);
		l->env->st->tcp_open--;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	l->n_conns--;
	c->closes = 2;
	uv_close((uv_handle_t *)&c->handle, on_conn_closed);
	uv_close((uv_handle_t *)&c->idle, on_conn_closed);
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void on_linger_end(uv_timer_t *t)
{
	conn_close(t->data);
}

/* After our FIN: the client's input is read and dropped until it closes. */
static void on_discard(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	rrc_frame_clear(&c->in);
	if (nread < 0)
		conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *c = req->data;
	c->shutting = false;
	if (c->closing) {
		conn_free_if_unused(c);
		return;
	}
	if (status < 0 || uv_read_start((uv_stream_t *)&c->handle, on_tcp_alloc, on_discard) != 0) {
		conn_close(c);
		return;
	}
	rrc_frame_clear(&c->in);
	uv_timer_start(&c->idle, on_linger_end, RRC_TCP_LINGER_MS, 0);
}

/* A connection that will read no more closes once every answer is written. One that reached
 * tcp.max_queries_per_connection may still have queries unread: it ends with a FIN after the
 * last answer (RFC 7766 §6.2.3: the client sees an orderly end, not a reset that could lose
 * answers), then closes when the client does or the linger ends. */
static void conn_maybe_finish(struct conn *c)
{
	if (c->closing || c->shutting || !c->done_reading || c->pending > 0 || c->writes > 0 ||
	    (c->l->batch == c && c->l->batch_len > 0))
		return;
	if (!c->at_limit || c->l->stopping ||
	    uv_shutdown(&c->shutdown, (uv_stream_t *)&c->handle, on_shutdown) != 0) {
		conn_close(c);
		return;
	}
	c->shutdown.data = c;
	c->shutting = true;
	uv_timer_stop(&c->idle);
}

static void on_tcp_written(uv_write_t *req, int status)
{
	struct tcp_write *tw = (struct tcp_write *)req;
	struct conn *c = tw->conn;
	free(tw);
	c->writes--;
	if (status < 0)
		conn_close(c);
	else
		conn_maybe_finish(c);
	conn_free_if_unused(c);
}

/* A write of len bytes for c, its data to be filled in; NULL (and c closed) without memory. */
static struct tcp_write *write_new(struct conn *c, size_t len)
{
	struct tcp_write *tw = malloc(sizeof(*tw) + len);
	if (!tw) {
		conn_close(c);
		return NULL;
	}
	tw->conn = c;
	return tw;
}

/* Sends a write made by write_new; partial writes are libuv's to finish. */
static void write_submit(struct conn *c, struct tcp_write *tw, size_t len)
{
	uv_buf_t b = uv_buf_init((char *)tw->data, (unsigned)len);
	if (uv_write(&tw->req, (uv_stream_t *)&c->handle, &b, 1, on_tcp_written) != 0) {
		free(tw);
		conn_close(c);
		return;
	}
	c->writes++;
	if (uv_stream_get_write_queue_size((uv_stream_t *)&c->handle) > RRC_TCP_MAX_WRITE_QUEUE) {
		/* The client does not read its answers; stop spending memory on it. */
		conn_close(c);
	}
}

/* Writes what the TLS session has for the client. */
static void tls_flush(struct conn *c)
{
	uint8_t *data;
	size_t n = rrc_tls_take_output(c->tls, &data);
	struct tcp_write *tw = n && !c->closing ? write_new(c, n) : NULL;
	if (tw) {
		memcpy(tw->data, data, n);
		write_submit(c, tw, n);
	}
	free(data);
}

/* Encrypts the answers batched for c (the connection being read). */
static void batch_write(struct conn *c)
{
	struct rrc_listeners *l = c->l;
	size_t n = l->batch_len;
	l->batch_len = 0;
	if (n && !c->closing && rrc_tls_write(c->tls, l->tls_batch, n) != RRC_TLS_OK)
		conn_close(c);
}

/* Sends one framed message (RFC 1035 §4.2.2), inside TLS on a DNS-over-TLS connection. */
static void tcp_send(struct conn *c, const uint8_t *msg, size_t len)
{
	if (c->closing || len == 0 || len > RRC_WIRE_MAX_MSG)
		return;
	if (c->tls) {
		struct rrc_listeners *l = c->l;
		if (l->batch == c) {
			/* Read in progress: its flush writes the batch and whatever follows. */
			if (l->batch_len + 2 + len > sizeof(l->tls_batch))
				batch_write(c);
			if (2 + len <= sizeof(l->tls_batch) && !c->closing) {
				rrc_put16(l->tls_batch + l->batch_len, (uint16_t)len);
				memcpy(l->tls_batch + l->batch_len + 2, msg, len);
				l->batch_len += 2 + len;
				return;
			}
		}
		uint8_t *f = l->tls_frame;
		rrc_put16(f, (uint16_t)len);
		memcpy(f + 2, msg, len);
		if (rrc_tls_write(c->tls, f, len + 2) != RRC_TLS_OK) {
			conn_close(c);
			return;
		}
		if (l->batch != c)
			tls_flush(c);
		return;
	}
	struct tcp_write *tw = write_new(c, 2 + len);
	if (!tw)
		return;
	rrc_put16(tw->data, (uint16_t)len);
	memcpy(tw->data + 2, msg, len);
	write_submit(c, tw, 2 + len);
}

static void tcp_hold(struct rrc_client *cl)
{
	struct conn *c = cl->conn;
	c->refs++;
	c->pending++;
}

static void doh_out(struct conn *c);

static void tcp_answer(struct rrc_client *cl, const uint8_t *msg, size_t len)
{
	struct conn *c = cl->conn;
	add_latency(c->l, cl->start_us);
	if (c->doh) {
		/* A stream the client has reset meanwhile is simply gone. */
		if (!c->closing && rrc_doh_answer(c->doh, cl->stream, msg, len) == 0)
			doh_out(c);
		return;
	}
	tcp_send(c, msg, len);
}

static void tcp_release(struct rrc_client *cl)
{
	struct conn *c = cl->conn;
	c->pending--;
	c->refs--;
	conn_maybe_finish(c);
	conn_free_if_unused(c);
}

static const struct rrc_client_ops tcp_ops = {
	.hold = tcp_hold, .send = tcp_answer, .release = tcp_release};

static void on_idle(uv_timer_t *t)
{
	struct conn *c = t->data;
	const struct rrc_config *cfg = rrc_env_cfg(c->l->env);
	if (c->pending > 0) {
		/* RFC 7766 §6.2.3: idle means no query outstanding. */
		uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
		return;
	}
	c->l->env->st->tcp_closed_idle++;
	conn_close(c);
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	uint8_t *at;
	size_t room;
	rrc_frame_room(&c->in, RRC_TCP_RBUF_INITIAL, &at, &room);
	/* No room (no memory for a larger message): libuv reports UV_ENOBUFS, which closes. */
	buf->base = room ? (char *)at : NULL;
	buf->len = room;
}

static void stop_reading(struct conn *c)
{
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->handle);
		c->reading = false;
	}
	c->done_reading = true;
}

static void conn_messages(struct conn *c);

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (nread == 0)
		return;
	if (nread < 0 || !buf->base) {
		/* EOF: the client sent all it will; its answers may still go out. */
		stop_reading(c);
		if (nread != UV_EOF)
			conn_close(c);
		else
			conn_maybe_finish(c);
		return;
	}
	rrc_frame_added(&c->in, (size_t)nread);
	conn_messages(c);
}

/* Hands each complete message of the connection's input to the query handler. */
static void conn_messages(struct conn *c)
{
	struct rrc_listeners *l = c->l;
	const struct rrc_config *cfg = rrc_env_cfg(l->env);
	const uint8_t *msg;
	size_t mlen;
	while (!c->closing && !c->done_reading && rrc_frame_next(&c->in, &msg, &mlen)) {
		c->queries++;
		c->client.start_us = now_us();
		unsigned held = c->pending;
		size_t n =
			l->on_query(l->ctx, &c->client, msg, mlen, l->tcp_out, sizeof(l->tcp_out));
		/* RFC 7766 §6.2.3: only a complete message resets the idle timer, and only one that
		 * is answered (now or later): dropped ones must not keep a connection open. */
		if (n || c->pending > held)
			uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
		if (n) {
			add_latency(l, c->client.start_us); /* before the client can see it */
			tcp_send(c, l->tcp_out, n);
		}
		/* Not over TLS: a new handshake would cost the client more than the fairness
		 * this buys; the idle timeout and the connection limits still hold. */
		if (c->queries >= cfg->tcp_max_queries && !c->tls) {
			c->at_limit = true;
			stop_reading(c);
		}
	}
	rrc_frame_compact(&c->in);
	conn_maybe_finish(c);
}

/* ---- DNS over TLS (RFC 7858) and over HTTPS (RFC 8484) ---- */

/* The client's TLS stream ended: after close_notify it has sent all it will (its answers may
 * still go out); after an error the connection closes. */
static void tls_input_ended(struct conn *c, enum rrc_tls_status rs)
{
	stop_reading(c);
	if (rs == RRC_TLS_CLOSED)
		conn_maybe_finish(c);
	else
		conn_close(c);
}

static int doh_write(void *ctx, const uint8_t *data, size_t len)
{
	struct conn *c = ctx;
	return rrc_tls_write(c->tls, data, len) == RRC_TLS_OK ? 0 : -1;
}

/* Writes what the HTTP/2 session has for the client, through TLS; closes the connection once
 * the session has ended. */
static void doh_out(struct conn *c)
{
	if (c->closing)
		return;
	/* Between reads: the frame buffer is free, and one TLS record carries 16 KB. */
	int rc = rrc_doh_flush(c->doh, c->l->tls_frame, RRC_TLS_RECORD, doh_write, c);
	tls_flush(c);
	if (rc != 0 || (rrc_doh_done(c->doh) && c->pending == 0))
		conn_close(c);
}

/* A DNS message of a request: handled as any stream transport's, answered on its stream. */
static void doh_query(void *ctx, int32_t stream, const uint8_t *msg, size_t len)
{
	struct conn *c = ctx;
	struct rrc_listeners *l = c->l;
	const struct rrc_config *cfg = rrc_env_cfg(l->env);
	if (c->closing)
		return;
	c->queries++;
	c->client.start_us = now_us();
	c->client.stream = stream;
	size_t n = l->on_query(l->ctx, &c->client, msg, len, l->tcp_out, sizeof(l->tcp_out));
	uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
	if (n) {
		rrc_doh_answer(c->doh, stream, l->tcp_out, n);
		add_latency(l, c->client.start_us);
	}
}

/* After the handshake of a listen_https connection: HTTP/2 (ALPN h2) or nothing. */
static bool doh_begin(struct conn *c)
{
	char alpn[16];
	rrc_tls_alpn(c->tls, alpn, sizeof(alpn));
	if (strcmp(alpn, "h2") != 0) {
		c->l->env->st->doh_no_h2++;
		conn_close(c);
		return false;
	}
	c->doh = rrc_doh_new(doh_query, c, &c->l->env->st->doh_refused);
	if (!c->doh) {
		conn_close(c);
		return false;
	}
	c->client.doh = true;
	doh_out(c); /* our SETTINGS */
	return !c->closing;
}

/* Plaintext of a DNS-over-HTTPS connection into its HTTP/2 session. */
static void doh_read(struct conn *c)
{
	struct rrc_listeners *l = c->l;
	for (;;) {
		size_t got = 0;
		enum rrc_tls_status rs =
			rrc_tls_read(c->tls, l->tls_frame, sizeof(l->tls_frame), &got);
		if (rs == RRC_TLS_OK) {
			if (rrc_doh_feed(c->doh, l->tls_frame, got) != 0) {
				l->env->st->doh_protocol_errors++;
				doh_out(c); /* a GOAWAY, if the session could write one */
				conn_close(c);
				return;
			}
			if (c->closing)
				return;
			continue;
		}
		if (rs == RRC_TLS_AGAIN)
			break;
		tls_input_ended(c, rs);
		return;
	}
	doh_out(c);
}

static void on_tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	buf->base = (char *)c->l->tls_in;
	buf->len = sizeof(c->l->tls_in);
}

static void on_handshake_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;
	c->l->env->st->dot_handshake_timeouts++;
	conn_close(c);
}

static void on_tls_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	struct rrc_listeners *l = c->l;
	const struct rrc_config *cfg = rrc_env_cfg(l->env);
	if (nread == 0)
		return;
	if (nread < 0) {
		stop_reading(c);
		if (nread != UV_EOF || !rrc_tls_ready(c->tls))
			conn_close(c);
		else
			conn_maybe_finish(c);
		return;
	}
	if (rrc_tls_feed(c->tls, (const uint8_t *)buf->base, (size_t)nread) != 0) {
		conn_close(c);
		return;
	}
	if (!rrc_tls_ready(c->tls)) {
		enum rrc_tls_status hs = rrc_tls_handshake(c->tls);
		tls_flush(c);
		if (hs == RRC_TLS_ERROR) {
			l->env->st->dot_handshake_failures++;
			rrc_log(RRC_LOG_DEBUG, RRC_LG_LISTEN,
				"TLS handshake with a client failed: %s", rrc_tls_error(c->tls));
			conn_close(c);
			return;
		}
		if (hs != RRC_TLS_OK || c->closing)
			return;
		l->env->st->dot_handshakes++;
		if (rrc_tls_resumed(c->tls))
			l->env->st->dot_resumed++;
		uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
		if (c->https && !doh_begin(c))
			return;
	}
	if (c->doh) {
		doh_read(c);
		return;
	}
	l->batch = c;
	l->batch_len = 0;
	for (;;) {
		uint8_t *at;
		size_t room, got = 0;
		if (rrc_frame_room(&c->in, RRC_TCP_RBUF_INITIAL, &at, &room) != 0 || room == 0) {
			conn_close(c);
			return;
		}
		enum rrc_tls_status rs = rrc_tls_read(c->tls, at, room, &got);
		if (rs == RRC_TLS_OK) {
			rrc_frame_added(&c->in, got);
			conn_messages(c);
			if (c->closing || c->done_reading)
				break;
			continue;
		}
		if (rs == RRC_TLS_AGAIN)
			break;
		tls_input_ended(c, rs);
		break;
	}
	batch_write(c);
	l->batch = NULL;
	if (!c->closing)
		tls_flush(c);
}

static void refuse(struct tcp_sock *ts);

static void on_reject_closed(uv_handle_t *h)
{
	struct tcp_sock *ts = h->data;
	struct rrc_listeners *l = ts->l;
	ts->reject_busy = false;
	l->closes--;
	if (ts->reject_owed && !uv_is_closing((uv_handle_t *)&ts->handle)) {
		ts->reject_owed = false;
		refuse(ts);
		return;
	}
	maybe_free_set(l);
}

/* Accepts the pending connection and closes it at once. Only one can be refused at a time;
 * another waits (libuv holds it) until the reject handle has closed. */
static void refuse(struct tcp_sock *ts)
{
	struct rrc_listeners *l = ts->l;
	if (ts->reject_busy) {
		ts->reject_owed = true;
		return;
	}
	uv_tcp_init(l->env->loop, &ts->reject);
	ts->reject.data = ts;
	ts->reject_busy = true;
	l->closes++;
	uv_accept((uv_stream_t *)&ts->handle, (uv_stream_t *)&ts->reject);
	uv_close((uv_handle_t *)&ts->reject, on_reject_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct tcp_sock *ts = server->data;
	struct rrc_listeners *l = ts->l;
	struct rrc_worker_stats *st = l->env->st;
	const struct rrc_config *cfg = rrc_env_cfg(l->env);
	if (status < 0)
		return;
	struct conn *c = l->stopping ? NULL : calloc(1, sizeof(*c));
	if (!c) {
		/* Stopping, or no memory: the connection must still be taken from libuv. */
		st->tcp_refused_limit++;
		refuse(ts);
		return;
	}
	l->conn_objs++;
	c->l = l;
	uv_tcp_init(l->env->loop, &c->handle);
	uv_timer_init(l->env->loop, &c->idle);
	c->handle.data = c;
	c->idle.data = c;
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->n_conns++;
	c->client.ops = &tcp_ops;
	c->client.conn = c;
	c->client.tcp = true;
	if (uv_accept(server, (uv_stream_t *)&c->handle) != 0) {
		conn_close(c);
		return;
	}
	int plen = sizeof(c->client.peer.ss);
	uv_tcp_getpeername(&c->handle, &c->client.peer.sa, &plen);
	c->client.peer.len = (socklen_t)plen;
	/* The ACL at accept: a denied client must not hold a connection slot (it would learn
	 * nothing from one anyway, whatever acl.action says for its datagrams). */
	if (!rrc_acl_allows(l->env->cfg->acl, &c->client.peer.sa)) {
		st->tcp_refused_acl++;
		conn_close(c);
		return;
	}
	if (!rrc_conn_limit_take(l->limit, &c->client.peer.sa, cfg->tcp_max_connections,
				 cfg->tcp_max_per_client)) {
		st->tcp_refused_limit++;
		conn_close(c);
		return;
	}
	c->admitted = true;
	st->tcp_accepted++;
	st->tcp_open++;
	uv_tcp_nodelay(&c->handle, 1);
	if (ts->tls) {
		/* A client that opens a connection per query pays a handshake each time: past
		 * tls.handshakes_per_client a second (twice that saved up), no more for now. */
		struct rrc_ratelimit *hs = l->env->cfg->handshakes;
		if (hs && !rrc_ratelimit_allow(hs, &c->client.peer.sa, uv_now(l->env->loop))) {
			st->dot_handshake_refused++;
			conn_close(c);
			return;
		}
		/* The certificate of the configuration in force: a reload's new one serves new
		 * connections, the others keep theirs. */
		static const char *const dot_alpn[] = {"dot", NULL}, *const h2_alpn[] = {"h2",
											 NULL};
		char err[RRC_ERR_LEN];
		c->https = ts->https;
		c->tls = cfg->tls_server ? rrc_tls_server(cfg->tls_server,
							  ts->https ? h2_alpn : dot_alpn, err)
					 : NULL;
		if (!c->tls) {
			conn_close(c);
			return;
		}
		c->client.tls = true;
		uv_timer_start(&c->idle, on_handshake_timeout, cfg->tls.handshake_timeout_ms, 0);
		if (uv_read_start((uv_stream_t *)&c->handle, on_tls_alloc, on_tls_read) != 0) {
			conn_close(c);
			return;
		}
		c->reading = true;
		return;
	}
	uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
	if (uv_read_start((uv_stream_t *)&c->handle, on_tcp_alloc, on_tcp_read) != 0) {
		conn_close(c);
		return;
	}
	c->reading = true;
}

/* ---- the set ---- */

static void on_udp_poll_closed(uv_handle_t *h)
{
	struct udp_sock *us = h->data;
	struct rrc_listeners *l = us->l;
	close(us->fd);
	us->fd = -1;
	free(us->deferred);
	us->deferred = NULL;
	l->closes--;
	maybe_free_set(l);
}

/* The next TCP listening socket of l, on a (DNS over TLS or over HTTPS when tls, https).
 * 0, or -1 with the reason in err (l's handles so far are closed by its caller). */
static int tcp_sock_open(struct rrc_listeners *l, const struct rrc_sockaddr *a, bool tls,
			 bool https, char *err)
{
	struct tcp_sock *ts = &l->tcp[l->n_tcp];
	ts->l = l;
	ts->tls = tls;
	ts->https = https;
	int fd = open_socket(a, SOCK_STREAM, err);
	if (fd < 0)
		return -1;
	uv_tcp_init(l->env->loop, &ts->handle);
	ts->handle.data = ts;
	l->n_tcp++;
	if (uv_tcp_open(&ts->handle, fd) != 0) {
		close(fd);
		snprintf(err, RRC_ERR_LEN, "cannot use a TCP socket");
		return -1;
	}
	return 0;
}

struct rrc_listeners *rrc_listeners_create(const struct rrc_env *env, struct rrc_conn_limit *limit,
					   rrc_client_query_fn fn, void *ctx, char err[RRC_ERR_LEN])
{
	const struct rrc_config *cfg = rrc_env_cfg(env);
	struct rrc_listeners *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return NULL;
	}
	l->env = env;
	l->limit = limit;
	l->on_query = fn;
	l->ctx = ctx;
	l->udp = calloc(cfg->n_listen, sizeof(*l->udp));
	l->tcp = calloc(cfg->n_listen + cfg->n_listen_tls + cfg->n_listen_https + 1,
			sizeof(*l->tcp));
	if (!l->udp || !l->tcp) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		goto fail;
	}
	uv_check_init(env->loop, &l->flush);
	l->flush.data = l;
	uv_prepare_init(env->loop, &l->flush_late);
	l->flush_late.data = l;
	l->flush_init = true;
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		struct udp_sock *us = &l->udp[i];
		us->l = l;
		us->addr = cfg->listen[i];
		us->deferred = calloc(1, sizeof(*us->deferred));
		if (!us->deferred) {
			snprintf(err, RRC_ERR_LEN, "out of memory");
			goto fail;
		}
		us->fd = open_socket(&cfg->listen[i], SOCK_DGRAM, err);
		if (us->fd < 0 || uv_poll_init_socket(env->loop, &us->poll, us->fd) != 0) {
			if (us->fd >= 0) {
				close(us->fd);
				snprintf(err, RRC_ERR_LEN, "cannot watch a UDP socket");
			}
			free(us->deferred);
			us->deferred = NULL;
			goto fail;
		}
		us->poll.data = us;
		l->n_udp++;

		if (tcp_sock_open(l, &cfg->listen[i], false, false, err) != 0)
			goto fail;
	}
	/* DNS over TLS, then over HTTPS: TCP sockets only. */
	for (unsigned i = 0; i < cfg->n_listen_tls + cfg->n_listen_https; i++) {
		bool https = i >= cfg->n_listen_tls;
		if (tcp_sock_open(l,
				  https ? &cfg->listen_https[i - cfg->n_listen_tls]
					: &cfg->listen_tls[i],
				  true, https, err) != 0)
			goto fail;
	}
	return l;
fail:
	rrc_listeners_close(l); /* frees the set once the loop has closed what was opened */
	return NULL;
}

int rrc_listeners_start(struct rrc_listeners *l)
{
	uv_check_start(&l->flush, on_flush);
	for (unsigned i = 0; i < l->n_udp; i++) {
		int rc = uv_poll_start(&l->udp[i].poll, UV_READABLE, on_udp_readable);
		if (rc)
			return rc;
		l->udp[i].polling = true;
	}
	for (unsigned i = 0; i < l->n_tcp; i++) {
		int rc =
			uv_listen((uv_stream_t *)&l->tcp[i].handle, RRC_TCP_BACKLOG, on_connection);
		if (rc) {
			rrc_log(RRC_LOG_ERR, RRC_LG_LISTEN, "listen: %s", uv_strerror(rc));
			return rc;
		}
	}
	return 0;
}

static void close_tcp_listeners(struct rrc_listeners *l)
{
	for (unsigned i = 0; i < l->n_tcp; i++) {
		uv_handle_t *h = (uv_handle_t *)&l->tcp[i].handle;
		if (!uv_is_closing(h)) {
			h->data = l;
			l->closes++;
			uv_close(h, on_set_handle_closed);
		}
	}
}

void rrc_listeners_stop_accepting(struct rrc_listeners *l)
{
	for (unsigned i = 0; i < l->n_udp; i++)
		if (l->udp[i].fd >= 0)
			udp_leave_and_drain(&l->udp[i]);
	l->stopping = true;
	for (unsigned i = 0; i < l->n_udp; i++) {
		if (l->udp[i].polling) {
			uv_poll_stop(&l->udp[i].poll);
			l->udp[i].polling = false;
		}
	}
	close_tcp_listeners(l);
	struct conn *c = l->conns;
	while (c) {
		struct conn *next = c->next;
		stop_reading(c);
		if (c->shutting)
			conn_close(c); /* no lingering while rrcache stops */
		else
			conn_maybe_finish(c);
		c = next;
	}
}

unsigned rrc_listeners_open(const struct rrc_listeners *l)
{
	return l->n_conns;
}

void rrc_listeners_close(struct rrc_listeners *l)
{
	if (!l || l->closing)
		return;
	l->stopping = true;
	flush_all_deferred(l); /* the last SERVFAILs of a shutdown among them */
	if (l->flush_init) {
		l->closes += 2;
		uv_close((uv_handle_t *)&l->flush, on_set_handle_closed);
		uv_close((uv_handle_t *)&l->flush_late, on_set_handle_closed);
	}
	for (unsigned i = 0; i < l->n_udp; i++) {
		l->closes++;
		uv_close((uv_handle_t *)&l->udp[i].poll, on_udp_poll_closed);
	}
	close_tcp_listeners(l);
	while (l->conns)
		conn_close(l->conns);
	l->closing = true;
	maybe_free_set(l);
}
