/*
 * msg: ldns on the miss path. See include/rrcache/msg.h.
 *
 * ldns costs about 13 mallocs to parse a query and 58 for a typical reply (measured), so it is
 * never called for a cache hit. Packets are never printed with ldns_pkt2str (it crashes on an
 * empty EDNS CHAIN option in ldns 1.8.3).
 */
#include "rrcache/msg.h"
#include "rrcache/wire.h"

#include <errno.h>
#include <ldns/ldns.h>
#include <stdlib.h>
#include <string.h>

int rrc_msg_check_reply(const uint8_t *pkt, size_t len)
{
	ldns_pkt *p = NULL;
	if (ldns_wire2pkt(&p, pkt, len) != LDNS_STATUS_OK || !p)
		return -EPROTO;
	int rc = ldns_pkt_qr(p) && ldns_pkt_qdcount(p) == 1 ? 0 : -EPROTO;
	ldns_pkt_free(p);
	return rc;
}

size_t rrc_msg_build_probe(uint16_t id, uint8_t *out, size_t cap)
{
	static const uint8_t root = 0;
	return rrc_wire_build_query(out, cap, id, &root, 1, 2 /* NS */, 1 /* IN */, 0, false,
				    false);
}

int rrc_msg_name_from_text(const char *text, uint8_t *out, size_t *len)
{
	ldns_rdf *dname = NULL;
	if (ldns_str2rdf_dname(&dname, text) != LDNS_STATUS_OK || !dname)
		return -EINVAL;
	ldns_dname2canonical(dname);
	size_t n = ldns_rdf_size(dname);
	int rc = n <= RRC_WIRE_MAX_NAME ? 0 : -EINVAL;
	if (rc == 0) {
		memcpy(out, ldns_rdf_data(dname), n);
		*len = n;
	}
	ldns_rdf_deep_free(dname);
	return rc;
}

/* Leaves in one section only the records a client without DO may get; the others are freed.
 * Returns how many stay, or -1 out of memory (the packet is then only fit to be freed). */
static int keep_asked(ldns_pkt *p, ldns_rr_list *l, int section, uint16_t qtype,
		      void (*set)(ldns_pkt *, ldns_rr_list *))
{
	ldns_rr_list *keep = ldns_rr_list_new();
	if (!keep)
		return -1;
	size_t n = ldns_rr_list_rr_count(l);
	bool ok = true;
	for (size_t i = 0; i < n; i++) {
		ldns_rr *rr = ldns_rr_list_rr(l, i);
		bool drop = rrc_wire_dnssec_unasked((uint16_t)ldns_rr_get_type(rr), section, qtype);
		if (!drop && ok && ldns_rr_list_push_rr(keep, rr))
			continue;
		ok = ok && drop;
		ldns_rr_free(rr);
	}
	ldns_rr_list_free(l); /* the list only: every record moved or was freed */
	set(p, keep);
	return ok ? (int)ldns_rr_list_rr_count(keep) : -1;
}

size_t rrc_msg_strip_dnssec(uint8_t *pkt, size_t len)
{
	ldns_pkt *p = NULL;
	if (len < RRC_WIRE_HDR || ldns_wire2pkt(&p, pkt, len) != LDNS_STATUS_OK || !p)
		return 0;
	uint16_t qtype = 0;
	if (ldns_rr_list_rr_count(ldns_pkt_question(p)) == 1)
		qtype = (uint16_t)ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_question(p), 0));
	size_t before = ldns_rr_list_rr_count(ldns_pkt_answer(p)) +
			ldns_rr_list_rr_count(ldns_pkt_authority(p)) +
			ldns_rr_list_rr_count(ldns_pkt_additional(p));
	int an = keep_asked(p, ldns_pkt_answer(p), 0, qtype, ldns_pkt_set_answer);
	int ns = keep_asked(p, ldns_pkt_authority(p), 1, qtype, ldns_pkt_set_authority);
	int ar = keep_asked(p, ldns_pkt_additional(p), 2, qtype, ldns_pkt_set_additional);
	size_t out = 0;
	uint8_t *wire = NULL;
	size_t wlen = 0;
	if (an >= 0 && ns >= 0 && ar >= 0 && (size_t)(an + ns + ar) < before) {
		ldns_pkt_set_ancount(p, (uint16_t)an);
		ldns_pkt_set_nscount(p, (uint16_t)ns);
		ldns_pkt_set_arcount(p, (uint16_t)ar);
		if (ldns_pkt2wire(&wire, p, &wlen) == LDNS_STATUS_OK && wire && wlen <= len) {
			memcpy(pkt, wire, wlen);
			out = wlen;
		}
	}
	free(wire);
	ldns_pkt_free(p);
	return out;
}
