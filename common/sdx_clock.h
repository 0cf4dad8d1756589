/*  sdx_clock.h - the clocks every part uses: monotonic for durations and
    deadlines inside a process, wall-clock (unix ms) for deadlines that cross
    process boundaries (REQUEST.deadline_ms) and for logs/events. */
#ifndef SDX_CLOCK_H
#define SDX_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds / microseconds since an arbitrary origin. */
int64_t sdx_clock_mono_ms(void);
int64_t sdx_clock_mono_us(void);
/* Milliseconds since the unix epoch. */
int64_t sdx_clock_unix_ms(void);

#endif
