/*
 * policy: block and allow lists. See include/rrcache/policy.h.
 *
 * The table: capacity about 1.3 entries per slot's worth (load at most 0.77), linear probing,
 * a slot's index from the hash by multiply-shift. An entry is the hash's top 56 bits (never
 * all zero: zero marks an empty slot) and 8 bits of meta: the list (6 bits) and the kind
 * (2 bits). A name in several lists has one entry per list and kind.
 */
#include "rrcache/policy.h"
#include "rrcache/wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

struct rrc_policy {
	atomic_int refs;
	uint64_t *slots;
	size_t cap;
	size_t map_len; /* slots is a mapping of this many bytes */
	/* In front of the table: a blocked Bloom filter, one 64-bit word per lookup with 4 bits
	 * set per rule, about 16 bits per rule (2 bytes), small enough to stay in the CPU's
	 * caches; most suffixes of a name that is on no list stop here (about 0.5 % go on). */
	uint64_t *filter;
	size_t filter_words; /* a power of two */
	uint64_t depths;     /* bit d: a rule of d labels (63: 63 or more) exists */
	uint64_t n;
	uint64_t key[2];
	uint64_t allow_lists; /* bit i: list i is an allowlist */
	struct rrc_policy_list_info lists[RRC_POLICY_MAX_LISTS];
	size_t n_lists;
};

#define TAG_MASK (~(uint64_t)0xFF)

static inline uint64_t tag_of(uint64_t h)
{
	uint64_t t = h & TAG_MASK;
	return t ? t : (uint64_t)1 << 8;
}

/* The home slot of a tag: its top 32 bits scaled to the capacity (multiply-shift). */
static inline size_t slot_of(const struct rrc_policy *p, uint64_t tag)
{
	return (size_t)(((tag >> 32) * (uint64_t)p->cap) >> 32);
}

/* The kind bits' spare value: an exception ("@@||name^") in a blocklist, name and below. */
#define KIND_EXCEPTION 3

/* ---- parsing ---- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* text[0..len) -> lowercased wire name. 0, or -1 when it is not a host name (labels of 1..63
 * letters, digits, '-' or '_', at most 253 characters, one trailing dot allowed). */
static int name_to_wire(const char *text, size_t len, uint8_t *out, size_t *out_len)
{
	if (len > 0 && text[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return -1;
	size_t o = 0, lab = 0;
	out[o++] = 0;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (c == '.') {
			if (out[lab] == 0)
				return -1;
			lab = o;
			out[o++] = 0;
			continue;
		}
		if (c >= 'A' && c <= 'Z')
			c = (char)(c + 32);
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '_'))
			return -1;
		if (out[lab] == 63)
			return -1;
		out[lab]++;
		out[o++] = (uint8_t)c;
	}
	if (out[lab] == 0)
		return -1;
	out[o++] = 0;
	*out_len = o;
	return 0;
}

/* Names a hosts file maps that are the machine's own, never blocked. */
static bool hosts_own_name(const char *s, size_t n)
{
	static const char *const own[] = {"localhost",	    "localhost.localdomain", "local",
					  "broadcasthost",  "ip6-localhost",	     "ip6-loopback",
					  "ip6-localnet",   "ip6-mcastprefix",	     "ip6-allnodes",
					  "ip6-allrouters", "ip6-allhosts",	     "0.0.0.0"};
	for (size_t i = 0; i < RRC_ARRAY_SIZE(own); i++)
		if (strlen(own[i]) == n && memcmp(own[i], s, n) == 0)
			return true;
	return false;
}

