/* monitor.c - the sys.monitoring callbacks: Ocular's hot path.
 *
 * Every callback reads the tick counter first, finds the code object's data in
 * co_extra and the thread's shadow stack in thread-local storage, and charges
 * the ticks since the frame's previous event to the straight-line code that
 * ran in between. It allocates nothing, calls no Python code, takes no lock
 * and never raises: the rare slow paths (first event of a code object or a
 * thread, a block split, a stack that must grow) live in codeinfo.c and
 * tstate.c, and an internal failure only stops recording (engine_fail).
 *
 * Attribution rules (see README "How Ocular measures"):
 *   - Ticks between two consecutive events of one frame form a segment.
 *     A callee's start pauses the caller's segment, its end resumes it.
 *   - Adaptive mode: a segment runs from an event's destination to the next
 *     event's source. If nothing in between could have jumped without telling
 *     us, its blocks are exactly the ones on the straight path; each gets a hit
 *     and a share of the ticks by instruction count. Otherwise (a DISABLEd
 *     jump, an exception) the ticks are the function's but no block's.
 *   - Precise mode: a segment is one instruction; it is charged to that
 *     instruction only when the next event lies on one of its successors.
 *   - Every piece of a segment carries the cost of one event, calibrated at
 *     start on an empty function, and subtracted here.
 *   - Whatever cannot be attributed goes to engine.unattributed. */
#include <stddef.h>
#include <string.h>
#include "codeinfo.h"
#include "engine.h"
#include "monitor.h"
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

