/*
 * fuzz_config.c - libFuzzer target: the JSON configuration parser.
 *
 * Any input must parse or be refused with a message, never crash; and
 * whatever parses must round-trip: to_json(parse(x)) parses to the same
 * configuration, byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	shl_config *c = NULL;
	shl_err e = {{0}};
	int r = shl_config_parse((const char *)data, size, &c, &e);
	if (r != 0) {
		if (e.msg[0] == 0 || c != NULL)
			abort(); /* a refusal always says why, and returns nothing */
		return 0;
	}
	char *j = shl_config_to_json(c);
	if (j == NULL)
		abort();
	shl_config *d = NULL;
	if (shl_config_parse(j, strlen(j), &d, &e) != 0)
		abort();
	if (memcmp(&c->slot, &d->slot, sizeof(c->slot)) != 0)
		abort();
	free(j);
	shl_config_free(c);
	shl_config_free(d);
	return 0;
}
