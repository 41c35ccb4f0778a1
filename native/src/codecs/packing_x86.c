/* 4-bit indices into a table of 16 four-byte entries (4-bit k-means of float32) with AVX2,
 * called only when the handle's CPU features (cpu.c) include it: 16 index bytes at a time
 * split into 32 nibbles, widened, looked up in the table's two halves (vpermd) and blended by
 * the index's top bit. A large output is written with non-temporal stores from its first
 * 32-byte boundary, as byteplanes_x86.c does. The bytes before and after are packing.c's
 * portable code. */
#include "codecs.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NNAR_PORTABLE)
#include <immintrin.h>

__attribute__((target("avx2")))
static __m256i lookup(__m256i lo, __m256i hi, __m128i idx8)
{
    __m256i idx = _mm256_cvtepu8_epi32(idx8);
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(_mm256_permutevar8x32_epi32(lo, idx)),
                                                 _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(hi, idx)),
                                                 _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28))));
}

__attribute__((target("avx2")))
static uint64_t gather(const uint8_t *in, uint64_t b, uint64_t nbytes, const uint32_t table[16], uint8_t *out, int stream)
{
    const __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)table);
    const __m256i hi = _mm256_loadu_si256((const __m256i *)(const void *)(table + 8));
    const __m128i nib = _mm_set1_epi8(0x0F);
    for (; b + 16 <= nbytes; b += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(in + b));
        __m128i l = _mm_and_si128(x, nib), h = _mm_and_si128(_mm_srli_epi16(x, 4), nib);
        __m128i e0 = _mm_unpacklo_epi8(l, h), e1 = _mm_unpackhi_epi8(l, h);   /* elements 0-15, 16-31 */
        __m256i v0 = lookup(lo, hi, e0), v1 = lookup(lo, hi, _mm_srli_si128(e0, 8));
        __m256i v2 = lookup(lo, hi, e1), v3 = lookup(lo, hi, _mm_srli_si128(e1, 8));
        uint8_t *o = out + 8 * b;
        if (stream) {
            _mm256_stream_si256((__m256i *)(void *)o, v0);
            _mm256_stream_si256((__m256i *)(void *)(o + 32), v1);
            _mm256_stream_si256((__m256i *)(void *)(o + 64), v2);
            _mm256_stream_si256((__m256i *)(void *)(o + 96), v3);
        } else {
            _mm256_storeu_si256((__m256i *)(void *)o, v0);
            _mm256_storeu_si256((__m256i *)(void *)(o + 32), v1);
            _mm256_storeu_si256((__m256i *)(void *)(o + 64), v2);
            _mm256_storeu_si256((__m256i *)(void *)(o + 96), v3);
        }
    }
    if (stream) _mm_sfence();
    return b;
}

uint64_t nnar_unpack4_avx2(const uint8_t *in, uint64_t b, uint64_t nbytes, const uint32_t table[16], uint8_t *out)
{
    int stream = (nbytes - b) * 8 >= NNAR_STREAM_MIN && ((uintptr_t)(out + 8 * b) & 31) == 0;
    return gather(in, b, nbytes, table, out, stream);
}
#else
uint64_t nnar_unpack4_avx2(const uint8_t *in, uint64_t b, uint64_t nbytes, const uint32_t table[16], uint8_t *out)
{
    (void)in; (void)nbytes; (void)table; (void)out;
    return b;
}
#endif
