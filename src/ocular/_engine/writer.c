/* writer.c - the background writer thread, and opening and closing a trace.
 *
 * Producers fill buffers of trace_records and queue the full ones
 * (buffers.c); the writer thread takes the whole queue at once, in arrival
 * order, and transcribes each buffer with an encoder (json.c, pftrace.c) into
 * an output buffer that goes to the file (sink.c). It also keeps what the
 * encoders look up: code names and the per-thread slice stacks. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "writer_internal.h"

#define OUT_CAP (1u << 20)          /* encoded bytes per write(2) */
#define DEFAULT_MAX_BUFFER_BYTES ((size_t)256 << 20)
#define CODE_CHUNK 1024u
#define CODE_DIR 65536u             /* code ids up to 64 M */

typedef struct garbage {
    struct garbage *next;
    void *ptr;
    int is_code;
} garbage;

static struct {
    int open;
    trace_writer w;
    _Atomic int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    _Atomic(trace_tt *) threads;
    _Atomic uint32_t thread_count;
    pthread_mutex_t garbage_mu;      /* cold paths only; never the writer */
    garbage *garbage;
    /* writer thread, then trace_close */
    uint64_t events_written, events_lost;
    uint64_t block_slices, function_slices;
    /* the size budget (trace_open): past BLOCKS_SHARE of it only function
     * slices are written, past all of it nothing new */
    uint64_t budget;                 /* bytes, 0: none */
    int detail;                      /* TRACE_DETAIL_* */
    int stage;                       /* 0 everything, 1 functions only, 2 nothing new */
    uint64_t stage_ns[3];            /* when each stage began */
    uint64_t budget_skipped;         /* records left out for the budget or the detail */
} g;

/* Of the budget, block and instruction slices may fill this share; the rest
 * is kept for function slices, so that a long run's trace still shows its
 * calls to the end of the budget. */
#define BLOCKS_SHARE 0.8

static _Atomic(code_entry *) *code_dir[CODE_DIR];

/* ---- small formatting helpers shared with the encoders --------------------- */

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

char *trace_fmt_u64(char *p, uint64_t v)
{
    char tmp[20];
    char *q = tmp + sizeof tmp;
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        *--q = digit_pairs[d + 1];
        *--q = digit_pairs[d];
    }
    if (v >= 10) {
        *--q = digit_pairs[v * 2 + 1];
        *--q = digit_pairs[v * 2];
    } else {
        *--q = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - q);
    memcpy(p, q, n);
    return p + n;
}

char *trace_fmt_i64(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return trace_fmt_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return trace_fmt_u64(p, (uint64_t)v);
}

