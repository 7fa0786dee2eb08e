/*
 * hooks.c - the interposed libcurl entry points of libshmlimit-preload.so.
 *
 * Loaded with LD_PRELOAD, this file puts every Claude Messages API request a
 * libcurl program makes through the shared limiter, without the program
 * knowing.  It remembers, per easy handle, the options that say what a
 * transfer will be (URL, method, body, the write/header callbacks); when the
 * transfer starts (curl_easy_perform, or curl_multi_add_handle) it decides
 * whether the request is governed and wraps the application's callbacks so
 * that it can read the response as the application receives it; it waits
 * for admission in curl_easy_perform before anything is sent, or, for the
 * multi interface, in libcurl's pre-request callback just before the
 * request is written (so that admission time is sending time); when the
 * transfer ends (perform returns,
 * curl_multi_info_read reports it done, or the handle is removed or cleaned
 * up) it settles the admission with what the server reported.
 *
 * What it assumes
 *   - libcurl's own rule that one handle is used by one thread at a time:
 *     the per-handle state needs no lock of its own.  The table that maps a
 *     handle to its state is shared by all threads: a liburcu lock-free hash
 *     table (cds_lfht, bulletproof flavour, so no thread has to register).
 *   - libcurl calls its own exported functions through the PLT: inside
 *     curl_easy_perform it calls curl_multi_add_handle, curl_multi_info_read
 *     and curl_multi_remove_handle on a private multi handle, and those
 *     calls land here too.  A thread-local marker lets them pass straight
 *     through.
 *
 * What it deliberately does not do
 *   - It never changes a byte the application sends or receives (unless
 *     SHMLIMIT_ROUTE asks for routing: route.c), and never
 *     makes a request fail for an internal reason: without a segment, with
 *     an incompatible one, with a body or response it cannot read, the
 *     request runs exactly as without the shim (one stderr line per cause).
 *   - It does not retry.  A refused request fails with
 *     CURLE_ABORTED_BY_CALLBACK before a byte of it is sent.
 *
 * Symbols: only the hooks are exported (preload/preload.map); libshmlimit
 * is linked in statically and hidden.
 */
#define CURL_DISABLE_TYPECHECK 1
#define CURL_DISABLE_DEPRECATION 1 /* CURLOPT_HTTPPOST is still an option apps use */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "shim.h"

#define HOOK __attribute__((visibility("default")))
#define PREFIX "shmlimit-preload: "
#define WAIT_MS_DEFAULT 60000
#define MAX_HOSTS 32
#define HOLD_DEFAULT_NS 1000000000LL  /* a 429 without retry-after holds 1 s */
#define READAHEAD_MAX (8u << 20)      /* read-callback bodies kept for replay */

/* ------------------------------------------------------------------ */
/* Real libcurl functions                                              */
/* ------------------------------------------------------------------ */

static struct {
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_perform)(CURL *);
	void (*easy_cleanup)(CURL *);
	void (*easy_reset)(CURL *);
	CURL *(*easy_duphandle)(CURL *);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	CURLMcode (*multi_add)(CURLM *, CURL *);
	CURLMcode (*multi_remove)(CURLM *, CURL *);
	CURLMsg *(*multi_info_read)(CURLM *, int *);
} real;

/* ------------------------------------------------------------------ */
/* Process state (written once under pthread_once, read-only after)    */
/* ------------------------------------------------------------------ */

struct host {
	char name[256];
	long port;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static shl_t *g_shl;          /* NULL: pass everything through */
static struct cds_lfht *g_ht; /* CURL * -> struct hs */
static int64_t g_wait_ns;
static struct host g_hosts[MAX_HOSTS];
static int g_nhosts;

/* Inside our curl_easy_perform: the handle, and libcurl's private multi. */
static __thread CURL *tl_easy;
static __thread CURLM *tl_easy_multi;

/* ------------------------------------------------------------------ */
/* One stderr line per cause                                           */
/* ------------------------------------------------------------------ */

enum cause {
	C_NOSEG, C_ATTACH, C_ENV, C_BODY, C_READCB, C_MODEL, C_ADMIT, C_RESP,
	C_NOMEM, C_NOPREREQ, C_NCAUSES
};
static atomic_int warned[C_NCAUSES];

__attribute__((format(printf, 2, 3)))
static void warn_once(enum cause c, const char *fmt, ...)
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
					warn_once(C_ENV, "SHMLIMIT_HOSTS: bad port in \"%s\"; entry ignored",
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

static void shim_init(void);

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
		warn_once(C_NOSEG, "SHMLIMIT_SEGMENT is not set; requests pass through ungoverned");
		return;
	}
	g_wait_ns = (int64_t)WAIT_MS_DEFAULT * 1000000;
	const char *w = getenv("SHMLIMIT_WAIT_MS");
	if (w != NULL && w[0] != '\0') {
		char *end;
		errno = 0;
		long long ms = strtoll(w, &end, 10);
		if (errno != 0 || *end != '\0' || ms > INT64_MAX / 1000000)
			warn_once(C_ENV, "SHMLIMIT_WAIT_MS=\"%s\" is not a number of milliseconds; using %d",
				  w, WAIT_MS_DEFAULT);
		else
			g_wait_ns = ms < 0 ? -1 : (int64_t)ms * 1000000;
	}
	parse_hosts(getenv("SHMLIMIT_HOSTS"));

