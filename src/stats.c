/*
 * stats: histograms, bounded label sets, top-K, escaping writers. See include/rrcache/stats.h.
 */
#include "rrcache/stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 100 us .. 2.5 s: a cache hit lands in the first buckets, an upstream answer in the middle,
 * a timeout in the last. */
const uint32_t rrc_hist_bounds_us[RRC_HIST_BOUNDS] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000};

void rrc_hist_merge(struct rrc_hist *into, const struct rrc_hist *from)
{
	for (unsigned i = 0; i <= RRC_HIST_BOUNDS; i++)
		into->bucket[i] += from->bucket[i];
	into->count += from->count;
	into->sum_us += from->sum_us;
}

double rrc_hist_quantile(const struct rrc_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	double rank = q * (double)h->count;
	uint64_t seen = 0;
	for (unsigned i = 0; i <= RRC_HIST_BOUNDS; i++) {
		if (h->bucket[i] == 0 || (double)(seen + h->bucket[i]) < rank) {
			seen += h->bucket[i];
			continue;
		}
		double lo = i == 0 ? 0 : rrc_hist_bounds_us[i - 1];
		if (i == RRC_HIST_BOUNDS)
			return lo; /* +Inf: the last finite bound is all that is known */
		double hi = rrc_hist_bounds_us[i];
		return lo + (hi - lo) * ((rank - (double)seen) / (double)h->bucket[i]);
	}
	return rrc_hist_bounds_us[RRC_HIST_BOUNDS - 1];
}

/* ---- label sets ---- */

static const struct {
	uint16_t type;
	const char *name;
} qtypes[RRC_QT_OTHER] = {
	{1, "A"},      {28, "AAAA"}, {5, "CNAME"}, {15, "MX"},	{16, "TXT"},   {2, "NS"},
	{6, "SOA"},    {12, "PTR"},  {33, "SRV"},  {64, "SVCB"}, {65, "HTTPS"}, {257, "CAA"},
	{43, "DS"},    {48, "DNSKEY"}, {255, "ANY"}};

unsigned rrc_stats_qtype_slot(uint16_t qtype)
{
	for (unsigned i = 0; i < RRC_QT_OTHER; i++) {
		if (qtypes[i].type == qtype)
			return i;
	}
	return RRC_QT_OTHER;
}

const char *rrc_stats_qtype_name(unsigned slot)
{
	return slot < RRC_QT_OTHER ? qtypes[slot].name : "other";
}

unsigned rrc_stats_rcode_slot(unsigned rcode)
{
	switch (rcode) {
	case 0:
		return RRC_RC_NOERROR;
	case 1:
		return RRC_RC_FORMERR;
	case 2:
		return RRC_RC_SERVFAIL;
	case 3:
		return RRC_RC_NXDOMAIN;
	case 4:
		return RRC_RC_NOTIMP;
	case 5:
		return RRC_RC_REFUSED;
	default:
		return RRC_RC_OTHER;
	}
}

const char *rrc_stats_rcode_name(unsigned slot)
{
	static const char *const names[RRC_RC_COUNT] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
							"NOTIMP",  "REFUSED", "other"};
	return slot < RRC_RC_COUNT ? names[slot] : "other";
}

/* ---- top-K (space-saving) ---- */

static uint32_t key_hash(const uint8_t *key, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a: the summary is bounded whatever the keys */
	for (size_t i = 0; i < len; i++)
		h = (h ^ key[i]) * 16777619u;
	return h;
}

void rrc_topk_init(struct rrc_topk *t)
{
	t->n = 0;
	for (unsigned i = 0; i < RRC_TOPK_SLOTS; i++)
		t->slot[i] = -1;
}

static int find(const struct rrc_topk *t, uint32_t h, const uint8_t *key, size_t len,
		unsigned *free_slot)
{
	unsigned s = h & (RRC_TOPK_SLOTS - 1);
	for (unsigned probe = 0; probe < RRC_TOPK_SLOTS; probe++, s = (s + 1) & (RRC_TOPK_SLOTS - 1)) {
		int idx = t->slot[s];
		if (idx < 0) {
			*free_slot = s;
			return -1;
		}
		const struct rrc_topk_entry *e = &t->e[idx];
		if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
			return idx;
	}
	*free_slot = RRC_TOPK_SLOTS;
	return -1;
}

