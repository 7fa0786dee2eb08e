/*
 * test_fault.c - make each shm_open, fchmod, ftruncate, mmap and allocation
 * fail in turn (countdown style): every path must return its error, leave
 * no half-made segment behind, and (under check-asan) leak nothing.
 */
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "testutil.h"

static int seg_exists(const char *name)
{
	char path[128];
	struct stat st;
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	return stat(path, &st) == 0;
}

static void test_create_faults(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(2, &c);
	int points = 0;
	for (long n = 1; n < 100; n++) {
		shl_t *h = NULL;
		shl_err e = {{0}};
		atomic_store(&shl__fault_countdown, n);
		int r = shl_create(name, c, 0, &h, &e);
		int fired = atomic_load(&shl__fault_countdown) == 0;
		atomic_store(&shl__fault_countdown, 0);
		if (r == 0) {
			CU_ASSERT(!fired || n > 1); /* success only once every point passed */
			shl_detach(h);
			shl_unlink(name);
			break;
		}
		points++;
		CU_ASSERT(r < 0);
		CU_ASSERT_PTR_NULL(h);
		CU_ASSERT(e.msg[0] != 0); /* says what failed */
		if (seg_exists(name)) {
			fprintf(stderr, "\n  fault point %ld left the segment behind (%s)\n", n, e.msg);
			CU_FAIL("half-made segment left behind");
			shl_unlink(name);
		}
	}
	/* shm_open, fchmod, ftruncate, mmap, the slot copy, the handle, the
	 * local config, its retire record, the lookup state: at least these. */
	CU_ASSERT(points >= 8);
	shl_config_free(c);
}

static void test_attach_faults(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(1, &c);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	int points = 0;
	for (long n = 1; n < 100; n++) {
		shl_t *h = NULL;
		shl_err e = {{0}};
		atomic_store(&shl__fault_countdown, n);
		int r = shl_attach(name, 0, &h, &e);
		atomic_store(&shl__fault_countdown, 0);
		if (r == 0) {
			/* the handle works after all those failures */
			CU_ASSERT(shl_lookup(h, "claude-sonnet-4-5") >= 0);
			shl_detach(h);
			break;
		}
		points++;
		CU_ASSERT(r == -EMFILE || r == -ENOMEM);
		CU_ASSERT_PTR_NULL(h);
	}
	CU_ASSERT(points >= 4);
	CU_ASSERT(seg_exists(name)); /* an attach failure never removes anything */
	shl_unlink(name);
	shl_config_free(c);
}

static void test_lookup_and_apply_faults(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(3, &c);
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, &h, NULL), 0);
	/* A lookup whose table or node allocation fails still answers. */
	for (long n = 1; n < 4; n++) {
		atomic_store(&shl__fault_countdown, n);
		int m = shl_lookup(h, "claude-haiku-4-5-20251001");
		atomic_store(&shl__fault_countdown, 0);
		CU_ASSERT_EQUAL(shl_model_pool(h, m), 2);
	}
	/* An apply that fails part-way leaves the live generation as it was. */
	uint64_t g = shl_generation(h);
	for (long n = 1; n < 10; n++) {
		atomic_store(&shl__fault_countdown, n);
		int r = shl_apply(h, c, NULL);
		atomic_store(&shl__fault_countdown, 0);
		if (r == 0) {
			CU_ASSERT_EQUAL(shl_generation(h), g + 1);
			break;
		}
		CU_ASSERT_EQUAL(r, -ENOMEM);
		CU_ASSERT_EQUAL(shl_generation(h), g);
	}
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
}

/* cJSON's allocations fail in turn while parsing: -ENOMEM or -EINVAL,
 * never a crash or a half-built config. */
static long json_countdown;
static void *failing_malloc(size_t n)
{
	if (json_countdown > 0 && --json_countdown == 0)
		return NULL;
	return malloc(n);
}

static void test_parse_faults(void)
{
	const char *j = shl_preset_json(4);
	cJSON_Hooks hooks = {failing_malloc, free};
	cJSON_InitHooks(&hooks);
	int failures = 0;
	for (long n = 1; n < 2000; n++) {
		json_countdown = n;
		shl_config *c = NULL;
		shl_err e = {{0}};
		int r = shl_config_parse(j, strlen(j), &c, &e);
		if (json_countdown > 0) { /* nothing failed: we are done */
			CU_ASSERT_EQUAL(r, 0);
			shl_config_free(c);
			break;
		}
		failures++;
		CU_ASSERT(r < 0);
		CU_ASSERT_PTR_NULL(c);
	}
	json_countdown = 0;
	cJSON_InitHooks(NULL);
	CU_ASSERT(failures > 10);
}

void suite_fault(void)
{
	CU_pSuite s = CU_add_suite("fault", NULL, NULL);
	TU_ADD(s, test_create_faults);
	TU_ADD(s, test_attach_faults);
	TU_ADD(s, test_lookup_and_apply_faults);
	TU_ADD(s, test_parse_faults);
}
