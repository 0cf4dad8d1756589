/*  queue.h - a per-domain request queue: one FIFO per priority level,
    served critical > high > normal > low, first in first out within a
    level. Nodes are intrusive (embedded in the request), so enqueue,
    dequeue and removal from the middle (a deadline passing) are O(1) and
    allocate nothing. Not thread-safe. */
#ifndef BROKER_QUEUE_H
#define BROKER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#define QUEUE_LEVELS 4 /* matches sdx_priority_t: 0 low .. 3 critical */

typedef struct qnode {
    struct qnode *prev, *next;
    int level; /* 0..QUEUE_LEVELS-1 */
    bool queued;
} qnode_t;

typedef struct {
    qnode_t head[QUEUE_LEVELS]; /* sentinels of circular lists */
    size_t len;
    size_t len_level[QUEUE_LEVELS];
} queue_t;

void queue_init(queue_t *q);
/* Append at the back of its level (new requests). */
void queue_push(queue_t *q, qnode_t *n, int level);
/* Put at the front of its level (a retried request keeps its turn). */
void queue_push_front(queue_t *q, qnode_t *n, int level);
/* Unlink a queued node (no-op if not queued). */
void queue_remove(queue_t *q, qnode_t *n);
/* The next node to serve, NULL if empty (not removed). */
qnode_t *queue_first(const queue_t *q);
/* The node served after n, in service order; NULL at the end. */
qnode_t *queue_next(const queue_t *q, const qnode_t *n);
/* Remove and return the next node to serve, NULL if empty. */
qnode_t *queue_pop(queue_t *q);
static inline size_t queue_len(const queue_t *q)
{
    return q->len;
}

#endif
