/*
 * hold.c - multi transfers held back until their release, so that waiting
 * for admission never stops the loop that drives a multi handle.
 *
 * A program using the multi interface (curl --parallel, an event loop) runs
 * every transfer from one loop: curl_multi_perform / poll / wait, or
 * curl_multi_socket_action from its own event loop.  If admission waited
 * inside that loop, finished transfers would not be read while it waited,
 * and what they carry (their settlement, the rate-limit headers, a 429's
 * retry-after, the spend cap) would arrive late: requests would be sent
 * that the server had already said to hold back.  So a governed transfer
 * does not wait:
 *
 *   - curl_multi_add_handle takes its place in line at once (shim_place:
 *     shl_reserve, or shl_try and its computed wait) and, unless it may go
 *     now, keeps it here, outside the real multi handle, with its release
 *     time;
 *   - the shim's hooks of curl_multi_perform, socket_action (and the
 *     deprecated socket, socket_all) and info_read (with no message left)
 *     start the transfers whose time has come, after libcurl has read what
 *     arrived (a 429's retry-after holds the pool at its headers: settle.c);
 *     shim_start checks the pool's hold and the spend state again (a hold
 *     that arrived meanwhile puts it back in line behind the hold), and
 *     only then are they added to the real multi;
 *   - the running count those calls return includes held transfers, so a
 *     program does not think it is done; poll, wait and curl_multi_timeout
 *     are clamped to the next release; an application timer callback
 *     (CURLMOPT_TIMERFUNCTION) is wrapped, and called with the next release
 *     when that is sooner than libcurl's own timer;
 *   - a transfer refused while held (the spend cap, a deadline passed) is
 *     never added: curl_multi_info_read reports it CURLMSG_DONE with
 *     CURLE_ABORTED_BY_CALLBACK, as if libcurl had run and aborted it;
 *   - curl_multi_remove_handle, curl_easy_cleanup or curl_easy_reset of a
 *     held transfer, and curl_multi_cleanup, cancel it.
 *
 * What it assumes
 *   - libcurl's rule that a multi handle, and the easy handles in it, are
 *     used by one thread at a time: a multi's state needs no lock.  The
 *     table from a multi handle to its state is a cds_lfht like the handle
 *     table (handles.c).
 *   - The application calls one of the hooked functions at least when its
 *     timeout (libcurl's, clamped here) expires: that is the multi
 *     interface's contract.
 *
 * What it deliberately does not do
 *   - It never blocks: the only waiting is the application's own poll,
 *     wait or timer, shortened to the next release.
 *   - It adds nothing to libcurl's state for a held transfer; the real
 *     curl_multi_add_handle happens at release.  A multi with nothing held
 *     and no timer callback has no state here at all.
 *   - When it cannot keep state (no memory), the transfer is added at once
 *     and admitted in the pre-request callback (admit.c), waiting there, as
 *     before holding existed.
 */
#define CURL_DISABLE_TYPECHECK 1
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "shim.h"

/* Used only by the thread that uses the multi handle. */
struct shim_multi {
	struct cds_lfht_node node;
	CURLM *key;
	struct hs *list;       /* transfers held back, refused or reported (hs->hold) */
	/* the application's CURLMOPT_TIMERFUNCTION, when wrapped */
	curl_multi_timer_callback app_timer;
	void *app_timer_data;
	int timer_wrapped;     /* libcurl calls wrap_timer with this state */
	int overridden;        /* the application's timer was last set to a release */
	int releasing, rearming; /* re-entrance guards */
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
	return caa_container_of(node, struct shim_multi, node)->key == key;
}

struct shim_multi *shim_multi_find(CURLM *multi)
{
	if (g_mt == NULL || multi == NULL)
		return NULL;
	struct cds_lfht_iter it;
	struct shim_multi *m = NULL;
	rcu_read_lock();
	cds_lfht_lookup(g_mt, hash_ptr(multi), match_key, multi, &it);
	struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
	if (n != NULL)
		m = caa_container_of(n, struct shim_multi, node);
	rcu_read_unlock();
	return m;
}

static struct shim_multi *multi_get(CURLM *multi)
{
	struct shim_multi *m = shim_multi_find(multi);
	if (m != NULL || g_mt == NULL)
		return m;
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		shim_warn_once(C_NOMEM, "out of memory; multi transfers wait for admission "
					"in the pre-request callback");
		return NULL;
	}
	m->key = multi;
	cds_lfht_node_init(&m->node);
	rcu_read_lock();
	struct cds_lfht_node *got = cds_lfht_add_unique(g_mt, hash_ptr(multi), match_key, multi,
							&m->node);
	rcu_read_unlock();
	if (got != &m->node) {
		free(m);
		m = caa_container_of(got, struct shim_multi, node);
	}
	return m;
}

