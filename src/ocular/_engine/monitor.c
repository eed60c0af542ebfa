/* monitor.c - the sys.monitoring callbacks: Ocular's hot path.
 *
 * Every callback reads the tick counter first, finds the code object's data in
 * co_extra and the thread's shadow stack in thread-local storage, and hands
 * the ticks since the frame's previous event to frames.c, which charges them
 * to the straight-line code that ran in between. It allocates nothing, calls
 * no Python code, takes no lock and never raises: the rare slow paths (first
 * event of a code object or a thread, a block split, a table that must grow)
 * live in codeinfo.c, tstate.c and calltree.c, and an internal failure only
 * stops recording (engine_fail).
 *
 * The steady state of the most frequent events, an edge within a frame
 * (adaptive), an instruction (precise), a call and a return or yield, has a
 * fast path here that only checks, then commits; everything else takes the
 * general path. */
#include <stddef.h>
#include <string.h>
#include "codeinfo.h"
#include "engine.h"
#include "frames.h"
#include "monitor.h"
#include "phase.h"
#include "tstate.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))

/* ---- small helpers ------------------------------------------------------ */

static inline PyObject *result_none(void) { return Py_None; /* immortal */ }
/* DISABLE is only returned while a run holds it; the NULL check keeps a
 * callback that outlived its run (it never should) harmless. */
static inline PyObject *result_disable(void)
{
    return engine.disable ? Py_NewRef(engine.disable) : Py_None;
}

/* Offsets arrive as ints in bytes; offsets past 256 bytes are heap ints.
 * They are never negative, so a compact int with the sign field clear (it is
 * 2 for negatives; zero's one digit is 0) is read straight from its digit,
 * without PyUnstable_Long_CompactValue's sign multiply. */
static inline int32_t unit_of(PyObject *offset, const codeinfo *ci)
{
    const PyLongObject *value = (const PyLongObject *)offset;
    uintptr_t tag = value->long_value.lv_tag;
    if (UNLIKELY(tag >= (2 << _PyLong_NON_SIZE_BITS) || (tag & 2)))
        return -1;
    size_t unit = (size_t)value->long_value.ob_digit[0] >> 1;
    if (UNLIKELY(unit >= (size_t)ci->n_units))
        return -1;
    return (int32_t)unit;
}

/* Code object -> its data, for events that do not come from the top frame
 * (a call's start, a frame we never saw). Direct-mapped on the pointer: a
 * call-heavy loop cycles through a handful of code objects. The registry keeps
 * every described code object alive for the whole run, so no pointer in here
 * can be reused by another code object meanwhile. */
#define CODE_CACHE_SIZE 64
static struct {
    PyObject *code;
    codeinfo *ci;
} code_cache[CODE_CACHE_SIZE];

#ifdef OCULAR_MONITOR_TEST
#  define monitor_forget_code monitor_test_forget_code
#endif
void monitor_forget_code(void)
{
    memset(code_cache, 0, sizeof(code_cache));
#ifndef OCULAR_MONITOR_TEST
    monitor_test_forget_code(); /* the test clock's callbacks keep a cache of their own */
#endif
}

static inline codeinfo *code_info(PyObject *code)
{
    uintptr_t bits = (uintptr_t)code;
    size_t slot = (size_t)((bits >> 4) ^ (bits >> 10)) % CODE_CACHE_SIZE;
    if (LIKELY(code_cache[slot].code == code))
        return code_cache[slot].ci;
    /* 3.13's PyMonitoring_Fire* API lets C code (e.g. Cython) pass look-alike
     * "code" objects; GetExtra would raise on them. */
    if (UNLIKELY(!PyCode_Check(code)))
        return NULL;
    void *extra = NULL;
    PyUnstable_Code_GetExtra(code, engine.extra_index, &extra);
    codeinfo *ci = extra ? (codeinfo *)extra : codeinfo_build(code);
    if (ci) {
        code_cache[slot].code = code;
        code_cache[slot].ci = ci;
    }
    return ci;
}

/* Not recording (stopping, or after an internal failure): make local sites
 * quiet; global events (exceptions, PY_UNWIND, PY_THROW) cannot be DISABLEd.
 * Between sampling windows a stray event (of code whose instrumentation
 * CPython has not updated yet) is ignored: a DISABLE would outlive the next
 * window's set_events for code that does not run in between. */
