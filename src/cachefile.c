/*
 * cachefile: the L1 cache saved and loaded. See include/rrcache/cachefile.h.
 */
#include "rrcache/cachefile.h"
#include "rrcache/msg.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_HDR 16
#define FILE_VERSION 1
static const uint8_t file_magic[4] = {'R', 'R', 'C', 'F'};
/* The checksum's key: it finds damage, not forgery (the entries' seals and checks do that). */
static const uint64_t sum_key[2] = {0x7272636163686566ull, 0x696c652073756d31ull};

static uint64_t mix(uint64_t h, uint64_t v)
{
	return rrc_mix64(h ^ v, 0x9E3779B97F4A7C15ull);
}

struct saver {
	FILE *f;
	const struct rrc_l2_keys *keys;
	uint64_t mono, wall;
	uint64_t count, sum;
	bool failed;
	uint8_t buf[4 + RRC_L2_HDR + RRC_WIRE_KEY_MAX + RRC_WIRE_MAX_MSG + RRC_L2_SEAL];
};

static void save_entry(void *ctx, const uint8_t *key, size_t keylen, const uint8_t *answer,
		       size_t len, uint64_t stored_ms, uint64_t expire_ms)
{
	struct saver *sv = ctx;
	if (sv->failed)
		return;
	/* The times on the wall clock, where the next process can read them. */
	uint64_t stored_wall =
		sv->wall - RRC_MIN(sv->wall, sv->mono - RRC_MIN(sv->mono, stored_ms));
	uint32_t lifetime = (uint32_t)((expire_ms - stored_ms) / 1000);
	size_t n = rrc_l2_encode(sv->buf + 4, sizeof(sv->buf) - 4, sv->keys, key, keylen, answer,
				 len, stored_wall, lifetime);
	if (n == 0)
		return;
	rrc_put32(sv->buf, (uint32_t)n);
	sv->sum = mix(sv->sum, rrc_hash64(sum_key, sv->buf, 4 + n));
	sv->count++;
	if (fwrite(sv->buf, 1, 4 + n, sv->f) != 4 + n)
		sv->failed = true;
}

long rrc_cachefile_save(struct rrc_cache *c, const char *path, const struct rrc_l2_keys *keys,
			uint64_t now_mono_ms, uint64_t now_wall_ms, char err[RRC_ERR_LEN])
{
	char tmp[4096 + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		snprintf(err, RRC_ERR_LEN, "%.300s: %.150s", tmp, strerror(e));
		return -e;
	}
	struct saver *sv = calloc(1, sizeof(*sv));
	FILE *f = sv ? fdopen(fd, "wb") : NULL;
	if (!f) {
		close(fd);
		unlink(tmp);
		free(sv);
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return -ENOMEM;
	}
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	*sv = (struct saver){.f = f, .keys = keys, .mono = now_mono_ms, .wall = now_wall_ms};
	uint8_t hdr[FILE_HDR] = {0};
	memcpy(hdr, file_magic, 4);
	hdr[4] = FILE_VERSION;
	bool ok = fwrite(hdr, 1, sizeof(hdr), f) == sizeof(hdr);
	if (ok) {
		rrc_cache_foreach(c, now_mono_ms, save_entry, sv);
		ok = !sv->failed;
	}
	/* The count into the header, the checksum at the end. */
	uint8_t cnt[8], sum[8];
	uint64_t count = sv->count;
	uint64_t total = mix(sv->sum, count);
	for (int i = 0; i < 8; i++) {
		cnt[i] = (uint8_t)(count >> (56 - 8 * i));
		sum[i] = (uint8_t)(total >> (56 - 8 * i));
	}
	ok = ok && fwrite(sum, 1, 8, f) == 8 && fseek(f, 8, SEEK_SET) == 0 &&
	     fwrite(cnt, 1, 8, f) == 8 && fflush(f) == 0 && fsync(fd) == 0;
	int e = ok ? 0 : (errno ? errno : EIO);
	free(sv);
	if (fclose(f) != 0 && ok) {
		ok = false;
		e = errno;
	}
	if (ok && rename(tmp, path) != 0) {
		ok = false;
		e = errno;
	}
	if (!ok) {
		unlink(tmp);
		snprintf(err, RRC_ERR_LEN, "%.300s: %.150s", path, strerror(e));
		return -e;
	}
	/* The rename itself made durable. */
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return (long)count;
}

