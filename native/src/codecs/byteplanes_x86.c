/* nnar.byteplanes' interleave with AVX2, called only when the handle's CPU features (cpu.c)
 * include it: 32 elements of 2 or 4 bytes at a time, the planes' bytes unpacked into elements
 * and (float dtypes) rotated right by one bit in the same registers. A large output (beyond
 * the caches) is written with non-temporal stores from its first 32-byte boundary: no read
 * of each destination line before it is written, as memcpy does for large copies. The
 * elements before that boundary and past the last multiple of 32, and every other case, are
 * byteplanes.c's portable code. */
#include "codecs.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NNAR_PORTABLE)
#include <immintrin.h>

#define LOAD(q) _mm256_loadu_si256((const __m256i *)(const void *)(q))
#define STORE(q, v) do { if (stream) _mm256_stream_si256((__m256i *)(void *)(q), v); \
                          else _mm256_storeu_si256((__m256i *)(void *)(q), v); } while (0)

__attribute__((target("avx2")))
static uint64_t interleave4(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3, uint64_t i,
                            uint64_t n, int rotate, uint8_t *out, int stream)
{
    for (; i + 32 <= n; i += 32, out += 128) {
        __m256i b0 = LOAD(p0 + i), b1 = LOAD(p1 + i), b2 = LOAD(p2 + i), b3 = LOAD(p3 + i);
        __m256i lo01 = _mm256_unpacklo_epi8(b0, b1), hi01 = _mm256_unpackhi_epi8(b0, b1);
        __m256i lo23 = _mm256_unpacklo_epi8(b2, b3), hi23 = _mm256_unpackhi_epi8(b2, b3);
        /* per 128-bit lane: elements 0-3, 4-7, 8-11, 12-15 of the lane's 16 */
        __m256i w0 = _mm256_unpacklo_epi16(lo01, lo23), w1 = _mm256_unpackhi_epi16(lo01, lo23);
        __m256i w2 = _mm256_unpacklo_epi16(hi01, hi23), w3 = _mm256_unpackhi_epi16(hi01, hi23);
        if (rotate) {
            w0 = _mm256_or_si256(_mm256_srli_epi32(w0, 1), _mm256_slli_epi32(w0, 31));
            w1 = _mm256_or_si256(_mm256_srli_epi32(w1, 1), _mm256_slli_epi32(w1, 31));
            w2 = _mm256_or_si256(_mm256_srli_epi32(w2, 1), _mm256_slli_epi32(w2, 31));
            w3 = _mm256_or_si256(_mm256_srli_epi32(w3, 1), _mm256_slli_epi32(w3, 31));
        }
        STORE(out, _mm256_permute2x128_si256(w0, w1, 0x20));
        STORE(out + 32, _mm256_permute2x128_si256(w2, w3, 0x20));
        STORE(out + 64, _mm256_permute2x128_si256(w0, w1, 0x31));
        STORE(out + 96, _mm256_permute2x128_si256(w2, w3, 0x31));
    }
    return i;
}

__attribute__((target("avx2")))
static uint64_t interleave2(const uint8_t *p0, const uint8_t *p1, uint64_t i, uint64_t n, int rotate, uint8_t *out,
                            int stream)
{
    for (; i + 32 <= n; i += 32, out += 64) {
        __m256i b0 = LOAD(p0 + i), b1 = LOAD(p1 + i);
        __m256i lo = _mm256_unpacklo_epi8(b0, b1), hi = _mm256_unpackhi_epi8(b0, b1);
        if (rotate) {
            lo = _mm256_or_si256(_mm256_srli_epi16(lo, 1), _mm256_slli_epi16(lo, 15));
            hi = _mm256_or_si256(_mm256_srli_epi16(hi, 1), _mm256_slli_epi16(hi, 15));
        }
        STORE(out, _mm256_permute2x128_si256(lo, hi, 0x20));
        STORE(out + 32, _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    return i;
}

uint64_t nnar_byteplanes_avx2(const nnar_stream *s, size_t w, int rotate, uint64_t i, uint64_t n, uint8_t *out)
{
    int stream = n * w >= NNAR_STREAM_MIN && ((uintptr_t)(out + w * i) & 31) == 0;
    if (w == 4) i = interleave4(s[0].data, s[1].data, s[2].data, s[3].data, i, n, rotate, out + 4 * i, stream);
    else if (w == 2) i = interleave2(s[0].data, s[1].data, i, n, rotate, out + 2 * i, stream);
    if (stream) _mm_sfence();   /* the streamed stores ordered before what follows */
    return i;
}
#else
uint64_t nnar_byteplanes_avx2(const nnar_stream *s, size_t w, int rotate, uint64_t i, uint64_t n, uint8_t *out)
{
    (void)s; (void)w; (void)rotate; (void)n; (void)out;
    return i;
}
#endif
