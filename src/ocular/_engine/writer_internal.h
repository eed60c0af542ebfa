/* writer_internal.h - what writer.c shares with its helpers (buffers.c,
 * sink.c) and with the two encoders (json.c, pftrace.c). Nothing here is seen
 * by the hot path: it only knows trace.h.
 *
 * Everything below the "writer side" marks is touched by the writer thread
 * only (or by trace_close after the writer thread was joined), so it needs no
 * atomics. */
#ifndef OCULAR_WRITER_INTERNAL_H
#define OCULAR_WRITER_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "trace.h"

/* 64 KiB per buffer: large enough that the slow path (a queue push) runs once
 * per ~1600 records, small enough that an idle thread pins little memory. */
#define TRACE_BUF_BYTES 65536u

typedef struct trace_buf {
    struct trace_buf *next;          /* queue link; published by the push CAS */
    _Atomic uint32_t free_next;      /* free-list link: index + 1, 0 = none. Atomic
                                        because a popper may read it while another
                                        popper reuses the buffer (the tag makes the
                                        CAS fail in that case). */
    uint32_t index;
    struct trace_thread_private *owner;
    uint32_t count;
    uint32_t drop;                   /* dropping began right after these records */
    uint64_t drop_tsc;
    trace_record recs[];
} trace_buf;

#define TRACE_BUF_RECORDS ((TRACE_BUF_BYTES - sizeof(trace_buf)) / sizeof(trace_record))

typedef struct {
    char *qualname;     /* valid UTF-8 */
    char *filename;     /* valid UTF-8 */
    int firstlineno;
    char *json;         /* writer side: pre-rendered JSON name+args, lazily */
    size_t json_len;
} code_entry;

enum { SLICE_FUNC = 1, SLICE_BLOCK = 2 };

struct open_slice {
    uint64_t begin_ns;
    int kind;
    int skipped;    /* begun while the size budget left such slices out: its end is not written either */
};

struct trace_thread_private {
    trace_thread pub;                /* handed out to the hot path */
    struct trace_thread_private *next;   /* registry, newest first, never unlinked */
    uint64_t tid;
    uint32_t index;                  /* 1, 2, ... in creation order */

    /* producer side */
    trace_buf *buf;
    int dropping;
    _Atomic uint64_t dropped;
    _Atomic uint64_t drop_tsc;       /* when dropping began, if no buffer carried it */
    _Atomic(char *) name;            /* latest name from trace_thread_set_name */

    /* writer side */
    int started;
    const char *name_shown;          /* the name last written to the file */
    uint64_t last_ns;                /* main track: times never go backwards */
    uint64_t last_seen_ns;           /* main or instruction track */
    uint64_t insn_end_ns;            /* end of the previous instruction piece */
    int drop_seen;
    uint64_t drop_ns;
    struct open_slice *stack;
    uint32_t depth, stack_cap;
    /* the encoder's per-thread state, inline so that starting a thread on the
     * writer side cannot fail */
    union {
        max_align_t align;
        unsigned char bytes[256];
    } fmt;
};
typedef struct trace_thread_private trace_tt;

typedef struct trace_writer trace_writer;

/* An encoder. Called on the writer thread only, in per-thread time order. */
typedef struct {
    int (*file_begin)(trace_writer *w);
    void (*thread_begin)(trace_writer *w, trace_tt *t, uint64_t ns);
    void (*func_begin)(trace_writer *w, trace_tt *t, uint64_t ns, uint32_t code_id,
                       code_entry *code);
    void (*block_begin)(trace_writer *w, trace_tt *t, uint64_t ns, const trace_record *r);
    /* r is NULL for a slice the writer closes itself (drop, close) */
    void (*slice_end)(trace_writer *w, trace_tt *t, uint64_t ns, int kind, const trace_record *r);
    void (*insn)(trace_writer *w, trace_tt *t, uint64_t ns, uint64_t end_ns, const trace_record *r);
    void (*thread_name)(trace_writer *w, trace_tt *t, const char *name);
    void (*drop_instant)(trace_writer *w, trace_tt *t, uint64_t ns, uint64_t count);
    void (*file_end)(trace_writer *w, uint64_t ns, uint64_t dropped, int clean);
    void (*thread_free)(trace_tt *t);
} trace_format;

extern const trace_format trace_json_format;
extern const trace_format trace_pftrace_format;

struct trace_writer {
    const trace_format *fmt;
    clock_converter conv;
    uint64_t pid;
    char process_name[64];           /* valid UTF-8 */
    char *out;                       /* encoded bytes not yet handed to the sink */
    size_t out_len, out_cap;
    void *fmt_state;                 /* encoder's global state */
};

/* ---- between writer.c and its two helpers ------------------------------------ */

/* buffers.c: the producers' buffers and the queue of full ones. */
int buffers_init(size_t max_bytes);          /* -1: out of memory */
void buffers_release(void);                  /* frees every buffer */
void buffers_abandon(void);                  /* forked child: forget them */
void buffers_refuse(void);                   /* from now on every slow path drops */
void buffers_hand_over(trace_tt *t);         /* queue t's partial buffer (at close) */
int buffers_pending(void);                   /* is anything queued? */
trace_buf *buffers_take_all(void);           /* the queue, oldest first, linked by next */
void buffers_recycle(trace_buf *buf);        /* transcribed: back to the free list */

/* sink.c: the file (raw or gzip) and its first error. Writer thread only, then
 * trace_close after the join. */
int sink_open(const char *path, int gz);     /* -1 with errno */
void sink_write(const char *data, size_t len);   /* discarded after an error */
void sink_finish(void);                      /* ends the gzip stream, closes */
void sink_remove(const char *path);          /* closes; unlinks if sink_open created it */
void sink_release(void);
void sink_abandon(void);                     /* forked child: close its descriptor copy */
int sink_error(void);                        /* errno of the first failure, 0 if none */
const char *sink_message(void);
uint64_t sink_bytes(void);

/* ---- for the encoders ------------------------------------------------------------ */

/* Room for n more bytes in w->out (flushing to the sink first if needed). */
char *trace_out_reserve(trace_writer *w, size_t n);
static inline void trace_out_commit(trace_writer *w, char *end) { w->out_len = (size_t)(end - w->out); }

/* The name of a code id, or NULL if it was never defined. */
code_entry *trace_code_lookup(uint32_t code_id);

/* Copy src (len bytes) to dst as valid UTF-8: invalid sequences, surrogates
 * and overlongs become U+FFFD. dst needs 3 * len bytes. Returns bytes written. */
size_t trace_utf8_sanitize(char *dst, const char *src, size_t len);

/* Decimal digits of an unsigned / signed integer; return the end. */
char *trace_fmt_u64(char *p, uint64_t v);
char *trace_fmt_i64(char *p, int64_t v);

#endif
