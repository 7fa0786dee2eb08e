/*
 * segment.c - creating, attaching, reconfiguring and checking a segment.
 *
 * A segment is a POSIX shared-memory object of a fixed size and layout
 * (internal.h).  The creator builds it completely, with the magic written
 * last, and removes it again on any failure, so no half-made segment is
 * left behind.  Attaching trusts nothing: magic, version, sizes and owner
 * are checked before mapping, and the live configuration is copied out and
 * validated field by field before any of it is used; after that the hot
 * path reads only the words it updates with atomics.
 *
 * Configuration updates (shl_apply) use two slots.  The applier writes the
 * slot that is NOT live, then publishes it by bumping the generation with a
 * release store; readers copy the live slot and re-read the generation to
 * make sure no second apply started writing into the slot they copied.  An
 * applier killed half-way leaves the live slot untouched.  Appliers
 * serialise among themselves with flock() on the object, which the kernel
 * releases if they die.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Retired process-local configs: freed at detach (another thread may still
 * be reading one; applies are rare, so they are few). */
struct retired {
	struct retired *next;
	struct shl_local *l;
};

struct shl_priv {
	struct shl pub;
	pthread_mutex_t mu; /* serialises refresh and lookup rebuilds */
	struct retired *retired;
};

static int shm_path(const char *name, char *out, size_t outlen, shl_err *e)
{
	if (name == NULL) {
		shl__err(e, "segment name: missing");
		return -ENAMETOOLONG;
	}
	const char *n = name[0] == '/' ? name + 1 : name;
	size_t len = strlen(n);
	if (len == 0 || len > 200) {
		shl__err(e, "segment name '%s': expected 1 to 200 characters", name);
		return -ENAMETOOLONG;
	}
	for (size_t i = 0; i < len; i++) {
		char c = n[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-')) {
			shl__err(e, "segment name '%s': only A-Z a-z 0-9 . _ - are allowed", name);
			return -ENAMETOOLONG;
		}
	}
	if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0) {
		shl__err(e, "segment name '%s' is not allowed", name);
		return -ENAMETOOLONG;
	}
	snprintf(out, outlen, "/%s", n);
	return 0;
}

/* Word-wise relaxed copies, so a copy racing an apply is a defined
 * (if possibly inconsistent, and then discarded) read, not a data race. */
static void copy_in(void *dst, const void *src, size_t n)
{
	uint64_t *d = dst;
	const uint64_t *s = src;
	for (size_t i = 0; i < n / 8; i++)
		d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

static void copy_out(void *dst, const void *src, size_t n)
{
	uint64_t *d = dst;
	const uint64_t *s = src;
	for (size_t i = 0; i < n / 8; i++)
		__atomic_store_n(&d[i], s[i], __ATOMIC_RELAXED);
}

/*
 * Copy the live configuration out of the segment, validate it and publish
 * the copy for this process.  NULL with errno ENOMEM (no memory) or EUCLEAN
 * (the live slot does not validate, or never holds still).
 */
struct shl_local *shl__local_refresh(struct shl *h)
{
	struct shl_priv *hp = (struct shl_priv *)h;
	struct shl_local *cur;
	struct shl_local *l = shl__malloc(sizeof(*l));
	struct retired *r = shl__malloc(sizeof(*r));
	if (l == NULL || r == NULL) {
		free(l);
		free(r);
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&hp->mu);
	for (int tries = 0; tries < 1000; tries++) {
		/* acquire: pairs with the release store in slot_publish; the
		 * slot it names is complete. */
		uint64_t g = atomic_load_explicit(&h->seg->genl.gen, memory_order_acquire);
		cur = atomic_load_explicit(&h->local, memory_order_relaxed);
		if (cur != NULL && cur->gen == g) {
			pthread_mutex_unlock(&hp->mu);
			free(l);
			free(r);
			return cur;
		}
		copy_in(&l->slot, &h->seg->cfg[g & 1], sizeof(l->slot));
		/* acquire fence: the copy above is ordered before the re-read of
		 * the generation below (a seqlock read). */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&h->seg->genl.gen, memory_order_relaxed) != g)
			continue; /* an apply published meanwhile: copy again */
		if (l->slot.gen != g || shl__slot_checksum(&l->slot) != l->slot.checksum ||
		    shl__slot_validate(&l->slot, NULL) != 0)
			break;
		shl__local_build(l, &l->slot);
		shl__local_observe(l, h->seg); /* the server's limits (observe.c) */
		if (cur != NULL) {
			r->l = cur;
			r->next = hp->retired;
			hp->retired = r;
			r = NULL;
		}
		/* release: pairs with the acquire load in shl__local(); the
		 * fully built copy is visible to any thread that sees it. */
		atomic_store_explicit(&h->local, l, memory_order_release);
		pthread_mutex_unlock(&hp->mu);
		free(r);
		return l;
	}
	pthread_mutex_unlock(&hp->mu);
	free(l);
	free(r);
	errno = EUCLEAN;
	return NULL;
}

static void slot_publish(struct shl_seg *seg, struct shl_cfg_slot *s, uint64_t gen)
{
	s->gen = gen;
	s->checksum = 0;
	s->checksum = shl__slot_checksum(s);
	copy_out(&seg->cfg[gen & 1], s, sizeof(*s));
	/* release: pairs with the acquire loads of gen in shl__local() and
	 * shl__local_refresh(): the slot written above is complete for anyone
	 * who sees the new generation. */
	atomic_store_explicit(&seg->genl.gen, gen, memory_order_release);
}

static struct shl_priv *handle_new(struct shl_seg *seg, int fd, int rdonly, const char *path)
{
	struct shl_priv *hp = shl__calloc(1, sizeof(*hp));
	if (hp == NULL)
		return NULL;
	hp->pub.seg = seg;
	hp->pub.fd = fd;
	hp->pub.rdonly = rdonly;
	hp->pub.hid = shl__hid_new();
	snprintf(hp->pub.name, sizeof(hp->pub.name), "%s", path);
	pthread_mutex_init(&hp->mu, NULL);
	return hp;
}

