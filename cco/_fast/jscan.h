/* The JSON value scanner of key_c.pyx: validates one value and returns where it ends, or -1 with the kind and byte
 * position of the first error in a CcoError (RFC 8259; UTF-16 surrogate pairs checked; at most CCO_MAX_DEPTH open
 * containers). Bytes of 0x80 and above are left to the UTF-8 check (cco_utf8_check, or the string-end map's pass).
 *
 * Two variants share the grammar (jscan_variant.h) and differ in how a string's end is found: by a bit search in
 * a string-end map built for the whole body first (cco_string_ends, then cco_map_walk; bodies without control
 * bytes but for the whitespace they may end with, so every compact JSON an SDK or a script sends), or by skipping
 * each string's contents (scan.h; any body, and the one that words errors for the general loop). The map and its walk are also built for CPUs with AVX, BMI1 and BMI2,
 * chosen at import (cco_cpu_init).
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
    CCO_E_TRAILING,
    CCO_E_UTF8
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

/* Which way a branch of the grammar walk usually goes, for the code layout: the fall-through path is the common
 * token sequence of an SDK's compact JSON (measured: the 100 KB walk takes a fifth less time). */
#if defined(__GNUC__)
#define CCO_LIKELY(x) __builtin_expect(!!(x), 1)
#define CCO_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define CCO_LIKELY(x) (x)
#define CCO_UNLIKELY(x) (x)
#endif

/* Steps over whitespace where the buffer ends in a NUL (see jscan_variant.h); most JSON an SDK sends has none. */
#define CCO_SKIP_WS(p, i) \
    do { \
        while (CCO_UNLIKELY((p)[i] <= ' ') && ((p)[i] == ' ' || (p)[i] == '\n' || (p)[i] == '\r' || (p)[i] == '\t')) { \
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

/* UTF-8 (RFC 3629, as RFC 8259 requires of JSON text): p[i] >= 0x80 starts a sequence; the index after it, or -1
 * when it is not a valid one (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF, cut short).
 * The second byte's range depends on the first; the others are 0x80..0xBF. */
static CCO_NOINLINE Py_ssize_t cco_utf8_sequence_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    unsigned char c = p[i], low = 0x80, high = 0xBF;
    int more;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2;
        if (c == 0xE0) {
            low = 0xA0;   /* below: overlong */
        } else if (c == 0xED) {
            high = 0x9F;  /* above: UTF-16 surrogates */
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3;
        if (c == 0xF0) {
            low = 0x90;   /* below: overlong */
        } else if (c == 0xF4) {
            high = 0x8F;  /* above: past U+10FFFF */
        }
    } else {
        return -1;  /* 0x80..0xC1 (a continuation byte or an overlong lead), 0xF5..0xFF */
    }
    if (i + more >= n) {  /* cut short by the end of the body */
        return -1;
    }
    if (p[i + 1] < low || p[i + 1] > high) {
        return -1;
    }
    for (int k = 2; k <= more; k++) {
        if (p[i + k] < 0x80 || p[i + k] > 0xBF) {
            return -1;
        }
    }
    return i + more + 1;
}

/* Validates the sequences that start in p[i..end) (a sequence may run past end, not past n): the index after the
 * last one, or -1 with the error at the first bad one. */
static Py_ssize_t cco_utf8_range(const unsigned char *p, Py_ssize_t i, Py_ssize_t end, Py_ssize_t n, CcoError *e)
{
    while (i < end) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t next = cco_utf8_sequence_end(p, i, n);
        if (next < 0) {
            CCO_FAIL(e, CCO_E_UTF8, i);
        }
        i = next;
    }
    return i;
}

/* 1 when this build checks UTF-8 16 bytes per step (SSE2), 0 when byte by byte */
#if defined(__SSE2__)
#define CCO_UTF8_VECTOR 1
#else
#define CCO_UTF8_VECTOR 0
#endif

