/*
 * fuzz_segment.c - libFuzzer target: attach, validate and use a segment
 * whose bytes another process has scribbled on.
 *
 * Input: 4 bytes of offset, 1 byte of flags, then bytes written over a
 * valid segment image at that offset.  Flag bit 0: recompute the live
 * configuration slot's checksum afterwards (a hostile writer who knows the
 * format).  Flag bit 1: truncate the object to the offset instead.  The
 * library may refuse the segment or report corruption, but must never crash,
 * hang or touch memory outside the mapping (AddressSanitizer watches).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char name[64];
static unsigned char *image;
static int fd = -1;

static void setup(void)
{
	snprintf(name, sizeof(name), "shlfuzz-%d", (int)getpid());
	shl_config *c;
	shl_config_preset(2, &c);
	shl_t *h;
	if (shl_create(name, c, SHL_CREATE_REPLACE, &h, NULL) != 0)
		abort();
	/* some traffic, so counters and buckets hold non-trivial values */
	int m = shl_lookup(h, "claude-sonnet-4-5");
	for (int i = 0; i < 20; i++) {
		shl_cost cost = {.input_tokens = 100, .max_tokens = 50};
		shl_ticket t;
		shl_usage u = {.input_tokens = 90, .output_tokens = 10};
		if (shl_try(h, m, &cost, &t, NULL) == 0)
			shl_settle(h, &t, &u);
	}
	image = malloc(SHL_SEG_SIZE);
	memcpy(image, h->seg, SHL_SEG_SIZE);
	shl_detach(h);
	shl_config_free(c);
	char path[80];
	snprintf(path, sizeof(path), "/%s", name);
	fd = shm_open(path, O_RDWR, 0);
}

static void cleanup(void)
{
	shl_unlink(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (image == NULL) {
		setup();
		atexit(cleanup);
	}
	if (size < 5)
		return 0;
	uint32_t off;
	memcpy(&off, data, 4);
	off %= (uint32_t)SHL_SEG_SIZE;
	uint8_t flags = data[4];
	data += 5;
	size -= 5;
	unsigned char *buf = malloc(SHL_SEG_SIZE);
	memcpy(buf, image, SHL_SEG_SIZE);
	size_t n = size < SHL_SEG_SIZE - off ? size : SHL_SEG_SIZE - off;
	memcpy(buf + off, data, n);
	if (flags & 1) {
		struct shl_seg *s = (struct shl_seg *)(void *)buf;
		struct shl_cfg_slot *slot = &s->cfg[s->genl.gen & 1];
		slot->checksum = shl__slot_checksum(slot);
	}
	if (ftruncate(fd, (off_t)SHL_SEG_SIZE) != 0 ||
	    pwrite(fd, buf, SHL_SEG_SIZE, 0) != (ssize_t)SHL_SEG_SIZE)
		abort();
	if (flags & 2) {
		if (ftruncate(fd, off) != 0)
			abort();
	}
	free(buf);
	shl_t *h = NULL;
	shl_err e;
	if (shl_attach(name, 0, &h, &e) != 0)
		return 0;
	const char *ids[] = {"claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "x"};
	for (int i = 0; i < 4; i++) {
		int m = shl_lookup(h, ids[i]);
		if (m < 0)
			continue;
		shl_cost cost = {.input_tokens = 10, .max_tokens = 10, .cache_read = 5};
		shl_ticket t;
		shl_refusal why;
		if (shl_try(h, m, &cost, &t, &why) == 0) {
			shl_usage u = {.input_tokens = 12, .output_tokens = 3};
			shl_settle(h, &t, &u);
		}
		shl_acquire(h, m, &cost, 0, &t, &why);
		shl_hold(h, shl_model_pool(h, m), 1);
		shl_clamp(h, shl_model_pool(h, m), 1, 5);
	}
	shl_stats st;
	shl_stats_get(h, &st);
	char rep[2048];
	shl_check(h, rep, sizeof(rep));
	shl_config *c = NULL;
	if (shl_config_get(h, &c) == 0) {
		free(shl_config_to_json(c));
		shl_config_free(c);
	}
	shl_detach(h);
	return 0;
}
