/* The context (allocator, limits, error), dtypes, names and sets of names. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include <zstd.h>

static void *default_malloc(void *user, size_t size) { (void)user; return malloc(size ? size : 1); }
static void default_free(void *user, void *p) { (void)user; free(p); }

void nnar_limits_default(nnar_limits *l)
{
    l->max_descriptor_bytes = 64ull << 20;
    l->max_descriptor_objects = 1ull << 22;
    l->max_descriptor_depth = 32;
    l->max_tensors = 1000000;
    l->max_rank = 32;
    l->max_tensor_bytes = 16ull << 30;
    l->max_total_bytes = 256ull << 30;
    l->max_stages = 16;
    l->max_segments = 256;
}

void nnar_ctx_init(nnar_ctx *ctx, const nnar_options *o, nnar_error *err)
{
    memset(ctx, 0, sizeof *ctx);
    if (o && o->allocator) ctx->alloc = *o->allocator;
    else { ctx->alloc.malloc = default_malloc; ctx->alloc.free = default_free; ctx->alloc.user = NULL; }
    if (o && o->limits) ctx->limits = *o->limits;
    else nnar_limits_default(&ctx->limits);
    {
        /* where size_t is narrower than 64 bits, no size above what it addresses can be
         * allocated: clamp the limits, so such a declaration is limit-exceeded, checked before
         * any cast to size_t could wrap */
        uint64_t addressable = (uint64_t)(SIZE_MAX / 2), slack = 64 * ctx->limits.max_segments;
        if (slack > addressable / 2) slack = addressable / 2;
        if (ctx->limits.max_tensor_bytes > addressable - slack) ctx->limits.max_tensor_bytes = addressable - slack;
        if (ctx->limits.max_descriptor_bytes > addressable) ctx->limits.max_descriptor_bytes = addressable;
        if (ctx->limits.max_total_bytes > UINT64_MAX / 2) ctx->limits.max_total_bytes = UINT64_MAX / 2;
    }
    ctx->err = err;
    ctx->strict = 1;
    ctx->cpu = nnar_cpu_features();
    if (err) { err->status = NNAR_OK; err->message[0] = 0; }
}

/* Every block carries its capacity in a header of 16 bytes (alignment kept), so that a large
 * block freed can wait in the pool for a request of about its size. */
#define HEADER 16

static void release(nnar_ctx *ctx, void *block) { ctx->alloc.free(ctx->alloc.user, block); }

static size_t capacity(const void *p)
{
    size_t cap;
    memcpy(&cap, (const unsigned char *)p - HEADER, sizeof cap);
    return cap;
}

void nnar_ctx_trim(nnar_ctx *ctx)
{
    int i;
    for (i = 0; i < NNAR_POOL; i++)
        if (ctx->pool[i]) { release(ctx, (unsigned char *)ctx->pool[i] - HEADER); ctx->pool[i] = NULL; }
}

void nnar_ctx_free(nnar_ctx *ctx)
{
    if (ctx->zstd) ZSTD_freeDCtx(ctx->zstd);
    if (ctx->zstd_c) ZSTD_freeCCtx(ctx->zstd_c);
    ctx->zstd = NULL;
    ctx->zstd_c = NULL;
    nnar_ctx_trim(ctx);
}

void *nnar_alloc(nnar_ctx *ctx, size_t size)
{
    unsigned char *block;
    int i, best = -1;
    if (!size) size = 1;   /* an empty array still gets a valid pointer */
    if (size >= NNAR_POOL_MIN)   /* the smallest pooled block that fits, not more than twice the size */
        for (i = 0; i < NNAR_POOL; i++)
            if (ctx->pool[i] && capacity(ctx->pool[i]) >= size && capacity(ctx->pool[i]) / 2 <= size &&
                (best < 0 || capacity(ctx->pool[i]) < capacity(ctx->pool[best])))
                best = i;
    if (best >= 0) {
        void *p = ctx->pool[best];
        ctx->pool[best] = NULL;
        return p;
    }
    if (size > SIZE_MAX - HEADER) block = NULL;
    else block = (unsigned char *)ctx->alloc.malloc(ctx->alloc.user, size + HEADER);
    if (!block) {
        nnar_fail(ctx, NNAR_OUT_OF_MEMORY, "out of memory: expected %zu bytes, found none", size);
        return NULL;
    }
    memcpy(block, &size, sizeof size);
    return block + HEADER;
}

void *nnar_alloc_zero(nnar_ctx *ctx, size_t size)
{
    void *p = nnar_alloc(ctx, size);
    if (p) memset(p, 0, size ? size : 1);
    return p;
}