static void handle_free(struct shl_priv *hp)
{
	struct shl *h = &hp->pub;
	shl__lookup_free(h);
	free(atomic_load_explicit(&h->local, memory_order_relaxed));
	while (hp->retired) {
		struct retired *r = hp->retired;
		hp->retired = r->next;
		free(r->l);
		free(r);
	}
	pthread_mutex_destroy(&hp->mu);
	free(hp);
}

/* Finish a handle: first config copy and the lookup table. */
static int handle_open(struct shl_priv *hp, shl_err *e)
{
	if (shl__local_refresh(&hp->pub) == NULL) {
		if (errno == ENOMEM) {
			shl__err(e, "out of memory");
			return -ENOMEM;
		}
		shl_err tmp;
		uint64_t g = atomic_load_explicit(&hp->pub.seg->genl.gen, memory_order_acquire);
		struct shl_cfg_slot *s = shl__malloc(sizeof(*s));
		if (s == NULL) {
			shl__err(e, "out of memory");
			return -ENOMEM;
		}
		copy_in(s, &hp->pub.seg->cfg[g & 1], sizeof(*s));
		if (s->gen != g)
			snprintf(tmp.msg, sizeof(tmp.msg),
				 "config slot %llu: serves generation %llu, header says %llu",
				 (unsigned long long)(g & 1), (unsigned long long)s->gen,
				 (unsigned long long)g);
		else if (shl__slot_checksum(s) != s->checksum)
			snprintf(tmp.msg, sizeof(tmp.msg), "config slot %llu: checksum mismatch",
				 (unsigned long long)(g & 1));
		else if (shl__slot_validate(s, &tmp) == 0)
			snprintf(tmp.msg, sizeof(tmp.msg), "configuration unreadable");
		free(s);
		shl__err(e, "segment '%s' is corrupt: %s", hp->pub.name, tmp.msg);
		return -EUCLEAN;
	}
	int r = shl__lookup_init(&hp->pub);
	if (r) {
		shl__err(e, "out of memory");
		return r;
	}
	return 0;
}

int shl_create(const char *name, const shl_config *cfg, unsigned flags, shl_t **out,
	       shl_err *err)
{
	char path[256];
	int r = shm_path(name, path, sizeof(path), err);
	if (r)
		return r;
	if (cfg == NULL) {
		shl__err(err, "no configuration given");
		return -EINVAL;
	}
	if (out)
		*out = NULL;
	if ((flags & SHL_CREATE_REPLACE) && shm_unlink(path) != 0 && errno != ENOENT) {
		/* Not ours to remove (another user's, in the sticky /dev/shm):
		 * say so, rather than "already exists" from the O_EXCL below. */
		r = -errno;
		shl__err(err, "segment '%s': cannot replace it: %s", path,
			 r == -EPERM || r == -EACCES ? "permission denied (another user's segment)"
						     : strerror(-r));
		return r == -EACCES ? -EPERM : r;
	}
	mode_t mode = (flags & SHL_CREATE_GROUP) ? 0660 : 0600;
	int fd = shl__shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		r = -errno;
		shl__err(err, "segment '%s': %s", path,
			 r == -EEXIST ? "already exists (remove it, or replace it)" : strerror(-r));
		return r;
	}
	struct shl_seg *seg = MAP_FAILED;
	if (shl__fchmod(fd, mode) != 0 || shl__ftruncate(fd, (off_t)SHL_SEG_SIZE) != 0) {
		r = -errno;
		shl__err(err, "segment '%s': sizing: %s", path, strerror(-r));
		goto fail;
	}
	seg = shl__mmap(SHL_SEG_SIZE, PROT_READ | PROT_WRITE, fd);
	if (seg == MAP_FAILED) {
		r = -errno;
		shl__err(err, "segment '%s': mmap: %s", path, strerror(-r));
		goto fail;
	}
	/* ftruncate gave zeros: every bucket is full, every counter zero. */
	seg->hdr.version = SHL_LAYOUT_VERSION;
	seg->hdr.header_size = sizeof(struct shl_hdr);
	seg->hdr.total_size = SHL_SEG_SIZE;
	seg->hdr.created_unix_ns = shl__unix_ns();
	seg->hdr.owner_uid = (uint32_t)geteuid();
	seg->hdr.max_pools = SHL_MAX_POOLS;
	seg->hdr.max_models = SHL_MAX_MODELS;
	seg->hdr.flags = flags;
	seg->hdr.created_boot_ns = shl__now();
	uint32_t month = shl__month_of(seg->hdr.created_unix_ns, NULL);
	atomic_store_explicit(&seg->spendl.spend, (uint64_t)(month & 127u) << SHL_SPEND_BITS,
			      memory_order_relaxed);
	struct shl_cfg_slot *s = shl__malloc(sizeof(*s));
	if (s == NULL) {
		r = -ENOMEM;
		shl__err(err, "out of memory");
		goto fail;
	}
	memcpy(s, &cfg->slot, sizeof(*s));
	s->spend_epoch = 0; /* a config copied out of another segment brings none */
	shl__cluster_store(seg, &cfg->cluster);
	slot_publish(seg, s, 2);
	free(s);
	/* release: the magic goes last; an attacher that sees it sees a
	 * complete segment (pairs with the acquire load of the mapped magic
	 * in shl_attach; the header checks before it read a pread() copy,
	 * which orders nothing). */
	__atomic_store_n(&seg->hdr.magic, SHL_MAGIC, __ATOMIC_RELEASE);
	if (out == NULL) {
		munmap(seg, SHL_SEG_SIZE);
		close(fd);
		return 0;
	}
	struct shl_priv *hp = handle_new(seg, fd, 0, path);
	if (hp == NULL) {
		r = -ENOMEM;
		shl__err(err, "out of memory");
		goto fail;
	}
	if ((r = handle_open(hp, err)) != 0) {
		handle_free(hp);
		goto fail;
	}
	*out = &hp->pub;
	return 0;
fail:
	if (seg != MAP_FAILED)
		munmap(seg, SHL_SEG_SIZE);
	close(fd);
	shm_unlink(path);
	return r;
}

/* What a non-regular file in a segment's place is, for the message. */
static const char *mode_kind(mode_t m)
{
	return S_ISFIFO(m)   ? "a FIFO"
	       : S_ISDIR(m)  ? "a directory"
	       : S_ISSOCK(m) ? "a socket"
	       : S_ISCHR(m)  ? "a character device"
	       : S_ISBLK(m)  ? "a block device"
	       : S_ISLNK(m)  ? "a symbolic link"
			     : "something";
}

