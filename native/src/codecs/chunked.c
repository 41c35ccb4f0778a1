/* nnar.chunked (spec/codecs/chunked.md, since 1.5): a stream cut into chunks of chunk_bytes,
 * each encoded on its own by a nested bytes->bytes stage, behind a table of u64 length and u64
 * stored sizes. One thread: the chunks are decoded in order, each straight into its place in
 * the output. The table is walked where it lies (no per-chunk allocation), so a hostile table
 * of millions of chunks costs nothing beyond its own bytes. */
#include "codecs.h"
#include "../writer.h"

#define MIN_CHUNK 4096
#define MAX_CHUNK (1 << 30)
#define HEADER 8

static const char *const no_keys[] = {NULL};
static const char *const keys[] = {"chunk_bytes", "chunk", NULL};

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void wr64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Decoding step 1: every codec-data fault of the outer config first, then the nested codec's
 * id (unsupported-codec), its kind, and only then its config. */
static nnar_status config(nnar_ctx *ctx, nnar_stage *st)
{
    const mp_doc *doc = st->doc;
    uint32_t chunk, codec;
    const nnar_codec *inner;
    int64_t c;
    NNAR_TRY(nnar_config_keys(ctx, st, keys, no_keys));
    NNAR_TRY(nnar_config_int(ctx, st, st->config, "chunk_bytes", MIN_CHUNK, MAX_CHUNK, &c));
    st->chunk_bytes = (uint64_t)c;
    chunk = mp_get(doc, st->config, "chunk");
    if (doc->nodes[chunk].type != MP_MAP || doc->nodes[chunk].len != 2 || mp_get(doc, chunk, "codec") == MP_NONE ||
        mp_get(doc, chunk, "config") == MP_NONE)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.chunked: chunk: expected a map with exactly the keys codec and config");
    codec = mp_get(doc, chunk, "codec");
    inner = nnar_codec_find(&doc->nodes[codec]);
    if (!inner) {
        const mp_node *n = &doc->nodes[codec];
        return nnar_fail(ctx, NNAR_UNSUPPORTED_CODEC, "nnar.chunked: chunk: unsupported codec '%.*s' (a newer nnar wrote it)",
                         n->type == MP_STR ? (int)(n->len > 60 ? 60 : n->len) : 1, n->type == MP_STR ? (const char *)n->v.p : "?");
    }
    if (inner->kind != NNAR_BYTES_BYTES || inner == &nnar_codec_chunked)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.chunked: chunk: expected a bytes-bytes codec other than nnar.chunked, "
                         "found %s", inner->id);
    memset(st->inner, 0, sizeof *st->inner);
    st->inner->codec = inner;
    st->inner->doc = doc;
    st->inner->config = mp_get(doc, chunk, "config");
    st->inner->params = MP_NONE;   /* run with params {} */
    st->inner->strict = st->strict;
    if (doc->nodes[st->inner->config].type != MP_MAP)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: expected a config map, found another type", inner->id);
    return inner->config(ctx, st->inner);
}

static uint64_t add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

static uint64_t mul_sat(uint64_t a, uint64_t b) { return a && b > UINT64_MAX / a ? UINT64_MAX : a * b; }

/* Encoded bound: 8 + 8k + (k-1) B(c) + B(last); 8 for an empty stream. Saturating: the caller
 * clamps it to max_tensor_bytes. */
static uint64_t bound(const nnar_stage *st, uint64_t n)
{
    const nnar_stage *in = st->inner;
    uint64_t c = st->chunk_bytes, k = n / c + (n % c != 0), b;
    if (k == 0) return HEADER;
    b = add_sat(HEADER, mul_sat(8, k));
    b = add_sat(b, mul_sat(k - 1, in->codec->bound(in, c)));
    return add_sat(b, in->codec->bound(in, n - (k - 1) * c));
}

