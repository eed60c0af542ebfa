/* frames.c - segments and the shadow stack.
 *
 * Attribution rules (see README "How Ocular measures"):
 *   - Ticks between two consecutive events of one frame form a segment.
 *     A callee's start pauses the caller's segment, its end resumes it.
 *   - Adaptive mode: a segment runs from an event's destination to the next
 *     event's source. If nothing in between could have jumped without telling
 *     us, its blocks are exactly the ones on the straight path; each gets a hit
 *     and a share of the ticks by instruction count. Otherwise (a DISABLEd
 *     jump, an exception at threshold > 0) the ticks are the function's but no
 *     block's (`unplaced`).
 *   - Precise mode: a segment is one instruction; it is charged to that
 *     instruction only when the next event lies on one of its successors.
 *   - After a RAISE the frame is inside CPython's unwinding until the handler
 *     (EXCEPTION_HANDLED) or the frame's end (PY_UNWIND): that segment is the
 *     raising instruction's, and its block's.
 *   - Every piece is a frame's; time no known frame can take (a frame that
 *     vanished unseen) is the thread's `lost` time. */
#include <string.h>
#include "calibrate.h"
#include "frames.h"

/* ---- trace records ------------------------------------------------------ */

trace_record *frames_emit(thread_data *td, uint16_t kind, uint64_t tsc, uint64_t end_tsc,
                          const codeinfo *ci, int32_t unit, int64_t cycles)
{
    trace_record *record = trace_reserve(td->trace);
    if (!record)
        return NULL;
    record->tsc = tsc;
    record->end_tsc = end_tsc;
    record->cycles = cycles >> SUB_SHIFT;
    record->kind = kind;
    record->reserved = 0;
    record->code_id = ci ? ci->id : 0;
    record->offset = unit * 2;
    record->line = ci && unit >= 0 ? ci->unit_line[unit] : -1;
    return record;
}

static void emit_block_begin(thread_data *td, const shadow_frame *f, uint64_t now)
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
    frames_emit(td, TRACE_BLOCK_BEGIN, now, 0, f->ci, f->seg_start, 0);
}

static void emit_block_end(thread_data *td, const shadow_frame *f, uint64_t now, int32_t end_unit,
                           int64_t ticks)
{
    if (f->traced && engine.mode == MODE_ADAPTIVE && f->seg_start >= 0)
        frames_emit(td, TRACE_BLOCK_END, now, 0, f->ci, end_unit, ticks);
}

/* Precise mode draws an instruction's pieces on a track of their own. */
static void emit_insn_piece(thread_data *td, const shadow_frame *f, uint64_t now, int64_t head)
{
    if (f->traced && engine.mode == MODE_PRECISE && f->seg_start >= 0)
        frames_emit(td, TRACE_INSN, f->piece_tsc, now, f->ci, f->seg_start,
                    (int64_t)(sub_of(now) - sub_of(f->piece_tsc)) - f->piece_tail - head);
}

/* ---- segments ----------------------------------------------------------- */

/* The block after `block` on a straight path towards `last`, following the
 * jumps CPython never reports. */
static inline uint32_t next_on_path(const codeinfo *ci, uint32_t block, uint32_t last)
{
    const block_info *info = &ci->blocks[block];
    if (info->flags & BLOCK_SILENT_JUMP)
        return (uint32_t)info->silent_target;
    if ((info->flags & BLOCK_SILENT_COND) && block + 1 != last)
        return (uint32_t)info->silent_target; /* SEND's fall-through yields, i.e. ends */
    return block + 1;
}

/* Charge a segment that ran from block `first` to block `last`: follow the
 * straight path; refuse if any block on it could have been left without an
 * event. The ticks are shared by instruction count, the remainder to the
 * last block, so that the shares add up exactly. */
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
        block = next_on_path(ci, block, last);
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
        block = next_on_path(ci, block, last);
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