static inline PyObject *not_recording(int local)
{
    return local && !engine.sampling ? result_disable() : result_none();
}

/* An event of code Ocular does not trace. Local sites are DISABLEd at once;
 * a global event (which cannot be) still cost the frame that runs it: that
 * cost is taken off whatever piece is running. */
static NOINLINE PyObject *untraced_event(thread_data *td, int local, int kind)
{
    if (local)
        return result_disable();
    frame_unseen_event(td, thread_head(td, event_head(td, kind, 0)), event_tail(td, kind, 0), 0);
    return result_none();
}

/* Shared prologue: the thread's data, the code's data and the event's code
 * unit, or bail out. Most events come from the frame on top of the shadow
 * stack, whose code data is at hand; only the others look it up. A code
 * object's events always carry exact ints for offsets; the code check in
 * code_info keeps look-alike objects (and their arguments) out. */
#define PROLOGUE(nargs_needed, kind)                                           \
    uint64_t now = clock_tsc();                                                \
    PROLOGUE_AT(nargs_needed, kind)
#define PROLOGUE_AT(nargs_needed, kind)                                        \
    if (UNLIKELY(PyVectorcall_NARGS(nargsf) < (nargs_needed)))                 \
        return result_none();                                                  \
    thread_data *td = thread_current(now);                                     \
    if (UNLIKELY(!td))                                                         \
        return not_recording(local);                                           \
    shadow_frame *top = thread_top(td);                                        \
    codeinfo *ci;                                                              \
    if (LIKELY(top && top->code == args[0]))                                   \
        ci = top->ci;                                                          \
    else {                                                                     \
        ci = code_info(args[0]);                                               \
        if (UNLIKELY(!ci))                                                     \
            return result_none();                                              \
        if (UNLIKELY(ci->state != CI_TRACED))                                  \
            return untraced_event(td, local, kind);                            \
    }                                                                          \
    int32_t unit = unit_of(args[1], ci);                                       \
    if (UNLIKELY(unit < 0))                                                    \
        return result_none();                                                  \
    (void)now

/* Count a hit on a local site. SITE_RECORD: record the event; SITE_LAST:
 * record it and DISABLE the site (the N-th hit); SITE_SKIP: a site already at
 * N fired again after someone's restart_events(): DISABLE it unrecorded, so
 * that no site ever shows more than N hits. */
enum { SITE_RECORD, SITE_LAST, SITE_SKIP };

static inline int count_site(uint64_t *hits, int32_t unit, uint64_t limit)
{
    uint64_t count = ++hits[unit];
    if (LIKELY(count < limit))
        return SITE_RECORD;
    if (count == limit) {
        engine.disabled_sites++;
        return SITE_LAST;
    }
    hits[unit] = limit;
    return SITE_SKIP;
}

static inline PyObject *site_result(int site)
{
    return site == SITE_RECORD ? result_none() : result_disable();
}