void monitor_forget_code(void)
{
    memset(code_cache, 0, sizeof(code_cache));
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

/* ---- trace records ------------------------------------------------------ */

static inline trace_record *emit(thread_data *td, uint16_t kind, uint64_t tsc, uint64_t end_tsc,
                                 const codeinfo *ci, int32_t unit, int64_t cycles)
{
    trace_record *record = trace_reserve(td->trace);
    if (!record)
        return NULL;
    record->tsc = tsc;
    record->end_tsc = end_tsc;
    record->cycles = cycles;
    record->kind = kind;
    record->reserved = 0;
    record->code_id = ci ? ci->id : 0;
    record->offset = unit * 2;
    record->line = ci && unit >= 0 ? ci->unit_line[unit] : -1;
    return record;
}

static inline void emit_block_begin(thread_data *td, const shadow_frame *f, uint64_t now)
{
    if (!(f->traced && engine.mode == MODE_ADAPTIVE && f->seg_start >= 0))
        return;
    /* At an edge the previous segment's END was written at this very tick:
     * turn it into one NEXT record instead of adding a BEGIN (half the trace
     * traffic of a loop). */
    trace_thread *out = td->trace;
    trace_record *last = out->cur > out->start ? out->cur - 1 : NULL;
    if (last && last->kind == TRACE_BLOCK_END && last->tsc == now) {
        last->kind = TRACE_BLOCK_NEXT;
        last->end_offset = last->offset;
        last->code_id = f->ci->id;
        last->offset = f->seg_start * 2;
        last->line = f->ci->unit_line[f->seg_start];
        return;
    }
    emit(td, TRACE_BLOCK_BEGIN, now, 0, f->ci, f->seg_start, 0);
}

static inline void emit_block_end(thread_data *td, const shadow_frame *f, uint64_t now,
                                  int32_t end_unit, int64_t ticks)
{
    if (f->traced && engine.mode == MODE_ADAPTIVE && f->seg_start >= 0)
        emit(td, TRACE_BLOCK_END, now, 0, f->ci, end_unit, ticks);
}

/* Precise mode draws an instruction's pieces on a track of their own. */
static inline void emit_insn_piece(thread_data *td, const shadow_frame *f, uint64_t now)
{
    if (f->traced && engine.mode == MODE_PRECISE && f->seg_start >= 0)
        emit(td, TRACE_INSN, f->resumed_at, now, f->ci, f->seg_start,
             (int64_t)(now - f->resumed_at) - engine.event_cost);
}

/* ---- segments ----------------------------------------------------------- */

/* Charge a segment that ran from block `first` to block `last`: follow the
 * straight path (and jumps CPython never reports); refuse if any block on it
 * could have been left without an event. */
static int charge_path(codeinfo *ci, uint32_t first, uint32_t last, int64_t ticks)
{
    uint64_t total_instr = 0;
    int32_t steps = 0;
    for (uint32_t block = first;;) {
        const block_info *info = &ci->blocks[block];
        total_instr += info->n_instr;
        if (block == last)
            break;
        if ((info->flags & BLOCK_ENDS_EDGE) || ++steps > ci->n_blocks)
            return 0;
        if (info->flags & BLOCK_SILENT_JUMP)
            block = (uint32_t)info->silent_target;
        else if ((info->flags & BLOCK_SILENT_COND) && block + 1 != last)
            block = (uint32_t)info->silent_target; /* SEND's fall-through yields, i.e. ends */
        else
            block++;
        if (block >= (uint32_t)ci->n_blocks || (ci->blocks[block].flags & BLOCK_ENTERED_BY_EXCEPTION))
            return 0;
    }
    int64_t charged = 0;
    for (uint32_t block = first;;) {
        block_info *info = &ci->blocks[block];
        int64_t share = block == last ? ticks - charged
                                      : ticks * (int64_t)info->n_instr / (int64_t)(total_instr ? total_instr : 1);
        info->hits++;
        info->cycles += share;
        charged += share;
        if (block == last)
            break;
        if (info->flags & BLOCK_SILENT_JUMP)
            block = (uint32_t)info->silent_target;
        else if ((info->flags & BLOCK_SILENT_COND) && block + 1 != last)
            block = (uint32_t)info->silent_target;
        else
            block++;
    }
    return 1;
}

/* Is `next` where control goes after instruction `unit` without passing
 * another instruction that would have delivered an event? */
static int precise_successor(const codeinfo *ci, int32_t unit, int32_t next)
{
    int32_t fall = ci->next_unit[unit], target = ci->jump_unit[unit];
    if (next == fall || next == target)
        return 1;
    /* END_FOR gets no INSTRUCTION event, and an exhausted FOR_ITER reports
     * its destination past it (3.12) or past it and the POP_TOP after it (3.13). */
    if (target >= 0 && target < ci->n_units && (opcode_flags[ci->opcodes[target]] & OPF_END_FOR))
        return next > target && next <= target + 2;
    return 0;
}

/* The function's own ticks that no block or instruction can be given. */
static inline void unplaced(codeinfo *ci, int64_t ticks)
{
    ci->unplaced_self += ticks;
    engine.unattributed += ticks;
}

/* Close a segment that did not take close_segment's fast path. */
static void close_segment_slow(thread_data *td, shadow_frame *f, int32_t end_unit, uint64_t now,
                               int64_t ticks)
{
    codeinfo *ci = f->ci;
    int32_t start = f->seg_start;
    emit_insn_piece(td, f, now);
    emit_block_end(td, f, now, end_unit, ticks);
    if (f->tainted) {
        engine.unattributed += ticks;
        return;
    }
    if (start < 0 || end_unit < 0) {
        unplaced(ci, ticks);
        return;
    }
    if (engine.mode == MODE_PRECISE) {
        if (end_unit == start || precise_successor(ci, start, end_unit))
            ci->insn_cycles[start] += ticks;
        else
            unplaced(ci, ticks);
        return;
    }
    uint32_t first = ci->block_of[start], last = ci->block_of[end_unit];
    if (first == last) {
        ci->blocks[first].hits++;
        ci->blocks[first].cycles += ticks;
    }
    else if (!charge_path(ci, first, last, ticks))
        unplaced(ci, ticks);
}

/* Close the top-of-stack frame's segment at `end_unit` (the source of the
 * event, -1 when the event says nothing about where the frame was). The fast
 * path is the adaptive steady state: one block, nothing to write out. `mode`
 * is a constant where the caller knows it (edges are adaptive-only). */
static inline void close_segment(thread_data *td, shadow_frame *f, int32_t end_unit, uint64_t now,
                                 int mode)
{
    int64_t ticks = (int64_t)(now - f->origin);
    codeinfo *ci = f->ci;
    int32_t start = f->seg_start;
    if (LIKELY(mode == MODE_ADAPTIVE && !(f->traced | f->tainted) && (start | end_unit) >= 0)) {
        uint32_t first = ci->block_of[start], last = ci->block_of[end_unit];
        if (LIKELY(first == last)) {
            ci->blocks[first].hits++;
            ci->blocks[first].cycles += ticks;
        }
        else if (!charge_path(ci, first, last, ticks))
            unplaced(ci, ticks);
        return;
    }
    close_segment_slow(td, f, end_unit, now, ticks);
}

/* The frame's running segment now starts at `unit`; all that the fast paths
 * (whose frame is untainted) need of open_segment. */
static inline void step_to(shadow_frame *f, int32_t unit, uint64_t now)
{
    f->seg_start = unit;
    f->origin = now + (uint64_t)engine.event_cost;
}

/* Begin the frame's next segment at `unit` (-1: unknown until its next event). */
static inline __attribute__((always_inline)) void open_segment(thread_data *td, shadow_frame *f,
                                                              int32_t unit, uint64_t now, int mode)
{
    if (unit >= 0 && mode == MODE_ADAPTIVE && UNLIKELY(!(f->ci->unit_flags[unit] & UNIT_LEADER)))
        if (codeinfo_split(f->ci, unit) < 0)
            unit = -1;
    step_to(f, unit, now);
    f->tainted = 0;
    f->resumed_at = now;
    if (UNLIKELY(f->traced))
        emit_block_begin(td, f, now);
}

/* ---- the shadow stack ---------------------------------------------------- */

/* Frames deeper than `depth` have ended without an event we saw (a DISABLEd
 * return site, a generator closed silently). Their time, and the running
 * piece they shared with whoever called them, cannot be attributed. */
static void lose_frames(thread_data *td, int32_t depth, uint64_t now)
{
    int running = 1;
    while (td->count && td->frames[td->count - 1].py_depth > depth) {
        shadow_frame *f = &td->frames[--td->count];
        engine.unattributed += running ? (int64_t)(now - f->origin) : f->seg_ticks;
        running = 0;
        engine.lost_frames++;
        emit_block_end(td, f, now, -1, 0);
        if (f->traced)
            emit(td, TRACE_FUNC_END, now, 0, NULL, -1, 0);
    }
    if (td->count) {
        shadow_frame *top = &td->frames[td->count - 1];
        top->tainted = 1;
        frame_resume(top, now);
    }
}

/* The shadow frame of the frame delivering an event, or NULL if we never saw
 * it start. */
static inline shadow_frame *frame_for_event(thread_data *td, const codeinfo *ci, int32_t depth,
                                            uint64_t now)
{
    if (UNLIKELY(td->count && td->frames[td->count - 1].py_depth > depth))
        lose_frames(td, depth, now);
    if (LIKELY(td->count)) {
        shadow_frame *top = &td->frames[td->count - 1];
        if (LIKELY(top->py_depth == depth && top->ci == ci))
            return top;
        if (top->py_depth == depth) /* another frame held this depth and left unseen */
            lose_frames(td, depth - 1, now);
    }
    return NULL;
}

static shadow_frame *push_frame(thread_data *td, codeinfo *ci, int32_t depth, int32_t unit,
                                uint64_t now)
{
    if (UNLIKELY(td->count && td->frames[td->count - 1].py_depth >= depth))
        lose_frames(td, depth - 1, now);
    if (td->count) {
        shadow_frame *caller = &td->frames[td->count - 1];
        emit_insn_piece(td, caller, now);
        frame_pause(caller, now);
    }
    if (UNLIKELY(td->count == td->capacity) && thread_grow(td) < 0)
        return NULL;
    shadow_frame *f = &td->frames[td->count++];
    f->ci = ci;
    f->code = ci->code;
    f->py_depth = depth;
    f->traced = td->trace && td->count <= TRACE_MAX_FRAMES && !ci->is_calibration;
    if (f->traced)
        emit(td, TRACE_FUNC_BEGIN, now, 0, ci, -1, 0);
    open_segment(td, f, unit, now, engine.mode);
    return f;
}

static void pop_frame(thread_data *td, shadow_frame *f, int32_t end_unit, uint64_t now)
{
    close_segment(td, f, end_unit, now, engine.mode);
    if (UNLIKELY(f->ci->is_calibration)) /* the event cost is 0 while calibrating */
        monitor_calibration_sample((int64_t)(now - f->origin));
    if (f->traced)
        emit(td, TRACE_FUNC_END, now, 0, NULL, -1, 0);
    td->count--;
    if (td->count)
        frame_resume(&td->frames[td->count - 1], now);
}

/* A frame we never saw start has ended. Its time ran inside the caller's
 * running piece, which therefore no longer measures the caller alone. */
static inline void unseen_frame_ended(thread_data *td)
{
    if (td->count)
        td->frames[td->count - 1].tainted = 1;
}

/* ---- callbacks ----------------------------------------------------------- */

/* Shared prologue: the thread's data, the code's data and the event's code
 * unit, or bail out. Most events come from the frame on top of the shadow
 * stack, whose code data is at hand; only the others look it up. A code
 * object's events always carry exact ints for offsets; the code check in
 * code_info keeps look-alike objects (and their arguments) out. */
#define PROLOGUE(nargs_needed)                                                 \
    uint64_t now = clock_tsc();                                                \
    PROLOGUE_AT(nargs_needed)
#define PROLOGUE_AT(nargs_needed)                                              \
    if (UNLIKELY(PyVectorcall_NARGS(nargsf) < (nargs_needed)))                 \
        return result_none();                                                  \
    thread_data *td = thread_current();                                        \
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
            return local ? result_disable() : result_none();                   \
    }                                                                          \
    int32_t unit = unit_of(args[1], ci);                                       \
    if (UNLIKELY(unit < 0))                                                    \
        return result_none();                                                  \
    (void)now

