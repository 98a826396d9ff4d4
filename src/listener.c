/*
 * listener: UDP (recvmmsg/sendmmsg on our own sockets) and TCP (RFC 7766) front end.
 * See include/rrcache/listener.h.
 */
#include "rrcache/listener.h"
#include "rrcache/dnstap.h"
#include "rrcache/log.h"
#include "rrcache/query.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* First read buffer of a TCP connection; grows to the largest frame it must hold. */
#define RRC_TCP_RBUF_INITIAL 4096

/* ---- sockets ---- */

static int open_socket(const struct rrc_sockaddr *a, int type, char *err)
{
	char name[64];
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
	bool wildcard = family == AF_INET6 ? IN6_IS_ADDR_UNSPECIFIED(&a->sin6.sin6_addr)
					   : a->sin.sin_addr.s_addr == htonl(INADDR_ANY);
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
fail:
	snprintf(err, RRC_ERR_LEN, "cannot listen on %s/%s: %s", name,
		 type == SOCK_DGRAM ? "udp" : "tcp", strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

int rrc_listener_open(struct rrc_worker *w, const struct rrc_config *cfg, char err[RRC_ERR_LEN])
{
	uv_check_init(&w->loop, &w->flush);
	w->flush.data = w;
	w->flush_ready = true;
	w->udp = calloc(cfg->n_listen, sizeof(*w->udp));
	w->tcp = calloc(cfg->n_listen, sizeof(*w->tcp));
	if (!w->udp || !w->tcp) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		struct rrc_udp_listener *ul = &w->udp[i];
		ul->w = w;
		ul->family = cfg->listen[i].sa.sa_family;
		ul->deferred = calloc(1, sizeof(*ul->deferred));
		if (!ul->deferred) {
			snprintf(err, RRC_ERR_LEN, "out of memory");
			return -ENOMEM;
		}
		ul->addr = cfg->listen[i];
		ul->fd = open_socket(&cfg->listen[i], SOCK_DGRAM, err);
		if (ul->fd < 0) {
			free(ul->deferred);
			ul->deferred = NULL;
			return -EADDRNOTAVAIL;
		}
		uv_poll_init_socket(&w->loop, &ul->poll, ul->fd);
		ul->poll.data = ul;
		w->n_udp++;

		struct rrc_tcp_listener *tl = &w->tcp[i];
		tl->w = w;
		int fd = open_socket(&cfg->listen[i], SOCK_STREAM, err);
		if (fd < 0)
			return -EADDRNOTAVAIL;
		uv_tcp_init(&w->loop, &tl->handle);
		tl->handle.data = tl;
		w->n_tcp++;
		if (uv_tcp_open(&tl->handle, fd) != 0) {
			close(fd);
			snprintf(err, RRC_ERR_LEN, "cannot use a TCP socket");
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- accounting ---- */

static inline uint64_t now_us(void)
{
	return uv_hrtime() / 1000;
}

/* Accounts for an answer about to leave (not its latency): its rcode; for NXDOMAIN and
 * SERVFAIL, its name in the top-K; and the query log's CLIENT_RESPONSE when dnstap is on.
 * peer and ul (NULL for TCP) say where it goes and from where; query_us when it came. */
static void account_answer(struct rrc_worker *w, bool tcp, const void *peer,
			   const struct rrc_udp_listener *ul, uint64_t query_us, const uint8_t *ans,
			   size_t len)
{
	if (len < RRC_WIRE_HDR)
		return;
	if (w->tap) {
		struct rrc_dnstap_msg m = {.type = RRC_DT_CLIENT_RESPONSE,
					   .tcp = tcp,
					   .query_addr = peer,
					   .response_addr = ul ? &ul->addr.sa : NULL,
					   .query_time_us = rrc_worker_wall_us(w, query_us),
					   .response_time_us = rrc_worker_wall_us(w, now_us()),
					   .wire = ans,
					   .len = len};
		rrc_worker_tap(w, &m);
	}
	unsigned rcode = ans[3] & 0x0F;
	/* rrcache's own OPT, when there is one, is the last 11 bytes: its TTL's first byte holds
	 * the upper bits of the rcode (BADVERS = 16, RFC 6891 §6.1.3). */
	if (rrc_get16(ans + 10) > 0 && len >= RRC_WIRE_HDR + RRC_WIRE_OPT_LEN &&
	    ans[len - RRC_WIRE_OPT_LEN] == 0 && rrc_get16(ans + len - RRC_WIRE_OPT_LEN + 1) == 41)
		rcode |= (unsigned)ans[len - RRC_WIRE_OPT_LEN + 5] << 4;
	w->st.rcode[rrc_stats_rcode_slot(rcode)]++;
	if ((rcode != RRC_RCODE_NXDOMAIN && rcode != RRC_RCODE_SERVFAIL) || len <= RRC_WIRE_HDR ||
	    !rrc_top_sampled(&w->top))
		return;
	/* The name of the answer's question, lowercased (rrcache wrote it, but it is walked with
	 * the same bounds as any name). */
	uint8_t name[RRC_WIRE_MAX_NAME];
	size_t end, nlen;
	if (rrc_wire_name(ans, len, RRC_WIRE_HDR, &end, &nlen, name) != 0)
		return;
	rrc_top_add(&w->top, rcode == RRC_RCODE_NXDOMAIN ? RRC_TOP_NXDOMAIN : RRC_TOP_SERVFAIL,
		    name, nlen);
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
static void batch_push(struct rrc_udp_batch *b, size_t len, void *peer, socklen_t peer_len,
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
static void send_batch(struct rrc_udp_listener *ul, struct rrc_udp_batch *b)
{
	struct rrc_worker *w = ul->w;
	struct mmsghdr *msgs = b->msg;
	unsigned n = b->n, sent = 0;
	b->n = 0;
	while (sent < n) {
		int r = sendmmsg(ul->fd, msgs + sent, n - sent, 0);
		if (r > 0) {
			sent += (unsigned)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* The socket buffer is full: UDP may drop, the client will retry. */
			w->st.udp_send_dropped += n - sent;
			return;
		}
		/* This one datagram cannot go (e.g. no route back): skip it. */
		w->st.udp_send_dropped++;
		sent++;
	}
}

static void on_udp_readable(uv_poll_t *h, int status, int events)
{
	struct rrc_udp_listener *ul = h->data;
	struct rrc_worker *w = ul->w;
	if (status < 0 || !(events & UV_READABLE))
		return;
	for (int batch = 0; batch < RRC_UDP_BATCHES_PER_EVENT; batch++) {
		for (unsigned i = 0; i < RRC_UDP_BATCH; i++) {
			struct msghdr *mh = &w->rmsg[i].msg_hdr;
			w->riov[i].iov_base = w->rbuf[i];
			w->riov[i].iov_len = RRC_UDP_RECV_MAX;
			mh->msg_name = &w->rpeer[i];
			mh->msg_namelen = sizeof(w->rpeer[i]);
			mh->msg_iov = &w->riov[i];
			mh->msg_iovlen = 1;
			mh->msg_control = w->rctl[i];
			mh->msg_controllen = sizeof(w->rctl[i]);
			mh->msg_flags = 0;
		}
		int n = recvmmsg(ul->fd, w->rmsg, RRC_UDP_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		/* One clock reading per batch: every query of it arrived by now. */
		uint64_t t0 = now_us();
		w->batch_start_us = t0;
		struct rrc_udp_batch *out = &w->send;
		for (int i = 0; i < n; i++) {
			struct msghdr *mh = &w->rmsg[i].msg_hdr;
			if (mh->msg_flags & MSG_TRUNC) {
				w->st.queries_udp++;
				w->st.malformed[RRC_WR_TRUNCATED]++;
				continue;
			}
			struct rrc_pktinfo local;
			read_pktinfo(mh, &local);
			struct rrc_query_src src = {.tcp = false,
						    .ul = ul,
						    .peer = (struct sockaddr *)&w->rpeer[i],
						    .peer_len = mh->msg_namelen,
						    .local = &local};
			size_t len = rrc_query_handle(w, &src, w->rbuf[i], w->rmsg[i].msg_len,
						      out->buf[out->n], RRC_UDP_SEND_MAX);
			if (len) {
				account_answer(w, false, &w->rpeer[i], ul, t0, out->buf[out->n],
					       len);
				batch_push(out, len, &w->rpeer[i], mh->msg_namelen, &local);
			}
		}
		if (out->n) {
			unsigned answered = out->n;
			send_batch(ul, out);
			rrc_hist_add_n(&w->st.latency, now_us() - t0, answered);
		}
		if (n < RRC_UDP_BATCH)
			return;
	}
}

static void flush_deferred(struct rrc_udp_listener *ul)
{
	struct rrc_udp_batch *d = ul->deferred;
	if (d && d->n) {
		if (ul->fd >= 0)
			send_batch(ul, d);
		else
			d->n = 0; /* the socket is gone: nothing can leave */
	}
}

static void flush_all_deferred(struct rrc_worker *w)
{
	for (unsigned i = 0; i < w->n_udp; i++)
		flush_deferred(&w->udp[i]);
	w->deferred_pending = false;
}

static void on_flush(uv_check_t *h)
{
	struct rrc_worker *w = h->data;
	if (w->deferred_pending)
		flush_all_deferred(w);
}

static void udp_answer(struct rrc_worker *w, struct rrc_waiter *wt, const uint8_t *buf, size_t len)
{
	struct rrc_udp_listener *ul = wt->ul;
	struct rrc_udp_batch *d = ul->deferred;
	if (len > RRC_UDP_SEND_MAX) {
		w->st.udp_send_dropped++;
		return;
	}
	unsigned i = d->n;
	memcpy(d->buf[i], buf, len);
	memcpy(&d->peer[i], &wt->peer, RRC_MIN((size_t)wt->peer_len, sizeof(d->peer[i])));
	batch_push(d, len, &d->peer[i], wt->peer_len, &wt->local);
	w->deferred_pending = true;
	if (d->n == RRC_UDP_BATCH)
		flush_deferred(ul);
}

/* ---- TCP ---- */

struct tcp_write {
	uv_write_t req;
	struct rrc_tcp_conn *conn;
	uint8_t data[];
};

static void conn_free_if_unused(struct rrc_tcp_conn *c)
{
	if (c->closing && c->closes == 0 && c->refs == 0) {
		free(c->rbuf);
		free(c);
	}
}

static void on_conn_closed(uv_handle_t *h)
{
	struct rrc_tcp_conn *c = h->data;
	c->closes--;
	conn_free_if_unused(c);
}

/* Takes the connection off the worker's list and closes its handles; it is freed once both
 * have closed and no waiter points at it. */
static void conn_unlink_close(struct rrc_tcp_conn *c)
{
	struct rrc_worker *w = c->w;
	c->closing = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->closes = 2;
	uv_close((uv_handle_t *)&c->handle, on_conn_closed);
	uv_close((uv_handle_t *)&c->idle, on_conn_closed);
}

static void conn_close(struct rrc_tcp_conn *c)
{
	if (c->closing)
		return;
	struct rrc_worker *w = c->w;
	rrc_server_tcp_release(w->server, (struct sockaddr *)&c->peer);
	w->st.tcp_open--;
	conn_unlink_close(c);
	/* A stopping worker may be waiting for its last connection. */
	rrc_worker_check_done(w);
}

/* A connection that will read no more closes once every answer is written. */
static void conn_maybe_finish(struct rrc_tcp_conn *c)
{
	if (!c->closing && c->done_reading && c->pending == 0 && c->writes == 0)
		conn_close(c);
}

static void on_tcp_written(uv_write_t *req, int status)
{
	struct tcp_write *tw = (struct tcp_write *)req;
	struct rrc_tcp_conn *c = tw->conn;
	free(tw);
	c->writes--;
	if (status < 0)
		conn_close(c);
	else
		conn_maybe_finish(c);
	conn_free_if_unused(c);
}

/* Sends one framed message (RFC 1035 §4.2.2); partial writes are libuv's to finish. */
static void tcp_send(struct rrc_tcp_conn *c, const uint8_t *msg, size_t len)
{
	if (c->closing || len == 0 || len > RRC_WIRE_MAX_MSG)
		return;
	struct tcp_write *tw = malloc(sizeof(*tw) + 2 + len);
	if (!tw) {
		conn_close(c);
		return;
	}
	tw->conn = c;
	rrc_put16(tw->data, (uint16_t)len);
	memcpy(tw->data + 2, msg, len);
	uv_buf_t b = uv_buf_init((char *)tw->data, (unsigned)(len + 2));
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

static void on_idle(uv_timer_t *t)
{
	struct rrc_tcp_conn *c = t->data;
	const struct rrc_config *cfg = c->w->cfg->cfg;
	if (c->pending > 0) {
		/* RFC 7766 §6.2.3: idle means no query outstanding. */
		uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
		return;
	}
	c->w->st.tcp_closed_idle++;
	conn_close(c);
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct rrc_tcp_conn *c = h->data;
	size_t need = c->rlen >= 2 ? 2 + (size_t)rrc_get16(c->rbuf) : RRC_TCP_RBUF_INITIAL;
	if (need < RRC_TCP_RBUF_INITIAL)
		need = RRC_TCP_RBUF_INITIAL;
	if (need > c->rcap) {
		uint8_t *nb = realloc(c->rbuf, need);
		if (nb) {
			c->rbuf = nb;
			c->rcap = need;
		}
	}
	buf->base = c->rbuf ? (char *)c->rbuf + c->rlen : NULL;
	buf->len = c->rbuf ? c->rcap - c->rlen : 0;
}

static void stop_reading(struct rrc_tcp_conn *c)
{
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->handle);
		c->reading = false;
	}
	c->done_reading = true;
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct rrc_tcp_conn *c = s->data;
	struct rrc_worker *w = c->w;
	const struct rrc_config *cfg = w->cfg->cfg;
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
	c->rlen += (size_t)nread;
	size_t off = 0;
	while (!c->closing && !c->done_reading && c->rlen - off >= 2) {
		size_t mlen = rrc_get16(c->rbuf + off);
		if (c->rlen - off < 2 + mlen)
			break;
		c->queries++;
		/* RFC 7766 §6.2.3: only a complete message resets the idle timer. */
		uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
		struct rrc_query_src src = {.tcp = true,
					    .peer = (struct sockaddr *)&c->peer,
					    .peer_len = sizeof(c->peer),
					    .conn = c};
		w->batch_start_us = now_us();
		size_t n =
			rrc_query_handle(w, &src, c->rbuf + off + 2, mlen, w->big, sizeof(w->big));
		if (n) {
			account_answer(w, true, &c->peer, NULL, w->batch_start_us, w->big, n);
			tcp_send(c, w->big, n);
			rrc_hist_add(&w->st.latency, now_us() - w->batch_start_us);
		}
		off += 2 + mlen;
		if (c->queries >= cfg->tcp_max_queries)
			stop_reading(c);
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	conn_maybe_finish(c);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct rrc_tcp_listener *tl = server->data;
	struct rrc_worker *w = tl->w;
	const struct rrc_config *cfg = w->cfg->cfg;
	if (status < 0)
		return;
	struct rrc_tcp_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->w = w;
	uv_tcp_init(&w->loop, &c->handle);
	uv_timer_init(&w->loop, &c->idle);
	c->handle.data = c;
	c->idle.data = c;
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	if (uv_accept(server, (uv_stream_t *)&c->handle) != 0) {
		conn_unlink_close(c); /* never admitted: nothing to release */
		return;
	}
	int plen = sizeof(c->peer);
	uv_tcp_getpeername(&c->handle, (struct sockaddr *)&c->peer, &plen);
	if (w->stopping ||
	    !rrc_server_tcp_admit(w->server, (struct sockaddr *)&c->peer, cfg->tcp_max_connections,
				  cfg->tcp_max_per_client)) {
		w->st.tcp_refused_limit++;
		conn_unlink_close(c);
		return;
	}
	w->st.tcp_accepted++;
	w->st.tcp_open++;
	uv_tcp_nodelay(&c->handle, 1);
	uv_timer_start(&c->idle, on_idle, cfg->tcp_idle_timeout_ms, 0);
	if (uv_read_start((uv_stream_t *)&c->handle, on_tcp_alloc, on_tcp_read) != 0) {
		conn_close(c);
		return;
	}
	c->reading = true;
}

/* ---- lifecycle ---- */

int rrc_listener_start(struct rrc_worker *w)
{
	uv_check_start(&w->flush, on_flush);
	for (unsigned i = 0; i < w->n_udp; i++) {
		int rc = uv_poll_start(&w->udp[i].poll, UV_READABLE, on_udp_readable);
		if (rc)
			return rc;
		w->udp[i].polling = true;
	}
	for (unsigned i = 0; i < w->n_tcp; i++) {
		int rc =
			uv_listen((uv_stream_t *)&w->tcp[i].handle, RRC_TCP_BACKLOG, on_connection);
		if (rc) {
			rrc_log(RRC_LOG_ERR, RRC_LG_LISTEN, "listen: %s", uv_strerror(rc));
			return rc;
		}
	}
	return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
	(void)h;
}

void rrc_listener_stop_accepting(struct rrc_worker *w)
{
	for (unsigned i = 0; i < w->n_udp; i++) {
		if (w->udp[i].polling) {
			uv_poll_stop(&w->udp[i].poll);
			w->udp[i].polling = false;
		}
	}
	for (unsigned i = 0; i < w->n_tcp; i++) {
		if (!uv_is_closing((uv_handle_t *)&w->tcp[i].handle))
			uv_close((uv_handle_t *)&w->tcp[i].handle, on_listener_closed);
	}
	struct rrc_tcp_conn *c = w->conns;
	while (c) {
		struct rrc_tcp_conn *next = c->next;
		stop_reading(c);
		conn_maybe_finish(c);
		c = next;
	}
}

static void on_udp_poll_closed(uv_handle_t *h)
{
	struct rrc_udp_listener *ul = h->data;
	close(ul->fd);
	ul->fd = -1;
	free(ul->deferred);
	ul->deferred = NULL;
}

void rrc_listener_close_all(struct rrc_worker *w)
{
	flush_all_deferred(w); /* the last SERVFAILs of a shutdown among them */
	if (w->flush_ready && !uv_is_closing((uv_handle_t *)&w->flush))
		uv_close((uv_handle_t *)&w->flush, on_listener_closed);
	for (unsigned i = 0; i < w->n_udp; i++) {
		if (!uv_is_closing((uv_handle_t *)&w->udp[i].poll))
			uv_close((uv_handle_t *)&w->udp[i].poll, on_udp_poll_closed);
	}
	for (unsigned i = 0; i < w->n_tcp; i++) {
		if (!uv_is_closing((uv_handle_t *)&w->tcp[i].handle))
			uv_close((uv_handle_t *)&w->tcp[i].handle, on_listener_closed);
	}
	while (w->conns)
		conn_close(w->conns);
}

void rrc_listener_answer(struct rrc_worker *w, struct rrc_waiter *wt, const uint8_t *buf,
			 size_t len)
{
	if (len) {
		account_answer(w, wt->tcp, &wt->peer, wt->tcp ? NULL : wt->ul, wt->start_us, buf,
			       len);
		uint64_t t = now_us();
		rrc_hist_add(&w->st.latency, t > wt->start_us ? t - wt->start_us : 0);
	}
	if (!wt->tcp) {
		if (len && wt->ul->fd >= 0 && wt->ul->deferred)
			udp_answer(w, wt, buf, len);
		return;
	}
	struct rrc_tcp_conn *c = wt->conn;
	c->pending--;
	c->refs--;
	if (len)
		tcp_send(c, buf, len);
	conn_maybe_finish(c);
	conn_free_if_unused(c);
}

unsigned rrc_listener_tcp_count(const struct rrc_worker *w)
{
	unsigned n = 0;
	for (const struct rrc_tcp_conn *c = w->conns; c; c = c->next)
		n++;
	return n;
}
