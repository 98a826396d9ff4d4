/*
 * local: the answers rrcache gives from its own data, without asking anyone (local.*):
 *
 * - records written in zone-file syntax ("printer.lan. 300 IN A 192.168.1.20"), parsed with
 *   ldns: any type; a CNAME is followed inside the local data;
 * - hosts files ("192.168.1.20 printer nas"): A or AAAA for each name, and the PTR of the
 *   address to the line's first name; a name without a dot is also answered qualified with a
 *   domain (local.domain);
 * - empty zones (RFC 6303 §4: the reverse zones of RFC 1918, RFC 6598, loopback, link-local,
 *   ULA and documentation ranges; RFC 8375's home.arpa): a name under one that no local data
 *   answers is NXDOMAIN (or NODATA above local data), with the zone's SOA, unless an upstream
 *   pool claims the name.
 *
 * Answers are authoritative (AA=1) and written in the form the cache stores (the question
 * lowercased, no OPT, ID 0), so that rrc_wire_finish() gives each client its ID, case, EDNS
 * and size limit as for a cache hit. A name with data but not of the asked type is NODATA
 * with an SOA owned by the name (TTL and MINIMUM the local TTL). Class IN only.
 *
 * Built once with its configuration (on main's thread), then read-only and shared by every
 * thread. Pure: no uv.h.
 */
#ifndef RRCACHE_LOCAL_H
#define RRCACHE_LOCAL_H

#include "rrcache/defs.h"
#include "rrcache/route.h"

struct rrc_local;

/* Where a local answer came from (statistics). */
enum rrc_local_source {
	RRC_LOCAL_RECORDS,
	RRC_LOCAL_HOSTS,
	RRC_LOCAL_EMPTY_ZONE,
	RRC_LOCAL_SOURCES
};

/* Empty data; ttl: the TTL of hosts-file records and of the SOA of a NODATA. NULL when out of
 * memory. */
struct rrc_local *rrc_local_create(uint32_t ttl);
void rrc_local_destroy(struct rrc_local *l);

/* Adds one record in zone-file syntax (owner, optional TTL, optional class IN, type, data;
 * relative names are taken from the root). Returns 0, or -EINVAL with the reason in err
 * (ldns's words, or a class other than IN). */
int rrc_local_add_record(struct rrc_local *l, const char *text, char err[RRC_ERR_LEN]);

/* Adds every name of a hosts file; domain ("" or NULL: none) qualifies names without a dot.
 * Lines that cannot be read are skipped and counted into *skipped; 0.0.0.0 and :: (blocklist
 * lines) are skipped too. Returns the names added (>= 0), or -errno when the file cannot be
 * read (err says why). */
int rrc_local_add_hosts(struct rrc_local *l, const char *path, const char *domain,
			unsigned *skipped, char err[RRC_ERR_LEN]);

/* Adds the empty zones of RFC 6303 §4 and home.arpa. Returns 0 or -ENOMEM. */
int rrc_local_add_empty_zones(struct rrc_local *l);

/*
 * The local answer to a question (qname: lowercased wire form), in stored form into out: its
 * length, or 0 when the name is not local (forward it) or cap is too small. pools: names an
 * upstream pool claims are not answered from an empty zone. *source says where it came from.
 */
size_t rrc_local_answer(const struct rrc_local *l, const uint8_t *qname, size_t qlen,
			uint16_t qtype, uint16_t qclass, const struct rrc_route *pools,
			uint8_t *out, size_t cap, enum rrc_local_source *source);

/* Names with data (records and hosts), and records. */
size_t rrc_local_names(const struct rrc_local *l);
size_t rrc_local_records(const struct rrc_local *l);

#endif
