/*  test_errors.c - the error table: names unique and parseable, advice
    present, and every code documented in proto/PROTOCOL.md. */
#include "sdx_errors.h"
#include "tcheck.h"

#include <stdlib.h>

int main(void)
{
    size_t n;
    const sdx_error_info_t *t = sdx_error_table(&n);
    CHECK(n == SDX_ERR__COUNT);
    const char *root = getenv("SDXL_SOURCE_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/proto/PROTOCOL.md", root ? root : ".");
    FILE *f = fopen(path, "rb");
    static char doc[1 << 20];
    size_t len = f ? fread(doc, 1, sizeof doc - 1, f) : 0;
    doc[len] = '\0';
    if (f)
        fclose(f);
    CHECK(len > 0);
    for (size_t i = 1; i < n; i++) {
        CHECK(t[i].code == (sdx_error_t)i);
        CHECK(t[i].advice && strlen(t[i].advice) > 20);
        bool known;
        CHECK(sdx_error_parse(t[i].name, &known) == (sdx_error_t)i && known);
        for (size_t k = 1; k < i; k++)
            CHECK(strcmp(t[i].name, t[k].name) != 0);
        char needle[80];
        snprintf(needle, sizeof needle, "`%s`", t[i].name);
        if (!strstr(doc, needle)) {
            fprintf(stderr, "  %s is not documented in %s\n", needle, path);
            CHECK(false);
        }
    }
    bool known = true;
    CHECK(sdx_error_parse("busy", &known) == SDX_ERR_QUEUE_FULL && known);
    CHECK(sdx_error_parse("made_up", &known) == SDX_ERR_INTERNAL && !known);
    CHECK(sdx_error_retryable(SDX_ERR_TIMEOUT) && !sdx_error_retryable(SDX_ERR_INVALID_REQUEST));
    CHECK_STR(sdx_error_name((sdx_error_t)999), "internal");
    sdx_fault_t fa;
    sdx_fault_set(&fa, SDX_ERR_NO_WORKER, NULL, "no %s worker", "inference");
    sdx_value_t *v = sdx_fault_value(&fa);
    CHECK_STR(sdx_map_str(v, "code", NULL), "no_worker");
    CHECK_STR(sdx_map_str(v, "message", NULL), "no inference worker");
    CHECK(sdx_map_get(v, "field") == NULL && sdx_map_bool(v, "retryable", false));
    sdx_value_destroy(&v);
    return t_done();
}