enum rrc_policy_line rrc_policy_parse_line(const char *line, size_t len,
					   struct rrc_policy_rule *rules, size_t cap, size_t *n,
					   const char **why)
{
	*n = 0;
	*why = NULL;
	/* One line: whatever follows a newline is not part of it (a file is split on them). */
	const char *nl = memchr(line, '\n', len);
	if (nl)
		len = (size_t)(nl - line);
	const char *s = line, *e = line + len;
	while (s < e && is_space(*s))
		s++;
	while (e > s && is_space(e[-1]))
		e--;
	if (s == e || *s == '#' || *s == '!' || *s == '[')
		return RRC_PL_NONE;
	/* A comment after the rule ("name # note"); adblock rules have none. */
	for (const char *c = s; c < e; c++) {
		if (*c == '#' && is_space(c[-1])) {
			e = c;
			while (e > s && is_space(e[-1]))
				e--;
			break;
		}
	}
	if (*s == '/') {
		*why = "regular expressions are not supported";
		return RRC_PL_BAD;
	}
	if (cap == 0) {
		*why = "no room";
		return RRC_PL_BAD;
	}
	bool allow = false;
	if (e - s >= 2 && s[0] == '@' && s[1] == '@') {
		allow = true;
		s += 2;
	}
	if (e - s >= 2 && s[0] == '|' && s[1] == '|') {
		/* ||name^ or ||name^$important */
		const char *caret = memchr(s + 2, '^', (size_t)(e - s - 2));
		if (!caret) {
			*why = "adblock rule without '^'";
			return RRC_PL_BAD;
		}
		const char *rest = caret + 1;
		if (rest < e &&
		    !((size_t)(e - rest) == 10 && memcmp(rest, "$important", 10) == 0)) {
			*why = "adblock rule with a modifier other than $important";
			return RRC_PL_BAD;
		}
		if (name_to_wire(s + 2, (size_t)(caret - s - 2), rules[0].name,
				 &rules[0].name_len)) {
			*why = "not a domain name";
			return RRC_PL_BAD;
		}
		rules[0].kind = RRC_PK_SUBTREE;
		rules[0].allow = allow;
		*n = 1;
		return RRC_PL_RULE;
	}
	if (allow) {
		*why = "'@@' without '||name^'";
		return RRC_PL_BAD;
	}
	/* The first word: an address (a hosts line), "*.name", or a name. */
	const char *w = s;
	while (w < e && !is_space(*w))
		w++;
	char addr[INET6_ADDRSTRLEN];
	size_t wl = (size_t)(w - s);
	uint8_t tmp[16];
	bool hosts = false;
	if (wl < sizeof(addr) && !memchr(s, '\0', wl)) {
		memcpy(addr, s, wl);
		addr[wl] = '\0';
		hosts = inet_pton(AF_INET, addr, tmp) == 1 || inet_pton(AF_INET6, addr, tmp) == 1;
	}
	if (hosts) {
		const char *p = w;
		while (p < e) {
			while (p < e && is_space(*p))
				p++;
			const char *q = p;
			while (q < e && !is_space(*q))
				q++;
			if (q == p)
				break;
			if (!hosts_own_name(p, (size_t)(q - p))) {
				if (*n == cap) {
					*n = 0;
					*why = "too many names on one hosts line";
					return RRC_PL_BAD;
				}
				if (name_to_wire(p, (size_t)(q - p), rules[*n].name,
						 &rules[*n].name_len)) {
					*n = 0;
					*why = "hosts line with a name that is not a domain name";
					return RRC_PL_BAD;
				}
				rules[*n].kind = RRC_PK_EXACT;
				rules[*n].allow = false;
				(*n)++;
			}
			p = q;
		}
		return *n ? RRC_PL_RULE : RRC_PL_NONE;
	}
	if (w != e) {
		*why = "more than one word";
		return RRC_PL_BAD;
	}
	enum rrc_policy_kind kind = RRC_PK_SUBTREE;
	if (wl > 2 && s[0] == '*' && s[1] == '.') {
		kind = RRC_PK_BELOW;
		s += 2;
		wl -= 2;
	}
	if (name_to_wire(s, wl, rules[0].name, &rules[0].name_len)) {
		*why = "not a domain name";
		return RRC_PL_BAD;
	}
	rules[0].kind = kind;
	rules[0].allow = false;
	*n = 1;
	return RRC_PL_RULE;
}

/* ---- building ---- */

/* Rules gathered while the files are read, before the table is sized. */
struct staging {
	uint64_t *h; /* hash with meta in the low byte */
	size_t n, cap;
};

static int stage(struct staging *st, uint64_t entry)
{
	if (st->n == st->cap) {
		size_t nc = st->cap ? st->cap * 2 : 4096;
		uint64_t *p = realloc(st->h, nc * sizeof(*p));
		if (!p)
			return -ENOMEM;
		st->h = p;
		st->cap = nc;
	}
	st->h[st->n++] = entry;
	return 0;
}

/* Labels of a wire name (the root not counted). */
static unsigned labels(const uint8_t *name)
{
	unsigned n = 0;
	for (size_t off = 0; name[off]; off += (size_t)name[off] + 1)
		n++;
	return n;
}