static void unlink_hs(struct shim_multi *m, struct hs *s)
{
	for (struct hs **pp = &m->list; *pp != NULL; pp = &(*pp)->next_held) {
		if (*pp == s) {
			*pp = s->next_held;
			break;
		}
	}
	s->next_held = NULL;
	s->held_by = NULL;
	s->hold = HOLD_NONE;
}

int shim_multi_held(const struct shim_multi *m)
{
	int n = 0;
	for (const struct hs *s = m ? m->list : NULL; s != NULL; s = s->next_held)
		n += s->hold == HOLD_WAITING;
	return n;
}

int shim_multi_pending(const struct shim_multi *m)
{
	int n = 0;
	for (const struct hs *s = m ? m->list : NULL; s != NULL; s = s->next_held)
		n += s->hold == HOLD_REFUSED;
	return n;
}

/*
 * Milliseconds until the next release (rounded up), -1 when nothing is
 * held.  0 for a refusal not yet announced: the application's next call
 * (poll, wait, its timer) comes at once, and its curl_multi_info_read finds
 * the refusal; once only, so that a program that never reads messages does
 * not spin.
 */
static long next_ms(struct shim_multi *m)
{
	int64_t first = INT64_MAX;
	int news = 0;
	for (struct hs *s = m ? m->list : NULL; s != NULL; s = s->next_held) {
		if (s->hold == HOLD_REFUSED && !s->announced) {
			s->announced = 1;
			news = 1;
		}
		if (s->hold == HOLD_WAITING && s->release_at < first)
			first = s->release_at;
	}
	if (news)
		return 0;
	if (first == INT64_MAX)
		return -1;
	int64_t now = shl_now();
	if (first <= now)
		return 0;
	int64_t ms = (first - now + 999999) / 1000000;
	return ms > 86400000 ? 86400000 : (long)ms;
}

/* Whether anything held back could shorten a timeout (no side effect). */
static int holding(const struct shim_multi *m)
{
	for (const struct hs *s = m ? m->list : NULL; s != NULL; s = s->next_held)
		if (s->hold == HOLD_WAITING || (s->hold == HOLD_REFUSED && !s->announced))
			return 1;
	return 0;
}

long shim_multi_clamp(struct shim_multi *m, long timeout_ms)
{
	long rel = next_ms(m);
	if (rel < 0)
		return timeout_ms;
	return timeout_ms < 0 || rel < timeout_ms ? rel : timeout_ms;
}

/* libcurl's timer callback while the application's is wrapped. */
static int wrap_timer(CURLM *multi, long timeout_ms, void *ud)
{
	struct shim_multi *m = ud;
	long v = shim_multi_clamp(m, timeout_ms);
	m->overridden = v != timeout_ms;
	return m->app_timer != NULL ? m->app_timer(multi, v, m->app_timer_data) : 0;
}

void shim_multi_rearm(struct shim_multi *m)
{
	if (m == NULL || !m->timer_wrapped || m->app_timer == NULL || m->rearming)
		return;
	if (!m->overridden && !holding(m))
		return; /* libcurl's own timer stands as it set it */
	long lib = -1;
	if (real.multi_timeout == NULL || real.multi_timeout(m->key, &lib) != CURLM_OK)
		lib = -1;
	long v = shim_multi_clamp(m, lib);
	m->rearming = 1;
	/* The application's timer may have fired at the release: set it again
	 * (a timer callback replaces the previous timer). */
	m->overridden = v != lib;
	m->app_timer(m->key, v, m->app_timer_data);
	m->rearming = 0;
}

static void refuse_held(struct hs *s, CURLcode result)
{
	shim_cancel(s); /* never sent: nothing charged; the application's callbacks back */
	s->hold = HOLD_REFUSED;
	s->announced = 0;
	memset(&s->msg, 0, sizeof(s->msg));
	s->msg.msg = CURLMSG_DONE;
	s->msg.easy_handle = s->key;
	s->msg.data.result = result;
}

/* Start one released transfer: the real curl_multi_add_handle.  1 when
 * libcurl took it. */
static int start_one(struct shim_multi *m, struct hs *s)
{
	unlink_hs(m, s);
	CURLMcode mc = real.multi_add(m->key, s->key);
	if (mc == CURLM_OK)
		return 1;
	s->hold = HOLD_WAITING;
	s->held_by = m->key;
	s->next_held = m->list;
	m->list = s;
	if (mc == CURLM_RECURSIVE_API_CALL) {
		/* called from inside one of libcurl's callbacks: kept, with its
		 * place, and tried again at the next look */
		s->release_at = shl_now();
		return 0;
	}
	/* What the application's own curl_multi_add_handle would have said,
	 * as the transfer's result (the call itself returned CURLM_OK). */
	shim_warn_once(C_ADMIT, "curl_multi_add_handle of a transfer held back failed "
				"(CURLMcode %d); it is reported failed", (int)mc);
	refuse_held(s, mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT);
	return 0;
}

