/*
 * ticket.h - an admission (shl_ticket) as text, so that another process (a
 * later shell command) can settle or cancel it: every field in declaration
 * order, colon-separated decimals after a version tag,
 *   "t1:model:pool:state:batch:rpm:itpm:otpm:spend:month:pad:generation:
 *    admitted_at:full0:full1:full2"
 * (documented in tools/README.md).  The one place the format is written
 * and read.
 */
#ifndef SHL_TOOLS_TICKET_H
#define SHL_TOOLS_TICKET_H

#include <stddef.h>

#include "shmlimit.h"

#define TICKET_TAG "t1"
#define TICKET_FIELDS 16
#define TICKET_TEXT_MAX 512 /* a formatted ticket always fits */

/* Format `t` into buf (TICKET_TEXT_MAX bytes is always enough). */
void ticket_format(const shl_ticket *t, char *buf, size_t len);

/* Parse a ticket; 0, or -1 with which field was wrong written into why. */
int ticket_parse(const char *s, shl_ticket *t, char *why, size_t whylen);

#endif
