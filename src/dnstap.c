/*
 * dnstap: the query log. See include/rrcache/dnstap.h.
 *
 * Wire format (dnstap.proto): Dnstap { identity = 1 (bytes), version = 2 (bytes), message = 14
 * (Message), type = 15 (enum: MESSAGE = 1) }; Message { type = 1, socket_family = 2 (INET 1,
 * INET6 2), socket_protocol = 3 (UDP 1, TCP 2), query_address = 4, response_address = 5,
 * query_port = 6, response_port = 7, query_time_sec = 8 (uint64), query_time_nsec = 9
 * (fixed32), query_message = 10, response_time_sec = 12, response_time_nsec = 13 (fixed32),
 * response_message = 14 }.
 */
#include "rrcache/dnstap.h"
#include "rrcache/log.h"

#include <errno.h>
#include <fcntl.h>
#include <fstrm.h>
#include <limits.h>
#include <stdatomic.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static const char content_type[] = "protobuf:dnstap.Dnstap";

/* The file output, written by rrcache rather than by fstrm's own file writer: its lines reach
 * the file at every flush of the I/O thread (at least once a second) instead of waiting in a
 * stdio buffer, and it can move to a new file (log rotation) without losing a frame. */
struct dt_file {
	char path[256];
	int fd;
	atomic_bool reopen; /* set by rrc_dnstap_reopen, acted on by the I/O thread */
};

struct rrc_dnstap {
	struct fstrm_iothr *iothr;
	struct dt_file *file; /* NULL with a socket output; owned by the writer */
	struct fstrm_iothr_queue **queues;
	unsigned n_queues;
	bool wants[RRC_DT_FORWARDER_RESPONSE + 1];
	char identity[256];
};

/* ---- protobuf, by hand ---- */

struct pb {
	uint8_t *p;
	size_t len, cap;
	bool full;
};

static void pb_byte(struct pb *b, uint8_t v)
{
	if (b->len < b->cap)
		b->p[b->len++] = v;
	else
		b->full = true;
}

static void pb_varint(struct pb *b, uint64_t v)
{
	while (v >= 0x80) {
		pb_byte(b, (uint8_t)(v | 0x80));
		v >>= 7;
	}
	pb_byte(b, (uint8_t)v);
}

static void pb_key(struct pb *b, unsigned field, unsigned wire_type)
{
	pb_varint(b, (uint64_t)field << 3 | wire_type);
}

static void pb_uint(struct pb *b, unsigned field, uint64_t v)
{
	pb_key(b, field, 0);
	pb_varint(b, v);
}

static void pb_fixed32(struct pb *b, unsigned field, uint32_t v)
{
	pb_key(b, field, 5);
	for (int i = 0; i < 4; i++)
		pb_byte(b, (uint8_t)(v >> (8 * i)));
}

