/* sampler.c - the clock thread (see sampler.h).
 *
 * A background thread sleeps for randomised periods. For a recalibration it
 * asks the main thread (Py_AddPendingCall) to run the refresher at its next
 * eval-breaker check. For a sampling window it asks the same way and, when no
 * safe point comes within SWITCH_PATIENCE_NS (the main thread may be blocked,
 * e.g. joining workers), takes the GIL itself; either side switches Ocular's
 * events on, then off. Holding the GIL is the safe point: no callback can run
 * meanwhile, on any thread. Nothing here runs
 * in a signal handler, and the callbacks never wait for this thread. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include "breaker.h"
#include "calibrate.h"
#include "engine.h"
#include "codeinfo.h"
#include "sampler.h"
#include "stacks.h"
#include "tstate.h"

/* 3.13 keeps the instrumentation version in 24 bits: 2^24 set_events changes
 * per process, shared by every tool. Ocular allows its windows half of it. */
#if PY_VERSION_HEX >= 0x030D0000
#define VERSION_BUDGET (1ull << 23)
#else
#define VERSION_BUDGET UINT64_MAX /* 3.12 counts in 64 bits */
#endif

/* The trace track of the windows: a code id no code object can have. */
#define WINDOW_CODE_ID (1024u * 65536u - 1u)

uint64_t sampler_window_id;
static uint64_t bumps_this_process;

static struct {
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_int stopping;
    sampler_config config;
    uint64_t run_id;
    atomic_int pending;
    atomic_uint_fast64_t refreshes;
    uint64_t windows, window_ticks, bumps, gil_switches;
    int window_open, budget_exhausted;
    int by_test; /* on the test clock: the test switches the windows (sampler_test_switch) */
    uint64_t opened_at;
    int in_warmup, warmup_done;
    uint64_t warmup_ticks;
    uint64_t random;
    trace_thread *trace;
} sampler = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* xorshift64: periods are randomised so that a periodic program cannot keep
 * meeting the clock at the same point of its cycle. */
static uint64_t next_random(void)
{
    uint64_t x = sampler.random;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return sampler.random = x;
}

/* Uniform in [mean/2, 3*mean/2]. */
static uint64_t jittered(uint64_t mean)
{
    return mean / 2 + next_random() % (mean + 1);
}

/* ---- recalibration: in the main thread, at a safe point ------------------ */

/* Never fails: an error of the refresh is cleared (the previous calibration
 * stays). Runs only while events are recorded: a kernel timed while Ocular's
 * events are off would show no cost. */
static atomic_int refresh_running;

/* An exception out of the refresher is the program's when the program's code
 * raised it inside Ocular's time (a signal handler's KeyboardInterrupt or
 * TimeoutError, run at a safe point of the calibration): it goes on into the
 * program, as it would have at the program's next safe point. Ocular's own
 * errors are dropped (the previous calibration stays). */
static int raised_by_program(PyObject *exc)
{
    if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception))
        return 1; /* KeyboardInterrupt, SystemExit: never Ocular's */
    int program = 0;
    PyObject *tb = PyException_GetTraceback(exc);
    while (tb && !program) {
        PyCodeObject *code = PyFrame_GetCode(((PyTracebackObject *)tb)->tb_frame);
        program = !codeinfo_is_ocular((PyObject *)code);
        Py_DECREF(code);
        PyObject *next = Py_XNewRef((PyObject *)((PyTracebackObject *)tb)->tb_next);
        Py_SETREF(tb, next);
    }
    Py_XDECREF(tb);
    return program;
}

static int run_refresh(void *arg)
{
    /* arg: the run that asked (a call queued late in one run can run in the next) */
    if ((uintptr_t)arg != (uintptr_t)engine.run_id)
        return 0;
    atomic_store(&sampler.pending, 0);
    if (!engine.recording || sampler.run_id != engine.run_id || !sampler.config.refresher)
        return 0;
    atomic_store(&refresh_running, 1);
    PyObject *in_flight = PyErr_GetRaisedException(), *raised = NULL;
    if (calibrate_own_begin() == 0) {
        PyObject *result = PyObject_CallNoArgs(sampler.config.refresher);
        if (!result) {
            raised = PyErr_GetRaisedException();
            if (!raised_by_program(raised))
                Py_CLEAR(raised);
        }
        Py_XDECREF(result);
        calibrate_own_end();
        atomic_fetch_add(&sampler.refreshes, 1);
    }
    atomic_store(&refresh_running, 0);
    if (raised) {
        if (in_flight)
            PyException_SetContext(raised, in_flight);
        PyErr_SetRaisedException(raised);
        return -1; /* raised into the program like a signal handler's exception */
    }
    PyErr_SetRaisedException(in_flight);
    return 0;
}