static void report_line(char *report, size_t cap, size_t *used, const char *path,
			unsigned long line, const char *why)
{
	if (!report || *used >= cap)
		return;
	int w = snprintf(report + *used, cap - *used, "%s:%lu: %s\n", path, line, why);
	if (w > 0)
		*used += RRC_MIN((size_t)w, cap - *used);
}

static int read_list(struct rrc_policy *p, unsigned idx, struct staging *st, char *report,
		     size_t report_cap, size_t *report_used, unsigned *reported, char *err)
{
	struct rrc_policy_list_info *li = &p->lists[idx];
	FILE *f = fopen(li->path, "r");
	if (!f) {
		snprintf(err, RRC_ERR_LEN, "policy: cannot read %.200s: %s", li->path,
			 strerror(errno));
		return -1;
	}
	char *line = NULL;
	size_t lcap = 0;
	ssize_t got;
	unsigned long no = 0;
	struct rrc_policy_rule rules[16];
	while ((got = getline(&line, &lcap, f)) >= 0) {
		no++;
		size_t n;
		const char *why;
		enum rrc_policy_line r = rrc_policy_parse_line(line, (size_t)got, rules,
							       RRC_ARRAY_SIZE(rules), &n, &why);
		if (r == RRC_PL_BAD) {
			li->bad++;
			if ((*reported)++ < RRC_POLICY_REPORT_LINES)
				report_line(report, report_cap, report_used, li->path, no, why);
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			/* An allowlist's rules allow (the list says so); "@@" allows in any list.
			 */
			unsigned kind = rules[i].allow ? KIND_EXCEPTION : (unsigned)rules[i].kind;
			uint64_t meta = (uint64_t)idx << 2 | kind;
			uint64_t h = rrc_hash64(p->key, rules[i].name, rules[i].name_len);
			p->depths |= (uint64_t)1 << RRC_MIN(labels(rules[i].name), 63u);
			if (stage(st, tag_of(h) | meta)) {
				free(line);
				fclose(f);
				snprintf(err, RRC_ERR_LEN, "policy: out of memory");
				return -1;
			}
			li->rules++;
		}
	}
	bool failed = ferror(f);
	free(line);
	fclose(f);
	if (failed) {
		snprintf(err, RRC_ERR_LEN, "policy: error reading %.200s", li->path);
		return -1;
	}
	return 0;
}

/* The filter word of a tag, and the 4 bits a rule with that tag sets in it. The bits come
 * from the tag's low 32 bits above the meta byte; the word from its top bits. */
static inline size_t filter_word(const struct rrc_policy *p, uint64_t tag)
{
	return (size_t)(tag >> 40) & (p->filter_words - 1);
}

static inline uint64_t filter_bits(uint64_t tag)
{
	return (uint64_t)1 << (tag >> 8 & 63) | (uint64_t)1 << (tag >> 14 & 63) |
	       (uint64_t)1 << (tag >> 20 & 63) | (uint64_t)1 << (tag >> 26 & 63);
}

static void insert(struct rrc_policy *p, uint64_t entry)
{
	uint64_t tag = entry & TAG_MASK;
	p->filter[filter_word(p, tag)] |= filter_bits(tag);
	size_t i = slot_of(p, tag);
	for (;;) {
		if (p->slots[i] == 0) {
			p->slots[i] = entry;
			p->n++;
			return;
		}
		if (p->slots[i] == entry)
			return; /* the same name, kind and list twice */
		if (++i == p->cap)
			i = 0;
	}
}

