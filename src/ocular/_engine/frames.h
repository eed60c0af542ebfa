/* frames.h - segments and the shadow stack (frames.c): what a callback does
 * once it knows its thread, its code and its frame.
 *
 * Every function here that handles an event takes the event's head and tail
 * (engine.h): the head is taken off the piece that ends at the event, the
 * tail off the one that begins there, and both go to the thread's `removed`. */
#ifndef OCULAR_FRAMES_H
#define OCULAR_FRAMES_H

#include "codeinfo.h"
#include "engine.h"
#include "sampler.h"
#include "tstate.h"

static inline int far_args(int32_t unit) { return unit > FAR_UNIT; }

/* An activation of fs's function ended in the window now open: count the
 * window once. */
static inline void func_seen_in_window(func_stat *fs)
{
    if (__builtin_expect(fs->last_window != sampler_window_id, 0)) {
        fs->last_window = sampler_window_id;
        fs->windows++;
    }
}

/* What an event of `kind` costs before and after the callback's clock read,
 * at the thread's current phase (phase.h). */
static inline int64_t event_head(const thread_data *td, int kind, int n_far)
{
    return td->corr.head[kind] + n_far * td->corr.far_head;
}

static inline int64_t event_tail(const thread_data *td, int kind, int n_far)
{
    return td->corr.tail[kind] + n_far * td->corr.far_tail;
}

/* Trace records (no-ops unless the frame is traced). */
trace_record *frames_emit(thread_data *td, uint16_t kind, uint64_t tsc, uint64_t end_tsc,
                          const codeinfo *ci, int32_t unit, int64_t cycles);

/* Close the frame's segment at `end_unit` (-1: the event says nothing about
 * where the frame was) and charge it to blocks or instructions, or to the
 * function alone when its path is unknown. */
void segment_close(thread_data *td, shadow_frame *f, int32_t end_unit, uint64_t now, int64_t head);

/* Begin the frame's next segment at `unit` (-1: unknown until its next event). */
void segment_open(thread_data *td, shadow_frame *f, int32_t unit, uint64_t now, int64_t tail);

/* The frame delivering an event at `depth`, or NULL if it is not on the
 * stack; frames above it have ended unseen and are dropped. */
shadow_frame *frame_for_event(thread_data *td, const codeinfo *ci, int32_t depth, uint64_t now,
                              int64_t head);

/* A frame starts (PY_START, PY_RESUME, PY_THROW: `started` for PY_START). */
shadow_frame *frame_push(thread_data *td, codeinfo *ci, int32_t depth, int32_t unit, uint64_t now,
                         int64_t head, int64_t tail, int started);

/* An event came from a frame we never saw start: take it on the stack, its
 * segment beginning at `unit`. */
void frame_adopt(thread_data *td, codeinfo *ci, int32_t depth, int32_t unit, uint64_t now,
                 int64_t head, int64_t tail);

/* The top frame `f` ends at `end_unit` (PY_RETURN, PY_YIELD, PY_UNWIND). */
void frame_pop(thread_data *td, shadow_frame *f, int32_t end_unit, uint64_t now, int64_t head,
               int64_t tail);

/* A frame's activation is over: its times go to the thread's tables. */
void frames_flush(thread_data *td, shadow_frame *f);

/* A frame we never saw start has ended, or an event of code we do not trace
 * arrived: its time and cost ran inside the top frame's running piece. */
void frame_unseen_event(thread_data *td, int64_t head, int64_t tail, int ended);

#endif