int shim_multi_release(struct shim_multi *m)
{
	if (m == NULL || m->releasing || m->list == NULL)
		return 0;
	int started = 0;
	m->releasing = 1;
	int64_t now = shl_now();
	struct hs *next;
	for (struct hs *s = m->list; s != NULL; s = next) {
		next = s->next_held;
		if (s->hold != HOLD_WAITING || s->release_at > now)
			continue;
		int r = shim_start(s, now);
		if (r == 1)
			continue; /* back in line */
		if (r == -1)
			refuse_held(s, CURLE_ABORTED_BY_CALLBACK);
		else
			started += start_one(m, s); /* 0: admitted; -2: ungoverned */
	}
	m->releasing = 0;
	return started;
}

CURLMcode shim_multi_add(CURLM *multi, struct hs *s)
{
	int64_t now = shl_now();
	s->deadline = g_wait_ns < 0 || g_wait_ns > INT64_MAX - now ? INT64_MAX : now + g_wait_ns;
	struct shim_multi *m = multi_get(multi);
	int r = m != NULL ? shim_start(s, now) : 0; /* no state: admitted in prereq */
	if (r == 0 || r == -2) {
		CURLMcode mc = real.multi_add(multi, s->key);
		if (mc != CURLM_OK)
			shim_cancel(s); /* nothing sent: cancelled */
		return mc;
	}
	s->held_by = multi;
	s->next_held = m->list;
	m->list = s;
	s->hold = HOLD_WAITING;
	if (r == -1)
		refuse_held(s, CURLE_ABORTED_BY_CALLBACK);
	shim_multi_rearm(m);
	return CURLM_OK;
}

CURLMsg *shim_multi_message(struct shim_multi *m, int *left)
{
	struct hs *found = NULL;
	int n = 0;
	for (struct hs *s = m ? m->list : NULL; s != NULL; s = s->next_held) {
		if (s->hold != HOLD_REFUSED)
			continue;
		if (found == NULL)
			found = s;
		else
			n++;
	}
	*left = n;
	if (found == NULL)
		return NULL;
	found->hold = HOLD_REPORTED; /* until removed: the message stays valid */
	return &found->msg;
}

void shim_multi_drop(struct hs *s)
{
	struct shim_multi *m = shim_multi_find(s->held_by);
	if (m != NULL)
		unlink_hs(m, s);
	s->held_by = NULL;
	s->hold = HOLD_NONE;
	shim_cancel(s); /* never given to libcurl: nothing charged */
}

int shim_multi_timer_setopt(CURLM *multi, CURLMoption opt, void (*fv)(void), void *pv,
			    CURLMcode *rc)
{
	struct shim_multi *m = multi_get(multi);
	if (m == NULL)
		return 0;
	if (opt == CURLMOPT_TIMERDATA) {
		m->app_timer_data = pv;
		if (!m->timer_wrapped)
			return 0;
		*rc = CURLM_OK; /* libcurl keeps handing our wrapper its state */
		return 1;
	}
	m->app_timer = (curl_multi_timer_callback)fv;
	if (fv == NULL) {
		/* unwrapped: libcurl gets the application's data back */
		m->timer_wrapped = 0;
		*rc = real.multi_setopt(multi, CURLMOPT_TIMERFUNCTION, (curl_multi_timer_callback)NULL);
		real.multi_setopt(multi, CURLMOPT_TIMERDATA, m->app_timer_data);
		return 1;
	}
	*rc = real.multi_setopt(multi, CURLMOPT_TIMERFUNCTION, wrap_timer);
	if (*rc == CURLM_OK && real.multi_setopt(multi, CURLMOPT_TIMERDATA, m) == CURLM_OK) {
		m->timer_wrapped = 1;
		return 1;
	}
	/* cannot wrap: the application's own callback, as without the shim */
	m->timer_wrapped = 0;
	real.multi_setopt(multi, CURLMOPT_TIMERDATA, m->app_timer_data);
	*rc = real.multi_setopt(multi, CURLMOPT_TIMERFUNCTION, (curl_multi_timer_callback)fv);
	return 1;
}

void shim_multi_forget(CURLM *multi)
{
	struct shim_multi *m = shim_multi_find(multi);
	if (m == NULL)
		return;
	while (m->list != NULL)
		shim_multi_drop(m->list);
	rcu_read_lock();
	int r = cds_lfht_del(g_mt, &m->node);
	rcu_read_unlock();
	if (r != 0)
		return;
	synchronize_rcu(); /* no reader of the table still walks through m */
	free(m);
}
