/*
 * libFuzzer target for DNS over HTTPS requests: the input is what a client sends after the
 * TLS handshake (the HTTP/2 connection preface is put in front, so the fuzzer spends its
 * time on frames). Every DNS message a request yields is answered (an answer of its own
 * length, or a fixed one), and the output is drained, as the connection would write it.
 * Invariants: a message handed out is 12..65,535 bytes; nothing crashes or leaks.
 */
#include "rrcache/doh.h"
#include "rrcache/wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	struct rrc_doh *d;
	unsigned queries;
};

static void on_query(void *ctx, int32_t stream, const uint8_t *msg, size_t len)
{
	struct seen *s = ctx;
	if (len < RRC_WIRE_HDR || len > RRC_WIRE_MAX_MSG || stream <= 0)
		abort();
	s->queries++;
	/* Every other query is answered at once; an answer of the query's own bytes. */
	if (s->queries % 2)
		rrc_doh_answer(s->d, stream, msg, len);
}

static int sink(void *ctx, const uint8_t *data, size_t len)
{
	(void)ctx;
	(void)data;
	return len > 0 ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	struct rrc_doh_refusals refused = {0};
	struct seen s = {0};
	static uint8_t scratch[1024];
	s.d = rrc_doh_new(on_query, &s, &refused);
	if (!s.d)
		return 0;
	rrc_doh_flush(s.d, scratch, sizeof(scratch), sink, NULL);
	if (rrc_doh_feed(s.d, (const uint8_t *)preface, sizeof(preface) - 1) == 0) {
		/* In two pieces, as reads may cut it. */
		size_t half = size / 2;
		if (rrc_doh_feed(s.d, data, half) == 0)
			rrc_doh_feed(s.d, data + half, size - half);
	}
	/* A late answer to stream 1, which may be open, answered, reset or never was. */
	static const uint8_t late[RRC_WIRE_HDR] = {0, 0, 0x81, 0x80};
	rrc_doh_answer(s.d, 1, late, sizeof(late));
	rrc_doh_flush(s.d, scratch, sizeof(scratch), sink, NULL);
	(void)rrc_doh_done(s.d);
	rrc_doh_free(s.d);
	return 0;
}
