/* XXH3-128 (xxHash 0.8, default secret, seed 0) for key_c.pyx: the cache key's hash, fed the canonical form in
 * pieces from C, so that a key costs no Python call per piece and no copy of a long value.
 *
 * Written from the algorithm's specification (xxHash's doc/xxhash_spec.md). Only inputs of more than 240 bytes are
 * hashed here (the "large input" algorithm: eight accumulators, 64-byte stripes, 16 stripes to a block); shorter
 * ones are left in the state's buffer for the caller to hash with the xxhash package, whose digest is the same by
 * definition. tests/test_fast_key.py checks this one against the package at every length and piece split.
 *
 * Streaming: a stripe is accumulated only once a byte after it is known, so that the last stripe of the input
 * (which the algorithm accumulates differently, and which may overlap the one before) is still at hand when the
 * digest is taken. Up to 256 bytes are kept before anything is accumulated, so an input of 240 bytes or fewer is
 * whole in the buffer at the end.
 */
#ifndef CCO_XXH3_H
#define CCO_XXH3_H

#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* GCC, left to itself, unrolls the stripe loop and carries the overlapping secret loads from one stripe to the
 * next (predictive commoning): that spills registers and costs a fifth of the speed. */
#if defined(__GNUC__) && !defined(__clang__)
#define CCO_XXH3_PLAIN_LOOP __attribute__((optimize("no-predictive-commoning")))
#define CCO_XXH3_NO_UNROLL _Pragma("GCC unroll 1")
#else
#define CCO_XXH3_PLAIN_LOOP
#define CCO_XXH3_NO_UNROLL
#endif

#define CCO_XXH3_STRIPE 64
#define CCO_XXH3_STRIPES_PER_BLOCK 16  /* (192 - 64) / 8: the default secret's */
#define CCO_XXH3_KEEP 256              /* bytes kept before anything is accumulated */
#define CCO_XXH3_SHORT_MAX 240         /* inputs up to this long are the caller's (the short algorithms) */

static const unsigned char cco_xxh3_secret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

#define CCO_PRIME32_1 0x9E3779B1U
#define CCO_PRIME32_2 0x85EBCA77U
#define CCO_PRIME32_3 0xC2B2AE3DU
#define CCO_PRIME64_1 0x9E3779B185EBCA87ULL
#define CCO_PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define CCO_PRIME64_3 0x165667B19E3779F9ULL
#define CCO_PRIME64_4 0x85EBCA77C2B2AE63ULL
#define CCO_PRIME64_5 0x27D4EB2F165667C5ULL
#define CCO_PRIME_MX1 0x165667919E3779F9ULL

typedef struct {
    uint64_t acc[8];
    uint64_t total;                        /* bytes fed so far */
    unsigned stripes;                      /* stripes accumulated in the current block */
    unsigned kept;                         /* bytes in keep, none accumulated yet */
    unsigned char keep[CCO_XXH3_KEEP];
    unsigned char last[CCO_XXH3_STRIPE];  /* the last 64 bytes accumulated, for a last stripe that reaches back */
} CcoXxh3;

static inline uint64_t cco_read64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);  /* little-endian machines: key_c builds for x86-64 and ARM64 */
    return v;
}

static inline void cco_xxh3_start(CcoXxh3 *h)
{
    h->acc[0] = CCO_PRIME32_3;
    h->acc[1] = CCO_PRIME64_1;
    h->acc[2] = CCO_PRIME64_2;
    h->acc[3] = CCO_PRIME64_3;
    h->acc[4] = CCO_PRIME64_4;
    h->acc[5] = CCO_PRIME32_2;
    h->acc[6] = CCO_PRIME64_5;
    h->acc[7] = CCO_PRIME32_1;
    h->total = 0;
    h->stripes = 0;
    h->kept = 0;
}

/* Accumulates count stripes from src, the block's scramble after each 16th; *stripes counts within the block. The
 * secret is read at 8 * (stripe in block), the scramble's at its last 64 bytes. */