void nnar_free(nnar_ctx *ctx, void *p)
{
    int i, smallest = -1;
    size_t cap;
    if (!p) return;
    cap = capacity(p);
    if (cap >= NNAR_POOL_MIN) {
        for (i = 0; i < NNAR_POOL; i++) {
            if (!ctx->pool[i]) { ctx->pool[i] = p; return; }
            if (smallest < 0 || capacity(ctx->pool[i]) < capacity(ctx->pool[smallest])) smallest = i;
        }
        if (capacity(ctx->pool[smallest]) < cap) {   /* keep the larger */
            void *out = ctx->pool[smallest];
            ctx->pool[smallest] = p;
            p = out;
        }
    }
    release(ctx, (unsigned char *)p - HEADER);
}

nnar_status nnar_fail(nnar_ctx *ctx, nnar_status status, const char *fmt, ...)
{
    if (ctx->err) {
        size_t n = 0;
        va_list ap;
        ctx->err->status = status;
        if (ctx->where[0]) {
            int k = snprintf(ctx->err->message, sizeof ctx->err->message, "%s: ", ctx->where);
            n = k > 0 ? (size_t)k : 0;
            if (n >= sizeof ctx->err->message) n = sizeof ctx->err->message - 1;
        }
        va_start(ap, fmt);
        vsnprintf(ctx->err->message + n, sizeof ctx->err->message - n, fmt, ap);
        va_end(ap);
    }
    return status;
}

void nnar_set_where(nnar_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->where, sizeof ctx->where, fmt, ap);
    va_end(ap);
}

nnar_status nnar_check_limit(nnar_ctx *ctx, const char *what, uint64_t value, uint64_t limit,
                             const char *limit_name)
{
    if (value > limit)
        return nnar_fail(ctx, NNAR_LIMIT_EXCEEDED, "%s: expected at most %llu (%s), found %llu", what,
                         (unsigned long long)limit, limit_name, (unsigned long long)value);
    return NNAR_OK;
}

const char *nnar_status_code(nnar_status s)
{
    switch (s) {
    case NNAR_OK: return "ok";
    case NNAR_BAD_MAGIC: return "bad-magic";
    case NNAR_UNSUPPORTED_VERSION: return "unsupported-version";
    case NNAR_RESERVED_NONZERO: return "reserved-nonzero";
    case NNAR_TRUNCATED: return "truncated";
    case NNAR_CHECKSUM: return "checksum";
    case NNAR_BAD_DESCRIPTOR: return "bad-descriptor";
    case NNAR_BAD_LAYOUT: return "bad-layout";
    case NNAR_UNSUPPORTED_RECORD: return "unsupported-record";
    case NNAR_UNSUPPORTED_CODEC: return "unsupported-codec";
    case NNAR_UNSUPPORTED_DTYPE: return "unsupported-dtype";
    case NNAR_CODEC_DATA: return "codec-data";
    case NNAR_DIGEST: return "digest";
    case NNAR_LIMIT_EXCEEDED: return "limit-exceeded";
    case NNAR_WRONG_BASE: return "wrong-base";
    case NNAR_IO_ERROR: return "io-error";
    case NNAR_OUT_OF_MEMORY: return "out-of-memory";
    case NNAR_NOT_FOUND: return "not-found";
    case NNAR_OUTPUT_EXISTS: return "output-exists";
    case NNAR_INVALID_ARGUMENT: return "invalid-argument";
    case NNAR_STOPPED: return "stopped";
    }
    return "unknown";
}

/* ---- dtypes (§5.2.2) ---------------------------------------------------------------------- */

static const char *const dtype_names[] = {
    "?", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"
};
static const unsigned char dtype_sizes[] = {0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8, 1, 1};

const char *nnar_dtype_name(nnar_dtype d)
{
    return (unsigned)d < sizeof dtype_sizes ? dtype_names[d] : "?";
}

size_t nnar_dtype_size(nnar_dtype d)
{
    return (unsigned)d < sizeof dtype_sizes ? dtype_sizes[d] : 0;
}

nnar_dtype nnar_dtype_from(const uint8_t *s, size_t n)
{
    unsigned i;
    for (i = 1; i < sizeof dtype_sizes; i++)
        if (strlen(dtype_names[i]) == n && memcmp(dtype_names[i], s, n) == 0) return (nnar_dtype)i;
    return NNAR_DTYPE_UNKNOWN;
}

int nnar_dtype_is_float(nnar_dtype d)
{
    return d == NNAR_FLOAT16 || d == NNAR_BFLOAT16 || d == NNAR_FLOAT32 || d == NNAR_FLOAT64;
}

/* ---- UTF-8 and names ---------------------------------------------------------------------- */

