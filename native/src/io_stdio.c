/* The one platform-specific module: reading a file at an offset, with C's stdio. Offsets
 * beyond LONG_MAX use fseeko where POSIX provides it. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "internal.h"

static int seek_to(FILE *f, uint64_t offset)
{
#if defined(_WIN32)
    return _fseeki64(f, (__int64)offset, SEEK_SET);
#else
    return fseeko(f, (off_t)offset, SEEK_SET);
#endif
}

static nnar_status file_read_at(nnar_ctx *ctx, nnar_source *src, uint64_t offset, void *buf, size_t size,
                                size_t *got)
{
    FILE *f = (FILE *)src->file;
    *got = 0;
    if (offset >= src->size) return NNAR_OK;
    if (seek_to(f, offset) != 0)
        return nnar_fail(ctx, NNAR_IO_ERROR, "seek to offset %llu failed: %s", (unsigned long long)offset, strerror(errno));
    *got = fread(buf, 1, size, f);
    if (*got < size && ferror(f))
        return nnar_fail(ctx, NNAR_IO_ERROR, "read at offset %llu failed: %s", (unsigned long long)offset, strerror(errno));
    return NNAR_OK;
}

nnar_status nnar_io_open(nnar_ctx *ctx, const char *path, nnar_source *src)
{
    FILE *f = fopen(path, "rb");
    long long end;
    memset(src, 0, sizeof *src);
    if (!f) return nnar_fail(ctx, NNAR_IO_ERROR, "cannot open '%s': %s", path, strerror(errno));
#if defined(_WIN32)
    if (_fseeki64(f, 0, SEEK_END) != 0 || (end = _ftelli64(f)) < 0) {
#else
    if (fseeko(f, 0, SEEK_END) != 0 || (end = (long long)ftello(f)) < 0) {
#endif
        fclose(f);
        return nnar_fail(ctx, NNAR_IO_ERROR, "cannot find the size of '%s': %s", path, strerror(errno));
    }
    src->file = f;
    src->size = (uint64_t)end;
    src->read_at = file_read_at;
    return NNAR_OK;
}

void nnar_io_close(nnar_source *src)
{
    if (src->file) fclose((FILE *)src->file);
    src->file = NULL;
}
