/*
 * ticket.c - the ticket's text format (ticket.h).
 */
#include "ticket.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/*
 * Every shl_ticket field in declaration order, pad included (the library
 * keeps a check value there):
 * "t1:model:pool:state:batch:rpm:itpm:otpm:spend:month:pad:generation:admitted_at:f0:f1:f2"
 */
void ticket_format(const shl_ticket *t, char *buf, size_t len)
{
	snprintf(buf, len,
		 TICKET_TAG ":%" PRId32 ":%" PRId32 ":%" PRIu32 ":%" PRIu32 ":%" PRIu64 ":%" PRIu64
			    ":%" PRIu64 ":%" PRId64 ":%" PRIu32 ":%" PRIu32 ":%" PRIu64 ":%" PRId64 ":%" PRIu64
			    ":%" PRIu64 ":%" PRIu64,
		 t->model, t->pool, t->state, t->batch, t->rpm, t->itpm, t->otpm, t->spend, t->month,
		 t->pad, t->generation, t->admitted_at, t->full_at[0], t->full_at[1], t->full_at[2]);
}

/* Parse a ticket string; on error writes which field was wrong into why. */
int ticket_parse(const char *s, shl_ticket *t, char *why, size_t whylen)
{
	static const char *const names[TICKET_FIELDS] = {
		"tag",   "model",      "pool",        "state",     "batch",
		"rpm",   "itpm",       "otpm",        "spend",     "month",
		"pad",   "generation", "admitted_at", "full_at[0]", "full_at[1]", "full_at[2]"};
	char copy[512];
	if (snprintf(copy, sizeof(copy), "%s", s) >= (int)sizeof(copy)) {
		snprintf(why, whylen, "too long");
		return -1;
	}
	char *field[TICKET_FIELDS];
	int n = 0;
	char *save = NULL;
	for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
		if (n == TICKET_FIELDS) {
			snprintf(why, whylen, "more than %d fields", TICKET_FIELDS);
			return -1;
		}
		field[n++] = p;
	}
	if (n != TICKET_FIELDS) {
		snprintf(why, whylen, "%d fields, expected %d", n, TICKET_FIELDS);
		return -1;
	}
	if (strcmp(field[0], TICKET_TAG) != 0) {
		snprintf(why, whylen, "does not start with '" TICKET_TAG ":'");
		return -1;
	}
	int64_t iv[TICKET_FIELDS];
	uint64_t uv[TICKET_FIELDS];
	memset(t, 0, sizeof(*t));
	for (int i = 1; i < TICKET_FIELDS; i++) {
		int r;
		if (i == 1 || i == 2)
			r = tool_parse_i64(field[i], 0, INT32_MAX, &iv[i]);
		else if (i == 8 || i == 12)
			r = tool_parse_i64(field[i], INT64_MIN, INT64_MAX, &iv[i]);
		else if (i == 3 || i == 4 || i == 9 || i == 10)
			r = tool_parse_u64(field[i], UINT32_MAX, &uv[i]);
		else
			r = tool_parse_u64(field[i], UINT64_MAX, &uv[i]);
		if (r != 0) {
			snprintf(why, whylen, "field %d (%s) '%s' is not a valid number", i, names[i],
				 field[i]);
			return -1;
		}
	}
	t->model = (int32_t)iv[1];
	t->pool = (int32_t)iv[2];
	t->state = (uint32_t)uv[3];
	t->batch = (uint32_t)uv[4];
	t->rpm = uv[5];
	t->itpm = uv[6];
	t->otpm = uv[7];
	t->spend = iv[8];
	t->month = (uint32_t)uv[9];
	t->pad = (uint32_t)uv[10];
	t->generation = uv[11];
	t->admitted_at = iv[12];
	t->full_at[0] = uv[13];
	t->full_at[1] = uv[14];
	t->full_at[2] = uv[15];
	if (t->pool >= SHL_MAX_POOLS || t->model >= SHL_MAX_MODELS) {
		snprintf(why, whylen, "pool %d / model %d out of range", t->pool, t->model);
		return -1;
	}
	return 0;
}