/* Steps 2 and 3: n and k, with the sizes adding up to exactly the bytes after the table. */
static nnar_status layout(nnar_ctx *ctx, uint64_t c, const uint8_t *in, size_t in_size, uint64_t max_out, uint64_t *n,
                          uint64_t *k)
{
    uint64_t left, i;
    if (in_size < HEADER)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.chunked: expected at least 8 stored bytes, found %zu", in_size);
    *n = rd64(in);
    if (*n > max_out)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.chunked: length %llu: expected at most %llu decoded bytes",
                         (unsigned long long)*n, (unsigned long long)max_out);
    *k = *n / c + (*n % c != 0);   /* below 2^52: 8k cannot wrap */
    if ((in_size - HEADER) / 8 < *k)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.chunked: %llu chunks need a %llu-byte table, found %zu stored bytes",
                         (unsigned long long)*k, (unsigned long long)(HEADER + 8 * *k), in_size);
    left = in_size - HEADER - 8 * *k;
    for (i = 0; i < *k; i++) {
        uint64_t size = rd64(in + HEADER + 8 * i);
        if (size > left) break;
        left -= size;
    }
    if (i < *k || left)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.chunked: chunk sizes %s the %llu stored bytes after the table",
                         i < *k ? "exceed" : "do not fill", (unsigned long long)(in_size - HEADER - 8 * *k));
    return NNAR_OK;
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint64_t max_out,
                          uint8_t **out, size_t *out_size)
{
    const nnar_stage *inner = st->inner;
    uint64_t c = st->chunk_bytes, n = 0, k = 0, i, at;
    uint8_t *buf;
    *out = NULL;
    *out_size = 0;
    NNAR_TRY(layout(ctx, c, in, in_size, max_out, &n, &k));
    buf = (uint8_t *)nnar_alloc(ctx, n ? (size_t)n : 1);
    if (!buf) return NNAR_OUT_OF_MEMORY;
    for (i = 0, at = HEADER + 8 * k; i < k; i++) {
        uint64_t size = rd64(in + HEADER + 8 * i), ni = n - i * c < c ? n - i * c : c;
        uint8_t *dst = buf + i * c;   /* the nested codec decodes into place */
        size_t got = 0;
        nnar_status s = inner->codec->bb_decode(ctx, inner, in + at, (size_t)size, ni, &dst, &got);
        if (s == NNAR_OK && got != ni)
            s = nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.chunked: chunk %llu decoded to %zu bytes, expected %llu",
                          (unsigned long long)i, got, (unsigned long long)ni);
        if (s != NNAR_OK) { nnar_free(ctx, buf); return s; }
        at += size;
    }
    *out = buf;
    *out_size = (size_t)n;
    return NNAR_OK;
}

/* Encoding: each chunk by the nested stage, in order, appended after a table filled as they
 * come. The buffer starts at the table plus the stream (and a margin), so zstd's chunks seldom
 * make it grow. */
static nnar_status encode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint8_t **out,
                          size_t *out_size)
{
    const nnar_stage *inner = st->inner;
    uint64_t c = st->chunk_bytes, k = in_size / c + (in_size % c != 0), i;
    size_t table = HEADER + 8 * (size_t)k;
    nnar_buf b = {NULL, 0, 0};
    nnar_status s;
    *out = NULL;
    *out_size = 0;
    b.p = (uint8_t *)nnar_alloc(ctx, table + in_size + in_size / 128 + 1024);
    if (!b.p) return NNAR_OUT_OF_MEMORY;
    b.cap = table + in_size + in_size / 128 + 1024;
    b.len = table;
    wr64(b.p, in_size);
    for (i = 0; i < k; i++) {
        uint64_t ni = in_size - i * c < c ? in_size - i * c : c;
        uint8_t *part = NULL;
        size_t size = 0;
        s = inner->codec->bb_encode(ctx, inner, in + i * c, (size_t)ni, &part, &size);
        if (s == NNAR_OK) s = nnar_buf_put(ctx, &b, part, size);
        nnar_free(ctx, part);
        if (s != NNAR_OK) { nnar_free(ctx, b.p); return s; }
        wr64(b.p + HEADER + 8 * i, size);
    }
    *out = b.p;
    *out_size = b.len;
    return NNAR_OK;
}

const nnar_codec nnar_codec_chunked = {"nnar.chunked", NNAR_BYTES_BYTES, no_keys, config, NULL, NULL, NULL, NULL, NULL, bound, decode, encode};
