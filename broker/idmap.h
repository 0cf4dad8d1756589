/*  idmap.h - open-addressing hash map from byte strings (request ids,
    ZeroMQ routing ids) to pointers. Keys are BORROWED: the key bytes must
    live in the value's own struct and stay unchanged while the entry is in
    the map, so an insert costs no allocation (the table grows by doubling).
    Not thread-safe; the broker is one thread. */
#ifndef BROKER_IDMAP_H
#define BROKER_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const void *key;
    size_t key_len;
    uint64_t hash; /* 0 = empty, 1 = tombstone */
    void *val;
} idmap_slot_t;

typedef struct {
    idmap_slot_t *slots;
    size_t cap;  /* power of two */
    size_t len;  /* live entries */
    size_t used; /* live + tombstones */
} idmap_t;

void idmap_init(idmap_t *m);
void idmap_free(idmap_t *m); /* frees the table, not the values */
/* Value for key, NULL if absent. */
void *idmap_get(const idmap_t *m, const void *key, size_t key_len);
/* Insert; the key must not be present. 0, -1 on OOM. */
int idmap_put(idmap_t *m, const void *key, size_t key_len, void *val);
/* Remove; returns the value or NULL if absent. */
void *idmap_del(idmap_t *m, const void *key, size_t key_len);
static inline size_t idmap_len(const idmap_t *m)
{
    return m->len;
}

#endif
