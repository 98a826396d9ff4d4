/*
 * local: answers from rrcache's own data. See include/rrcache/local.h.
 */
#include "rrcache/local.h"
#include "rrcache/wire.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TYPE_CNAME 5
#define TYPE_PTR 12
#define CLASS_IN 1
/* CNAMEs followed inside the local data, at most. */
#define MAX_CHAIN 8
/* RFC 6303 §3: the empty zones' SOA timers; the last is the negative TTL. */
#define EMPTY_REFRESH 604800
#define EMPTY_RETRY 86400
#define EMPTY_EXPIRE 2419200
#define EMPTY_MINIMUM 10800

/* The records of one type at one name: n records, each its RDATA length (2 bytes) and RDATA. */
struct rrset {
	uint16_t type;
	uint8_t source; /* enum rrc_local_source */
	uint32_t ttl;
	uint16_t n;
	size_t len;
	uint8_t *rdata;
};

struct node {
	uint64_t hash;
	uint8_t len;
	uint8_t *name; /* lowercased wire form */
	unsigned n_sets;
	struct rrset *sets; /* none: an empty non-terminal (a name above local data) */
};

struct rrc_local {
	struct node *slots; /* open addressing; hash 0: empty */
	size_t mask, n_nodes, n_names, n_records;
	uint32_t ttl;
	struct rrc_tlds tlds;	 /* of every name with data and of the empty zones */
	struct rrc_route *zones; /* the empty zones, each name's index into zone_names */
	uint8_t **zone_names;
	unsigned n_zones;
};

static const uint64_t local_key[2] = {0x9216D5D98979FB1Bull, 0xD1310BA698DFB5ACull};

static uint64_t name_hash(const uint8_t *name, size_t len)
{
	uint64_t h = rrc_hash64(local_key, name, len);
	return h ? h : 1;
}

struct rrc_local *rrc_local_create(uint32_t ttl)
{
	struct rrc_local *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->slots = calloc(64, sizeof(*l->slots));
	if (!l->slots) {
		free(l);
		return NULL;
	}
	l->mask = 63;
	l->ttl = ttl;
	return l;
}

void rrc_local_destroy(struct rrc_local *l)
{
	if (!l)
		return;
	for (size_t i = 0; i <= l->mask; i++) {
		struct node *nd = &l->slots[i];
		for (unsigned k = 0; k < nd->n_sets; k++)
			free(nd->sets[k].rdata);
		free(nd->sets);
		free(nd->name);
	}
	free(l->slots);
	for (unsigned z = 0; z < l->n_zones; z++)
		free(l->zone_names[z]);
	free(l->zone_names);
	rrc_route_destroy(l->zones);
	free(l);
}

size_t rrc_local_names(const struct rrc_local *l)
{
	return l ? l->n_names : 0;
}

size_t rrc_local_records(const struct rrc_local *l)
{
	return l ? l->n_records : 0;
}

static struct node *slot_of(const struct rrc_local *l, uint64_t h, const uint8_t *name, size_t len)
{
	for (size_t i = h & l->mask;; i = (i + 1) & l->mask) {
		struct node *nd = &l->slots[i];
		if (!nd->hash || (nd->hash == h && nd->len == len && !memcmp(nd->name, name, len)))
			return nd;
	}
}

static const struct node *find(const struct rrc_local *l, const uint8_t *name, size_t len)
{
	if (!l->n_nodes)
		return NULL;
	const struct node *nd = slot_of(l, name_hash(name, len), name, len);
	return nd->hash ? nd : NULL;
}

static int grow(struct rrc_local *l)
{
	size_t cap = (l->mask + 1) * 2;
	struct node *old = l->slots;
	size_t old_cap = l->mask + 1;
	l->slots = calloc(cap, sizeof(*l->slots));
	if (!l->slots) {
		l->slots = old;
		return -ENOMEM;
	}
	l->mask = cap - 1;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].hash)
			*slot_of(l, old[i].hash, old[i].name, old[i].len) = old[i];
	free(old);
	return 0;
}

/* The node of name, made (empty) if missing; NULL when out of memory. */
static struct node *node_get(struct rrc_local *l, const uint8_t *name, size_t len)
{
	if ((l->n_nodes + 1) * 2 > l->mask + 1 && grow(l) != 0)
		return NULL;
	uint64_t h = name_hash(name, len);
	struct node *nd = slot_of(l, h, name, len);
	if (nd->hash)
		return nd;
	uint8_t *copy = malloc(len);
	if (!copy)
		return NULL;
	memcpy(copy, name, len);
	*nd = (struct node){.hash = h, .len = (uint8_t)len, .name = copy};
	l->n_nodes++;
	return nd;
}

