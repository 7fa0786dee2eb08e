/*
 * mech_lock.c - the two lock-based baselines: a robust process-shared
 * pthread mutex, and flock() on a file.
 *
 * Both guard the same arithmetic (rule.c) over the same state: every pool's
 * three bucket words plus the one segment-wide spend counter.  One lock for
 * the whole state is not a straw man: admission is all-or-nothing across a
 * pool's buckets AND the shared spend counter, so a lock-based design needs
 * a critical section that covers the spend word whatever it does with the
 * pools (nginx's shared zones likewise take one mutex per zone).  The clock
 * is read inside the critical section, as a careful engineer would, so the
 * rule never sees a time older than the state it updates.
 *
 * The mutex lives in a MAP_SHARED mapping with the state, and is robust: a
 * worker killed while holding it hands the next locker EOWNERDEAD, which
 * marks it consistent and goes on (the arithmetic is always left whole
 * because it is written after every check).
 *
 * flock() locks belong to an open file description, so each worker opens
 * the file itself in attach(); a descriptor inherited over fork would share
 * one lock among all workers and exclude nobody.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"

/* ------------------------------------------------------------------ */
/* Mutex                                                               */
/* ------------------------------------------------------------------ */

struct mutex_seg {
	pthread_mutex_t mu;
	uint8_t pad[64 - sizeof(pthread_mutex_t) % 64];
	struct bench_rule_state rs;
};

static int mutex_setup(struct bench_mech *m)
{
	struct mutex_seg *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		return -errno;
	memset(s, 0, sizeof(*s));
	pthread_mutexattr_t at;
	pthread_mutexattr_init(&at);
	pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
	int rc = pthread_mutex_init(&s->mu, &at);
	pthread_mutexattr_destroy(&at);
	if (rc != 0) {
		munmap(s, sizeof(*s));
		return -rc;
	}
	m->state = s;
	return 0;
}

static int mutex_attach(struct bench_mech *m, int id)
{
	return 0;
}

static int mutex_lock(struct mutex_seg *s)
{
	int rc = pthread_mutex_lock(&s->mu);
	if (rc == EOWNERDEAD)
		rc = pthread_mutex_consistent(&s->mu);
	return -rc;
}

static int mutex_admit(struct bench_mech *m, int pool, struct bench_adm *a)
{
	struct mutex_seg *s = m->state;
	int rc = mutex_lock(s);
	if (rc != 0)
		return rc;
	rc = bench_rule_admit(&s->rs, m->sc, pool, bench_boot_ns(), a);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static int mutex_settle(struct bench_mech *m, struct bench_adm *a)
{
	struct mutex_seg *s = m->state;
	int rc = mutex_lock(s);
	if (rc != 0)
		return rc;
	bench_rule_settle(&s->rs, m->sc, a, bench_boot_ns());
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void mutex_detach(struct bench_mech *m)
{
}

static void mutex_teardown(struct bench_mech *m)
{
	struct mutex_seg *s = m->state;
	if (s != NULL) {
		pthread_mutex_destroy(&s->mu);
		munmap(s, sizeof(*s));
	}
	m->state = NULL;
}

const struct bench_mech_ops bench_mech_mutex = {
	.name = "mutex",
	.what = "robust PTHREAD_PROCESS_SHARED mutex around the same arithmetic in a shared mapping",
	.setup = mutex_setup,
	.attach = mutex_attach,
	.admit = mutex_admit,
	.settle = mutex_settle,
	.detach = mutex_detach,
	.teardown = mutex_teardown,
};

/* ------------------------------------------------------------------ */
/* flock                                                               */
/* ------------------------------------------------------------------ */

struct flock_state {
	char path[128];
};

struct flock_local {
	int fd;
	struct bench_rule_state *rs;
};

static int flock_setup(struct bench_mech *m)
{
	struct flock_state *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	int n = snprintf(st->path, sizeof(st->path), "/dev/shm/shmlimit-bench-flock-%ld",
			 (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(st->path)) {
		free(st);
		return -ENAMETOOLONG;
	}
	int fd = open(st->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = -errno;
		free(st);
		return e;
	}
	int rc = ftruncate(fd, sizeof(struct bench_rule_state)) == 0 ? 0 : -errno;
	close(fd);
	if (rc != 0) {
		unlink(st->path);
		free(st);
		return rc;
	}
	m->state = st;
	return 0;
}

static int flock_attach(struct bench_mech *m, int id)
{
	struct flock_state *st = m->state;
	struct flock_local *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	l->fd = open(st->path, O_RDWR | O_CLOEXEC);
	if (l->fd < 0) {
		int e = -errno;
		free(l);
		return e;
	}
	void *p = mmap(NULL, sizeof(struct bench_rule_state), PROT_READ | PROT_WRITE, MAP_SHARED,
		       l->fd, 0);
	if (p == MAP_FAILED) {
		int e = -errno;
		close(l->fd);
		free(l);
		return e;
	}
	l->rs = p;
	m->local = l;
	return 0;
}

static int flock_lock(int fd)
{
	while (flock(fd, LOCK_EX) != 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static int flock_admit(struct bench_mech *m, int pool, struct bench_adm *a)
{
	struct flock_local *l = m->local;
	int rc = flock_lock(l->fd);
	if (rc != 0)
		return rc;
	rc = bench_rule_admit(l->rs, m->sc, pool, bench_boot_ns(), a);
	flock(l->fd, LOCK_UN);
	return rc;
}

static int flock_settle(struct bench_mech *m, struct bench_adm *a)
{
	struct flock_local *l = m->local;
	int rc = flock_lock(l->fd);
	if (rc != 0)
		return rc;
	bench_rule_settle(l->rs, m->sc, a, bench_boot_ns());
	flock(l->fd, LOCK_UN);
	return 0;
}

static void flock_detach(struct bench_mech *m)
{
	struct flock_local *l = m->local;
	if (l == NULL)
		return;
	munmap(l->rs, sizeof(struct bench_rule_state));
	close(l->fd);
	free(l);
	m->local = NULL;
}

static void flock_teardown(struct bench_mech *m)
{
	struct flock_state *st = m->state;
	if (st == NULL)
		return;
	unlink(st->path);
	free(st);
	m->state = NULL;
}

const struct bench_mech_ops bench_mech_flock = {
	.name = "flock",
	.what = "flock(LOCK_EX) on a tmpfs file around the same arithmetic in its mapping",
	.setup = flock_setup,
	.attach = flock_attach,
	.admit = flock_admit,
	.settle = flock_settle,
	.detach = flock_detach,
	.teardown = flock_teardown,
};