/* 1 when the UTF-8 runs below may use SSSE3: set by cco_cpu_init at import where the CPU has it (tests may turn
 * it off); always 0 elsewhere. */
static int cco_utf8_ssse3 = 0;

/* 1 when the string-end map's pass and the walk over it may use AVX (the VEX encoding), BMI1 and BMI2 (tzcnt,
 * shlx): set like cco_utf8_ssse3. */
static int cco_map_avx = 0;

static void cco_cpu_init(void)
{
#if defined(__GNUC__) && defined(__SSE2__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    cco_utf8_ssse3 = __builtin_cpu_supports("ssse3") ? 1 : 0;
    cco_map_avx = __builtin_cpu_supports("avx") && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
#endif
}

#if defined(__SSE2__)
/* unsigned x >= t, bytewise */
#define CCO_GE(x, t) _mm_cmpeq_epi8(_mm_max_epu8((x), _mm_set1_epi8((char)(t))), (x))
/* unsigned x < t, bytewise */
#define CCO_LT(x, t) _mm_cmpeq_epi8(_mm_min_epu8((x), _mm_set1_epi8((char)((t) - 1))), (x))

/* The UTF-8 errors of the 16 bytes x, prev being the 16 before them: a nonzero byte where a rule breaks. Each rule
 * looks at a byte and the three before it: a byte must be a continuation (10xxxxxx) exactly where a lead before it
 * asks for one (C0..FF for the next byte, E0..FF for the second, F0..FF for the third); C0, C1 and F5..FF lead
 * nothing; after E0, ED, F0 and F4 the next byte's range is narrowed (overlong forms, UTF-16 surrogates, past
 * U+10FFFF). Where a lead at the end of a body finds no continuation, the bytes after it are passed as spaces. */
