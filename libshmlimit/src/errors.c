/*
 * errors.c - error messages and dimension names.
 *
 * The library returns negative errno values.  Their meanings in this
 * library come from one list, SHL_ERRNO_MAP in shmlimit.h, so the codes, the
 * messages and the documentation cannot drift apart.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *shl_strerror(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return "success";
#define X(code, msg) \
	case code:   \
		return msg;
		SHL_ERRNO_MAP(X)
#undef X
	default:
		return strerror(err);
	}
}

const char *shl_dim_name(int dim)
{
	static const char *const names[] = {"rpm", "itpm", "otpm", "spend", "hold"};
	if (dim >= 0 && dim < (int)(sizeof(names) / sizeof(names[0])))
		return names[dim];
	return "none";
}

void shl__err(shl_err *e, const char *fmt, ...)
{
	if (e == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}
