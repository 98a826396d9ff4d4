/*
 * frame: stream framing. See include/rrcache/frame.h.
 */
#include "rrcache/frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int rrc_frame_room(struct rrc_frame *f, size_t initial, uint8_t **at, size_t *room)
{
	size_t rest = f->len - f->off;
	size_t need = rest >= 2 ? 2 + (size_t)rrc_get16(f->buf + f->off) : initial;
	if (need < initial)
		need = initial;
	int rc = 0;
	if (f->off + need > f->cap) {
		if (f->off) {
			rrc_frame_compact(f);
		}
		if (need > f->cap) {
			uint8_t *nb = realloc(f->buf, need);
			if (nb) {
				f->buf = nb;
				f->cap = need;
			} else {
				rc = -ENOMEM;
			}
		}
	}
	*at = f->buf ? f->buf + f->len : NULL;
	*room = f->buf ? f->cap - f->len : 0;
	return rc;
}

void rrc_frame_added(struct rrc_frame *f, size_t n)
{
	f->len += n;
}

bool rrc_frame_next(struct rrc_frame *f, const uint8_t **msg, size_t *len)
{
	size_t rest = f->len - f->off;
	if (rest < 2)
		return false;
	size_t mlen = rrc_get16(f->buf + f->off);
	if (rest - 2 < mlen)
		return false;
	*msg = f->buf + f->off + 2;
	*len = mlen;
	f->off += 2 + mlen;
	return true;
}

void rrc_frame_compact(struct rrc_frame *f)
{
	if (f->off == 0)
		return;
	memmove(f->buf, f->buf + f->off, f->len - f->off);
	f->len -= f->off;
	f->off = 0;
}

void rrc_frame_clear(struct rrc_frame *f)
{
	f->len = f->off = 0;
}

void rrc_frame_free(struct rrc_frame *f)
{
	free(f->buf);
	f->buf = NULL;
	f->len = f->cap = f->off = 0;
}