	/* Fixed size, no auto-resize: no call_rcu worker thread to survive fork. */
	struct cds_lfht *ht = cds_lfht_new(1024, 1024, 1024, 0, NULL);
	if (ht == NULL) {
		warn_once(C_NOMEM, "out of memory; requests pass through ungoverned");
		return;
	}
	shl_err err = {{0}};
	shl_t *h = NULL;
	/* shl_attach also registers urcu-bp's fork handlers (pthread_atfork),
	 * which cover this table too; registering them twice would deadlock. */
	int r = shl_attach(seg, 0, &h, &err);
	if (r < 0) {
		warn_once(C_ATTACH, "segment \"%s\": %s%s%s; requests pass through ungoverned", seg,
			  shl_strerror(r), err.msg[0] ? ": " : "", err.msg);
		cds_lfht_destroy(ht, NULL);
		return;
	}
	g_ht = ht;
	g_shl = h;
	shim_route_init(h, (void (*)(void))real.easy_setopt);
}

static void shim_init(void)
{
	pthread_once(&init_once, do_init);
}

/* ------------------------------------------------------------------ */
/* Per-handle state                                                    */
/* ------------------------------------------------------------------ */

enum method { M_GET = 0, M_POST, M_MIME, M_PUT, M_HEAD };

/* Written and read only by the thread that currently uses the handle. */
struct hs {
	struct cds_lfht_node node;
	CURL *key;

	/* what the application set */
	char *url;
	char *customrequest;
	enum method method;
	const char *postfields;
	char *postcopy;       /* COPYPOSTFIELDS: our own copy */
	size_t postcopy_len;
	int64_t postsize;     /* -1: strlen */
	int64_t app_postsize; /* the last CURLOPT_POSTFIELDSIZE(_LARGE) set, -1 none */
	curl_read_callback app_read;
	void *app_rdata;
	int app_rdata_set;
	curl_write_callback app_write;
	void *app_wdata;
	int app_wdata_set;
	curl_write_callback app_header;
	void *app_hdata;
	curl_seek_callback app_seek;
	void *app_sdata;
	curl_prereq_callback app_prereq;
	void *app_prereq_data;
	char *errbuf;
	int header_in_body;   /* CURLOPT_HEADER */

	/* the transfer in progress */
	int hooked;           /* our write/header callbacks are installed */
	int replaying;        /* our read/seek callbacks are installed */
	int prereqd;          /* our pre-request callback is installed */
	int admit_failed;     /* refused: abort again if asked again */
	int ticket_open;
	enum shim_kind kind;
	int model, pool;
	struct shim_req req;
	shl_ticket ticket;
	struct shim_resp resp;
	char *rbuf;           /* read-ahead body */
	size_t rlen, rpos;
	int rdone;            /* read-ahead reached the end of the body */
	struct shim_route route; /* SHMLIMIT_ROUTE (route.c) */
};

static unsigned long hash_ptr(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (unsigned long)x;
}

static int match_key(struct cds_lfht_node *node, const void *key)
{
	return caa_container_of(node, struct hs, node)->key == key;
}

/* The state of `c`, or NULL.  The pointer stays valid until the handle is
 * cleaned up, which only the thread using it may do. */
static struct hs *hs_find(CURL *c)
{
	struct cds_lfht_iter it;
	struct hs *s = NULL;
	rcu_read_lock();
	cds_lfht_lookup(g_ht, hash_ptr(c), match_key, c, &it);
	struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
	if (n != NULL)
		s = caa_container_of(n, struct hs, node);
	rcu_read_unlock();
	return s;
}

static struct hs *hs_get(CURL *c)
{
	struct hs *s = hs_find(c);
	if (s != NULL)
		return s;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		warn_once(C_NOMEM, "out of memory; a request may pass through ungoverned");
		return NULL;
	}
	s->key = c;
	s->postsize = -1;
	s->app_postsize = -1;
	cds_lfht_node_init(&s->node);
	rcu_read_lock();
	struct cds_lfht_node *got = cds_lfht_add_unique(g_ht, hash_ptr(c), match_key, c, &s->node);
	rcu_read_unlock();
	if (got != &s->node) {
		free(s);
		s = caa_container_of(got, struct hs, node);
	}
	return s;
}

static void hs_forget_options(struct hs *s)
{
	free(s->url);
	free(s->customrequest);
	free(s->postcopy);
	free(s->rbuf);
	shim_resp_free(&s->resp);
	shim_route_free(&s->route);
	CURL *key = s->key;
	struct cds_lfht_node node = s->node;
	memset(s, 0, sizeof(*s));
	s->node = node;
	s->key = key;
	s->postsize = -1;
	s->app_postsize = -1;
}

static void hs_delete(struct hs *s)
{
	rcu_read_lock();
	int r = cds_lfht_del(g_ht, &s->node);
	rcu_read_unlock();
	if (r != 0)
		return;
	synchronize_rcu(); /* no reader of the table still walks through s */
	hs_forget_options(s);
	free(s);
}