static void pb_bytes(struct pb *b, unsigned field, const void *data, size_t n)
{
	pb_key(b, field, 2);
	pb_varint(b, n);
	if (b->len + n > b->cap) {
		b->full = true;
		return;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void pb_addr(struct pb *b, unsigned addr_field, unsigned port_field,
		    const struct sockaddr *sa)
{
	if (!sa)
		return;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		pb_bytes(b, addr_field, &in->sin_addr, 4);
		pb_uint(b, port_field, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		pb_bytes(b, addr_field, &in6->sin6_addr, 16);
		pb_uint(b, port_field, ntohs(in6->sin6_port));
	}
}

/* The Message, into b. */
static void encode_message(struct pb *b, const struct rrc_dnstap_msg *m)
{
	const struct sockaddr *any = m->query_addr ? m->query_addr : m->response_addr;
	pb_uint(b, 1, (uint64_t)m->type);
	if (any)
		pb_uint(b, 2, any->sa_family == AF_INET6 ? 2 : 1);
	/* SocketProtocol: UDP 1, TCP 2, DOT 3, DOH 4 (dnstap.proto). */
	pb_uint(b, 3, m->doh ? 4 : m->tls ? 3 : m->tcp ? 2 : 1);
	pb_addr(b, 4, 6, m->query_addr);
	pb_addr(b, 5, 7, m->response_addr);
	bool response = m->type == RRC_DT_CLIENT_RESPONSE || m->type == RRC_DT_FORWARDER_RESPONSE;
	if (m->query_time_us) {
		pb_uint(b, 8, m->query_time_us / 1000000);
		pb_fixed32(b, 9, (uint32_t)(m->query_time_us % 1000000 * 1000));
	}
	if (!response)
		pb_bytes(b, 10, m->wire, m->len);
	if (response && m->response_time_us) {
		pb_uint(b, 12, m->response_time_us / 1000000);
		pb_fixed32(b, 13, (uint32_t)(m->response_time_us % 1000000 * 1000));
	}
	if (response)
		pb_bytes(b, 14, m->wire, m->len);
}

size_t rrc_dnstap_encode(const char *identity, const struct rrc_dnstap_msg *m, uint8_t *out,
			 size_t cap)
{
	static const char version[] = "rrcache " RRC_VERSION;
	struct pb b = {.p = out, .cap = cap};
	pb_bytes(&b, 1, identity, strlen(identity));
	pb_bytes(&b, 2, version, sizeof(version) - 1);
	/* The Message is length-delimited: encode it after room for its key and the longest
	 * length we allow (3 bytes), then move it up against its real header. */
	size_t at = b.len, room = 1 + 3;
	if (b.full || at + room > cap)
		return 0;
	struct pb inner = {.p = out + at + room, .cap = cap - at - room};
	encode_message(&inner, m);
	if (inner.full || inner.len >= (1u << 21))
		return 0;
	size_t mlen = inner.len;
	memmove(out + at + 1 + varint_len(mlen), out + at + room, mlen);
	pb_key(&b, 14, 2);
	pb_varint(&b, mlen);
	b.len += mlen;
	pb_uint(&b, 15, 1); /* Dnstap.Type MESSAGE */
	return b.full ? 0 : b.len;
}

/* ---- the file output ---- */

/* Writes every byte of iov[0..n) (fstrm's writer passes two per frame, up to 256). */
static bool write_all(int fd, const struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, RRC_MIN(n, IOV_MAX));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0 && w > 0) {
			/* The rest of a vector written in part, on its own. */
			const uint8_t *rest = (const uint8_t *)iov->iov_base + w;
			size_t left = iov->iov_len - (size_t)w;
			while (left > 0) {
				ssize_t k = write(fd, rest, left);
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0)
					return false;
				rest += k;
				left -= (size_t)k;
			}
			iov++;
			n--;
		}
	}
	return true;
}

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* A Frame Streams control frame: STOP (3) alone, or START (2) with the content type. */
static bool write_control(int fd, uint32_t type)
{
	uint8_t f[24 + sizeof(content_type)];
	size_t n = 12;
	be32(f, 0); /* escape: a control frame follows */
	be32(f + 8, type);
	if (type == 2) {
		be32(f + 12, 1); /* CONTENT_TYPE field */
		be32(f + 16, sizeof(content_type) - 1);
		memcpy(f + 20, content_type, sizeof(content_type) - 1);
		n = 20 + sizeof(content_type) - 1;
	}
	be32(f + 4, (uint32_t)(n - 8));
	struct iovec v = {f, n};
	return write_all(fd, &v, 1);
}

static fstrm_res file_open(void *obj)
{
	struct dt_file *f = obj;
	f->fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	return f->fd < 0 ? fstrm_res_failure : fstrm_res_success;
}

static fstrm_res file_close(void *obj)
{
	struct dt_file *f = obj;
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	return fstrm_res_success;
}

static fstrm_res file_destroy(void *obj)
{
	free(obj);
	return fstrm_res_success;
}

static fstrm_res file_write(void *obj, const struct iovec *iov, int iovcnt)
{
	struct dt_file *f = obj;
	if (atomic_exchange(&f->reopen, false)) {
		/* Rotation: the old file is ended properly, the new one starts as a file of its
		 * own. If the name cannot be opened, the old file goes on. */
		int fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
		if (fd < 0) {
			rrc_log(RRC_LOG_WARN, RRC_LG_MAIN, "dnstap: cannot reopen %s: %s", f->path,
				strerror(errno));
		} else {
			write_control(f->fd, 3);
			close(f->fd);
			f->fd = fd;
			if (!write_control(fd, 2))
				return fstrm_res_failure;
		}
	}
	return write_all(f->fd, iov, iovcnt) ? fstrm_res_success : fstrm_res_failure;
}

void rrc_dnstap_reopen(struct rrc_dnstap *d)
{
	if (d && d->file)
		atomic_store(&d->file->reopen, true);
}

/* ---- the writer ---- */

