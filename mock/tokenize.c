/*
 * tokenize.c - the mock server's own token count of a piece of text.
 *
 * Why it exists: the mock judges the preload shim, and a judge that counts
 * tokens exactly as the client estimates them (the shim's rule is
 * ceil(code points / 4)) can never show an estimate that is too low.  So
 * the server has a rule of its own, per script, with roughly the ratios a
 * real subword tokenizer has: English about 3.5 characters a token,
 * accented Latin, Greek and Cyrillic fewer, CJK about one token a
 * character, emoji several.  It is simple and exact, so that a test can
 * work out the expected count by hand (mock/README.md has the same rule
 * with examples).  It is not a real tokenizer and does not pretend to be:
 * no vocabulary, no merges, and nothing here is shared with the shim.
 *
 * The rule, over the text's code points (UTF-8; a byte that does not start
 * a well-formed sequence is one "other" character):
 *
 *   letters      a run of letters is a word; ASCII letters weigh 1, the
 *                letters of U+00C0..U+024F (Latin with diacritics, except
 *                U+00D7 and U+00F7), U+0370..U+03FF (Greek), U+0400..U+04FF
 *                (Cyrillic) and the combining marks U+0300..U+036F weigh 2;
 *                a word costs ceil(weight / 4) tokens
 *   digits       a run of ASCII digits costs ceil(digits / 3)
 *   whitespace   a run of spaces, tabs, CR, LF, VT, FF costs 1, except a
 *                run that is exactly one space, which costs 0
 *   CJK          1 token each: U+2E80..U+9FFF, U+AC00..U+D7AF, U+F900..U+FAFF,
 *                U+FF00..U+FFEF, U+20000..U+3FFFF
 *   emoji        3 tokens each: U+1F000..U+1FAFF, U+2600..U+27BF
 *   anything     1 token each (ASCII punctuation and symbols, controls,
 *   else         ZWJ and variation selectors, other scripts, bad bytes)
 *
 * Pieces of text are counted separately (a word never spans two pieces),
 * so a request's count is the sum of its pieces' counts.
 */
#include <stddef.h>
#include <stdint.h>

#include "api.h"

enum cls { C_WS, C_LETTER, C_DIGIT, C_CJK, C_EMOJI, C_OTHER };

/*
 * Decode one code point at s[*i] (n bytes in all) and advance *i.  A byte
 * that does not start a well-formed sequence (a stray continuation byte, a
 * lead byte without its continuations, 0xf5..0xff) is consumed alone and
 * returned as -1.
 */
static int32_t next_cp(const unsigned char *s, size_t n, size_t *i)
{
	unsigned char b = s[*i];
	int len;
	int32_t cp;
	if (b < 0x80) {
		(*i)++;
		return b;
	} else if (b >= 0xc2 && b <= 0xdf) {
		len = 2;
		cp = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3;
		cp = b & 0x0f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4;
		cp = b & 0x07;
	} else {
		(*i)++;
		return -1;
	}
	if (*i + (size_t)len > n) {
		(*i)++;
		return -1;
	}
	for (int k = 1; k < len; k++) {
		unsigned char c = s[*i + (size_t)k];
		if ((c & 0xc0) != 0x80) {
			(*i)++;
			return -1;
		}
		cp = cp << 6 | (c & 0x3f);
	}
	*i += (size_t)len;
	return cp;
}

/* The class of a code point; for letters, *weight is set to 1 or 2. */
static enum cls classify_cp(int32_t cp, unsigned *weight)
{
	if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\v' ||
	    cp == '\f')
		return C_WS;
	if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) {
		*weight = 1;
		return C_LETTER;
	}
	if (cp >= '0' && cp <= '9')
		return C_DIGIT;
	if ((cp >= 0xc0 && cp <= 0x24f && cp != 0xd7 && cp != 0xf7) ||
	    (cp >= 0x300 && cp <= 0x4ff)) {
		*weight = 2;
		return C_LETTER;
	}
	if ((cp >= 0x2e80 && cp <= 0x9fff) || (cp >= 0xac00 && cp <= 0xd7af) ||
	    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xff00 && cp <= 0xffef) ||
	    (cp >= 0x20000 && cp <= 0x3ffff))
		return C_CJK;
	if ((cp >= 0x1f000 && cp <= 0x1faff) || (cp >= 0x2600 && cp <= 0x27bf))
		return C_EMOJI;
	return C_OTHER;
}

uint64_t tokenize(const char *text, size_t n)
{
	const unsigned char *s = (const unsigned char *)text;
	uint64_t tokens = 0;
	enum cls run = C_OTHER; /* the class of the run in progress */
	uint64_t run_len = 0;   /* its characters (digits, whitespace) */
	uint64_t weight = 0;    /* its letter weight */
	int run_space = 0;      /* a whitespace run of exactly one ' ' so far */

	/* The cost of the run that just ended. */
#define END_RUN()                                                        \
	do {                                                             \
		if (run == C_LETTER)                                     \
			tokens += (weight + 3) / 4;                      \
		else if (run == C_DIGIT)                                 \
			tokens += (run_len + 2) / 3;                     \
		else if (run == C_WS && !(run_len == 1 && run_space))    \
			tokens += 1;                                     \
		run = C_OTHER;                                           \
		run_len = weight = 0;                                    \
	} while (0)

	size_t i = 0;
	while (i < n) {
		int32_t cp = next_cp(s, n, &i);
		unsigned w = 0;
		enum cls c = cp < 0 ? C_OTHER : classify_cp(cp, &w);
		if (c != run || c == C_OTHER || c == C_CJK || c == C_EMOJI)
			END_RUN();
		switch (c) {
		case C_LETTER:
			run = c;
			weight += w;
			break;
		case C_DIGIT:
			run = c;
			run_len++;
			break;
		case C_WS:
			if (run_len == 0)
				run_space = cp == ' ';
			run = c;
			run_len++;
			break;
		case C_CJK:
			tokens += 1;
			break;
		case C_EMOJI:
			tokens += 3;
			break;
		case C_OTHER:
			tokens += 1;
			break;
		}
	}
	END_RUN();
#undef END_RUN
	return tokens;
}
