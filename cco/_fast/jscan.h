/* The JSON value scanner of key_c.pyx: validates one value and returns where it ends, or -1 with the kind and byte
 * position of the first error in a CcoError (RFC 8259; UTF-16 surrogate pairs checked; at most CCO_MAX_DEPTH open
 * containers).
 *
 * Two variants share the grammar (jscan_variant.h) and differ in how a string's end is found: by a bit search in
 * a string-end map built for the whole body first (cco_string_ends; bodies without control bytes, so every
 * compact JSON an SDK sends), or by skipping each string's contents (scan.h; any body, and the one that words
 * errors for the general loop).
 */
#ifndef CCO_JSCAN_H
#define CCO_JSCAN_H

#include <stdint.h>
#include <string.h>
#include "scan.h"

#define CCO_MAX_DEPTH 1024

enum {
    CCO_OK = 0,
    CCO_E_EOF,
    CCO_E_CHAR,
    CCO_E_UNTERMINATED,
    CCO_E_ESCAPE,
    CCO_E_SURROGATE,
    CCO_E_NUMBER,
    CCO_E_NAME,
    CCO_E_COLON,
    CCO_E_COMMA_OBJECT,
    CCO_E_COMMA_ARRAY,
    CCO_E_DEPTH,
    CCO_E_TRAILING
};

typedef struct {
    int err;         /* a CCO_E_* kind */
    Py_ssize_t pos;  /* the byte it was found at */
} CcoError;

#define CCO_FAIL(e, kind, at) \
    do { \
        (e)->err = (kind); \
        (e)->pos = (at); \
        return -1; \
    } while (0)

/* The string and name steps are inlined into the value loop: no call per string; \u escapes stay out of line. */
#if defined(__GNUC__)
#define CCO_ALWAYS_INLINE inline __attribute__((always_inline))
#define CCO_NOINLINE __attribute__((noinline))
#else
#define CCO_ALWAYS_INLINE inline
#define CCO_NOINLINE
#endif

/* Steps over whitespace where the buffer ends in a NUL (see jscan_variant.h); most JSON an SDK sends has none. */
#define CCO_SKIP_WS(p, i) \
    do { \
        while ((p)[i] <= ' ' && ((p)[i] == ' ' || (p)[i] == '\n' || (p)[i] == '\r' || (p)[i] == '\t')) { \
            (i)++; \
        } \
    } while (0)

static inline Py_ssize_t cco_ws(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t')) {
        i++;
    }
    return i;
}

static inline int cco_hex4(const unsigned char *p)
{
    int value = 0, k, d;
    for (k = 0; k < 4; k++) {
        unsigned char c = p[k];
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else {
            return -1;
        }
        value = (value << 4) | d;
    }
    return value;
}

/* p[i .. i + 1] is "\u": returns the index after its escape (a surrogate pair counts as one), or -1. */
static CCO_NOINLINE Py_ssize_t cco_unicode_escape_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                                      CcoError *e)
{
    int unit;
    if (i + 6 > n) {
        CCO_FAIL(e, CCO_E_UNTERMINATED, n);
    }
    if ((unit = cco_hex4(p + i + 2)) < 0) {
        CCO_FAIL(e, CCO_E_ESCAPE, i + 2);
    }
    i += 6;
    if (unit >= 0xDC00 && unit <= 0xDFFF) {
        CCO_FAIL(e, CCO_E_SURROGATE, i);
    }
    if (unit >= 0xD800 && unit <= 0xDBFF) {  /* a high surrogate must be followed by an escaped low one */
        if (i + 6 > n || p[i] != '\\' || p[i + 1] != 'u') {
            CCO_FAIL(e, CCO_E_SURROGATE, i);
        }
        if ((unit = cco_hex4(p + i + 2)) < 0) {
            CCO_FAIL(e, CCO_E_ESCAPE, i + 2);
        }
        if (unit < 0xDC00 || unit > 0xDFFF) {
            CCO_FAIL(e, CCO_E_SURROGATE, i + 6);
        }
        i += 6;
    }
    return i;
}

