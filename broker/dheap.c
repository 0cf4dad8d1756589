/*  dheap.c - see dheap.h. */
#include "dheap.h"

#include <stdlib.h>
#include <string.h>

void dheap_init(dheap_t *h)
{
    memset(h, 0, sizeof *h);
}

void dheap_free(dheap_t *h)
{
    free(h->a);
    memset(h, 0, sizeof *h);
}

static void s_place(dheap_t *h, size_t i, dnode_t *n)
{
    h->a[i] = n;
    n->index = i;
}

static void s_up(dheap_t *h, size_t i)
{
    dnode_t *n = h->a[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p]->when <= n->when)
            break;
        s_place(h, i, h->a[p]);
        i = p;
    }
    s_place(h, i, n);
}

static void s_down(dheap_t *h, size_t i)
{
    dnode_t *n = h->a[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->len)
            break;
        if (c + 1 < h->len && h->a[c + 1]->when < h->a[c]->when)
            c++;
        if (h->a[c]->when >= n->when)
            break;
        s_place(h, i, h->a[c]);
        i = c;
    }
    s_place(h, i, n);
}

int dheap_set(dheap_t *h, dnode_t *n, int64_t when)
{
    if (n->index != SIZE_MAX) {
        int64_t old = n->when;
        n->when = when;
        if (when < old)
            s_up(h, n->index);
        else
            s_down(h, n->index);
        return 0;
    }
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        dnode_t **a = realloc(h->a, cap * sizeof *a);
        if (!a)
            return -1;
        h->a = a;
        h->cap = cap;
    }
    n->when = when;
    h->a[h->len] = n;
    n->index = h->len++;
    s_up(h, n->index);
    return 0;
}

void dheap_remove(dheap_t *h, dnode_t *n)
{
    size_t i = n->index;
    if (i == SIZE_MAX || i >= h->len || h->a[i] != n)
        return;
    n->index = SIZE_MAX;
    h->len--;
    if (i == h->len)
        return;
    dnode_t *last = h->a[h->len];
    s_place(h, i, last);
    if (i > 0 && h->a[(i - 1) / 2]->when > last->when)
        s_up(h, i);
    else
        s_down(h, i);
}
