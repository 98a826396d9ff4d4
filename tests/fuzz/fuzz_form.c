/*
 * libFuzzer target for the statistics endpoint's request arguments: a form-encoded body, its
 * name= and all= values, and the name's conversion to wire form (what a flush acts on). A
 * value is taken whole or refused: a taken one has no NUL and fits its buffer.
 */
#include "rrcache/form.h"
#include "rrcache/msg.h"
#include "rrcache/wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char body[4097];
	if (size >= sizeof(body))
		return 0;
	memcpy(body, data, size);
	body[size] = '\0';
	char name[1100], all[8];
	enum rrc_form_field fn = rrc_form_value(body, "name", name, sizeof(name));
	enum rrc_form_field fa = rrc_form_value(body, "all", all, sizeof(all));
	if (fa == RRC_FORM_OK && strlen(all) >= sizeof(all))
		abort();
	if (fn != RRC_FORM_OK)
		return 0;
	if (strlen(name) >= sizeof(name))
		abort();
	uint8_t wire[RRC_WIRE_MAX_NAME];
	size_t len = 0;
	if (rrc_msg_name_from_text(name, wire, &len) == 0) {
		size_t end, nlen;
		if (len > RRC_WIRE_MAX_NAME ||
		    rrc_wire_name(wire, len, 0, &end, &nlen, NULL) != 0 || end != len)
			abort();
	}
	return 0;
}
