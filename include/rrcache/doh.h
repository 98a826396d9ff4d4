/*
 * doh: the HTTP/2 side of DNS over HTTPS (RFC 8484) for one client connection, with nghttp2
 * over memory. Pure: no loop, no socket, no TLS; the connection owner feeds it the plaintext
 * the client sent and writes what it hands back (through the TLS session).
 *
 * Requests: GET /dns-query?dns=BASE64URL and POST /dns-query with a body of type
 * application/dns-message; each DNS message goes to the owner's callback with its stream, and
 * the owner answers it, now or later, with rrc_doh_answer (HTTP 200, application/dns-message,
 * cache-control max-age from the answer's smallest TTL, RFC 8484 §5.1). What is not such a
 * request is answered here: 404 (another path), 405 (another method), 415 (another content
 * type), 413 (a body over 65,535 bytes), 400 (no dns= parameter, bad base64url, a message
 * shorter than a DNS header). A stream whose header block grows past RRC_DOH_MAX_HEADERS
 * bytes is reset. At most RRC_DOH_MAX_STREAMS streams at once (SETTINGS_MAX_CONCURRENT_STREAMS).
 */
#ifndef RRCACHE_DOH_H
#define RRCACHE_DOH_H

#include "rrcache/defs.h"

/* Streams a client may have open at once, and header bytes per request. */
#define RRC_DOH_MAX_STREAMS 100
#define RRC_DOH_MAX_HEADERS 8192

struct rrc_doh;

/* A DNS message of len bytes arrived on stream (valid during the call). */
typedef void (*rrc_doh_query_fn)(void *ctx, int32_t stream, const uint8_t *msg, size_t len);
/* Bytes for the client (valid during the call). Returns 0, or -1 to stop (the connection
 * is failing). */
typedef int (*rrc_doh_write_fn)(void *ctx, const uint8_t *data, size_t len);

/* Requests refused with an HTTP error, by status: 400, 404, 405, 413, 415. */
struct rrc_doh_refusals {
	uint64_t bad_request, not_found, bad_method, too_large, bad_type;
};

/* A server session; its SETTINGS are the first output. Refusals are counted into *refused
 * (the owner's, e.g. a worker's counters). NULL when out of memory. */
struct rrc_doh *rrc_doh_new(rrc_doh_query_fn fn, void *ctx, struct rrc_doh_refusals *refused);
void rrc_doh_free(struct rrc_doh *d);

/* Plaintext from the client. Returns 0, or -1 when the connection must close (a protocol
 * error of the client, which has been told with GOAWAY when possible). */
int rrc_doh_feed(struct rrc_doh *d, const uint8_t *data, size_t len);

/* Answers stream with a DNS message of len bytes. Returns 0, or -1 when the stream is gone
 * (the client reset it) or memory ran out. */
int rrc_doh_answer(struct rrc_doh *d, int32_t stream, const uint8_t *msg, size_t len);

/* Hands what is to be written to write: the session's frames gathered in buf (cap bytes, the
 * caller's scratch space), so that many small frames (a HEADERS and a DATA per answer) make
 * one write, hence one TLS record, rather than one each; a frame larger than cap goes alone.
 * Returns 0, or -1 (write said stop, or a fatal session error). */
int rrc_doh_flush(struct rrc_doh *d, uint8_t *buf, size_t cap, rrc_doh_write_fn write, void *ctx);

/* True when the session has ended (GOAWAY sent and received, or a fatal error) and nothing is
 * left to write: the connection can close. */
bool rrc_doh_done(const struct rrc_doh *d);

/* base64url without padding (RFC 4648 §5, RFC 8484 §4.1) into out (cap bytes). Returns the
 * length, or -1 when text is not base64url or does not fit. '=' padding is tolerated. */
long rrc_doh_base64url_decode(const char *text, size_t len, uint8_t *out, size_t cap);

#endif