size_t trace_utf8_sanitize(char *dst, const char *src, size_t len)
{
    const unsigned char *s = (const unsigned char *)src, *e = s + len;
    char *d = dst;
    while (s < e) {
        unsigned c = *s;
        size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4 : 0;
        int ok = n && (size_t)(e - s) >= n;
        uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
        for (size_t i = 1; ok && i < n; i++) {
            ok = (s[i] & 0xC0) == 0x80;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        /* Overlong forms and surrogates are invalid UTF-8; strict JSON and
         * protobuf string decoders reject them. */
        if (ok && (n == 2 ? cp < 0x80 : n == 3 ? cp < 0x800 || (cp >= 0xD800 && cp < 0xE000)
                                       : n == 4 ? cp < 0x10000 || cp > 0x10FFFF : 0))
            ok = 0;
        if (ok) {
            memcpy(d, s, n);
            d += n;
            s += n;
        } else {
            memcpy(d, "\xEF\xBF\xBD", 3);
            d += 3;
            s++;
        }
    }
    return (size_t)(d - dst);
}

/* Names are cut at NAME_MAX_BYTES so that no encoded event can outgrow the
 * output buffer (encoders reserve a bounded size per event). */
#define NAME_MAX_BYTES 4000u

static char *sanitized_copy(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len > NAME_MAX_BYTES) {
        len = NAME_MAX_BYTES;
        while (len && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;   /* cut before a continuation byte, not inside a character */
    }
    char *copy = malloc(3 * len + 1);
    if (copy)
        copy[len ? trace_utf8_sanitize(copy, s, len) : 0] = '\0';
    return copy;
}

/* What was replaced while the writer may still read it lives until close. */
static void keep_garbage(void *ptr, int is_code)
{
    garbage *node = malloc(sizeof *node);
    if (!node)
        return;   /* leak rather than free what the writer may be reading */
    node->ptr = ptr;
    node->is_code = is_code;
    pthread_mutex_lock(&g.garbage_mu);
    node->next = g.garbage;
    g.garbage = node;
    pthread_mutex_unlock(&g.garbage_mu);
}

/* ---- output --------------------------------------------------------------- */

static void out_flush(void)
{
    sink_write(g.w.out, g.w.out_len);
    g.w.out_len = 0;
    if (sink_error())
        buffers_refuse();   /* nothing more can be written: record no more */
}

char *trace_out_reserve(trace_writer *w, size_t n)
{
    /* n is bounded by the encoders (names are cut at NAME_MAX_BYTES) far
     * below OUT_CAP, so one flush always makes room. */
    if (w->out_len + n > w->out_cap)
        out_flush();
    return w->out + w->out_len;
}

/* ---- code names and threads ----------------------------------------------------- */

static void free_code(code_entry *entry)
{
    free(entry->qualname);
    free(entry->filename);
    free(entry->json);
    free(entry);
}

void trace_define_code(uint32_t code_id, const char *qualname, const char *filename,
                       int firstlineno)
{
    if (!g.open || code_id / CODE_CHUNK >= CODE_DIR)
        return;
    _Atomic(code_entry *) *chunk = atomic_load_explicit(&code_dir[code_id / CODE_CHUNK],
                                                         memory_order_acquire);
    if (!chunk) {
        _Atomic(code_entry *) *fresh = calloc(CODE_CHUNK, sizeof *fresh);
        if (!fresh)
            return;
        if (atomic_compare_exchange_strong(&code_dir[code_id / CODE_CHUNK], &chunk, fresh))
            chunk = fresh;
        else
            free(fresh);
    }
    code_entry *entry = calloc(1, sizeof *entry);
    if (!entry)
        return;
    entry->qualname = sanitized_copy(qualname);
    entry->filename = sanitized_copy(filename);
    entry->firstlineno = firstlineno;
    if (!entry->qualname || !entry->filename) {
        free_code(entry);
        return;
    }
    /* An id taken over by a code object of the same key (retired.c) is named
     * already: keep that name rather than piling up garbage until close. */
    code_entry *named = atomic_load_explicit(&chunk[code_id % CODE_CHUNK], memory_order_acquire);
    if (named && named->firstlineno == firstlineno && strcmp(named->qualname, entry->qualname) == 0 &&
        strcmp(named->filename, entry->filename) == 0) {
        free_code(entry);
        return;
    }
    code_entry *old = atomic_exchange_explicit(&chunk[code_id % CODE_CHUNK], entry,
                                               memory_order_acq_rel);
    if (old)
        keep_garbage(old, 1);
}

code_entry *trace_code_lookup(uint32_t code_id)
{
    if (code_id / CODE_CHUNK >= CODE_DIR)
        return NULL;
    _Atomic(code_entry *) *chunk = atomic_load_explicit(&code_dir[code_id / CODE_CHUNK],
                                                         memory_order_acquire);
    return chunk ? atomic_load_explicit(&chunk[code_id % CODE_CHUNK], memory_order_acquire)
                 : NULL;
}

trace_thread *trace_thread_new(uint64_t native_tid)
{
    if (!g.open)
        return NULL;
    trace_tt *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->pub.opaque = t;
    t->tid = native_tid;
    t->index = atomic_fetch_add(&g.thread_count, 1) + 1;
    trace_tt *head = atomic_load(&g.threads);
    do
        t->next = head;
    while (!atomic_compare_exchange_weak(&g.threads, &head, t));
    return &t->pub;
}

void trace_thread_set_name(uint64_t native_tid, const char *name)
{
    if (!g.open || !name)
        return;
    /* A reused tid names every thread that had it: the caller only knows the
     * latest, and JSON cannot tell them apart anyway. */
    for (trace_tt *t = atomic_load(&g.threads); t; t = t->next) {
        if (t->tid != native_tid)
            continue;
        char *copy = sanitized_copy(name);
        if (!copy)
            return;
        char *old = atomic_exchange(&t->name, copy);
        if (old)
            keep_garbage(old, 0);
    }
}

/* ---- the writer thread ------------------------------------------------------------ */

/* A slice lasts at least 1 ns. Perfetto sorts JSON events at equal ts with E
 * first, so the E of a zero-length B/E pair would close the enclosing slice
 * and leave the B open. The nanosecond moves the rest of the thread's events
 * with it (times never go backwards). */
static uint64_t end_time_at(uint64_t begin, uint64_t ns)
{
    return ns > begin ? ns : begin + 1;
}

static int stack_push(trace_tt *t, int kind, uint64_t ns, int skipped)
{
    if (t->depth == t->stack_cap) {
        uint32_t cap = t->stack_cap ? t->stack_cap * 2 : 64;
        struct open_slice *grown = realloc(t->stack, cap * sizeof *grown);
        if (!grown)
            return -1;
        t->stack = grown;
        t->stack_cap = cap;
    }
    t->stack[t->depth++] = (struct open_slice){ns, kind, skipped};
    return 0;
}

/* Enter the budget's next stages as the file grows (checked once per
 * transcribed buffer: a buffer adds some tens of kilobytes at most). */
static void update_stage(uint64_t ns)
{
    int stage = g.detail == TRACE_DETAIL_FUNCTIONS ? 1 : 0;
    if (g.budget) {
        uint64_t bytes = sink_bytes() + g.w.out_len;
        if (bytes >= g.budget)
            stage = 2;
        else if (bytes >= (uint64_t)(BLOCKS_SHARE * (double)g.budget) && stage < 1)
            stage = 1;
    }
    for (int s = g.stage + 1; s <= stage; s++)
        g.stage_ns[s] = ns;
    if (stage > g.stage)
        g.stage = stage;
}

/* The end of the top slice: written only if its begin was. */
static void slice_pop(trace_tt *t, uint64_t *ns, int kind, const trace_record *r)
{
    t->depth--;
    if (t->stack[t->depth].skipped) {
        g.budget_skipped++;
        return;
    }
    *ns = end_time_at(t->stack[t->depth].begin_ns, *ns);
    g.w.fmt->slice_end(&g.w, t, *ns, kind, r);
}

static void ensure_started(trace_tt *t, uint64_t ns)
{
    char *name = atomic_load_explicit(&t->name, memory_order_acquire);
    if (!t->started) {
        t->started = 1;
        t->last_ns = t->last_seen_ns = ns;
        t->name_shown = name;   /* thread_begin writes it */
        g.w.fmt->thread_begin(&g.w, t, ns);
    }
    if (name != t->name_shown) {
        t->name_shown = name;
        g.w.fmt->thread_name(&g.w, t, name);
    }
}

static uint64_t close_open_slices(trace_tt *t, uint64_t ns)
{
    while (t->depth)
        slice_pop(t, &ns, t->stack[t->depth - 1].kind, NULL);
    return ns;
}

static void block_begin(trace_tt *t, uint64_t ns, const trace_record *r)
{
    int skipped = g.stage >= 1;
    if (stack_push(t, SLICE_BLOCK, ns, skipped) == 0) {
        if (skipped) {
            g.budget_skipped++;
            return;
        }
        g.w.fmt->block_begin(&g.w, t, ns, r);
        g.block_slices++;
    }
}

static void transcribe(trace_buf *buf)
{
    trace_tt *t = buf->owner;
    const trace_format *fmt = g.w.fmt;
    trace_writer *w = &g.w;
    if (sink_error()) {
        g.events_lost += buf->count;
        return;
    }
    if (buf->count) {
        ensure_started(t, clock_to_ns(&w->conv, buf->recs[0].tsc));
        update_stage(clock_to_ns(&w->conv, buf->recs[0].tsc));
    }
    uint64_t last = t->last_ns;
    for (const trace_record *r = buf->recs, *e = r + buf->count; r < e; r++) {
        uint64_t ns = clock_to_ns(&w->conv, r->tsc);
        if (ns < last)
            ns = last;   /* overhead correction may step back a tick or two */
        last = ns;
        switch (r->kind) {
        case TRACE_FUNC_BEGIN:
            if (stack_push(t, SLICE_FUNC, ns, g.stage >= 2) == 0) {
                if (g.stage >= 2) {
                    g.budget_skipped++;
                    break;
                }
                fmt->func_begin(w, t, ns, r->code_id, trace_code_lookup(r->code_id));
                g.function_slices++;
            }
            break;
        case TRACE_BLOCK_BEGIN:
            block_begin(t, ns, r);
            break;
        case TRACE_FUNC_END:
        case TRACE_BLOCK_END:
            if (t->depth) {   /* an END with nothing open is not written */
                slice_pop(t, &ns, r->kind == TRACE_FUNC_END ? SLICE_FUNC : SLICE_BLOCK, r);
                last = ns;
            }
            break;
        case TRACE_BLOCK_NEXT:
            if (t->depth) {
                trace_record ended = *r;
                ended.offset = (int32_t)r->end_offset;
                slice_pop(t, &ns, SLICE_BLOCK, &ended);
                last = ns;
            }
            block_begin(t, ns, r);
            break;
        case TRACE_INSN: {
            if (g.stage >= 1) {
                g.budget_skipped++;
                break;
            }
            /* The instruction lane follows the same rules as the thread's
             * track: no piece starts before the previous one ends, and each
             * lasts at least 1 ns (see end_time). */
            uint64_t start = ns > t->insn_end_ns ? ns : t->insn_end_ns;
            uint64_t end = clock_to_ns(&w->conv, r->end_tsc);
            if (end <= start)
                end = start + 1;
            t->insn_end_ns = end;
            fmt->insn(w, t, start, end, r);
            if (end > t->last_seen_ns)
                t->last_seen_ns = end;
            break;
        }
        default:
            break;
        }
    }
    t->last_ns = last;
    if (last > t->last_seen_ns)
        t->last_seen_ns = last;
    g.events_written += buf->count;
    if (buf->drop) {
        uint64_t ns = clock_to_ns(&w->conv, buf->drop_tsc);
        ensure_started(t, ns);
        t->drop_ns = t->last_ns = close_open_slices(t, ns > t->last_ns ? ns : t->last_ns);
        t->drop_seen = 1;
        if (t->drop_ns > t->last_seen_ns)
            t->last_seen_ns = t->drop_ns;
    }
}

/* Take every queued buffer, oldest first. Returns 0 if there was none. */
static int drain_queue(void)
{
    trace_buf *fifo = buffers_take_all();
    if (!fifo)
        return 0;
    while (fifo) {
        trace_buf *next = fifo->next;
        transcribe(fifo);
        buffers_recycle(fifo);
        fifo = next;
    }
    return 1;
}

#define WRITER_POLL_NS (1000 * 1000)

/* A fork while this thread is inside malloc (it encodes names with it) would
 * leave an allocator that has no fork handlers of its own (AddressSanitizer's,
 * some others) locked in the child, which then hangs at its first allocation:
 * a fork waits until the writer is between two steps. */
static pthread_mutex_t fork_gate = PTHREAD_MUTEX_INITIALIZER;
static void fork_prepare(void) { pthread_mutex_lock(&fork_gate); }
static void fork_parent(void) { pthread_mutex_unlock(&fork_gate); }
static void fork_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER; /* no writer here */
    fork_gate = fresh;
}

