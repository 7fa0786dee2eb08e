/*
 * hdrclient.c - a libcurl client that asks for the response headers in the
 * body (CURLOPT_HEADER), as some language bindings do; for preload/tests/bad.sh.
 * (The curl tool's -i writes headers itself and does not set the option.)
 *
 *   shmlimit-preload-hdrclient URL BODY-FILE [HEADER...]
 *
 * POSTs the file with CURLOPT_POSTFIELDS, a header callback that accepts
 * everything, and the default write function (stdout), so the output is
 * every header block and the body, as libcurl delivered them.  Exits with
 * the CURLcode.  It knows nothing of libshmlimit.
 */
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	(void)p;
	(void)ud;
	return size * n;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s URL BODY-FILE [HEADER...]\n", argv[0]);
		return 2;
	}
	FILE *f = fopen(argv[2], "rb");
	if (f == NULL) {
		perror(argv[2]);
		return 2;
	}
	static char body[1 << 20];
	size_t len = fread(body, 1, sizeof(body), f);
	fclose(f);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURL *c = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, "content-type: application/json");
	for (int i = 3; i < argc; i++)
		h = curl_slist_append(h, argv[i]);
	curl_easy_setopt(c, CURLOPT_URL, argv[1]);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
	curl_easy_setopt(c, CURLOPT_HEADER, 1L);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	CURLcode rc = curl_easy_perform(c);
	fflush(stdout);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	curl_global_cleanup();
	return (int)rc;
}
