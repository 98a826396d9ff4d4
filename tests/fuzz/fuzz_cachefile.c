/*
 * libFuzzer target for the cache file loader: the input as a whole file, and the input as the
 * entries of a file whose header and checksum are made right (so that the entries' own checks
 * are reached). Nothing crashes; every entry is counted once as loaded, expired or refused;
 * what is loaded is found in the cache.
 */
#include "rrcache/cachefile.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	static struct rrc_l2_keys keys;
	static bool init;
	if (!init) {
		rrc_l2_derive_keys("", &keys);
		init = true;
	}
	const struct rrc_wire_ttl_policy pol = {
		.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	const uint64_t wall = 1700000000000ull;
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	struct rrc_cachefile_stats st;
	char err[RRC_ERR_LEN];
	(void)rrc_cachefile_load_buf(c, data, size, &keys, &pol, 1000, wall, &st, err);

	/* The input as entries: each one's length prefix as it comes, up to what is there. */
	uint8_t *file = malloc(16 + size + 8);
	memcpy(file, "RRCF\1\0\0\0", 8);
	uint64_t count = 0;
	size_t off = 0;
	while (off + 4 <= size && rrc_get32(data + off) <= size - off - 4) {
		off += 4 + rrc_get32(data + off);
		count++;
	}
	uint64_t sum = rrc_cachefile_checksum(data, off, count);
	for (int i = 0; i < 8; i++) {
		file[8 + i] = (uint8_t)(count >> (56 - 8 * i));
		file[16 + off + i] = (uint8_t)(sum >> (56 - 8 * i));
	}
	memcpy(file + 16, data, off);
	int rc = rrc_cachefile_load_buf(c, file, 16 + off + 8, &keys, &pol, 1000, wall, &st, err);
	if (rc != 0 || st.loaded + st.expired + st.refused != count)
		abort();
	struct rrc_cache_stats cs;
	rrc_cache_get_stats(c, &cs);
	if (cs.entries > st.loaded + count)
		abort();
	free(file);
	rrc_cache_destroy(c);
	return 0;
}