static CCO_ALWAYS_INLINE __m128i cco_utf8_errors16(__m128i x, __m128i prev)
{
    __m128i prev1 = _mm_or_si128(_mm_slli_si128(x, 1), _mm_srli_si128(prev, 15));
    __m128i prev2 = _mm_or_si128(_mm_slli_si128(x, 2), _mm_srli_si128(prev, 14));
    __m128i prev3 = _mm_or_si128(_mm_slli_si128(x, 3), _mm_srli_si128(prev, 13));
    __m128i continuation = _mm_cmpeq_epi8(_mm_and_si128(x, _mm_set1_epi8((char)0xC0)), _mm_set1_epi8((char)0x80));
    __m128i wanted = _mm_or_si128(CCO_GE(prev1, 0xC0), _mm_or_si128(CCO_GE(prev2, 0xE0), CCO_GE(prev3, 0xF0)));
    __m128i errors = _mm_xor_si128(wanted, continuation);
    errors = _mm_or_si128(errors, _mm_or_si128(CCO_GE(x, 0xF5), _mm_cmpeq_epi8(
        _mm_and_si128(x, _mm_set1_epi8((char)0xFE)), _mm_set1_epi8((char)0xC0))));
    errors = _mm_or_si128(errors, _mm_and_si128(_mm_cmpeq_epi8(prev1, _mm_set1_epi8((char)0xE0)), CCO_LT(x, 0xA0)));
    errors = _mm_or_si128(errors, _mm_and_si128(_mm_cmpeq_epi8(prev1, _mm_set1_epi8((char)0xED)), CCO_GE(x, 0xA0)));
    errors = _mm_or_si128(errors, _mm_and_si128(_mm_cmpeq_epi8(prev1, _mm_set1_epi8((char)0xF0)), CCO_LT(x, 0x90)));
    errors = _mm_or_si128(errors, _mm_and_si128(_mm_cmpeq_epi8(prev1, _mm_set1_epi8((char)0xF4)), CCO_GE(x, 0x90)));
    return errors;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CCO_UTF8_SSSE3 1
#define CCO_MAP_AVX 1  /* the string-end map's pass and walk have twins built for AVX, BMI1 and BMI2 */
#include <tmmintrin.h>

/* The same rules as cco_utf8_errors16, with three table lookups (pshufb) per 16 bytes instead of a compare per
 * rule. Each rule about a byte and the one before it (prev1) holds for a set of (prev1's high nibble, prev1's low
 * nibble, the byte's high nibble) that is a product of three sets, so it gets one bit in three 16-entry tables
 * and breaks where the bit survives the AND of the three lookups. The bits: 0x01 a lead not followed by a
 * continuation, 0x02 a continuation after ASCII, 0x04 E0 then 80..9F, 0x08 F4 then 90..BF, 0x10 ED then A0..BF,
 * 0x20 C0 or C1 then a continuation, 0x40 F0 then 80..8F, 0x80 a continuation after a continuation, which is
 * right exactly where a lead two or three bytes back asks for one. F5..FF are refused on their own. */
__attribute__((target("ssse3"))) static inline __m128i cco_utf8_errors16_ssse3(__m128i x, __m128i prev)
{
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m128i by_prev_high = _mm_setr_epi8(0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, (char)0x80,
                                               (char)0x80, (char)0x80, (char)0x80, 0x21, 0x01, 0x15, 0x49);
    const __m128i by_prev_low = _mm_setr_epi8((char)0xE7, (char)0xA3, (char)0x83, (char)0x83, (char)0x8B,
                                              (char)0x83, (char)0x83, (char)0x83, (char)0x83, (char)0x83,
                                              (char)0x83, (char)0x83, (char)0x83, (char)0x93, (char)0x83,
                                              (char)0x83);
    const __m128i by_high = _mm_setr_epi8(0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, (char)0xE6, (char)0xAE,
                                          (char)0xBA, (char)0xBA, 0x01, 0x01, 0x01, 0x01);
    __m128i prev1 = _mm_alignr_epi8(x, prev, 15), prev2 = _mm_alignr_epi8(x, prev, 14);
    __m128i prev3 = _mm_alignr_epi8(x, prev, 13);
    __m128i rules = _mm_and_si128(
        _mm_and_si128(_mm_shuffle_epi8(by_prev_high, _mm_and_si128(_mm_srli_epi16(prev1, 4), nibble)),
                      _mm_shuffle_epi8(by_prev_low, _mm_and_si128(prev1, nibble))),
        _mm_shuffle_epi8(by_high, _mm_and_si128(_mm_srli_epi16(x, 4), nibble)));
    /* 0x80 where a lead two (E0..FF) or three (F0..FF) bytes back asks for a continuation */
    __m128i wanted = _mm_andnot_si128(
        _mm_cmpeq_epi8(_mm_or_si128(_mm_subs_epu8(prev2, _mm_set1_epi8((char)0xDF)),
                                    _mm_subs_epu8(prev3, _mm_set1_epi8((char)0xEF))), _mm_setzero_si128()),
        _mm_set1_epi8((char)0x80));
    return _mm_or_si128(_mm_xor_si128(rules, wanted), _mm_subs_epu8(x, _mm_set1_epi8((char)0xF4)));
}

#endif

/* The blocks of p[0..n) from base on, 64 bytes each and whole, checked as UTF-8 with the 16-byte check ERRORS16 for
 * as long as they have a byte >= 0x80 (and the one after, which closes their sequences): the offset checked up to,
 * or -1. *high says whether the block before base had such a byte, *prev holds its last 16 bytes (zeros after an
 * ASCII block); both move on. One call covers a run of text that is not ASCII. */
#define CCO_UTF8_RUN(ERRORS16) \
    do { \
        __m128i v0, v1, v2, v3, errors; \
        int here; \
        do { \
            v0 = _mm_loadu_si128((const __m128i *)(p + base)); \
            v1 = _mm_loadu_si128((const __m128i *)(p + base + 16)); \
            v2 = _mm_loadu_si128((const __m128i *)(p + base + 32)); \
            v3 = _mm_loadu_si128((const __m128i *)(p + base + 48)); \
            here = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(v0, v1), _mm_or_si128(v2, v3))); \
            if (here | *high) { \
                errors = _mm_or_si128(_mm_or_si128(ERRORS16(v0, *prev), ERRORS16(v1, v0)), \
                                      _mm_or_si128(ERRORS16(v2, v1), ERRORS16(v3, v2))); \
                if (_mm_movemask_epi8(_mm_cmpeq_epi8(errors, _mm_setzero_si128())) != 0xFFFF) { \
                    return -1; \
                } \
                *high = here != 0; \
                *prev = here ? v3 : _mm_setzero_si128(); \
            } \
            base += 64; \
        } while (*high && base + 64 <= n); \
        return base; \
    } while (0)

