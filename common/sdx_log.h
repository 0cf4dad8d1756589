/*  sdx_log.h - one-line logging with a per-process ident.

    Lines go to stderr as "2026-11-23T05:21:59.123Z INFO  broker: text".
    The ident names the process ("broker", "worker[inference:gpu0]"). Not for
    per-frame hot paths at info level: use log_debug there, which costs one
    integer compare when disabled. */
#ifndef SDX_LOG_H
#define SDX_LOG_H

#include <stdarg.h>

typedef enum { SDX_LOG_ERROR = 0, SDX_LOG_WARN, SDX_LOG_INFO, SDX_LOG_DEBUG } sdx_log_level_t;

/* Set the ident (copied) and the level. Safe to call again. */
void sdx_log_init(const char *ident, sdx_log_level_t level);
void sdx_log_set_level(sdx_log_level_t level);
sdx_log_level_t sdx_log_get_level(void);
/* Parse "error|warn|info|debug"; -1 if unknown. */
int sdx_log_level_parse(const char *text);
void sdx_log(sdx_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sdx_vlog(sdx_log_level_t level, const char *fmt, va_list ap);

extern sdx_log_level_t sdx_log_level_current;

#define log_error(...) sdx_log(SDX_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) sdx_log(SDX_LOG_WARN, __VA_ARGS__)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (sdx_log_level_current >= SDX_LOG_INFO)                                                 \
            sdx_log(SDX_LOG_INFO, __VA_ARGS__);                                                    \
    } while (0)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (sdx_log_level_current >= SDX_LOG_DEBUG)                                                \
            sdx_log(SDX_LOG_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

#endif