struct rrc_dnstap *rrc_dnstap_start(const struct rrc_config *cfg, unsigned n_workers,
				    char err[RRC_ERR_LEN])
{
	const struct rrc_dnstap_conf *dc = &cfg->dnstap;
	struct rrc_dnstap *d = calloc(1, sizeof(*d));
	struct fstrm_writer_options *wopt = fstrm_writer_options_init();
	struct fstrm_iothr_options *iopt = fstrm_iothr_options_init();
	struct fstrm_writer *writer = NULL;
	if (!d || !wopt || !iopt)
		goto oom;
	d->queues = calloc(n_workers, sizeof(*d->queues));
	if (!d->queues)
		goto oom;
	d->n_queues = n_workers;
	d->wants[RRC_DT_CLIENT_QUERY] = dc->client_queries;
	d->wants[RRC_DT_CLIENT_RESPONSE] = dc->client_responses;
	d->wants[RRC_DT_FORWARDER_QUERY] = dc->forwarder_queries;
	d->wants[RRC_DT_FORWARDER_RESPONSE] = dc->forwarder_responses;
	if (dc->identity[0]) {
		snprintf(d->identity, sizeof(d->identity), "%s", dc->identity);
	} else if (gethostname(d->identity, sizeof(d->identity) - 1) != 0) {
		snprintf(d->identity, sizeof(d->identity), "rrcache");
	}
	fstrm_writer_options_add_content_type(wopt, content_type, sizeof(content_type) - 1);
	if (dc->socket[0]) {
		struct fstrm_unix_writer_options *uopt = fstrm_unix_writer_options_init();
		if (!uopt)
			goto oom;
		fstrm_unix_writer_options_set_socket_path(uopt, dc->socket);
		writer = fstrm_unix_writer_init(uopt, wopt);
		fstrm_unix_writer_options_destroy(&uopt);
	} else {
		struct dt_file *f = calloc(1, sizeof(*f));
		struct fstrm_rdwr *rdwr = f ? fstrm_rdwr_init(f) : NULL;
		if (!rdwr) {
			free(f);
			goto oom;
		}
		snprintf(f->path, sizeof(f->path), "%s", dc->file);
		f->fd = -1;
		fstrm_rdwr_set_open(rdwr, file_open);
		fstrm_rdwr_set_close(rdwr, file_close);
		fstrm_rdwr_set_write(rdwr, file_write);
		fstrm_rdwr_set_destroy(rdwr, file_destroy);
		writer = fstrm_writer_init(wopt, &rdwr); /* takes rdwr, and f with it */
		d->file = f;
	}
	if (!writer) {
		snprintf(err, RRC_ERR_LEN, "dnstap: cannot open %.200s",
			 dc->socket[0] ? dc->socket : dc->file);
		goto fail;
	}
	fstrm_iothr_options_set_num_input_queues(iopt, n_workers);
	fstrm_iothr_options_set_input_queue_size(iopt, dc->queue_size);
	fstrm_iothr_options_set_queue_model(iopt, FSTRM_IOTHR_QUEUE_MODEL_SPSC);
	/* What is logged reaches the output within a second, even when little is logged. */
	fstrm_iothr_options_set_flush_timeout(iopt, 1);
	d->iothr = fstrm_iothr_init(iopt, &writer); /* takes the writer */
	if (!d->iothr) {
		snprintf(err, RRC_ERR_LEN, "dnstap: cannot start its I/O thread");
		goto fail;
	}
	for (unsigned i = 0; i < n_workers; i++)
		d->queues[i] = fstrm_iothr_get_input_queue_idx(d->iothr, i);
	fstrm_writer_options_destroy(&wopt);
	fstrm_iothr_options_destroy(&iopt);
	return d;
oom:
	snprintf(err, RRC_ERR_LEN, "out of memory");
fail:
	if (writer)
		fstrm_writer_destroy(&writer);
	if (wopt)
		fstrm_writer_options_destroy(&wopt);
	if (iopt)
		fstrm_iothr_options_destroy(&iopt);
	if (d)
		free(d->queues);
	free(d);
	return NULL;
}

void rrc_dnstap_stop(struct rrc_dnstap *d)
{
	if (!d)
		return;
	fstrm_iothr_destroy(&d->iothr); /* flushes the queues */
	free(d->queues);
	free(d);
}

bool rrc_dnstap_wants(const struct rrc_dnstap *d, enum rrc_dnstap_type type)
{
	return d && type <= RRC_DT_FORWARDER_RESPONSE && d->wants[type];
}

bool rrc_dnstap_log(struct rrc_dnstap *d, unsigned worker, const struct rrc_dnstap_msg *m)
{
	if (worker >= d->n_queues)
		return false;
	size_t cap = 128 + strlen(d->identity) + m->len;
	uint8_t *buf = malloc(cap);
	if (!buf)
		return false;
	size_t n = rrc_dnstap_encode(d->identity, m, buf, cap);
	if (n == 0 || fstrm_iothr_submit(d->iothr, d->queues[worker], buf, n, fstrm_free_wrapper,
					 NULL) != fstrm_res_success) {
		free(buf);
		return false;
	}
	return true;
}

/* ---- one worker's side ---- */

void rrc_tap_init(struct rrc_tap *tap, struct rrc_dnstap *d, unsigned worker,
		  struct rrc_worker_stats *st)
{
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	tap->d = d;
	tap->worker = worker;
	tap->st = st;
	tap->wall_offset_us =
		(int64_t)rt.tv_sec * 1000000 + rt.tv_nsec / 1000 - (int64_t)(uv_hrtime() / 1000);
}

void rrc_tap_log(struct rrc_tap *tap, const struct rrc_dnstap_msg *m)
{
	if (!rrc_tap_wants(tap, m->type))
		return;
	if (rrc_dnstap_log(tap->d, tap->worker, m))
		tap->st->dnstap_sent++;
	else
		tap->st->dnstap_dropped++;
}
