/* Test helper: reads a file of the fuzz seed corpus (tests/fuzz/corpus) into buf. */
#ifndef RRCACHE_TEST_CORPUS_H
#define RRCACHE_TEST_CORPUS_H

#include <stdint.h>
#include <stdio.h>

static inline size_t corpus_load_from(const char *path, uint8_t *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("corpus file %s missing", path);
	size_t n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

static inline size_t corpus_load(const char *name, uint8_t *buf, size_t cap)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", RRC_CORPUS_DIR, name);
	return corpus_load_from(path, buf, cap);
}

#endif
