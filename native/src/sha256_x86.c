/* SHA-256 blocks with the x86 SHA extensions (SHA-NI), called only when the handle's CPU
 * features (cpu.c, found per handle: no global state) include them. Elsewhere (another CPU,
 * another compiler, NNAR_PORTABLE) it reports "not available" and sha256.c's portable code
 * runs. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NNAR_PORTABLE)
#include <immintrin.h>

__attribute__((target("sha,ssse3,sse4.1")))
static void blocks_ni(uint32_t h[8], const uint8_t *p, size_t n, const uint32_t *k)
{
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bll, 0x0405060700010203ll);
    __m128i s0, s1, tmp, msg, g[4], abef, cdgh;
    int j;
    tmp = _mm_loadu_si128((const __m128i *)(const void *)&h[0]);
    s1 = _mm_loadu_si128((const __m128i *)(const void *)&h[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);       /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);         /* EFGH */
    s0 = _mm_alignr_epi8(tmp, s1, 8);         /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);      /* CDGH */
    for (; n; n--, p += 64) {
        abef = s0;
        cdgh = s1;
        for (j = 0; j < 4; j++) g[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * j)), mask);
        for (j = 0; j < 16; j++) {
            msg = _mm_add_epi32(g[j & 3], _mm_loadu_si128((const __m128i *)(const void *)(k + 4 * j)));
            s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(msg, 0x0E));
            if (j < 12)
                g[j & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(g[j & 3], g[(j + 1) & 3]),
                                                              _mm_alignr_epi8(g[(j + 3) & 3], g[(j + 2) & 3], 4)),
                                                g[(j + 3) & 3]);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }
    tmp = _mm_shuffle_epi32(s0, 0x1B);        /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);         /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);      /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);         /* HGFE */
    _mm_storeu_si128((__m128i *)(void *)&h[0], s0);
    _mm_storeu_si128((__m128i *)(void *)&h[4], s1);
}

int nnar_sha256_blocks_fast(uint32_t h[8], const uint8_t *p, size_t n, const uint32_t *k)
{
    blocks_ni(h, p, n, k);
    return 1;
}
#else
int nnar_sha256_blocks_fast(uint32_t h[8], const uint8_t *p, size_t n, const uint32_t *k)
{
    (void)h; (void)p; (void)n; (void)k;
    return 0;
}
#endif
