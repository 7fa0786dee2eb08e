/*
 * stub.c - libshmlimit-preload.so itself: the hooks, and the loading of
 * the shim's implementation the first time a hook runs.
 *
 * Why a stub.  Shell fleets start one `curl` per request, so what the shim
 * costs a process before its first request counts as much as what it
 * costs per request.  Most of that was not the shim's own work but the
 * dynamic loader's: every library in the global scope (the program, then
 * each LD_PRELOAD object, then the program's libraries, then theirs) is
 * searched in order for every symbol every library binds at start-up,
 * about 9,000 for curl.  The shim used to bring liburcu-bp, liburcu-cds,
 * cJSON and libm into that scope ahead of libcurl's own dependencies, and
 * that alone cost curl about 1.5 million instructions (10% of a
 * one-request run; `valgrind --tool=callgrind`, bench/README.md).  This
 * object needs nothing but libc: the implementation
 * (libshmlimit-preload-impl.so, from the same directory) is loaded with
 * dlopen(RTLD_LOCAL) by the first hook of a process that names a segment,
 * so its libraries bind against the global scope once each and never
 * join it.  A process without SHMLIMIT_SEGMENT never loads it, nor does a
 * process that never uses libcurl (a shell script exporting LD_PRELOAD).
 *
 * When it is loaded
 *   - at start-up (this object's constructor) when libcurl is already
 *     there and SHMLIMIT_SEGMENT is set: still single-threaded, so no
 *     fork() of another thread can catch the loader half-way;
 *   - otherwise (libcurl dlopened later, as by PHP's curl extension) by
 *     the first hook; a fork() meanwhile waits for it (pthread_atfork),
 *     since a child that inherited the loader's lock mid-dlopen would hang.
 *
 * What it does
 *   - resolves libcurl's functions with dlsym(RTLD_NEXT), refusing its own
 *     hooks, and hands them to the implementation (shim_impl_start, in
 *     init.c): from inside an RTLD_LOCAL object RTLD_NEXT has no "next";
 *   - forwards every hook to the implementation's hook of the same name
 *     (which libcurl's internal calls, through the PLT, reach here too),
 *     or straight to libcurl when the implementation is not loaded.
 *
 * What it deliberately does not do
 *   - It never fails a call: without SHMLIMIT_SEGMENT, or when the
 *     implementation cannot be loaded, every hook passes straight through
 *     to libcurl, after one stderr line.
 *   - It exports exactly the implementation's hooks (preload/preload.map;
 *     preload/tests/run.sh checks both lists): a hook added to hooks.c
 *     needs its forwarder here.
 */
#define CURL_DISABLE_TYPECHECK 1
#define CURL_DISABLE_DEPRECATION 1 /* curl_multi_socket, curl_multi_socket_all */
#define CURL_ALLOW_OLD_MULTI_SOCKET 1 /* curl_multi_socket is a function, not a macro */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "shim.h"

#define HOOK __attribute__((visibility("default")))
#define PREFIX "shmlimit-preload: "
#define IMPL_NAME "libshmlimit-preload-impl.so"

static struct shim_real lc; /* libcurl's own functions */
static struct shim_real hk; /* where the hooks go: the implementation's, or lc */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER; /* held across a load */
static char impl_path[PATH_MAX];

static void fork_prepare(void)
{
	pthread_mutex_lock(&load_mu);
}

static void fork_after(void)
{
	pthread_mutex_unlock(&load_mu);
}

static void load(void);

/* The implementation's path, next to this object's, made absolute now:
 * the program may change directory before its first libcurl call. */
static void where(void)
{
	Dl_info di;
	if (dladdr((void *)where, &di) == 0 || di.dli_fname == NULL)
		return;
	const char *slash = strrchr(di.dli_fname, '/');
	size_t dir = slash ? (size_t)(slash - di.dli_fname) + 1 : 0;
	char cwd[PATH_MAX] = "";
	if (di.dli_fname[0] != '/' && getcwd(cwd, sizeof(cwd) - 1) != NULL)
		strcat(cwd, "/");
	int n = snprintf(impl_path, sizeof(impl_path), "%s%.*s%s", cwd, (int)dir, di.dli_fname,
			 IMPL_NAME);
	if (n < 0 || (size_t)n >= sizeof(impl_path))
		impl_path[0] = '\0';
}

