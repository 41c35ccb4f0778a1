/* Writing archives (writer.c): used by the patcher; not part of the public API. */
#ifndef NNAR_WRITER_H
#define NNAR_WRITER_H

#include "internal.h"

#define NNAR_DESCRIPTOR_ZSTD_MIN_BYTES 128   /* nnar compresses a descriptor from this size, */
#define NNAR_DESCRIPTOR_ZSTD_LEVEL 19        /* at this level, when that makes it smaller */

/* The output: counted, and with hash its SHA-256 taken, on its way to write (NULL: nowhere). */
typedef struct nnar_sink {
    nnar_ctx *ctx;
    nnar_write_fn write;
    void *user;
    uint64_t pos;
    int hash;
    nnar_sha256 sha;
} nnar_sink;
nnar_status nnar_sink_put(nnar_sink *s, const void *data, size_t size);

/* One segment's stored bytes; verbatim: no codecs (a lone verbatim segment is aligned). */
typedef struct nnar_out_segment {
    const uint8_t *data;
    size_t size;
    int verbatim;
} nnar_out_segment;

void nnar_preamble(uint8_t out[16], uint16_t minor);
/* The body's CRC-32 and length, padding included, for a body starting at body_offset. */
void nnar_body_layout(unsigned cpu, uint64_t body_offset, const nnar_out_segment *segs, uint32_t n, uint32_t *crc, uint64_t *length);
/* Frame, stored descriptor and body of one record at the sink's position (crc_prefix: the
 * preamble, for the first record). */
nnar_status nnar_write_record(nnar_sink *s, const uint8_t type[4], uint32_t flags, const uint8_t *desc, uint32_t desc_len,
                              const nnar_out_segment *segs, uint32_t n, uint32_t body_crc, uint64_t body_length,
                              const uint8_t *crc_prefix);
/* A descriptor as stored: zstd-compressed (*flag NNAR_FLAG_DESCRIPTOR_ZSTD, *stored allocated)
 * when that is smaller, else *stored NULL (store plain as is). */
nnar_status nnar_store_descriptor(nnar_ctx *ctx, const uint8_t *plain, size_t n, uint8_t **stored, size_t *stored_size,
                                  uint32_t *flag);
void nnar_trailer(uint8_t out[32], uint64_t index_offset, uint64_t archive_length);

/* A growing buffer, and msgpack in its shortest forms (kind: MP_ARRAY, MP_MAP, MP_STR, MP_BIN). */
typedef struct nnar_buf {
    uint8_t *p;
    size_t len, cap;
} nnar_buf;
nnar_status nnar_buf_put(nnar_ctx *ctx, nnar_buf *b, const void *data, size_t n);
nnar_status nnar_mp_uint(nnar_ctx *ctx, nnar_buf *b, uint64_t v);
nnar_status nnar_mp_head(nnar_ctx *ctx, nnar_buf *b, int kind, uint32_t n);
nnar_status nnar_mp_bytes(nnar_ctx *ctx, nnar_buf *b, int kind, const void *p, uint32_t n);

/* io_stdio.c: the output file. */
int nnar_io_kind(const char *path);                   /* 0 absent, 1 a file, 2 a directory */
int nnar_io_same_file(const char *a, const char *b);
nnar_status nnar_io_create_temp(nnar_ctx *ctx, const char *path, void **file, char *tmp, size_t tmp_size);
nnar_status nnar_io_write(nnar_ctx *ctx, void *file, const void *data, size_t size);
nnar_status nnar_io_commit(nnar_ctx *ctx, void *file, const char *tmp, const char *path, int force);
void nnar_io_discard(void *file, const char *tmp);

#endif
