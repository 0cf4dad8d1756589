/*  sdx_clock.c - see sdx_clock.h. */
#include "sdx_clock.h"

#include <time.h>

int64_t sdx_clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sdx_clock_mono_ms(void)
{
    return sdx_clock_mono_us() / 1000;
}

int64_t sdx_clock_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
