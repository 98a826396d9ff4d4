/*
 * tls: a TLS session over memory, with GnuTLS. See include/rrcache/tls.h.
 *
 * GnuTLS reads through pull() from the bytes fed, and says EAGAIN when they run out; it
 * writes through push() into an output buffer the owner takes. Nothing here blocks or
 * touches a descriptor.
 */
#include "rrcache/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TLS 1.3 first, 1.2 for peers without it; nothing older (RFC 8996). */
#define RRC_TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

struct rrc_tls_creds {
	_Atomic unsigned refs;
	bool server;
	bool insecure;
	gnutls_certificate_credentials_t cert;
	gnutls_datum_t ticket_key; /* server: encrypts the tickets it hands out */
};

struct rrc_tls {
	gnutls_session_t s;
	struct rrc_tls_creds *creds;
	bool server;
	bool ready;
	bool failed;
	uint8_t *in;
	size_t in_off, in_len, in_cap;
	uint64_t pulled; /* bytes GnuTLS has taken, ever */
	uint8_t *out;
	size_t out_len, out_cap;
	uint8_t pins[RRC_TLS_MAX_PINS][RRC_TLS_PIN_LEN];
	unsigned n_pins;
	char err[192];
};

static void creds_free(struct rrc_tls_creds *c)
{
	if (c->cert)
		gnutls_certificate_free_credentials(c->cert);
	if (c->ticket_key.data)
		gnutls_free(c->ticket_key.data);
	free(c);
}

/* Empty credentials with one reference. NULL with err set when out of memory. */
static struct rrc_tls_creds *creds_new(bool server, char err[RRC_ERR_LEN])
{
	struct rrc_tls_creds *c = calloc(1, sizeof(*c));
	if (!c || gnutls_certificate_allocate_credentials(&c->cert) < 0) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		free(c);
		return NULL;
	}
	atomic_init(&c->refs, 1);
	c->server = server;
	return c;
}

struct rrc_tls_creds *rrc_tls_client_creds(const char *ca_file, bool insecure,
					   char err[RRC_ERR_LEN])
{
	struct rrc_tls_creds *c = creds_new(false, err);
	if (!c)
		return NULL;
	c->insecure = insecure;
	if (insecure)
		return c;
	int n = ca_file && *ca_file ? gnutls_certificate_set_x509_trust_file(c->cert, ca_file,
									     GNUTLS_X509_FMT_PEM)
				    : gnutls_certificate_set_x509_system_trust(c->cert);
	if (n <= 0) {
		snprintf(err, RRC_ERR_LEN, "%.200s: %s",
			 ca_file && *ca_file ? ca_file : "the system's CA certificates",
			 n < 0 ? gnutls_strerror(n) : "no certificate found");
		creds_free(c);
		return NULL;
	}
	return c;
}

struct rrc_tls_creds *rrc_tls_server_creds(const char *cert_file, const char *key_file,
					   char err[RRC_ERR_LEN])
{
	struct rrc_tls_creds *c = creds_new(true, err);
	if (!c)
		return NULL;
	int rc = gnutls_certificate_set_x509_key_file(c->cert, cert_file, key_file,
						      GNUTLS_X509_FMT_PEM);
	if (rc < 0) {
		snprintf(err, RRC_ERR_LEN, "%.150s, %.150s: %s", cert_file, key_file,
			 gnutls_strerror(rc));
		creds_free(c);
		return NULL;
	}
	if (gnutls_session_ticket_key_generate(&c->ticket_key) < 0) {
		snprintf(err, RRC_ERR_LEN, "cannot make a session ticket key");
		creds_free(c);
		return NULL;
	}
	return c;
}

void rrc_tls_creds_ref(struct rrc_tls_creds *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void rrc_tls_creds_unref(struct rrc_tls_creds *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1)
		creds_free(c);
}

