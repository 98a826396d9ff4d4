/*
 * msg: the only data-path user of ldns. On the miss path only: the full parse of an upstream
 * reply or of a value from Redis (after wire's bounded checks accepted it), reduced to a yes
 * or no (wire has already read the header, question, TTLs and SOA it needs); the health-check
 * probe; and, for the admin flush, a name typed by a person. An ldns_pkt never leaves this
 * file.
 */
#ifndef RRCACHE_MSG_H
#define RRCACHE_MSG_H

#include "rrcache/defs.h"

/*
 * Parses an upstream reply with ldns: every record's RDATA must parse for its type.
 * Returns 0 when ldns accepts it, -EPROTO otherwise. Call only after rrc_wire_check_reply.
 */
int rrc_msg_check_reply(const uint8_t *pkt, size_t len);

/*
 * Removes from a checked reply (len bytes, in place) the DNSSEC records a client without DO
 * must not get (rrc_wire_dnssec_unasked): for an upstream that sends them to a query without
 * DO. The rest is written again by ldns (names compressed) and must fit in len bytes.
 * Returns the new length, or 0 when the reply cannot be rewritten (treat it as malformed).
 */
size_t rrc_msg_strip_dnssec(uint8_t *pkt, size_t len);

/* Builds the health probe ". IN NS" with the given ID and RD=0 into out. Returns its length, 0
 * if cap is too small. */
size_t rrc_msg_build_probe(uint16_t id, uint8_t *out, size_t cap);

/* "www.Example.com" or "www.example.com." -> its lowercased wire form in out (at most
 * RRC_WIRE_MAX_NAME bytes), *len its length. Returns 0, or -EINVAL when it is not a name. */
int rrc_msg_name_from_text(const char *text, uint8_t *out, size_t *len);

#endif
