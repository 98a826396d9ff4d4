/*
 * Nanoseconds per policy check against a list file (argv[1]): names asked again and again
 * (as cache hits are: the matcher's lines stay in the CPU's caches) and names never asked
 * before (every suffix a cold lookup). Built and run by bench/instructions.py --policy:
 *   cc -O2 -Iinclude bench/policy_lookup.c src/policy.c -o policy_lookup
 */
#include "rrcache/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static size_t to_wire(const char *text, uint8_t *out)
{
	size_t o = 0, lab = 0;
	out[o++] = 0;
	for (const char *p = text; *p; p++) {
		if (*p == '.') {
			lab = o;
			out[o++] = 0;
		} else {
			out[lab]++;
			out[o++] = (uint8_t)*p;
		}
	}
	out[o++] = 0;
	return o;
}

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: policy_lookup LIST\n");
		return 2;
	}
	const char *lists[] = {argv[1]};
	char err[RRC_ERR_LEN];
	struct rrc_policy *p = rrc_policy_load(lists, 1, NULL, 0, NULL, 0, err);
	if (!p) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	enum { HOT = 1000, ROUNDS = 5000, COLD = 2000000 };
	static uint8_t hot[HOT][64];
	static size_t hot_len[HOT];
	char text[64];
	for (int i = 0; i < HOT; i++) {
		snprintf(text, sizeof(text), "b%d.example.test", i);
		hot_len[i] = to_wire(text, hot[i]);
	}
	unsigned list;
	unsigned long blocked = 0;
	double t0 = now_ns();
	for (int r = 0; r < ROUNDS; r++)
		for (int i = 0; i < HOT; i++)
			blocked += rrc_policy_check(p, hot[i], hot_len[i], ~(uint64_t)0, &list);
	double hot_ns = (now_ns() - t0) / ((double)ROUNDS * HOT);
	/* Never-seen names, made beforehand so that only the checks are timed. */
	uint8_t(*cold)[64] = malloc((size_t)COLD * 64);
	size_t *cold_len = malloc(COLD * sizeof(*cold_len));
	if (!cold || !cold_len)
		return 1;
	for (int i = 0; i < COLD; i++) {
		snprintf(text, sizeof(text), "q%d.site%d.example.com", i, i % 5000);
		cold_len[i] = to_wire(text, cold[i]);
	}
	t0 = now_ns();
	for (int i = 0; i < COLD; i++)
		blocked += rrc_policy_check(p, cold[i], cold_len[i], ~(uint64_t)0, &list);
	double cold_ns = (now_ns() - t0) / COLD;
	printf("%.1f %.1f %lu\n", hot_ns, cold_ns, blocked);
	free(cold);
	free(cold_len);
	rrc_policy_put(p);
	return 0;
}
