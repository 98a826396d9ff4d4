/*
 * balancer: upstream selection policies. See include/rrcache/balancer.h.
 * Every policy is O(n) in the number of servers, n <= 64.
 */
#include "rrcache/balancer.h"

#include <errno.h>
#include <string.h>

static const char *const names[] = {"round-robin", "first-available", "least-outstanding",
				    "weighted"};

int rrc_balancer_policy_parse(const char *s, enum rrc_balance *p)
{
	for (unsigned i = 0; i < RRC_ARRAY_SIZE(names); i++) {
		if (strcmp(s, names[i]) == 0) {
			*p = (enum rrc_balance)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *rrc_balancer_policy_name(enum rrc_balance p)
{
	return (unsigned)p < RRC_ARRAY_SIZE(names) ? names[p] : "unknown";
}

static inline bool eligible(const struct rrc_balancer_server *s, unsigned i, uint64_t exclude)
{
	return s[i].up && !(exclude & (1ULL << i));
}

int rrc_balancer_pick(enum rrc_balance p, unsigned *cursor, struct rrc_balancer_server *s,
		      unsigned n, uint64_t exclude)
{
	if (n == 0 || n > RRC_BALANCER_MAX)
		return -1;
	switch (p) {
	case RRC_POLICY_FIRST_AVAILABLE:
		for (unsigned i = 0; i < n; i++) {
			if (eligible(s, i, exclude))
				return (int)i;
		}
		return -1;
	case RRC_POLICY_LEAST_OUTSTANDING: {
		int best = -1;
		for (unsigned i = 0; i < n; i++) {
			if (eligible(s, i, exclude) &&
			    (best < 0 || s[i].outstanding < s[best].outstanding))
				best = (int)i;
		}
		return best;
	}
	case RRC_POLICY_WEIGHTED: {
		/* Smooth weighted round-robin: each eligible server gains its weight, the
		 * richest is picked and pays the total. Spreads picks evenly in time. */
		int best = -1;
		int64_t total = 0;
		for (unsigned i = 0; i < n; i++) {
			if (!eligible(s, i, exclude))
				continue;
			int64_t w = s[i].weight ? s[i].weight : 1;
			s[i].current += w;
			total += w;
			if (best < 0 || s[i].current > s[best].current)
				best = (int)i;
		}
		if (best >= 0)
			s[best].current -= total;
		return best;
	}
	case RRC_POLICY_ROUND_ROBIN:
	default:
		for (unsigned k = 0; k < n; k++) {
			unsigned i = (*cursor + k) % n;
			if (eligible(s, i, exclude)) {
				*cursor = (i + 1) % n;
				return (int)i;
			}
		}
		return -1;
	}
}