static char *dup_str(const char *p)
{
	return p ? strdup(p) : NULL;
}

/*
 * Remember an option the shim cares about.  Returns 1 when the call must not
 * reach libcurl because our own callback is installed in its place (the new
 * value is used by our wrapper instead), else 0.
 */
static int record(struct hs *s, CURLoption opt, long lv, void *pv, void (*fv)(void),
		  curl_off_t ov)
{
	switch (opt) {
	case CURLOPT_URL:
		free(s->url);
		s->url = dup_str(pv);
		return 0;
	case CURLOPT_CUSTOMREQUEST:
		free(s->customrequest);
		s->customrequest = dup_str(pv);
		return 0;
	case CURLOPT_POSTFIELDS:
		free(s->postcopy);
		s->postcopy = NULL;
		s->postfields = pv;
		s->method = M_POST;
		return 0;
	case CURLOPT_COPYPOSTFIELDS: {
		free(s->postcopy);
		s->postcopy = NULL;
		s->postfields = NULL;
		s->method = M_POST;
		if (pv != NULL) {
			size_t n = s->postsize >= 0 ? (size_t)s->postsize : strlen(pv);
			s->postcopy = malloc(n + 1);
			if (s->postcopy != NULL) {
				memcpy(s->postcopy, pv, n);
				s->postcopy[n] = '\0';
				s->postfields = s->postcopy;
				s->postcopy_len = n;
				s->postsize = (int64_t)n;
			}
		}
		return 0;
	}
	case CURLOPT_POSTFIELDSIZE:
	case CURLOPT_POSTFIELDSIZE_LARGE:
		s->postsize = opt == CURLOPT_POSTFIELDSIZE ? (lv < 0 ? -1 : (int64_t)lv)
							   : (ov < 0 ? -1 : (int64_t)ov);
		s->app_postsize = s->postsize;
		if (s->postcopy != NULL && s->postsize > (int64_t)s->postcopy_len) {
			/* libcurl drops a COPYPOSTFIELDS copy shorter than the new size */
			free(s->postcopy);
			s->postcopy = NULL;
			s->postfields = NULL;
		}
		return 0;
	case CURLOPT_POST:
		s->method = lv ? M_POST : M_GET;
		return 0;
	case CURLOPT_HTTPGET:
		if (lv)
			s->method = M_GET;
		return 0;
	case CURLOPT_NOBODY:
		if (lv)
			s->method = M_HEAD;
		else if (s->method == M_HEAD)
			s->method = M_GET;
		return 0;
	case CURLOPT_UPLOAD:
		s->method = lv ? M_PUT : M_GET;
		return 0;
	case CURLOPT_MIMEPOST:
	case CURLOPT_HTTPPOST:
		s->method = pv ? M_MIME : M_GET;
		return 0;
	case CURLOPT_HEADER:
		s->header_in_body = lv != 0;
		return 0;
	case CURLOPT_ERRORBUFFER:
		s->errbuf = pv;
		return 0;
	case CURLOPT_READFUNCTION:
		s->app_read = (curl_read_callback)fv;
		return s->replaying;
	case CURLOPT_READDATA:
		s->app_rdata = pv;
		s->app_rdata_set = 1;
		return s->replaying;
	case CURLOPT_SEEKFUNCTION:
		s->app_seek = (curl_seek_callback)fv;
		return s->replaying;
	case CURLOPT_SEEKDATA:
		s->app_sdata = pv;
		return s->replaying;
	case CURLOPT_WRITEFUNCTION:
		s->app_write = (curl_write_callback)fv;
		return s->hooked;
	case CURLOPT_WRITEDATA:
		s->app_wdata = pv;
		s->app_wdata_set = 1;
		return s->hooked;
	case CURLOPT_HEADERFUNCTION:
		s->app_header = (curl_write_callback)fv;
		return s->hooked;
	case CURLOPT_HEADERDATA:
		s->app_hdata = pv;
		return s->hooked;
	case CURLOPT_PREREQFUNCTION:
		s->app_prereq = (curl_prereq_callback)fv;
		return s->prereqd;
	case CURLOPT_PREREQDATA:
		s->app_prereq_data = pv;
		return s->prereqd;
	default:
		return 0;
	}
}

static int tracked(CURLoption opt)
{
	switch (opt) {
	case CURLOPT_URL: case CURLOPT_CUSTOMREQUEST: case CURLOPT_POSTFIELDS:
	case CURLOPT_COPYPOSTFIELDS: case CURLOPT_POSTFIELDSIZE:
	case CURLOPT_POSTFIELDSIZE_LARGE: case CURLOPT_POST: case CURLOPT_HTTPGET:
	case CURLOPT_NOBODY: case CURLOPT_UPLOAD: case CURLOPT_MIMEPOST:
	case CURLOPT_HTTPPOST: case CURLOPT_HEADER: case CURLOPT_ERRORBUFFER:
	case CURLOPT_READFUNCTION: case CURLOPT_READDATA: case CURLOPT_SEEKFUNCTION:
	case CURLOPT_SEEKDATA: case CURLOPT_WRITEFUNCTION: case CURLOPT_WRITEDATA:
	case CURLOPT_HEADERFUNCTION: case CURLOPT_HEADERDATA:
	case CURLOPT_PREREQFUNCTION: case CURLOPT_PREREQDATA:
		return 1;
	default:
		return 0;
	}
}