/* p[i] is a backslash inside a string; returns the index after its escape, or -1. The two-byte escapes are
 * settled here, inline; \u escapes out of line (they are rare). */
static CCO_ALWAYS_INLINE Py_ssize_t cco_escape_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n, CcoError *e)
{
    unsigned char c;
    if (i + 1 >= n) {
        CCO_FAIL(e, CCO_E_UNTERMINATED, n);
    }
    c = p[i + 1];  /* compared in order of frequency: a switch would become an indirect jump */
    if (c == 'n' || c == '"' || c == '\\' || c == 't' || c == '/' || c == 'r' || c == 'b' || c == 'f') {
        return i + 2;
    }
    if (c == 'u') {
        return cco_unicode_escape_end(p, i, n, e);
    }
    CCO_FAIL(e, CCO_E_ESCAPE, i + 1);
}

static inline Py_ssize_t cco_digits(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        i++;
    }
    return i;
}

/* A number starting at p[i], a '-' or a digit (or -1: a malformed one). */
static inline Py_ssize_t cco_number_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    if (p[i] == '-') {
        i++;
        if (i >= n) {
            return -1;
        }
    }
    if (p[i] == '0') {
        i++;
        if (i < n && p[i] >= '0' && p[i] <= '9') {
            return -1;
        }
    } else if (p[i] >= '1' && p[i] <= '9') {
        i = cco_digits(p, i + 1, n);
    } else {
        return -1;
    }
    if (i < n && p[i] == '.') {
        i++;
        if (i >= n || p[i] < '0' || p[i] > '9') {
            return -1;
        }
        i = cco_digits(p, i, n);
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) {
            i++;
        }
        if (i >= n || p[i] < '0' || p[i] > '9') {
            return -1;
        }
        i = cco_digits(p, i, n);
    }
    return i;
}

/* The per-string variant: each string's contents are skipped by scan.h (16 bytes per step with SSE2). It takes any
 * body, and is the one for bodies the string-end map does not take. */
static CCO_ALWAYS_INLINE Py_ssize_t cco_skip_string_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                                        const uint64_t *ends, CcoError *e)
{
    (void)ends;
    for (;;) {
        i = cco_skip_plain(p, i, n);
        if (i >= n) {
            CCO_FAIL(e, CCO_E_UNTERMINATED, n);
        }
        if (p[i] == '"') {
            return i + 1;
        }
        if (p[i] != '\\') {
            CCO_FAIL(e, CCO_E_CHAR, i);  /* a control byte */
        }
        i = cco_escape_end(p, i, n, e);
        if (i < 0) {
            return -1;
        }
    }
}

#define CCO_V(name) cco_skip_##name
#include "jscan_variant.h"
#undef CCO_V

/* The string-end map: one bit per body byte, set on each quote no backslash escapes, with one more word past the end
 * whose first bit stops every search. Built once per body (cco_string_ends), it turns finding a string's end into a
 * bit search: string lengths vary, and a loop per string mispredicts its exit about once per string. */
#define CCO_END_WORDS(n) (((n) + 63) / 64 + 1)

/* p[i - 1] is a string's opening quote: the index after its closing quote, or -1 when the body ends first. The map
 * was built for a body with no control byte and only valid escapes, so the contents need no other check. */
static CCO_ALWAYS_INLINE Py_ssize_t cco_map_string_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                                       const uint64_t *ends, CcoError *e)
{
    Py_ssize_t w = i >> 6;
    uint64_t bits = ends[w] & (~(uint64_t)0 << (i & 63));
    (void)p;
    if (bits == 0) {  /* the end is in a later word (the sentinel word stops the search) */
        while ((bits = ends[++w]) == 0) {
        }
    }
    i = (w << 6) + __builtin_ctzll(bits);
    if (i >= n) {
        CCO_FAIL(e, CCO_E_UNTERMINATED, n);
    }
    return i + 1;
}

#define CCO_V(name) cco_map_##name
#include "jscan_variant.h"
#undef CCO_V

