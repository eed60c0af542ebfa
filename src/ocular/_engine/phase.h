/* phase.h - following the machine's speed, so that the cost taken off each
 * interval is the cost of now.
 *
 * On a shared or frequency-scaled machine the time a piece of code takes in
 * ticks changes by up to 2x within microseconds (observed on a KVM guest:
 * ~16 % of the time exactly 2x slower, in bursts of ~300 us), and the cost of
 * an event changes with it. Every ~64 events a thread times a fixed stretch of
 * its own callback (its "probe": from the callback's first clock read to a
 * second one at its end) and compares it with the same path's time at
 * calibration: that ratio, smoothed, is the thread's phase, and the thread's
 * corrections are the calibrated ones times its phase. */
#ifndef OCULAR_PHASE_H
#define OCULAR_PHASE_H

#include <stdint.h>
#include "tstate.h"

enum { PROBE_EDGE, PROBE_EDGE_TRACED, PROBE_INSN, PROBE_INSN_TRACED, PROBE_PUSH, PROBE_PATHS };

#define PHASE_ONE 256 /* phases are fixed-point, 8 fractional bits */

void phase_probe(thread_data *td, uint64_t start, int path);

/* Called at the end of a probed path; `start` is the callback's clock read. */
static inline void phase_tick(thread_data *td, uint64_t start, int path)
{
    if (__builtin_expect(--td->probe_countdown == 0, 0))
        phase_probe(td, start, path);
}

/* A new thread: phase 1, the calibrated corrections. */
void phase_thread_init(thread_data *td);

/* The calibrated corrections changed: every thread's table follows. */
void phase_update_all(void);

/* Calibration: collect every probe's time per path (collect=1), then stop and
 * make each path's median its reference (collect=0). Returns the references. */
void phase_collect(int collect, uint32_t bases[PROBE_PATHS]);

#endif