static ssize_t push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
	struct rrc_tls *t = p;
	if (t->out_len + len > t->out_cap) {
		size_t cap = t->out_cap ? t->out_cap : 4096;
		while (cap < t->out_len + len)
			cap *= 2;
		uint8_t *n = realloc(t->out, cap);
		if (!n) {
			gnutls_transport_set_errno(t->s, ENOMEM);
			return -1;
		}
		t->out = n;
		t->out_cap = cap;
	}
	memcpy(t->out + t->out_len, data, len);
	t->out_len += len;
	return (ssize_t)len;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
	struct rrc_tls *t = p;
	size_t have = t->in_len - t->in_off;
	if (have == 0) {
		gnutls_transport_set_errno(t->s, EAGAIN);
		return -1;
	}
	size_t n = len < have ? len : have;
	memcpy(data, t->in + t->in_off, n);
	t->in_off += n;
	t->pulled += n;
	if (t->in_off == t->in_len)
		t->in_off = t->in_len = 0;
	return (ssize_t)n;
}

static int pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
	struct rrc_tls *t = p;
	(void)ms;
	return t->in_len > t->in_off ? 1 : 0;
}

static struct rrc_tls *session_new(struct rrc_tls_creds *c, bool server, char err[RRC_ERR_LEN])
{
	struct rrc_tls *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return NULL;
	}
	int rc = gnutls_init(&t->s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK |
					    GNUTLS_NO_SIGNAL);
	if (rc < 0) {
		snprintf(err, RRC_ERR_LEN, "%s", gnutls_strerror(rc));
		free(t);
		return NULL;
	}
	t->server = server;
	t->creds = c;
	rrc_tls_creds_ref(c);
	if ((rc = gnutls_priority_set_direct(t->s, RRC_TLS_PRIORITY, NULL)) < 0 ||
	    (rc = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->cert)) < 0) {
		snprintf(err, RRC_ERR_LEN, "%s", gnutls_strerror(rc));
		rrc_tls_free(t);
		return NULL;
	}
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_push_function(t->s, push);
	gnutls_transport_set_pull_function(t->s, pull);
	gnutls_transport_set_pull_timeout_function(t->s, pull_timeout);
	return t;
}

struct rrc_tls *rrc_tls_client(struct rrc_tls_creds *c, const struct rrc_tls_client_opts *o,
			       char err[RRC_ERR_LEN])
{
	struct rrc_tls *t = session_new(c, false, err);
	if (!t)
		return NULL;
	int rc = 0;
	const char *name = o->name && *o->name ? o->name : NULL;
	uint8_t ip[16];
	bool is_ip =
		name && (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1);
	if (name && !is_ip)
		rc = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, name, strlen(name));
	if (rc == 0 && !c->insecure)
		gnutls_session_set_verify_cert(t->s, name, 0);
	if (rc == 0 && o->alpn) {
		gnutls_datum_t p = {.data = (unsigned char *)o->alpn,
				    .size = (unsigned)strlen(o->alpn)};
		rc = gnutls_alpn_set_protocols(t->s, &p, 1, 0);
	}
	/* A ticket that cannot be used (expired, damaged) only costs a full handshake. */
	if (rc == 0 && o->session && o->session_len)
		(void)gnutls_session_set_data(t->s, o->session, o->session_len);
	if (rc < 0) {
		snprintf(err, RRC_ERR_LEN, "%s", gnutls_strerror(rc));
		rrc_tls_free(t);
		return NULL;
	}
	t->n_pins = o->n_pins < RRC_TLS_MAX_PINS ? o->n_pins : RRC_TLS_MAX_PINS;
	for (unsigned i = 0; i < t->n_pins; i++)
		memcpy(t->pins[i], o->pins[i], RRC_TLS_PIN_LEN);
	return t;
}

struct rrc_tls *rrc_tls_server(struct rrc_tls_creds *c, const char *const *alpn,
			       char err[RRC_ERR_LEN])
{
	struct rrc_tls *t = session_new(c, true, err);
	if (!t)
		return NULL;
	gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_IGNORE);
	int rc = gnutls_session_ticket_enable_server(t->s, &c->ticket_key);
	gnutls_datum_t p[4];
	unsigned n = 0;
	for (; rc == 0 && alpn && alpn[n] && n < 4; n++)
		p[n] = (gnutls_datum_t){.data = (unsigned char *)alpn[n],
					.size = (unsigned)strlen(alpn[n])};
	if (rc == 0 && n)
		rc = gnutls_alpn_set_protocols(t->s, p, n, GNUTLS_ALPN_SERVER_PRECEDENCE);
	if (rc < 0) {
		snprintf(err, RRC_ERR_LEN, "%s", gnutls_strerror(rc));
		rrc_tls_free(t);
		return NULL;
	}
	return t;
}