static int drain_gated(void)
{
    pthread_mutex_lock(&fork_gate);
    int drained = drain_queue();
    pthread_mutex_unlock(&fork_gate);
    return drained;
}

static void *writer_main(void *arg)
{
    (void)arg;
    for (;;) {
        if (drain_gated())
            continue;
        if (atomic_load_explicit(&g.stop, memory_order_acquire)) {
            drain_gated();   /* pushes that raced with the stop flag */
            break;
        }
        /* Idle: hand what is encoded to the kernel, so that a killed process
         * leaves a file that is as recent as possible. */
        pthread_mutex_lock(&fork_gate);
        out_flush();
        pthread_mutex_unlock(&fork_gate);
        pthread_mutex_lock(&g.mu);
        if (!buffers_pending() && !atomic_load(&g.stop)) {
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_nsec += WRITER_POLL_NS;
            if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&g.cv, &g.mu, &deadline);
        }
        pthread_mutex_unlock(&g.mu);
    }
    return NULL;
}

/* ---- open / close --------------------------------------------------------------------- */

static int has_suffix(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

static void read_process_name(char *dst, size_t cap)
{
    char comm[64] = "python";
    FILE *f = fopen("/proc/self/comm", "r");
    if (f) {
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    size_t len = strlen(comm);
    if (3 * len + 1 > cap)
        len = (cap - 1) / 3;
    dst[trace_utf8_sanitize(dst, comm, len)] = '\0';
}

static void release_all(void)
{
    for (trace_tt *t = atomic_load(&g.threads), *next; t; t = next) {
        next = t->next;
        if (g.w.fmt && g.w.fmt->thread_free)
            g.w.fmt->thread_free(t);
        free(atomic_load(&t->name));
        free(t->stack);
        free(t);
    }
    atomic_store(&g.threads, NULL);
    buffers_release();
    for (size_t i = 0; i < CODE_DIR; i++) {
        _Atomic(code_entry *) *chunk = atomic_load(&code_dir[i]);
        if (!chunk)
            continue;
        for (size_t j = 0; j < CODE_CHUNK; j++) {
            code_entry *entry = atomic_load(&chunk[j]);
            if (entry)
                free_code(entry);
        }
        free(chunk);
        atomic_store(&code_dir[i], NULL);
    }
    while (g.garbage) {
        garbage *node = g.garbage;
        g.garbage = node->next;
        if (node->is_code)
            free_code(node->ptr);
        else
            free(node->ptr);
        free(node);
    }
    free(g.w.out);
    g.w.out = NULL;
    sink_release();
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.garbage_mu);
    g.open = 0;
}

/* A trace_open that got as far as opening the file fails: remove what it
 * created and release everything; returns -1 with errno = err. */
static int abandon_open(const char *path, int err)
{
    sink_remove(path);
    release_all();
    errno = err;
    return -1;
}

void trace_abandon(void)
{
    if (g.open)
        sink_abandon();
    /* Buffers and tables are left to the child's exit: freeing them would
     * need the locks a thread of the parent may have held at fork. */
    buffers_abandon();
    memset(&g, 0, sizeof g);
}

int trace_open(const char *path, size_t max_buffer_bytes, clock_converter conv, uint64_t budget,
               int detail)
{
    if (g.open || !path) {
        errno = g.open ? EBUSY : EINVAL;
        return -1;
    }
    size_t len = strlen(path);
    int gz = has_suffix(path, len, ".gz");
    size_t base = gz ? len - 3 : len;
    const trace_format *fmt = has_suffix(path, base, ".json") ? &trace_json_format
                            : has_suffix(path, base, ".pftrace") ||
                                      has_suffix(path, base, ".perfetto-trace")
                                ? &trace_pftrace_format
                                : NULL;
    if (!fmt) {
        errno = EINVAL;
        return -1;
    }
    memset(&g, 0, sizeof g);
    g.budget = budget;
    g.detail = detail;
    g.stage = detail == TRACE_DETAIL_FUNCTIONS ? 1 : 0;
    g.w.fmt = fmt;
    g.w.conv = conv;
    g.w.pid = (uint64_t)getpid();
    read_process_name(g.w.process_name, sizeof g.w.process_name);
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_mutex_init(&g.garbage_mu, NULL);
    g.open = 1;   /* for release_all's sake; trace_* calls are not made yet */
    g.w.out = malloc(OUT_CAP);
    g.w.out_cap = OUT_CAP;
    if (buffers_init(max_buffer_bytes ? max_buffer_bytes : DEFAULT_MAX_BUFFER_BYTES) < 0 ||
        !g.w.out) {
        release_all();
        errno = ENOMEM;
        return -1;
    }
    if (sink_open(path, gz) < 0) {
        int saved = errno;
        release_all();
        errno = saved;
        return -1;
    }
    if (fmt->file_begin(&g.w) < 0)
        return abandon_open(path, errno ? errno : ENOMEM);
    static int fork_handlers;
    if (!fork_handlers && pthread_atfork(fork_prepare, fork_parent, fork_child) == 0)
        fork_handlers = 1;
    int rc = pthread_create(&g.thread, NULL, writer_main, NULL);
    if (rc)
        return abandon_open(path, rc);
    return 0;
}

int trace_close(trace_stats *stats)
{
    if (!g.open) {
        if (stats)
            memset(stats, 0, sizeof *stats);
        errno = EINVAL;
        return -1;
    }
    /* Producers have stopped (the engine stops recording first); make any late
     * trace_reserve drop, hand over the partial buffers, and only then tell
     * the writer to finish: it exits once it finds the queue empty. */
    buffers_refuse();
    for (trace_tt *t = atomic_load(&g.threads); t; t = t->next)
        buffers_hand_over(t);
    atomic_store(&g.stop, 1);
    pthread_mutex_lock(&g.mu);
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);

    /* The writer is gone: finish the file from here. */
    uint64_t dropped = 0, end_ns = g.w.conv.mono0;
    for (trace_tt *t = atomic_load(&g.threads); t; t = t->next) {
        uint64_t n = atomic_load(&t->dropped);
        dropped += n;
        if (sink_error())
            continue;
        if (n && !t->drop_seen) {
            uint64_t ns = clock_to_ns(&g.w.conv, atomic_load(&t->drop_tsc));
            t->drop_ns = ns > t->last_ns ? ns : t->last_ns;
            t->drop_seen = 1;
        }
        if (t->started || n)
            ensure_started(t, t->drop_seen ? t->drop_ns : t->last_ns);
        if (t->started) {
            uint64_t ns = close_open_slices(t, t->drop_seen ? t->drop_ns : t->last_seen_ns);
            if (ns > t->last_seen_ns)
                t->last_seen_ns = ns;
            if (n)
                g.w.fmt->drop_instant(&g.w, t, ns, n);
        }
        uint64_t last = t->last_seen_ns > t->drop_ns ? t->last_seen_ns : t->drop_ns;
        if (last > end_ns)
            end_ns = last;
    }
    dropped += g.events_lost;
    if (!sink_error())
        g.w.fmt->file_end(&g.w, end_ns, dropped, 1);
    out_flush();
    sink_finish();

    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->events_written = g.events_written;
        stats->events_dropped = dropped;
        stats->bytes_written = sink_bytes();
        stats->block_slices = g.block_slices;
        stats->function_slices = g.function_slices;
        stats->budget_stage = g.stage;
        stats->budget_skipped = g.budget_skipped;
        stats->functions_only_from_ns = g.stage >= 1 ? g.stage_ns[1] : 0;
        stats->nothing_from_ns = g.stage >= 2 ? g.stage_ns[2] : 0;
        stats->error_errno = sink_error();
        snprintf(stats->error_message, sizeof stats->error_message, "%s", sink_message());
    }
    int err = sink_error();
    release_all();
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}