/* The function's own time that no block or instruction can be given. */
static inline void unplaced(codeinfo *ci, int64_t ticks)
{
    ci->unplaced_self += ticks;
}

/* Charge a raised segment (RAISE to EXCEPTION_HANDLED or PY_UNWIND) to the
 * instruction that raised, and its block; no hit: the segment that reached
 * the raise already counted it. */
static void charge_raise_point(codeinfo *ci, int32_t unit, int64_t ticks)
{
    if (engine.mode == MODE_PRECISE)
        ci->insn_cycles[unit] += ticks;
    else
        ci->blocks[ci->block_of[unit]].cycles += ticks;
}

void segment_close(thread_data *td, shadow_frame *f, int32_t end_unit, uint64_t now, int64_t head)
{
    int64_t ticks = piece_value(f, now, head);
    td->removed += head;
    f->self += ticks;
    codeinfo *ci = f->ci;
    if (!ci || f->own)
        return; /* the root (its time is the thread's time outside traced code), or
                   Ocular's own time: neither has blocks */
    int32_t start = f->seg_start;
    emit_insn_piece(td, f, now, head);
    emit_block_end(td, f, now, end_unit, ticks);
    if (f->tainted) {
        unplaced(ci, ticks);
        ci->tainted_self += ticks;
    }
    else if (start < 0)
        unplaced(ci, ticks);
    else if (f->raised)
        charge_raise_point(ci, start, ticks);
    else if (end_unit < 0)
        unplaced(ci, ticks);
    else if (engine.mode == MODE_PRECISE) {
        if (end_unit == start || precise_successor(ci, start, end_unit))
            ci->insn_cycles[start] += ticks;
        else
            unplaced(ci, ticks);
    }
    else {
        uint32_t first = ci->block_of[start], last = ci->block_of[end_unit];
        if (first == last) {
            ci->blocks[first].hits++;
            ci->blocks[first].cycles += ticks;
        }
        else if (!charge_path(ci, first, last, ticks))
            unplaced(ci, ticks);
    }
}

void segment_open(thread_data *td, shadow_frame *f, int32_t unit, uint64_t now, int64_t tail)
{
    if (unit >= 0 && engine.mode == MODE_ADAPTIVE && f->ci &&
        !(f->ci->unit_flags[unit] & UNIT_LEADER) && codeinfo_split(f->ci, unit) < 0)
        unit = -1;
    f->seg_start = unit;
    f->seg = 0;
    f->tainted = 0;
    f->raised = 0;
    piece_begin(f, now, tail);
    td->removed += tail;
    if (f->traced)
        emit_block_begin(td, f, now);
}

/* ---- the shadow stack ---------------------------------------------------- */

/* A frame's activation is over: its times go to the thread's tables and its
 * inclusive time to its caller. Recursion: the inclusive time of a function
 * (or of a caller/callee pair) is counted for its outermost activation only. */
void frames_flush(thread_data *td, shadow_frame *f)
{
    int64_t inclusive = f->self + f->child;
    if (f->own) {
        td->own += f->self;
        return;
    }
    if (f->ci) {
        func_stat *fs = &td->calls.funcs[f->ci->id];
        fs->self += f->self;
        func_seen_in_window(fs);
        if (--fs->active == 0)
            fs->inclusive += inclusive;
        if (f->edge != NO_EDGE) {
            edge_stat *edge = &td->calls.edges[f->edge];
            edge->self += f->self;
            if (--edge->active == 0)
                edge->inclusive += inclusive;
        }
    }
    if (f->over_own) {
        calibrate_program_leaves(td);
        while (f > td->frames && f[-1].own)
            f--; /* its caller is the program's frame below Ocular's time */
    }
    if (f > td->frames)
        f[-1].child += inclusive;
}

/* Frames deeper than `depth` have ended without an event we saw (a DISABLEd
 * return site, a generator closed silently). The running piece they shared
 * with whoever continued is nobody's for sure: the thread's lost time. The
 * event being handled ends that piece, so its head is taken off it. */