/* ------------------------------------------------------------------ */
/* Callback wrappers: the application sees exactly what libcurl gives   */
/* ------------------------------------------------------------------ */

static size_t app_write_call(struct hs *s, char *p, size_t size, size_t n, void *ud)
{
	if (s->app_write != NULL)
		return s->app_write(p, size, n, ud);
	/* libcurl's default: fwrite to the WRITEDATA FILE*, stdout unless set */
	return fwrite(p, size, n, (FILE *)ud);
}

static size_t wrap_write(char *p, size_t size, size_t n, void *ud)
{
	struct hs *s = ud;
	size_t ret = app_write_call(s, p, size, n, s->app_wdata_set ? s->app_wdata : stdout);
	/* Only what the application accepted: a paused chunk comes again. */
	if (ret == size * n)
		shim_resp_body(&s->resp, p, size * n);
	return ret;
}

static void feedback_headers(struct hs *s);

static size_t wrap_header(char *p, size_t size, size_t n, void *ud)
{
	struct hs *s = ud;
	size_t total = size * n, ret;
	if (s->app_header != NULL)
		ret = s->app_header(p, size, n, s->app_hdata);
	else if (s->app_hdata != NULL)
		/* libcurl's rule: no header function but HEADERDATA set means
		 * headers go to the write function with HEADERDATA. */
		ret = app_write_call(s, p, size, n, s->app_hdata);
	else
		ret = total; /* libcurl would not deliver headers anywhere */
	if (ret == total) {
		shim_resp_header(&s->resp, p, total);
		if (total <= 2 && (p[0] == '\r' || p[0] == '\n') && s->resp.status >= 200)
			feedback_headers(s);
	}
	return ret;
}

/* Replay of a body read ahead from the application's read callback. */
static size_t wrap_read(char *p, size_t size, size_t n, void *ud)
{
	struct hs *s = ud;
	size_t want = size * n;
	if (s->rpos < s->rlen) {
		size_t k = s->rlen - s->rpos < want ? s->rlen - s->rpos : want;
		memcpy(p, s->rbuf + s->rpos, k);
		s->rpos += k;
		return k;
	}
	if (s->rdone)
		return 0;
	void *rd = s->app_rdata_set ? s->app_rdata : stdin;
	return s->app_read ? s->app_read(p, size, n, rd) : fread(p, size, n, (FILE *)rd);
}

static int wrap_seek(void *ud, curl_off_t off, int origin)
{
	struct hs *s = ud;
	if (origin == SEEK_SET && off >= 0 && (size_t)off <= s->rlen && s->rdone) {
		s->rpos = (size_t)off;
		return CURL_SEEKFUNC_OK;
	}
	return CURL_SEEKFUNC_CANTSEEK;
}


/* ------------------------------------------------------------------ */
/* Deciding, admitting, settling                                       */
/* ------------------------------------------------------------------ */

