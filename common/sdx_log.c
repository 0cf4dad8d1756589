/*  sdx_log.c - one-line logging to stderr with a per-process ident.

    One write(2) per line so lines from several threads or processes sharing
    a terminal do not interleave. Not a log shipper: no files, no rotation.
*/
#include "sdx_log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

sdx_log_level_t sdx_log_level_current = SDX_LOG_INFO;
static char s_ident[64] = "sdxl";

static const char *s_names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

void sdx_log_init(const char *ident, sdx_log_level_t level)
{
    if (ident)
        snprintf(s_ident, sizeof s_ident, "%s", ident);
    sdx_log_set_level(level);
}

void sdx_log_set_level(sdx_log_level_t level)
{
    if (level < SDX_LOG_ERROR)
        level = SDX_LOG_ERROR;
    if (level > SDX_LOG_DEBUG)
        level = SDX_LOG_DEBUG;
    sdx_log_level_current = level;
}

sdx_log_level_t sdx_log_get_level(void)
{
    return sdx_log_level_current;
}

int sdx_log_level_parse(const char *text)
{
    static const struct {
        const char *name;
        sdx_log_level_t level;
    } table[] = {
        {"error", SDX_LOG_ERROR}, {"warn", SDX_LOG_WARN},   {"warning", SDX_LOG_WARN},
        {"info", SDX_LOG_INFO},   {"debug", SDX_LOG_DEBUG}, {"trace", SDX_LOG_DEBUG},
    };
    if (!text)
        return -1;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcasecmp(text, table[i].name) == 0)
            return (int)table[i].level;
    return -1;
}

void sdx_vlog(sdx_log_level_t level, const char *fmt, va_list ap)
{
    if (level > sdx_log_level_current)
        return;
    if (level < SDX_LOG_ERROR)
        level = SDX_LOG_ERROR;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), s_names[level], s_ident);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep it one line */
    while (len > 0 && line[len - 1] == '\n')
        len--;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void sdx_log(sdx_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdx_vlog(level, fmt, ap);
    va_end(ap);
}
