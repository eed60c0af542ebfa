/* trace.h - the contract between the hot path (monitor.c) and the trace
 * export pipeline (buffers.c, writer.c, json.c, pftrace.c, sink.c).
 *
 * The hot path appends fixed-size records, in time order, to a per-thread
 * buffer; it never formats, never locks and never waits on the disk. Full
 * buffers travel through a lock-free queue to one background writer thread
 * that converts ticks to ns and encodes JSON or protobuf.
 *
 * Threading: every function here except trace_reserve's slow path and the
 * writer thread itself is called with the GIL held. trace_reserve is called
 * only by the thread that owns the trace_thread. */
#ifndef OCULAR_TRACE_H
#define OCULAR_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include "clock.h"

/* Record kinds. Per thread, records arrive in non-decreasing tsc order and
 * BEGIN/END nest properly (the hot path closes what it opens, also when a
 * frame is lost or tracing stops), so the writer can transcribe them. */
enum {
    TRACE_FUNC_BEGIN = 1,  /* tsc, code_id                                  */
    TRACE_FUNC_END = 2,    /* tsc                                           */
    TRACE_BLOCK_BEGIN = 3, /* tsc, code_id, offset (byte offset of the
                              block's first instruction), line              */
    TRACE_BLOCK_END = 4,   /* tsc, cycles (charged to the block, overhead
                              subtracted; may be negative for tiny blocks),
                              offset = byte offset of the segment's last
                              instruction                                   */
    TRACE_INSN = 5,        /* precise mode, on a separate track per thread:
                              a complete slice [tsc, end_tsc], code_id,
                              offset, line, cycles                          */
    TRACE_BLOCK_NEXT = 6,  /* BLOCK_END then BLOCK_BEGIN at one tsc, in one
                              record: at every edge one segment ends where
                              the next begins. cycles and end_offset describe
                              the ended slice; code_id, offset, line the new */
};

typedef struct {
    uint64_t tsc;
    union {
        uint64_t end_tsc;   /* TRACE_INSN */
        int64_t end_offset; /* TRACE_BLOCK_NEXT: last byte offset of the ended slice */
    };
    int64_t cycles;     /* TRACE_BLOCK_END and TRACE_INSN */
    uint32_t code_id;   /* from trace_define_code */
    int32_t offset;
    int32_t line;       /* -1 when the compiler gave the instruction no line */
    uint16_t kind;
    uint16_t reserved;
} trace_record;         /* 40 bytes */

/* Per-thread producer state. Fields before `opaque` are the hot path's. */
typedef struct trace_thread {
    trace_record *cur;  /* next free slot */
    trace_record *end;  /* one past the last slot of the current buffer */
    trace_record *start; /* first slot of the current buffer: records from
                            here to cur may still be amended by their producer */
    struct trace_thread_private *opaque;
} trace_thread;

/* Slow path of trace_reserve: hand the full buffer to the writer and take a
 * fresh one. Returns NULL when memory is at its limit (the record is then
 * counted as dropped). Never blocks on I/O, never raises. */
trace_record *trace_reserve_slow(trace_thread *thread);

static inline trace_record *trace_reserve(trace_thread *thread)
{
    if (thread->cur < thread->end)
        return thread->cur++;
    return trace_reserve_slow(thread);
}

enum { TRACE_DETAIL_BLOCKS = 0, TRACE_DETAIL_FUNCTIONS = 1 };

typedef struct {
    uint64_t events_written;
    uint64_t events_dropped;
    uint64_t bytes_written;
    uint64_t block_slices;  /* slices written (instructions are not counted) */
    uint64_t function_slices;
    int budget_stage;       /* 0: all written; 1: function slices only from functions_only_from_ns;
                               2: and nothing new from nothing_from_ns (the size budget) */
    uint64_t budget_skipped;  /* records left out for the budget or the detail */
    uint64_t functions_only_from_ns, nothing_from_ns;
    int error_errno;        /* first I/O error of the writer thread, 0 if none */
    char error_message[256];
} trace_stats;

/* Open `path` (format chosen by its suffix: .json, .pftrace, .perfetto-trace,
 * each optionally followed by .gz), start the writer thread. `budget` bounds
 * the file's size in bytes (0: none): past 80 % of it only function slices are
 * written, past all of it nothing new (open slices are still closed).
 * `detail` TRACE_DETAIL_FUNCTIONS writes function slices only. On failure
 * returns -1 with errno set and nothing left running. */
int trace_open(const char *path, size_t max_buffer_bytes, clock_converter conv, uint64_t budget,
               int detail);

/* Name a code object for the writer (cold path: once per code object). */
void trace_define_code(uint32_t code_id, const char *qualname, const char *filename,
                       int firstlineno);

/* A producer for the calling thread (cold path: once per thread per run). */
trace_thread *trace_thread_new(uint64_t native_tid);

/* A producer whose records are thrown away (calibration, calibrate.c). */
trace_thread *trace_scratch(void);

/* Give a thread its Python name (may be called at any time before close). */
void trace_thread_set_name(uint64_t native_tid, const char *name);

/* In a forked child: forget the trace without touching the writer thread
 * (it does not exist there) or the file's contents (the parent finishes it). */
void trace_abandon(void);

/* Flush every thread's partial buffer (exited threads included), join the
 * writer, finish and close the file. Safe to call once after trace_open. */
int trace_close(trace_stats *stats);

#endif