static enum shim_kind url_kind(const char *url)
{
	if (url == NULL)
		return SHIM_KIND_NONE;
	const char *p = strstr(url, "://");
	long port;
	if (p == NULL) {
		p = url;
		port = 80; /* libcurl's guess for a URL without scheme */
	} else {
		size_t sl = (size_t)(p - url);
		if (sl == 5 && strncasecmp(url, "https", 5) == 0)
			port = 443;
		else if (sl == 4 && strncasecmp(url, "http", 4) == 0)
			port = 80;
		else
			return SHIM_KIND_NONE;
		p += 3;
	}
	size_t alen = strcspn(p, "/?#");
	const char *auth = p, *path = p + alen;
	const char *at = memchr(auth, '@', alen);
	if (at != NULL) {
		alen -= (size_t)(at + 1 - auth);
		auth = at + 1;
	}
	char host[256];
	size_t hlen = alen;
	const char *colon = NULL;
	for (size_t i = alen; i > 0; i--) {
		if (auth[i - 1] == ']')
			break;
		if (auth[i - 1] == ':') {
			colon = auth + i - 1;
			break;
		}
	}
	if (colon != NULL) {
		hlen = (size_t)(colon - auth);
		char pb[8];
		size_t pl = alen - hlen - 1;
		if (pl > 0) {
			if (pl >= sizeof(pb))
				return SHIM_KIND_NONE;
			memcpy(pb, colon + 1, pl);
			pb[pl] = '\0';
			char *end;
			port = strtol(pb, &end, 10);
			if (*end != '\0')
				return SHIM_KIND_NONE;
		}
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return SHIM_KIND_NONE;
	memcpy(host, auth, hlen);
	host[hlen] = '\0';
	if (hlen > 1 && host[hlen - 1] == '.')
		host[--hlen] = '\0';
	int ok = 0;
	for (int i = 0; i < g_nhosts && !ok; i++)
		ok = g_hosts[i].port == port && strcasecmp(g_hosts[i].name, host) == 0;
	if (!ok)
		return SHIM_KIND_NONE;
	size_t plen = strcspn(path, "?#");
	while (plen > 1 && path[plen - 1] == '/')
		plen--;
	if (plen == 12 && memcmp(path, "/v1/messages", 12) == 0)
		return SHIM_KIND_MESSAGES;
	if (plen == 25 && memcmp(path, "/v1/messages/count_tokens", 25) == 0)
		return SHIM_KIND_COUNT;
	if (plen == 20 && memcmp(path, "/v1/messages/batches", 20) == 0)
		return SHIM_KIND_BATCH;
	return SHIM_KIND_NONE;
}

/* Install our read/seek callbacks over a body read ahead. */
static int read_ahead(struct hs *s)
{
	size_t cap = 65536;
	s->rbuf = malloc(cap);
	if (s->rbuf == NULL)
		return -1;
	s->rlen = s->rpos = 0;
	s->rdone = 0;
	void *rd = s->app_rdata_set ? s->app_rdata : stdin;
	for (;;) {
		if (s->rlen == cap) {
			if (cap >= READAHEAD_MAX)
				break;
			char *nb = realloc(s->rbuf, cap * 2);
			if (nb == NULL)
				break;
			s->rbuf = nb;
			cap *= 2;
		}
		size_t got = s->app_read ? s->app_read(s->rbuf + s->rlen, 1, cap - s->rlen, rd)
					 : fread(s->rbuf + s->rlen, 1, cap - s->rlen, (FILE *)rd);
		if (got == 0) {
			s->rdone = 1;
			break;
		}
		if (got > cap - s->rlen) /* CURL_READFUNC_ABORT / PAUSE: stop reading ahead */
			break;
		s->rlen += got;
	}
	if (real.easy_setopt(s->key, CURLOPT_READFUNCTION, wrap_read) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_READDATA, s) != CURLE_OK)
		return -1; /* cannot happen with a libcurl that has the option */
	real.easy_setopt(s->key, CURLOPT_SEEKFUNCTION, wrap_seek);
	real.easy_setopt(s->key, CURLOPT_SEEKDATA, s);
	s->replaying = 1;
	return s->rdone ? 0 : -1;
}

/* Put the application's callbacks back; free what the transfer used. */
static void unhook(struct hs *s)
{
	if (s->hooked) {
		s->hooked = 0;
		real.easy_setopt(s->key, CURLOPT_WRITEFUNCTION, s->app_write);
		real.easy_setopt(s->key, CURLOPT_WRITEDATA,
				 s->app_wdata_set ? s->app_wdata : (void *)stdout);
		real.easy_setopt(s->key, CURLOPT_HEADERFUNCTION, s->app_header);
		real.easy_setopt(s->key, CURLOPT_HEADERDATA, s->app_hdata);
	}
	if (s->replaying) {
		s->replaying = 0;
		real.easy_setopt(s->key, CURLOPT_READFUNCTION, s->app_read);
		real.easy_setopt(s->key, CURLOPT_READDATA,
				 s->app_rdata_set ? s->app_rdata : (void *)stdin);
		real.easy_setopt(s->key, CURLOPT_SEEKFUNCTION, s->app_seek);
		real.easy_setopt(s->key, CURLOPT_SEEKDATA, s->app_sdata);
		free(s->rbuf);
		s->rbuf = NULL;
		s->rlen = s->rpos = 0;
	}
	if (s->prereqd) {
		s->prereqd = 0;
		real.easy_setopt(s->key, CURLOPT_PREREQFUNCTION, s->app_prereq);
		real.easy_setopt(s->key, CURLOPT_PREREQDATA, s->app_prereq_data);
	}
	shim_route_restore(&s->route, s->key, s->postfields, s->postcopy, s->postcopy_len,
			   s->app_postsize);
	shim_resp_free(&s->resp);
}

static const char *kind_path(enum shim_kind k)
{
	return k == SHIM_KIND_COUNT ? "/v1/messages/count_tokens"
	       : k == SHIM_KIND_BATCH ? "/v1/messages/batches" : "/v1/messages";
}

