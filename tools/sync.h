/*
 * sync.h - `shmlimit-ctl sync`: the organisation's real limits from the
 * Rate Limits API into a live segment (tools/sync.c).  ctl.c puts it in
 * its command table; the option tables live in sync.c.
 */
#ifndef SHL_TOOLS_SYNC_H
#define SHL_TOOLS_SYNC_H

#define SYNC_SYNOPSIS "sync NAME [--dry-run] [--base-url URL] [--timeout SECONDS]"
#define SYNC_HELP                                                                         \
	"Read the organisation's limits from the Rate Limits API\n"                      \
	"(GET /v1/organizations/rate_limits, every page) and make the segment's\n"       \
	"configuration match them: one pool per model group with every model id and\n"   \
	"alias listed, a 'message_batches' entry for the batch group, a\n"              \
	"'count_tokens' entry for the token_count group.  Prices, the spend cap and\n"   \
	"the unknown_model policy come from the live configuration (prices of ids it\n"  \
	"does not know: from the built-in presets, else its catch-all pool).  Applied\n" \
	"live, as apply does; a second sync with nothing new changes nothing.\n"         \
	"The Admin API key is read from $ANTHROPIC_ADMIN_KEY.\n"                         \
	"  -n, --dry-run        print the difference, change nothing\n"                 \
	"  -u, --base-url URL   the API's address (default $SHMLIMIT_ADMIN_URL, else\n"  \
	"                       https://api.anthropic.com)\n"                            \
	"  -T, --timeout SECONDS  give up on the API after SECONDS (default 30)\n"        \
	"Exit status: 0 in sync (or changed), 13 the API refused the key (401, 403),\n"  \
	"14 the API could not be reached or answered an error, 15 its answer could\n"   \
	"not be read; on any of these nothing is changed.\n"

int cmd_sync(int argc, char **argv);

#endif
