/* The harnesses' in-memory read callback: the fuzzed bytes handed out in uneven chunks, as a
 * pipe gives them, so every reader of a stream meets short reads. */
#ifndef NNAR_FUZZ_CURSOR_H
#define NNAR_FUZZ_CURSOR_H

#include <string.h>

typedef struct cursor { const unsigned char *p; size_t n, pos; } cursor;

static long long read_cursor(void *user, void *buf, size_t size)
{
    cursor *c = (cursor *)user;
    size_t k = c->n - c->pos < size ? c->n - c->pos : size;
    if (k > 1 && (c->pos & 1)) k = k / 2;
    memcpy(buf, c->p + c->pos, k);
    c->pos += k;
    return (long long)k;
}

#endif
