/*
 * frame: DNS messages over a stream (RFC 1035 §4.2.2: a two-octet length, then the message),
 * reassembled from reads that may cut the stream anywhere: inside the length, inside a
 * message, or between several messages. Pure; one per connection. The buffer grows to the
 * largest message it must hold whole (at most 2 + 65535 bytes).
 */
#ifndef RRCACHE_FRAME_H
#define RRCACHE_FRAME_H

#include "rrcache/defs.h"

struct rrc_frame {
	uint8_t *buf;
	size_t len; /* bytes buffered */
	size_t cap;
	size_t off; /* the first byte not yet handed out */
};

/* Room for the next read, at least `initial` bytes and enough for the message being read to
 * fit whole; *at and *room say where and how much. Returns 0, or -ENOMEM (*room is then what
 * is left, perhaps 0). */
int rrc_frame_room(struct rrc_frame *f, size_t initial, uint8_t **at, size_t *room);
/* n bytes were read into the room. */
void rrc_frame_added(struct rrc_frame *f, size_t n);
/* The next complete message: true with *msg (inside the buffer, valid until the next
 * rrc_frame_compact or rrc_frame_room) and *len; false while more bytes are needed. */
bool rrc_frame_next(struct rrc_frame *f, const uint8_t **msg, size_t *len);
/* Drops what was handed out; the incomplete rest moves to the start of the buffer. */
void rrc_frame_compact(struct rrc_frame *f);
/* Drops everything buffered (the stream's input is discarded). */
void rrc_frame_clear(struct rrc_frame *f);
void rrc_frame_free(struct rrc_frame *f);

#endif
