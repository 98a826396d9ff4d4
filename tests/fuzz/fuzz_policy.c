/*
 * libFuzzer target for the domain list parser: any line gives rules, nothing, or a reason;
 * every rule's name is a well-formed, lowercased wire name of at most 255 bytes, no more rules
 * than room; and a rule's name, checked against a matcher built from it, decides (the parse
 * and the matcher agree on the name's form).
 */
#include "rrcache/policy.h"
#include "rrcache/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	struct rrc_policy_rule rules[4];
	size_t n = 99;
	const char *why = NULL;
	enum rrc_policy_line r =
		rrc_policy_parse_line((const char *)data, size, rules, 4, &n, &why);
	if (r == RRC_PL_BAD && (!why || n != 0))
		abort();
	if (r == RRC_PL_NONE && n != 0)
		abort();
	if (r != RRC_PL_RULE)
		return 0;
	if (n == 0 || n > 4)
		abort();
	for (size_t i = 0; i < n; i++) {
		size_t end, nlen;
		if (rules[i].name_len > RRC_WIRE_MAX_NAME ||
		    rrc_wire_name(rules[i].name, rules[i].name_len, 0, &end, &nlen, NULL) != 0 ||
		    end != rules[i].name_len || nlen != rules[i].name_len)
			abort();
		for (size_t k = 0; k < rules[i].name_len; k++)
			if (rules[i].name[k] >= 'A' && rules[i].name[k] <= 'Z')
				abort();
		if (rules[i].kind > RRC_PK_BELOW)
			abort();
	}
	/* The first rule, as a one-line list: its own name is decided by it (BELOW rules: a name
	 * one label below). */
	static char path[] = "/tmp/rrc-fuzz-policy-XXXXXX";
	static int fd = -1;
	if (fd < 0 && (fd = mkstemp(path)) < 0)
		abort();
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	const char *lists[] = {path};
	char err[RRC_ERR_LEN];
	struct rrc_policy *p = rrc_policy_load(lists, 1, NULL, 0, NULL, 0, err);
	if (!p)
		abort();
	uint8_t q[RRC_WIRE_MAX_NAME + 2];
	size_t qlen = rules[0].name_len;
	memcpy(q, rules[0].name, qlen);
	if (rules[0].kind == RRC_PK_BELOW) {
		if (qlen + 2 > RRC_WIRE_MAX_NAME) {
			rrc_policy_put(p);
			return 0;
		}
		memmove(q + 2, q, qlen);
		q[0] = 1;
		q[1] = 'x';
		qlen += 2;
	}
	unsigned list;
	enum rrc_policy_verdict v = rrc_policy_check(p, q, qlen, ~(uint64_t)0, &list);
	if (v == RRC_PV_PASS || list != 0)
		abort();
	if (v != (rules[0].allow ? RRC_PV_ALLOW : RRC_PV_BLOCK))
		abort();
	rrc_policy_put(p);
	return 0;
}