#if defined(__SSE2__)
#define CCO_XXH3_STRIPES_BODY() \
    do { \
        __m128i a0 = _mm_loadu_si128((const __m128i *)acc), a1 = _mm_loadu_si128((const __m128i *)(acc + 2)); \
        __m128i a2 = _mm_loadu_si128((const __m128i *)(acc + 4)), a3 = _mm_loadu_si128((const __m128i *)(acc + 6)); \
        const __m128i prime = _mm_set1_epi32((int)CCO_PRIME32_1); \
        unsigned s = *stripes; \
        while (count) { /* the rest of a block, then its scramble */ \
            size_t run = CCO_XXH3_STRIPES_PER_BLOCK - s < count ? CCO_XXH3_STRIPES_PER_BLOCK - s : count; \
            const unsigned char *key = cco_xxh3_secret + 8 * s; \
            count -= run; \
            s += (unsigned)run; \
            CCO_XXH3_NO_UNROLL for (; run; run--, src += CCO_XXH3_STRIPE, key += 8) { \
                /* per 64-bit lane: acc[lane ^ 1] += data; acc[lane] += low32(data ^ key) * high32(data ^ key) */ \
                CCO_XXH3_LANES(a0, 0); \
                CCO_XXH3_LANES(a1, 16); \
                CCO_XXH3_LANES(a2, 32); \
                CCO_XXH3_LANES(a3, 48); \
            } \
            if (s == CCO_XXH3_STRIPES_PER_BLOCK) { \
                CCO_XXH3_SCRAMBLE(a0, 0); \
                CCO_XXH3_SCRAMBLE(a1, 16); \
                CCO_XXH3_SCRAMBLE(a2, 32); \
                CCO_XXH3_SCRAMBLE(a3, 48); \
                s = 0; \
            } \
        } \
        *stripes = s; \
        _mm_storeu_si128((__m128i *)acc, a0); \
        _mm_storeu_si128((__m128i *)(acc + 2), a1); \
        _mm_storeu_si128((__m128i *)(acc + 4), a2); \
        _mm_storeu_si128((__m128i *)(acc + 6), a3); \
    } while (0)

#define CCO_XXH3_LANES(a, at) \
    do { \
        __m128i data = _mm_loadu_si128((const __m128i *)(src + (at))); \
        __m128i mixed = _mm_xor_si128(data, _mm_loadu_si128((const __m128i *)(key + (at)))); \
        __m128i product = _mm_mul_epu32(mixed, _mm_shuffle_epi32(mixed, _MM_SHUFFLE(3, 3, 1, 1))); \
        (a) = _mm_add_epi64(_mm_add_epi64((a), _mm_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2))), product); \
    } while (0)

/* acc ^= acc >> 47; acc ^= key; acc *= PRIME32_1 (64-bit product from two 32 x 32 ones) */
#define CCO_XXH3_SCRAMBLE(a, at) \
    do { \
        __m128i x = _mm_xor_si128(_mm_xor_si128((a), _mm_srli_epi64((a), 47)), \
                                  _mm_loadu_si128((const __m128i *)(cco_xxh3_secret + 128 + (at)))); \
        (a) = _mm_add_epi64(_mm_mul_epu32(x, prime), \
                            _mm_slli_epi64(_mm_mul_epu32(_mm_srli_epi64(x, 32), prime), 32)); \
    } while (0)

