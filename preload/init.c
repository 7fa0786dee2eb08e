/*
 * init.c - the shim's process state: the real libcurl functions, the
 * environment, the segment, and the rule of one stderr line per cause.
 *
 * Every hook calls shim_init() first.  The first call, from whichever
 * thread, resolves libcurl's own functions with dlsym(RTLD_NEXT) (refusing
 * a pointer to our own hook), reads SHMLIMIT_SEGMENT, SHMLIMIT_WAIT_MS and
 * SHMLIMIT_HOSTS (and, through route.c, SHMLIMIT_ROUTE), creates the handle
 * table and attaches the segment.  All of it is written once, under
 * pthread_once, and only read afterwards: the other files read g_shl,
 * g_ht, g_wait_ns and g_hosts without a lock.
 *
 * What it assumes
 *   - do_init calls no libcurl function, so a hook cannot re-enter it.
 *
 * What it deliberately does not do
 *   - It does not fail: when the segment cannot be attached (or there is no
 *     memory for the table), g_shl stays NULL and every hook passes straight
 *     through to libcurl, after one stderr line.
 *   - It does not read the environment again: a process that changes it
 *     after its first libcurl call keeps what was read then.
 */
#define CURL_DISABLE_TYPECHECK 1
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "shim.h"

#define PREFIX "shmlimit-preload: "
#define WAIT_MS_DEFAULT 60000

/* ------------------------------------------------------------------ */
/* Real libcurl functions                                              */
/* ------------------------------------------------------------------ */

struct shim_real real;

/* ------------------------------------------------------------------ */
/* Process state (written once under pthread_once, read-only after)    */
/* ------------------------------------------------------------------ */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
shl_t *g_shl;          /* NULL: pass everything through */
struct cds_lfht *g_ht; /* CURL * -> struct hs */
int64_t g_wait_ns;
struct host g_hosts[MAX_HOSTS];
int g_nhosts;

/* ------------------------------------------------------------------ */
/* One stderr line per cause                                           */
/* ------------------------------------------------------------------ */

static atomic_int warned[C_NCAUSES];

void shim_warn_once(enum cause c, const char *fmt, ...)
{
	int expect = 0;
	/* relaxed: the flag only deduplicates messages, it orders nothing. */
	if (!atomic_compare_exchange_strong_explicit(&warned[c], &expect, 1,
						     memory_order_relaxed,
						     memory_order_relaxed))
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, PREFIX "%s\n", line);
}

/* ------------------------------------------------------------------ */
/* Initialisation                                                      */
/* ------------------------------------------------------------------ */

/* dlsym(RTLD_NEXT), refusing our own hook (a loop, not the real thing). */
static void *resolve(const char *name, void *self)
{
	void *p = dlsym(RTLD_NEXT, name);
	return p == self ? NULL : p;
}

static void parse_hosts(const char *list)
{
	snprintf(g_hosts[0].name, sizeof(g_hosts[0].name), "api.anthropic.com");
	g_hosts[0].port = 443;
	g_nhosts = 1;
	if (list == NULL)
		return;
	const char *p = list;
	while (*p != '\0' && g_nhosts < MAX_HOSTS) {
		size_t n = strcspn(p, ",");
		if (n > 0 && n < sizeof(g_hosts[0].name)) {
			struct host *h = &g_hosts[g_nhosts];
			memcpy(h->name, p, n);
			h->name[n] = '\0';
			/* host:port; IPv6 as [::1]:port; no port means 443. */
			char *colon = strrchr(h->name, ':');
			char *rb = strrchr(h->name, ']');
			h->port = 443;
			if (colon != NULL && (rb == NULL || colon > rb)) {
				char *end;
				errno = 0;
				long port = strtol(colon + 1, &end, 10);
				if (errno != 0 || *end != '\0' || port <= 0 || port > 65535) {
					shim_warn_once(C_ENV, "SHMLIMIT_HOSTS: bad port in \"%s\"; entry ignored",
						  h->name);
					p += n + (p[n] == ',');
					continue;
				}
				h->port = port;
				*colon = '\0';
			}
			g_nhosts++;
		}
		p += n + (p[n] == ',');
	}
}

static void init_real(void)
{
	real.easy_setopt = (CURLcode(*)(CURL *, CURLoption, ...))resolve(
		"curl_easy_setopt", (void *)curl_easy_setopt);
	real.easy_perform = (CURLcode(*)(CURL *))resolve("curl_easy_perform",
							 (void *)curl_easy_perform);
	real.easy_cleanup = (void (*)(CURL *))resolve("curl_easy_cleanup",
						      (void *)curl_easy_cleanup);
	real.easy_reset = (void (*)(CURL *))resolve("curl_easy_reset", (void *)curl_easy_reset);
	real.easy_duphandle = (CURL * (*)(CURL *)) resolve("curl_easy_duphandle",
							   (void *)curl_easy_duphandle);
	real.easy_getinfo = (CURLcode(*)(CURL *, CURLINFO, ...))resolve("curl_easy_getinfo",
									NULL);
	real.multi_add = (CURLMcode(*)(CURLM *, CURL *))resolve(
		"curl_multi_add_handle", (void *)curl_multi_add_handle);
	real.multi_remove = (CURLMcode(*)(CURLM *, CURL *))resolve(
		"curl_multi_remove_handle", (void *)curl_multi_remove_handle);
	real.multi_info_read = (CURLMsg * (*)(CURLM *, int *)) resolve(
		"curl_multi_info_read", (void *)curl_multi_info_read);
}

static void do_init(void)
{
	init_real();
	const char *seg = getenv("SHMLIMIT_SEGMENT");
	if (seg == NULL || seg[0] == '\0') {
		shim_warn_once(C_NOSEG, "SHMLIMIT_SEGMENT is not set; requests pass through ungoverned");
		return;
	}
	g_wait_ns = (int64_t)WAIT_MS_DEFAULT * 1000000;
	const char *w = getenv("SHMLIMIT_WAIT_MS");
	if (w != NULL && w[0] != '\0') {
		char *end;
		errno = 0;
		long long ms = strtoll(w, &end, 10);
		if (errno != 0 || *end != '\0' || ms > INT64_MAX / 1000000)
			shim_warn_once(C_ENV, "SHMLIMIT_WAIT_MS=\"%s\" is not a number of milliseconds; using %d",
				  w, WAIT_MS_DEFAULT);
		else
			g_wait_ns = ms < 0 ? -1 : (int64_t)ms * 1000000;
	}
	parse_hosts(getenv("SHMLIMIT_HOSTS"));

	/* Fixed size, no auto-resize: no call_rcu worker thread to survive fork. */
	struct cds_lfht *ht = cds_lfht_new(1024, 1024, 1024, 0, NULL);
	if (ht == NULL) {
		shim_warn_once(C_NOMEM, "out of memory; requests pass through ungoverned");
		return;
	}
	shl_err err = {{0}};
	shl_t *h = NULL;
	/* shl_attach also registers urcu-bp's fork handlers (pthread_atfork),
	 * which cover this table too; registering them twice would deadlock. */
	int r = shl_attach(seg, 0, &h, &err);
	if (r < 0) {
		shim_warn_once(C_ATTACH, "segment \"%s\": %s%s%s; requests pass through ungoverned", seg,
			  shl_strerror(r), err.msg[0] ? ": " : "", err.msg);
		cds_lfht_destroy(ht, NULL);
		return;
	}
	g_ht = ht;
	g_shl = h;
	shim_route_init(h, (void (*)(void))real.easy_setopt);
}

void shim_init(void)
{
	pthread_once(&init_once, do_init);
}