static void lose_frames(thread_data *td, int32_t depth, uint64_t now, int64_t head)
{
    int running = 1;
    while (td->count > 1 && td->frames[td->count - 1].py_depth > depth) {
        shadow_frame *f = &td->frames[td->count - 1];
        if (running) {
            td->lost += piece_value(f, now, head) - f->seg;
            td->removed += head;
            f->self += f->seg;
        }
        else
            f->self += f->seg;
        if (f->ci && !f->own)
            unplaced(f->ci, f->seg);
        running = 0;
        engine.lost_frames++;
        emit_block_end(td, f, now, -1, 0);
        if (f->traced)
            frames_emit(td, TRACE_FUNC_END, now, 0, NULL, -1, 0);
        frames_flush(td, f);
        td->count--;
    }
    shadow_frame *top = &td->frames[td->count - 1];
    if (top->ci)
        top->tainted = 1;
    /* Resumed here, and its piece ends at this same event: the event's head,
     * already taken off the lost piece, must not be taken off again. */
    piece_begin(top, now, -head);
    td->removed -= head;
}

shadow_frame *frame_for_event(thread_data *td, const codeinfo *ci, int32_t depth, uint64_t now,
                              int64_t head)
{
    if (td->count > 1 && td->frames[td->count - 1].py_depth > depth)
        lose_frames(td, depth, now, head);
    if (td->count > 1) {
        shadow_frame *top = &td->frames[td->count - 1];
        if (top->py_depth == depth && top->ci == ci)
            return top;
        if (top->py_depth == depth) /* another frame held this depth and left unseen */
            lose_frames(td, depth - 1, now, head);
    }
    return NULL;
}

/* The (caller, callee) edge of a new frame, from the callee's one-entry cache. */
static uint32_t edge_of(thread_data *td, codeinfo *ci, uint32_t caller)
{
    if (ci->edge_thread == td && ci->edge_caller == caller)
        return ci->edge_index;
    uint32_t edge = calltree_edge(&td->calls, caller, ci->id);
    if (edge != NO_EDGE) {
        ci->edge_thread = td;
        ci->edge_caller = caller;
        ci->edge_index = edge;
    }
    return edge;
}

/* Push a frame for `ci`; the caller's piece was already ended. */
static shadow_frame *push(thread_data *td, codeinfo *ci, int32_t depth, int started)
{
    if ((td->count == td->capacity && thread_grow(td) < 0) ||
        calltree_reserve_func(&td->calls, ci->id) < 0) {
        engine_fail("out of memory growing a shadow stack or a call table");
        return NULL;
    }
    const shadow_frame *caller = &td->frames[td->count - 1];
    int over_own = caller->own && !ci->is_calibration;
    if (over_own) {
        /* Ocular's own code is never traced and its kernels are marked: what
         * else starts in Ocular's time is the program's, run by the
         * interpreter at a safe point of the calibration (a signal handler,
         * a finalizer, a weakref callback), as it would have run at the
         * program's own next safe point. */
        while (caller->own)
            caller--; /* frames[0], the root, is never own */
        calibrate_program_enters(td);
    }
    uint32_t edge = edge_of(td, ci, caller->ci ? caller->ci->id : CALLER_ROOT);
    if (edge == NO_EDGE) {
        engine_fail("out of memory growing a call table");
        return NULL;
    }
    shadow_frame *f = &td->frames[td->count++];
    memset(f, 0, sizeof(*f));
    f->ci = ci;
    f->code = ci->code;
    f->py_depth = depth;
    f->close_unit = -1;
    f->edge = edge;
    f->over_own = (uint8_t)over_own;
    f->started = (uint8_t)started;
    f->traced = td->trace && td->count <= TRACE_MAX_FRAMES + 1;
    func_stat *fs = &td->calls.funcs[ci->id];
    fs->active++;
    td->calls.edges[edge].active++;
    if (started) {
        fs->calls++;
        td->calls.edges[edge].calls++;
    }
    return f;
}