#define CALLBACK(name) \
    static PyObject *name(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
#define UNUSED_CALLBACK_ARGS (void)self, (void)kwnames

/* ---- frames begin and end ------------------------------------------------ */

/* PY_START, PY_RESUME: a frame begins or continues at `unit`; PY_THROW: a
 * generator is resumed by throw(), with no telling where it will continue. */
static NOINLINE PyObject *on_push(PyObject *const *args, size_t nargsf, int local, int kind,
                                  int is_start, uint64_t now)
{
    PROLOGUE_AT(2, kind);
    int site = local ? count_site(ci->site_hits, unit, ci->limit) : SITE_RECORD;
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    engine.global_events += !local;
    int n_far = far_args(unit);
    frame_push(td, ci, python_depth(), local ? unit : -1, now,
               thread_head(td, event_head(td, kind, n_far)), event_tail(td, kind, n_far), is_start);
    phase_tick(td, now, PROBE_PUSH);
    return site_result(site);
}

/* The steady state of a call (PY_START, PY_RESUME): the thread is in the
 * recording stretch, a traced frame of the program calls a traced code object
 * whose site is below the threshold, at a block start, without a frame lost
 * in between, with the tables already large enough, the caller/callee edge
 * the one of the callee's last call, and no trace. Like edge_fast it only
 * checks, then commits what frame_push and segment_open would; anything else
 * goes to on_push with the tick already read (nothing has been changed). */
static inline PyObject *push_fast(PyObject *const *args, size_t nargsf, int kind, int is_start)
{
    uint64_t now = clock_tsc();
    thread_data *td = tls_thread;
    if (UNLIKELY(tls_stamp != engine.live_stamp || !td || PyVectorcall_NARGS(nargsf) < 2 || td->fresh ||
                 td->trace || td->count == td->capacity))
        return on_push(args, nargsf, 1, kind, is_start, now);
    shadow_frame *caller = thread_top(td);
    if (UNLIKELY(!caller || caller->own))
        return on_push(args, nargsf, 1, kind, is_start, now);
    codeinfo *ci = code_info(args[0]);
    if (UNLIKELY(!ci || ci->state != CI_TRACED || ci->id >= td->calls.n_funcs ||
                 ci->edge_thread != td || ci->edge_caller != caller->ci->id))
        return on_push(args, nargsf, 1, kind, is_start, now);
    int32_t unit = unit_of(args[1], ci);
    if (UNLIKELY(unit < 0))
        return on_push(args, nargsf, 1, kind, is_start, now);
    uint64_t count = ci->site_hits[unit] + 1;
    int32_t depth = python_depth();
    if (UNLIKELY(count >= ci->limit || caller->py_depth >= depth ||
                 (engine.mode == MODE_ADAPTIVE && !(ci->unit_flags[unit] & UNIT_LEADER))))
        return on_push(args, nargsf, 1, kind, is_start, now);
    int n_far = far_args(unit);
    int64_t head = event_head(td, kind, n_far), tail = event_tail(td, kind, n_far);
    ci->site_hits[unit] = count;
    caller->seg = piece_value(caller, now, head);
    td->removed += head + tail;
    uint32_t edge = ci->edge_index;
    shadow_frame *f = &td->frames[td->count++];
    *f = (shadow_frame){.ci = ci, .code = ci->code, .py_depth = depth, .seg_start = unit, .edge = edge,
                        .started = (uint8_t)is_start, .close_unit = -1};
    piece_begin(f, now, tail);
    func_stat *fs = &td->calls.funcs[ci->id];
    edge_stat *es = &td->calls.edges[edge];
    fs->active++;
    es->active++;
    fs->calls += (uint64_t)is_start;
    es->calls += (uint64_t)is_start;
    phase_tick(td, now, PROBE_PUSH);
    return result_none();
}

CALLBACK(on_py_start) { UNUSED_CALLBACK_ARGS; return push_fast(args, nargsf, EV_START, 1); }
CALLBACK(on_py_resume) { UNUSED_CALLBACK_ARGS; return push_fast(args, nargsf, EV_RESUME, 0); }
CALLBACK(on_py_throw) { UNUSED_CALLBACK_ARGS; return on_push(args, nargsf, 0, EV_RESUME, 0, clock_tsc()); }

/* PY_RETURN, PY_YIELD (local) and PY_UNWIND (global): the frame leaves. */
static NOINLINE PyObject *on_pop(PyObject *const *args, size_t nargsf, int local, int kind, uint64_t now)
{
    PROLOGUE_AT(2, kind);
    int site = local ? count_site(ci->site_hits, unit, ci->limit) : SITE_RECORD;
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    engine.global_events += !local;
    int n_far = far_args(unit);
    int64_t head = thread_head(td, event_head(td, kind, n_far)), tail = event_tail(td, kind, n_far);
    /* Where no site of this code is ever DISABLEd (threshold 0, sampling
     * windows), a frame cannot leave unseen: an event of the top frame's code
     * is the top frame's. Only otherwise does CPython's frame depth have to
     * tell a recursive caller from a callee whose return went unreported. */
    shadow_frame *f = LIKELY(top && top->ci == ci && ci->limit == UINT64_MAX)
                          ? top
                          : frame_for_event(td, ci, python_depth(), now, head);
    if (LIKELY(f != NULL))
        frame_pop(td, f, unit, now, head, tail);
    else
        frame_unseen_event(td, head, tail, 1);
    return site_result(site);
}

/* The steady state of a return or yield: the top frame, of plain program
 * code at threshold 0 (where no frame leaves unseen), leaves from the block
 * its segment began in (adaptive) or from the instruction it began at
 * (precise), with no trace and an edge of its own. It checks, then commits
 * what frame_pop, segment_close and frames_flush would; anything else goes to
 * on_pop with the tick already read. */
static inline PyObject *pop_fast(PyObject *const *args, size_t nargsf, int kind)
{
    uint64_t now = clock_tsc();
    thread_data *td = tls_thread;
    if (UNLIKELY(tls_stamp != engine.live_stamp || !td || PyVectorcall_NARGS(nargsf) < 2 || td->fresh ||
                 td->trace))
        return on_pop(args, nargsf, 1, kind, now);
    shadow_frame *f = thread_top(td);
    if (UNLIKELY(!f || f->code != args[0] || (f->tainted | f->raised | f->own | f->over_own) ||
                 f->edge == NO_EDGE))
        return on_pop(args, nargsf, 1, kind, now);
    codeinfo *ci = f->ci;
    int32_t start = f->seg_start, unit = unit_of(args[1], ci);
    if (UNLIKELY((start | unit) < 0 || ci->limit != UINT64_MAX))
        return on_pop(args, nargsf, 1, kind, now);
    uint32_t block = ci->block_of[start];
    if (UNLIKELY(engine.mode == MODE_PRECISE ? unit != start : block != ci->block_of[unit]))
        return on_pop(args, nargsf, 1, kind, now);
    int n_far = far_args(unit);
    int64_t head = event_head(td, kind, n_far), tail = event_tail(td, kind, n_far);
    int64_t ticks = piece_value(f, now, head);
    ci->site_hits[unit]++;
    td->removed += head + tail;
    if (engine.mode == MODE_PRECISE)
        ci->insn_cycles[start] += ticks;
    else {
        ci->blocks[block].hits++;
        ci->blocks[block].cycles += ticks;
    }
    int64_t self = f->self + ticks, inclusive = self + f->child;
    func_stat *fs = &td->calls.funcs[ci->id];
    edge_stat *es = &td->calls.edges[f->edge];
    fs->self += self;
    func_seen_in_window(fs);
    if (--fs->active == 0)
        fs->inclusive += inclusive;
    es->self += self;
    if (--es->active == 0)
        es->inclusive += inclusive;
    td->count--;
    shadow_frame *caller = &td->frames[td->count - 1];
    caller->child += inclusive;
    piece_begin(caller, now, tail);
    return result_none();
}

CALLBACK(on_py_return) { UNUSED_CALLBACK_ARGS; return pop_fast(args, nargsf, EV_RETURN); }
CALLBACK(on_py_yield) { UNUSED_CALLBACK_ARGS; return pop_fast(args, nargsf, EV_YIELD); }
CALLBACK(on_py_unwind) { UNUSED_CALLBACK_ARGS; return on_pop(args, nargsf, 0, EV_UNWIND, clock_tsc()); }

/* ---- events inside a frame ---------------------------------------------- */

/* The shadow frame for an event inside a frame (edges, instructions).
 *
 * These are the most frequent events, so the top frame running this code is
 * taken to be the one delivering it without asking CPython for the frame
 * depth (a call into a shared libpython and its thread-local storage). Only
 * if it is not, the depth settles it: frames above have ended unseen, and a
 * frame we never saw start (already running when tracing began, or its start
 * is DISABLEd) is adopted, its segment beginning at `start_unit`. Returns
 * NULL when the event only began a segment. */
static inline shadow_frame *frame_of_event(thread_data *td, shadow_frame *top, codeinfo *ci,
                                           int32_t start_unit, uint64_t now, int64_t head,
                                           int64_t tail)
{
    if (LIKELY(top && top->ci == ci))
        return top;
    int32_t depth = python_depth();
    shadow_frame *f = frame_for_event(td, ci, depth, now, head);
    if (f)
        return f;
    frame_adopt(td, ci, depth, start_unit, now, head, tail);
    return NULL;
}

/* JUMP, BRANCH (3.12/3.13), BRANCH_LEFT/RIGHT (3.14): (code, src, dest).
 * 3.14's LEFT and RIGHT of one branch report the same source offset, so RIGHT
 * counts its hits separately (`alt`). */
static PyObject *on_edge(PyObject *const *args, size_t nargsf, int alt, uint64_t now)
{
    const int local = 1;
    PROLOGUE_AT(3, EV_EDGE);
    int site = count_site(alt ? ci->site_hits_alt : ci->site_hits, unit, ci->limit);
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    int32_t dest = unit_of(args[2], ci);
    int n_far = far_args(unit) + far_args(dest);
    int64_t head = thread_head(td, event_head(td, EV_EDGE, n_far)), tail = event_tail(td, EV_EDGE, n_far);
    shadow_frame *f = frame_of_event(td, top, ci, dest, now, head, tail);
    if (LIKELY(f != NULL)) {
        segment_close(td, f, unit, now, head);
        segment_open(td, f, dest, now, tail);
    }
    return site_result(site);
}

/* The frame an in-frame event (edge, instruction) comes from in the steady
 * state: the thread belongs to the recording stretch and its top shadow frame
 * runs this code with a plain segment. NULL sends the event to the general
 * path, which sorts out everything else. */
static inline shadow_frame *steady_frame(thread_data **td_out, PyObject *const *args, size_t nargsf,
                                         Py_ssize_t nargs_needed)
{
    thread_data *td = tls_thread;
    if (UNLIKELY(tls_stamp != engine.live_stamp || !td || PyVectorcall_NARGS(nargsf) < nargs_needed))
        return NULL;
    shadow_frame *f = thread_top(td);
    if (UNLIKELY(!f || f->code != args[0] || (f->tainted | f->raised | f->own)))
        return NULL;
    *td_out = td;
    return f;
}

/* The traced ends of the fast paths are out of line and tail-called: a fast
 * path that makes no call keeps everything in scratch registers. */
static NOINLINE PyObject *edge_traced(thread_data *td, shadow_frame *f, int32_t src, int32_t dest,
                                      int64_t ticks, uint64_t now, int64_t tail)
{
    /* The slice of the block just left ends where the next one begins: one
     * NEXT record (the general path's merge in frames.c, done directly). */
    trace_record *record = frames_emit(td, TRACE_BLOCK_NEXT, now, 0, f->ci, dest, ticks);
    if (record)
        record->end_offset = src * 2;
    f->piece_tsc = now;
    f->piece_tail = tail;
    phase_tick(td, now, PROBE_EDGE_TRACED);
    return result_none();
}

static NOINLINE PyObject *instruction_traced(thread_data *td, shadow_frame *f, int32_t unit,
                                             uint64_t now, int64_t head, int64_t tail)
{
    frames_emit(td, TRACE_INSN, f->piece_tsc, now, f->ci, f->seg_start,
                (int64_t)(sub_of(now) - sub_of(f->piece_tsc)) - f->piece_tail - head);
    f->seg_start = unit;
    f->origin = sub_of(now) + (uint64_t)tail;
    f->piece_tsc = now;
    f->piece_tail = tail;
    phase_tick(td, now, PROBE_INSN_TRACED);
    return result_none();
}

/* The steady state of an edge, the most frequent event: the top frame moves
 * on within one block to a block start, below the threshold. It only checks,
 * then commits; anything else goes to on_edge with the tick already read,
 * which redoes the checks (nothing has been changed yet). */
static inline PyObject *edge_fast(PyObject *const *args, size_t nargsf, int alt)
{
    uint64_t now = clock_tsc();
    thread_data *td;
    shadow_frame *f = steady_frame(&td, args, nargsf, 3);
    if (UNLIKELY(!f))
        return on_edge(args, nargsf, alt, now);
    codeinfo *ci = f->ci;
    int32_t start = f->seg_start, src = unit_of(args[1], ci), dest = unit_of(args[2], ci);
    if (UNLIKELY((start | src | dest) < 0))
        return on_edge(args, nargsf, alt, now);
    uint32_t block = ci->block_of[start];
    uint64_t *hits = alt ? ci->site_hits_alt : ci->site_hits;
    uint64_t count = hits[src] + 1;
    if (UNLIKELY(block != ci->block_of[src] || !(ci->unit_flags[dest] & UNIT_LEADER) || count >= ci->limit))
        return on_edge(args, nargsf, alt, now);
    int n_far = far_args(src) + far_args(dest);
    int64_t head = event_head(td, EV_EDGE, n_far), tail = event_tail(td, EV_EDGE, n_far);
    int64_t ticks = piece_value(f, now, head);
    hits[src] = count;
    ci->blocks[block].hits++;
    ci->blocks[block].cycles += ticks;
    f->self += ticks;
    td->removed += head + tail;
    f->seg_start = dest;
    f->origin = sub_of(now) + (uint64_t)tail;
    if (UNLIKELY(f->traced))
        return edge_traced(td, f, src, dest, ticks, now, tail);
    phase_tick(td, now, PROBE_EDGE);
    return result_none();
}

CALLBACK(on_jump) { UNUSED_CALLBACK_ARGS; return edge_fast(args, nargsf, 0); }
CALLBACK(on_branch) { UNUSED_CALLBACK_ARGS; return edge_fast(args, nargsf, 0); }
#if PY_VERSION_HEX >= 0x030E0000
CALLBACK(on_branch_right) { UNUSED_CALLBACK_ARGS; return edge_fast(args, nargsf, 1); }
#endif

/* RAISE, RERAISE (global): the exception leaves the frame's straight line at
 * `unit`; until the frame handles it or unwinds, CPython is unwinding on
 * behalf of the instruction that raised. */
static PyObject *on_raise_event(PyObject *const *args, size_t nargsf)
{
    const int local = 0;
    PROLOGUE(2, EV_RAISE);
    engine.global_events++;
    int n_far = far_args(unit);
    int64_t head = thread_head(td, event_head(td, EV_RAISE, n_far)), tail = event_tail(td, EV_RAISE, n_far);
    shadow_frame *f = frame_for_event(td, ci, python_depth(), now, head);
    if (!f) {
        frame_unseen_event(td, head, tail, 0);
        return result_none();
    }
    /* Precise: the instruction being timed raised, or a call in it
     * propagated the exception; CPython reports the latter one code unit
     * before the CALL (3.13) or on its last cache entry (3.12). */
    if (engine.mode == MODE_PRECISE && f->seg_start >= 0)
        unit = unit >= f->seg_start - 1 && unit < ci->next_unit[f->seg_start] ? f->seg_start : -1;
    else if (engine.mode == MODE_ADAPTIVE && unit >= 0 && !(ci->unit_flags[unit] & UNIT_INSTR))
        while (unit > 0 && !(ci->unit_flags[unit] & UNIT_INSTR))
            unit--; /* a cache entry: its instruction */
    segment_close(td, f, unit, now, head);
    segment_open(td, f, -1, now, tail);
    if (unit >= 0 && !f->tainted) {
        f->seg_start = unit;
        f->raised = 1;
    }
    return result_none();
}

CALLBACK(on_raise) { UNUSED_CALLBACK_ARGS; return on_raise_event(args, nargsf); }

/* EXCEPTION_HANDLED (global): execution continues at the handler `unit`. */
CALLBACK(on_exception_handled)
{
    UNUSED_CALLBACK_ARGS;
    const int local = 0;
    PROLOGUE(2, EV_HANDLED);
    engine.global_events++;
    int n_far = far_args(unit);
    int64_t head = thread_head(td, event_head(td, EV_HANDLED, n_far)), tail = event_tail(td, EV_HANDLED, n_far);
    shadow_frame *f = frame_for_event(td, ci, python_depth(), now, head);
    if (f) {
        segment_close(td, f, -1, now, head);
        segment_open(td, f, unit, now, tail);
    }
    else
        frame_unseen_event(td, head, tail, 0);
    return result_none();
}

/* INSTRUCTION (precise mode): each instruction is a segment of its own. */
static PyObject *on_instruction_slow(PyObject *const *args, size_t nargsf, uint64_t now)
{
    const int local = 1;
    PROLOGUE_AT(2, EV_INSN);
    int site = count_site(ci->insn_hits, unit, ci->limit);
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    int n_far = far_args(unit);
    int64_t head = thread_head(td, event_head(td, EV_INSN, n_far)), tail = event_tail(td, EV_INSN, n_far);
    shadow_frame *f = frame_of_event(td, top, ci, unit, now, head, tail);
    if (LIKELY(f != NULL)) {
        segment_close(td, f, unit, now, head);
        segment_open(td, f, unit, now, tail);
    }
    return site_result(site);
}

/* The steady state, as for edges: the top frame's previous instruction ran
 * from its event to this one (its fall-through or jump successor, as
 * frames.c's precise_successor would say), below the threshold. Check, then
 * commit; anything else takes the slow path. */
CALLBACK(on_instruction)
{
    UNUSED_CALLBACK_ARGS;
    uint64_t now = clock_tsc();
    thread_data *td;
    shadow_frame *f = steady_frame(&td, args, nargsf, 2);
    if (UNLIKELY(!f))
        return on_instruction_slow(args, nargsf, now);
    codeinfo *ci = f->ci;
    int32_t timed = f->seg_start, unit = unit_of(args[1], ci);
    if (UNLIKELY((timed | unit) < 0))
        return on_instruction_slow(args, nargsf, now);
    uint64_t count = ci->insn_hits[unit] + 1;
    if (UNLIKELY((unit != ci->next_unit[timed] && unit != ci->jump_unit[timed]) || count >= ci->limit))
        return on_instruction_slow(args, nargsf, now);
    int n_far = far_args(unit);
    int64_t head = event_head(td, EV_INSN, n_far), tail = event_tail(td, EV_INSN, n_far);
    int64_t ticks = piece_value(f, now, head);
    ci->insn_hits[unit] = count;
    ci->insn_cycles[timed] += ticks;
    f->self += ticks;
    td->removed += head + tail;
    if (UNLIKELY(f->traced))
        return instruction_traced(td, f, unit, now, head, tail);
    f->seg_start = unit;
    f->origin = sub_of(now) + (uint64_t)tail;
    phase_tick(td, now, PROBE_INSN);
    return result_none();
}

/* ---- the callable objects ------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    const char *event;
    /* for the test clock's wrapper (monitor_test.c); the real path never reads them */
    vectorcallfunc inner;
    int kind;
    int local;
} callback_object;

