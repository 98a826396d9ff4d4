/*
 * tls: a client and a server session connected through memory. The handshake, data both
 * ways, ALPN, resumption with a ticket, and every way verification refuses a server: another
 * CA, another name, a pin that does not match; insecure accepts them. Certificates of
 * tests/unit/tls (README there).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rrcache/tls.h"

#define CA RRC_TLS_DIR "/ca.pem"
#define CERT RRC_TLS_DIR "/server.pem"
#define KEY RRC_TLS_DIR "/server.key"
#define OTHER_CERT RRC_TLS_DIR "/other.pem"
#define OTHER_KEY RRC_TLS_DIR "/other.key"

/* Moves what a wrote to b. */
static void carry(struct rrc_tls *a, struct rrc_tls *b)
{
	uint8_t *out;
	size_t n = rrc_tls_take_output(a, &out);
	if (n) {
		assert_int_equal(rrc_tls_feed(b, out, n), 0);
		free(out);
	}
}

/* Runs both handshakes until neither moves; returns the client's status. */
static enum rrc_tls_status connect_pair(struct rrc_tls *c, struct rrc_tls *s)
{
	enum rrc_tls_status cs = RRC_TLS_AGAIN, ss = RRC_TLS_AGAIN;
	for (int i = 0; i < 20; i++) {
		cs = rrc_tls_handshake(c);
		carry(c, s);
		ss = rrc_tls_handshake(s);
		carry(s, c);
		if ((cs == RRC_TLS_OK && ss == RRC_TLS_OK) || cs == RRC_TLS_ERROR ||
		    ss == RRC_TLS_ERROR)
			break;
	}
	if (cs == RRC_TLS_OK)
		cs = rrc_tls_handshake(c);
	return cs;
}

static struct rrc_tls *client(struct rrc_tls_creds *cc, const char *name, const uint8_t *session,
			      size_t session_len)
{
	char err[RRC_ERR_LEN];
	struct rrc_tls_client_opts o = {
		.name = name, .alpn = "dot", .session = session, .session_len = session_len};
	struct rrc_tls *c = rrc_tls_client(cc, &o, err);
	assert_non_null(c);
	return c;
}

static struct rrc_tls *server(struct rrc_tls_creds *sc)
{
	char err[RRC_ERR_LEN];
	static const char *const alpn[] = {"dot", NULL};
	struct rrc_tls *s = rrc_tls_server(sc, alpn, err);
	assert_non_null(s);
	return s;
}

/* Sends text from a to b and checks it arrives whole. */
static void exchange(struct rrc_tls *a, struct rrc_tls *b, const char *text)
{
	assert_int_equal(rrc_tls_write(a, (const uint8_t *)text, strlen(text)), RRC_TLS_OK);
	carry(a, b);
	uint8_t buf[256];
	size_t got = 0, total = 0;
	while (rrc_tls_read(b, buf + total, sizeof(buf) - total, &got) == RRC_TLS_OK)
		total += got;
	assert_int_equal(total, strlen(text));
	assert_memory_equal(buf, text, total);
}

static void test_handshake_data_resume(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_tls_creds *cc = rrc_tls_client_creds(CA, false, err);
	struct rrc_tls_creds *sc = rrc_tls_server_creds(CERT, KEY, err);
	assert_non_null(cc);
	assert_non_null(sc);
	uint8_t ticket[RRC_TLS_SESSION_MAX];
	size_t tlen = 0;
	/* By name, then by IP address (the certificate has both). */
	const char *names[] = {"dot.test", "127.0.0.1"};
	for (int i = 0; i < 2; i++) {
		struct rrc_tls *c = client(cc, names[i], NULL, 0), *s = server(sc);
		assert_false(rrc_tls_ready(c));
		assert_int_equal(connect_pair(c, s), RRC_TLS_OK);
		assert_true(rrc_tls_ready(c) && rrc_tls_ready(s));
		assert_string_equal(rrc_tls_version(c), "TLS1.3");
		char alpn[16];
		assert_int_equal(rrc_tls_alpn(c, alpn, sizeof(alpn)), 3);
		assert_string_equal(alpn, "dot");
		assert_false(rrc_tls_resumed(c));
		/* No ticket before data came back over TLS 1.3. */
		exchange(c, s, "a query");
		exchange(s, c, "its answer, and the ticket before it");
		tlen = rrc_tls_session(c, ticket, sizeof(ticket));
		assert_true(tlen > 0);
		/* The end: the peer sees CLOSED. */
		rrc_tls_bye(c);
		carry(c, s);
		uint8_t buf[16];
		size_t got;
		assert_int_equal(rrc_tls_read(s, buf, sizeof(buf), &got), RRC_TLS_CLOSED);
		rrc_tls_free(c);
		rrc_tls_free(s);
	}
	/* Resumed with the ticket: no certificate exchange. */
	struct rrc_tls *c = client(cc, "dot.test", ticket, tlen), *s = server(sc);
	assert_int_equal(connect_pair(c, s), RRC_TLS_OK);
	assert_true(rrc_tls_resumed(c));
	exchange(c, s, "again");
	rrc_tls_free(c);
	rrc_tls_free(s);
	/* A ticket of garbage is no error: a full handshake. */
	memset(ticket, 0x5a, 100);
	c = rrc_tls_client(cc,
			   &(struct rrc_tls_client_opts){
				   .name = "dot.test", .session = ticket, .session_len = 100},
			   err);
	assert_non_null(c);
	s = server(sc);
	assert_int_equal(connect_pair(c, s), RRC_TLS_OK);
	assert_false(rrc_tls_resumed(c));
	rrc_tls_free(s);
	rrc_tls_free(c);
	rrc_tls_creds_unref(cc);
	rrc_tls_creds_unref(sc);
}