shadow_frame *frame_push(thread_data *td, codeinfo *ci, int32_t depth, int32_t unit, uint64_t now,
                         int64_t head, int64_t tail, int started)
{
    if (td->count > 1 && td->frames[td->count - 1].py_depth >= depth)
        lose_frames(td, depth - 1, now, head);
    shadow_frame *caller = &td->frames[td->count - 1];
    emit_insn_piece(td, caller, now, head);
    caller->seg = piece_value(caller, now, head);
    td->removed += head;
    shadow_frame *f = push(td, ci, depth, started);
    if (!f)
        return NULL;
    if (f->traced)
        frames_emit(td, TRACE_FUNC_BEGIN, now, 0, ci, -1, 0);
    segment_open(td, f, unit, now, tail);
    return f;
}

void frame_adopt(thread_data *td, codeinfo *ci, int32_t depth, int32_t unit, uint64_t now,
                 int64_t head, int64_t tail)
{
    shadow_frame *top = &td->frames[td->count - 1];
    /* Below every frame we know, the frame that delivers an event most likely
     * ran since the root's piece began; above a known frame, that frame's
     * piece now includes the time of frames it called unseen. */
    int64_t taken = 0;
    if (!top->ci)
        taken = piece_value(top, now, head) - top->seg;
    else
        top->tainted = 1;
    shadow_frame *f = frame_push(td, ci, depth, unit, now, head, tail, 0);
    if (f && taken) {
        td->frames[td->count - 2].seg -= taken;
        f->self += taken;
        unplaced(ci, taken);
    }
}

void frame_pop(thread_data *td, shadow_frame *f, int32_t end_unit, uint64_t now, int64_t head,
               int64_t tail)
{
    segment_close(td, f, end_unit, now, head);
    if (f->traced)
        frames_emit(td, TRACE_FUNC_END, now, 0, NULL, -1, 0);
    frames_flush(td, f);
    td->count--;
    piece_begin(&td->frames[td->count - 1], now, tail);
    td->removed += tail;
}

void frame_unseen_event(thread_data *td, int64_t head, int64_t tail, int ended)
{
    shadow_frame *top = &td->frames[td->count - 1];
    if (ended && top->ci)
        top->tainted = 1;
    top->origin += (uint64_t)(head + tail);
    td->removed += head + tail;
}

/* ---- stopping ------------------------------------------------------------ */

static int is_alive(uint64_t tid, const uint64_t *alive, size_t n_alive)
{
    if (!alive)
        return 1;
    for (size_t i = 0; i < n_alive; i++)
        if (alive[i] == tid)
            return 1;
    return 0;
}

void threads_close_all(uint64_t now, const uint64_t *alive, size_t n_alive)
{
    for (thread_data *td = all_threads; td; td = td->next) {
        if (!td->covered_from)
            continue;
        int idle = td->count == 1;
        while (td->count > 1) {
            shadow_frame *f = &td->frames[td->count - 1];
            segment_close(td, f, f->close_unit, now, 0);
            if (f->traced)
                frames_emit(td, TRACE_FUNC_END, now, 0, NULL, -1, 0);
            frames_flush(td, f);
            td->count--;
            piece_begin(&td->frames[td->count - 1], now, 0);
        }
        shadow_frame *root = &td->frames[0];
        uint64_t end = now;
        if (idle && !is_alive(td->native_tid, alive, n_alive)) {
            /* The thread has ended: its stretch ends at its last event, and the
             * tail taken off the piece that began there is given back. */
            end = root->piece_tsc;
            td->removed -= root->piece_tail;
        }
        else
            root->seg = piece_value(root, end, 0);
        td->outside += root->seg + root->self;
        root->seg = root->self = root->child = 0;
        td->covered += sub_of(end) - sub_of(td->covered_from);
        td->covered_from = 0;
    }
}
