/*  dheap.h - a binary min-heap of deadlines with O(log n) removal. Nodes
    are intrusive (embedded in the request, which knows its own heap index),
    so arming, disarming and re-arming a deadline allocate nothing except
    when the heap's array grows. Not thread-safe. */
#ifndef BROKER_DHEAP_H
#define BROKER_DHEAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t when; /* monotonic ms */
    size_t index; /* position in the heap, SIZE_MAX when not armed */
} dnode_t;

typedef struct {
    dnode_t **a;
    size_t len, cap;
} dheap_t;

void dheap_init(dheap_t *h);
void dheap_free(dheap_t *h);
static inline void dnode_init(dnode_t *n)
{
    n->when = 0;
    n->index = SIZE_MAX;
}
/* Arm (or re-arm) n at `when`. 0 / -1 on OOM. */
int dheap_set(dheap_t *h, dnode_t *n, int64_t when);
/* Disarm n (no-op if not armed). */
void dheap_remove(dheap_t *h, dnode_t *n);
/* Earliest node, NULL if empty. */
static inline dnode_t *dheap_top(const dheap_t *h)
{
    return h->len ? h->a[0] : NULL;
}

#endif
