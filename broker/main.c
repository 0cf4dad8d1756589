/*  main.c - sdxl-broker's command line: options (defaults < YAML file <
    flags), --check-config, signals. The broker itself is broker.c.

    sdxl-broker [--config FILE] [--frontend EP] [--backend EP] [--events EP]
                [--log-level L] [--check-config] [--catalog-md] [--help]
                [any option of broker_options as --flag VALUE]
*/
#include "broker.h"

#include "sdx_catalog.h"
#include "sdx_envelope.h"
#include "sdx_log.h"
#include "sdx_schema.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t s_stop;

static void s_on_hup(int sig)
{
    (void)sig;
    broker_reload_requested = 1;
}

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: sdxl-broker [--config FILE] [--frontend ENDPOINT] [--backend ENDPOINT]\n"
            "                   [--events ENDPOINT] [--log-level error|warn|info|debug]\n"
            "                   [--check-config] [--catalog-md] [--help] [--OPTION VALUE ...]\n\n"
            "Routes client requests (msgpack or JSON, ROUTER %s) to sdxl-worker processes\n"
            "(SDXW01, ROUTER %s) and publishes request events (PUB %s).\n"
            "Flags override the YAML file given with --config. Options:\n",
            "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557");
    sdx_config_usage(broker_options, broker_options_count, out);
    fprintf(out,
            "\n  --check-config         validate the configuration (and tables), print it, exit\n"
            "  --catalog-md           print the message catalogue as Markdown, exit\n");
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--check-config", "--help",    "-h",
                                        "--catalog-md",   "--version", NULL};
    broker_config_t cfg;
    char err[768];
    sdx_log_init("broker", SDX_LOG_INFO);
    if (sdx_config_defaults(broker_options, broker_options_count, &cfg, err, sizeof err) != 0) {
        log_error("defaults: %s", err);
        return 2;
    }
    bool *seen = calloc((size_t)argc + 1, sizeof *seen);
    char config_path[SDX_CONFIG_STR_MAX] = "";
    if (!seen ||
        sdx_config_parse_args(broker_options, broker_options_count, &cfg, argc, argv, extra, seen,
                              config_path, sizeof config_path, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-broker: %s\n", seen ? err : "out of memory");
        free(seen);
        return 2;
    }
    bool check = false, catalog_md = false;
    for (int i = 1; i < argc; i++) {
        if (!seen[i])
            continue;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(stdout);
            free(seen);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("sdxl-broker 0.1.0 (SDXW01)\n");
            free(seen);
            return 0;
        }
        if (strcmp(argv[i], "--check-config") == 0)
            check = true;
        if (strcmp(argv[i], "--catalog-md") == 0)
            catalog_md = true;
    }
    free(seen);
    sdx_log_set_level((sdx_log_level_t)cfg.log_level);

    if (check || catalog_md) {
        /* the tables are part of the configuration */
        int rc = 0;
        if (cfg.actions_file[0] ? sdx_actions_load(cfg.actions_file, err, sizeof err)
                                : sdx_actions_load_default(err, sizeof err)) {
            fprintf(stderr, "sdxl-broker: action table: %s\n", err);
            rc = 1;
        }
        sdx_catalog_t *cat = cfg.catalog_file[0]
                                 ? sdx_catalog_load(cfg.catalog_file, err, sizeof err)
                                 : sdx_catalog_load_default(err, sizeof err);
        if (!cat) {
            fprintf(stderr, "sdxl-broker: catalogue: %s\n", err);
            rc = 1;
        }
        /* the schemas too: a named folder that is missing must not pass */
        sdx_schema_set_t *schemas = NULL;
        if (check) {
            schemas = cfg.schemas_dir[0] ? sdx_schema_set_load(cfg.schemas_dir, err, sizeof err)
                                         : sdx_schema_set_load_default(err, sizeof err);
            if (!schemas) {
                fprintf(stderr, "sdxl-broker: schemas%s: %s\n",
                        cfg.schemas_dir[0] ? " (schemas_dir)" : "", err);
                rc = 1;
            }
        }
        if (catalog_md && cat)
            sdx_catalog_write_markdown(cat, stdout);
        if (check) {
            printf("# sdxl-broker configuration%s%s: %s\n", config_path[0] ? " from " : "",
                   config_path, rc ? "INVALID" : "ok");
            sdx_config_dump(broker_options, broker_options_count, &cfg, stdout);
            if (cat)
                printf("# catalogue: %s (%zu domains, %zu message types)\n",
                       sdx_catalog_source(cat), sdx_catalog_domain_count(cat),
                       sdx_catalog_message_count(cat));
            if (rc == 0)
                printf("# actions: %s (%zu rows)\n", sdx_actions_source(), sdx_actions_count());
            if (schemas)
                printf("# schemas: %zu files\n", sdx_schema_set_size(schemas));
        }
        sdx_schema_set_destroy(&schemas);
        sdx_catalog_destroy(&cat);
        return rc;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct sigaction hup = {0};
    hup.sa_handler = s_on_hup;
    sigemptyset(&hup.sa_mask);
    sigaction(SIGHUP, &hup, NULL);
    signal(SIGPIPE, SIG_IGN);

    broker_t *b = broker_new(&cfg, err, sizeof err);
    if (!b) {
        log_error("cannot start: %s", err);
        return 1;
    }
    int rc = broker_run(b, &s_stop);
    broker_destroy(&b);
    log_info("stopped");
    return rc == 0 ? 0 : 1;
}
