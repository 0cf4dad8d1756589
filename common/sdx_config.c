/*  sdx_config.c - typed option tables from defaults, YAML (libyaml) and
    flags. See sdx_config.h. Not a general YAML reader: scalars and nested
    mappings only. */
#include "sdx_config.h"

#include "sdx_log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

static const sdx_option_t *s_find(const sdx_option_t *opts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].key, name) == 0 || (opts[i].flag && strcmp(opts[i].flag, name) == 0))
            return &opts[i];
    /* "max_frame_bytes" also finds "limits.max_frame_bytes"? No: keys are
       exact, but a flag may be given without its dashes. */
    for (size_t i = 0; i < n; i++)
        if (opts[i].flag && strncmp(opts[i].flag, "--", 2) == 0 &&
            strcmp(opts[i].flag + 2, name) == 0)
            return &opts[i];
    return NULL;
}

static int s_parse_size(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || d < 0)
        return -1;
    while (*end == ' ')
        end++;
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {
        {"", 1},           {"b", 1},       {"k", 1024},         {"kb", 1000},
        {"kib", 1024},     {"m", 1048576}, {"mb", 1e6},         {"mib", 1048576},
        {"g", 1073741824}, {"gb", 1e9},    {"gib", 1073741824},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].suffix) == 0) {
            double r = d * units[i].mult;
            if (r > 9e18)
                return -1;
            *out = (int64_t)r;
            return 0;
        }
    return -1;
}

static int s_apply(const sdx_option_t *o, void *cfg, const char *value, char *err, size_t err_len)
{
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case SDX_OPT_STR:
        if (strlen(value) >= SDX_CONFIG_STR_MAX) {
            snprintf(err, err_len, "%s: value longer than %d bytes", o->key,
                     SDX_CONFIG_STR_MAX - 1);
            return -1;
        }
        snprintf(field, SDX_CONFIG_STR_MAX, "%s", value);
        return 0;
    case SDX_OPT_INT:
    case SDX_OPT_SIZE: {
        int64_t v;
        if (o->type == SDX_OPT_INT) {
            char *end;
            errno = 0;
            long long ll = strtoll(value, &end, 10);
            while (*end == ' ')
                end++;
            if (errno || end == value || *end) {
                snprintf(err, err_len, "%s: \"%s\" is not an integer", o->key, value);
                return -1;
            }
            v = ll;
        } else if (s_parse_size(value, &v) != 0) {
            snprintf(err, err_len, "%s: \"%s\" is not a size (e.g. 16MiB, 512k, 1048576)", o->key,
                     value);
            return -1;
        }
        if ((o->min || o->max) && (v < o->min || v > o->max)) {
            snprintf(err, err_len, "%s: %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
                     o->key, v, o->min, o->max);
            return -1;
        }
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case SDX_OPT_BOOL: {
        static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0) {
                *(bool *)field = true;
                return 0;
            }
            if (strcasecmp(value, no[i]) == 0) {
                *(bool *)field = false;
                return 0;
            }
        }
        snprintf(err, err_len, "%s: \"%s\" is not a boolean", o->key, value);
        return -1;
    }
    case SDX_OPT_LEVEL: {
        int l = sdx_log_level_parse(value);
        if (l < 0) {
            snprintf(err, err_len, "%s: \"%s\" is not one of error, warn, info, debug", o->key,
                     value);
            return -1;
        }
        *(int *)field = l;
        return 0;
    }
    }
    return -1;
}

int sdx_config_defaults(const sdx_option_t *opts, size_t n, void *cfg, char *err, size_t err_len)
{
    for (size_t i = 0; i < n; i++)
        if (s_apply(&opts[i], cfg, opts[i].dflt ? opts[i].dflt : "", err, err_len) != 0)
            return -1;
    return 0;
}

int sdx_config_set(const sdx_option_t *opts, size_t n, void *cfg, const char *name,
                   const char *value, char *err, size_t err_len)
{
    const sdx_option_t *o = s_find(opts, n, name);
    if (!o) {
        snprintf(err, err_len, "unknown option \"%s\"", name);
        return -1;
    }
    return s_apply(o, cfg, value, err, err_len);
}

