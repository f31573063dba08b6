/* Byte-skipping helpers for key_c.pyx: how far a JSON string's plain bytes run.
 *
 * A "plain" byte is one that cannot end or escape a string: not '"', not '\\', not a control byte (< 0x20).
 * skip_plain returns the index of the first non-plain byte at or after i (or n). With SSE2 it tests 16 bytes
 * per step; elsewhere 8 bytes per step with word arithmetic (exact: a lane flags only for a real match or a
 * lane after one, and the byte loop settles the position).
 */
#ifndef CCO_SCAN_H
#define CCO_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline int cco_is_plain(unsigned char c) {
    return c >= 0x20 && c != '"' && c != '\\';
}

static inline Py_ssize_t cco_skip_plain(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i control_max = _mm_set1_epi8(0x1F);
    while (i + 16 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        /* unsigned v <= 0x1F  <=>  max(v, 0x1F) == 0x1F */
        __m128i special = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                       _mm_cmpeq_epi8(_mm_max_epu8(v, control_max), control_max));
        int mask = _mm_movemask_epi8(special);
        if (mask) {
            return i + __builtin_ctz((unsigned)mask);
        }
        i += 16;
    }
#else
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (i + 8 <= n) {
        uint64_t w, q, b;
        memcpy(&w, p + i, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        if ((((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w)) & highs) {
            break;
        }
        i += 8;
    }
#endif
    while (i < n && cco_is_plain(p[i])) {
        i++;
    }
    return i;
}

#endif