/* Removes entry idx's slot and re-inserts the run that follows it (linear probing). */
static void unslot(struct rrc_topk *t, int idx)
{
	unsigned s = t->e[idx].hash & (RRC_TOPK_SLOTS - 1);
	while (t->slot[s] != idx)
		s = (s + 1) & (RRC_TOPK_SLOTS - 1);
	t->slot[s] = -1;
	for (unsigned n = (s + 1) & (RRC_TOPK_SLOTS - 1); t->slot[n] >= 0;
	     n = (n + 1) & (RRC_TOPK_SLOTS - 1)) {
		int moved = t->slot[n];
		t->slot[n] = -1;
		unsigned d = t->e[moved].hash & (RRC_TOPK_SLOTS - 1);
		while (t->slot[d] >= 0)
			d = (d + 1) & (RRC_TOPK_SLOTS - 1);
		t->slot[d] = (int16_t)moved;
	}
}

static void add_counted(struct rrc_topk *t, const uint8_t *key, size_t len, uint64_t inc,
			uint64_t err)
{
	if (len > RRC_TOPK_KEY)
		len = RRC_TOPK_KEY;
	uint32_t h = key_hash(key, len);
	unsigned fs;
	int idx = find(t, h, key, len, &fs);
	if (idx >= 0) {
		t->e[idx].count += inc;
		t->e[idx].error += err;
		return;
	}
	struct rrc_topk_entry *e;
	if (t->n < RRC_TOPK_CAP) {
		idx = (int)t->n++;
		e = &t->e[idx];
		e->count = inc;
		e->error = err;
	} else {
		/* Space-saving: the smallest entry makes room and lends its count as the error. */
		idx = 0;
		for (unsigned i = 1; i < t->n; i++) {
			if (t->e[i].count < t->e[idx].count)
				idx = (int)i;
		}
		e = &t->e[idx];
		unslot(t, idx);
		uint64_t min = e->count;
		e->count = min + inc;
		e->error = min + err;
		find(t, h, key, len, &fs); /* the slot may have moved */
	}
	e->hash = h;
	e->len = (uint8_t)len;
	memcpy(e->key, key, len);
	t->slot[fs] = (int16_t)idx;
}

void rrc_topk_add(struct rrc_topk *t, const uint8_t *key, size_t len, uint64_t inc)
{
	add_counted(t, key, len, inc, 0);
}

void rrc_topk_merge(struct rrc_topk *into, const struct rrc_topk *from)
{
	for (unsigned i = 0; i < from->n; i++) {
		const struct rrc_topk_entry *e = &from->e[i];
		add_counted(into, e->key, e->len, e->count, e->error);
	}
}

static int by_count(const void *a, const void *b)
{
	const struct rrc_topk_entry *x = *(const struct rrc_topk_entry *const *)a;
	const struct rrc_topk_entry *y = *(const struct rrc_topk_entry *const *)b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->key, y->key, x->len); /* a stable order for equal counts */
}

size_t rrc_topk_top(const struct rrc_topk *t, const struct rrc_topk_entry **out, size_t k)
{
	const struct rrc_topk_entry *all[RRC_TOPK_CAP];
	for (unsigned i = 0; i < t->n; i++)
		all[i] = &t->e[i];
	qsort(all, t->n, sizeof(all[0]), by_count);
	size_t n = t->n < k ? t->n : k;
	memcpy(out, all, n * sizeof(out[0]));
	return n;
}

/* ---- sliding windows ---- */

void rrc_top_init(struct rrc_top *t)
{
	for (unsigned c = 0; c < RRC_TOP_CATS; c++) {
		for (unsigned i = 0; i < RRC_TOP_SUBS; i++) {
			rrc_topk_init(&t->minute[c][i]);
			rrc_topk_init(&t->hour[c][i]);
		}
	}
	t->cur_minute = t->cur_hour = t->ticks = 0;
}

void rrc_top_tick(struct rrc_top *t)
{
	unsigned m = t->cur_minute;
	for (unsigned c = 0; c < RRC_TOP_CATS; c++)
		rrc_topk_merge(&t->hour[c][t->cur_hour], &t->minute[c][m]);
	t->cur_minute = (m + 1) % RRC_TOP_SUBS;
	for (unsigned c = 0; c < RRC_TOP_CATS; c++)
		rrc_topk_init(&t->minute[c][t->cur_minute]);
	/* Ten minutes = RRC_TOP_SUBS ticks of the minute window times 10. */
	if (++t->ticks % (RRC_TOP_SUBS * 10) == 0) {
		t->cur_hour = (t->cur_hour + 1) % RRC_TOP_SUBS;
		for (unsigned c = 0; c < RRC_TOP_CATS; c++)
			rrc_topk_init(&t->hour[c][t->cur_hour]);
	}
}

