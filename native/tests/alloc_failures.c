/* The caller's allocator is the only one the library uses (libzstd's decoder state aside), and
 * every allocation failure is a status, never a crash or a leak: open and verify an archive with
 * an allocator that fails at the k-th call, for every k until one run needs no failure; then the
 * same in order. Each run must end with every block freed. With a base and a patch, the same
 * for applying the patch (the base in memory, the patch read in order, the result discarded).
 * usage: alloc_failures ARCHIVE | alloc_failures BASE PATCH */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnar.h"

typedef struct counting { long calls, fail_at, live; } counting;

static void *count_malloc(void *user, size_t size)
{
    counting *c = (counting *)user;
    void *p;
    if (++c->calls == c->fail_at) return NULL;
    p = malloc(size);
    if (p) c->live++;
    return p;
}

static void count_free(void *user, void *p)
{
    counting *c = (counting *)user;
    if (p) { c->live--; free(p); }
}

typedef struct cursor { const unsigned char *p; size_t n, pos; } cursor;

static long long read_cursor(void *user, void *buf, size_t size)
{
    cursor *c = (cursor *)user;
    size_t k = c->n - c->pos < size ? c->n - c->pos : size;
    memcpy(buf, c->p + c->pos, k);
    c->pos += k;
    return (long long)k;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *d;
    long len;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) exit(2);
    d = (unsigned char *)malloc((size_t)len + 1);
    if (!d || fread(d, 1, (size_t)len, f) != (size_t)len) exit(2);
    fclose(f);
    *n = (size_t)len;
    return d;
}

static int discard(void *user, const void *buf, size_t size)
{
    (void)buf;
    *(size_t *)user += size;
    return 0;
}

int main(int argc, char **argv)
{
    size_t n, pn = 0;
    unsigned char *data, *patch = NULL;
    long k, runs = 0;
    int mode, first = 0, last = 1;
    if (argc != 2 && argc != 3) return 2;
    data = slurp(argv[1], &n);
    if (argc == 3) { patch = slurp(argv[2], &pn); first = last = 2; }
    for (mode = first; mode <= last; mode++) {
        for (k = 1;; k++) {
            counting c;
            nnar_allocator al;
            nnar_options o;
            nnar_error err;
            nnar_status s;
            memset(&c, 0, sizeof c);
            c.fail_at = k;
            al.malloc = count_malloc;
            al.free = count_free;
            al.user = &c;
            memset(&o, 0, sizeof o);
            o.allocator = &al;
            if (mode == 0) {
                nnar_archive *a;
                s = nnar_open_memory(data, n, &o, &a, &err);
                if (s == NNAR_OK) {
                    s = nnar_verify(a, NULL, NULL);
                    nnar_close(a);
                }
            } else if (mode == 2) {
                cursor cur;
                size_t written = 0;
                cur.p = patch; cur.n = pn; cur.pos = 0;
                s = nnar_patch_stream(NULL, data, n, read_cursor, &cur, discard, &written, &o, NULL, &err);
            } else {
                cursor cur;
                nnar_stream_visitor v;
                cur.p = data; cur.n = n; cur.pos = 0;
                memset(&v, 0, sizeof v);
                v.check_digests = 1;
                s = nnar_read_stream(read_cursor, &cur, &o, &v, NULL, &err);
            }
            runs++;
            if (c.live != 0) {
                printf("leak: %ld blocks live after failing allocation %ld (mode %d, %s)\n", c.live, k, mode,
                       nnar_status_code(s));
                return 1;
            }
            if (c.calls < k) {   /* no allocation failed: the run completed */
                if (s != NNAR_OK) { printf("mode %d: expected success, found %s\n", mode, nnar_status_code(s)); return 1; }
                break;
            }
            if (s != NNAR_OUT_OF_MEMORY) {
                printf("allocation %ld failed (mode %d): expected out-of-memory, found %s\n", k, mode, nnar_status_code(s));
                return 1;
            }
        }
    }
    printf("ok %ld runs\n", runs);
    free(data);
    free(patch);
    return 0;
}
