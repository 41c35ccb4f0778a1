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

#if !defined(_WIN32) && !defined(NNAR_NO_MMAP)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file mapped read-only and read as memory: no copy of a body, no buffer for it. A file
 * that cannot be mapped (empty, a pipe, too large for the address space) is read instead. */
nnar_status nnar_io_map(nnar_ctx *ctx, const char *path, nnar_source *src)
{
    struct stat st;
    void *p;
    int fd = open(path, O_RDONLY);
    memset(src, 0, sizeof *src);
    if (fd < 0) return nnar_fail(ctx, NNAR_IO_ERROR, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return nnar_io_open(ctx, path, src);
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return nnar_io_open(ctx, path, src);
    nnar_source_memory(src, p, (size_t)st.st_size);
    src->mapped = p;
    return NNAR_OK;
}
#else
nnar_status nnar_io_map(nnar_ctx *ctx, const char *path, nnar_source *src) { return nnar_io_open(ctx, path, src); }
#endif

void nnar_io_close(nnar_source *src)
{
    if (src->file) fclose((FILE *)src->file);
    src->file = NULL;
#if !defined(_WIN32) && !defined(NNAR_NO_MMAP)
    if (src->mapped) munmap(src->mapped, (size_t)src->size);
#endif
    src->mapped = NULL;
}

/* ---- output: a temporary file beside the result, renamed into place once complete ---------- */

#if defined(_WIN32)
#include <io.h>
#include <windows.h>
#include <sys/stat.h>
#else
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

int nnar_io_kind(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return 0;
#if defined(_WIN32)
    return (st.st_mode & _S_IFDIR) ? 2 : 1;
#else
    return S_ISDIR(st.st_mode) ? 2 : 1;
#endif
}

int nnar_io_same_file(const char *a, const char *b)
{
#if defined(_WIN32)
    (void)a; (void)b;
    return 0;   /* stub: the rename below never replaces a file without force */
#else
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
#endif
}

nnar_status nnar_io_create_temp(nnar_ctx *ctx, const char *path, void **file, char *tmp, size_t tmp_size)
{
    int n;
    *file = NULL;
    for (n = 0; n < 100; n++) {
        FILE *f = NULL;
#if defined(_WIN32)
        if ((size_t)snprintf(tmp, tmp_size, "%s.%d.nnar-tmp", path, n) >= tmp_size)
            return nnar_fail(ctx, NNAR_INVALID_ARGUMENT, "output path: too long");
        f = fopen(tmp, "wbx");
        if (!f && errno == EEXIST) continue;
#else
        int fd;
        const char *slash = strrchr(path, '/');
        int dir = slash ? (int)(slash - path + 1) : 0;
        if ((size_t)snprintf(tmp, tmp_size, "%.*s.%s.%ld-%d.tmp", dir, path, path + dir, (long)getpid(), n) >= tmp_size)
            return nnar_fail(ctx, NNAR_INVALID_ARGUMENT, "output path: too long");
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);   /* the umask applies */
        if (fd < 0 && errno == EEXIST) continue;
        if (fd >= 0) {
            f = fdopen(fd, "wb");
            if (!f) close(fd);
        }
#endif
        if (!f) return nnar_fail(ctx, NNAR_IO_ERROR, "cannot create a temporary file '%s': %s", tmp, strerror(errno));
        *file = f;
        return NNAR_OK;
    }
    return nnar_fail(ctx, NNAR_IO_ERROR, "cannot create a temporary file beside '%s': 100 names taken", path);
}

nnar_status nnar_io_write(nnar_ctx *ctx, void *file, const void *data, size_t size)
{
    if (size && fwrite(data, 1, size, (FILE *)file) != size)
        return nnar_fail(ctx, NNAR_IO_ERROR, "write failed: %s", strerror(errno));
    return NNAR_OK;
}

void nnar_io_discard(void *file, const char *tmp)
{
    if (file) fclose((FILE *)file);
    remove(tmp);
}

/* Flush and sync the temporary file, then put it at path: replacing what is there only with
 * force (otherwise a hard link, which fails if the path appeared meanwhile). */
nnar_status nnar_io_commit(nnar_ctx *ctx, void *file, const char *tmp, const char *path, int force)
{
    FILE *f = (FILE *)file;
    int bad = fflush(f) != 0;
#if defined(_WIN32)
    bad = bad || _commit(_fileno(f)) != 0;
#else
    bad = bad || fsync(fileno(f)) != 0;
#endif
    bad = fclose(f) != 0 || bad;
    if (bad) {
        remove(tmp);
        return nnar_fail(ctx, NNAR_IO_ERROR, "writing '%s' failed: %s", tmp, strerror(errno));
    }
#if defined(_WIN32)
    if (!MoveFileExA(tmp, path, force ? MOVEFILE_REPLACE_EXISTING : 0)) {
        remove(tmp);
        return nnar_fail(ctx, force ? NNAR_IO_ERROR : NNAR_OUTPUT_EXISTS, "cannot move the result to '%s'", path);
    }
#else
    if (force) {
        if (rename(tmp, path) != 0) {
            int e = errno;
            remove(tmp);
            return nnar_fail(ctx, NNAR_IO_ERROR, "cannot rename the result to '%s': %s", path, strerror(e));
        }
    } else if (link(tmp, path) != 0) {
        int e = errno;
        if (e == EEXIST) {
            remove(tmp);
            return nnar_fail(ctx, NNAR_OUTPUT_EXISTS, "output '%s' exists: expected a new file name, or --force to replace it",
                             path);
        }
        /* no hard links here (some file systems): rename, after checking once more */
        if (nnar_io_kind(path) || rename(tmp, path) != 0) {
            remove(tmp);
            return nnar_fail(ctx, NNAR_IO_ERROR, "cannot move the result to '%s': %s", path, strerror(e));
        }
    } else {
        remove(tmp);
    }
#endif
    return NNAR_OK;
}