static CCO_NOINLINE Py_ssize_t cco_utf8_run_sse2(const unsigned char *p, Py_ssize_t base, Py_ssize_t n,
                                                 __m128i *prev, int *high)
{
    CCO_UTF8_RUN(cco_utf8_errors16);
}

#if defined(CCO_UTF8_SSSE3)
__attribute__((target("ssse3"), noinline)) static Py_ssize_t cco_utf8_run_ssse3(const unsigned char *p,
                                                                                Py_ssize_t base, Py_ssize_t n,
                                                                                __m128i *prev, int *high)
{
    CCO_UTF8_RUN(cco_utf8_errors16_ssse3);
}
#endif

static inline Py_ssize_t cco_utf8_run(const unsigned char *p, Py_ssize_t base, Py_ssize_t n, __m128i *prev,
                                      int *high)
{
#if defined(CCO_UTF8_SSSE3)
    if (cco_utf8_ssse3) {
        return cco_utf8_run_ssse3(p, base, n, prev, high);
    }
#endif
    return cco_utf8_run_sse2(p, base, n, prev, high);
}

/* The last block of a body, padded with spaces into tail[64]: 0 when it is UTF-8, else -1. */
static CCO_NOINLINE int cco_utf8_tail(const unsigned char *tail, __m128i *prev, int *high)
{
    return cco_utf8_run(tail, 0, 64, prev, high) < 0 ? -1 : 0;
}

/* After the last block: no sequence may be left open (the bytes after the body count as spaces). */
static CCO_ALWAYS_INLINE int cco_utf8_end(__m128i prev, int high)
{
    __m128i errors;
    if (!high) {
        return 0;
    }
    errors = cco_utf8_errors16(_mm_set1_epi8(' '), prev);
    return _mm_movemask_epi8(_mm_cmpeq_epi8(errors, _mm_setzero_si128())) == 0xFFFF ? 0 : -1;
}
#endif

/* The whole body as UTF-8: 0, or -1 with the first bad sequence in e. 64 bytes per step; a body that fails is gone
 * through again sequence by sequence, for the byte to name. */