static void lower_name(uint8_t *name, size_t len)
{
	for (size_t i = 0; i < len && name[i];) {
		size_t n = name[i];
		for (size_t k = i + 1; k <= i + n && k < len; k++)
			name[k] = (uint8_t)tolower(name[k]);
		i += n + 1;
	}
}

/* Adds one record (owner lowercased wire form). 0, or -ENOMEM. */
static int add_rr(struct rrc_local *l, const uint8_t *owner, size_t olen, uint16_t type,
		  uint32_t ttl, const uint8_t *rdata, size_t rdlen, enum rrc_local_source source)
{
	if (rdlen > 65535)
		return -EINVAL;
	/* The names above it exist too (empty non-terminals): an empty zone answers them NODATA,
	 * not NXDOMAIN (RFC 8020). */
	for (size_t i = olen > 1 ? owner[0] + 1u : olen; i < olen; i += owner[i] + 1u) {
		if (!node_get(l, owner + i, olen - i))
			return -ENOMEM;
		if (owner[i] == 0)
			break;
	}
	struct node *nd = node_get(l, owner, olen);
	if (!nd)
		return -ENOMEM;
	rrc_tlds_add(&l->tlds, owner, olen, true);
	struct rrset *set = NULL;
	for (unsigned k = 0; k < nd->n_sets && !set; k++)
		if (nd->sets[k].type == type)
			set = &nd->sets[k];
	if (!set) {
		struct rrset *sets = realloc(nd->sets, (nd->n_sets + 1) * sizeof(*sets));
		if (!sets)
			return -ENOMEM;
		nd->sets = sets;
		set = &sets[nd->n_sets++];
		*set = (struct rrset){.type = type, .source = (uint8_t)source, .ttl = ttl};
		if (nd->n_sets == 1)
			l->n_names++;
	}
	/* The same record twice is one record (a hosts file listing a name twice). */
	for (size_t off = 0; off < set->len; off += 2 + rrc_get16(set->rdata + off))
		if (rrc_get16(set->rdata + off) == rdlen &&
		    !memcmp(set->rdata + off + 2, rdata, rdlen))
			return 0;
	uint8_t *p = realloc(set->rdata, set->len + 2 + rdlen);
	if (!p)
		return -ENOMEM;
	set->rdata = p;
	rrc_put16(p + set->len, (uint16_t)rdlen);
	memcpy(p + set->len + 2, rdata, rdlen);
	set->len += 2 + rdlen;
	set->n++;
	set->ttl = RRC_MIN(set->ttl, ttl); /* one TTL per RRset (RFC 2181 §5.2) */
	l->n_records++;
	return 0;
}

int rrc_local_add_record(struct rrc_local *l, const char *text, char err[RRC_ERR_LEN])
{
	ldns_rr *rr = NULL;
	ldns_rdf *root = ldns_dname_new_frm_str(".");
	ldns_status st = ldns_rr_new_frm_str(&rr, text, l->ttl, root, NULL);
	ldns_rdf_deep_free(root);
	if (st != LDNS_STATUS_OK || !rr) {
		snprintf(err, RRC_ERR_LEN, "%s", ldns_get_errorstr_by_id(st));
		return -EINVAL;
	}
	int rc = 0;
	uint8_t rdata[65535];
	size_t rdlen = 0;
	if (ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN) {
		snprintf(err, RRC_ERR_LEN, "only class IN");
		rc = -EINVAL;
	} else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA ||
		   ldns_rr_get_type(rr) == LDNS_RR_TYPE_OPT) {
		snprintf(err, RRC_ERR_LEN, "no SOA or OPT in local data");
		rc = -EINVAL;
	}
	for (size_t i = 0; rc == 0 && i < ldns_rr_rd_count(rr); i++) {
		const ldns_rdf *f = ldns_rr_rdf(rr, i);
		size_t n = ldns_rdf_size(f);
		if (rdlen + n > sizeof(rdata)) {
			snprintf(err, RRC_ERR_LEN, "data longer than 65,535 bytes");
			rc = -EINVAL;
			break;
		}
		memcpy(rdata + rdlen, ldns_rdf_data(f), n);
		rdlen += n;
	}
	if (rc == 0) {
		const ldns_rdf *owner = ldns_rr_owner(rr);
		uint8_t name[RRC_WIRE_MAX_NAME];
		size_t olen = ldns_rdf_size(owner);
		if (olen > sizeof(name)) {
			snprintf(err, RRC_ERR_LEN, "owner name too long");
			rc = -EINVAL;
		} else {
			memcpy(name, ldns_rdf_data(owner), olen);
			lower_name(name, olen);
			rc = add_rr(l, name, olen, (uint16_t)ldns_rr_get_type(rr), ldns_rr_ttl(rr),
				    rdata, rdlen, RRC_LOCAL_RECORDS);
			if (rc)
				snprintf(err, RRC_ERR_LEN, "out of memory");
		}
	}
	ldns_rr_free(rr);
	return rc;
}