__attribute__((constructor)) static void stub_start(void)
{
	where();
	pthread_atfork(fork_prepare, fork_after, fork_after);
	const char *seg = getenv("SHMLIMIT_SEGMENT");
	if (seg != NULL && seg[0] != '\0' && dlsym(RTLD_NEXT, "curl_easy_perform") != NULL)
		pthread_once(&once, load);
}

static void *next(const char *name, void *self)
{
	void *p = dlsym(RTLD_NEXT, name);
	return p == self ? NULL : p;
}

/* The multi interface's loop functions (the shim holds transfers back in
 * them, hold.c): from libcurl (`impl` NULL: RTLD_NEXT, never ourselves) or
 * from the implementation.  Functions an old libcurl lacks stay NULL. */
static void multi_fill(struct shim_real *r, void *impl)
{
	r->multi_perform = (CURLMcode(*)(CURLM *, int *))(
		impl ? dlsym(impl, "curl_multi_perform")
		     : next("curl_multi_perform", (void *)curl_multi_perform));
	r->multi_poll = (CURLMcode(*)(CURLM *, struct curl_waitfd *, unsigned int, int, int *))(
		impl ? dlsym(impl, "curl_multi_poll") : next("curl_multi_poll", (void *)curl_multi_poll));
	r->multi_wait = (CURLMcode(*)(CURLM *, struct curl_waitfd *, unsigned int, int, int *))(
		impl ? dlsym(impl, "curl_multi_wait") : next("curl_multi_wait", (void *)curl_multi_wait));
	r->multi_socket_action = (CURLMcode(*)(CURLM *, curl_socket_t, int, int *))(
		impl ? dlsym(impl, "curl_multi_socket_action")
		     : next("curl_multi_socket_action", (void *)curl_multi_socket_action));
	r->multi_socket = (CURLMcode(*)(CURLM *, curl_socket_t, int *))(
		impl ? dlsym(impl, "curl_multi_socket")
		     : next("curl_multi_socket", (void *)curl_multi_socket));
	r->multi_socket_all = (CURLMcode(*)(CURLM *, int *))(
		impl ? dlsym(impl, "curl_multi_socket_all")
		     : next("curl_multi_socket_all", (void *)curl_multi_socket_all));
	r->multi_timeout = (CURLMcode(*)(CURLM *, long *))(
		impl ? dlsym(impl, "curl_multi_timeout")
		     : next("curl_multi_timeout", (void *)curl_multi_timeout));
	r->multi_setopt = (CURLMcode(*)(CURLM *, CURLMoption, ...))(
		impl ? dlsym(impl, "curl_multi_setopt")
		     : next("curl_multi_setopt", (void *)curl_multi_setopt));
	r->multi_cleanup = (CURLMcode(*)(CURLM *))(
		impl ? dlsym(impl, "curl_multi_cleanup")
		     : next("curl_multi_cleanup", (void *)curl_multi_cleanup));
}

static void load_locked(void);
static void load(void)
{
	pthread_mutex_lock(&load_mu);
	load_locked();
	pthread_mutex_unlock(&load_mu);
}

