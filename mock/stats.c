/*
 * stats.c - what the mock has seen, for GET /mock/stats.
 *
 * Tests compare a client's own accounting with the server's, so the mock
 * keeps its counts: every API request by status, its own 429s apart from
 * scripted ones, and the usage of complete messages overall, per model and
 * per pool (mock/README.md, "Statistics").  One mutex guards everything;
 * a request takes it once, when it is finished.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* Per model / per pool / overall counters. */
struct tally {
	uint64_t requests, ok, rate_limited;
	uint64_t limited_by[NDIM]; /* rate_limited, by the bucket that refused */
	uint64_t in, out, cache_write, cache_read;
};

#define MAX_MODELS 256 /* distinct model names tracked; more go to "(other)" */

/* All fields are guarded by st.mu. */
static struct {
	pthread_mutex_t mu;
	uint64_t requests;
	uint64_t by_status[600];
	uint64_t rate_limited, scripted_429, count_tokens, batches, batch_requests;
	struct tally total;
	int nmodels;
	char *model_name[MAX_MODELS];
	struct tally model[MAX_MODELS];
	struct tally other_models;
	struct tally *pool;  /* mock_cfg->limits->npools entries */
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};


static struct tally *model_tally(const char *model)
{
	for (int i = 0; i < st.nmodels; i++)
		if (strcmp(st.model_name[i], model) == 0)
			return &st.model[i];
	if (st.nmodels < MAX_MODELS) {
		char *name = strdup(model);
		if (name != NULL) {
			st.model_name[st.nmodels] = name;
			return &st.model[st.nmodels++];
		}
	}
	return &st.other_models;
}

static void tally_add(struct tally *t, const struct outcome *o)
{
	t->requests++;
	if (o->own_429) {
		t->rate_limited++;
		if (o->limited_dim >= 0 && o->limited_dim < NDIM)
			t->limited_by[o->limited_dim]++;
	}
	if (o->complete) {
		t->ok++;
		t->in += o->in;
		t->out += o->out;
		t->cache_write += o->cw;
		t->cache_read += o->cr;
	}
}

void stats_record(const struct outcome *o)
{
	pthread_mutex_lock(&st.mu);
	st.requests++;
	if (o->status >= 100 && o->status < 600)
		st.by_status[o->status]++;
	st.rate_limited += (uint64_t)o->own_429;
	st.scripted_429 += (uint64_t)o->scripted_429;
	tally_add(&st.total, o);
	if (o->model != NULL)
		tally_add(model_tally(o->model), o);
	if (o->pool >= 0 && st.pool != NULL)
		tally_add(&st.pool[o->pool], o);
	pthread_mutex_unlock(&st.mu);
}


static cJSON *tally_json(const struct tally *t)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "requests", (double)t->requests);
	cJSON_AddNumberToObject(o, "ok", (double)t->ok);
	cJSON_AddNumberToObject(o, "rate_limited", (double)t->rate_limited);
	cJSON_AddNumberToObject(o, "input_tokens", (double)t->in);
	cJSON_AddNumberToObject(o, "output_tokens", (double)t->out);
	cJSON_AddNumberToObject(o, "cache_creation_input_tokens",
				(double)t->cache_write);
	cJSON_AddNumberToObject(o, "cache_read_input_tokens", (double)t->cache_read);
	cJSON *by = cJSON_AddObjectToObject(o, "rate_limited_by");
	cJSON_AddNumberToObject(by, "rpm", (double)t->limited_by[DIM_RPM]);
	cJSON_AddNumberToObject(by, "itpm", (double)t->limited_by[DIM_ITPM]);
	cJSON_AddNumberToObject(by, "otpm", (double)t->limited_by[DIM_OTPM]);
	return o;
}

char *stats_json(void)
{
	cJSON *root = cJSON_CreateObject();
	pthread_mutex_lock(&st.mu);
	cJSON_AddNumberToObject(root, "requests", (double)st.requests);
	cJSON *bs = cJSON_AddObjectToObject(root, "by_status");
	for (int s = 100; s < 600; s++) {
		if (st.by_status[s] == 0)
			continue;
		char key[16];
		snprintf(key, sizeof(key), "%d", s);
		cJSON_AddNumberToObject(bs, key, (double)st.by_status[s]);
	}
	cJSON_AddNumberToObject(root, "rate_limited", (double)st.rate_limited);
	cJSON_AddNumberToObject(root, "scripted_429", (double)st.scripted_429);
	cJSON_AddNumberToObject(root, "count_tokens", (double)st.count_tokens);
	cJSON_AddNumberToObject(root, "batches", (double)st.batches);
	cJSON_AddNumberToObject(root, "batch_requests", (double)st.batch_requests);
	cJSON *u = cJSON_AddObjectToObject(root, "usage");
	cJSON_AddNumberToObject(u, "input_tokens", (double)st.total.in);
	cJSON_AddNumberToObject(u, "output_tokens", (double)st.total.out);
	cJSON_AddNumberToObject(u, "cache_creation_input_tokens",
				(double)st.total.cache_write);
	cJSON_AddNumberToObject(u, "cache_read_input_tokens",
				(double)st.total.cache_read);
	cJSON *bm = cJSON_AddObjectToObject(root, "by_model");
	for (int i = 0; i < st.nmodels; i++)
		cJSON_AddItemToObject(bm, st.model_name[i], tally_json(&st.model[i]));
	if (st.other_models.requests > 0)
		cJSON_AddItemToObject(bm, "(other)", tally_json(&st.other_models));
	cJSON *bp = cJSON_AddObjectToObject(root, "by_pool");
	if (mock_cfg->limits != NULL)
		for (int i = 0; i < mock_cfg->limits->npools; i++)
			cJSON_AddItemToObject(bp, mock_cfg->limits->pools[i].name,
					      tally_json(&st.pool[i]));
	pthread_mutex_unlock(&st.mu);
	char *s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

void stats_init(int npools)
{
	if (npools > 0)
		st.pool = calloc((size_t)npools, sizeof(*st.pool));
}

void stats_count_tokens(void)
{
	pthread_mutex_lock(&st.mu);
	st.count_tokens++;
	pthread_mutex_unlock(&st.mu);
}

void stats_batch(uint64_t n)
{
	pthread_mutex_lock(&st.mu);
	st.batches++;
	st.batch_requests += n;
	pthread_mutex_unlock(&st.mu);
}