/* The reverse name of an address (in-addr.arpa or ip6.arpa) in wire form; its length. */
static size_t reverse_name(int family, const uint8_t *a, uint8_t *out)
{
	size_t n = 0;
	if (family == AF_INET) {
		for (int i = 3; i >= 0; i--) {
			char d[4];
			int k = snprintf(d, sizeof(d), "%u", a[i]);
			out[n++] = (uint8_t)k;
			memcpy(out + n, d, (size_t)k);
			n += (size_t)k;
		}
		memcpy(out + n, "\7in-addr\4arpa", 14); /* with the root's 0 */
		return n + 14;
	}
	static const char hex[] = "0123456789abcdef";
	for (int i = 15; i >= 0; i--) {
		out[n++] = 1;
		out[n++] = (uint8_t)hex[a[i] & 15];
		out[n++] = 1;
		out[n++] = (uint8_t)hex[a[i] >> 4];
	}
	memcpy(out + n, "\3ip6\4arpa", 10);
	return n + 10;
}

/* A hosts-file name, qualified when domain is given and it has no dot: into out (wire);
 * returns its length, 0 when it is not a name. */
static size_t host_name(const char *text, const char *domain, bool qualify, uint8_t *out)
{
	char full[600];
	if (qualify)
		snprintf(full, sizeof(full), "%s.%s", text, domain);
	else
		snprintf(full, sizeof(full), "%s", text);
	for (const char *p = full; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return 0;
	ldns_rdf *d = NULL;
	if (ldns_str2rdf_dname(&d, full) != LDNS_STATUS_OK || !d)
		return 0;
	size_t len = ldns_rdf_size(d);
	if (len > RRC_WIRE_MAX_NAME || len < 2) {
		ldns_rdf_deep_free(d);
		return 0;
	}
	memcpy(out, ldns_rdf_data(d), len);
	ldns_rdf_deep_free(d);
	lower_name(out, len);
	return len;
}

int rrc_local_add_hosts(struct rrc_local *l, const char *path, const char *domain,
			unsigned *skipped, char err[RRC_ERR_LEN])
{
	FILE *f = fopen(path, "r");
	if (!f) {
		int e = errno;
		snprintf(err, RRC_ERR_LEN, "%s: %s", path, strerror(e));
		return -e;
	}
	bool has_domain = domain && domain[0];
	char line[4096];
	int names = 0, rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *save = NULL;
		char *addr = strtok_r(line, " \t\r\n", &save);
		if (!addr)
			continue;
		uint8_t a[16];
		int family = strchr(addr, ':') ? AF_INET6 : AF_INET;
		static const uint8_t zero[16];
		if (inet_pton(family, addr, a) != 1) {
			(*skipped)++;
			continue;
		}
		size_t alen = family == AF_INET ? 4 : 16;
		if (!memcmp(a, zero, alen))
			continue; /* 0.0.0.0 / ::: a blocklist's line, not a host */
		const char *first = NULL;
		for (char *n = strtok_r(NULL, " \t\r\n", &save); rc == 0 && n;
		     n = strtok_r(NULL, " \t\r\n", &save)) {
			bool bare = !strchr(n, '.');
			for (int q = 0; q < 1 + (bare && has_domain); q++) {
				uint8_t name[RRC_WIRE_MAX_NAME];
				size_t len = host_name(n, domain, q == 1, name);
				if (!len) {
					(*skipped)++;
					break;
				}
				rc = add_rr(l, name, len,
					    family == AF_INET ? RRC_TYPE_A : RRC_TYPE_AAAA, l->ttl,
					    a, alen, RRC_LOCAL_HOSTS);
				names++;
				if (!first)
					first = n;
			}
		}
		/* The PTR of the address names the line's first name, qualified if it can be. */
		if (rc == 0 && first) {
			uint8_t target[RRC_WIRE_MAX_NAME], rev[RRC_WIRE_MAX_NAME];
			size_t tlen =
				host_name(first, domain, !strchr(first, '.') && has_domain, target);
			size_t rlen = reverse_name(family, a, rev);
			if (tlen)
				rc = add_rr(l, rev, rlen, TYPE_PTR, l->ttl, target, tlen,
					    RRC_LOCAL_HOSTS);
		}
	}
	fclose(f);
	if (rc) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return rc;
	}
	return names;
}

