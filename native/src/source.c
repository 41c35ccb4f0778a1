/* Byte sources: memory (read in place), files (io_stdio.c) and streams (a read callback,
 * read strictly in order, bodies in bounded chunks so a declared length costs only what the
 * stream really holds). */
#include "internal.h"

static nnar_status mem_read_at(nnar_ctx *ctx, nnar_source *src, uint64_t offset, void *buf, size_t size,
                               size_t *got)
{
    (void)ctx;
    *got = 0;
    if (offset >= src->size) return NNAR_OK;
    *got = (size_t)(src->size - offset < size ? src->size - offset : size);
    memcpy(buf, src->mem + offset, *got);
    return NNAR_OK;
}

static nnar_status stream_read_at(nnar_ctx *ctx, nnar_source *src, uint64_t offset, void *buf, size_t size,
                                  size_t *got)
{
    uint8_t *p = (uint8_t *)buf;
    *got = 0;
    if (offset != src->pos)
        return nnar_fail(ctx, NNAR_INVALID_ARGUMENT, "stream: expected a read at offset %llu, found one at %llu",
                         (unsigned long long)src->pos, (unsigned long long)offset);
    while (*got < size) {
        long long k = src->read(src->read_user, p + *got, size - *got);
        if (k < 0) return nnar_fail(ctx, NNAR_IO_ERROR, "stream: the read callback failed at offset %llu",
                                    (unsigned long long)(src->pos + *got));
        if (k == 0) break;
        *got += (size_t)k;
    }
    src->pos += *got;
    return NNAR_OK;
}

nnar_status nnar_source_memory(nnar_source *src, const void *data, size_t size)
{
    memset(src, 0, sizeof *src);
    src->mem = (const uint8_t *)data;
    src->size = size;
    src->read_at = mem_read_at;
    return NNAR_OK;
}

nnar_status nnar_source_stream(nnar_source *src, nnar_read_fn read, void *user)
{
    memset(src, 0, sizeof *src);
    src->size = UINT64_MAX;
    src->read = read;
    src->read_user = user;
    src->read_at = stream_read_at;
    return NNAR_OK;
}

#define CHUNK (1u << 20)

nnar_status nnar_read_bytes(nnar_ctx *ctx, nnar_source *src, uint64_t offset, uint64_t size,
                            const uint8_t **out, uint8_t **owned, const char *what)
{
    uint8_t *buf = NULL;
    size_t have = 0, cap = 0;
    *out = NULL;
    *owned = NULL;
    if (src->size != UINT64_MAX && (offset > src->size || size > src->size - offset))
        return nnar_fail(ctx, NNAR_TRUNCATED, "%s: expected %llu bytes at offset %llu, found %llu", what,
                         (unsigned long long)size, (unsigned long long)offset,
                         (unsigned long long)(offset > src->size ? 0 : src->size - offset));
    if (src->mem) { *out = src->mem + offset; return NNAR_OK; }
    if (size > (uint64_t)SIZE_MAX - 1) return nnar_fail(ctx, NNAR_LIMIT_EXCEEDED, "%s: %llu bytes do not fit in memory", what,
                                                       (unsigned long long)size);
    /* a stream may hold less than it declares: grow the buffer as bytes arrive */
    cap = src->size == UINT64_MAX && size > CHUNK ? CHUNK : (size_t)size;
    buf = (uint8_t *)nnar_alloc(ctx, cap);
    if (!buf) return NNAR_OUT_OF_MEMORY;
    while (have < size) {
        size_t want, got = 0;
        nnar_status s;
        if (have == cap) {
            size_t ncap = cap * 2 < size ? cap * 2 : (size_t)size;
            uint8_t *nb = (uint8_t *)nnar_alloc(ctx, ncap);
            if (!nb) { nnar_free(ctx, buf); return NNAR_OUT_OF_MEMORY; }
            memcpy(nb, buf, have);
            nnar_free(ctx, buf);
            buf = nb;
            cap = ncap;
        }
        want = cap - have;
        s = src->read_at(ctx, src, offset + have, buf + have, want, &got);
        if (s != NNAR_OK) { nnar_free(ctx, buf); return s; }
        have += got;
        if (got < want) break;
    }
    if (have < size) {
        nnar_free(ctx, buf);
        return nnar_fail(ctx, NNAR_TRUNCATED, "%s: expected %llu bytes at offset %llu, found %zu", what,
                         (unsigned long long)size, (unsigned long long)offset, have);
    }
    *out = buf;
    *owned = buf;
    return NNAR_OK;
}

nnar_status nnar_source_at_end(nnar_ctx *ctx, nnar_source *src, uint64_t offset, int *at_end)
{
    uint8_t b;
    size_t got = 0;
    if (src->size != UINT64_MAX) { *at_end = offset >= src->size; return NNAR_OK; }
    NNAR_TRY(src->read_at(ctx, src, offset, &b, 1, &got));
    *at_end = got == 0;
    return NNAR_OK;
}
