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
