/*
 * libFuzzer target for local data: every line of the input as a zone-file record, the whole
 * input as a hosts file, plus the empty zones; then the first word of every line asked for
 * in several types. A record is taken or refused with a reason; every answer given is a
 * well-formed DNS message (ldns parses it) whose counts match what it holds, within the room
 * given, never more.
 */
#include "rrcache/local.h"
#include "rrcache/msg.h"
#include "rrcache/wire.h"

#include <ldns/ldns.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_answer(const struct rrc_local *l, const uint8_t *q, size_t qlen, uint16_t type,
			 size_t cap)
{
	uint8_t out[4096];
	enum rrc_local_source src;
	size_t n = rrc_local_answer(l, q, qlen, type, 1, NULL, out, cap, &src);
	if (n == 0)
		return;
	if (n > cap || (unsigned)src >= RRC_LOCAL_SOURCES)
		abort();
	ldns_pkt *p = NULL;
	if (ldns_wire2pkt(&p, out, n) != LDNS_STATUS_OK || !p)
		abort();
	if (ldns_pkt_qdcount(p) != 1 || !ldns_pkt_aa(p) || !ldns_pkt_qr(p) ||
	    ldns_rr_list_rr_count(ldns_pkt_answer(p)) != ldns_pkt_ancount(p) ||
	    ldns_pkt_ancount(p) + ldns_pkt_nscount(p) == 0)
		abort();
	ldns_pkt_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	struct rrc_local *l = rrc_local_create(60);
	char err[RRC_ERR_LEN];
	for (char *line = text, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		err[0] = '\0';
		int rc = rrc_local_add_record(l, line, err);
		if (rc != 0 && !err[0])
			abort();
		if (next)
			next[-1] = '\n';
	}
	static char path[] = "/tmp/rrc-fuzz-hosts-XXXXXX";
	static int fd = -1;
	if (fd < 0 && (fd = mkstemp(path)) < 0)
		abort();
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	unsigned skipped = 0;
	if (rrc_local_add_hosts(l, path, "lan", &skipped, err) < 0)
		abort();
	if (rrc_local_add_empty_zones(l) != 0)
		abort();
	static const uint16_t types[] = {1, 28, 5, 12, 15, 16, 33, 255, 6};
	for (char *line = text, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char word[300];
		if (sscanf(line, "%299s", word) == 1) {
			uint8_t q[RRC_WIRE_MAX_NAME];
			size_t qlen;
			for (int w = 0; w < 2; w++) {
				/* The first word, and for a hosts line the second. */
				if (w == 1 && sscanf(line, "%*s %299s", word) != 1)
					break;
				if (rrc_msg_name_from_text(word, q, &qlen) != 0)
					continue;
				for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
					check_answer(l, q, qlen, types[t], 4096);
					check_answer(l, q, qlen, types[t], 64);
				}
			}
		}
	}
	rrc_local_destroy(l);
	free(text);
	return 0;
}