/* Not recording (stopping, or after an internal failure): make local sites
 * quiet; global events (exceptions, PY_UNWIND, PY_THROW) cannot be DISABLEd. */
static inline PyObject *not_recording(int local)
{
    return local ? result_disable() : result_none();
}

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

/* PY_START, PY_RESUME: a frame begins or continues; PY_THROW: a generator is
 * resumed by throw(), with no telling where it will continue. */
static inline PyObject *on_push(PyObject *const *args, size_t nargsf, int local, int is_start)
{
    PROLOGUE(2);
    int site = local ? count_site(ci->site_hits, unit, ci->limit) : SITE_RECORD;
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    engine.global_events += !local;
    if (push_frame(td, ci, python_depth(), local ? unit : -1, now) && is_start)
        ci->calls++;
    return site_result(site);
}

CALLBACK(on_py_start) { UNUSED_CALLBACK_ARGS; return on_push(args, nargsf, 1, 1); }
CALLBACK(on_py_resume) { UNUSED_CALLBACK_ARGS; return on_push(args, nargsf, 1, 0); }
CALLBACK(on_py_throw) { UNUSED_CALLBACK_ARGS; return on_push(args, nargsf, 0, 0); }

/* PY_RETURN, PY_YIELD (local) and PY_UNWIND (global): the frame leaves. */
static inline PyObject *on_pop(PyObject *const *args, size_t nargsf, int local)
{
    PROLOGUE(2);
    int site = local ? count_site(ci->site_hits, unit, ci->limit) : SITE_RECORD;
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    engine.global_events += !local;
    shadow_frame *f = frame_for_event(td, ci, python_depth(), now);
    if (LIKELY(f != NULL))
        pop_frame(td, f, unit, now);
    else
        unseen_frame_ended(td);
    return site_result(site);
}

