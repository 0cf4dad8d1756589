/*  idmap.c - see idmap.h. FNV-1a hashing, linear probing, tombstones
    reclaimed on growth. */
#include "idmap.h"

#include <stdlib.h>
#include <string.h>

static uint64_t s_hash(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h < 2 ? h + 2 : h; /* 0 and 1 are reserved */
}

void idmap_init(idmap_t *m)
{
    memset(m, 0, sizeof *m);
}

void idmap_free(idmap_t *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static idmap_slot_t *s_find(const idmap_t *m, const void *key, size_t len, uint64_t h)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask, n = 0; n < m->cap; i = (i + 1) & mask, n++) {
        idmap_slot_t *s = &m->slots[i];
        if (s->hash == 0)
            return NULL;
        if (s->hash == h && s->key_len == len && memcmp(s->key, key, len) == 0)
            return s;
    }
    return NULL;
}

void *idmap_get(const idmap_t *m, const void *key, size_t key_len)
{
    idmap_slot_t *s = s_find(m, key, key_len, s_hash(key, key_len));
    return s ? s->val : NULL;
}

static int s_grow(idmap_t *m)
{
    size_t cap = m->cap ? m->cap : 64;
    if (m->len * 2 >= cap)
        cap *= 2;
    idmap_slot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        idmap_slot_t *s = &m->slots[i];
        if (s->hash < 2)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].hash)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->len;
    return 0;
}

int idmap_put(idmap_t *m, const void *key, size_t key_len, void *val)
{
    if ((m->used + 1) * 4 >= m->cap * 3 && s_grow(m) != 0)
        return -1;
    uint64_t h = s_hash(key, key_len);
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].hash >= 2)
        i = (i + 1) & mask;
    if (m->slots[i].hash == 0)
        m->used++;
    m->slots[i] = (idmap_slot_t){key, key_len, h, val};
    m->len++;
    return 0;
}

void *idmap_del(idmap_t *m, const void *key, size_t key_len)
{
    idmap_slot_t *s = s_find(m, key, key_len, s_hash(key, key_len));
    if (!s)
        return NULL;
    void *val = s->val;
    s->hash = 1;
    s->key = NULL;
    s->val = NULL;
    m->len--;
    return val;
}
