/*
 * tls: a TLS session over memory, with GnuTLS. Pure: no loop, no socket. The owner of a
 * connection gives it the bytes it read (rrc_tls_feed), takes the bytes to write
 * (rrc_tls_take_output) and writes them itself; in between it drives the handshake and reads
 * and writes plaintext. So the TLS layer sits between a stream connection and the DNS
 * framing, and the connection code (libuv) and the framing (frame) stay as they are; the
 * unit tests connect a client and a server session through two buffers.
 *
 * Credentials are shared by many sessions and counted: a client's (the trust store, system
 * CAs or a file, or none with insecure) and a server's (a certificate chain and its key, and
 * the key that encrypts session tickets). A server's credentials are replaced on reload by
 * making new ones: sessions keep the ones they started with.
 *
 * Versions: TLS 1.3, and 1.2 for peers without it. A client verifies the server's chain
 * against its trust store and the name it was given (a DNS name, sent as SNI, or an IP
 * address, checked against the certificate's IP addresses), and, when pins are given, that
 * the SHA-256 of the certificate's public key (SPKI) is one of them (RFC 7858 §4.2).
 */
#ifndef RRCACHE_TLS_H
#define RRCACHE_TLS_H

#include "rrcache/defs.h"

struct rrc_tls_creds;
struct rrc_tls;

/* An SPKI pin: the SHA-256 of a certificate's SubjectPublicKeyInfo. */
#define RRC_TLS_PIN_LEN 32

/* The most plaintext one TLS record carries (RFC 8446 §5.1). */
#define RRC_TLS_RECORD 16384

/* Pins an upstream may have. */
#define RRC_TLS_MAX_PINS 4
/* The largest session ticket kept for resumption. */
#define RRC_TLS_SESSION_MAX 2048

/* Client credentials: ca_file NULL or "" for the system's CAs; insecure: no verification at
 * all (tests only: the caller logs it). NULL with the reason in err. */
struct rrc_tls_creds *rrc_tls_client_creds(const char *ca_file, bool insecure,
					   char err[RRC_ERR_LEN]);

/* Server credentials from a PEM certificate chain and its key. NULL with the reason in err. */
struct rrc_tls_creds *rrc_tls_server_creds(const char *cert_file, const char *key_file,
					   char err[RRC_ERR_LEN]);

void rrc_tls_creds_ref(struct rrc_tls_creds *c);
void rrc_tls_creds_unref(struct rrc_tls_creds *c);

/* What a client session checks and offers. */
struct rrc_tls_client_opts {
	const char *name; /* a DNS name (also SNI) or an IP address; NULL: not checked */
	const char *alpn; /* offered protocol, e.g. "dot"; NULL: none */
	const uint8_t (*pins)[RRC_TLS_PIN_LEN];
	unsigned n_pins;
	const uint8_t *session; /* a ticket from an earlier session, to resume; NULL: none */
	size_t session_len;
};

/* A client session. NULL with the reason in err. */
struct rrc_tls *rrc_tls_client(struct rrc_tls_creds *c, const struct rrc_tls_client_opts *o,
			       char err[RRC_ERR_LEN]);

/* A server session; alpn: the protocols it accepts, in order of preference (NULL-ended), or
 * NULL for none. NULL with the reason in err. */
struct rrc_tls *rrc_tls_server(struct rrc_tls_creds *c, const char *const *alpn,
			       char err[RRC_ERR_LEN]);

void rrc_tls_free(struct rrc_tls *t);

enum rrc_tls_status {
	RRC_TLS_OK = 0, /* done (handshake), or bytes read/written */
	RRC_TLS_AGAIN,	/* more bytes from the peer are needed */
	RRC_TLS_CLOSED, /* the peer ended the session (close_notify) */
	RRC_TLS_ERROR,	/* the session is unusable: rrc_tls_error() says why */
};

/* Bytes read from the connection. Returns 0, or -ENOMEM. */
int rrc_tls_feed(struct rrc_tls *t, const uint8_t *data, size_t len);

/* Takes the bytes to write to the connection: *out is a malloc'd buffer the caller owns and
 * frees once written; returns its length (0: nothing to write, *out NULL). */
size_t rrc_tls_take_output(struct rrc_tls *t, uint8_t **out);

/* Runs the handshake as far as the bytes fed allow. */
enum rrc_tls_status rrc_tls_handshake(struct rrc_tls *t);

/* True once the handshake is done. */
bool rrc_tls_ready(const struct rrc_tls *t);

/* Plaintext from the peer into buf: RRC_TLS_OK with *got > 0, AGAIN when none is complete
 * yet, CLOSED, ERROR. */
enum rrc_tls_status rrc_tls_read(struct rrc_tls *t, uint8_t *buf, size_t cap, size_t *got);

/* Encrypts len bytes of plaintext into the output (after the handshake). */
enum rrc_tls_status rrc_tls_write(struct rrc_tls *t, const uint8_t *data, size_t len);

/* Ends the session: a close_notify into the output. */
void rrc_tls_bye(struct rrc_tls *t);

/* Why the session failed (a verification failure says what did not match). */
const char *rrc_tls_error(const struct rrc_tls *t);

/* After the handshake: whether it resumed an earlier session, the protocol version ("TLS1.3")
 * and the ALPN protocol agreed ("" when none). */
bool rrc_tls_resumed(const struct rrc_tls *t);
const char *rrc_tls_version(const struct rrc_tls *t);
size_t rrc_tls_alpn(const struct rrc_tls *t, char *out, size_t cap);

/* A client's ticket for resuming later (TLS 1.3 sends it after the handshake, so ask once data
 * came back). Returns its length, 0 when there is none (or it is larger than cap). */
size_t rrc_tls_session(struct rrc_tls *t, uint8_t *out, size_t cap);

/* "base64 of 32 bytes" -> a pin. Returns 0, or -EINVAL. */
int rrc_tls_pin_parse(const char *text, uint8_t pin[RRC_TLS_PIN_LEN]);

#endif
