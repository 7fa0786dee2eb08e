/*
 * common.c - helpers shared by shmlimit-stat and shmlimit-ctl: one mapping
 * from library error codes to exit codes, and number parsing that refuses
 * junk instead of silently reading 0 (no atoi).
 */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shmlimit.h"

int tool_exit_code(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return TX_OK;
	case ENOENT:
		return TX_NOSEG;
	case EACCES:
	case EPERM:
		return TX_PERM;
	case EPROTO:
	case EPROTONOSUPPORT:
	case EBADMSG:
		return TX_INCOMPAT;
	case EUCLEAN:
		return TX_CORRUPT;
	case EINVAL:
	case ENAMETOOLONG:
	case EOVERFLOW:
		return TX_CONFIG;
	case EEXIST:
		return TX_EXISTS;
	case EAGAIN:
	case ETIMEDOUT:
		return TX_REFUSED;
	case E2BIG:
	case EDQUOT:
		return TX_NEVER;
	case ESRCH:
	case ENOMSG:
		return TX_NOMODEL;
	case EALREADY:
		return TX_TICKET;
	default:
		return TX_FAIL;
	}
}

int tool_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (s == NULL || *s < '0' || *s > '9')
		return -EINVAL;
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno == ERANGE || v > max)
		return -ERANGE;
	if (errno != 0 || end == s || *end != '\0')
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

int tool_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	if (s == NULL || *s == '\0')
		return -EINVAL;
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	if (errno != 0 || end == s || *end != '\0')
		return -EINVAL;
	*out = (int64_t)v;
	return 0;
}

int tool_parse_seconds(const char *s, int64_t *ns)
{
	if (s == NULL || ((*s < '0' || *s > '9') && *s != '.'))
		return -EINVAL;
	char *end = NULL;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0)
		return -EINVAL;
	if (v > 1e6)
		return -ERANGE;
	*ns = (int64_t)llround(v * 1e9);
	return 0;
}

int tool_read_file(const char *path, char **buf, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (f == NULL)
		return -errno;
	struct stat st;
	if (f != stdin && fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(f); /* fopen opens a directory; reading it is EISDIR, said plainly */
		return -EISDIR;
	}
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	if (b == NULL)
		goto nomem;
	for (;;) {
		if (n + 1 >= cap) {
			if (cap > (16u << 20)) { /* a config is never this large */
				free(b);
				if (f != stdin)
					fclose(f);
				return -EFBIG;
			}
			char *nb = realloc(b, cap * 2);
			if (nb == NULL)
				goto nomem;
			b = nb;
			cap *= 2;
		}
		size_t got = fread(b + n, 1, cap - 1 - n, f);
		n += got;
		if (got == 0)
			break;
	}
	int bad = ferror(f);
	if (f != stdin)
		fclose(f);
	if (bad) {
		free(b);
		return -EIO;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
nomem:
	free(b);
	if (f != stdin)
		fclose(f);
	return -ENOMEM;
}

double tool_usd(int64_t units)
{
	return (double)units / (double)SHL_UNITS_PER_USD;
}

const struct shl_pool_stats *tool_pool_stats(const struct shl_stats *s, int index)
{
	for (int k = 0; s != NULL && k < s->npools && k < SHL_MAX_POOLS; k++)
		if (s->pools[k].index == index)
			return &s->pools[k];
	return NULL;
}
