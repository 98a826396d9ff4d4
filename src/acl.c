/*
 * acl: longest-prefix-match client rules. See include/rrcache/acl.h.
 */
#include "rrcache/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rrc_acl {
	size_t n;
	struct rrc_acl_rule rules[];
};

static bool host_bits_zero(const uint8_t *a, unsigned bytes, unsigned prefix)
{
	for (unsigned bit = prefix; bit < bytes * 8; bit++) {
		if (a[bit / 8] & (0x80 >> (bit % 8)))
			return false;
	}
	return true;
}

int rrc_acl_rule_parse(const char *text, bool allow, struct rrc_acl_rule *r)
{
	char buf[INET6_ADDRSTRLEN + 8];
	if (strlen(text) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, text);
	memset(r, 0, sizeof(*r));
	r->allow = allow;
	char *slash = strchr(buf, '/');
	long prefix = -1;
	if (slash) {
		*slash = '\0';
		char *end;
		if (slash[1] == '\0')
			return -EINVAL;
		prefix = strtol(slash + 1, &end, 10);
		if (*end != '\0' || prefix < 0)
			return -EINVAL;
	}
	if (inet_pton(AF_INET, buf, r->addr) == 1) {
		r->family = AF_INET;
		if (prefix < 0)
			prefix = 32;
		if (prefix > 32)
			return -EINVAL;
	} else if (inet_pton(AF_INET6, buf, r->addr) == 1) {
		r->family = AF_INET6;
		if (prefix < 0)
			prefix = 128;
		if (prefix > 128)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	r->prefix = (uint8_t)prefix;
	if (!host_bits_zero(r->addr, r->family == AF_INET ? 4 : 16, r->prefix))
		return -EINVAL;
	return 0;
}

size_t rrc_acl_default_rules(struct rrc_acl_rule *out, size_t cap)
{
	static const char *const allowed[] = {"127.0.0.0/8",	"10.0.0.0/8",	 "172.16.0.0/12",
					      "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
					      "::1/128",	"fc00::/7",	 "fe80::/10"};
	size_t n = 0;
	for (size_t i = 0; i < RRC_ARRAY_SIZE(allowed) && n < cap; i++) {
		if (rrc_acl_rule_parse(allowed[i], true, &out[n]) == 0)
			n++;
	}
	return n;
}

/* Longest prefix first; on an equal prefix, deny before allow, so that a tie never depends
 * on the order the rules were written in. */
static int by_prefix_desc(const void *a, const void *b)
{
	const struct rrc_acl_rule *x = a, *y = b;
	if (x->prefix != y->prefix)
		return (int)y->prefix - (int)x->prefix;
	return (int)x->allow - (int)y->allow;
}

struct rrc_acl *rrc_acl_create(const struct rrc_acl_rule *rules, size_t n)
{
	struct rrc_acl *acl = malloc(sizeof(*acl) + n * sizeof(rules[0]));
	if (!acl)
		return NULL;
	acl->n = n;
	if (n) {
		memcpy(acl->rules, rules, n * sizeof(rules[0]));
		qsort(acl->rules, n, sizeof(rules[0]), by_prefix_desc);
	}
	return acl;
}

void rrc_acl_destroy(struct rrc_acl *acl)
{
	free(acl);
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;
	if (memcmp(a, net, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xFF << (8 - rest));
	return (a[full] & mask) == (net[full] & mask);
}

/* The address bytes of sa and their family, an IPv4-mapped IPv6 address as IPv4; NULL for
 * another family. */
static const uint8_t *client_addr(const struct sockaddr *sa, int *family)
{
	*family = sa->sa_family;
	if (*family == AF_INET)
		return (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	if (*family != AF_INET6)
		return NULL;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		*family = AF_INET;
		return a6->s6_addr + 12;
	}
	return a6->s6_addr;
}

bool rrc_acl_rule_matches(const struct rrc_acl_rule *r, const struct sockaddr *sa)
{
	int family;
	const uint8_t *addr = client_addr(sa, &family);
	return addr && r->family == family && prefix_match(addr, r->addr, r->prefix);
}

bool rrc_acl_allows(const struct rrc_acl *acl, const struct sockaddr *sa)
{
	int family;
	const uint8_t *addr = client_addr(sa, &family);
	if (!addr)
		return false;
	for (size_t i = 0; i < acl->n; i++) {
		const struct rrc_acl_rule *r = &acl->rules[i];
		if (r->family == family && prefix_match(addr, r->addr, r->prefix))
			return r->allow;
	}
	return false;
}