/* RFC 3629: no overlong form, no surrogate, nothing above U+10FFFF. */
int nnar_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            uint8_t lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
            if (i + 2 >= n || s[i + 1] < lo || s[i + 1] > hi || (s[i + 2] & 0xC0) != 0x80) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            uint8_t lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
            if (i + 3 >= n || s[i + 1] < lo || s[i + 1] > hi || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

nnar_status nnar_check_name(nnar_ctx *ctx, const mp_node *n)
{
    uint32_t i;
    if (n->type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "tensor name: expected a string, found another type");
    if (n->len < 1 || n->len > NNAR_MAX_NAME_BYTES)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "tensor name: expected 1 to %d bytes of UTF-8, found %u",
                         NNAR_MAX_NAME_BYTES, (unsigned)n->len);
    /* str is valid UTF-8 (checked when parsed): U+0000-U+001F and U+007F are single bytes;
     * U+0080-U+009F are C2 80 .. C2 9F. */
    for (i = 0; i < n->len; i++) {
        uint8_t c = n->v.p[i];
        if (c < 0x20 || c == 0x7F || (c == 0xC2 && i + 1 < n->len && n->v.p[i + 1] <= 0x9F))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "tensor name: expected no control characters, found one at byte %u",
                             (unsigned)i);
    }
    return NNAR_OK;
}

/* ---- a set of names (open addressing, FNV-1a) ---------------------------------------------- */

static uint64_t fnv(const uint8_t *p, uint32_t n)
{
    uint64_t h = 1469598103934665603ull;
    uint32_t i;
    for (i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ull; }
    return h;
}

void nnar_nameset_init(nnar_nameset *s) { memset(s, 0, sizeof *s); }

void nnar_nameset_free(nnar_ctx *ctx, nnar_nameset *s)
{
    nnar_free(ctx, s->keys);
    nnar_free(ctx, s->lens);
    memset(s, 0, sizeof *s);
}

static size_t slot_of(const nnar_nameset *s, const uint8_t *p, uint32_t len)
{
    size_t mask = s->cap - 1, i = (size_t)fnv(p, len) & mask;
    while (s->keys[i] && !(s->lens[i] == len && memcmp(s->keys[i], p, len) == 0)) i = (i + 1) & mask;
    return i;
}

int nnar_nameset_has(const nnar_nameset *s, const uint8_t *p, uint32_t len)
{
    if (!s->cap) return 0;
    return s->keys[slot_of(s, p, len)] != NULL;
}

int nnar_nameset_add(nnar_ctx *ctx, nnar_nameset *s, const uint8_t *p, uint32_t len)
{
    size_t i;
    if ((s->count + 1) * 2 > s->cap) {
        nnar_nameset grown;
        size_t k;
        grown.cap = s->cap ? s->cap * 2 : 64;
        grown.count = 0;
        grown.keys = (const uint8_t **)nnar_alloc_zero(ctx, grown.cap * sizeof *grown.keys);
        grown.lens = (uint32_t *)nnar_alloc_zero(ctx, grown.cap * sizeof *grown.lens);
        if (!grown.keys || !grown.lens) {
            nnar_free(ctx, grown.keys);
            nnar_free(ctx, grown.lens);
            return -1;
        }
        for (k = 0; k < s->cap; k++) {
            if (s->keys[k]) {
                size_t j = slot_of(&grown, s->keys[k], s->lens[k]);
                grown.keys[j] = s->keys[k];
                grown.lens[j] = s->lens[k];
                grown.count++;
            }
        }
        nnar_nameset_free(ctx, s);
        *s = grown;
    }
    i = slot_of(s, p, len);
    if (s->keys[i]) return 0;
    /* an empty name still needs a non-NULL key pointer */
    s->keys[i] = p ? p : (const uint8_t *)"";
    s->lens[i] = len;
    s->count++;
    return 1;
}

/* ---- bfloat16 / float16 helpers ------------------------------------------------------------ */

static float f32_of_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float nnar_bf16_to_f32(uint16_t bits) { return f32_of_bits((uint32_t)bits << 16); }

float nnar_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, u;
    if (exp == 0x1F) u = sign | 0x7F800000u | (mant << 13);
    else if (exp) u = sign | ((exp + 112) << 23) | (mant << 13);
    else if (!mant) u = sign;
    else {
        /* subnormal: normalise */
        int e = 113;
        while (!(mant & 0x400)) { mant <<= 1; e--; }
        u = sign | ((uint32_t)e << 23) | ((mant & 0x3FF) << 13);
    }
    return f32_of_bits(u);
}

void nnar_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) dst[i] = nnar_bf16_to_f32(src[i]);
}

void nnar_f16_to_f32_array(const uint16_t *src, float *dst, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) dst[i] = nnar_f16_to_f32(src[i]);
}