/* The same when open(2) refused it: look at the name (shm_open's
 * directory is /dev/shm on Linux). */
static const char *squatter_kind(const char *path)
{
	char p[300];
	struct stat st;
	snprintf(p, sizeof(p), "/dev/shm%s", path);
	return lstat(p, &st) == 0 && !S_ISREG(st.st_mode) ? mode_kind(st.st_mode) : "something";
}

/* Is `gid` the caller's effective group or one of its supplementary groups? */
static int in_group(gid_t gid)
{
	if (gid == getegid())
		return 1;
	int n = getgroups(0, NULL);
	gid_t *g = n > 0 ? shl__malloc((size_t)n * sizeof(*g)) : NULL;
	int in = 0;
	if (g != NULL) {
		n = getgroups(n, g);
		for (int i = 0; i < n && !in; i++)
			in = g[i] == gid;
		free(g);
	}
	return in; /* no memory: not in the group, the owner check stands */
}

/*
 * Leave a trace of a refused attach in the segment (layout.h, struct
 * shl_attach_log), for shmlimit-stat: only called with `fd` open read-write
 * on an object whose header validated, so the bytes written are ours.
 * Best effort: a failure to map is ignored (the caller's error stands).
 */
static void attach_log(int fd, int err)
{
	const size_t off = __builtin_offsetof(struct shl_seg, ext);
	_Static_assert(__builtin_offsetof(struct shl_seg, ext) % 4096 == 0, "ext on a page");
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
	if (p == MAP_FAILED)
		return;
	struct shl_attach_log *al = &((struct shl_seg_ext *)p)->attach;
	/* relaxed: counters and a last-seen record, read by statistics only. */
	atomic_fetch_add_explicit(&al->failures, 1, memory_order_relaxed);
	if (err == -EPERM)
		atomic_fetch_add_explicit(&al->owner_refusals, 1, memory_order_relaxed);
	atomic_store_explicit(&al->last_unix_ns, shl__unix_ns(), memory_order_relaxed);
	atomic_store_explicit(&al->last_uid, (uint32_t)geteuid(), memory_order_relaxed);
	atomic_store_explicit(&al->last_pid, (uint32_t)getpid(), memory_order_relaxed);
	atomic_store_explicit(&al->last_error, err, memory_order_relaxed);
	munmap(p, 4096);
}

/* The header's fields, from a copy (shl_attach) or from the mapping
 * (shl_check); plain reads: the ordering with the creator is shl_attach's
 * acquire load of the mapped magic. */