static void refused(struct rrc_tls_creds *cc, struct rrc_tls_creds *sc, const char *name,
		    const struct rrc_tls_client_opts *extra, const char *why)
{
	char err[RRC_ERR_LEN];
	struct rrc_tls_client_opts o = extra ? *extra : (struct rrc_tls_client_opts){0};
	o.name = name;
	struct rrc_tls *c = rrc_tls_client(cc, &o, err), *s = server(sc);
	assert_non_null(c);
	assert_int_equal(connect_pair(c, s), RRC_TLS_ERROR);
	assert_false(rrc_tls_ready(c));
	if (!strstr(rrc_tls_error(c), why))
		fail_msg("\"%s\" does not say \"%s\"", rrc_tls_error(c), why);
	assert_int_equal(rrc_tls_write(c, (const uint8_t *)"x", 1), RRC_TLS_ERROR);
	rrc_tls_free(c);
	rrc_tls_free(s);
}

static void test_verification_refuses(void **state)
{
	char err[RRC_ERR_LEN];
	struct rrc_tls_creds *cc = rrc_tls_client_creds(CA, false, err);
	struct rrc_tls_creds *sc = rrc_tls_server_creds(CERT, KEY, err);
	struct rrc_tls_creds *other = rrc_tls_server_creds(OTHER_CERT, OTHER_KEY, err);
	assert_non_null(other);
	/* Another name than the certificate's; another address. */
	refused(cc, sc, "evil.test", NULL, "does not match");
	refused(cc, sc, "127.0.0.2", NULL, "does not match");
	/* A certificate of a CA the client does not trust. */
	refused(cc, other, "dot.test", NULL, "issuer is unknown");
	/* A pin of another key. */
	uint8_t pins[1][RRC_TLS_PIN_LEN];
	memset(pins, 7, sizeof(pins));
	struct rrc_tls_client_opts o = {.pins = pins, .n_pins = 1};
	refused(cc, sc, "dot.test", &o, "pin");
	/* Insecure: anything goes, even with no name. */
	struct rrc_tls_creds *any = rrc_tls_client_creds(NULL, true, err);
	assert_non_null(any);
	struct rrc_tls *c = client(any, "evil.test", NULL, 0), *s = server(other);
	assert_int_equal(connect_pair(c, s), RRC_TLS_OK);
	rrc_tls_free(c);
	rrc_tls_free(s);
	rrc_tls_creds_unref(any);
	rrc_tls_creds_unref(other);
	rrc_tls_creds_unref(cc);
	rrc_tls_creds_unref(sc);
}

/* The pin of the server's key (openssl's SPKI SHA-256 in base64, README) matches. */
static void test_pin_matches(void **state)
{
	char err[RRC_ERR_LEN];
	FILE *f = fopen(RRC_TLS_DIR "/server.pin", "r");
	assert_non_null(f);
	char text[128] = {0};
	assert_non_null(fgets(text, sizeof(text), f));
	fclose(f);
	text[strcspn(text, "\r\n")] = 0;
	uint8_t pins[2][RRC_TLS_PIN_LEN];
	memset(pins[0], 1, RRC_TLS_PIN_LEN);
	assert_int_equal(rrc_tls_pin_parse(text, pins[1]), 0);
	assert_int_equal(rrc_tls_pin_parse("not base64!", pins[0]), -EINVAL);
	assert_int_equal(rrc_tls_pin_parse("c2hvcnQ=", pins[0]), -EINVAL);
	memset(pins[0], 1, RRC_TLS_PIN_LEN);
	struct rrc_tls_creds *cc = rrc_tls_client_creds(CA, false, err);
	struct rrc_tls_creds *sc = rrc_tls_server_creds(CERT, KEY, err);
	struct rrc_tls_client_opts o = {.name = "dot.test", .pins = pins, .n_pins = 2};
	struct rrc_tls *c = rrc_tls_client(cc, &o, err), *s = server(sc);
	assert_int_equal(connect_pair(c, s), RRC_TLS_OK);
	exchange(c, s, "pinned");
	rrc_tls_free(c);
	rrc_tls_free(s);
	rrc_tls_creds_unref(cc);
	rrc_tls_creds_unref(sc);
}

static void test_bad_files_and_garbage(void **state)
{
	char err[RRC_ERR_LEN];
	assert_null(rrc_tls_client_creds("/nonexistent/ca.pem", false, err));
	assert_non_null(strstr(err, "/nonexistent/ca.pem"));
	assert_null(rrc_tls_server_creds(CERT, OTHER_KEY, err)); /* key of another cert */
	assert_null(rrc_tls_server_creds("/nonexistent/c.pem", KEY, err));
	/* A server fed garbage fails, and says so. */
	struct rrc_tls_creds *sc = rrc_tls_server_creds(CERT, KEY, err);
	struct rrc_tls *s = server(sc);
	uint8_t junk[300];
	memset(junk, 0x16, sizeof(junk));
	assert_int_equal(rrc_tls_feed(s, junk, sizeof(junk)), 0);
	assert_int_equal(rrc_tls_handshake(s), RRC_TLS_ERROR);
	assert_string_not_equal(rrc_tls_error(s), "no error");
	rrc_tls_free(s);
	rrc_tls_creds_unref(sc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_data_resume),
		cmocka_unit_test(test_verification_refuses),
		cmocka_unit_test(test_pin_matches),
		cmocka_unit_test(test_bad_files_and_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
