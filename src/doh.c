/*
 * doh: DNS over HTTPS requests and answers over one HTTP/2 session. See include/rrcache/doh.h.
 *
 * nghttp2 parses and writes the frames (and guards against the HTTP/2 floods it knows); this
 * file turns a request's headers and body into a DNS message and an answer into a response.
 * Each stream carries a small struct: the method, whether the path and content type are
 * right, the header bytes so far, the body, and the answer being written.
 */
#include "rrcache/doh.h"
#include "rrcache/wire.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum method { M_OTHER, M_GET, M_POST };

struct stream {
	enum method method;
	bool path_ok;	/* /dns-query */
	bool type_ok;	/* content-type: application/dns-message */
	bool too_large; /* a body over 65,535 bytes */
	bool has_dns;	/* GET: a dns= parameter was found */
	bool bad_dns;	/* GET: it was not base64url */
	bool answered;	/* a response was submitted */
	size_t header_bytes;
	size_t len;
	uint8_t *body; /* GET: the decoded dns=, POST: the body; then the answer */
	size_t sent;   /* of the answer, bytes handed to nghttp2 */
	char max_age[16], length[16];
	struct stream *prev, *next; /* the session's open streams (nghttp2_session_del does not
				       close them through the callback) */
};

struct rrc_doh {
	nghttp2_session *s;
	rrc_doh_query_fn fn;
	void *ctx;
	bool failed;
	struct rrc_doh_refusals *refused; /* the owner's counters */
	struct stream *streams;
};

static const char ok_type[] = "application/dns-message";

long rrc_doh_base64url_decode(const char *text, size_t len, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t n = 0;
	while (len > 0 && text[len - 1] == '=')
		len--;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		int v = c >= 'A' && c <= 'Z'   ? c - 'A'
			: c >= 'a' && c <= 'z' ? c - 'a' + 26
			: c >= '0' && c <= '9' ? c - '0' + 52
			: c == '-'	       ? 62
			: c == '_'	       ? 63
					       : -1;
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= cap)
				return -1;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	/* Leftover bits must be few (not a whole sextet) and zero: a canonical encoding. */
	if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
		return -1;
	return (long)n;
}

static void stream_free(struct rrc_doh *d, struct stream *st)
{
	if (!st)
		return;
	if (st->prev)
		st->prev->next = st->next;
	else
		d->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	free(st->body);
	free(st);
}

/* The dns= parameter of a GET's query string, decoded into the stream's body. */
static void take_dns_param(struct stream *st, const char *q, size_t len)
{
	size_t i = 0;
	while (i < len) {
		size_t end = i;
		while (end < len && q[end] != '&')
			end++;
		if (end - i > 4 && memcmp(q + i, "dns=", 4) == 0 && !st->has_dns) {
			st->has_dns = true;
			size_t b64 = end - i - 4, cap = b64 * 3 / 4 + 3;
			st->body = malloc(cap);
			long n = st->body ? rrc_doh_base64url_decode(
						    q + i + 4, b64, st->body,
						    cap < RRC_WIRE_MAX_MSG ? cap : RRC_WIRE_MAX_MSG)
					  : -1;
			if (n < 0)
				st->bad_dns = true;
			else
				st->len = (size_t)n;
		}
		i = end + 1;
	}
}

static void check_path(struct stream *st, const uint8_t *v, size_t len)
{
	static const char path[] = "/dns-query";
	size_t pl = sizeof(path) - 1;
	if (len < pl || memcmp(v, path, pl) != 0 || (len > pl && v[pl] != '?'))
		return;
	st->path_ok = true;
	if (len > pl + 1)
		take_dns_param(st, (const char *)v + pl + 1, len - pl - 1);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct rrc_doh *d = user;
	struct stream *st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	st->next = d->streams;
	if (d->streams)
		d->streams->prev = st;
	d->streams = st;
	nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
	return 0;
}