CALLBACK(on_py_return) { UNUSED_CALLBACK_ARGS; return on_pop(args, nargsf, 1); }
CALLBACK(on_py_yield) { UNUSED_CALLBACK_ARGS; return on_pop(args, nargsf, 1); }
CALLBACK(on_py_unwind) { UNUSED_CALLBACK_ARGS; return on_pop(args, nargsf, 0); }

/* The shadow frame for an event inside a frame (edges, instructions).
 *
 * These are the most frequent events, so the top frame running this code is
 * taken to be the one delivering it without asking CPython for the frame
 * depth (a call into a shared libpython and its thread-local storage). Only
 * if it is not, the depth settles it: frames above have ended unseen, and a
 * frame we never saw start (already running when tracing began, or its start
 * is DISABLEd) is adopted, its segment beginning at `start_unit`. Returns
 * NULL when the event only began a segment. */
static inline shadow_frame *frame_of_edge(thread_data *td, shadow_frame *top, codeinfo *ci,
                                          int32_t start_unit, uint64_t now)
{
    if (LIKELY(top && top->ci == ci))
        return top;
    int32_t depth = python_depth();
    shadow_frame *f = frame_for_event(td, ci, depth, now);
    if (f)
        return f;
    unseen_frame_ended(td);
    push_frame(td, ci, depth, start_unit, now);
    return NULL;
}

/* JUMP, BRANCH (3.12/3.13), BRANCH_LEFT/RIGHT (3.14): (code, src, dest).
 * 3.14's LEFT and RIGHT of one branch report the same source offset, so RIGHT
 * counts its hits separately (`alt`). */