#if defined(__SSE2__)
/* Bits of the 64 bytes v0..v3 equal to c. */
static CCO_ALWAYS_INLINE uint64_t cco_eq64(__m128i v0, __m128i v1, __m128i v2, __m128i v3, __m128i c)
{
    uint64_t a = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v0, c));
    uint64_t b = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v1, c));
    uint64_t d = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v2, c));
    uint64_t e = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v3, c));
    return a | (b << 16) | (d << 32) | (e << 48);
}

typedef struct {
    uint64_t carry;         /* 1: the next block's first byte is escaped by this block's last */
    Py_ssize_t checked_to;  /* escapes before this were validated with the one before them */
    CcoError error;         /* not reported: the per-string variant words it */
} CcoEndsState;

/* One 64-byte block at q (body offset base): its word of the map, or -1 for a control byte or an invalid escape. */
static CCO_ALWAYS_INLINE int cco_ends_block(const unsigned char *q, const unsigned char *p, Py_ssize_t n,
                                            Py_ssize_t base, uint64_t *ends, CcoEndsState *st)
{
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), control_max = _mm_set1_epi8(0x1F);
    __m128i v0 = _mm_loadu_si128((const __m128i *)q), v1 = _mm_loadu_si128((const __m128i *)(q + 16));
    __m128i v2 = _mm_loadu_si128((const __m128i *)(q + 32)), v3 = _mm_loadu_si128((const __m128i *)(q + 48));
    uint64_t escaped = st->carry, backslashes;
    /* unsigned v <= 0x1F  <=>  max(v, 0x1F) == 0x1F; a control byte refuses the map at once (pretty-printed JSON
     * has one within its first bytes) */
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(_mm_min_epu8(_mm_min_epu8(v0, v1), _mm_min_epu8(v2, v3)),
                                                      control_max), control_max))) {
        return -1;
    }
    st->carry = 0;
    if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v0, backslash), _mm_cmpeq_epi8(v1, backslash)),
                                       _mm_or_si128(_mm_cmpeq_epi8(v2, backslash), _mm_cmpeq_epi8(v3, backslash))))) {
        backslashes = cco_eq64(v0, v1, v2, v3, backslash) & ~escaped;  /* an escaped backslash escapes nothing */
        while (backslashes) {
            int k = __builtin_ctzll(backslashes);
            if (base + k >= st->checked_to) {
                st->checked_to = cco_escape_end(p, base + k, n, &st->error);
                if (st->checked_to < 0) {
                    return -1;
                }
            }
            if (k == 63) {
                st->carry = 1;
                break;
            }
            escaped |= (uint64_t)1 << (k + 1);
            backslashes &= ~((uint64_t)3 << k);
        }
    }
    ends[base >> 6] = cco_eq64(v0, v1, v2, v3, quote) & ~escaped;
    return 0;
}
#endif

/* Builds the string-end map of p[0..n) into ends (CCO_END_WORDS(n) words). Returns 0, or -1 when the body has a
 * control byte or an invalid escape anywhere (or SSE2 is missing): the per-string variant then scans it.
 *
 * A backslash escapes the byte after it unless it is itself escaped; escapes are validated here (each \uXXXX with
 * its surrogate rule), in order. Backslashes outside strings get the same treatment: such a body is invalid and
 * the value scanner rejects it at the backslash, since it reads every byte outside strings. */
static int cco_string_ends(const unsigned char *p, Py_ssize_t n, uint64_t *ends)
{
#if defined(__SSE2__)
    CcoEndsState st;
    unsigned char tail[64];
    Py_ssize_t base;
    st.carry = 0;
    st.checked_to = 0;
    for (base = 0; base + 64 <= n; base += 64) {
        if (cco_ends_block(p + base, p, n, base, ends, &st) < 0) {
            return -1;
        }
    }
    if (base < n) {  /* the last, partial block: padded with spaces, which are none of the three */
        memset(tail, ' ', 64);
        memcpy(tail, p + base, (size_t)(n - base));
        if (cco_ends_block(tail, p, n, base, ends, &st) < 0) {
            return -1;
        }
    }
    ends[(n + 63) >> 6] = 1;
    return 0;
#else
    (void)p; (void)n; (void)ends;
    return -1;
#endif
}

#endif
