/*  schema_test_util.h - small helpers shared by the tests in tests/schema:
    a tally, file reading under SDXL_SOURCE_ROOT, and the string macros of
    bad_requests.json ("$str:N", "$b64big:N"). Header-only on purpose: two
    test programs use it and nothing else should. */
#ifndef SCHEMA_TEST_UTIL_H
#define SCHEMA_TEST_UTIL_H

#include "sdx_codec.h"
#include "sdx_value.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_passed, t_failed;
static int t_verbose;

static void t_check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void t_check(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (ok) {
        t_passed++;
        if (t_verbose) {
            printf("ok   ");
            vprintf(fmt, ap);
            printf("\n");
        }
    } else {
        t_failed++;
        printf("FAIL ");
        vprintf(fmt, ap);
        printf("\n");
    }
    va_end(ap);
}

static int t_finish(void)
{
    printf("%d passed, %d failed\n", t_passed, t_failed);
    return t_failed ? 1 : 0;
}

static const char *t_source_root(void)
{
    const char *r = getenv("SDXL_SOURCE_ROOT");
#ifdef SDX_SOURCE_ROOT
    if (!r)
        r = SDX_SOURCE_ROOT;
#endif
    return r ? r : ".";
}

/* Read a file under the source root; caller frees. NULL if unreadable. */
static char *t_read(const char *rel, size_t *len)
{
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/%s", t_source_root(), rel);
    return sdx_codec_read_file(path, len, err, sizeof err);
}

static sdx_value_t *t_json(const char *text)
{
    char err[256];
    sdx_value_t *v = sdx_json_decode(text, strlen(text), err, sizeof err);
    if (!v)
        printf("FAIL json: %s in %.80s\n", err, text);
    return v;
}

/* Expand the string macros of bad_requests.json in place. */
static void t_expand(sdx_value_t **slot)
{
    sdx_value_t *v = *slot;
    if (v->type == SDX_STR && strncmp(v->u.str.ptr, "$str:", 5) == 0) {
        size_t n = (size_t)atol(v->u.str.ptr + 5);
        char *s = malloc(n + 1);
        memset(s, 'a', n);
        s[n] = '\0';
        sdx_value_destroy(slot);
        *slot = sdx_value_str_new(s);
        free(s);
    } else if (v->type == SDX_STR && strncmp(v->u.str.ptr, "$b64big:", 8) == 0) {
        size_t n = (size_t)atol(v->u.str.ptr + 8);
        unsigned char *b = calloc(1, n);
        char *s = sdx_base64_encode(b, n);
        free(b);
        sdx_value_destroy(slot);
        *slot = sdx_value_str_new(s);
        free(s);
    } else if (v->type == SDX_ARRAY) {
        for (size_t i = 0; i < v->u.arr.len; i++)
            t_expand(&v->u.arr.items[i]);
    } else if (v->type == SDX_MAP) {
        for (size_t i = 0; i < v->u.map.len; i++)
            t_expand(&v->u.map.items[i].val);
    }
}

#endif
