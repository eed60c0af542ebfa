/* clock.h - the time-stamp counter and its calibration to nanoseconds.
 *
 * The hot path reads raw ticks (clock_tsc); nothing converts them there.
 * Conversion happens later, either for the Profile (a rate measured over the
 * whole traced interval) or in the trace writer (a rate measured at start). */
#ifndef OCULAR_CLOCK_H
#define OCULAR_CLOCK_H

#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) || defined(_M_X64)
#  include <x86intrin.h>
#  define OCULAR_CLOCK_SOURCE "rdtsc"
/* No serialising fence: we want the cheapest read, and the error of a few
 * cycles of reordering is far below the cost of one monitoring event. */
static inline uint64_t clock_tsc(void) { return __rdtsc(); }
#elif defined(__aarch64__)
#  define OCULAR_CLOCK_SOURCE "cntvct_el0"
static inline uint64_t clock_tsc(void)
{
    uint64_t ticks;
    __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(ticks));
    return ticks;
}
#else
#  define OCULAR_CLOCK_SOURCE "clock_gettime"
static inline uint64_t clock_tsc(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}
#endif

/* The test clock (tests only; monitor_test.c): while `on`, the engine's time
 * is the calling thread's test time, which only the test-clock callbacks
 * advance, by amounts the test sets. Each thread has a clock of its own (a
 * thread's time passes only at its own events, as if each had a core to
 * itself), so that threads' figures are exact however their events
 * interleave. The hot path never reads this: the real callbacks call
 * clock_tsc() directly, and the test run registers other callbacks. The
 * engine's other clock reads (start, stop, calibration sentinels, windows'
 * ends, probes) go through clock_now(). */
typedef struct {
    int on;
} clock_test_state;

extern clock_test_state clock_test;
extern _Thread_local uint64_t clock_test_thread_now;  /* 0: not begun on this thread */

/* Far from 0: no figure may depend on where a clock starts. */
#define CLOCK_TEST_ORIGIN ((uint64_t)1 << 32)

/* The calling thread's test time, begun at the origin on its first read. */
static inline uint64_t *clock_test_now(void)
{
    if (!clock_test_thread_now)
        clock_test_thread_now = CLOCK_TEST_ORIGIN;
    return &clock_test_thread_now;
}

static inline uint64_t clock_now(void)
{
    return __builtin_expect(clock_test.on, 0) ? *clock_test_now() : clock_tsc();
}

static inline uint64_t clock_mono_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* A (ticks, nanoseconds) pair taken as close together as the machine allows. */
typedef struct {
    uint64_t tsc;
    uint64_t mono_ns;
} clock_anchor;

clock_anchor clock_anchor_now(void);

/* Ticks per second between two anchors; 0 if the interval is too short to say. */
double clock_hz_between(clock_anchor first, clock_anchor last);

/* A quick estimate of the tick rate, spinning for about spin_ns nanoseconds. */
double clock_estimate_hz(uint64_t spin_ns);

/* Fixed-point tick -> ns conversion with 128-bit intermediates, so that no
 * precision is lost however long the trace runs (doubles lose the low bits
 * of a TSC past 2^52). ns = mono0 + ((tsc - tsc0) * mult) >> 32. */
typedef struct {
    uint64_t tsc0;
    uint64_t mono0;
    uint64_t mult;   /* ns per tick, scaled by 2^32 */
} clock_converter;

clock_converter clock_converter_make(clock_anchor origin, double tsc_hz);

static inline uint64_t clock_to_ns(const clock_converter *conv, uint64_t tsc)
{
    /* Ticks before the origin (another CPU's read racing the anchor) clamp to it. */
    uint64_t delta = tsc > conv->tsc0 ? tsc - conv->tsc0 : 0;
    unsigned __int128 scaled = (unsigned __int128)delta * conv->mult;
    return conv->mono0 + (uint64_t)(scaled >> 32);
}

#endif