void rrc_top_window(const struct rrc_top *t, enum rrc_top_cat cat, bool hour, struct rrc_topk *out)
{
	rrc_topk_init(out);
	for (unsigned i = 0; i < RRC_TOP_SUBS; i++)
		rrc_topk_merge(out, hour ? &t->hour[cat][i] : &t->minute[cat][i]);
	/* The hour also holds what the current 10 s have seen so far. */
	if (hour)
		rrc_topk_merge(out, &t->minute[cat][t->cur_minute]);
}

const char *rrc_top_cat_name(enum rrc_top_cat cat)
{
	static const char *const names[RRC_TOP_CATS] = {"names", "clients", "nxdomain",
							"servfail"};
	return names[cat];
}

/* ---- writers ---- */

void rrc_buf_put(struct rrc_buf *b, const char *s, size_t n)
{
	if (b->overflow || n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void rrc_buf_printf(struct rrc_buf *b, const char *fmt, ...)
{
	if (b->overflow)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= b->cap - b->len) {
		b->overflow = true;
		return;
	}
	b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes are not one. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	size_t len;
	uint32_t min;
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0) {
		len = 2;
		min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		len = 3;
		min = 0x800;
	} else if ((c & 0xF8) == 0xF0) {
		len = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	uint32_t cp = c & (0x7F >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

void rrc_buf_prom_label(struct rrc_buf *b, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		if (c == '\\' || c == '"') {
			char esc[2] = {'\\', (char)c};
			rrc_buf_put(b, esc, 2);
			i++;
		} else if (c == '\n') {
			rrc_buf_put(b, "\\n", 2);
			i++;
		} else {
			size_t l = utf8_len(s + i, n - i);
			if (l == 0) {
				rrc_buf_put(b, replacement, 3);
				i++;
			} else {
				rrc_buf_put(b, (const char *)s + i, l);
				i += l;
			}
		}
	}
}

void rrc_buf_json_string(struct rrc_buf *b, const uint8_t *s, size_t n)
{
	rrc_buf_put(b, "\"", 1);
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			rrc_buf_put(b, esc, 2);
			i++;
		} else if (c == '/' && i > 0 && s[i - 1] == '<') {
			rrc_buf_put(b, "\\/", 2); /* "</script>" cannot end a script element */
			i++;
		} else if (c < 0x20 || c == 0x7F) {
			rrc_buf_printf(b, "\\u%04x", c);
			i++;
		} else {
			size_t l = utf8_len(s + i, n - i);
			if (l == 0) {
				rrc_buf_put(b, replacement, 3);
				i++;
			} else {
				rrc_buf_put(b, (const char *)s + i, l);
				i += l;
			}
		}
	}
	rrc_buf_put(b, "\"", 1);
}

size_t rrc_name_to_text(const uint8_t *name, size_t len, char *out, size_t cap)
{
	size_t o = 0, i = 0;
	if (cap == 0)
		return 0;
	while (i < len && name[i] != 0) {
		size_t l = name[i++];
		if (l > 63 || i + l > len)
			break;
		for (size_t k = 0; k < l; k++, i++) {
			uint8_t c = name[i];
			char tmp[5];
			size_t tl;
			if (c <= 0x20 || c >= 0x7F) {
				tl = (size_t)snprintf(tmp, sizeof(tmp), "\\%03u", c);
			} else if (strchr(".\\\";()@$", c)) {
				tmp[0] = '\\';
				tmp[1] = (char)c;
				tl = 2;
			} else {
				tmp[0] = (char)c;
				tl = 1;
			}
			if (o + tl + 1 >= cap)
				goto done;
			memcpy(out + o, tmp, tl);
			o += tl;
		}
		if (o + 2 >= cap)
			goto done;
		out[o++] = '.';
	}
	if (o == 0 && cap > 1)
		out[o++] = '.';
done:
	out[o] = '\0';
	return o;
}