static bool name_is(const uint8_t *n, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(n, want, len) == 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	struct stream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
	if (!st || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	st->header_bytes += namelen + valuelen + 32; /* as HPACK counts them (RFC 7541 §4.1) */
	if (st->header_bytes > RRC_DOH_MAX_HEADERS)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
	if (name_is(name, namelen, ":method"))
		st->method = name_is(value, valuelen, "GET")	? M_GET
			     : name_is(value, valuelen, "POST") ? M_POST
								: M_OTHER;
	else if (name_is(name, namelen, ":path"))
		check_path(st, value, valuelen);
	else if (name_is(name, namelen, "content-type"))
		st->type_ok =
			valuelen >= sizeof(ok_type) - 1 &&
			memcmp(value, ok_type, sizeof(ok_type) - 1) == 0 &&
			(valuelen == sizeof(ok_type) - 1 || value[sizeof(ok_type) - 1] == ';');
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
			 size_t len, void *user)
{
	struct stream *st = nghttp2_session_get_stream_user_data(s, stream_id);
	if (!st || st->method != M_POST || st->too_large)
		return 0;
	if (st->len + len > RRC_WIRE_MAX_MSG) {
		st->too_large = true;
		free(st->body);
		st->body = NULL;
		st->len = 0;
		return 0;
	}
	uint8_t *b = realloc(st->body, st->len + len);
	if (!b)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	memcpy(b + st->len, data, len);
	st->body = b;
	st->len += len;
	return 0;
}

static ssize_t read_answer(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len,
			   uint32_t *data_flags, nghttp2_data_source *src, void *user)
{
	struct stream *st = src->ptr;
	size_t n = st->len - st->sent;
	if (n > len)
		n = len;
	memcpy(buf, st->body + st->sent, n);
	st->sent += n;
	if (st->sent == st->len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static int respond_status(struct rrc_doh *d, int32_t stream_id, const char *status)
{
	const nghttp2_nv nv[] = {
		{(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE},
	};
	return nghttp2_submit_response(d->s, stream_id, nv, 1, NULL);
}

/* A request is complete: a DNS message for the owner, or an HTTP error answered here. */
static void request_done(struct rrc_doh *d, int32_t stream_id, struct stream *st)
{
	const char *status = NULL;
	if (!st->path_ok) {
		status = "404";
		d->refused->not_found++;
	} else if (st->method == M_OTHER) {
		status = "405";
		d->refused->bad_method++;
	} else if (st->method == M_POST && !st->type_ok) {
		status = "415";
		d->refused->bad_type++;
	} else if (st->method == M_POST && st->too_large) {
		status = "413";
		d->refused->too_large++;
	} else if ((st->method == M_GET && (!st->has_dns || st->bad_dns)) ||
		   st->len < RRC_WIRE_HDR) {
		status = "400";
		d->refused->bad_request++;
	}
	if (status) {
		st->answered = true;
		respond_status(d, stream_id, status);
		return;
	}
	d->fn(d->ctx, stream_id, st->body, st->len);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
	struct rrc_doh *d = user;
	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	struct stream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
	if (st && !st->answered)
		request_done(d, frame->hd.stream_id, st);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user)
{
	struct stream *st = nghttp2_session_get_stream_user_data(s, stream_id);
	nghttp2_session_set_stream_user_data(s, stream_id, NULL);
	stream_free(user, st);
	return 0;
}

struct rrc_doh *rrc_doh_new(rrc_doh_query_fn fn, void *ctx, struct rrc_doh_refusals *refused)
{
	struct rrc_doh *d = calloc(1, sizeof(*d));
	nghttp2_session_callbacks *cb = NULL;
	if (!d || nghttp2_session_callbacks_new(&cb) != 0) {
		free(d);
		return NULL;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	int rc = nghttp2_session_server_new(&d->s, cb, d);
	nghttp2_session_callbacks_del(cb);
	const nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, RRC_DOH_MAX_STREAMS},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, RRC_DOH_MAX_HEADERS},
	};
	if (rc != 0 || nghttp2_submit_settings(d->s, NGHTTP2_FLAG_NONE, iv, 2) != 0) {
		if (rc == 0)
			nghttp2_session_del(d->s);
		free(d);
		return NULL;
	}
	d->fn = fn;
	d->ctx = ctx;
	d->refused = refused;
	return d;
}

void rrc_doh_free(struct rrc_doh *d)
{
	if (!d)
		return;
	nghttp2_session_del(d->s);
	while (d->streams)
		stream_free(d, d->streams);
	free(d);
}

int rrc_doh_feed(struct rrc_doh *d, const uint8_t *data, size_t len)
{
	if (d->failed)
		return -1;
	ssize_t n = nghttp2_session_mem_recv(d->s, data, len);
	if (n < 0 || (size_t)n != len) {
		d->failed = true;
		return -1;
	}
	return 0;
}

/* The smallest TTL of an answer, as its freshness (RFC 8484 §5.1); 0 when it has none. */
static uint32_t answer_max_age(const uint8_t *msg, size_t len)
{
	struct rrc_wire_reply r;
	if (rrc_wire_check_reply(msg, len, &r) != 0 || r.n_rr == 0)
		return 0;
	return r.min_ttl;
}

int rrc_doh_answer(struct rrc_doh *d, int32_t stream_id, const uint8_t *msg, size_t len)
{
	struct stream *st = nghttp2_session_get_stream_user_data(d->s, stream_id);
	if (!st || st->answered || d->failed)
		return -1;
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return -1;
	memcpy(copy, msg, len);
	free(st->body);
	st->body = copy;
	st->len = len;
	st->sent = 0;
	st->answered = true;
	snprintf(st->length, sizeof(st->length), "%zu", len);
	/* From the copy: msg may be the request's own bytes, freed just above. */
	snprintf(st->max_age, sizeof(st->max_age), "max-age=%u", answer_max_age(copy, len));
	const nghttp2_nv nv[] = {
		{(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)"content-type", (uint8_t *)ok_type, 12, sizeof(ok_type) - 1,
		 NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)"content-length", (uint8_t *)st->length, 14, strlen(st->length),
		 NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)"cache-control", (uint8_t *)st->max_age, 13, strlen(st->max_age),
		 NGHTTP2_NV_FLAG_NONE},
	};
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_answer};
	return nghttp2_submit_response(d->s, stream_id, nv, 4, &prd) == 0 ? 0 : -1;
}

int rrc_doh_flush(struct rrc_doh *d, uint8_t *buf, size_t cap, rrc_doh_write_fn write, void *ctx)
{
	size_t held = 0;
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(d->s, &data);
		if (n < 0) {
			d->failed = true;
			return -1;
		}
		if (n == 0 || held + (size_t)n > cap) {
			if (held && write(ctx, buf, held) != 0)
				return -1;
			held = 0;
		}
		if (n == 0)
			return 0;
		if ((size_t)n > cap) {
			if (write(ctx, data, (size_t)n) != 0)
				return -1;
			continue;
		}
		/* data stays valid only until the next call: keep a copy. */
		memcpy(buf + held, data, (size_t)n);
		held += (size_t)n;
	}
}

bool rrc_doh_done(const struct rrc_doh *d)
{
	return d->failed || (!nghttp2_session_want_read(d->s) && !nghttp2_session_want_write(d->s));
}