static int cco_utf8_check(const unsigned char *p, Py_ssize_t n, CcoError *e)
{
#if defined(__SSE2__)
    __m128i prev = _mm_setzero_si128();
    int high = 0;
    unsigned char tail[64];
    Py_ssize_t i = 0;
    while (i + 64 <= n) {
        __m128i any = _mm_or_si128(_mm_or_si128(_mm_loadu_si128((const __m128i *)(p + i)),
                                                _mm_loadu_si128((const __m128i *)(p + i + 16))),
                                   _mm_or_si128(_mm_loadu_si128((const __m128i *)(p + i + 32)),
                                                _mm_loadu_si128((const __m128i *)(p + i + 48))));
        if (!high && !_mm_movemask_epi8(any)) {  /* ASCII */
            i += 64;
            continue;
        }
        if ((i = cco_utf8_run(p, i, n, &prev, &high)) < 0) {
            goto name_it;
        }
    }
    if (i < n) {  /* the last, partial block: padded with spaces */
        memset(tail, ' ', 64);
        memcpy(tail, p + i, (size_t)(n - i));
        if (cco_utf8_tail(tail, &prev, &high) < 0) {
            goto name_it;
        }
    }
    if (cco_utf8_end(prev, high) == 0) {
        return 0;
    }
name_it:
#endif
    return cco_utf8_range(p, 0, n, n, e) < 0 ? -1 : 0;
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

/* The word of the string-end map (below) that the last string search ended in: its index (-1 at first) and bits. */
typedef struct {
    Py_ssize_t index;
    uint64_t bits;
} CcoWord;

/* The per-string variant: each string's contents are skipped by scan.h (16 bytes per step with SSE2). It takes any
 * body, and is the one for bodies the string-end map does not take. */
static CCO_ALWAYS_INLINE Py_ssize_t cco_skip_string_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                                        const uint64_t *ends, CcoError *e, CcoWord *word)
{
    (void)ends;
    (void)word;
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
#define CCO_V_TARGET
#include "jscan_variant.h"
#undef CCO_V_TARGET
#undef CCO_V

/* The string-end map: one bit per body byte, set on each quote no backslash escapes, with one more word past the end
 * whose first bit stops every search. Built once per body (cco_string_ends), it turns finding a string's end into a
 * bit search: string lengths vary, and a loop per string mispredicts its exit about once per string. */
#define CCO_END_WORDS(n) (((n) + 63) / 64 + 1)

/* p[i - 1] is a string's opening quote: the index after its closing quote, or -1 when the body ends first. The map
 * was built for a body with no control byte and only valid escapes, so the contents need no other check. The word
 * of the map that the last search ended in is kept in *word: the next string mostly starts in it, and is then
 * found without a load on the path from one string's end to the next (the walk's critical path). */
static CCO_ALWAYS_INLINE Py_ssize_t cco_map_string_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                                       const uint64_t *ends, CcoError *e, CcoWord *word)
{
    Py_ssize_t w = i >> 6;
    uint64_t bits;
    (void)p;
    if (CCO_UNLIKELY(w != word->index)) {
        word->index = w;
        word->bits = ends[w];
    }
    bits = word->bits & (~(uint64_t)0 << (i & 63));
    if (CCO_UNLIKELY(bits == 0)) {  /* the end is in a later word (the sentinel word stops the search) */
        while ((bits = ends[++w]) == 0) {
        }
        word->index = w;
        word->bits = bits;
    }
    i = (w << 6) + __builtin_ctzll(bits);
    if (i >= n) {
        CCO_FAIL(e, CCO_E_UNTERMINATED, n);
    }
    return i + 1;
}

#define CCO_V(name) cco_map_##name
#define CCO_V_TARGET
#include "jscan_variant.h"
#undef CCO_V_TARGET
#undef CCO_V

#if defined(CCO_MAP_AVX)
/* The same walk built for BMI1 and BMI2 (tzcnt, and shlx for the word mask): about 1 us off the 100 KB key. */
#define cco_mapx_string_end cco_map_string_end
#define CCO_V(name) cco_mapx_##name
#define CCO_V_TARGET __attribute__((target("avx,bmi,bmi2")))
#include "jscan_variant.h"
#undef CCO_V_TARGET
#undef CCO_V
#endif

/* The walk over a string-end map, in the build cco_cpu_init chose. */
static Py_ssize_t cco_map_walk(const unsigned char *p, Py_ssize_t i, Py_ssize_t n, const uint64_t *ends, CcoError *e)
{
#if defined(CCO_MAP_AVX)
    if (cco_map_avx) {
        return cco_mapx_value_end(p, i, n, ends, e);
    }
#endif
    return cco_map_value_end(p, i, n, ends, e);
}

