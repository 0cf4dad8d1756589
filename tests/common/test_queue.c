/*  test_queue.c - the broker's priority queue (order: critical > high >
    normal > low, FIFO within a level, retries at the front, removal from the
    middle), the deadline heap and the request-id hash map. */
#include "dheap.h"
#include "idmap.h"
#include "queue.h"
#include "tcheck.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct {
    qnode_t qn;
    dnode_t dn;
    char name[16];
} item_t;

#define FROM_QN(n) ((item_t *)((char *)(n)-offsetof(item_t, qn)))

int main(void)
{
    queue_t q;
    queue_init(&q);
    CHECK(queue_first(&q) == NULL && queue_pop(&q) == NULL && queue_len(&q) == 0);
    item_t it[8] = {0};
    const char *names[] = {"low1", "norm1", "crit1", "high1", "norm2", "low2", "crit2", "norm3"};
    const int levels[] = {0, 1, 3, 2, 1, 0, 3, 1};
    for (int i = 0; i < 8; i++) {
        snprintf(it[i].name, sizeof it[i].name, "%s", names[i]);
        queue_push(&q, &it[i].qn, levels[i]);
    }
    CHECK(queue_len(&q) == 8);
    /* service order by iteration */
    const char *want[] = {"crit1", "crit2", "high1", "norm1", "norm2", "norm3", "low1", "low2"};
    int k = 0;
    for (qnode_t *n = queue_first(&q); n; n = queue_next(&q, n), k++)
        CHECK_STR(FROM_QN(n)->name, want[k]);
    CHECK(k == 8);
    /* remove from the middle (a deadline), then pop in order */
    queue_remove(&q, &it[4].qn); /* norm2 */
    queue_remove(&q, &it[4].qn); /* twice: no-op */
    CHECK(queue_len(&q) == 7);
    /* a retried request goes to the front of its level */
    queue_remove(&q, &it[7].qn); /* norm3 */
    queue_push_front(&q, &it[7].qn, 1);
    const char *want2[] = {"crit1", "crit2", "high1", "norm3", "norm1", "low1", "low2"};
    for (int i = 0; i < 7; i++) {
        qnode_t *n = queue_pop(&q);
        CHECK(n != NULL);
        if (n)
            CHECK_STR(FROM_QN(n)->name, want2[i]);
    }
    CHECK(queue_pop(&q) == NULL && queue_len(&q) == 0);
    /* out-of-range levels clamp */
    queue_push(&q, &it[0].qn, 99);
    queue_push(&q, &it[1].qn, -5);
    CHECK(FROM_QN(queue_pop(&q)) == &it[0] && FROM_QN(queue_pop(&q)) == &it[1]);

    /* deadline heap: random insert/update/remove keeps min order */
    dheap_t h;
    dheap_init(&h);
    enum { M = 2000 };
    item_t *many = calloc(M, sizeof *many);
    srand(7);
    for (int i = 0; i < M; i++) {
        dnode_init(&many[i].dn);
        CHECK(dheap_set(&h, &many[i].dn, rand() % 100000) == 0);
    }
    for (int i = 0; i < M; i += 3)
        dheap_remove(&h, &many[i].dn);
    for (int i = 1; i < M; i += 5)
        if (i % 3 != 0)
            dheap_set(&h, &many[i].dn, rand() % 100000); /* re-arm a live one */
    int64_t last = -1;
    size_t count = 0;
    bool ordered = true;
    dnode_t *n;
    while ((n = dheap_top(&h))) {
        if (n->when < last)
            ordered = false;
        last = n->when;
        dheap_remove(&h, n);
        CHECK(n->index == SIZE_MAX);
        count++;
    }
    CHECK(ordered);
    CHECK(count == (size_t)(M - (M + 2) / 3));
    dheap_free(&h);

    /* idmap: insert, find, delete, reinsert after tombstones, growth */
    idmap_t m;
    idmap_init(&m);
    static char keys[5000][24];
    for (int i = 0; i < 5000; i++) {
        snprintf(keys[i], sizeof keys[i], "req-%d", i);
        CHECK(idmap_put(&m, keys[i], strlen(keys[i]), &many[i % M]) == 0);
    }
    CHECK(idmap_len(&m) == 5000);
    bool all = true;
    for (int i = 0; i < 5000; i++)
        all &= idmap_get(&m, keys[i], strlen(keys[i])) == &many[i % M];
    CHECK(all);
    for (int i = 0; i < 5000; i += 2)
        CHECK(idmap_del(&m, keys[i], strlen(keys[i])) == &many[i % M]);
    CHECK(idmap_len(&m) == 2500);
    CHECK(idmap_get(&m, "req-0", 5) == NULL && idmap_get(&m, "req-1", 5) == &many[1]);
    CHECK(idmap_del(&m, "nope", 4) == NULL);
    for (int round = 0; round < 20; round++) /* churn: tombstones get reclaimed */
        for (int i = 0; i < 5000; i += 2) {
            idmap_put(&m, keys[i], strlen(keys[i]), &many[0]);
            idmap_del(&m, keys[i], strlen(keys[i]));
        }
    CHECK(idmap_len(&m) == 2500 && m.cap <= 16384);
    idmap_free(&m);
    free(many);
    return t_done();
}
