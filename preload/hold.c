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
 * Late sends
 *   A transfer given to libcurl is not necessarily sent at once: libcurl
 *   may keep it waiting for a connection (CURLOPT_PIPEWAIT, which curl
 *   --parallel sets, waits for the first connection to say whether it can
 *   multiplex: with HTTP/1.1, until that connection's response is in; and
 *   CURLMOPT_MAX_HOST_CONNECTIONS and friends).  Its charge was laid in the
 *   line at its release, but the server sees it when it is sent.  While the
 *   server's bucket sits full, the refill of that wait is lost to it, and
 *   everything laid after the late transfer would reach the server that
 *   much too early: five transfers held for 3 s by PIPEWAIT and the sixth,
 *   released 0.5 s after them, arrive together, more than the bucket holds.
 *   So, per multi and pool, with each transfer's place in each bucket
 *   (shl_ex_place: debt, how long the bucket stays in debt after its
 *   release; edge, how much later than its release that bucket alone would
 *   have let it go):
 *   - a transfer given to libcurl stays "in limbo" until its pre-request
 *     callback (sent) or its end;
 *   - sent with lateness L, it shows each bucket d it took to be behind the
 *     server's by e[d] = L - debt[d] (when positive: the server's bucket sat
 *     full that long), with a bound on the server's tat after it (until[d],
 *     struct shim_skew); a transfer placed after it may then go no sooner
 *     than its release plus max over d of the smaller of (edge[d] + e[d])
 *     and what until[d] leaves it: the held transfers of the pool are
 *     replanned so in line order, each behind the ones before it, and so
 *     is every one placed while the bound holds; a settlement below the
 *     estimate lowers the bound by the difference;
 *   - while a transfer in limbo is already that late for a held one, the
 *     held one is not given to libcurl (it would be sent in the same
 *     bunch); it waits for the send, and is then moved.
 *   Lateness is measured from the first release, so it adds up along a
 *   line, as it does at a server that keeps one request per interval.
 *   Transfers placed at the same instant (within LIMBO_GRACE_NS: one pass of
 *   the loop) go together: their admissions counted on each other only.
 *   Only this process's transfers are moved; another process's are covered
 *   by the jitter margin (pools[].margin) and the server's tolerance.
 *
 * Early release
 *   A held transfer's release was laid by the estimates of the places
 *   before it; the server counts them less (the learned estimate errs
 *   high).  When a transfer of the multi settles below its estimate or is
 *   cancelled, the library gives the difference back as far as the places
 *   taken since allow, and says how much per bucket (shl_ex_given): every
 *   place after it in the line, this one's included, now ends that much
 *   sooner in that bucket.  So each held transfer of its pool placed after
 *   it in this multi (hs->seq, per multi) has its edges moved down by the
 *   gives; when a bucket set its release (an edge of 0: not a hold, not
 *   the clock at its placing), the release moves to the latest edge
 *   (shl_ex_follow: the library moves the reservation itself, never
 *   before what the word allows counting every give since its take, the
 *   rule the Python and Node.js bindings use too), its place is
 *   restated from there, and the pool's line is replanned for the
 *   late-send skew.  Gives by places taken after a held one (a later
 *   transfer cancelled) are not counted for it: they make no room before
 *   it, though the word's ledger, which every refund raises, would say so.
 *   Another process's gives are not seen here; they leave the word with
 *   more room than this line uses, never less.
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

/* Placed within this of each other: placed together (see "Late sends"). */
#define LIMBO_GRACE_NS 1000000

/*
 * A pool's skew in this multi, per bucket d: the server's bucket may be up
 * to e[d] behind the segment's word (its tat later by e[d]), until
 * until[d], when the server's bucket is full again at the latest (then
 * nothing is left to carry).  A late send of k shows e[d] = lateness -
 * debt[d] and the server full no later than k's end plus e[d]; each
 * transfer it moves ends later too, and carries it on.
 */
struct shim_skew {
	int64_t e[3], until[3];
};

