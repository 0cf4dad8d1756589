/*  test_catalog.c - proto/catalog.json loads, names the domains the broker
    routes, agrees with proto/actions.json (every alias target is in the
    catalogue) and with proto/PROTOCOL.md (every message type documented). */
#include "sdx_catalog.h"
#include "sdx_envelope.h"
#include "tcheck.h"

#include <stdlib.h>

int main(void)
{
    char err[512];
    sdx_catalog_t *c = sdx_catalog_load_default(err, sizeof err);
    CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return t_done();
    }
    static const char *worker_domains[] = {
        "device", "model", "conditioning", "scheduler", "inference", "postprocessing", "test"};
    for (size_t i = 0; i < sizeof worker_domains / sizeof *worker_domains; i++) {
        const sdx_catalog_domain_t *d = sdx_catalog_domain(c, worker_domains[i]);
        CHECK(d && !d->by_broker);
    }
    CHECK(sdx_catalog_domain(c, "processing") && sdx_catalog_domain(c, "processing")->by_broker);
    CHECK(sdx_catalog_domain(c, "system") && sdx_catalog_domain(c, "system")->by_broker);
    CHECK(sdx_catalog_find(c, "system.ping") && sdx_catalog_find(c, "system.ping")->implemented);
    CHECK(sdx_catalog_find(c, "inference.generate") != NULL);
    CHECK(sdx_catalog_find(c, "nope.nope") == NULL);

    /* every action row resolves to a catalogued message type */
    CHECK(sdx_actions_load_default(err, sizeof err) == 0);
    const char *actions[] = {"generate",   "generate_sdxl", "GenerateSDXL", "get_device_status",
                             "load_model", "batch_process", "ping",         "execute_workflow",
                             "upscale",    "list_models",   "encode_prompt"};
    for (size_t i = 0; i < sizeof actions / sizeof *actions; i++) {
        char mt[96];
        CHECK(sdx_actions_resolve(NULL, actions[i], mt, sizeof mt) == 0);
        if (!sdx_catalog_find(c, mt)) {
            fprintf(stderr, "  action %s -> %s is not in the catalogue\n", actions[i], mt);
            CHECK(false);
        }
    }
    /* PROTOCOL.md lists every message type */
    const char *root = getenv("SDXL_SOURCE_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/proto/PROTOCOL.md", root ? root : ".");
    FILE *f = fopen(path, "rb");
    static char doc[1 << 20];
    size_t len = f ? fread(doc, 1, sizeof doc - 1, f) : 0;
    doc[len] = '\0';
    if (f)
        fclose(f);
    for (size_t i = 0; i < sdx_catalog_message_count(c); i++) {
        char needle[128];
        snprintf(needle, sizeof needle, "`%s`", sdx_catalog_message_at(c, i)->name);
        if (!strstr(doc, needle)) {
            fprintf(stderr, "  %s missing from PROTOCOL.md (run sdxl-broker --catalog-md)\n",
                    needle);
            CHECK(false);
        }
    }
    /* broken catalogues are refused */
    const char *bad[] = {
        "{}",
        "{\"domains\":{\"x\":{\"handled_by\":\"nobody\"}}}",
        "{\"domains\":{\"x\":{\"handled_by\":\"worker\",\"messages\":{\"y.z\":{\"status\":"
        "\"planned\"}}}}}",
        "{\"domains\":{\"x\":{\"handled_by\":\"worker\",\"messages\":{\"x.z\":{\"status\":"
        "\"maybe\"}}}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sdx_catalog_t *b = sdx_catalog_load_text(bad[i], strlen(bad[i]), err, sizeof err);
        CHECK(b == NULL);
        sdx_catalog_destroy(&b);
    }
    sdx_catalog_destroy(&c);
    CHECK(c == NULL);
    return t_done();
}