static int validate_header(const struct shl_hdr *hd, off_t size, const char *path, shl_err *e)
{
	if (hd->magic != SHL_MAGIC) {
		shl__err(e, "segment '%s': header.magic is 0x%016llx, not a libshmlimit segment",
			 path, (unsigned long long)hd->magic);
		return -EPROTO;
	}
	if (hd->version != SHL_LAYOUT_VERSION) {
		shl__err(e, "segment '%s': header.version is %u, this library reads version %u",
			 path, hd->version, SHL_LAYOUT_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (hd->header_size != sizeof(struct shl_hdr) || hd->total_size != SHL_SEG_SIZE ||
	    (uint64_t)size != SHL_SEG_SIZE) {
		shl__err(e,
			 "segment '%s': size is %lld bytes, header.total_size %llu, "
			 "header.header_size %u; layout %u needs %zu and %zu",
			 path, (long long)size, (unsigned long long)hd->total_size,
			 hd->header_size, SHL_LAYOUT_VERSION, (size_t)SHL_SEG_SIZE,
			 sizeof(struct shl_hdr));
		return -EBADMSG;
	}
	if (hd->max_pools != SHL_MAX_POOLS || hd->max_models != SHL_MAX_MODELS) {
		shl__err(e, "segment '%s': header.max_pools %u / max_models %u, expected %d / %d",
			 path, hd->max_pools, hd->max_models, SHL_MAX_POOLS, SHL_MAX_MODELS);
		return -EUCLEAN;
	}
	return 0;
}

int shl_attach(const char *name, unsigned flags, shl_t **out, shl_err *err)
{
	char path[256];
	int r = shm_path(name, path, sizeof(path), err);
	if (r)
		return r;
	if (out == NULL)
		return -EINVAL;
	*out = NULL;
	int rd = (flags & SHL_ATTACH_RDONLY) != 0;
	/* O_NONBLOCK: a FIFO squatting the name would block a read-only open
	 * until a writer came; it is refused below, like any non-regular file,
	 * and the flag cleared for a real segment. */
	int fd = shl__shm_open(path, (rd ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		if (r == -ENXIO || r == -EISDIR || r == -ENODEV ||
		    (r == -EINVAL && strcmp(squatter_kind(path), "something") != 0)) {
			/* open(2) refuses a socket, a device without a driver or
			 * (read-write) a directory before we could fstat it
			 * (glibc's shm_open turns EISDIR into EINVAL). */
			r = -EPROTO;
			shl__err(err, "segment '%s' is not a regular file (%s in its place): "
				 "not a libshmlimit segment", path, squatter_kind(path));
		} else if (r == -ENOENT)
			shl__err(err, "segment '%s' does not exist (create it with shmlimit-ctl create)",
				 path);
		else if (r == -EACCES)
			shl__err(err, "segment '%s': permission denied for %s access", path,
				 rd ? "read" : "read-write");
		else
			shl__err(err, "segment '%s': %s", path, strerror(-r));
		return r;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		r = -errno;
		shl__err(err, "segment '%s': %s", path, strerror(-r));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EPROTO;
		shl__err(err, "segment '%s' is not a regular file (%s in its place): "
			 "not a libshmlimit segment", path, mode_kind(st.st_mode));
		goto fail;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
		r = -errno;
		shl__err(err, "segment '%s': fcntl: %s", path, strerror(-r));
		goto fail;
	}
	/* The header first: whether the segment was created for a group
	 * decides the owner check below. */
	struct shl_hdr hd;
	memset(&hd, 0, sizeof(hd));
	if (st.st_size < (off_t)sizeof(hd) || pread(fd, &hd, sizeof(hd), 0) != (ssize_t)sizeof(hd)) {
		r = -EBADMSG;
		shl__err(err, "segment '%s' is %lld bytes, smaller than a header (%zu)", path,
			 (long long)st.st_size, sizeof(hd));
		goto fail;
	}
	if ((r = validate_header(&hd, st.st_size, path, err)) != 0)
		goto fail;
	if (st.st_uid != geteuid() && !(flags & SHL_ATTACH_ANY_OWNER) &&
	    !((hd.flags & SHL_CREATE_GROUP) && in_group(st.st_gid))) {
		r = -EPERM;
		if (hd.flags & SHL_CREATE_GROUP)
			shl__err(err, "segment '%s' is owned by uid %u and made for group %u, which "
				 "you (uid %u) are not in", path, (unsigned)st.st_uid,
				 (unsigned)st.st_gid, (unsigned)geteuid());
		else
			shl__err(err, "segment '%s' is owned by uid %u, not by you (uid %u), and was "
				 "not created for a group (shmlimit-ctl create --group)", path,
				 (unsigned)st.st_uid, (unsigned)geteuid());
		if (!rd)
			attach_log(fd, r);
		goto fail;
	}
	struct shl_seg *seg = shl__mmap(SHL_SEG_SIZE, PROT_READ | (rd ? 0 : PROT_WRITE), fd);
	if (seg == MAP_FAILED) {
		r = -errno;
		shl__err(err, "segment '%s': mmap: %s", path, strerror(-r));
		goto fail;
	}
	/* acquire: pairs with the creator's release store of the magic,
	 * written last: everything the creator wrote before it (the
	 * configuration slot, the generation) is visible from here on. */
	if (__atomic_load_n(&seg->hdr.magic, __ATOMIC_ACQUIRE) != SHL_MAGIC) {
		munmap(seg, SHL_SEG_SIZE);
		r = -EPROTO;
		shl__err(err, "segment '%s': header.magic changed while attaching", path);
		goto fail;
	}
	struct shl_priv *hp = handle_new(seg, fd, rd, path);
	if (hp == NULL) {
		munmap(seg, SHL_SEG_SIZE);
		r = -ENOMEM;
		shl__err(err, "out of memory");
		goto fail;
	}
	if ((r = handle_open(hp, err)) != 0) {
		if (r == -EUCLEAN && !rd)
			attach_log(fd, r);
		munmap(seg, SHL_SEG_SIZE);
		handle_free(hp);
		goto fail;
	}
	*out = &hp->pub;
	return 0;
fail:
	close(fd);
	return r;
}

void shl_detach(shl_t *h)
{
	if (h == NULL)
		return;
	shl__pslots_release(h);
	munmap(h->seg, SHL_SEG_SIZE);
	close(h->fd);
	handle_free((struct shl_priv *)h);
}

int shl_unlink(const char *name)
{
	char path[256];
	int r = shm_path(name, path, sizeof(path), NULL);
	if (r)
		return r;
	return shm_unlink(path) == 0 ? 0 : -errno;
}

const char *shl_name(const shl_t *h)
{
	return h ? h->name : NULL;
}

uint64_t shl_generation(shl_t *h)
{
	if (h == NULL)
		return 0; /* no generation is 0: a segment starts at 2 */
	/* acquire: pairs with the release store in slot_publish. */
	return atomic_load_explicit(&h->seg->genl.gen, memory_order_acquire);
}

int shl_config_get(shl_t *h, shl_config **out)
{
	if (h == NULL || out == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	shl_config *c = shl__malloc(sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	memcpy(&c->slot, &l->slot, sizeof(c->slot));
	shl__cluster_load(h->seg, &c->cluster);
	*out = c;
	return 0;
}

/* Carry a bucket over to a new interval: keep its deficit in units.  Its
 * refund ledger stays: tickets of the old generation get no bucket refund,
 * and new tickets mark the ledger as they find it (bucket.c). */
static void bucket_rescale(_Atomic uint64_t *tat, int64_t now, uint64_t old_iv, uint64_t new_iv)
{
	uint64_t n = (uint64_t)now;
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	for (int i = 0; i < 1000; i++) {
		if (old <= n)
			return; /* full: stays full */
		unsigned __int128 deficit = (unsigned __int128)(old - n) * new_iv / old_iv;
		uint64_t next = deficit > (UINT64_MAX - n) ? UINT64_MAX : n + (uint64_t)deficit;
		/* relaxed: bucket words are independent counters (bucket.c). */
		if (atomic_compare_exchange_weak_explicit(tat, &old, next, memory_order_relaxed,
							  memory_order_relaxed))
			return;
	}
}

/*
 * Carry a bucket over to the rate the server reported (shl_observe_limits):
 * never more available afterwards than either way of carrying it gives.
 * Down (a smaller burst): it keeps its deficit in units, as bucket_rescale.
 * Up (a larger burst): it keeps the units it has, and fills up to the new
 * capacity at the new rate -- the server's own bucket does not start full
 * at the new capacity either, so a full bucket that became larger is not
 * full.  In units: new deficit = old deficit + max(0, new burst - old burst).
 */
static void bucket_follow(_Atomic uint64_t *tat, int64_t now, uint64_t old_iv, uint64_t new_iv,
			  uint64_t old_burst, uint64_t new_burst)
{
	uint64_t n = (uint64_t)now;
	uint64_t add = new_burst > old_burst ? new_burst - old_burst : 0;
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	for (int i = 0; i < 1000; i++) {
		unsigned __int128 deficit =
			old > n ? (unsigned __int128)(old - n) * new_iv / old_iv : 0;
		deficit += (unsigned __int128)add * new_iv;
		if (deficit == 0)
			return; /* full, and no larger: stays full */
		uint64_t next = deficit > (UINT64_MAX - n) ? UINT64_MAX : n + (uint64_t)deficit;
		/* relaxed: bucket words are independent counters (bucket.c). */
		if (atomic_compare_exchange_weak_explicit(tat, &old, next, memory_order_relaxed,
							  memory_order_relaxed))
			return;
	}
}

static void pool_rt_zero(struct shl_seg *seg, int p, int64_t now)
{
	uint64_t *w = (uint64_t *)&seg->pools[p];
	for (size_t i = 0; i < sizeof(seg->pools[p]) / 8; i++)
		__atomic_store_n(&w[i], 0, __ATOMIC_RELAXED);
	shl__cluster_pool_zero(seg, p);
	shl__slack_clear(&seg->pext[p].slack);
	shl__stats_rebase(seg, p, now); /* the process slots' counts too */
}

/*
 * Place the new model entries so that cached indices stay valid: an entry
 * whose match is already configured keeps its index; new entries fill the
 * indices of removed ones, lowest first, then extend the table.  Indices
 * are dense (every index below nmodels is an entry), so when an apply
 * removes more entries than it adds, the kept entries above the new count
 * have to move down into the gaps: only those change index, and their old
 * index then answers -ESRCH.  pos[i] receives the index of in->models[i].
 */
static void place_models(const struct shl_cfg_slot *old, const struct shl_cfg_slot *in,
			 int pos[SHL_MAX_MODELS])
{
	unsigned nm = in->nmodels, on = old->nmodels > SHL_MAX_MODELS ? SHL_MAX_MODELS : old->nmodels;
	unsigned char used[SHL_MAX_MODELS] = {0};
	for (unsigned i = 0; i < nm; i++) {
		pos[i] = -1;
		for (unsigned j = 0; j < on && j < nm; j++)
			if (!used[j] && strncmp(old->models[j].match, in->models[i].match,
						sizeof(old->models[j].match)) == 0) {
				pos[i] = (int)j;
				used[j] = 1;
				break;
			}
	}
	/* New entries, and kept ones displaced from at or above nm, take the
	 * free indices below nm, lowest first, in input order. */
	unsigned next = 0;
	for (unsigned i = 0; i < nm; i++) {
		if (pos[i] >= 0)
			continue;
		while (used[next])
			next++;
		pos[i] = (int)next;
		used[next] = 1;
	}
}

int shl_apply(shl_t *h, const shl_config *cfg, shl_err *err)
{
	if (h == NULL || cfg == NULL)
		return -EINVAL;
	if (h->rdonly) {
		shl__err(err, "segment '%s' is attached read-only", h->name);
		return -EACCES;
	}
	int r = shl__slot_validate(&cfg->slot, err);
	if (r)
		return -EINVAL;
	if (flock(h->fd, LOCK_EX) != 0) {
		r = -errno;
		shl__err(err, "segment '%s': flock: %s", h->name, strerror(-r));
		return r;
	}
	struct shl_local *l = shl__local(h);
	struct shl_cfg_slot *s = shl__calloc(1, sizeof(*s));
	if (l == NULL || s == NULL) {
		free(s);
		flock(h->fd, LOCK_UN);
		shl__err(err, l == NULL ? "live configuration is corrupt" : "out of memory");
		return l == NULL ? -EUCLEAN : -ENOMEM;
	}
	const struct shl_cfg_slot *in = &cfg->slot, *old = &l->slot;
	/* Keep each pool that keeps its name at its index; place new pools in
	 * indexes no live pool uses. */
	int map[SHL_MAX_POOLS] = {0}; /* every entry below in->npools is set first */
	int taken[SHL_MAX_POOLS] = {0};
	for (unsigned i = 0; i < in->npools; i++) {
		map[i] = -1;
		if (!(in->pools[i].flags & SHL_PF_USED))
			continue;
		for (unsigned j = 0; j < old->npools; j++)
			if ((old->pools[j].flags & SHL_PF_USED) &&
			    strcmp(old->pools[j].name, in->pools[i].name) == 0)
				map[i] = (int)j;
		if (map[i] >= 0)
			taken[map[i]] = 1;
	}
	for (unsigned i = 0; i < in->npools; i++) {
		if (map[i] >= 0 || !(in->pools[i].flags & SHL_PF_USED))
			continue;
		int f = -1;
		for (int j = 0; j < SHL_MAX_POOLS && f < 0; j++)
			if (!taken[j] && !(j < (int)old->npools && (old->pools[j].flags & SHL_PF_USED)))
				f = j;
		for (int j = 0; j < SHL_MAX_POOLS && f < 0; j++)
			if (!taken[j])
				f = j; /* reuse a removed pool's index */
		if (f < 0) {
			free(s);
			flock(h->fd, LOCK_UN);
			shl__err(err, "pools: no free pool index");
			return -EINVAL;
		}
		map[i] = f;
		taken[f] = 1;
	}
	unsigned np = 0;
	for (unsigned i = 0; i < in->npools; i++) {
		if (map[i] < 0)
			continue;
		s->pools[map[i]] = in->pools[i];
		if ((unsigned)map[i] + 1 > np)
			np = (unsigned)map[i] + 1;
	}
	s->npools = np;
	s->nmodels = in->nmodels;
	s->spend_cap = in->spend_cap;
	s->spend_epoch = old->spend_epoch; /* tickets before the last spend reset stay so */
	s->unknown_policy = in->unknown_policy;
	s->unknown_pool = in->unknown_policy == SHL_UNKNOWN_POOL && in->unknown_pool < in->npools
				  ? (uint32_t)map[in->unknown_pool]
				  : 0;
	int pos[SHL_MAX_MODELS];
	place_models(old, in, pos);
	for (unsigned i = 0; i < in->nmodels; i++) {
		s->models[pos[i]] = in->models[i];
		s->models[pos[i]].pool = (uint32_t)map[in->models[i].pool];
	}
	/* What the server reported for a kept pool stands until its configured
	 * limits change: then the new configuration is the newer word. */
	for (unsigned j = 0; j < np; j++) {
		if (!(s->pools[j].flags & SHL_PF_USED) || j >= old->npools ||
		    !(old->pools[j].flags & SHL_PF_USED) ||
		    strcmp(old->pools[j].name, s->pools[j].name) != 0 ||
		    memcmp(old->pools[j].limit, s->pools[j].limit, sizeof(s->pools[j].limit)) == 0)
			continue;
		struct shl_observed *ob = &h->seg->pext[j].observed;
		for (int d = 0; d < SHL_NBUCKETS; d++)
			/* relaxed: under the flock; published by the generation. */
			atomic_store_explicit(&ob->limit[d], 0, memory_order_relaxed);
	}
	/* Runtime state: new pools start full and at zero; kept pools carry
	 * their deficit over in units. */
	int64_t now = shl__now();
	struct shl_local nl;
	shl__local_build(&nl, s);
	shl__local_observe(&nl, h->seg);
	for (unsigned j = 0; j < np; j++) {
		if (!(s->pools[j].flags & SHL_PF_USED))
			continue;
		struct shl_pool_rt *rt = &h->seg->pools[j];
		int kept = j < old->npools && (old->pools[j].flags & SHL_PF_USED) &&
			   strcmp(old->pools[j].name, s->pools[j].name) == 0;
		if (!kept) {
			pool_rt_zero(h->seg, (int)j, now);
			continue;
		}
		for (int d = 0; d < SHL_NBUCKETS; d++)
			bucket_rescale(&rt->bkt[d].tat, now, l->pools[j].interval[d],
				       nl.pools[j].interval[d]);
		/* The regions moved: the takes the slack slots hold are far now. */
		shl__slack_cover(&h->seg->pext[j].slack, &rt->horizon, now);
	}
	if (shl__slot_validate(s, err) != 0) { /* what would be published, as placed */
		free(s);
		flock(h->fd, LOCK_UN);
		return -EINVAL;
	}
	/* The cluster settings before the pools' flags that say to use them. */
	shl__cluster_store(h->seg, &cfg->cluster);
	for (unsigned j = 0; j < np; j++)
		if ((s->pools[j].flags & SHL_PF_USED) && !(old->pools[j].flags & SHL_PF_CLUSTER))
			shl__cluster_pool_zero(h->seg, (int)j);
	uint64_t g = atomic_load_explicit(&h->seg->genl.gen, memory_order_relaxed);
	slot_publish(h->seg, s, g + 1);
	/* Removed pools: their runtime words go back to zero, as an unused
	 * pool's are (shl_check expects it, and an index reused later starts
	 * clean anyway).  After the publication, so that only a worker racing
	 * it can still write there; its ticket settles spend only. */
	for (unsigned j = 0; j < SHL_MAX_POOLS; j++) {
		int was = j < old->npools && (old->pools[j].flags & SHL_PF_USED);
		int is = j < np && (s->pools[j].flags & SHL_PF_USED);
		if (was && !is)
			pool_rt_zero(h->seg, (int)j, now);
	}
	/* relaxed: statistics only. */
	atomic_fetch_add_explicit(&h->seg->genl.applies, 1, memory_order_relaxed);
	atomic_store_explicit(&h->seg->genl.applied_unix_ns, shl__unix_ns(), memory_order_relaxed);
	free(s);
	flock(h->fd, LOCK_UN);
	return 0; /* published; every handle (this one too) picks it up at its next call */
}

/*
 * The server reported other limits for `pool` (shl_observe_limits): record
 * them and, when the rate the bucket runs at changes, carry each bucket
 * over (bucket_follow: never more available than before) and publish the configuration,
 * unchanged, as a new generation, so that every process re-derives its
 * numbers at its next call and tickets admitted under the old rate give
 * nothing back to the buckets.  Under the flock, like apply and reset.
 * Returns 1 (rate changed), 0, or a negative code.
 */
int shl__observe_apply(struct shl *h, int pool, const uint64_t limit[SHL_NBUCKETS])
{
	if (flock(h->fd, LOCK_EX) != 0)
		return -errno;
	struct shl_local *l = shl__local(h);
	if (l == NULL) {
		flock(h->fd, LOCK_UN);
		return -EUCLEAN;
	}
	if ((unsigned)pool >= l->slot.npools || !(l->slot.pools[pool].flags & SHL_PF_USED)) {
		flock(h->fd, LOCK_UN);
		return -EINVAL;
	}
	/* Before anything is written: a failure records nothing, so the next
	 * report of the same numbers tries again. */
	struct shl_cfg_slot *s = shl__malloc(sizeof(*s));
	if (s == NULL) {
		flock(h->fd, LOCK_UN);
		return -ENOMEM;
	}
	const struct shl_pool_cfg *pc = &l->slot.pools[pool];
	struct shl_observed *ob = &h->seg->pext[pool].observed;
	uint32_t nh = shl__name_hash(pc->name);
	/* relaxed: under the flock, the only writer. */
	int mine = atomic_load_explicit(&ob->name_hash, memory_order_relaxed) == nh;
	int changed = !mine, catchall = shl__catchall_pool(&l->slot, pool);
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		uint64_t was = mine ? atomic_load_explicit(&ob->limit[d], memory_order_relaxed) : 0;
		uint64_t v = limit[d] ? limit[d] : was;
		if (catchall && was != 0 && v > was)
			v = was; /* the lowest any of its models reported (observe.c) */
		if (v != was)
			changed = 1;
		atomic_store_explicit(&ob->limit[d], v, memory_order_relaxed);
	}
	atomic_store_explicit(&ob->name_hash, nh, memory_order_relaxed);
	if (!changed) {
		free(s);
		flock(h->fd, LOCK_UN);
		return 0;
	}
	atomic_store_explicit(&ob->updated_unix_ns, shl__unix_ns(), memory_order_relaxed);
	atomic_fetch_add_explicit(&ob->changes, 1, memory_order_relaxed);
	uint64_t lim[SHL_NBUCKETS], bur[SHL_NBUCKETS];
	shl__effective(pc, ob, lim, bur);
	const struct shl_pool_local *pl = &l->pools[pool];
	int moved = 0;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		moved |= shl__interval(lim[d], pc->margin_ppm) != pl->interval[d] ||
			 bur[d] != pl->burst[d];
	if (!moved) {
		free(s);
		flock(h->fd, LOCK_UN);
		return 0;
	}
	memcpy(s, &l->slot, sizeof(*s));
	int64_t now = shl__now();
	for (int d = 0; d < SHL_NBUCKETS; d++)
		bucket_follow(&h->seg->pools[pool].bkt[d].tat, now, pl->interval[d],
			      shl__interval(lim[d], pc->margin_ppm), pl->burst[d], bur[d]);
	/* The regions moved: the takes the slack slots hold are far now. */
	shl__slack_cover(&h->seg->pext[pool].slack, &h->seg->pools[pool].horizon, now);
	uint64_t g = atomic_load_explicit(&h->seg->genl.gen, memory_order_relaxed);
	slot_publish(h->seg, s, g + 1);
	free(s);
	flock(h->fd, LOCK_UN);
	return 1;
}

/*
 * A reset of the buckets or the spend also republishes the live
 * configuration, unchanged, as a new generation, after the words are reset:
 * tickets admitted before it are then of an older generation, and their
 * refunds give nothing back to the buckets (admit.c); a spend reset also
 * records that generation as the slot's spend_epoch, and refunds of tickets
 * older than it are dropped (the reset already erased their reservation).
 * The release store of the generation orders the reset words before it: a
 * worker that admits under the new generation takes from the reset state.
 * A worker racing the reset under the old generation may take after it and
 * lose its refund: that only ever under-admits.
 */
int shl_reset(shl_t *h, unsigned what)
{
	if (h == NULL || (what & ~7u) || what == 0)
		return -EINVAL;
	if (h->rdonly)
		return -EACCES;
	struct shl_seg *seg = h->seg;
	const int republish = (what & (SHL_RESET_BUCKETS | SHL_RESET_SPEND)) != 0;
	struct shl_cfg_slot *s = NULL;
	struct shl_local *l = NULL;
	/* Every reset takes the flock: a counters-only one too, since it
	 * writes the statistics bases, which apply also writes under it. */
	if (shl__flock(h->fd, LOCK_EX) != 0)
		return -errno;
	if (republish) {
		l = shl__local(h);
		s = shl__malloc(sizeof(*s));
		if (l == NULL || s == NULL) {
			free(s);
			flock(h->fd, LOCK_UN);
			return l == NULL ? -EUCLEAN : -ENOMEM;
		}
		memcpy(s, &l->slot, sizeof(*s));
	}
	for (int p = 0; p < SHL_MAX_POOLS; p++) {
		struct shl_pool_rt *rt = &seg->pools[p];
		/* relaxed: each word is independent; a reset racing admissions
		 * is an operator's explicit choice. */
		if (what & SHL_RESET_BUCKETS) {
			/* Each refund ledger is left as it is: only its
			 * differences mean anything, and tickets from before the
			 * reset get no bucket refund anyway (bucket.c). */
			for (int d = 0; d < SHL_NBUCKETS; d++)
				atomic_store_explicit(&rt->bkt[d].tat, 0, memory_order_relaxed);
			atomic_store_explicit(&rt->hold_until, 0, memory_order_relaxed);
			/* The reservations it measured are gone with the words
			 * (their tickets are of the old generation: no refund). */
			atomic_store_explicit(&rt->horizon, 0, memory_order_relaxed);
			shl__slack_clear(&seg->pext[p].slack);
		}
		if (what & SHL_RESET_COUNTERS) {
			_Atomic uint64_t *c[] = {&rt->admitted,   &rt->refused,     &rt->waited,
						 &rt->clamps,     &rt->tokens_in,   &rt->tokens_out,
						 &rt->cache_read, &rt->cache_write, &rt->settled,
						 &rt->cancelled,  &rt->server_429};
			for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
				atomic_store_explicit(c[i], 0, memory_order_relaxed);
			atomic_store_explicit(&rt->spend, 0, memory_order_relaxed);
			for (int k = 0; k < SHL_WINDOW_SLOTS; k++)
				for (int d = 0; d < SHL_NBUCKETS; d++)
					atomic_store_explicit(&rt->win[k].v[d], 0,
							      memory_order_relaxed);
			shl__stats_rebase(seg, p, shl__now());
		}
	}
	if (what & SHL_RESET_COUNTERS) {
		/* The table of unknown model ids is a statistic too.  relaxed: a
		 * writer racing this may leave one entry behind, no more. */
		struct shl_unknown_tab *u = &seg->ext.unknown;
		for (int i = 0; i < SHL_UNKNOWN_SLOTS; i++) {
			atomic_store_explicit(&u->ent[i].tag, 0, memory_order_relaxed);
			atomic_store_explicit(&u->ent[i].seen, 0, memory_order_relaxed);
		}
		atomic_store_explicit(&u->n, 0, memory_order_relaxed);
		atomic_store_explicit(&u->dropped, 0, memory_order_relaxed);
	}
	if (what & SHL_RESET_SPEND) {
		uint32_t m = shl__month(h, shl__now());
		atomic_store_explicit(&seg->spendl.spend, (uint64_t)(m & 127u) << SHL_SPEND_BITS,
				      memory_order_relaxed);
		atomic_store_explicit(&seg->spendl.exhausted, 0, memory_order_relaxed);
	}
	if (republish) {
		/* relaxed: under the flock, no other publisher. */
		uint64_t g = atomic_load_explicit(&seg->genl.gen, memory_order_relaxed);
		if (what & SHL_RESET_SPEND)
			s->spend_epoch = g + 1;
		slot_publish(seg, s, g + 1);
		free(s);
	}
	flock(h->fd, LOCK_UN);
	return 0;
}

static void rep(char *report, size_t len, size_t *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void rep(char *report, size_t len, size_t *at, const char *fmt, ...)
{
	if (report == NULL || *at >= len)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(report + *at, len - *at, fmt, ap);
	va_end(ap);
	if (n > 0)
		*at += (size_t)n < len - *at ? (size_t)n : len - *at;
}

int shl_check(shl_t *h, char *report, size_t len)
{
	if (h == NULL)
		return -EINVAL;
	size_t at = 0;
	int bad = 0;
	if (report && len)
		report[0] = 0;
	struct shl_seg *seg = h->seg;
	struct stat st;
	shl_err e;
	if (fstat(h->fd, &st) == 0) {
		int r = validate_header(&seg->hdr, st.st_size, h->name, &e);
		if (r) {
			rep(report, len, &at, "%s\n", e.msg);
			return r;
		}
	}
	uint64_t g = atomic_load_explicit(&seg->genl.gen, memory_order_acquire);
	struct shl_cfg_slot *s = shl__malloc(sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	copy_in(s, &seg->cfg[g & 1], sizeof(*s));
	if (s->gen != g) {
		rep(report, len, &at, "config slot %u: serves generation %llu, header.gen is %llu\n",
		    (unsigned)(g & 1), (unsigned long long)s->gen, (unsigned long long)g);
		bad = 1;
	}
	if (shl__slot_checksum(s) != s->checksum) {
		rep(report, len, &at, "config slot %u: checksum mismatch (scribbled?)\n",
		    (unsigned)(g & 1));
		bad = 1;
	}
	if (shl__slot_validate(s, &e) != 0) {
		rep(report, len, &at, "%s\n", e.msg);
		bad = 1;
	}
	int64_t now = shl__now();
	const int64_t year = 366LL * 86400 * 1000000000LL;
	for (unsigned p = 0; p < SHL_MAX_POOLS; p++) {
		struct shl_pool_rt *rt = &seg->pools[p];
		int used = !bad && p < s->npools && (s->pools[p].flags & SHL_PF_USED);
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			uint64_t t = atomic_load_explicit(&rt->bkt[d].tat, memory_order_relaxed);
			if (t > (uint64_t)(now + year)) {
				rep(report, len, &at, "pools[%u].tat[%s]: %llu ns is over a year ahead "
				    "of now (%lld)\n", p, shl_dim_name(d), (unsigned long long)t,
				    (long long)now);
				bad = 1;
			} else if (!used && t != 0 && p >= s->npools) {
				rep(report, len, &at, "pools[%u].tat[%s]: non-zero in an unused pool\n",
				    p, shl_dim_name(d));
				bad = 1;
			}
		}
		int64_t hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
		if (hold > now + 86400LL * 1000000000LL) {
			rep(report, len, &at, "pools[%u].hold_until: over a day ahead of now\n", p);
			bad = 1;
		}
		/* relaxed: a reading; a reservation's release, shl_reserve. */
		uint64_t hz = atomic_load_explicit(&rt->horizon, memory_order_relaxed);
		if (hz > (uint64_t)(now + year)) {
			rep(report, len, &at, "pools[%u].horizon: %llu ns is over a year ahead of now "
			    "(%lld)\n", p, (unsigned long long)hz, (long long)now);
			bad = 1;
		}
		/* relaxed: readings, as the horizon (bucket.c, "Slack"). */
		const struct shl_slack *sk = &seg->pext[p].slack;
		uint64_t far = atomic_load_explicit(&sk->far, memory_order_relaxed);
		if (far > (uint64_t)(now + year)) {
			rep(report, len, &at, "pext[%u].slack.far: %llu ns is over a year ahead of "
			    "now (%lld)\n", p, (unsigned long long)far, (long long)now);
			bad = 1;
		}
		for (int k = 0; k < SHL_SLACK_SLOTS; k++) {
			uint64_t tg = atomic_load_explicit(&sk->slot[k].tag, memory_order_relaxed);
			if (tg >> 32 > ((uint64_t)(now + year) >> SHL_SLACK_SHIFT) + 1) {
				rep(report, len, &at, "pext[%u].slack.slot[%d].tag: span %llu is over a "
				    "year ahead of now (%lld)\n", p, k,
				    (unsigned long long)(tg >> 32), (long long)now);
				bad = 1;
			}
		}
	}
	uint64_t w = atomic_load_explicit(&seg->spendl.spend, memory_order_relaxed);
	uint32_t m = shl__month(h, now);
	uint32_t tag = (uint32_t)(w >> SHL_SPEND_BITS);
	if (tag != (m & 127u) && tag != ((m + 1) & 127u) && (w & SHL_SPEND_MASK) != 0)
		rep(report, len, &at, "spend: counts month tag %u, this month's tag is %u "
		    "(stale; it rolls over at the next charge)\n", tag, m & 127u);
	/* Statistics bases and process slots (pslot.c): nothing in them is
	 * used as an index, but impossible values mean a scribble. */
	uint64_t epoch = (uint64_t)(now < 0 ? 0 : now) / (uint64_t)SHL_WINDOW_SLOT_NS;
	for (unsigned p = 0; p < SHL_MAX_POOLS; p++) {
		uint64_t be = atomic_load_explicit(&seg->bases[p].win_epoch, memory_order_relaxed);
		if (be > epoch + 1) {
			rep(report, len, &at, "bases[%u].win_epoch: %llu is after now (epoch %llu)\n",
			    p, (unsigned long long)be, (unsigned long long)epoch);
			bad = 1;
		}
	}
	for (unsigned i = 0, n = shl__pslots_used(seg); i < n; i++) {
		struct shl_pslot *ps = shl__pslot_at(seg, i);
		uint64_t o = atomic_load_explicit(&ps->owner, memory_order_relaxed);
		uint32_t pid = (uint32_t)o;
		if (o != 0 && (pid == 0 || pid > 0x7fffffffu)) {
			rep(report, len, &at, "pslots[%u].owner: 0x%llx names no pid\n", i,
			    (unsigned long long)o);
			bad = 1;
		}
		uint64_t lw = atomic_load_explicit(&ps->lease, memory_order_relaxed);
		uint64_t lg = atomic_load_explicit(&ps->lease_gen, memory_order_relaxed);
		if ((lw & SHL_SPEND_MASK) != 0 && lg > g) {
			rep(report, len, &at, "pslots[%u].lease_gen: %llu is after the generation "
			    "%llu\n", i, (unsigned long long)lg, (unsigned long long)g);
			bad = 1;
		}
		/* A lease taken since the last spend reset is counted in the
		 * word, so it cannot exceed it (an older one was erased). */
		if ((lw & SHL_SPEND_MASK) > (w & SHL_SPEND_MASK) && lg >= s->spend_epoch &&
		    (uint32_t)(lw >> SHL_SPEND_BITS) == tag && tag == (m & 127u)) {
			rep(report, len, &at, "pslots[%u].lease: %llu units, more than the month's "
			    "spend word holds (%llu)\n", i, (unsigned long long)(lw & SHL_SPEND_MASK),
			    (unsigned long long)(w & SHL_SPEND_MASK));
			bad = 1;
		}
	}
	free(s);
	return bad ? -EUCLEAN : 0;
}
