/* sampler.h - the clock thread (sampler.c): what runs on a timer while the
 * program runs.
 *
 * Two jobs, both optional: recalibration (the main thread re-times the
 * calibration kernels at its next safe point, as Ocular's own time), and
 * sampling windows at threshold > 0: Ocular's events are switched on for a
 * short window at randomised intervals and off in between, with
 * sys.monitoring.set_events on Ocular's own tool id only (never
 * restart_events, so another tool's DISABLEd sites stay as that tool left
 * them). Inside a window everything is recorded, as at threshold 0; the
 * Python layer scales what the windows saw by the share of the run they
 * covered. */
#ifndef OCULAR_SAMPLER_H
#define OCULAR_SAMPLER_H

/* The trace's track of the sampling windows: a thread id above Linux's
 * largest pid (2^22), so that no real thread shares it, and not 0 (a thread
 * descriptor needs one). */
#define SAMPLER_WINDOW_TID 0x40000000u

#include <Python.h>
#include <stdint.h>

typedef struct {
    uint64_t refresh_ns;     /* mean period of recalibrations; 0: none */
    PyObject *refresher;     /* called with no arguments (borrowed until stop) */
    uint64_t interval_ns;    /* mean period of sampling windows; 0: no windows */
    uint64_t window_ns;      /* length of one window */
    uint64_t warmup_ns;      /* the run's start is traced whole for this long */
    PyObject *set_events;    /* sys.monitoring.set_events (borrowed until stop) */
    int tool;
    unsigned long events;    /* the event mask a window switches on */
} sampler_config;

int sampler_start(const sampler_config *config);

/* The traced interval begins at `tsc`: with windows, it begins inside the
 * warm-up (traced whole). */
void sampler_begin(uint64_t tsc);

/* Stop and join the clock thread (GIL held; released while joining). A
 * window still open is closed at `now` and counted. Safe without a start. */
void sampler_stop(uint64_t now);

/* In a forked child: the thread does not exist there. */
void sampler_forget(void);

typedef struct {
    uint64_t refreshes;      /* recalibrations that ran */
    uint64_t windows;        /* sampling windows closed */
    uint64_t window_ticks;   /* their total length */
    uint64_t version_bumps;  /* set_events calls made (3.13+ budget: 2^24 per process) */
    int warmup_done;         /* the warm-up ended before the run (else the run was traced whole) */
    uint64_t warmup_ticks;   /* its length */
    uint64_t gil_switches;   /* switches the clock thread made itself (no safe point came) */
    int budget_exhausted;    /* windows stopped to spare the version budget */
} sampler_stats;

sampler_stats sampler_totals(void);

int sampler_running(void);

/* Tests only: on the test clock a sampled run has no clock thread; each call
 * ends the window that is open (the warm-up first) or opens the next, at the
 * calling thread's test-clock time. Returns 1 if a window is open after it,
 * 0 if not, -1 if this run's windows are not the test's. GIL held. */
int sampler_test_switch(void);

/* The number of the window now open (0 before the first): per-thread tables
 * count in how many windows each function was seen. */
extern uint64_t sampler_window_id;

#endif
