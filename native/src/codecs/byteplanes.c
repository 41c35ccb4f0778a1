/* nnar.byteplanes (spec/codecs/byteplanes.md): byte k of every element in stream p{k}; float
 * elements rotated left by one bit first, so the exponent fills the top plane. */
#include <stdio.h>

#include "codecs.h"

static const char *const no_keys[] = {NULL};

static nnar_status config(nnar_ctx *ctx, nnar_stage *st) { return nnar_config_keys(ctx, st, no_keys, no_keys); }

static nnar_status names(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req, uint32_t *n)
{
    size_t w = nnar_dtype_size(spec.dtype), k;
    (void)ctx; (void)st;
    for (k = 0; k < w; k++) sprintf(req[k].name, "p%u", (unsigned)k);
    *n = (uint32_t)w;
    return NNAR_OK;
}

static nnar_status lengths(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req)
{
    size_t w = nnar_dtype_size(spec.dtype), k;
    (void)ctx; (void)st;
    for (k = 0; k < w; k++) { req[k].length = spec.size; req[k].exact = 1; }
    return NNAR_OK;
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, const nnar_stream *s, uint8_t *out)
{
    size_t w = nnar_dtype_size(spec.dtype), k;
    uint64_t i = 0, n = spec.size;
    int rotate = nnar_dtype_is_float(spec.dtype);
    const uint16_t probe = 1;
    uint8_t little;
    (void)st;
    memcpy(&little, &probe, 1);
    if (w == 4 && rotate && little) {   /* one store per element */
        const uint8_t *p0 = s[0].data, *p1 = s[1].data, *p2 = s[2].data, *p3 = s[3].data;
        int fast = (ctx->cpu & NNAR_CPU_AVX2) != 0;
        uint64_t head = fast ? (uint64_t)((32 - ((uintptr_t)out & 31)) & 31) / 4 : 0;
        for (; i < n; i++) {
            uint32_t u;
            if (fast && i == head) {   /* from the first 32-byte boundary (when out is 4-aligned) */
                i = nnar_byteplanes_avx2(s, w, rotate, i, n, out);
                fast = 0;
                if (i >= n) break;
            }
            u = (uint32_t)p0[i] | (uint32_t)p1[i] << 8 | (uint32_t)p2[i] << 16 | (uint32_t)p3[i] << 24;
            u = (u >> 1) | (u << 31);
            memcpy(out + 4 * i, &u, 4);
        }
        return NNAR_OK;
    }
    if ((ctx->cpu & NNAR_CPU_AVX2) && (w == 2 || w == 4)) i = nnar_byteplanes_avx2(s, w, rotate, 0, n, out);
    for (; i < n; i++) {
        uint64_t u = 0;
        for (k = 0; k < w; k++) u |= (uint64_t)s[k].data[i] << (8 * k);
        if (rotate) u = (u >> 1) | ((u & 1) << (8 * w - 1));
        for (k = 0; k < w; k++) out[w * i + k] = (uint8_t)(u >> (8 * k));
    }
    return NNAR_OK;
}

const nnar_codec nnar_codec_byteplanes = {"nnar.byteplanes", NNAR_ARRAY_BYTES, no_keys, config, NULL, NULL, names, lengths, decode, NULL, NULL, NULL};