struct rrc_policy *rrc_policy_load(const char *const *block, size_t n_block,
				   const char *const *allow, size_t n_allow, char *report,
				   size_t report_cap, char err[RRC_ERR_LEN])
{
	if (report && report_cap)
		report[0] = '\0';
	if (n_block + n_allow > RRC_POLICY_MAX_LISTS) {
		snprintf(err, RRC_ERR_LEN, "policy: more than %d lists", RRC_POLICY_MAX_LISTS);
		return NULL;
	}
	struct rrc_policy *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, RRC_ERR_LEN, "policy: out of memory");
		return NULL;
	}
	atomic_init(&p->refs, 1);
	if (getrandom(p->key, sizeof(p->key), 0) != (ssize_t)sizeof(p->key)) {
		snprintf(err, RRC_ERR_LEN, "policy: no random key");
		free(p);
		return NULL;
	}
	for (size_t i = 0; i < n_block + n_allow; i++) {
		struct rrc_policy_list_info *li = &p->lists[i];
		const char *path = i < n_block ? block[i] : allow[i - n_block];
		snprintf(li->path, sizeof(li->path), "%s", path);
		li->allow = i >= n_block;
		if (li->allow)
			p->allow_lists |= (uint64_t)1 << i;
	}
	p->n_lists = n_block + n_allow;
	struct staging st = {0};
	size_t used = 0;
	unsigned reported = 0;
	for (size_t i = 0; i < p->n_lists; i++) {
		if (read_list(p, (unsigned)i, &st, report, report_cap, &used, &reported, err)) {
			free(st.h);
			free(p);
			return NULL;
		}
	}
	size_t rules = st.n;
	p->cap = rules + rules / 3 + 16;
	/* A mapping of its own, in 2 MiB huge pages where the kernel allows (madvise): a lookup
	 * of a name not in the cache touches a random slot per suffix, and with 4 KiB pages each
	 * also misses the TLB. */
	p->map_len = (p->cap * sizeof(*p->slots) + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
	void *m =
		mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED) {
		madvise(m, p->map_len, MADV_HUGEPAGE);
		p->slots = m;
	}
	p->filter_words = 64;
	while (p->filter_words * 64 < rules * 16)
		p->filter_words *= 2;
	p->filter = calloc(p->filter_words, sizeof(*p->filter));
	if (!p->slots || !p->filter) {
		if (p->slots)
			munmap(p->slots, p->map_len);
		free(p->filter);
		free(st.h);
		free(p);
		snprintf(err, RRC_ERR_LEN, "policy: out of memory for %zu rules", rules);
		return NULL;
	}
	for (size_t i = 0; i < st.n; i++)
		insert(p, st.h[i]);
	free(st.h);
	return p;
}

struct rrc_policy *rrc_policy_hold(struct rrc_policy *p)
{
	if (p)
		atomic_fetch_add(&p->refs, 1);
	return p;
}

void rrc_policy_put(struct rrc_policy *p)
{
	if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	if (p->slots)
		munmap(p->slots, p->map_len);
	free(p->filter);
	free(p);
}

/* ---- matching ---- */

enum rrc_policy_verdict rrc_policy_check(const struct rrc_policy *p, const uint8_t *name,
					 size_t name_len, uint64_t lists, unsigned *list)
{
	if (!p || p->n == 0 || name_len < 2)
		return RRC_PV_PASS;
	unsigned total = labels(name);
	/* Suffixes from the name itself down to its TLD (the root alone is never a rule); only
	 * those with as many labels as some rule has are looked up. */
	for (size_t off = 0, level = 0; off + 1 < name_len; off += (size_t)name[off] + 1, level++) {
		if (!(p->depths >> RRC_MIN(total - level, 63u) & 1))
			continue;
		uint64_t tag = tag_of(rrc_hash64(p->key, name + off, name_len - off));
		uint64_t bits = filter_bits(tag);
		if ((p->filter[filter_word(p, tag)] & bits) != bits)
			continue;
		size_t i = slot_of(p, tag);
		int deny = -1, allow = -1;
		for (uint64_t e; (e = p->slots[i]) != 0; i = i + 1 == p->cap ? 0 : i + 1) {
			if ((e & TAG_MASK) != tag)
				continue;
			unsigned idx = (unsigned)(e >> 2 & 63), kind = (unsigned)(e & 3);
			if (!(lists >> idx & 1))
				continue;
			bool applies = kind == RRC_PK_SUBTREE || kind == KIND_EXCEPTION ||
				       (kind == RRC_PK_EXACT ? level == 0 : level > 0);
			if (!applies)
				continue;
			if (kind == KIND_EXCEPTION || (p->allow_lists >> idx & 1))
				allow = (int)idx;
			else if (deny < 0)
				deny = (int)idx;
		}
		if (allow >= 0) {
			*list = (unsigned)allow;
			return RRC_PV_ALLOW;
		}
		if (deny >= 0) {
			*list = (unsigned)deny;
			return RRC_PV_BLOCK;
		}
	}
	return RRC_PV_PASS;
}

size_t rrc_policy_lists(const struct rrc_policy *p, const struct rrc_policy_list_info **out)
{
	*out = p ? p->lists : NULL;
	return p ? p->n_lists : 0;
}

uint64_t rrc_policy_rules(const struct rrc_policy *p)
{
	return p ? p->n : 0;
}

size_t rrc_policy_bytes(const struct rrc_policy *p)
{
	return p ? sizeof(*p) + p->cap * sizeof(*p->slots) + p->filter_words * sizeof(*p->filter)
		 : 0;
}