#if defined(__SSE2__)
/* The 64 bits of four 16-byte compare results (all-ones bytes where true), first byte lowest. */
static CCO_ALWAYS_INLINE uint64_t cco_mask64(__m128i m0, __m128i m1, __m128i m2, __m128i m3)
{
    return (uint64_t)(unsigned)_mm_movemask_epi8(m0) | ((uint64_t)(unsigned)_mm_movemask_epi8(m1) << 16)
           | ((uint64_t)(unsigned)_mm_movemask_epi8(m2) << 32) | ((uint64_t)(unsigned)_mm_movemask_epi8(m3) << 48);
}

/* Bits of the 64 bytes v0..v3 equal to c. */
static CCO_ALWAYS_INLINE uint64_t cco_eq64(__m128i v0, __m128i v1, __m128i v2, __m128i v3, __m128i c)
{
    return cco_mask64(_mm_cmpeq_epi8(v0, c), _mm_cmpeq_epi8(v1, c), _mm_cmpeq_epi8(v2, c), _mm_cmpeq_epi8(v3, c));
}

typedef struct {
    uint64_t carry;         /* 1: the next block's first byte is escaped by this block's last */
    Py_ssize_t checked_to;  /* escapes before this were validated with the one before them */
    Py_ssize_t utf8_to;     /* the blocks before this were checked as UTF-8 by one run (cco_utf8_run) */
    Py_ssize_t trailing;    /* where the body's trailing run of JSON whitespace starts (n when there is none) */
    CcoError error;         /* not reported: the per-string variant words it */
} CcoEndsState;

/* Bits of the 64 bytes v0..v3 that are control bytes (below 0x20). */
static CCO_ALWAYS_INLINE uint64_t cco_control64(__m128i v0, __m128i v1, __m128i v2, __m128i v3)
{
    return cco_mask64(CCO_LT(v0, 0x20), CCO_LT(v1, 0x20), CCO_LT(v2, 0x20), CCO_LT(v3, 0x20));
}

/* One 64-byte block at q (body offset base): its word of the map, or -1 for a control byte, an invalid escape or a
 * byte sequence that is not UTF-8. */