/* ---- YAML: walk events, keeping a stack of mapping keys */

/* The events of p (input already set); path names the input in errors. */
static int s_load(yaml_parser_t *pp, const sdx_option_t *opts, size_t n, void *cfg,
                  const char *path, char *err, size_t err_len)
{
    enum { MAXD = 8 };
    char keys[MAXD][128];
    bool expect_key[MAXD];
    int depth = -1; /* index of the innermost open mapping */
    int rc = -1;
    bool done = false;
    char e2[384];
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(pp, &ev)) {
            snprintf(err, err_len, "%s:%zu: %s", path, pp->problem_mark.line + 1,
                     pp->problem ? pp->problem : "YAML error");
            goto out;
        }
        size_t line = ev.start_mark.line + 1;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_MAPPING_START_EVENT:
            if (depth >= 0 && expect_key[depth]) {
                snprintf(err, err_len, "%s:%zu: a mapping cannot be a key", path, line);
                yaml_event_delete(&ev);
                goto out;
            }
            if (depth + 1 >= MAXD) {
                snprintf(err, err_len, "%s:%zu: nested too deep", path, line);
                yaml_event_delete(&ev);
                goto out;
            }
            depth++;
            expect_key[depth] = true;
            keys[depth][0] = '\0';
            break;
        case YAML_MAPPING_END_EVENT:
            depth--;
            if (depth >= 0)
                expect_key[depth] = true;
            break;
        case YAML_SEQUENCE_START_EVENT:
            snprintf(err, err_len, "%s:%zu: lists are not supported in this config", path, line);
            yaml_event_delete(&ev);
            goto out;
        case YAML_ALIAS_EVENT:
            snprintf(err, err_len, "%s:%zu: aliases are not supported", path, line);
            yaml_event_delete(&ev);
            goto out;
        case YAML_SCALAR_EVENT: {
            const char *val = (const char *)ev.data.scalar.value;
            if (depth < 0) {
                /* a document that is a lone scalar (or empty) */
                if (ev.data.scalar.length == 0)
                    break;
                snprintf(err, err_len, "%s:%zu: the config must be a mapping", path, line);
                yaml_event_delete(&ev);
                goto out;
            }
            if (expect_key[depth]) {
                snprintf(keys[depth], sizeof keys[depth], "%s", val);
                expect_key[depth] = false;
                break;
            }
            /* MAXD keys of up to 127 bytes do not fit: a longer name is
               unknown anyway, so it is cut (never written past the end) */
            char full[MAXD * 128 + MAXD] = "";
            size_t o = 0;
            for (int d = 0; d <= depth && o < sizeof full; d++) {
                int w = snprintf(full + o, sizeof full - o, "%s%s", d ? "." : "", keys[d]);
                o += w > 0 ? (size_t)w : 0;
            }
            const sdx_option_t *opt = s_find(opts, n, full);
            if (!opt) {
                snprintf(err, err_len, "%s:%zu: unknown option \"%s\"", path, line, full);
                yaml_event_delete(&ev);
                goto out;
            }
            /* "~" / empty plain scalar keeps the default */
            bool null_value =
                ev.data.scalar.plain_implicit &&
                (ev.data.scalar.length == 0 || strcmp(val, "~") == 0 || strcmp(val, "null") == 0);
            if (!null_value && s_apply(opt, cfg, val, e2, sizeof e2) != 0) {
                snprintf(err, err_len, "%s:%zu: %s", path, line, e2);
                yaml_event_delete(&ev);
                goto out;
            }
            expect_key[depth] = true;
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    rc = 0;
out:
    return rc;
}

int sdx_config_load_yaml(const sdx_option_t *opts, size_t n, void *cfg, const char *path, char *err,
                         size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        snprintf(err, err_len, "%s: cannot initialise the YAML parser", path);
        return -1;
    }
    yaml_parser_set_input_file(&p, f);
    int rc = s_load(&p, opts, n, cfg, path, err, err_len);
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