int rrc_local_add_empty_zones(struct rrc_local *l)
{
	/* RFC 6303 §4.1-4.6, RFC 6598's shared space (RFC 7793), RFC 8375. */
	char names[128][80];
	unsigned n = 0;
	snprintf(names[n++], sizeof(names[0]), "10.in-addr.arpa");
	for (int i = 16; i <= 31; i++)
		snprintf(names[n++], sizeof(names[0]), "%d.172.in-addr.arpa", i);
	static const char *const fixed[] = {
		"168.192.in-addr.arpa",
		"0.in-addr.arpa",
		"127.in-addr.arpa",
		"254.169.in-addr.arpa",
		"2.0.192.in-addr.arpa",
		"100.51.198.in-addr.arpa",
		"113.0.203.in-addr.arpa",
		"255.255.255.255.in-addr.arpa",
		"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
		"d.f.ip6.arpa",
		"8.e.f.ip6.arpa",
		"9.e.f.ip6.arpa",
		"a.e.f.ip6.arpa",
		"b.e.f.ip6.arpa",
		"8.b.d.0.1.0.0.2.ip6.arpa",
		"home.arpa"};
	for (size_t i = 0; i < RRC_ARRAY_SIZE(fixed); i++)
		snprintf(names[n++], sizeof(names[0]), "%s", fixed[i]);
	for (int i = 64; i <= 127; i++)
		if (n < RRC_ARRAY_SIZE(names))
			snprintf(names[n++], sizeof(names[0]), "%d.100.in-addr.arpa", i);
	if (!l->zones && !(l->zones = rrc_route_create()))
		return -ENOMEM;
	uint8_t **zn = realloc(l->zone_names, (l->n_zones + n) * sizeof(*zn));
	if (!zn)
		return -ENOMEM;
	l->zone_names = zn;
	for (unsigned i = 0; i < n; i++) {
		uint8_t wire[RRC_WIRE_MAX_NAME];
		size_t len = host_name(names[i], NULL, false, wire);
		uint8_t *copy = malloc(len + 1);
		if (!len || !copy) {
			free(copy);
			return -ENOMEM;
		}
		copy[0] = (uint8_t)len;
		memcpy(copy + 1, wire, len);
		int rc = rrc_route_add(l->zones, wire, len, (uint16_t)l->n_zones);
		if (rc == -EEXIST) {
			free(copy);
			continue;
		}
		if (rc) {
			free(copy);
			return rc;
		}
		l->zone_names[l->n_zones++] = copy;
		rrc_tlds_add(&l->tlds, wire, len, false);
	}
	return 0;
}

/* ---- answers ---- */

struct out {
	uint8_t *p;
	size_t len, cap;
	bool full;
};

static void put(struct out *o, const void *data, size_t n)
{
	if (o->full || o->len + n > o->cap) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->len, data, n);
	o->len += n;
}

static void put16(struct out *o, uint16_t v)
{
	uint8_t b[2];
	rrc_put16(b, v);
	put(o, b, 2);
}

static void put32(struct out *o, uint32_t v)
{
	uint8_t b[4];
	rrc_put32(b, v);
	put(o, b, 4);
}

/* Every record of set, owned by name. Returns how many. */
static unsigned put_set(struct out *o, const uint8_t *name, size_t len, const struct rrset *set)
{
	for (size_t off = 0; off < set->len; off += 2 + rrc_get16(set->rdata + off)) {
		uint16_t rdlen = rrc_get16(set->rdata + off);
		put(o, name, len);
		put16(o, set->type);
		put16(o, CLASS_IN);
		put32(o, set->ttl);
		put16(o, rdlen);
		put(o, set->rdata + off + 2, rdlen);
	}
	return set->n;
}

