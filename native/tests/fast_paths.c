/* The CPU-specific paths against the portable ones, on the library's internal functions: the
 * CRC-32 (carry-less multiply, and fused with a copy) and SHA-256 (SHA-NI) of buffers of every
 * length up to 4 KiB at every alignment up to 64, and of a few large ones, equal the portable
 * code's; so do the byte-plane interleave and the 4-bit codebook gather, on random streams,
 * into outputs at every alignment, small and large (non-temporal stores).
 * Prints "ok" and the features this CPU has (a path the CPU lacks is compared with itself).
 * Built against libnnar.a, as the tests build it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "../src/codecs/codecs.h"

static uint64_t rng = 88172645463325252ull;
static uint8_t next(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint8_t)(rng >> 24);
}

static int fails;
#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); if (++fails > 10) exit(1); } } while (0)

static void crc_and_sha(unsigned cpu, const uint8_t *buf, size_t off, size_t n, uint8_t *dst)
{
    uint32_t want = nnar_crc32(0x12345678u, buf + off, n), got, copied;
    nnar_sha256 a, b;
    uint8_t da[32], db[32];
    got = nnar_crc32_cpu(cpu, 0x12345678u, buf + off, n);
    memset(dst, 0xA5, n + 128);
    copied = nnar_crc32_copy(cpu, 0x12345678u, dst + (off * 7 % 64), buf + off, n);
    CHECK(got == want, "crc32 at offset %zu, %zu bytes: 0x%08x, portable 0x%08x", off, n, got, want);
    CHECK(copied == want && memcmp(dst + (off * 7 % 64), buf + off, n) == 0 && dst[(off * 7 % 64) + n] == 0xA5,
          "crc32_copy at offset %zu, %zu bytes: 0x%08x, portable 0x%08x", off, n, copied, want);
    nnar_sha256_init(&a, 0);
    nnar_sha256_init(&b, cpu);
    nnar_sha256_update(&a, buf + off, n);
    nnar_sha256_update(&b, buf + off, n / 3);
    nnar_sha256_update(&b, buf + off + n / 3, n - n / 3);
    nnar_sha256_final(&a, da);
    nnar_sha256_final(&b, db);
    CHECK(memcmp(da, db, 32) == 0, "sha256 at offset %zu, %zu bytes differs", off, n);
}

static void codecs(unsigned cpu, nnar_ctx *ctx, size_t n, size_t shift)
{
    static const nnar_dtype types[] = {NNAR_FLOAT32, NNAR_INT32, NNAR_FLOAT16, NNAR_BFLOAT16,
                                       NNAR_UINT16, NNAR_FLOAT64, NNAR_INT64};
    uint8_t *planes = (uint8_t *)malloc(8 * n + 1), *a = (uint8_t *)malloc(8 * n + 1), *b0 = (uint8_t *)malloc(8 * n + 64);
    uint8_t *b = b0 + shift;   /* the output at any alignment */
    nnar_stream s[8];
    size_t t, k, w;
    for (k = 0; k < 8 * n; k++) planes[k] = next();
    for (t = 0; t < sizeof types / sizeof types[0]; t++) {
        nnar_spec spec;
        spec.dtype = types[t];
        spec.size = n;
        w = nnar_dtype_size(types[t]);
        for (k = 0; k < w; k++) { s[k].data = planes + k * n; s[k].size = n; }
        ctx->cpu = 0;
        CHECK(nnar_codec_byteplanes.ab_decode(ctx, NULL, spec, s, a) == NNAR_OK, "byteplanes (portable) failed");
        ctx->cpu = cpu;
        CHECK(nnar_codec_byteplanes.ab_decode(ctx, NULL, spec, s, b) == NNAR_OK, "byteplanes failed");
        CHECK(memcmp(a, b, w * n) == 0, "byteplanes of %zu %s elements differ from the portable code's", n,
              nnar_dtype_name(types[t]));
    }
    {   /* 4-bit indices into a 16-entry table of float32, and of float64 */
        nnar_stream ix;
        uint8_t table[128];
        for (k = 0; k < sizeof table; k++) table[k] = next();
        ix.data = planes;
        ix.size = (n + 1) / 2;
        if (n % 2) planes[n / 2] &= 15;   /* the unused slot is zero */
        for (w = 4; w <= 8; w += 4) {
            ctx->cpu = 0;
            CHECK(nnar_unpack(ctx, "test", &ix, n, 4, 15, table, w, a) == NNAR_OK, "unpack (portable) failed");
            ctx->cpu = cpu;
            CHECK(nnar_unpack(ctx, "test", &ix, n, 4, 15, table, w, b) == NNAR_OK, "unpack failed");
            CHECK(memcmp(a, b, w * n) == 0, "unpack of %zu %zu-byte entries differs from the portable code's", n, w);
        }
    }
    free(planes); free(a); free(b0);
}

int main(void)
{
    unsigned cpu = nnar_cpu_features();
    size_t big = (size_t)5 << 20, off, n, i;
    uint8_t *buf = (uint8_t *)malloc(big + 64), *dst = (uint8_t *)malloc(big + 256);
    nnar_ctx ctx;
    if (!buf || !dst) return 2;
    for (i = 0; i < big + 64; i++) buf[i] = next();
    for (n = 0; n <= 4096; n++) crc_and_sha(cpu, buf, n % 64, n, dst);
    for (off = 0; off < 64; off++) crc_and_sha(cpu, buf, off, 1000 + off * 17, dst);
    crc_and_sha(cpu, buf, 3, big, dst);
    crc_and_sha(cpu, buf, 0, big - 5, dst);
    {   /* the check value of FORMAT.md §1 */
        static const char check[] = "123456789";
        CHECK(nnar_crc32(0, check, 9) == 0xCBF43926u, "crc32 check value");
    }
    nnar_ctx_init(&ctx, NULL, NULL);
    for (n = 0; n < 200; n++) codecs(cpu, &ctx, n, n % 37);
    for (off = 0; off < 40; off += 4) codecs(cpu, &ctx, 100003, off);
    codecs(cpu, &ctx, 100003, 1);
    /* outputs past NNAR_STREAM_MIN: non-temporal stores */
    codecs(cpu, &ctx, (1 << 20) + 4099, 0);
    codecs(cpu, &ctx, (1 << 20) + 4099, 4);
    codecs(cpu, &ctx, (1 << 20) + 4099, 3);
    nnar_ctx_free(&ctx);
    free(buf); free(dst);
    if (fails) return 1;
    printf("ok pclmul=%u sha=%u avx2=%u\n", !!(cpu & NNAR_CPU_PCLMUL), !!(cpu & NNAR_CPU_SHA), !!(cpu & NNAR_CPU_AVX2));
    return 0;
}