/* The one line for a refused request; also into the app's error buffer. */
static void refuse_line(struct hs *s, int r, const shl_refusal *why)
{
	char pool[SHL_NAME_MAX + 1] = "?";
	char lim[96] = "";
	shl_stats *st = malloc(sizeof(*st));
	if (st != NULL && shl_stats_get(g_shl, st) == 0) {
		/* pools[] is compacted: find the refusing pool by its index. */
		const shl_pool_stats *ps = NULL;
		for (int k = 0; k < st->npools && ps == NULL; k++)
			if (st->pools[k].index == why->pool)
				ps = &st->pools[k];
		if (ps != NULL)
			snprintf(pool, sizeof(pool), "%s", ps->name);
		if (why->dim >= 0 && why->dim < SHL_NBUCKETS && ps != NULL)
			snprintf(lim, sizeof(lim), " (limit %" PRIu64 "/min, burst %" PRIu64 ")",
				 ps->limit[why->dim], ps->burst[why->dim]);
		else if (why->dim == SHL_DIM_SPEND)
			snprintf(lim, sizeof(lim), " (cap $%.2f, spent $%.2f this month)",
				 (double)st->spend_cap / SHL_UNITS_PER_USD,
				 (double)st->spend_month / SHL_UNITS_PER_USD);
	}
	free(st);
	char reason[160];
	if (r == -ETIMEDOUT || r == -EAGAIN)
		snprintf(reason, sizeof(reason), "admission in %.3f s is past the deadline (SHMLIMIT_WAIT_MS)",
			 (double)why->wait_ns / 1e9);
	else if (r == -E2BIG)
		snprintf(reason, sizeof(reason), "needs %" PRIu64 ", more than the capacity %" PRIu64
			 "; it can never be admitted", why->need, why->capacity);
	else
		snprintf(reason, sizeof(reason), "%s", shl_strerror(r));
	char line[512];
	snprintf(line, sizeof(line), "shmlimit: refused POST %s model %s: pool %s: %s limit%s: %s",
		 kind_path(s->kind), s->req.model, pool, shl_dim_name(why->dim), lim, reason);
	fprintf(stderr, "%s\n", line);
	if (s->errbuf != NULL) {
		size_t n = strlen(line);
		if (n >= CURL_ERROR_SIZE)
			n = CURL_ERROR_SIZE - 1;
		memcpy(s->errbuf, line, n);
		s->errbuf[n] = '\0';
	}
}

/*
 * Decide whether the transfer is governed: a POST to a governed host and
 * path, with a body we can read and a model the configuration knows.
 * Returns 1 governed (s->req, s->kind, s->model set), 0 pass through.
 */
static int prepare(struct hs *s)
{
	s->kind = url_kind(s->url);
	if (s->kind == SHIM_KIND_NONE || s->method != M_POST)
		return 0;
	if (s->customrequest != NULL && strcmp(s->customrequest, "POST") != 0)
		return 0;
	const char *body = s->postfields;
	size_t blen = 0;
	if (body != NULL) {
		blen = s->postsize >= 0 ? (size_t)s->postsize : strlen(body);
	} else if (s->postsize != 0) {
		/* The body comes from the read callback: read it ahead, replay it. */
		if (read_ahead(s) != 0) {
			warn_once(C_READCB, "a request body from a read callback could not be read "
					    "ahead; such requests pass through ungoverned");
			return 0;
		}
		body = s->rbuf;
		blen = s->rlen;
	}
	if (body == NULL || shim_req_parse(body, blen, s->kind, &s->req) != 0) {
		warn_once(C_BODY, "a request body to %s is not a JSON request with a model; "
				  "such requests pass through ungoverned", kind_path(s->kind));
		return 0;
	}
	int m;
	if (s->kind == SHIM_KIND_MESSAGES)
		m = shl_lookup(g_shl, s->req.model);
	else
		m = shl_lookup(g_shl, s->kind == SHIM_KIND_COUNT ? "count_tokens" : "message_batches");
	if (m < 0) {
		if (s->kind == SHIM_KIND_MESSAGES)
			warn_once(C_MODEL, "model \"%s\": %s; its requests pass through ungoverned",
				  s->req.model, shl_strerror(m));
		return 0;
	}
	s->model = m;
	s->admit_failed = 0;
	shim_route_plan(&s->route, g_shl, s->kind, m, s->req.model, s->postfields ? body : NULL,
			blen);
	shim_resp_init(&s->resp);
	s->resp.header_in_body = s->header_in_body;
	return 1;
}

/* Wrap the application's write and header callbacks.  0, or -1 (nothing installed). */
static int hook_callbacks(struct hs *s)
{
	if (real.easy_setopt(s->key, CURLOPT_WRITEFUNCTION, wrap_write) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_WRITEDATA, s) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_HEADERFUNCTION, wrap_header) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_HEADERDATA, s) != CURLE_OK) {
		s->hooked = 1;
		unhook(s);
		warn_once(C_ADMIT, "cannot install response callbacks; requests pass through ungoverned");
		return -1;
	}
	s->hooked = 1;
	return 0;
}

/*
 * Wait for admission of a prepared transfer.  Returns 1 admitted (ticket
 * open), 0 pass through (internal failure, one stderr line), -1 refused
 * (the refusal line printed).
 */
static int admit(struct hs *s)
{
	shl_refusal why;
	memset(&why, 0, sizeof(why));
	why.dim = SHL_DIM_NONE;
	int r = shim_route_admit(&s->route, s->key, g_shl, s->model, &s->req.cost, g_wait_ns,
				 &s->ticket, &why);
	if (r == -ETIMEDOUT || r == -EAGAIN || r == -E2BIG || r == -EDQUOT) {
		refuse_line(s, r, &why);
		return -1;
	}
	if (r < 0) {
		warn_once(C_ADMIT, "admission failed: %s; the request passes through ungoverned",
			  shl_strerror(r));
		return 0;
	}
	s->pool = s->ticket.pool;
	s->ticket_open = 1;
	return 1;
}

/*
 * The multi interface: admission happens here, in libcurl's pre-request
 * callback, right before the request is written to its connection, so that
 * the admitted rate is the rate at which requests reach the server.  It
 * blocks the thread running the multi handle while it waits.
 */