static void load_locked(void)
{
	lc.easy_setopt = (CURLcode(*)(CURL *, CURLoption, ...))next("curl_easy_setopt",
								     (void *)curl_easy_setopt);
	lc.easy_perform = (CURLcode(*)(CURL *))next("curl_easy_perform", (void *)curl_easy_perform);
	lc.easy_cleanup = (void (*)(CURL *))next("curl_easy_cleanup", (void *)curl_easy_cleanup);
	lc.easy_reset = (void (*)(CURL *))next("curl_easy_reset", (void *)curl_easy_reset);
	lc.easy_duphandle = (CURL * (*)(CURL *)) next("curl_easy_duphandle",
						      (void *)curl_easy_duphandle);
	lc.easy_getinfo = (CURLcode(*)(CURL *, CURLINFO, ...))next("curl_easy_getinfo", NULL);
	lc.multi_add = (CURLMcode(*)(CURLM *, CURL *))next("curl_multi_add_handle",
							   (void *)curl_multi_add_handle);
	lc.multi_remove = (CURLMcode(*)(CURLM *, CURL *))next("curl_multi_remove_handle",
							      (void *)curl_multi_remove_handle);
	lc.multi_info_read = (CURLMsg * (*)(CURLM *, int *)) next("curl_multi_info_read",
								  (void *)curl_multi_info_read);
	multi_fill(&lc, NULL);
	hk = lc;
	const char *seg = getenv("SHMLIMIT_SEGMENT");
	if (seg == NULL || seg[0] == '\0') {
		fprintf(stderr, PREFIX "SHMLIMIT_SEGMENT is not set; requests pass through ungoverned\n");
		return;
	}
	void *impl = impl_path[0] ? dlopen(impl_path, RTLD_LAZY | RTLD_LOCAL) : NULL;
	void (*start)(const struct shim_real *) = NULL;
	struct shim_real h = lc;
	if (impl != NULL) {
		start = (void (*)(const struct shim_real *))dlsym(impl, "shim_impl_start");
		h.easy_setopt = (CURLcode(*)(CURL *, CURLoption, ...))dlsym(impl, "curl_easy_setopt");
		h.easy_perform = (CURLcode(*)(CURL *))dlsym(impl, "curl_easy_perform");
		h.easy_cleanup = (void (*)(CURL *))dlsym(impl, "curl_easy_cleanup");
		h.easy_reset = (void (*)(CURL *))dlsym(impl, "curl_easy_reset");
		h.easy_duphandle = (CURL * (*)(CURL *)) dlsym(impl, "curl_easy_duphandle");
		h.multi_add = (CURLMcode(*)(CURLM *, CURL *))dlsym(impl, "curl_multi_add_handle");
		h.multi_remove = (CURLMcode(*)(CURLM *, CURL *))dlsym(impl,
								   "curl_multi_remove_handle");
		h.multi_info_read = (CURLMsg * (*)(CURLM *, int *)) dlsym(impl,
									  "curl_multi_info_read");
		multi_fill(&h, impl);
	}
	if (impl == NULL || start == NULL || !h.easy_setopt || !h.easy_perform ||
	    !h.easy_cleanup || !h.easy_reset || !h.easy_duphandle || !h.multi_add ||
	    !h.multi_remove || !h.multi_info_read || !h.multi_perform || !h.multi_wait ||
	    !h.multi_timeout || !h.multi_socket_action || !h.multi_setopt || !h.multi_cleanup) {
		const char *why = impl == NULL ? dlerror() : "not the shim's implementation";
		fprintf(stderr, PREFIX "cannot load %s: %s; requests pass through ungoverned\n",
			impl_path[0] ? impl_path : IMPL_NAME, why ? why : "not found");
		return; /* the object stays loaded (nodelete): nothing to undo */
	}
	start(&lc);
	hk = h;
}

/* ------------------------------------------------------------------ */
/* The hooks: each loads once, then forwards                           */
/* ------------------------------------------------------------------ */

HOOK CURLcode curl_easy_setopt(CURL *curl, CURLoption opt, ...)
{
	long lv = 0;
	void *pv = NULL;
	void (*fv)(void) = NULL;
	curl_off_t ov = 0;
	int type;
	va_list ap;
	/* Decode the argument by option-number range, as libcurl does. */
	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT) {
		lv = va_arg(ap, long);
		type = 0;
	} else if (opt < CURLOPTTYPE_FUNCTIONPOINT) {
		pv = va_arg(ap, void *);
		type = 1;
	} else if (opt < CURLOPTTYPE_OFF_T) {
		fv = va_arg(ap, void (*)(void));
		type = 2;
	} else if (opt < CURLOPTTYPE_BLOB) {
		ov = va_arg(ap, curl_off_t);
		type = 3;
	} else {
		pv = va_arg(ap, void *); /* struct curl_blob * */
		type = 1;
	}
	va_end(ap);
	pthread_once(&once, load);
	if (hk.easy_setopt == NULL)
		return CURLE_FAILED_INIT;
	switch (type) {
	case 0: return hk.easy_setopt(curl, opt, lv);
	case 1: return hk.easy_setopt(curl, opt, pv);
	case 2: return hk.easy_setopt(curl, opt, fv);
	default: return hk.easy_setopt(curl, opt, ov);
	}
}

HOOK CURLcode curl_easy_perform(CURL *curl)
{
	pthread_once(&once, load);
	return hk.easy_perform ? hk.easy_perform(curl) : CURLE_FAILED_INIT;
}

HOOK CURLMcode curl_multi_add_handle(CURLM *multi, CURL *curl)
{
	pthread_once(&once, load);
	return hk.multi_add ? hk.multi_add(multi, curl) : CURLM_INTERNAL_ERROR;
}

HOOK CURLMsg *curl_multi_info_read(CURLM *multi, int *msgs_in_queue)
{
	pthread_once(&once, load);
	return hk.multi_info_read ? hk.multi_info_read(multi, msgs_in_queue) : NULL;
}

