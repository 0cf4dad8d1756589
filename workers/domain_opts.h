/*  domain_opts.h - checking a domain's option values (sdx_option_t rows)
    into its settings struct: the shared rules (an existing folder, a folder
    made when missing, an optional folder, an integer in a range), so each
    domain lists its fields instead of writing the checks again.

    Not for: where values come from (flag > config > environment > default:
    the runtime, sdx_worker.c). */
#ifndef DOMAIN_OPTS_H
#define DOMAIN_OPTS_H

#include <stddef.h>

typedef enum {
    DOMAIN_OPT_DIR,          /* an existing folder */
    DOMAIN_OPT_DIR_CREATE,   /* a folder, made (mkdir -p) when missing, writable */
    DOMAIN_OPT_DIR_OPTIONAL, /* "" or an existing folder */
    DOMAIN_OPT_INT,          /* an integer in lo..hi */
    DOMAIN_OPT_PATH_OPTIONAL, /* "" or an existing file or folder (a model) */
} domain_opt_kind_t;

/* Where one option goes: a char[PATH_MAX] for the folders, an int for
   DOMAIN_OPT_INT, at `offset` in the domain's settings struct. */
typedef struct {
    const char *key; /* the sdx_option_t row's name */
    domain_opt_kind_t kind;
    size_t offset;
    int lo, hi;
} domain_opt_field_t;

/* Check `value` for option `key` and store it in settings. 0, or -1 with
   what is wrong in err (the runtime names the option and its source).
   `domain` names the domain in the error for a key it does not know. */
int domain_opts_set(const domain_opt_field_t *fields, size_t n, const char *domain, void *settings,
                    const char *key, const char *value, char *err, size_t err_len);

#endif