/* Used only by the thread that uses the multi handle. */
struct shim_multi {
	struct cds_lfht_node node;
	CURLM *key;
	struct hs *list;       /* transfers held back, refused or reported (hs->hold) */
	struct hs *limbo;      /* given to libcurl, not yet sent (hs->limbo_in) */
	struct shim_skew skew[SHL_MAX_POOLS]; /* per pool */
	/* the application's CURLMOPT_TIMERFUNCTION, when wrapped */
	curl_multi_timer_callback app_timer;
	void *app_timer_data;
	int timer_wrapped;     /* libcurl calls wrap_timer with this state */
	int overridden;        /* the application's timer was last set to a release */
	int releasing, rearming, forgetting; /* re-entrance guards */
	uint64_t seq;          /* places taken in this multi (hs->seq) */
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

/* Held transfers are kept in the order they were added: released in that
 * order when they are due together. */
static void list_append(struct shim_multi *m, struct hs *s)
{
	struct hs **pp = &m->list;
	while (*pp != NULL)
		pp = &(*pp)->next_held;
	s->next_held = NULL;
	*pp = s;
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

/* ------------------------------------------------------------------ */
/* Late sends: limbo, gate and shift (see the top of the file)         */
/* ------------------------------------------------------------------ */

/* A transfer given to libcurl with a place in line (one admitted in its
 * pre-request callback has none: it is sent there). */
static void limbo_add(struct shim_multi *m, struct hs *s)
{
	if (!s->ticket_open)
		return;
	s->limbo_in = m;
	s->next_limbo = m->limbo;
	m->limbo = s;
}

static void limbo_del(struct hs *s)
{
	struct shim_multi *m = s->limbo_in;
	if (m == NULL)
		return;
	for (struct hs **pp = &m->limbo; *pp != NULL; pp = &(*pp)->next_limbo) {
		if (*pp == s) {
			*pp = s->next_limbo;
			break;
		}
	}
	s->limbo_in = NULL;
	s->next_limbo = NULL;
}

/*
 * How much later than its release `h` must go for the skew `k` (0: not
 * moved).  In each bucket d still skewed at its release, two bounds on the
 * server's tat before h: the word's (release + debt) plus e[d], and
 * until[d]; h conforms there once that tat + its cost - the tolerance is
 * past, i.e. (edge - debt) after it: the smaller of the two moves.
 */
static int64_t moved_by(const struct hs *h, const struct shim_skew *k)
{
	int64_t by = 0;
	for (int d = 0; d < 3; d++) {
		if (k->until[d] <= h->release0 || h->place.edge[d] == INT64_MIN)
			continue;
		int64_t a = h->place.edge[d] + k->e[d];
		int64_t b = k->until[d] + h->place.edge[d] - h->place.debt[d] - h->release0;
		int64_t m = a < b ? a : b;
		if (m > by)
			by = m;
	}
	return by;
}

/*
 * The bound on the server's tat in bucket d after `h` sent at `at`, the
 * skew being e and the bound before it `until`: before h the server's tat
 * is at most the word's (release0 + debt) plus e, or `until` when that is
 * tighter and still holds at h's release; after h, at most max(that, at)
 * plus h's cost (full - debt).
 */
static int64_t end_bound(const struct hs *h, int d, int64_t e, int64_t until, int64_t at)
{
	int64_t base = h->release0 + h->place.debt[d] + e;
	if (until > h->release0 && until < base)
		base = until;
	if (base < at)
		base = at;
	return base + (h->place.full[d] - h->place.debt[d]);
}

/* Fold a send of `h` at `at` showing e[] into the pool's skew `k`. */
static void carry(struct shim_multi *m, struct shim_skew *k, struct hs *h, const int64_t e[3],
		  int64_t at)
{
	for (int d = 0; d < 3; d++) {
		if (e[d] <= 0 || h->place.full[d] == INT64_MIN)
			continue;
		int64_t until = end_bound(h, d, e[d], k->until[d], at);
		if (k->until[d] <= h->release0 || e[d] > k->e[d])
			k->e[d] = e[d];
		if (until > k->until[d])
			k->until[d] = until;
		h->carried_by = m->key; /* its settlement may lower the bound */
	}
}

/*
 * What a send of `h` at `now` shows, per bucket: the server's tat after it
 * is later than the word's by at most max(the skew still live at h's
 * release, lateness - debt) (0 for a bucket it does not take).
 */
static void behind(const struct hs *h, const struct shim_skew *k, int64_t now, int64_t e[3])
{
	for (int d = 0; d < 3; d++) {
		if (h->place.debt[d] == INT64_MIN) {
			e[d] = 0;
			continue;
		}
		e[d] = now - h->release0 - h->place.debt[d];
		if (k != NULL && k->until[d] > h->release0 && k->e[d] > e[d])
			e[d] = k->e[d];
	}
}

/* Whether `s`, due now, must wait for a late transfer of its pool in limbo:
 * sent now, that transfer would move `s`. */
static int gated(const struct shim_multi *m, const struct hs *s, int64_t now)
{
	if (!s->ticket_open)
		return 0; /* no place yet: it takes one (and the skew) when placed */
	for (const struct hs *k = m->limbo; k != NULL; k = k->next_limbo) {
		if (k->pool != s->pool || s->release0 - k->release0 <= LIMBO_GRACE_NS)
			continue;
		struct shim_skew sk;
		behind(k, &m->skew[k->pool], now, sk.e);
		for (int d = 0; d < 3; d++)
			sk.until[d] = INT64_MAX;
		if (moved_by(s, &sk) > 0)
			return 1;
	}
	return 0;
}

/*
 * Move `h` (placed, held) by the running bound `run`, then extend `run`
 * by h's own cost at its (moved) release, for the transfers after it.
 */
static void step(struct shim_skew *run, struct hs *h)
{
	int64_t by = moved_by(h, run);
	if (by > 0 && h->release0 + by > h->release_at)
		h->release_at = h->release0 + by;
	for (int d = 0; d < 3; d++)
		if (run->until[d] > h->release0 && h->place.full[d] != INT64_MIN)
			run->until[d] = end_bound(h, d, run->e[d], run->until[d], h->release_at);
}

/*
 * The pool's held, placed transfers, in line order, moved against a
 * running copy of its bound (which only sends extend): each is moved by
 * what the transfers before it leave, never by its own cost.  Those placed
 * within LIMBO_GRACE_NS after `with` (a release: placed together with the
 * late one) are not moved; `extra`, a new place, goes last.
 */
static void replan(struct shim_multi *m, int p, int64_t with, struct hs *extra)
{
	struct shim_skew run = m->skew[p];
	for (struct hs *h = m->list; h != NULL; h = h->next_held) {
		if (h == extra || h->hold != HOLD_WAITING || h->pool != p || !h->ticket_open ||
		    (with != INT64_MIN && h->release0 - with <= LIMBO_GRACE_NS))
			continue;
		step(&run, h);
	}
	if (extra != NULL)
		step(&run, extra);
}

void shim_multi_sent(struct hs *s, int64_t now)
{
	struct shim_multi *m = s->limbo_in;
	if (m == NULL)
		return;
	limbo_del(s);
	int p = s->pool;
	if (p < 0 || p >= SHL_MAX_POOLS)
		return;
	struct shim_skew *k = &m->skew[p];
	int64_t e[3];
	behind(s, k, now, e);
	if (e[0] <= 0 && e[1] <= 0 && e[2] <= 0)
		return;
	carry(m, k, s, e, now);
	replan(m, p, s->release0, NULL);
}

void shim_multi_unsent(struct hs *s)
{
	limbo_del(s);
}

/*
 * A bound carried a transfer's cost as admitted (the estimate); the server
 * counted less: the server's tat is that much earlier in the input bucket,
 * and the bound comes down by it.  (More than the estimate: settlement
 * charges the word, and the bound is left as it was, the safe way.)
 */
void shim_multi_settled(struct hs *s, uint64_t charged, uint64_t counted)
{
	CURLM *key = s->carried_by;
	s->carried_by = NULL;
	struct shim_multi *m = key != NULL ? shim_multi_find(key) : NULL;
	int p = s->pool, d = SHL_DIM_ITPM;
	if (m == NULL || p < 0 || p >= SHL_MAX_POOLS || charged <= counted ||
	    s->place.full[d] == INT64_MIN)
		return;
	struct shim_skew *k = &m->skew[p];
	int64_t cost = s->place.full[d] - s->place.debt[d]; /* ns for `charged` units */
	if (cost <= 0 || k->until[d] <= shl_now())
		return;
	/* charged < 2^34 (settle clamps counts), cost < 2^62: long double */
	k->until[d] -= (int64_t)((long double)cost * (long double)(charged - counted) /
				 (long double)charged);
}

/*
 * Move held `h` sooner by the gives g[] (ns per bucket) of a transfer placed
 * before it (shl_ex_follow: each bucket's edge moves down by its give; when
 * a bucket set the release, the release moves to the latest edge, or as far
 * as the word allows, and h's place is restated from the new release,
 * exactly or the safe way), with its late-send release the same.  1 when
 * it moved.
 */
static int advance(struct hs *h, const int64_t g[3])
{
	/* The library moves the reservation itself (shl_ex_start refuses one
	 * started before its release) and restates its place. */
	int64_t rel;
	if (shl_ex_follow(g_shl, h->ex, g, &h->place, &rel) != 1)
		return 0;
	h->release_at -= h->release0 - rel;
	h->release0 = rel;
	return 1;
}

void shim_multi_given(struct hs *s, const int64_t given[3])
{
	CURLM *key = s->line;
	struct shim_multi *m = key != NULL ? shim_multi_find(key) : NULL;
	int p = s->pool;
	if (m == NULL || m->forgetting || p < 0 || p >= SHL_MAX_POOLS ||
	    (given[0] <= 0 && given[1] <= 0 && given[2] <= 0))
		return;
	int moved = 0;
	for (struct hs *h = m->list; h != NULL; h = h->next_held)
		if (h->hold == HOLD_WAITING && h->pool == p && h->ticket_open && h->line == key &&
		    h->seq > s->seq)
			moved |= advance(h, given);
	if (!moved)
		return;
	replan(m, p, INT64_MIN, NULL);
	if (!m->releasing)
		shim_multi_rearm(m);
}

int shim_multi_hold_back(struct shim_multi *m, struct hs *s, int64_t now, int placed)
{
	if (m == NULL)
		return 0;
	if (placed) {
		s->line = m->key;
		s->seq = ++m->seq;
	}
	/* A new place (release0 and release_at just set) in a pool whose line
	 * a late send moved is moved the same way, behind the held ones. */
	if (placed && s->pool >= 0 && s->pool < SHL_MAX_POOLS && s->ticket_open)
		replan(m, s->pool, INT64_MIN, s);
	return s->release_at > now || gated(m, s, now);
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
	int64_t first = INT64_MAX, now = shl_now();
	int news = 0;
	for (struct hs *s = m ? m->list : NULL; s != NULL; s = s->next_held) {
		if (s->hold == HOLD_REFUSED && !s->announced) {
			s->announced = 1;
			news = 1;
		}
		if (s->hold == HOLD_WAITING && s->release_at < first && !gated(m, s, now))
			first = s->release_at;
	}
	if (news)
		return 0;
	if (first == INT64_MAX)
		return -1;
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
	if (mc == CURLM_OK) {
		limbo_add(m, s);
		return 1;
	}
	s->hold = HOLD_WAITING;
	s->held_by = m->key;
	list_append(m, s);
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
		if (s->hold != HOLD_WAITING || s->release_at > now || gated(m, s, now))
			continue;
		int r = shim_start(s, now, m);
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
	int r = m != NULL ? shim_start(s, now, m) : 0; /* no state: admitted in prereq */
	if (r == 0 || r == -2) {
		CURLMcode mc = real.multi_add(multi, s->key);
		if (mc != CURLM_OK)
			shim_cancel(s); /* nothing sent: cancelled */
		else if (r == 0 && m != NULL)
			limbo_add(m, s);
		return mc;
	}
	s->held_by = multi;
	list_append(m, s);
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
	m->forgetting = 1;
	while (m->list != NULL)
		shim_multi_drop(m->list);
	while (m->limbo != NULL)
		limbo_del(m->limbo);
	rcu_read_lock();
	int r = cds_lfht_del(g_mt, &m->node);
	rcu_read_unlock();
	if (r != 0)
		return;
	synchronize_rcu(); /* no reader of the table still walks through m */
	free(m);
}