static int prereq_admit(void *ud, char *pip, char *lip, int pport, int lport)
{
	struct hs *s = ud;
	if (!s->ticket_open) {
		if (s->admit_failed)
			return CURL_PREREQFUNC_ABORT;
		if (admit(s) < 0) {
			s->admit_failed = 1;
			return CURL_PREREQFUNC_ABORT;
		}
	}
	if (s->app_prereq != NULL)
		return s->app_prereq(s->app_prereq_data, pip, lip, pport, lport);
	return CURL_PREREQFUNC_OK;
}

/* Response headers are complete: what the server says about the pool. */
static void feedback_headers(struct hs *s)
{
	if (!s->ticket_open)
		return;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		if (s->resp.remaining[d] >= 0)
			shl_clamp(g_shl, s->pool, d, (uint64_t)s->resp.remaining[d]);
}

static int request_was_sent(struct hs *s)
{
	long n = 0;
	if (real.easy_getinfo == NULL ||
	    real.easy_getinfo(s->key, CURLINFO_REQUEST_SIZE, &n) != CURLE_OK)
		return 1; /* unknown: assume the worst */
	return n > 0;
}

/* The transfer is over (or abandoned): settle, then restore the handle. */
static void finish(struct hs *s)
{
	if (!s->ticket_open) {
		unhook(s);
		return;
	}
	s->ticket_open = 0;
	struct shim_resp *r = &s->resp;
	shim_resp_finish(r);
	long st = r->status;
	if (st == 429) {
		if (r->spend_cap)
			shl_spend_exhaust(g_shl);
		else
			shl_hold(g_shl, s->pool,
				 r->retry_after_ms >= 0 ? r->retry_after_ms * 1000000 : HOLD_DEFAULT_NS);
	}
	shl_usage u;
	memset(&u, 0, sizeof(u));
	const shl_cost *c = &s->req.cost;
	int cancel = 0;
	if (s->kind == SHIM_KIND_COUNT) {
		cancel = st == 0 && !request_was_sent(s);
	} else if (s->kind == SHIM_KIND_BATCH) {
		if (st >= 200 && st < 300) {
			/* The batch runs later; charge its estimate (documented). */
			u.input_tokens = c->input_tokens;
			u.cache_write_5m = c->cache_write_5m;
			u.cache_write_1h = c->cache_write_1h;
			u.output_tokens = c->max_tokens;
		} else {
			cancel = st == 0 && !request_was_sent(s);
		}
	} else if (r->usage_seen) {
		u = r->usage;
	} else if (st >= 200 && st < 300) {
		warn_once(C_RESP, "a response's usage could not be read; such requests are charged "
				  "their estimate and max_tokens");
		u.input_tokens = c->input_tokens;
		u.cache_write_5m = c->cache_write_5m;
		u.cache_write_1h = c->cache_write_1h;
		u.output_tokens = c->max_tokens;
	} else if (st == 0) {
		if (!request_was_sent(s)) {
			cancel = 1;
		} else {
			u.input_tokens = c->input_tokens;
			u.cache_write_5m = c->cache_write_5m;
			u.cache_write_1h = c->cache_write_1h;
		}
	}
	/* else: an error status without usage: nothing billed, the request
	 * still counts for RPM (settle with zero usage). */
	if (cancel)
		shl_cancel(g_shl, &s->ticket);
	else
		shl_settle(g_shl, &s->ticket, &u);
	unhook(s);
}

/* ------------------------------------------------------------------ */
/* The hooks                                                           */
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

	shim_init();
	if (real.easy_setopt == NULL)
		return CURLE_FAILED_INIT;
	if (g_shl != NULL && curl != NULL && tracked(opt)) {
		struct hs *s = hs_get(curl);
		if (s != NULL && record(s, opt, lv, pv, fv, ov))
			return CURLE_OK; /* our wrapper stays; it uses the new value */
	}
	switch (type) {
	case 0: return real.easy_setopt(curl, opt, lv);
	case 1: return real.easy_setopt(curl, opt, pv);
	case 2: return real.easy_setopt(curl, opt, fv);
	default: return real.easy_setopt(curl, opt, ov);
	}
}

HOOK CURLcode curl_easy_perform(CURL *curl)
{
	shim_init();
	if (real.easy_perform == NULL)
		return CURLE_FAILED_INIT;
	if (g_shl == NULL || curl == NULL || curl == tl_easy)
		return real.easy_perform(curl);
	struct hs *s = hs_find(curl);
	if (s != NULL && prepare(s) > 0 && hook_callbacks(s) == 0 && admit(s) < 0) {
		unhook(s);
		return CURLE_ABORTED_BY_CALLBACK;
	}
	CURL *prev = tl_easy;
	CURLM *prevm = tl_easy_multi;
	tl_easy = curl;
	tl_easy_multi = NULL;
	CURLcode rc = real.easy_perform(curl);
	tl_easy = prev;
	tl_easy_multi = prevm;
	if (s != NULL)
		finish(s);
	return rc;
}