static PyObject *on_edge(PyObject *const *args, size_t nargsf, int alt, uint64_t now)
{
    const int local = 1;
    PROLOGUE_AT(3);
    int site = count_site(alt ? ci->site_hits_alt : ci->site_hits, unit, ci->limit);
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    int32_t dest = unit_of(args[2], ci);
    shadow_frame *f = frame_of_edge(td, top, ci, dest, now);
    if (LIKELY(f != NULL)) {
        close_segment(td, f, unit, now, MODE_ADAPTIVE);
        open_segment(td, f, dest, now, MODE_ADAPTIVE);
    }
    return site_result(site);
}

/* The frame an in-frame event (edge, instruction) comes from in the steady
 * state: the thread belongs to the recording run and its top shadow frame runs
 * this code with an untainted segment. NULL sends the event to the slow path,
 * which sorts out everything else. */
static inline shadow_frame *steady_frame(thread_data **td_out, PyObject *const *args, size_t nargsf,
                                         Py_ssize_t nargs_needed)
{
    thread_data *td = tls_thread;
    if (UNLIKELY(tls_run != engine.live_run || !td || PyVectorcall_NARGS(nargsf) < nargs_needed))
        return NULL;
    shadow_frame *f = thread_top(td);
    if (UNLIKELY(!f || f->code != args[0] || f->tainted))
        return NULL;
    *td_out = td;
    return f;
}

/* The traced ends of the fast paths are out of line and tail-called: a fast
 * path that makes no call keeps everything in scratch registers, which saves
 * six pushes and pops on every untraced event. */
static NOINLINE PyObject *edge_traced(thread_data *td, const codeinfo *ci, int32_t src,
                                      int32_t dest, int64_t ticks, uint64_t now)
{
    /* The slice of the block just left ends where the next one begins: one
     * NEXT record (emit_block_begin's merge, done directly). */
    trace_record *record = emit(td, TRACE_BLOCK_NEXT, now, 0, ci, dest, ticks);
    if (record)
        record->end_offset = src * 2;
    return result_none();
}

static NOINLINE PyObject *instruction_traced(thread_data *td, shadow_frame *f, int32_t unit,
                                             uint64_t now)
{
    emit_insn_piece(td, f, now);
    f->resumed_at = now;
    step_to(f, unit, now);
    return result_none();
}

/* The steady state of an edge, the most frequent event: the top frame moves
 * on within one block to a block start, below the threshold. It
 * only checks, then commits; anything else goes to on_edge with the tick
 * already read, which redoes the checks (nothing has been changed yet). */
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
    int64_t ticks = (int64_t)(now - f->origin);
    hits[src] = count;
    ci->blocks[block].hits++;
    ci->blocks[block].cycles += ticks;
    step_to(f, dest, now);
    if (UNLIKELY(f->traced))
        return edge_traced(td, ci, src, dest, ticks, now);
    return result_none();
}

CALLBACK(on_jump) { UNUSED_CALLBACK_ARGS; return edge_fast(args, nargsf, 0); }
CALLBACK(on_branch) { UNUSED_CALLBACK_ARGS; return edge_fast(args, nargsf, 0); }
#if PY_VERSION_HEX >= 0x030E0000
CALLBACK(on_branch_right) { UNUSED_CALLBACK_ARGS; return edge_fast(args, nargsf, 1); }
#endif

/* RAISE, RERAISE (global): the exception leaves the frame's straight line at
 * `unit`; until the frame handles it or unwinds we do not know where it is. */
CALLBACK(on_raise)
{
    UNUSED_CALLBACK_ARGS;
    const int local = 0;
    PROLOGUE(2);
    engine.global_events++;
    shadow_frame *f = frame_for_event(td, ci, python_depth(), now);
    if (f) {
        /* Precise: the instruction being timed raised, or a call in it
         * propagated the exception; CPython reports the latter one code unit
         * before the CALL (3.13) or on its last cache entry (3.12). */
        if (engine.mode == MODE_PRECISE && f->seg_start >= 0)
            unit = unit >= f->seg_start - 1 && unit < ci->next_unit[f->seg_start] ? f->seg_start : -1;
        close_segment(td, f, unit, now, engine.mode);
        open_segment(td, f, -1, now, engine.mode);
    }
    return result_none();
}