void rrc_tls_free(struct rrc_tls *t)
{
	if (!t)
		return;
	gnutls_deinit(t->s);
	rrc_tls_creds_unref(t->creds);
	free(t->in);
	free(t->out);
	free(t);
}

int rrc_tls_feed(struct rrc_tls *t, const uint8_t *data, size_t len)
{
	if (t->in_off && t->in_len + len > t->in_cap) {
		memmove(t->in, t->in + t->in_off, t->in_len - t->in_off);
		t->in_len -= t->in_off;
		t->in_off = 0;
	}
	if (t->in_len + len > t->in_cap) {
		size_t cap = t->in_cap ? t->in_cap : 4096;
		while (cap < t->in_len + len)
			cap *= 2;
		uint8_t *n = realloc(t->in, cap);
		if (!n)
			return -ENOMEM;
		t->in = n;
		t->in_cap = cap;
	}
	memcpy(t->in + t->in_len, data, len);
	t->in_len += len;
	return 0;
}

size_t rrc_tls_take_output(struct rrc_tls *t, uint8_t **out)
{
	size_t n = t->out_len;
	*out = n ? t->out : NULL;
	if (n) {
		t->out = NULL;
		t->out_len = t->out_cap = 0;
	}
	return n;
}

static enum rrc_tls_status fail(struct rrc_tls *t, const char *why)
{
	t->failed = true;
	snprintf(t->err, sizeof(t->err), "%s", why);
	return RRC_TLS_ERROR;
}

/* The SPKI of the server's certificate is one of the pins. */
static bool pin_matches(struct rrc_tls *t)
{
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
	if (!certs || n == 0)
		return false;
	gnutls_pubkey_t pk;
	if (gnutls_pubkey_init(&pk) < 0)
		return false;
	gnutls_datum_t spki = {0};
	bool ok = false;
	uint8_t digest[RRC_TLS_PIN_LEN];
	if (gnutls_pubkey_import_x509_raw(pk, &certs[0], GNUTLS_X509_FMT_DER, 0) == 0 &&
	    gnutls_pubkey_export2(pk, GNUTLS_X509_FMT_DER, &spki) == 0 &&
	    gnutls_hash_fast(GNUTLS_DIG_SHA256, spki.data, spki.size, digest) == 0) {
		for (unsigned i = 0; i < t->n_pins && !ok; i++)
			ok = memcmp(digest, t->pins[i], RRC_TLS_PIN_LEN) == 0;
	}
	gnutls_free(spki.data);
	gnutls_pubkey_deinit(pk);
	return ok;
}

enum rrc_tls_status rrc_tls_handshake(struct rrc_tls *t)
{
	if (t->failed)
		return RRC_TLS_ERROR;
	if (t->ready)
		return RRC_TLS_OK;
	for (;;) {
		int rc = gnutls_handshake(t->s);
		if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
			return RRC_TLS_AGAIN;
		if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
			gnutls_datum_t d = {0};
			char why[160] = "certificate not trusted";
			unsigned st = gnutls_session_get_verify_cert_status(t->s);
			if (gnutls_certificate_verification_status_print(st, GNUTLS_CRT_X509, &d,
									 0) == 0) {
				snprintf(why, sizeof(why), "%s", (const char *)d.data);
				gnutls_free(d.data);
			}
			return fail(t, why);
		}
		if (rc < 0 && gnutls_error_is_fatal(rc))
			return fail(t, gnutls_strerror(rc));
		if (rc == 0)
			break;
	}
	if (t->n_pins && !pin_matches(t))
		return fail(t, "the server's public key matches no pin");
	t->ready = true;
	return RRC_TLS_OK;
}

