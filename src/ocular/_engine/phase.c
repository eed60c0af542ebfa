/* phase.c - the probes' slow part and the per-thread correction tables. */
#include <string.h>
#include "phase.h"

#define PROBE_EVERY 64
#define HISTOGRAM 512

static struct {
    uint32_t base[PROBE_PATHS];      /* a path's probe time at calibration, 1/16 ticks (0: unknown) */
    int collecting;
    uint32_t histogram[PROBE_PATHS][HISTOGRAM];
} phase;

static void apply(thread_data *td)
{
    int64_t p = td->phase_q8;
    for (int kind = 0; kind < EV_KINDS; kind++) {
        td->corr.head[kind] = engine.corr.head[kind] * p / PHASE_ONE;
        td->corr.tail[kind] = engine.corr.tail[kind] * p / PHASE_ONE;
    }
    td->corr.far_head = engine.corr.far_head * p / PHASE_ONE;
    td->corr.far_tail = engine.corr.far_tail * p / PHASE_ONE;
}

void phase_probe(thread_data *td, uint64_t start, int path)
{
    uint64_t ticks = clock_now() - start;
    /* jittered, so that the probes of a periodic loop do not always time the
     * same event of its cycle */
    td->probe_seed = td->probe_seed * 1103515245u + 12345u;
    td->probe_countdown = PROBE_EVERY - 16 + ((td->probe_seed >> 16) & 31);
    if (phase.collecting)
        phase.histogram[path][ticks < HISTOGRAM ? ticks : HISTOGRAM - 1]++;
    uint32_t base = phase.base[path];
    if (!base)
        return;
    /* Phases seen are 1x and 2x (and mixes, smoothed): a probe far outside
     * was hit by an interrupt or a preemption and says nothing of the phase. */
    int64_t ratio = (int64_t)(ticks * 16 * PHASE_ONE / base);
    if (ratio < PHASE_ONE / 2)
        ratio = PHASE_ONE / 2;
    if (ratio > PHASE_ONE * 3)
        ratio = PHASE_ONE * 3;
    td->phase_q8 += (int32_t)((ratio - td->phase_q8) / 8);
    apply(td);
}

void phase_thread_init(thread_data *td)
{
    td->phase_q8 = PHASE_ONE;
    td->probe_countdown = PROBE_EVERY;
    td->probe_seed = (uint32_t)td->native_tid | 1u;
    apply(td);
}

void phase_update_all(void)
{
    for (thread_data *td = all_threads; td; td = td->next)
        apply(td);
}

/* A path's reference: the mean of its probe times, interrupts (over 4x the
 * median) left out. The mean, not the median: the clock reads in steps (13
 * ticks on the KVM guest measured) that are a large part of a probe's ~30
 * ticks, and only a mean of such readings lands between the steps. */
static uint32_t reference_of(const uint32_t *histogram)
{
    uint64_t total = 0, seen = 0;
    for (int i = 0; i < HISTOGRAM; i++)
        total += histogram[i];
    if (!total)
        return 0;
    int median = 0;
    for (int i = 0; i < HISTOGRAM; i++) {
        seen += histogram[i];
        if (2 * seen >= total) {
            median = i;
            break;
        }
    }
    uint64_t count = 0, sum = 0;
    for (int i = 0; i < HISTOGRAM && i <= 4 * median; i++) {
        count += histogram[i];
        sum += (uint64_t)i * histogram[i];
    }
    return count ? (uint32_t)((sum * 16 + count / 2) / count) : 0;
}

void phase_collect(int collect, uint32_t bases[PROBE_PATHS])
{
    if (collect) {
        memset(phase.histogram, 0, sizeof(phase.histogram));
        memset(phase.base, 0, sizeof(phase.base));
        phase.collecting = 1;
    }
    else {
        phase.collecting = 0;
        for (int path = 0; path < PROBE_PATHS; path++)
            phase.base[path] = reference_of(phase.histogram[path]);
        /* a path no kernel took (the traced ones when not exporting) keeps
         * phase 1 when it fires */
    }
    for (thread_data *td = all_threads; td; td = td->next) {
        td->phase_q8 = PHASE_ONE;
        apply(td);
    }
    if (bases)
        memcpy(bases, phase.base, sizeof(phase.base));
}