CCO_XXH3_PLAIN_LOOP static void cco_xxh3_stripes_sse2(uint64_t *acc, const unsigned char *src, size_t count,
                                                      unsigned *stripes)
{
    CCO_XXH3_STRIPES_BODY();
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CCO_XXH3_AVX 1
/* The same loop in the VEX encoding (no register copies), where the CPU has AVX. */
__attribute__((target("avx"))) CCO_XXH3_PLAIN_LOOP static void cco_xxh3_stripes_avx(uint64_t *acc,
                                                                                    const unsigned char *src,
                                                                                    size_t count, unsigned *stripes)
{
    CCO_XXH3_STRIPES_BODY();
}
#endif
#endif

/* One stripe into the accumulators, in plain C: acc[lane ^ 1] += data; acc[lane] += low32(data ^ key) *
 * high32(data ^ key). The portable loop's step, and the digest's last stripe on every kind. */
static inline void cco_xxh3_stripe_scalar(uint64_t *acc, const unsigned char *src, const unsigned char *key)
{
    for (int lane = 0; lane < 8; lane++) {
        uint64_t data = cco_read64(src + 8 * lane), mixed = data ^ cco_read64(key + 8 * lane);
        acc[lane ^ 1] += data;
        acc[lane] += (mixed & 0xFFFFFFFFULL) * (mixed >> 32);
    }
}

static void cco_xxh3_stripes_scalar(uint64_t *acc, const unsigned char *src, size_t count, unsigned *stripes)
{
    unsigned s = *stripes;
    for (size_t k = 0; k < count; k++, src += CCO_XXH3_STRIPE) {
        cco_xxh3_stripe_scalar(acc, src, cco_xxh3_secret + 8 * s);
        if (++s == CCO_XXH3_STRIPES_PER_BLOCK) {
            for (int lane = 0; lane < 8; lane++) {
                uint64_t a = acc[lane];
                a ^= a >> 47;
                a ^= cco_read64(cco_xxh3_secret + 128 + 8 * lane);
                acc[lane] = a * CCO_PRIME32_1;
            }
            s = 0;
        }
    }
    *stripes = s;
}

/* How stripes are accumulated: 2 the VEX loop, 1 the SSE2 one, 0 the portable one. Set by cco_xxh3_init (the best
 * this CPU runs); tests may choose a lesser one. */
static int cco_xxh3_kind = 0;

static int cco_xxh3_best_kind(void)
{
#if defined(CCO_XXH3_AVX)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx")) {
        return 2;
    }
#endif
#if defined(__SSE2__)
    return 1;
#else
    return 0;
#endif
}

static void cco_xxh3_init(void)
{
    cco_xxh3_kind = cco_xxh3_best_kind();
}

static inline void cco_xxh3_stripes(uint64_t *acc, const unsigned char *src, size_t count, unsigned *stripes)
{
#if defined(CCO_XXH3_AVX)
    if (cco_xxh3_kind == 2) {
        cco_xxh3_stripes_avx(acc, src, count, stripes);
        return;
    }
#endif
#if defined(__SSE2__)
    if (cco_xxh3_kind >= 1) {
        cco_xxh3_stripes_sse2(acc, src, count, stripes);
        return;
    }
#endif
    cco_xxh3_stripes_scalar(acc, src, count, stripes);
}

/* Feeds size bytes. Stripes are accumulated from src where they lie; only the bytes kept for later are copied. */
static void cco_xxh3_update(CcoXxh3 *h, const unsigned char *src, size_t size)
{
    size_t fill, count;
    h->total += size;
    if (size <= CCO_XXH3_KEEP - h->kept) {
        memcpy(h->keep + h->kept, src, size);
        h->kept += (unsigned)size;
        return;
    }
    /* more than the buffer holds: whatever is kept is accumulated, topped up to whole stripes first (a byte of
     * src is still left after it, so none of them can be the last stripe) */
    if (h->kept) {
        fill = (CCO_XXH3_STRIPE - h->kept % CCO_XXH3_STRIPE) % CCO_XXH3_STRIPE;
        memcpy(h->keep + h->kept, src, fill);
        src += fill;
        size -= fill;
        count = (h->kept + fill) / CCO_XXH3_STRIPE;
        cco_xxh3_stripes(h->acc, h->keep, count, &h->stripes);
        memcpy(h->last, h->keep + (count - 1) * CCO_XXH3_STRIPE, CCO_XXH3_STRIPE);
        h->kept = 0;
    }
    if (size > CCO_XXH3_STRIPE) {  /* every stripe that has a byte after it */
        count = (size - 1) / CCO_XXH3_STRIPE;
        cco_xxh3_stripes(h->acc, src, count, &h->stripes);
        src += count * CCO_XXH3_STRIPE;
        size -= count * CCO_XXH3_STRIPE;
        memcpy(h->last, src - CCO_XXH3_STRIPE, CCO_XXH3_STRIPE);
    }
    memcpy(h->keep, src, size);  /* 1..64 bytes */
    h->kept = (unsigned)size;
}