/* EXCEPTION_HANDLED (global): execution continues at the handler `unit`. */
CALLBACK(on_exception_handled)
{
    UNUSED_CALLBACK_ARGS;
    const int local = 0;
    PROLOGUE(2);
    engine.global_events++;
    shadow_frame *f = frame_for_event(td, ci, python_depth(), now);
    if (f) {
        close_segment(td, f, -1, now, engine.mode);
        open_segment(td, f, unit, now, engine.mode);
    }
    return result_none();
}

/* INSTRUCTION (precise mode): each instruction is a segment of its own. */
static PyObject *on_instruction_slow(PyObject *const *args, size_t nargsf, uint64_t now)
{
    const int local = 1;
    PROLOGUE_AT(2);
    int site = count_site(ci->insn_hits, unit, ci->limit);
    if (UNLIKELY(site == SITE_SKIP))
        return result_disable();
    shadow_frame *f = frame_of_edge(td, top, ci, unit, now);
    if (LIKELY(f != NULL)) {
        close_segment(td, f, unit, now, MODE_PRECISE);
        open_segment(td, f, unit, now, MODE_PRECISE);
    }
    return site_result(site);
}

/* The steady state, as for edges: the top frame's previous instruction ran
 * from its event to this one (its fall-through or jump successor, as
 * precise_successor would say), below the threshold. Check, then commit;
 * anything else takes the slow path. */
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
    ci->insn_hits[unit] = count;
    ci->insn_cycles[timed] += (int64_t)(now - f->origin);
    if (UNLIKELY(f->traced))
        return instruction_traced(td, f, unit, now);
    step_to(f, unit, now);
    return result_none();
}

/* ---- stopping ------------------------------------------------------------ */

/* Tracing stops with frames still open on every thread's stack: their running
 * segments have no end event, so their ticks are the function's, no block's. */
void monitor_close_all(uint64_t now)
{
    for (thread_data *td = all_threads; td; td = td->next) {
        while (td->count) {
            shadow_frame *f = &td->frames[td->count - 1];
            close_segment(td, f, -1, now, engine.mode);
            if (f->traced)
                emit(td, TRACE_FUNC_END, now, 0, NULL, -1, 0);
            td->count--;
            if (td->count)
                frame_resume(&td->frames[td->count - 1], now);
        }
    }
}

/* ---- calibration --------------------------------------------------------- */

#define MAX_CALIBRATION_SAMPLES 4096
static int64_t calibration_samples[MAX_CALIBRATION_SAMPLES];
static int calibration_count;

void monitor_calibration_sample(int64_t ticks)
{
    if (calibration_count < MAX_CALIBRATION_SAMPLES)
        calibration_samples[calibration_count++] = ticks;
}

static int compare_ticks(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The event cost is the median of an empty function's start-to-return time:
 * it holds the second half of one event and the first half of the next, which
 * is exactly what each piece of a segment carries. */
int64_t monitor_calibration_result(void)
{
    int count = calibration_count;
    calibration_count = 0;
    if (count == 0)
        return 0;
    qsort(calibration_samples, (size_t)count, sizeof(int64_t), compare_ticks);
    return calibration_samples[count / 2];
}

/* ---- the callable objects ------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    const char *event;
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
} callback_table[] = {
    {"PY_START", on_py_start, 3},
    {"PY_RESUME", on_py_resume, 3},
    {"PY_THROW", on_py_throw, 3},
    {"PY_RETURN", on_py_return, 3},
    {"PY_YIELD", on_py_yield, 3},
    {"PY_UNWIND", on_py_unwind, 3},
    {"RAISE", on_raise, 3},
    {"RERAISE", on_raise, 3},
    {"EXCEPTION_HANDLED", on_exception_handled, 3},
    {"JUMP", on_jump, 1},
#if PY_VERSION_HEX >= 0x030E0000
    {"BRANCH_LEFT", on_branch, 1},
    {"BRANCH_RIGHT", on_branch_right, 1},
#else
    {"BRANCH", on_branch, 1},
#endif
    {"INSTRUCTION", on_instruction, 2},
};

/* {event name: callable} for a mode; the Python layer registers them. */
PyObject *monitor_callbacks(int mode)
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
        callback->vectorcall = callback_table[i].function;
        callback->event = callback_table[i].event;
        int failed = PyDict_SetItemString(result, callback_table[i].event, (PyObject *)callback);
        Py_DECREF(callback);
        if (failed) {
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}
