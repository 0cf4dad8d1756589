/*  sdx_weights.c - a named set of tensors (one model component).

    Insertion order is kept for listing; lookups go through an open-addressing
    hash table because the networks fetch weights by formatted name while they
    build. Not for: knowing where weights come from (sdx_model.c does).
*/
#include "sdx_model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    sdx_tensor_t *t;
} s_entry_t;

struct sdx_weights {
    s_entry_t *entries; /* insertion order */
    size_t count, cap;
    size_t *slots; /* hash slots: index + 1, 0 = empty */
    size_t nslots; /* power of two */
};

static uint64_t s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Slot holding `name`, or the empty slot where it would go. */
static size_t s_slot(const sdx_weights_t *w, const char *name)
{
    size_t mask = w->nslots - 1;
    size_t i = (size_t)s_hash(name) & mask;
    while (w->slots[i] && strcmp(w->entries[w->slots[i] - 1].name, name) != 0)
        i = (i + 1) & mask;
    return i;
}

static int s_rehash(sdx_weights_t *w, size_t nslots)
{
    size_t *slots = calloc(nslots, sizeof *slots);
    if (!slots)
        return sdx_set_error("sdx_weights: out of memory");
    free(w->slots);
    w->slots = slots;
    w->nslots = nslots;
    for (size_t k = 0; k < w->count; k++)
        w->slots[s_slot(w, w->entries[k].name)] = k + 1;
    return 0;
}

sdx_weights_t *sdx_weights_new(void)
{
    sdx_weights_t *w = calloc(1, sizeof *w);
    if (!w || s_rehash(w, 64) != 0) {
        free(w);
        sdx_set_error("sdx_weights: out of memory");
        return NULL;
    }
    return w;
}

void sdx_weights_free(sdx_weights_t **wp)
{
    if (!wp || !*wp)
        return;
    sdx_weights_t *w = *wp;
    for (size_t i = 0; i < w->count; i++) {
        free(w->entries[i].name);
        sdx_tensor_free(&w->entries[i].t);
    }
    free(w->entries);
    free(w->slots);
    free(w);
    *wp = NULL;
}

int sdx_weights_put(sdx_weights_t *w, const char *name, sdx_tensor_t *t)
{
    if (!w || !name || !t)
        return sdx_set_error("sdx_weights_put: NULL argument");
    size_t s = s_slot(w, name);
    if (w->slots[s]) {
        s_entry_t *e = &w->entries[w->slots[s] - 1];
        if (e->t != t)
            sdx_tensor_free(&e->t);
        e->t = t;
        return 0;
    }
    if (w->count == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        s_entry_t *ne = realloc(w->entries, cap * sizeof *ne);
        if (!ne)
            return sdx_set_error("sdx_weights: out of memory");
        w->entries = ne;
        w->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return sdx_set_error("sdx_weights: out of memory");
    w->entries[w->count].name = copy;
    w->entries[w->count].t = t;
    w->count++;
    if (w->count * 2 > w->nslots) {
        if (s_rehash(w, w->nslots * 2) != 0) {
            w->count--;
            free(copy);
            s_rehash(w, w->nslots); /* restore the index as it was */
            return -1;
        }
    } else {
        w->slots[s] = w->count;
    }
    return 0;
}

sdx_tensor_t *sdx_weights_get(const sdx_weights_t *w, const char *name)
{
    if (!w || !name)
        return NULL;
    size_t s = s_slot(w, name);
    return w->slots[s] ? w->entries[w->slots[s] - 1].t : NULL;
}

sdx_tensor_t *sdx_weights_getf(const sdx_weights_t *w, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof name) {
        sdx_set_error("weight name too long: '%.100s...'", name);
        return NULL;
    }
    sdx_tensor_t *t = sdx_weights_get(w, name);
    if (!t)
        sdx_set_error("missing weight '%s'", name);
    return t;
}

bool sdx_weights_has(const sdx_weights_t *w, const char *name)
{
    return sdx_weights_get(w, name) != NULL;
}

size_t sdx_weights_count(const sdx_weights_t *w)
{
    return w ? w->count : 0;
}

const char *sdx_weights_name_at(const sdx_weights_t *w, size_t i)
{
    return w && i < w->count ? w->entries[i].name : NULL;
}

sdx_tensor_t *sdx_weights_tensor_at(const sdx_weights_t *w, size_t i)
{
    return w && i < w->count ? w->entries[i].t : NULL;
}

int64_t sdx_weights_param_count(const sdx_weights_t *w)
{
    int64_t n = 0;
    for (size_t i = 0; w && i < w->count; i++)
        n += sdx_tensor_numel(w->entries[i].t);
    return n;
}