/* 3.12 queues a pending call made without the GIL but does not set the main
 * thread's eval breaker for it (breaker.c): trip it ourselves. 3.13 does. */
static void wake_main_thread(PyThreadState *state)
{
#if PY_VERSION_HEX < 0x030D0000
    breaker_trip(PyThreadState_GetInterpreter(state));
#else
    (void)state;
#endif
}

/* Called with the lock held; returns with it held. */
static void request_refresh(PyThreadState **state)
{
    /* one at a time: a main thread busy outside Python gets no backlog */
    if (atomic_exchange(&sampler.pending, 1))
        return;
    if (Py_AddPendingCall(run_refresh, (void *)(uintptr_t)sampler.run_id) < 0)
        atomic_store(&sampler.pending, 0);
    else
        wake_main_thread(*state);
}

/* ---- sampling windows: on this thread, with the GIL ----------------------- */

static int set_events(unsigned long events)
{
    if (bumps_this_process >= VERSION_BUDGET) {
        sampler.budget_exhausted = 1;
        return -1;
    }
    PyObject *result = PyObject_CallFunction(sampler.config.set_events, "ik", sampler.config.tool, events);
    bumps_this_process++;
    sampler.bumps++;
    if (!result) {
        PyErr_Clear(); /* e.g. OverflowError: another tool spent the budget */
        sampler.budget_exhausted = 1;
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

static void open_window(void)
{
    if (engine.failure || sampler.run_id != engine.run_id || sampler.budget_exhausted)
        return;
    sampler_window_id++;
    engine_new_stretch();
    if (set_events(sampler.config.events) < 0)
        return;
    /* after set_events and reading the stacks: the stretches hold neither
     * CPython's re-instrumentation nor Ocular's work */
    sampler.opened_at = stacks_adopt_all();
    engine_set_recording(1);
    sampler.window_open = 1;
    if (sampler.trace) {
        trace_record *record = trace_reserve(sampler.trace);
        if (record) {
            *record = (trace_record){.tsc = sampler.opened_at, .code_id = WINDOW_CODE_ID,
                                     .offset = -2, .line = -1, .kind = TRACE_FUNC_BEGIN};
        }
    }
}

static void end_window(uint64_t now)
{
    if (sampler.in_warmup) {
        sampler.in_warmup = 0;
        sampler.warmup_ticks = now - sampler.opened_at;
    }
    else {
        sampler.windows++;
        sampler.window_ticks += now - sampler.opened_at;
    }
    sampler.window_open = 0;
    if (sampler.trace) {
        trace_record *record = trace_reserve(sampler.trace);
        if (record)
            *record = (trace_record){.tsc = now, .offset = -2, .line = -1, .kind = TRACE_FUNC_END};
    }
}

/* The warm-up ends like a window, and what it recorded becomes the base the
 * windows' estimate adds to (collect.c). */
static void close_warmup(void);

static void close_window(void)
{
    if (!sampler.window_open)
        return;
    if (sampler.in_warmup) {
        close_warmup();
        return;
    }
    uint64_t now = clock_now();
    engine_set_recording(0);
    stacks_close_all();
    size_t n_alive = 0;
    uint64_t *alive = threads_alive(&n_alive);
    threads_close_all(now, alive, alive ? n_alive : 0);
    PyMem_RawFree(alive);
    end_window(now);
    set_events(0);
}

static void close_warmup(void)
{
    uint64_t now = clock_now();
    engine_set_recording(0);
    stacks_close_all();
    size_t n_alive = 0;
    uint64_t *alive = threads_alive(&n_alive);
    threads_close_all(now, alive, alive ? n_alive : 0);
    PyMem_RawFree(alive);
    if (codeinfo_registry_snapshot() == 0)
        threads_snapshot();
    end_window(now);
    sampler.warmup_done = 1;
    set_events(0);
}

void sampler_begin(uint64_t tsc)
{
    if (sampler.in_warmup)
        sampler.opened_at = tsc;
}

/* ---- the thread ------------------------------------------------------------ */

/* Sleep until `ns` from now, a stop, or (if `done` is given) until *done is
 * set; the lock is held. Returns 1 on stop. */
static int sleep_for(uint64_t ns, const atomic_int *done)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    uint64_t sum = (uint64_t)deadline.tv_nsec + ns;
    deadline.tv_sec += (time_t)(sum / 1000000000u);
    deadline.tv_nsec = (long)(sum % 1000000000u);
    while (!atomic_load(&sampler.stopping) && !(done && atomic_load(done)) &&
           pthread_cond_timedwait(&sampler.wake, &sampler.lock, &deadline) != ETIMEDOUT)
        ;
    return atomic_load(&sampler.stopping);
}

/* A window's switch is made at a safe point with the GIL: the main thread's
 * next eval-breaker check (a pending call, microseconds away when it runs
 * Python), or, if it does not come soon (the main thread is blocked, e.g.
 * joining workers), this thread takes the GIL itself, which another running
 * thread yields within the switch interval. Whichever comes first switches;
 * the other finds it done. */
static atomic_int switch_done;
/* Who makes the switch: taken before the action runs, since an action can
 * let the GIL go (set_events may be wrapped in Python by another tool, or
 * by a test) and the other side must not make the switch a second time. */
static atomic_int switch_claimed;
static void (*switch_action)(void);
/* Each switch's number. A pending call can outlive its switch (a main thread
 * blocked past the patience runs it when it wakes, after the clock thread
 * made the switch itself, perhaps in a later run): only the current switch's
 * call acts. */
static atomic_uintptr_t switch_seq;

static void do_switch(void)
{
    if (atomic_exchange(&switch_claimed, 1))
        return; /* made, or being made by the other side */
    if (!atomic_load(&sampler.stopping) && switch_action)
        switch_action();
    atomic_store(&switch_done, 1);
}

/* The main thread's half: switch, and nothing after it (what a pending call
 * does after the switch runs on the program's clock, in the window). The
 * clock thread polls for it. */
static int switch_pending(void *arg)
{
    if ((uintptr_t)arg == atomic_load(&switch_seq))
        do_switch();
    return 0;
}

/* Then take the GIL ourselves. A main thread that runs Python takes a pending
 * call within microseconds (on a loaded machine it may first wait for a CPU
 * for a few milliseconds). Taking the GIL instead makes the running thread
 * hand it over at its next eval-breaker check, and the wait for that lands in
 * the window: it is worth it only when no safe point is coming. */
#define SWITCH_PATIENCE_NS 20000000
#define SWITCH_POLL_NS 50000

/* Called with the lock held; returns with it held. */
static void switch_window(PyThreadState **state, void (*action)(void))
{
    uintptr_t seq = atomic_fetch_add(&switch_seq, 1) + 1;
    atomic_store(&switch_done, 0);
    atomic_store(&switch_claimed, 0);
    switch_action = action;
    int queued = Py_AddPendingCall(switch_pending, (void *)seq) == 0;
    for (uint64_t waited = 0; queued && waited < SWITCH_PATIENCE_NS && !atomic_load(&switch_done);
         waited += SWITCH_POLL_NS) {
        /* again at every poll: on 3.12 another thread's check may have
         * cleared the breaker before the main thread saw it */
        wake_main_thread(*state);
        if (sleep_for(SWITCH_POLL_NS, NULL))
            break;
    }
    if (!atomic_load(&switch_done)) {
        sampler.gil_switches++;
        pthread_mutex_unlock(&sampler.lock);
        PyEval_RestoreThread(*state);
        do_switch();
        *state = PyEval_SaveThread();
        pthread_mutex_lock(&sampler.lock);
    }
    /* the main thread may be in the middle of the action, having let the GIL go */
    while (!atomic_load(&switch_done))
        if (sleep_for(SWITCH_POLL_NS, &switch_done))
            break;
}

static void *sampler_main(void *arg)
{
    (void)arg;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyThreadState *state = PyEval_SaveThread();
    pthread_mutex_lock(&sampler.lock);
    const sampler_config *config = &sampler.config;
    uint64_t windows_since_refresh = 0, last_window = 0;
    if (config->interval_ns && sampler.in_warmup) {
        /* the warm-up: the run's start, traced whole, recalibrated as at threshold 0 */
        for (uint64_t slept = 0; slept < config->warmup_ns && !atomic_load(&sampler.stopping);
             slept += config->refresh_ns ? config->refresh_ns : config->warmup_ns) {
            uint64_t step = config->refresh_ns && config->refresh_ns < config->warmup_ns - slept
                                ? config->refresh_ns : config->warmup_ns - slept;
            if (sleep_for(step, NULL))
                break;
            if (config->refresh_ns && slept + step < config->warmup_ns)
                request_refresh(&state);
        }
        if (!atomic_load(&sampler.stopping))
            switch_window(&state, close_window);
    }
    while (!atomic_load(&sampler.stopping)) {
        if (!config->interval_ns) {
            if (sleep_for(jittered(config->refresh_ns), NULL))
                break;
            request_refresh(&state);
            continue;
        }
        /* The windows' share of the run is what tracing costs: when a window
         * lasted longer than asked (the switches waited for the GIL), the gap
         * after it grows, so that the share stays as configured. */
        uint64_t gap = config->interval_ns > config->window_ns ? config->interval_ns - config->window_ns : 0;
        if (last_window > config->window_ns && config->window_ns) /* in proportion: the share stays */
            gap = (uint64_t)((double)gap * (double)last_window / (double)config->window_ns);
        if (sleep_for(jittered(gap), NULL))
            break;
        uint64_t windows_before = sampler.windows;
        switch_window(&state, open_window);
        if (!sampler.window_open)
            continue;
        if (config->refresh_ns && ++windows_since_refresh * config->interval_ns >= config->refresh_ns) {
            windows_since_refresh = 0;
            request_refresh(&state);
        }
        if (sleep_for(config->window_ns, NULL))
            break;
        /* a recalibration in progress needs the window open to its end */
        for (int wait = 0; wait < 50 && atomic_load(&refresh_running); wait++)
            if (sleep_for(config->window_ns / 4 + 1, NULL))
                break;
        uint64_t opened = sampler.opened_at;
        switch_window(&state, close_window);
        if (sampler.windows > windows_before)
            last_window = (uint64_t)((double)(clock_now() - opened) * 1e9 / engine_tsc_hz());
    }
    pthread_mutex_unlock(&sampler.lock);
    PyEval_RestoreThread(state);
    PyGILState_Release(gil);
    return NULL;
}

int sampler_start(const sampler_config *config)
{
    if (sampler.running || (!config->refresh_ns && !config->interval_ns))
        return 0;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_destroy(&sampler.wake);
    pthread_cond_init(&sampler.wake, &attr);
    pthread_condattr_destroy(&attr);
    atomic_store(&sampler.stopping, 0);
    sampler.config = *config;
    sampler.run_id = engine.run_id;
    sampler.random = clock_tsc() | 1;
    sampler.windows = sampler.window_ticks = sampler.bumps = sampler.gil_switches = 0;
    sampler.window_open = sampler.budget_exhausted = 0;
    sampler.in_warmup = sampler.warmup_done = 0;
    sampler.warmup_ticks = 0;
    if (config->interval_ns) {
        /* events are on: the run begins in the warm-up window */
        sampler.window_open = sampler.in_warmup = 1;
        sampler.opened_at = clock_now();
    }
    sampler.trace = NULL;
    atomic_store(&sampler.pending, 0);
    atomic_store(&sampler.refreshes, 0);
    if (config->interval_ns && engine.exporting) {
        trace_define_code(WINDOW_CODE_ID, "sampling window", "<ocular>", 0);
        sampler.trace = trace_thread_new(SAMPLER_WINDOW_TID);
    }
    /* On the test clock the windows open and close where the test says, in
     * its own thread: a timer on the real clock would put them anywhere. */
    sampler.by_test = clock_test.on && config->interval_ns;
    if (sampler.by_test)
        return 0;
    if (pthread_create(&sampler.thread, NULL, sampler_main, NULL) != 0)
        return -1;
    sampler.running = 1;
    return 0;
}

int sampler_test_switch(void)
{
    if (!sampler.by_test || sampler.run_id != engine.run_id)
        return -1;
    if (sampler.window_open)
        close_window(); /* the warm-up first */
    else
        open_window();
    return sampler.window_open;
}

void sampler_stop(uint64_t now)
{
    if (sampler.running) {
        pthread_mutex_lock(&sampler.lock);
        atomic_store(&sampler.stopping, 1);
        pthread_cond_signal(&sampler.wake);
        pthread_mutex_unlock(&sampler.lock);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(sampler.thread, NULL);
        Py_END_ALLOW_THREADS
        sampler.running = 0;
    }
    atomic_fetch_add(&switch_seq, 1); /* a switch still queued is void */
    if (sampler.window_open)
        end_window(now); /* the engine's stop closes the threads' frames */
    sampler.config.refresher = NULL;
    sampler.config.set_events = NULL;
    sampler.by_test = 0;
}

void sampler_forget(void)
{
    sampler.running = 0;
    sampler.window_open = 0;
    sampler.config.refresher = NULL;
    sampler.config.set_events = NULL;
    pthread_mutex_t fresh_lock = PTHREAD_MUTEX_INITIALIZER;
    sampler.lock = fresh_lock;
    /* The parent's clock thread may have been waiting on it: glibc's
     * pthread_cond_destroy (sampler_start's) would wait for that waiter,
     * which the child does not have, forever. */
    pthread_cond_t fresh_wake = PTHREAD_COND_INITIALIZER;
    sampler.wake = fresh_wake;
}

sampler_stats sampler_totals(void)
{
    return (sampler_stats){
        .refreshes = atomic_load(&sampler.refreshes),
        .windows = sampler.windows,
        .window_ticks = sampler.window_ticks,
        .version_bumps = sampler.bumps,
        .warmup_done = sampler.warmup_done,
        .warmup_ticks = sampler.warmup_ticks,
        .gil_switches = sampler.gil_switches,
        .budget_exhausted = sampler.budget_exhausted,
    };
}

int sampler_running(void)
{
    return sampler.running;
}
