/*
 * fault.c - countdown fault injection, for the tests.
 *
 * Every call that can fail for a reason outside the library's control
 * (shm_open, fchmod, ftruncate, mmap, each allocation) goes through one of
 * the wrappers below.  A test sets shl__fault_countdown to N: the Nth such
 * call from then on fails as the real one would (errno set), once, and the
 * countdown switches itself off.  Running N = 1, 2, 3, ... until the
 * operation succeeds visits every failure point in turn, SQLite-style; the
 * test then checks each returned its error, leaked nothing (under
 * AddressSanitizer) and left no half-made segment behind.
 *
 * With the countdown at 0 (always, outside tests) each wrapper costs one
 * relaxed load; none of them is on the admission path.
 *
 * Also here, the attempt counter of shl_acquire: "sleeps until the computed
 * time; it does not spin" is a claim about how many times the loop runs,
 * which a test can count where it cannot time.  With shl__acquire_count_on
 * set, each admission attempt of shl_acquire's loop adds one to
 * shl__acquire_attempts; off (always, outside tests), the loop pays one
 * relaxed load per attempt, not per admission of shl_try.
 *
 * And a contention hook for the charge of a settle (usage above the
 * estimate), which must always land: with shl__charge_interfere at N, the
 * next N compare-and-swap attempts of shl__bucket_charge each find the
 * word moved by one nanosecond first, as when other processes keep taking
 * from the bucket; a charge that gave up after a bounded number of tries
 * would be lost (an over-admission).  Off (always, outside tests) it costs
 * one relaxed load per charge.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

_Atomic long shl__fault_countdown;

int shl__fault(void)
{
	/* relaxed: a test-only counter; single-threaded when in use. */
	if (shl_likely(atomic_load_explicit(&shl__fault_countdown, memory_order_relaxed) == 0))
		return 0;
	long v = atomic_fetch_sub_explicit(&shl__fault_countdown, 1, memory_order_relaxed);
	if (v <= 0)
		atomic_store_explicit(&shl__fault_countdown, 0, memory_order_relaxed);
	return v == 1;
}

_Atomic int shl__acquire_count_on;
_Atomic long shl__acquire_attempts;

void shl__acquire_attempt(void)
{
	/* relaxed: a test-only counter, read by the test after the calls it
	 * counts have returned (program order, or a join, orders it). */
	atomic_fetch_add_explicit(&shl__acquire_attempts, 1, memory_order_relaxed);
}

_Atomic long shl__charge_interfere;

void shl__charge_interfere_step(_Atomic uint64_t *tat)
{
	/* relaxed: test-only; the word publishes nothing (bucket.c). */
	atomic_fetch_sub_explicit(&shl__charge_interfere, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(tat, 1, memory_order_relaxed);
}

void *shl__malloc(size_t n)
{
	if (shl__fault()) {
		errno = ENOMEM;
		return NULL;
	}
	return malloc(n);
}

void *shl__calloc(size_t k, size_t n)
{
	if (shl__fault()) {
		errno = ENOMEM;
		return NULL;
	}
	return calloc(k, n);
}

int shl__shm_open(const char *path, int flags, mode_t mode)
{
	if (shl__fault()) {
		errno = EMFILE;
		return -1;
	}
	return shm_open(path, flags, mode);
}

/* shl_reset's flock (a test checks that every reset takes it). */
int shl__flock(int fd, int op)
{
	if ((op & LOCK_EX) && shl__fault()) {
		errno = ENOLCK;
		return -1;
	}
	return flock(fd, op);
}

int shl__fchmod(int fd, mode_t mode)
{
	if (shl__fault()) {
		errno = EPERM;
		return -1;
	}
	return fchmod(fd, mode);
}

int shl__ftruncate(int fd, off_t len)
{
	if (shl__fault()) {
		errno = ENOSPC;
		return -1;
	}
	return ftruncate(fd, len);
}

void *shl__mmap(size_t len, int prot, int fd)
{
	if (shl__fault()) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return mmap(NULL, len, prot, MAP_SHARED, fd, 0);
}
