/*
 * common.h - what shmlimit-stat and shmlimit-ctl share: the exit codes each
 * library error maps to, checked number parsing, and file reading.
 *
 * The exit codes are part of the tools' interface (scripts test them), so
 * they are listed once here and documented in tools/README.md and in both
 * man pages under EXIT STATUS.
 */
#ifndef SHL_TOOLS_COMMON_H
#define SHL_TOOLS_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum tool_exit {
	TX_OK = 0,
	TX_FAIL = 1,         /* any other error (I/O, out of memory, ...) */
	TX_USAGE = 2,       /* bad command line */
	TX_NOSEG = 3,        /* no such segment (ENOENT) */
	TX_PERM = 4,         /* permission denied (EACCES, EPERM) */
	TX_INCOMPAT = 5,     /* not a libshmlimit segment, other layout, bad size */
	TX_CORRUPT = 6,      /* segment is corrupt (EUCLEAN) */
	TX_CONFIG = 7,       /* invalid configuration or argument (EINVAL) */
	TX_EXISTS = 8,       /* segment already exists (EEXIST) */
	TX_REFUSED = 9,      /* try: not admitted now (EAGAIN, ETIMEDOUT) */
	TX_NEVER = 10,       /* try: can never be admitted (E2BIG) or spend cap (EDQUOT) */
	TX_NOMODEL = 11,     /* try: no pool for this model (ESRCH) */
	TX_TICKET = 12,      /* settle/cancel: ticket already settled or cancelled (EALREADY) */
	TX_API_AUTH = 13,    /* sync: the Admin API refused the key (401, 403) */
	TX_API_NET = 14,     /* sync: the API could not be reached, or answered another error */
	TX_API_BAD = 15,     /* sync: the API's answer could not be read */
};

/* Exit code for a negative errno returned by the library. */
int tool_exit_code(int err);

/*
 * Parse a whole string as a non-negative decimal integer <= max.  Returns 0
 * and sets *out, or -EINVAL (empty, sign, trailing junk) / -ERANGE.
 */
int tool_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* The same for a signed value in [min, max]. */
int tool_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* Parse a non-negative number of seconds (decimals allowed, <= 1e6) into ns. */
int tool_parse_seconds(const char *s, int64_t *ns);

/*
 * Read a whole file ("-" = standard input) into a NUL-terminated malloc'd
 * buffer.  Returns 0 or a negative errno.
 */
int tool_read_file(const char *path, char **buf, size_t *len);

struct shl_stats;
struct shl_pool_stats;
/* The statistics of the pool whose index (shl_ticket.pool, shl_refusal.pool)
 * is `index`, or NULL: a snapshot's pools[] is compacted, so its position
 * is not the index. */
const struct shl_pool_stats *tool_pool_stats(const struct shl_stats *s, int index);

/* USD from spend units, for printing. */
double tool_usd(int64_t units);

#endif
