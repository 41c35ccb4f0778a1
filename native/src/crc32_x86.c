/* CRC-32 by carry-less multiplication (PCLMULQDQ), called only when the handle's CPU features
 * (cpu.c) include it: "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ
 * Instruction" (Gopal, Ozturk et al., Intel, 2009), in its bit-reflected form. Four 128-bit
 * registers fold 64 bytes at a time (each multiplied by x^(512+64) and x^512 mod P, the other
 * half of the product added), then fold into one, then 128 bits to 64, then a Barrett
 * reduction to 32. With a destination the bytes are stored as they are loaded: a copy and its
 * CRC in one pass. Elsewhere the portable code of crc32.c runs. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NNAR_PORTABLE)
#include <immintrin.h>

#define FOLD(x, k, y) _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), y)
#define LOAD(q) _mm_loadu_si128((const __m128i *)(const void *)(q))
#define STORE(q, v) _mm_storeu_si128((__m128i *)(void *)(q), v)

__attribute__((target("pclmul,sse4.1")))
static inline uint32_t fold(uint32_t reg, const uint8_t *p, size_t n, uint8_t *dst, int copy)
{
    /* x^(4*128+64), x^(4*128); x^(128+64), x^128; x^64 (mod P, reflected); P and its Barrett mu */
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596ll, 0x0154442bd4ll);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009ell, 0x01751997d0ll);
    const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124ll);
    const __m128i poly = _mm_set_epi64x(0x01f7011641ll, 0x01db710641ll);
    const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i x0 = LOAD(p), x1 = LOAD(p + 16), x2 = LOAD(p + 32), x3 = LOAD(p + 48), t;
    if (copy) { STORE(dst, x0); STORE(dst + 16, x1); STORE(dst + 32, x2); STORE(dst + 48, x3); dst += 64; }
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)reg));
    for (p += 64, n -= 64; n; p += 64, n -= 64) {
        __m128i y0 = LOAD(p), y1 = LOAD(p + 16), y2 = LOAD(p + 32), y3 = LOAD(p + 48);
        if (copy) { STORE(dst, y0); STORE(dst + 16, y1); STORE(dst + 32, y2); STORE(dst + 48, y3); dst += 64; }
        x0 = FOLD(x0, k1k2, y0);
        x1 = FOLD(x1, k1k2, y1);
        x2 = FOLD(x2, k1k2, y2);
        x3 = FOLD(x3, k1k2, y3);
    }
    x0 = FOLD(x0, k3k4, x1);
    x0 = FOLD(x0, k3k4, x2);
    x0 = FOLD(x0, k3k4, x3);
    /* 128 bits to 64 */
    x0 = _mm_xor_si128(_mm_srli_si128(x0, 8), _mm_clmulepi64_si128(x0, k3k4, 0x10));
    t = _mm_srli_si128(x0, 4);
    x0 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x0, low32), k5, 0x00), t);
    /* Barrett reduction to 32 bits */
    t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x0, low32), poly, 0x10), low32);
    t = _mm_clmulepi64_si128(t, poly, 0x00);
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(x0, t), 1);
}

__attribute__((target("pclmul,sse4.1")))
uint32_t nnar_crc32_clmul(uint32_t reg, const uint8_t *p, size_t n, uint8_t *dst)
{
    return dst ? fold(reg, p, n, dst, 1) : fold(reg, p, n, NULL, 0);
}
#else
uint32_t nnar_crc32_clmul(uint32_t reg, const uint8_t *p, size_t n, uint8_t *dst)
{
    /* never called: the CPU features are 0 here; the portable code, to be safe */
    if (dst) memcpy(dst, p, n);
    return ~nnar_crc32(~reg, p, n);
}
#endif