HOOK CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *curl)
{
	pthread_once(&once, load);
	return hk.multi_remove ? hk.multi_remove(multi, curl) : CURLM_INTERNAL_ERROR;
}

HOOK void curl_easy_cleanup(CURL *curl)
{
	pthread_once(&once, load);
	if (hk.easy_cleanup != NULL)
		hk.easy_cleanup(curl);
}

HOOK void curl_easy_reset(CURL *curl)
{
	pthread_once(&once, load);
	if (hk.easy_reset != NULL)
		hk.easy_reset(curl);
}

HOOK CURL *curl_easy_duphandle(CURL *curl)
{
	pthread_once(&once, load);
	return hk.easy_duphandle ? hk.easy_duphandle(curl) : NULL;
}

HOOK CURLMcode curl_multi_perform(CURLM *multi, int *running_handles)
{
	pthread_once(&once, load);
	return hk.multi_perform ? hk.multi_perform(multi, running_handles) : CURLM_INTERNAL_ERROR;
}

HOOK CURLMcode curl_multi_poll(CURLM *multi, struct curl_waitfd extra_fds[], unsigned int n,
			       int timeout_ms, int *numfds)
{
	pthread_once(&once, load);
	return hk.multi_poll ? hk.multi_poll(multi, extra_fds, n, timeout_ms, numfds)
			     : CURLM_INTERNAL_ERROR;
}

HOOK CURLMcode curl_multi_wait(CURLM *multi, struct curl_waitfd extra_fds[], unsigned int n,
			       int timeout_ms, int *numfds)
{
	pthread_once(&once, load);
	return hk.multi_wait ? hk.multi_wait(multi, extra_fds, n, timeout_ms, numfds)
			     : CURLM_INTERNAL_ERROR;
}

HOOK CURLMcode curl_multi_timeout(CURLM *multi, long *timeout_ms)
{
	pthread_once(&once, load);
	return hk.multi_timeout ? hk.multi_timeout(multi, timeout_ms) : CURLM_INTERNAL_ERROR;
}

HOOK CURLMcode curl_multi_socket_action(CURLM *multi, curl_socket_t sockfd, int ev_bitmask,
					int *running_handles)
{
	pthread_once(&once, load);
	return hk.multi_socket_action ? hk.multi_socket_action(multi, sockfd, ev_bitmask,
							       running_handles)
				      : CURLM_INTERNAL_ERROR;
}

HOOK CURLMcode curl_multi_socket(CURLM *multi, curl_socket_t sockfd, int *running_handles)
{
	pthread_once(&once, load);
	return hk.multi_socket ? hk.multi_socket(multi, sockfd, running_handles)
			       : CURLM_INTERNAL_ERROR;
}

HOOK CURLMcode curl_multi_socket_all(CURLM *multi, int *running_handles)
{
	pthread_once(&once, load);
	return hk.multi_socket_all ? hk.multi_socket_all(multi, running_handles)
				   : CURLM_INTERNAL_ERROR;
}

HOOK CURLMcode curl_multi_setopt(CURLM *multi, CURLMoption opt, ...)
{
	long lv = 0;
	void *pv = NULL;
	void (*fv)(void) = NULL;
	curl_off_t ov = 0;
	int type;
	va_list ap;
	/* Decode the argument by option-number range, as libcurl does. */
	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT) {
		lv = va_arg(ap, long);
		type = 0;
	} else if (opt < CURLOPTTYPE_FUNCTIONPOINT) {
		pv = va_arg(ap, void *);
		type = 1;
	} else if (opt < CURLOPTTYPE_OFF_T) {
		fv = va_arg(ap, void (*)(void));
		type = 2;
	} else {
		ov = va_arg(ap, curl_off_t);
		type = 3;
	}
	va_end(ap);
	pthread_once(&once, load);
	if (hk.multi_setopt == NULL)
		return CURLM_INTERNAL_ERROR;
	switch (type) {
	case 0: return hk.multi_setopt(multi, opt, lv);
	case 1: return hk.multi_setopt(multi, opt, pv);
	case 2: return hk.multi_setopt(multi, opt, fv);
	default: return hk.multi_setopt(multi, opt, ov);
	}
}

HOOK CURLMcode curl_multi_cleanup(CURLM *multi)
{
	pthread_once(&once, load);
	return hk.multi_cleanup ? hk.multi_cleanup(multi) : CURLM_INTERNAL_ERROR;
}
