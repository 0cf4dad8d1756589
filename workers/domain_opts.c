/*  domain_opts.c - see domain_opts.h. */
#include "domain_opts.h"

#include "out_save.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int domain_opts_set(const domain_opt_field_t *fields, size_t n, const char *domain, void *settings,
                    const char *key, const char *value, char *err, size_t err_len)
{
    size_t i = 0;
    while (i < n && strcmp(fields[i].key, key) != 0)
        i++;
    if (i == n) {
        snprintf(err, err_len, "not an option of the %s domain", domain);
        return -1;
    }
    void *field = (char *)settings + fields[i].offset;
    domain_opt_kind_t kind = fields[i].kind;
    if (kind == DOMAIN_OPT_INT) {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (!*value || *end || errno || v < fields[i].lo || v > fields[i].hi) {
            snprintf(err, err_len, "must be an integer in %d..%d", fields[i].lo, fields[i].hi);
            return -1;
        }
        *(int *)field = (int)v;
        return 0;
    }
    if (strlen(value) >= PATH_MAX) {
        snprintf(err, err_len, "the path is too long");
        return -1;
    }
    struct stat sb;
    if ((kind == DOMAIN_OPT_DIR_OPTIONAL || kind == DOMAIN_OPT_PATH_OPTIONAL) && !*value) {
        /* none */
    } else if (kind == DOMAIN_OPT_PATH_OPTIONAL) {
        if (stat(value, &sb) != 0) {
            snprintf(err, err_len, "no such file or folder: %s", strerror(errno));
            return -1;
        }
    } else if (!*value) {
        snprintf(err, err_len, "must name a folder");
        return -1;
    } else if (kind == DOMAIN_OPT_DIR_CREATE && stat(value, &sb) != 0 && errno == ENOENT &&
               out_mkdirs(value) != 0) {
        snprintf(err, err_len, "the folder cannot be created: %s", strerror(errno));
        return -1;
    } else if (stat(value, &sb) != 0) {
        snprintf(err, err_len, "not a folder: %s", strerror(errno));
        return -1;
    } else if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, err_len, "not a folder");
        return -1;
    } else if (kind == DOMAIN_OPT_DIR_CREATE && access(value, W_OK) != 0) {
        snprintf(err, err_len, "the folder is not writable: %s", strerror(errno));
        return -1;
    }
    snprintf(field, PATH_MAX, "%s", value);
    return 0;
}