static CCO_ALWAYS_INLINE int cco_ends_block(const unsigned char *q, const unsigned char *p, Py_ssize_t n,
                                            Py_ssize_t base, uint64_t *ends, CcoEndsState *st,
                                            __m128i *utf8_prev, int *utf8_high)
{
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), control_max = _mm_set1_epi8(0x1F);
    __m128i v0 = _mm_loadu_si128((const __m128i *)q), v1 = _mm_loadu_si128((const __m128i *)(q + 16));
    __m128i v2 = _mm_loadu_si128((const __m128i *)(q + 32)), v3 = _mm_loadu_si128((const __m128i *)(q + 48));
    uint64_t escaped = st->carry, backslashes;
    /* unsigned v <= 0x1F  <=>  max(v, 0x1F) == 0x1F; a control byte refuses the map at once (pretty-printed JSON
     * has one within its first bytes). One test finds a block with neither a control byte nor a byte >= 0x80 (or
     * a UTF-8 sequence to close from the block before): the usual case, where neither needs a look. */
    __m128i control = _mm_cmpeq_epi8(_mm_max_epu8(_mm_min_epu8(_mm_min_epu8(v0, v1), _mm_min_epu8(v2, v3)),
                                                  control_max), control_max);
    if (__builtin_expect(_mm_movemask_epi8(_mm_or_si128(control, _mm_or_si128(_mm_or_si128(v0, v1),
                                                                              _mm_or_si128(v2, v3))))
                         | *utf8_high, 0)) {
        if (_mm_movemask_epi8(control)) {
            /* Refused, unless every control byte is in the body's trailing whitespace (a body written with a final
             * newline): no string can hold those, since a string open there never ends and the walk rejects it. */
            uint64_t allowed = base + 64 <= st->trailing ? 0
                               : base >= st->trailing ? ~(uint64_t)0 : ~(uint64_t)0 << (st->trailing - base);
            if (cco_control64(v0, v1, v2, v3) & ~allowed) {
                return -1;
            }
        }
        if (base >= st->utf8_to) {  /* not yet checked with a run of blocks before it */
            if (q == p + base) {
                st->utf8_to = cco_utf8_run(p, base, n, utf8_prev, utf8_high);
                if (st->utf8_to < 0) {
                    return -1;
                }
            } else if (cco_utf8_tail(q, utf8_prev, utf8_high) < 0) {  /* the padded last block */
                return -1;
            }
        }
    }
    st->carry = 0;
    if (CCO_UNLIKELY(_mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v0, backslash), _mm_cmpeq_epi8(v1, backslash)),
            _mm_or_si128(_mm_cmpeq_epi8(v2, backslash), _mm_cmpeq_epi8(v3, backslash)))))) {  /* most blocks have none */
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
 * control byte (other than in the whitespace it ends with), an invalid escape or a byte sequence that is not UTF-8
 * anywhere (or SSE2 is missing): the per-string variant then scans it, and cco_utf8_check words a UTF-8 error. A
 * body it maps is valid UTF-8.
 *
 * A backslash escapes the byte after it unless it is itself escaped; escapes are validated here (each \uXXXX with
 * its surrogate rule), in order. Backslashes outside strings get the same treatment: such a body is invalid and
 * the value scanner rejects it at the backslash, since it reads every byte outside strings. */
static CCO_ALWAYS_INLINE int cco_string_ends_body(const unsigned char *p, Py_ssize_t n, uint64_t *ends)
{
#if defined(__SSE2__)
    CcoEndsState st;
    unsigned char tail[64];
    Py_ssize_t base;
    __m128i utf8_prev;
    int utf8_high;
    st.carry = 0;
    st.checked_to = 0;
    st.utf8_to = 0;
    for (st.trailing = n; st.trailing > 0; st.trailing--) {
        unsigned char c = p[st.trailing - 1];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            break;
        }
    }
    utf8_prev = _mm_setzero_si128();
    utf8_high = 0;
    for (base = 0; base + 64 <= n; base += 64) {
        if (cco_ends_block(p + base, p, n, base, ends, &st, &utf8_prev, &utf8_high) < 0) {
            return -1;
        }
    }
    if (base < n) {  /* the last, partial block: padded with spaces, which are none of the three */
        memset(tail, ' ', 64);
        memcpy(tail, p + base, (size_t)(n - base));
        if (cco_ends_block(tail, p, n, base, ends, &st, &utf8_prev, &utf8_high) < 0) {
            return -1;
        }
    }
    if (cco_utf8_end(utf8_prev, utf8_high) < 0) {
        return -1;
    }
    ends[(n + 63) >> 6] = 1;
    return 0;
#else
    (void)p; (void)n; (void)ends;
    return -1;
#endif
}

static CCO_NOINLINE int cco_string_ends_sse2(const unsigned char *p, Py_ssize_t n, uint64_t *ends)
{
    return cco_string_ends_body(p, n, ends);
}

#if defined(CCO_MAP_AVX)
/* The same pass with the VEX encoding of the same 128-bit operations: three-operand forms need no register copies
 * (about 0.8 us off the 100 KB pass on Zen 1). Taken where the CPU and OS have AVX, BMI1 and BMI2 (cco_cpu_init). */
__attribute__((target("avx,bmi,bmi2"), noinline)) static int cco_string_ends_avx(const unsigned char *p, Py_ssize_t n,
                                                                        uint64_t *ends)
{
    return cco_string_ends_body(p, n, ends);
}
#endif

static int cco_string_ends(const unsigned char *p, Py_ssize_t n, uint64_t *ends)
{
#if defined(CCO_MAP_AVX)
    if (cco_map_avx) {
        return cco_string_ends_avx(p, n, ends);
    }
#endif
    return cco_string_ends_sse2(p, n, ends);
}

#endif
