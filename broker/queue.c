/*  queue.c - see queue.h. */
#include "queue.h"

#include <assert.h>

void queue_init(queue_t *q)
{
    for (int i = 0; i < QUEUE_LEVELS; i++) {
        q->head[i].prev = q->head[i].next = &q->head[i];
        q->head[i].level = i;
        q->len_level[i] = 0;
    }
    q->len = 0;
}

static int s_clamp(int level)
{
    return level < 0 ? 0 : level >= QUEUE_LEVELS ? QUEUE_LEVELS - 1 : level;
}

static void s_link(queue_t *q, qnode_t *n, qnode_t *after, int level)
{
    assert(!n->queued);
    n->prev = after;
    n->next = after->next;
    after->next->prev = n;
    after->next = n;
    n->level = level;
    n->queued = true;
    q->len++;
    q->len_level[level]++;
}

void queue_push(queue_t *q, qnode_t *n, int level)
{
    level = s_clamp(level);
    s_link(q, n, q->head[level].prev, level);
}

void queue_push_front(queue_t *q, qnode_t *n, int level)
{
    level = s_clamp(level);
    s_link(q, n, &q->head[level], level);
}

void queue_remove(queue_t *q, qnode_t *n)
{
    if (!n->queued)
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    n->queued = false;
    q->len--;
    q->len_level[n->level]--;
}

qnode_t *queue_first(const queue_t *q)
{
    for (int l = QUEUE_LEVELS - 1; l >= 0; l--)
        if (q->head[l].next != &q->head[l])
            return q->head[l].next;
    return NULL;
}

qnode_t *queue_next(const queue_t *q, const qnode_t *n)
{
    if (n->next != &q->head[n->level])
        return n->next;
    for (int l = n->level - 1; l >= 0; l--)
        if (q->head[l].next != &q->head[l])
            return q->head[l].next;
    return NULL;
}

qnode_t *queue_pop(queue_t *q)
{
    qnode_t *n = queue_first(q);
    if (n)
        queue_remove(q, n);
    return n;
}
