/* Peak memory of reading an archive in order (§8.1), or of applying a patch to a base (the
 * patch read in order, the result discarded), through a counting allocator: what "memory
 * bounded by one record" means, measured. Prints the peak of live bytes, and what is live after
 * (on an error, the error and the peak).
 * usage: peak_memory ARCHIVE | peak_memory BASE PATCH */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnar.h"

typedef struct counting { size_t live, peak; } counting;

/* each block remembers its size in a header of 16 bytes */
static void *count_malloc(void *user, size_t size)
{
    counting *c = (counting *)user;
    unsigned char *p = (unsigned char *)malloc(size + 16);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    c->live += size;
    if (c->live > c->peak) c->peak = c->live;
    return p + 16;
}

static void count_free(void *user, void *ptr)
{
    counting *c = (counting *)user;
    size_t size;
    if (!ptr) return;
    memcpy(&size, (unsigned char *)ptr - 16, sizeof size);
    c->live -= size;
    free((unsigned char *)ptr - 16);
}

static long long read_file(void *user, void *buf, size_t size)
{
    size_t n = fread(buf, 1, size, (FILE *)user);
    return n < size && ferror((FILE *)user) ? -1 : (long long)n;
}

static int discard(void *user, const void *buf, size_t size)
{
    (void)user; (void)buf; (void)size;
    return 0;
}

int main(int argc, char **argv)
{
    counting c = {0, 0};
    nnar_allocator al;
    nnar_options o;
    nnar_stream_visitor v;
    nnar_error err;
    nnar_status s;
    FILE *f;
    if (argc != 2 && argc != 3) return 2;
    if (!(f = fopen(argv[argc - 1], "rb"))) return 2;
    al.malloc = count_malloc;
    al.free = count_free;
    al.user = &c;
    memset(&o, 0, sizeof o);
    o.allocator = &al;
    memset(&v, 0, sizeof v);
    v.check_digests = 1;
    if (argc == 3) s = nnar_patch_stream(argv[1], NULL, 0, read_file, f, discard, NULL, &o, NULL, &err);
    else s = nnar_read_stream(read_file, f, &o, &v, NULL, &err);
    fclose(f);
    if (s != NNAR_OK) {   /* the peak all the same: what a hostile archive made the library hold */
        printf("%s: %s\npeak %zu\n", nnar_status_code(s), err.message, c.peak);
        return 1;
    }
    printf("%zu %zu\n", c.peak, c.live);
    return 0;
}