int sdx_config_load_yaml_text(const sdx_option_t *opts, size_t n, void *cfg, const char *text,
                              size_t len, const char *name, char *err, size_t err_len)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        snprintf(err, err_len, "%s: cannot initialise the YAML parser", name);
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = s_load(&p, opts, n, cfg, name, err, err_len);
    yaml_parser_delete(&p);
    return rc;
}

static bool s_in(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

int sdx_config_parse_args(const sdx_option_t *opts, size_t n, void *cfg, int argc, char **argv,
                          const char *const *passthrough, bool *seen, char *config_path,
                          size_t config_path_len, char *err, size_t err_len)
{
    if (seen)
        memset(seen, 0, (size_t)argc * sizeof *seen);
    /* pass 1: --config, applied first so flags override the file */
    for (int i = 1; config_path && i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, err_len, "%s needs a value", a);
                return -1;
            }
            v = argv[i + 1];
        } else if (strncmp(a, "--config=", 9) == 0)
            v = a + 9;
        if (v) {
            snprintf(config_path, config_path_len, "%s", v);
            if (sdx_config_load_yaml(opts, n, cfg, v, err, err_len) != 0)
                return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char name[128];
        const char *value = NULL;
        const char *eq = strchr(a, '=');
        if (strncmp(a, "--", 2) != 0 && strcmp(a, "-c") != 0) {
            snprintf(err, err_len, "unexpected argument \"%s\"", a);
            return -1;
        }
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            value = eq + 1;
        } else
            snprintf(name, sizeof name, "%s", a);
        if (strcmp(name, "--config") == 0 || strcmp(name, "-c") == 0) {
            if (!eq)
                i++;
            continue;
        }
        if (s_in(passthrough, name)) {
            if (seen)
                seen[i] = true;
            continue;
        }
        const sdx_option_t *o = NULL;
        for (size_t k = 0; k < n && !o; k++)
            if (opts[k].flag && strcmp(opts[k].flag, name) == 0)
                o = &opts[k];
        if (!o) {
            snprintf(err, err_len, "unknown flag \"%s\" (see --help)", name);
            return -1;
        }
        if (!value) {
            if (o->type == SDX_OPT_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
                value = "true";
            else if (i + 1 < argc)
                value = argv[++i];
            else {
                snprintf(err, err_len, "%s needs a value", name);
                return -1;
            }
        }
        if (s_apply(o, cfg, value, err, err_len) != 0)
            return -1;
    }
    return 0;
}

static const char *s_type_name(sdx_opt_type_t t)
{
    switch (t) {
    case SDX_OPT_STR:
        return "TEXT";
    case SDX_OPT_INT:
        return "N";
    case SDX_OPT_BOOL:
        return "BOOL";
    case SDX_OPT_SIZE:
        return "SIZE";
    case SDX_OPT_LEVEL:
        return "LEVEL";
    }
    return "?";
}

void sdx_config_usage(const sdx_option_t *opts, size_t n, FILE *out)
{
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  %-22s %-6s %s (yaml: %s, default: %s)\n", opts[i].flag,
                s_type_name(opts[i].type), opts[i].help ? opts[i].help : "", opts[i].key,
                opts[i].dflt && *opts[i].dflt ? opts[i].dflt : "\"\"");
}

void sdx_config_dump(const sdx_option_t *opts, size_t n, const void *cfg, FILE *out)
{
    static const char *levels[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < n; i++) {
        const char *field = (const char *)cfg + opts[i].offset;
        fprintf(out, "%s: ", opts[i].key);
        switch (opts[i].type) {
        case SDX_OPT_STR:
            fprintf(out, "\"%s\"\n", field);
            break;
        case SDX_OPT_INT:
        case SDX_OPT_SIZE: {
            int64_t v;
            memcpy(&v, field, sizeof v);
            fprintf(out, "%" PRId64 "\n", v);
            break;
        }
        case SDX_OPT_BOOL:
            fprintf(out, "%s\n", *(const bool *)field ? "true" : "false");
            break;
        case SDX_OPT_LEVEL: {
            int l = *(const int *)field;
            fprintf(out, "%s\n", l >= 0 && l <= 3 ? levels[l] : "info");
            break;
        }
        }
    }
}