/* A custom callable with tp_vectorcall skips the keyword and recursion checks
 * a builtin function would pay on every event. */
static PyTypeObject callback_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ocular._engine.Callback",
    .tp_basicsize = sizeof(callback_object),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(callback_object, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static const struct {
    const char *event;
    vectorcallfunc function;
    int modes; /* 1: adaptive, 2: precise */
    int kind;  /* engine.h's EV_* */
    int local; /* a local event (DISABLE-able), else global */
} callback_table[] = {
    {"PY_START", on_py_start, 3, EV_START, 1},
    {"PY_RESUME", on_py_resume, 3, EV_RESUME, 1},
    {"PY_THROW", on_py_throw, 3, EV_RESUME, 0},
    {"PY_RETURN", on_py_return, 3, EV_RETURN, 1},
    {"PY_YIELD", on_py_yield, 3, EV_YIELD, 1},
    {"PY_UNWIND", on_py_unwind, 3, EV_UNWIND, 0},
    {"RAISE", on_raise, 3, EV_RAISE, 0},
    {"RERAISE", on_raise, 3, EV_RAISE, 0},
    {"EXCEPTION_HANDLED", on_exception_handled, 3, EV_HANDLED, 0},
    {"JUMP", on_jump, 1, EV_EDGE, 1},
#if PY_VERSION_HEX >= 0x030E0000
    {"BRANCH_LEFT", on_branch, 1, EV_EDGE, 1},
    {"BRANCH_RIGHT", on_branch_right, 1, EV_EDGE, 1},
#else
    {"BRANCH", on_branch, 1, EV_EDGE, 1},
#endif
    {"INSTRUCTION", on_instruction, 2, EV_INSN, 1},
};

/* {event name: callable} for a mode; the Python layer registers them. With
 * `wrap`, each callable calls wrap(), which calls the callback's `inner`. */
static PyObject *make_callbacks(int mode, vectorcallfunc wrap)
{
    if (PyType_Ready(&callback_type) < 0)
        return NULL;
    PyObject *result = PyDict_New();
    if (!result)
        return NULL;
    for (size_t i = 0; i < sizeof(callback_table) / sizeof(callback_table[0]); i++) {
        if (!(callback_table[i].modes & (mode == MODE_PRECISE ? 2 : 1)))
            continue;
        callback_object *callback = PyObject_New(callback_object, &callback_type);
        if (!callback) {
            Py_DECREF(result);
            return NULL;
        }
        callback->vectorcall = wrap ? wrap : callback_table[i].function;
        callback->inner = callback_table[i].function;
        callback->event = callback_table[i].event;
        callback->kind = callback_table[i].kind;
        callback->local = callback_table[i].local;
        int failed = PyDict_SetItemString(result, callback_table[i].event, (PyObject *)callback);
        Py_DECREF(callback);
        if (failed) {
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}

#ifndef OCULAR_MONITOR_TEST
PyObject *monitor_callbacks(int mode)
{
    return make_callbacks(mode, NULL);
}
#endif
