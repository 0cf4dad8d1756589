/*  sdx_config.h - typed option tables filled from defaults, a YAML file
    (libyaml) and command-line flags, in that order.

    A program describes its options once as a static table of sdx_option_t
    (key in the YAML file, --flag, type, default, help, offset of the field in
    the program's own config struct); every option has a default and a flag.
    The YAML file is a mapping of scalars; nested mappings give dotted keys
    ("heartbeat: {interval_ms: 1000}" sets "heartbeat.interval_ms").
    Unknown keys and ill-typed values are errors, so --check-config catches
    typos. Not for lists or free-form data (those live in proto/ as JSON).
*/
#ifndef SDX_CONFIG_H
#define SDX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SDX_CONFIG_STR_MAX 512 /* SDX_OPT_STR fields are char[SDX_CONFIG_STR_MAX] */

typedef enum {
    SDX_OPT_STR,   /* char[SDX_CONFIG_STR_MAX] */
    SDX_OPT_INT,   /* int64_t */
    SDX_OPT_BOOL,  /* bool: true/false/yes/no/on/off/1/0 */
    SDX_OPT_SIZE,  /* int64_t bytes: "16MiB", "512k", "1048576" */
    SDX_OPT_LEVEL, /* int: log level, error|warn|info|debug */
} sdx_opt_type_t;

typedef struct {
    const char *key;  /* YAML key, dotted for nested: "limits.max_frame_bytes" */
    const char *flag; /* "--max-frame-bytes" (always present) */
    sdx_opt_type_t type;
    const char *dflt; /* default, as text */
    const char *help;
    size_t offset;    /* offsetof(program_config, field) */
    int64_t min, max; /* INT/SIZE range, inclusive; min == max == 0: unchecked */
} sdx_option_t;

/* Set every option to its default. 0, or -1 if a default does not parse
   (a programmer error, also logged into err). */
int sdx_config_defaults(const sdx_option_t *opts, size_t n, void *cfg, char *err, size_t err_len);
/* Set one option by YAML key or flag name from text. 0 / -1 + err. */
int sdx_config_set(const sdx_option_t *opts, size_t n, void *cfg, const char *name,
                   const char *value, char *err, size_t err_len);
/* Apply a YAML file. 0 / -1 + err ("file:line: reason"). */
int sdx_config_load_yaml(const sdx_option_t *opts, size_t n, void *cfg, const char *path, char *err,
                         size_t err_len);
/* The same from text in memory (len bytes, no NUL needed); name stands for
   the file in errors ("name:line: reason"). */
int sdx_config_load_yaml_text(const sdx_option_t *opts, size_t n, void *cfg, const char *text,
                              size_t len, const char *name, char *err, size_t err_len);
/* Apply flags from argv ("--flag value" or "--flag=value"; bools may stand
   alone: "--stream"). Handles "--config FILE" first (loaded before the other
   flags, whatever their order) when config_path is not NULL: the path is
   copied there. Extra flags the program handles itself (e.g. --check-config,
   --help) are listed in passthrough and left to it: their positions in argv
   are marked in seen[] (argc entries) when seen is not NULL.
   0 / -1 + err. */
int sdx_config_parse_args(const sdx_option_t *opts, size_t n, void *cfg, int argc, char **argv,
                          const char *const *passthrough, bool *seen, char *config_path,
                          size_t config_path_len, char *err, size_t err_len);
/* Usage text: one line per option with flag, key, default and help. */
void sdx_config_usage(const sdx_option_t *opts, size_t n, FILE *out);
/* The effective values as YAML (for --check-config and logs). */
void sdx_config_dump(const sdx_option_t *opts, size_t n, const void *cfg, FILE *out);

#endif