bool rrc_tls_ready(const struct rrc_tls *t)
{
	return t->ready;
}

enum rrc_tls_status rrc_tls_read(struct rrc_tls *t, uint8_t *buf, size_t cap, size_t *got)
{
	*got = 0;
	if (t->failed)
		return RRC_TLS_ERROR;
	for (;;) {
		uint64_t pulled = t->pulled;
		ssize_t n = gnutls_record_recv(t->s, buf, cap);
		if (n > 0) {
			*got = (size_t)n;
			return RRC_TLS_OK;
		}
		if (n == 0)
			return RRC_TLS_CLOSED;
		/* GnuTLS may say "again" after a record it took for itself (a ticket, the end
		 * of the handshake) while bytes fed are still unread: read on while it makes
		 * progress; a record not yet whole is left for the next bytes. */
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
			if (t->pulled != pulled && t->in_len > t->in_off)
				continue;
			return RRC_TLS_AGAIN;
		}
		if (n == GNUTLS_E_PREMATURE_TERMINATION)
			return RRC_TLS_CLOSED;
		if (gnutls_error_is_fatal((int)n))
			return fail(t, gnutls_strerror((int)n));
		/* A warning alert or a post-handshake message: go on. */
	}
}

enum rrc_tls_status rrc_tls_write(struct rrc_tls *t, const uint8_t *data, size_t len)
{
	if (t->failed || !t->ready)
		return RRC_TLS_ERROR;
	while (len) {
		ssize_t n = gnutls_record_send(t->s, data, len);
		if (n < 0) {
			if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
				continue; /* push never refuses, so this is not seen */
			return fail(t, gnutls_strerror((int)n));
		}
		data += n;
		len -= (size_t)n;
	}
	return RRC_TLS_OK;
}

void rrc_tls_bye(struct rrc_tls *t)
{
	if (t->ready && !t->failed)
		gnutls_bye(t->s, GNUTLS_SHUT_WR);
}

const char *rrc_tls_error(const struct rrc_tls *t)
{
	return t->err[0] ? t->err : "no error";
}

bool rrc_tls_resumed(const struct rrc_tls *t)
{
	return t->ready && gnutls_session_is_resumed(t->s);
}

const char *rrc_tls_version(const struct rrc_tls *t)
{
	const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
	return v ? v : "";
}

size_t rrc_tls_alpn(const struct rrc_tls *t, char *out, size_t cap)
{
	gnutls_datum_t p = {0};
	if (cap == 0)
		return 0;
	out[0] = 0;
	if (!t->ready || gnutls_alpn_get_selected_protocol(t->s, &p) != 0 || p.size >= cap)
		return 0;
	memcpy(out, p.data, p.size);
	out[p.size] = 0;
	return p.size;
}

size_t rrc_tls_session(struct rrc_tls *t, uint8_t *out, size_t cap)
{
	if (!t->ready || t->server)
		return 0;
	/* TLS 1.3 hands the ticket over after the handshake: none until it came. */
	if (gnutls_protocol_get_version(t->s) == GNUTLS_TLS1_3 &&
	    !(gnutls_session_get_flags(t->s) & GNUTLS_SFLAGS_SESSION_TICKET))
		return 0;
	gnutls_datum_t d = {0};
	if (gnutls_session_get_data2(t->s, &d) != 0)
		return 0;
	size_t n = d.size <= cap ? d.size : 0;
	if (n)
		memcpy(out, d.data, n);
	gnutls_free(d.data);
	return n;
}

int rrc_tls_pin_parse(const char *text, uint8_t pin[RRC_TLS_PIN_LEN])
{
	gnutls_datum_t in = {.data = (unsigned char *)text, .size = (unsigned)strlen(text)};
	gnutls_datum_t out = {0};
	if (gnutls_base64_decode2(&in, &out) != 0)
		return -EINVAL;
	int rc = out.size == RRC_TLS_PIN_LEN ? 0 : -EINVAL;
	if (rc == 0)
		memcpy(pin, out.data, RRC_TLS_PIN_LEN);
	gnutls_free(out.data);
	return rc;
}
