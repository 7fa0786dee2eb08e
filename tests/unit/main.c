/*
 * main.c - runs every CUnit suite of the library; exits non-zero on failure.
 */
#include <CUnit/Basic.h>

#include "testutil.h"

int64_t tu_boot, tu_unix;
int64_t tu_boot_fn(void) { return tu_boot; }
int64_t tu_unix_fn(void) { return tu_unix; }

void tu_fake_clock(int on)
{
	shl__clock_boot = on ? tu_boot_fn : NULL;
	shl__clock_unix = on ? tu_unix_fn : NULL;
}

shl_config *tu_cfg(const char *json)
{
	shl_config *c = NULL;
	shl_err e = {{0}};
	int r = shl_config_parse(json, strlen(json), &c, &e);
	if (r) {
		fprintf(stderr, "tu_cfg: %s\n%s\n", e.msg, json);
		abort();
	}
	return c;
}

shl_config *tu_pool_cfg(unsigned rpm, unsigned itpm, unsigned otpm, unsigned brpm, unsigned bitpm,
			unsigned botpm, const char *extra, const char *cap)
{
	char j[2048];
	/* No jitter margin unless asked: the suites' figures are exact. */
	const char *margin = extra && strstr(extra, "\"margin\"") ? "" : ", \"margin\": 0";
	snprintf(j, sizeof(j),
		 "{\"spend_cap_usd\": %s, \"pools\": [{\"name\": \"p\", \"rpm\": %u, \"itpm\": %u, "
		 "\"otpm\": %u, \"burst\": {\"rpm\": %u, \"itpm\": %u, \"otpm\": %u}%s%s%s, "
		 "\"prices\": {\"input\": 3, \"output\": 15, \"cache_write_5m\": 3.75, "
		 "\"cache_write_1h\": 6, \"cache_read\": 0.3}}], "
		 "\"models\": [{\"match\": \"m*\", \"pool\": \"p\"}]}",
		 cap ? cap : "null", rpm, itpm, otpm, brpm, bitpm, botpm, extra ? ", " : "",
		 extra ? extra : "", margin);
	return tu_cfg(j);
}

/* Is `name` one of the comma-separated names of `list`? */
static int in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		if (len == n && strncmp(p, name, n) == 0)
			return 1;
		p += len + (p[len] == ',');
	}
	return 0;
}

int main(void)
{
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	/* SHL_TEST_ONLY=name[,name...] runs those suites (the sanitizer
	 * targets use it). */
	const char *only = getenv("SHL_TEST_ONLY");
	struct {
		const char *name;
		void (*fn)(void);
	} suites[] = {{"layout", suite_layout},	  {"config", suite_config},
		      {"bucket", suite_bucket},	  {"spend", suite_spend},
		      {"segment", suite_segment}, {"admit", suite_admit},
		      {"multiproc", suite_multiproc}, {"threads", suite_threads},
		      {"fault", suite_fault}, {"review", suite_review},
		      {"pslot", suite_pslot}, {"lease", suite_lease},
		      {"exchange", suite_exchange}, {"fair", suite_fair}, {"issue13", suite_issue13},
		      {"mt", suite_mt}, {"rule", suite_rule}, {"ticking", suite_ticking},
		      {"cluster", suite_cluster}, {"account", suite_account}};
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (only == NULL || in_list(only, suites[i].name))
			suites[i].fn();
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	unsigned run = CU_get_number_of_tests_run();
	CU_cleanup_registry();
	return (fails == 0 && run > 0) ? 0 : 1;
}
