/*
 * The cache file with 1,000,000 entries: time to save and to load, with a fleet secret (the
 * seal vouches for each answer) and without (ldns parses each). Built and run by
 * bench/cachefile.sh; prints "save_ms load_sealed_ms load_parsed_ms file_bytes".
 */
#include "rrcache/cachefile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A stored answer "n<i>.example. 3600 IN A 192.0.2.x" and its L1 key. */
static void entry(unsigned i, uint8_t *key, size_t *klen, uint8_t *ans, size_t *alen,
		  uint32_t *life)
{
	char label[16];
	int ll = snprintf(label, sizeof(label), "n%u", i);
	uint8_t name[64];
	size_t nl = 0;
	name[nl++] = (uint8_t)ll;
	memcpy(name + nl, label, (size_t)ll);
	nl += (size_t)ll;
	memcpy(name + nl, "\7example\0", 9);
	nl += 9;
	size_t n = 0;
	static const uint8_t hdr[12] = {0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0};
	memcpy(ans, hdr, 12);
	n = 12;
	memcpy(ans + n, name, nl);
	n += nl;
	static const uint8_t q[4] = {0, 1, 0, 1};
	memcpy(ans + n, q, 4);
	n += 4;
	const uint8_t rr[16] = {0xC0, 12,   0, 1, 0,   1, 0, 0,
				0x0E, 0x10, 0, 4, 192, 0, 2, (uint8_t)i};
	memcpy(ans + n, rr, 16);
	n += 16;
	struct rrc_wire_reply r;
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	if (rrc_wire_check_reply(ans, n, &r) != 0)
		abort();
	*alen = rrc_wire_make_stored(ans, n, &r, &pol, life);
	memcpy(key, name, nl);
	memcpy(key + nl, "\0\1\0\1\1", 5);
	*klen = nl + 5;
}

int main(int argc, char **argv)
{
	unsigned total = argc > 1 ? (unsigned)atoi(argv[1]) : 1000000;
	const char *path = argc > 2 ? argv[2] : "/tmp/rrc-bench-cache.bin";
	struct rrc_cache *c = rrc_cache_create(1ull << 31);
	uint8_t key[RRC_WIRE_KEY_MAX], ans[512];
	for (unsigned i = 0; i < total; i++) {
		size_t kl, al;
		uint32_t life;
		entry(i, key, &kl, ans, &al, &life);
		if (rrc_cache_insert(c, key, kl, ans, al, life, 1000) != 0)
			abort();
	}
	struct rrc_l2_keys sealed, open;
	rrc_l2_derive_keys("bench secret", &sealed);
	rrc_l2_derive_keys("", &open);
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	const uint64_t wall = 1700000000000ull;
	char err[RRC_ERR_LEN];
	uint64_t t0 = now_ms();
	if (rrc_cachefile_save(c, path, &sealed, 2000, wall, err) != (long)total)
		return fprintf(stderr, "%s\n", err), 1;
	uint64_t save = now_ms() - t0;
	FILE *f = fopen(path, "rb");
	fseek(f, 0, SEEK_END);
	long bytes = ftell(f);
	fclose(f);
	uint64_t load[2];
	for (int k = 0; k < 2; k++) {
		struct rrc_cache *d = rrc_cache_create(1ull << 31);
		struct rrc_cachefile_stats st;
		if (k == 1 && rrc_cachefile_save(c, path, &open, 2000, wall, err) != (long)total)
			return 1;
		t0 = now_ms();
		if (rrc_cachefile_load(d, path, k ? &open : &sealed, &pol, 5000, wall + 3000, &st,
				       err) != 0 ||
		    st.loaded != total)
			return fprintf(stderr, "%s (%llu loaded)\n", err,
				       (unsigned long long)st.loaded),
			       1;
		load[k] = now_ms() - t0;
		rrc_cache_destroy(d);
	}
	printf("%llu %llu %llu %ld\n", (unsigned long long)save, (unsigned long long)load[0],
	       (unsigned long long)load[1], bytes);
	unlink(path);
	rrc_cache_destroy(c);
	return 0;
}