static inline uint64_t cco_xxh3_avalanche(uint64_t x)
{
    x ^= x >> 37;
    x *= CCO_PRIME_MX1;
    return x ^ (x >> 32);
}

/* The 128-bit product of a and b, its halves XORed */
static inline uint64_t cco_mul128_fold64(uint64_t a, uint64_t b)
{
#if defined(__SIZEOF_INT128__) && !defined(CCO_XXH3_NO_INT128)
    __uint128_t product = (__uint128_t)a * b;
    return (uint64_t)product ^ (uint64_t)(product >> 64);
#else  /* from 32 x 32 -> 64 products, where the compiler has no 128-bit type */
    uint64_t low = (a & 0xFFFFFFFFULL) * (b & 0xFFFFFFFFULL), mid1 = (a >> 32) * (b & 0xFFFFFFFFULL);
    uint64_t mid2 = (a & 0xFFFFFFFFULL) * (b >> 32), high = (a >> 32) * (b >> 32);
    uint64_t cross = (low >> 32) + (mid1 & 0xFFFFFFFFULL) + mid2;
    return ((cross << 32) | (low & 0xFFFFFFFFULL)) ^ (high + (mid1 >> 32) + (cross >> 32));
#endif
}

static inline uint64_t cco_xxh3_merge(const uint64_t *acc, const unsigned char *key, uint64_t start)
{
    uint64_t result = start;
    for (int i = 0; i < 4; i++) {
        result += cco_mul128_fold64(acc[2 * i] ^ cco_read64(key + 16 * i),
                                    acc[2 * i + 1] ^ cco_read64(key + 16 * i + 8));
    }
    return cco_xxh3_avalanche(result);
}

/* The digest, as xxhash's digest() gives it (the high half, then the low one, each big-endian), when more than 240
 * bytes were fed: returns 0. Otherwise returns -1, and the whole input is h->keep[0 .. h->kept). */
static int cco_xxh3_digest(const CcoXxh3 *h, unsigned char out[16])
{
    uint64_t acc[8], low, high;
    unsigned stripes = h->stripes;
    unsigned char last[CCO_XXH3_STRIPE];
    size_t count;
    if (h->total <= CCO_XXH3_SHORT_MAX) {
        return -1;
    }
    memcpy(acc, h->acc, sizeof acc);
    count = (h->kept - 1) / CCO_XXH3_STRIPE;  /* the kept stripes that have a byte after them */
    if (count) {
        cco_xxh3_stripes(acc, h->keep, count, &stripes);
    }
    if (h->kept >= CCO_XXH3_STRIPE) {
        memcpy(last, h->keep + h->kept - CCO_XXH3_STRIPE, CCO_XXH3_STRIPE);
    } else {  /* the last stripe reaches back into bytes already accumulated */
        memcpy(last, h->last + h->kept, CCO_XXH3_STRIPE - h->kept);
        memcpy(last + CCO_XXH3_STRIPE - h->kept, h->keep, h->kept);
    }
    cco_xxh3_stripe_scalar(acc, last, cco_xxh3_secret + 192 - 64 - 7);  /* the last stripe: no scramble */
    low = cco_xxh3_merge(acc, cco_xxh3_secret + 11, h->total * CCO_PRIME64_1);
    high = cco_xxh3_merge(acc, cco_xxh3_secret + 192 - 64 - 11, ~(h->total * CCO_PRIME64_2));
    for (int i = 0; i < 8; i++) {
        out[i] = (unsigned char)(high >> (56 - 8 * i));
        out[8 + i] = (unsigned char)(low >> (56 - 8 * i));
    }
    return 0;
}

#endif