HOOK CURLMcode curl_multi_add_handle(CURLM *multi, CURL *curl)
{
	shim_init();
	if (real.multi_add == NULL)
		return CURLM_INTERNAL_ERROR;
	if (g_shl == NULL || curl == NULL)
		return real.multi_add(multi, curl);
	if (curl == tl_easy) {
		tl_easy_multi = multi; /* libcurl's private multi of curl_easy_perform */
		return real.multi_add(multi, curl);
	}
	struct hs *s = hs_find(curl);
	if (s == NULL || s->hooked || s->prereqd)
		return real.multi_add(multi, curl);
	if (prepare(s) > 0 && hook_callbacks(s) == 0) {
		if (real.easy_setopt(curl, CURLOPT_PREREQFUNCTION, prereq_admit) == CURLE_OK &&
		    real.easy_setopt(curl, CURLOPT_PREREQDATA, s) == CURLE_OK) {
			s->prereqd = 1;
			shim_route_reserve(&s->route, curl);
		} else {
			warn_once(C_NOPREREQ, "this libcurl has no CURLOPT_PREREQFUNCTION (7.80.0); "
						 "multi transfers pass through ungoverned");
			unhook(s);
		}
	}
	CURLMcode mc = real.multi_add(multi, curl);
	if (mc != CURLM_OK && s->ticket_open) {
		shl_cancel(g_shl, &s->ticket);
		s->ticket_open = 0;
		unhook(s);
	} else if (mc != CURLM_OK) {
		unhook(s);
	}
	return mc;
}

HOOK CURLMsg *curl_multi_info_read(CURLM *multi, int *msgs_in_queue)
{
	shim_init();
	if (real.multi_info_read == NULL)
		return NULL;
	CURLMsg *msg = real.multi_info_read(multi, msgs_in_queue);
	if (g_shl == NULL || msg == NULL || msg->msg != CURLMSG_DONE ||
	    (tl_easy != NULL && multi == tl_easy_multi))
		return msg;
	struct hs *s = hs_find(msg->easy_handle);
	if (s != NULL && (s->ticket_open || s->hooked || s->replaying || s->prereqd))
		finish(s);
	return msg;
}

HOOK CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *curl)
{
	shim_init();
	if (real.multi_remove == NULL)
		return CURLM_INTERNAL_ERROR;
	CURLMcode mc = real.multi_remove(multi, curl);
	if (g_shl == NULL || curl == NULL || curl == tl_easy)
		return mc;
	struct hs *s = hs_find(curl);
	if (s != NULL && (s->ticket_open || s->hooked || s->replaying || s->prereqd))
		finish(s); /* removed before (or without) reading its completion */
	return mc;
}

HOOK void curl_easy_cleanup(CURL *curl)
{
	shim_init();
	struct hs *s = (g_shl != NULL && curl != NULL) ? hs_find(curl) : NULL;
	if (s != NULL)
		finish(s);
	if (real.easy_cleanup != NULL)
		real.easy_cleanup(curl);
	if (s != NULL)
		hs_delete(s);
}

HOOK void curl_easy_reset(CURL *curl)
{
	shim_init();
	struct hs *s = (g_shl != NULL && curl != NULL) ? hs_find(curl) : NULL;
	if (s != NULL)
		finish(s);
	if (real.easy_reset != NULL)
		real.easy_reset(curl);
	if (s != NULL)
		hs_forget_options(s);
}

HOOK CURL *curl_easy_duphandle(CURL *curl)
{
	shim_init();
	if (real.easy_duphandle == NULL)
		return NULL;
	CURL *n = real.easy_duphandle(curl);
	if (n == NULL || g_shl == NULL)
		return n;
	struct hs *s = hs_find(curl);
	if (s == NULL)
		return n;
	struct hs *d = hs_get(n);
	if (d == NULL)
		return n;
	d->url = dup_str(s->url);
	d->customrequest = dup_str(s->customrequest);
	d->method = s->method;
	d->postsize = s->postsize;
	d->app_postsize = s->app_postsize;
	if (s->postcopy != NULL) {
		/* libcurl copied its COPYPOSTFIELDS buffer; so do we. */
		d->postcopy = malloc(s->postcopy_len + 1);
		if (d->postcopy != NULL) {
			memcpy(d->postcopy, s->postcopy, s->postcopy_len + 1);
			d->postcopy_len = s->postcopy_len;
			d->postfields = d->postcopy;
		}
	} else {
		d->postfields = s->postfields;
	}
	d->app_read = s->app_read;
	d->app_rdata = s->app_rdata;
	d->app_rdata_set = s->app_rdata_set;
	d->app_seek = s->app_seek;
	d->app_sdata = s->app_sdata;
	d->app_write = s->app_write;
	d->app_wdata = s->app_wdata;
	d->app_wdata_set = s->app_wdata_set;
	d->app_header = s->app_header;
	d->app_hdata = s->app_hdata;
	d->app_prereq = s->app_prereq;
	d->app_prereq_data = s->app_prereq_data;
	d->errbuf = s->errbuf;
	d->header_in_body = s->header_in_body;
	/* If the original is mid-transfer, the copy got our callbacks: undo. */
	d->hooked = s->hooked;
	d->replaying = s->replaying;
	d->prereqd = s->prereqd;
	d->route.installed = s->route.installed; /* the copy points at our body: undo */
	unhook(d);
	return n;
}