/* An SOA owned by owner: MNAME the owner, RNAME nobody.invalid. (RFC 6303 §3). */
static void put_soa(struct out *o, const uint8_t *owner, size_t len, uint32_t ttl, uint32_t minimum,
		    bool empty_zone)
{
	static const uint8_t rname[] = "\6nobody\7invalid";
	put(o, owner, len);
	put16(o, RRC_TYPE_SOA);
	put16(o, CLASS_IN);
	put32(o, ttl);
	put16(o, (uint16_t)(len + sizeof(rname) + 20));
	put(o, owner, len);
	put(o, rname, sizeof(rname));
	put32(o, 1);
	put32(o, empty_zone ? EMPTY_REFRESH : ttl);
	put32(o, empty_zone ? EMPTY_RETRY : ttl);
	put32(o, empty_zone ? EMPTY_EXPIRE : ttl);
	put32(o, minimum);
}

static const struct rrset *set_of(const struct node *nd, uint16_t type)
{
	for (unsigned k = 0; k < nd->n_sets; k++)
		if (nd->sets[k].type == type)
			return &nd->sets[k];
	return NULL;
}

size_t rrc_local_answer(const struct rrc_local *l, const uint8_t *qname, size_t qlen,
			uint16_t qtype, uint16_t qclass, const struct rrc_route *pools,
			uint8_t *out, size_t cap, enum rrc_local_source *source)
{
	if (!l || qclass != CLASS_IN || !rrc_tlds_may_have(&l->tlds, qname, qlen))
		return 0;
	const struct node *nd = find(l, qname, qlen);
	bool data = nd && nd->n_sets > 0;
	int zone = -1;
	/* The empty zones are .arpa names only: the last label decides before any lookup. */
	if (!data && l->zones && qlen >= 6 && !memcmp(qname + qlen - 6, "\4arpa", 6)) {
		zone = rrc_route_find(l->zones, qname, qlen, NULL);
		if (zone >= 0 && rrc_route_find(pools, qname, qlen, NULL) > 0)
			zone = -1; /* an upstream pool serves it */
	}
	if (!data && zone < 0)
		return 0;
	struct out o = {.p = out, .cap = cap};
	uint8_t hdr[RRC_WIRE_HDR] = {0};
	put(&o, hdr, sizeof(hdr));
	put(&o, qname, qlen);
	put16(&o, qtype);
	put16(&o, qclass);
	unsigned an = 0, ns = 0, rcode = RRC_RCODE_NOERROR;
	if (!data) {
		/* Under an empty zone: NXDOMAIN, or NODATA for a name above local data. */
		const uint8_t *apex = l->zone_names[zone] + 1;
		size_t alen = l->zone_names[zone][0];
		rcode = nd ? RRC_RCODE_NOERROR : RRC_RCODE_NXDOMAIN;
		put_soa(&o, apex, alen, EMPTY_MINIMUM, EMPTY_MINIMUM, true);
		ns = 1;
		*source = RRC_LOCAL_EMPTY_ZONE;
	} else {
		*source = (enum rrc_local_source)nd->sets[0].source;
		const struct node *cur = nd;
		for (int hops = 0; cur && cur->n_sets; hops++) {
			const struct rrset *set;
			if (qtype == RRC_TYPE_ANY) {
				for (unsigned k = 0; k < cur->n_sets; k++)
					an += put_set(&o, cur->name, cur->len, &cur->sets[k]);
				break;
			}
			if ((set = set_of(cur, qtype))) {
				an += put_set(&o, cur->name, cur->len, set);
				break;
			}
			const struct rrset *cname = set_of(cur, TYPE_CNAME);
			if (cname && hops < MAX_CHAIN && cname->len > 2) {
				an += put_set(&o, cur->name, cur->len, cname);
				uint8_t target[RRC_WIRE_MAX_NAME];
				size_t tlen =
					RRC_MIN((size_t)rrc_get16(cname->rdata), sizeof(target));
				memcpy(target, cname->rdata + 2, tlen);
				lower_name(target, tlen);
				cur = find(l, target, tlen);
				continue;
			}
			if (an == 0) {
				/* NODATA: the name has data, not of this type. */
				put_soa(&o, cur->name, cur->len, l->ttl, l->ttl, false);
				ns = 1;
			}
			break;
		}
	}
	if (o.full)
		return 0;
	rrc_put16(out + 2, (uint16_t)(RRC_F_QR | RRC_F_AA | RRC_F_RA | rcode));
	rrc_put16(out + 4, 1);
	rrc_put16(out + 6, (uint16_t)an);
	rrc_put16(out + 8, (uint16_t)ns);
	rrc_put16(out + 10, 0);
	return o.len;
}