/* Hashes the entries at the start of len bytes, at most max of them: how many and how many
 * bytes they take into *n and *used. With marks, the offset of every every-th entry (from the
 * first) goes into marks[i / every]. */
static uint64_t walk(const uint8_t *entries, size_t len, uint64_t max, uint64_t *n, size_t *used,
		     size_t *marks, uint64_t every)
{
	uint64_t sum = 0;
	size_t off = 0;
	*n = 0;
	while (*n < max && off + 4 <= len) {
		size_t elen = rrc_get32(entries + off);
		if (elen > len - off - 4)
			break;
		if (marks && *n % every == 0)
			marks[*n / every] = off;
		sum = mix(sum, rrc_hash64(sum_key, entries + off, 4 + elen));
		off += 4 + elen;
		(*n)++;
	}
	*used = off;
	return sum;
}

uint64_t rrc_cachefile_checksum(const uint8_t *entries, size_t len, uint64_t count)
{
	uint64_t n;
	size_t used;
	return mix(walk(entries, len, count, &n, &used, NULL, 1), count);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* One part of a file's entries, loaded by one thread. */
struct part {
	struct rrc_cache *c;
	const uint8_t *from, *to;
	const struct rrc_l2_keys *keys;
	const struct rrc_wire_ttl_policy *pol;
	uint64_t now_mono_ms, now_wall_ms;
	struct rrc_cachefile_stats st;
	bool failed; /* out of memory for its scratch buffer */
};

static void *load_part(void *arg)
{
	struct part *p = arg;
	uint8_t *scratch = malloc(RRC_WIRE_MAX_MSG + 1);
	if (!scratch) {
		p->failed = true;
		return NULL;
	}
	for (const uint8_t *e = p->from; e < p->to;) {
		size_t elen = rrc_get32(e);
		const uint8_t *val = e + 4;
		e += 4 + elen;
		size_t keylen = elen >= RRC_L2_HDR ? rrc_get16(val + 6) : 0;
		if (elen < RRC_L2_HDR || keylen > RRC_WIRE_KEY_MAX || keylen > elen - RRC_L2_HDR) {
			p->st.refused++;
			continue;
		}
		const uint8_t *key = val + RRC_L2_HDR;
		struct rrc_l2_value v;
		enum rrc_l2_verdict vd =
			rrc_l2_decode(val, elen, p->keys, key, keylen, p->now_wall_ms, &v);
		if (vd == RRC_L2_EXPIRED) {
			p->st.expired++;
			continue;
		}
		if (vd != RRC_L2_FRESH || v.alen > RRC_WIRE_MAX_MSG) {
			p->st.refused++;
			continue;
		}
		/* Checked as a value from Redis is: the answer for its question, its TTLs, and
		 * ldns's parse unless the fleet's seal vouches for it. */
		memcpy(scratch, v.answer, v.alen);
		uint32_t life = 0;
		uint32_t remaining = (uint32_t)RRC_MIN(v.remaining_ms / 1000, (uint64_t)UINT32_MAX);
		size_t sn = rrc_l2_accept(scratch, v.alen, key, keylen, v.age, remaining, p->pol,
					  &life);
		if (sn == 0 || life == 0 || (!v.sealed && rrc_msg_check_reply(scratch, sn) != 0)) {
			if (sn == 0 && remaining == 0)
				p->st.expired++;
			else
				p->st.refused++;
			continue;
		}
		if (rrc_cache_insert(p->c, key, keylen, scratch, sn, life, p->now_mono_ms) == 0)
			p->st.loaded++;
		else
			p->st.refused++;
	}
	free(scratch);
	return NULL;
}

int rrc_cachefile_load_buf(struct rrc_cache *c, const uint8_t *buf, size_t len,
			   const struct rrc_l2_keys *keys, const struct rrc_wire_ttl_policy *pol,
			   uint64_t now_mono_ms, uint64_t now_wall_ms,
			   struct rrc_cachefile_stats *st, char err[RRC_ERR_LEN])
{
	*st = (struct rrc_cachefile_stats){0};
	if (len < FILE_HDR + 8 || memcmp(buf, file_magic, 4) != 0) {
		snprintf(err, RRC_ERR_LEN, "not a cache file of rrcache");
		return -EINVAL;
	}
	if (buf[5] || buf[6] || buf[7]) {
		snprintf(err, RRC_ERR_LEN, "damaged header");
		return -EINVAL;
	}
	if (buf[4] != FILE_VERSION) {
		snprintf(err, RRC_ERR_LEN, "cache file version %u, not %u", buf[4], FILE_VERSION);
		return -EINVAL;
	}
	/* The parts the entries are loaded in, one thread each: the cache's shards take inserts
	 * from several threads, and a start-up is the time to use every core. */
	uint64_t count = get64(buf + 8), n;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned parts = (unsigned)RRC_MIN((uint64_t)RRC_MAX(cpus, 1L), RRC_CACHEFILE_THREADS);
	parts = (unsigned)RRC_MIN((uint64_t)parts, count / RRC_CACHEFILE_PART_MIN + 1);
	uint64_t every = count / parts + 1;
	size_t marks[RRC_CACHEFILE_THREADS + 1];
	/* Whole first: a truncated or damaged file is refused before anything is used. */
	size_t used, end = len - 8;
	uint64_t sum = walk(buf + FILE_HDR, end - FILE_HDR, count, &n, &used, marks, every);
	if (n != count || FILE_HDR + used != end || mix(sum, count) != get64(buf + end)) {
		snprintf(err, RRC_ERR_LEN, "truncated or damaged (checksum)");
		return -EINVAL;
	}
	rrc_cache_reserve(c, count);
	unsigned marked = count ? (unsigned)((count - 1) / every + 1) : 0;
	marks[marked] = used;
	struct part p[RRC_CACHEFILE_THREADS];
	pthread_t tid[RRC_CACHEFILE_THREADS];
	bool started[RRC_CACHEFILE_THREADS] = {false};
	for (unsigned i = 0; i < marked; i++) {
		p[i] = (struct part){.c = c,
				     .from = buf + FILE_HDR + marks[i],
				     .to = buf + FILE_HDR + marks[i + 1],
				     .keys = keys,
				     .pol = pol,
				     .now_mono_ms = now_mono_ms,
				     .now_wall_ms = now_wall_ms};
		/* The first part on this thread; the others each on its own, or here too when
		 * no thread can be made. */
		started[i] = i > 0 && pthread_create(&tid[i], NULL, load_part, &p[i]) == 0;
	}
	for (unsigned i = 0; i < marked; i++)
		if (!started[i])
			load_part(&p[i]);
	bool failed = false;
	for (unsigned i = 0; i < marked; i++) {
		if (started[i])
			pthread_join(tid[i], NULL);
		st->loaded += p[i].st.loaded;
		st->expired += p[i].st.expired;
		st->refused += p[i].st.refused;
		failed = failed || p[i].failed;
	}
	if (failed) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int rrc_cachefile_load(struct rrc_cache *c, const char *path, const struct rrc_l2_keys *keys,
		       const struct rrc_wire_ttl_policy *pol, uint64_t now_mono_ms,
		       uint64_t now_wall_ms, struct rrc_cachefile_stats *st, char err[RRC_ERR_LEN])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		snprintf(err, RRC_ERR_LEN, "%.300s: %.150s", path, strerror(e));
		return -e;
	}
	/* Mapped, its pages read in at once: 0.70 s for a million entries where reading them
	 * into memory took 1.1 s (bench/cachefile.py; the copy and a fault per page). The file
	 * is only ever replaced by a rename, never cut short in place; one truncated by someone
	 * else during the load would end the process (SIGBUS), as with any mapped file. */
	size_t len = (size_t)sb.st_size;
	uint8_t *buf = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0) : NULL;
	close(fd);
	if (buf == MAP_FAILED) {
		int e = errno;
		snprintf(err, RRC_ERR_LEN, "%.300s: %.150s", path, strerror(e));
		return -e;
	}
	char why[RRC_ERR_LEN];
	int rc = rrc_cachefile_load_buf(c, buf, len, keys, pol, now_mono_ms, now_wall_ms, st, why);
	if (buf)
		munmap(buf, len);
	if (rc)
		snprintf(err, RRC_ERR_LEN, "%.300s: %.200s", path, why);
	return rc;
}
