/*
 * handles.c - the shim's state per easy handle, and the options it records.
 *
 * The shim must know, when a transfer starts, what the application asked
 * for: URL, method, body, and the callbacks it set (which the shim wraps
 * while a governed transfer runs, and puts back afterwards).  libcurl has no
 * way to read options back, so curl_easy_setopt records them here, in a
 * struct hs per handle, found by the handle's address.
 *
 * What it assumes
 *   - libcurl's own rule that one handle is used by one thread at a time:
 *     the per-handle state needs no lock of its own.  The table that maps a
 *     handle to its state is shared by all threads: a liburcu lock-free hash
 *     table (cds_lfht, bulletproof flavour, so no thread has to register).
 *     Fixed size, no auto-resize (init.c): no call_rcu thread to survive fork.
 *
 * What it deliberately does not do
 *   - It records no option it does not need, and never refuses one: every
 *     setopt reaches libcurl, except a callback the shim has wrapped for the
 *     transfer in progress, whose new value the wrapper uses instead.
 */
#define CURL_DISABLE_TYPECHECK 1
#define CURL_DISABLE_DEPRECATION 1 /* CURLOPT_HTTPPOST is still an option apps use */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "shim.h"

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

struct hs *hs_find(CURL *c)
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

struct hs *hs_get(CURL *c)
{
	struct hs *s = hs_find(c);
	if (s != NULL)
		return s;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		shim_warn_once(C_NOMEM, "out of memory; a request may pass through ungoverned");
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

void hs_forget_options(struct hs *s)
{
	free(s->url);
	free(s->customrequest);
	free(s->postcopy);
	free(s->rbuf);
	shl_ex_free(s->ex);
	s->ex = NULL;
	shim_route_free(&s->route);
	CURL *key = s->key;
	struct cds_lfht_node node = s->node;
	memset(s, 0, sizeof(*s));
	s->node = node;
	s->key = key;
	s->postsize = -1;
	s->app_postsize = -1;
}

void hs_delete(struct hs *s)
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

char *shim_strdup(const char *p)
{
	return p ? strdup(p) : NULL;
}

/* What curl_easy_setopt passes on (shim.h has the contract). */
int hs_record(struct hs *s, CURLoption opt, long lv, void *pv, void (*fv)(void),
	      curl_off_t ov)
{
	switch (opt) {
	case CURLOPT_URL:
		free(s->url);
		s->url = shim_strdup(pv);
		return 0;
	case CURLOPT_CUSTOMREQUEST:
		free(s->customrequest);
		s->customrequest = shim_strdup(pv);
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

int hs_tracked(CURLoption opt)
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
