/* clock.c - calibrating the tick counter against CLOCK_MONOTONIC. */
#include "clock.h"

clock_test_state clock_test;
_Thread_local uint64_t clock_test_thread_now;

clock_anchor clock_anchor_now(void)
{
    if (clock_test.on)
        return (clock_anchor){*clock_test_now(), clock_mono_ns()};
    /* Bracket the monotonic read between two tick reads and keep the tightest
     * of a few tries, so a preemption between the reads cannot skew the pair. */
    clock_anchor best = {0, 0};
    uint64_t best_width = UINT64_MAX;
    for (int attempt = 0; attempt < 5; attempt++) {
        uint64_t before = clock_tsc();
        uint64_t mono = clock_mono_ns();
        uint64_t after = clock_tsc();
        if (after - before < best_width) {
            best_width = after - before;
            best.tsc = before + (after - before) / 2;
            best.mono_ns = mono;
        }
    }
    return best;
}

double clock_hz_between(clock_anchor first, clock_anchor last)
{
    if (last.mono_ns <= first.mono_ns || last.tsc <= first.tsc)
        return 0.0;
    return (double)(last.tsc - first.tsc) * 1e9 / (double)(last.mono_ns - first.mono_ns);
}

double clock_estimate_hz(uint64_t spin_ns)
{
    clock_anchor first = clock_anchor_now();
    while (clock_mono_ns() - first.mono_ns < spin_ns)
        ;
    return clock_hz_between(first, clock_anchor_now());
}

clock_converter clock_converter_make(clock_anchor origin, double tsc_hz)
{
    clock_converter conv = {origin.tsc, origin.mono_ns, 0};
    if (tsc_hz > 0)
        conv.mult = (uint64_t)(1e9 / tsc_hz * 4294967296.0 + 0.5);
    return conv;
}
