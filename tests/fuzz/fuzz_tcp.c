/*
 * libFuzzer target for TCP framing (frame, as the listener uses it): a byte stream cut
 * anywhere. The input's first two bytes choose the cuts, the rest is the stream. Fed in those
 * pieces, with the listener's initial buffer, the messages that come out must be exactly the
 * ones the whole stream holds, in order, and nothing may be read outside the buffer.
 */
#include "rrcache/frame.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint32_t rnd = (uint32_t)data[0] << 8 | data[1] | 1u;
	const uint8_t *stream = data + 2;
	size_t len = size - 2;
	/* The messages of the whole stream, by offset. */
	size_t expect_off[4096], expect_len[4096], n_expect = 0;
	for (size_t o = 0; o + 2 <= len && n_expect < 4096;) {
		size_t m = rrc_get16(stream + o);
		if (o + 2 + m > len)
			break;
		expect_off[n_expect] = o + 2;
		expect_len[n_expect++] = m;
		o += 2 + m;
	}
	struct rrc_frame f = {0};
	size_t fed = 0, got = 0;
	while (fed < len) {
		uint8_t *at;
		size_t room;
		if (rrc_frame_room(&f, 16, &at, &room) != 0 || room == 0)
			abort();
		rnd ^= rnd << 13;
		rnd ^= rnd >> 17;
		rnd ^= rnd << 5;
		size_t cut = 1 + rnd % 700;
		if (cut > room)
			cut = room;
		if (cut > len - fed)
			cut = len - fed;
		memcpy(at, stream + fed, cut);
		fed += cut;
		rrc_frame_added(&f, cut);
		const uint8_t *msg;
		size_t mlen;
		while (rrc_frame_next(&f, &msg, &mlen)) {
			if (got >= n_expect || mlen != expect_len[got] ||
			    memcmp(msg, stream + expect_off[got], mlen) != 0)
				abort();
			got++;
		}
		rrc_frame_compact(&f);
	}
	if (got != n_expect && n_expect < 4096)
		abort();
	rrc_frame_free(&f);
	return 0;
}
