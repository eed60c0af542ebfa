/* writer.c - buffers, the hand-off queue and the background writer thread.
 *
 * Producers fill 64 KiB buffers of trace_records and push full ones onto a
 * lock-free stack; one writer thread takes the whole stack at once, reverses
 * it into arrival order and transcribes each buffer with an encoder (json.c,
 * pftrace.c) into an output buffer that goes to the file (through zlib for
 * .gz). Transcribed buffers return to a lock-free free list.
 *
 * Memory ordering never relies on the GIL: the engine may run free-threaded.
 *  - full-buffer queue: Treiber push (release CAS) by any producer; the single
 *    consumer takes everything with an acquire exchange, so there is no ABA.
 *  - free list: many poppers, so the head is an (ABA tag, index) pair in one
 *    64-bit word and buffers are named by index; buffers are never freed before
 *    trace_close, so a stale read of free_next is harmless (the CAS fails).
 * Memory bound: at most cap_buffers are ever allocated. The first producer to
 * find none sets `dropping`: from then on every thread drops all of its
 * records at its next slow path, for the rest of the run (resuming would leave
 * unmatched BEGIN/END). The writer closes that thread's open slices where its
 * records stop and, at close, writes an instant with the thread's drop count. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "writer_internal.h"

#define OUT_CAP (1u << 20)          /* encoded bytes per write(2) */
#define ZBUF_CAP (1u << 18)
#define DEFAULT_MAX_BUFFER_BYTES ((size_t)256 << 20)
#define MAX_BUFFERS ((size_t)1 << 22)
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
    size_t cap_buffers;
    trace_buf **table;               /* index -> buffer, filled as allocated */
    _Atomic size_t allocated;
    _Atomic uint64_t free_head;      /* tag << 32 | (index + 1) */
    _Atomic(trace_buf *) queue;
    _Atomic int closing, stop, failed, dropping;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    _Atomic(trace_tt *) threads;
    _Atomic uint32_t thread_count;
    pthread_mutex_t garbage_mu;      /* cold paths only; never the writer */
    garbage *garbage;
    /* sink (writer thread, then trace_close) */
    int fd, gz;
    z_stream zs;
    unsigned char *zbuf;
    uint64_t bytes_written, events_written, events_lost;
    uint64_t block_slices, function_slices;
    int err;
    char errmsg[256];
} g;

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

/* ---- sink ------------------------------------------------------------------ */

static void sink_fail(int errnum, const char *what)
{
    if (!g.err) {
        g.err = errnum ? errnum : EIO;
        snprintf(g.errmsg, sizeof g.errmsg, "%s: %s", what, strerror(g.err));
    }
    atomic_store(&g.failed, 1);
}

static int write_all(const void *data, size_t len)
{
    const char *p = data;
    while (len && !g.err) {
        ssize_t n = write(g.fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sink_fail(n < 0 ? errno : EIO, "writing the trace");
            return -1;
        }
        p += n;
        len -= (size_t)n;
        g.bytes_written += (uint64_t)n;
    }
    return g.err ? -1 : 0;
}

static int deflate_some(const void *data, size_t len, int flush)
{
    g.zs.next_in = (Bytef *)data;
    g.zs.avail_in = (uInt)len;
    do {
        g.zs.next_out = g.zbuf;
        g.zs.avail_out = ZBUF_CAP;
        int rc = deflate(&g.zs, flush);
        if (rc == Z_STREAM_ERROR) {
            sink_fail(EIO, "compressing the trace");
            return -1;
        }
        if (write_all(g.zbuf, ZBUF_CAP - g.zs.avail_out) < 0)
            return -1;
    } while (g.zs.avail_out == 0 || g.zs.avail_in > 0);
    return 0;
}

/* After a failure the bytes are discarded: the file keeps what was written,
 * which both formats accept as a truncated trace. */
static void out_flush(void)
{
    trace_writer *w = &g.w;
    if (w->out_len && !g.err) {
        if (g.gz)
            deflate_some(w->out, w->out_len, Z_NO_FLUSH);
        else
            write_all(w->out, w->out_len);
    }
    w->out_len = 0;
}

char *trace_out_reserve(trace_writer *w, size_t n)
{
    /* n is bounded by the encoders (names are cut at NAME_MAX_BYTES) far
     * below OUT_CAP, so one flush always makes room. */
    if (w->out_len + n > w->out_cap)
        out_flush();
    return w->out + w->out_len;
}

/* ---- buffers ----------------------------------------------------------------- */

static trace_buf *buf_pop_free(void)
{
    uint64_t head = atomic_load_explicit(&g.free_head, memory_order_acquire);
    for (;;) {
        uint32_t slot = (uint32_t)head;
        if (!slot)
            return NULL;
        trace_buf *buf = g.table[slot - 1];
        uint32_t next = atomic_load_explicit(&buf->free_next, memory_order_relaxed);
        uint64_t desired = ((head >> 32) + 1) << 32 | next;
        if (atomic_compare_exchange_weak_explicit(&g.free_head, &head, desired,
                                                  memory_order_acquire, memory_order_acquire))
            return buf;
    }
}

static void buf_push_free(trace_buf *buf)
{
    uint64_t head = atomic_load_explicit(&g.free_head, memory_order_relaxed);
    uint64_t desired;
    do {
        atomic_store_explicit(&buf->free_next, (uint32_t)head, memory_order_relaxed);
        desired = ((head >> 32) + 1) << 32 | (buf->index + 1);
    } while (!atomic_compare_exchange_weak_explicit(&g.free_head, &head, desired,
                                                    memory_order_release, memory_order_relaxed));
}

static trace_buf *buf_get(void)
{
    trace_buf *buf = buf_pop_free();
    if (buf)
        return buf;
    size_t index = atomic_fetch_add(&g.allocated, 1);
    if (index >= g.cap_buffers) {
        atomic_fetch_sub(&g.allocated, 1);
        return NULL;
    }
    buf = malloc(TRACE_BUF_BYTES);
    if (!buf) {
        /* The slot stays reserved but empty; trace_close skips it. */
        return NULL;
    }
    buf->index = (uint32_t)index;
    atomic_init(&buf->free_next, 0);
    g.table[index] = buf;
    return buf;
}

/* Evict a transcribed buffer's records from every cache before it returns to
 * the free list. The free list hands out the buffer transcribed last, so
 * without this the producer soon writes lines that the writer's core still
 * holds: each store must first take the line back from that core, and the
 * traced program stalls on it (a tight loop traced at threshold 0 ran 1.23x
 * slower with perfetto=True; 1.06x with the eviction, ./dev bench). Lines that
 * are in no cache are streamed in by the producer's prefetchers instead.
 * A hint only: caches stay coherent either way. */
#if defined(__x86_64__)
static void buf_evict(const trace_buf *buf)
{
    static int has_clflushopt = -1;  /* writer thread only */
    if (has_clflushopt < 0) {
        unsigned eax, ebx = 0, ecx, edx;
        has_clflushopt = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ebx >> 23 & 1);
    }
    uintptr_t line = (uintptr_t)buf->recs & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)(buf->recs + buf->count);
    if (has_clflushopt)
        for (; line < end; line += 64)
            __asm__ volatile("clflushopt (%0)" : : "r"(line) : "memory");
    else
        for (; line < end; line += 64)   /* clflush: every x86-64 has it */
            __asm__ volatile("clflush (%0)" : : "r"(line) : "memory");
}
#else
static void buf_evict(const trace_buf *buf) { (void)buf; }
#endif

static void queue_push(trace_buf *buf)
{
    trace_buf *head = atomic_load_explicit(&g.queue, memory_order_relaxed);
    do
        buf->next = head;
    while (!atomic_compare_exchange_weak_explicit(&g.queue, &head, buf, memory_order_release,
                                                  memory_order_relaxed));
    /* No wake-up: a futex call per buffer would cost the traced program a
     * system call every ~1600 records. The idle writer polls every
     * WRITER_POLL_NS instead; the memory bound holds hundreds of ms of records. */
}

/* Dropping begins where the thread's records stop: at its last record (the
 * dropped one was stamped just after it), or now if it never had a buffer. */
static void start_dropping(trace_tt *t, trace_buf *full)
{
    if (full) {
        full->drop = 1;
        full->drop_tsc = full->count ? full->recs[full->count - 1].tsc : clock_tsc();
        queue_push(full);
    } else {
        atomic_store_explicit(&t->drop_tsc, clock_tsc(), memory_order_relaxed);
    }
    t->buf = NULL;
    t->dropping = 1;
    t->pub.cur = t->pub.end = t->pub.start = NULL;
    atomic_store_explicit(&g.dropping, 1, memory_order_relaxed);
}

trace_record *trace_reserve_slow(trace_thread *thread)
{
    trace_tt *t = thread->opaque;
    if (!t->dropping) {
        trace_buf *full = t->buf;
        if (full)
            full->count = (uint32_t)(thread->cur - full->recs);
        trace_buf *fresh = NULL;
        if (!atomic_load_explicit(&g.dropping, memory_order_relaxed) &&
            !atomic_load_explicit(&g.failed, memory_order_relaxed) &&
            !atomic_load_explicit(&g.closing, memory_order_relaxed))
            fresh = buf_get();
        if (fresh) {
            if (full)
                queue_push(full);
            fresh->owner = t;
            fresh->drop = 0;
            t->buf = fresh;
            thread->start = fresh->recs;
            thread->cur = fresh->recs + 1;
            thread->end = fresh->recs + TRACE_BUF_RECORDS;
            return fresh->recs;
        }
        start_dropping(t, full);
    }
    atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
    return NULL;
}

/* ---- code names and threads ----------------------------------------------------- */

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
        free(entry->qualname);
        free(entry->filename);
        free(entry);
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

static void free_code(code_entry *entry)
{
    free(entry->qualname);
    free(entry->filename);
    free(entry->json);
    free(entry);
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

static int stack_push(trace_tt *t, int kind, uint64_t ns)
{
    if (t->depth == t->stack_cap) {
        uint32_t cap = t->stack_cap ? t->stack_cap * 2 : 64;
        struct open_slice *grown = realloc(t->stack, cap * sizeof *grown);
        if (!grown)
            return -1;
        t->stack = grown;
        t->stack_cap = cap;
    }
    t->stack[t->depth++] = (struct open_slice){ns, kind};
    return 0;
}

/* A slice lasts at least 1 ns. Perfetto sorts JSON events at equal ts with E
 * first, so the E of a zero-length B/E pair would close the enclosing slice
 * and leave the B open. The nanosecond moves the rest of the thread's events
 * with it (times never go backwards). */
static uint64_t end_time(const trace_tt *t, uint64_t ns)
{
    uint64_t begin = t->stack[t->depth - 1].begin_ns;
    return ns > begin ? ns : begin + 1;
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
    while (t->depth) {
        ns = end_time(t, ns);
        t->depth--;
        g.w.fmt->slice_end(&g.w, t, ns, t->stack[t->depth].kind, NULL);
    }
    return ns;
}

static void block_begin(trace_tt *t, uint64_t ns, const trace_record *r)
{
    if (stack_push(t, SLICE_BLOCK, ns) == 0) {
        g.w.fmt->block_begin(&g.w, t, ns, r);
        g.block_slices++;
    }
}

static void transcribe(trace_buf *buf)
{
    trace_tt *t = buf->owner;
    const trace_format *fmt = g.w.fmt;
    trace_writer *w = &g.w;
    if (g.err) {
        g.events_lost += buf->count;
        return;
    }
    if (buf->count)
        ensure_started(t, clock_to_ns(&w->conv, buf->recs[0].tsc));
    uint64_t last = t->last_ns;
    for (const trace_record *r = buf->recs, *e = r + buf->count; r < e; r++) {
        uint64_t ns = clock_to_ns(&w->conv, r->tsc);
        if (ns < last)
            ns = last;   /* overhead correction may step back a tick or two */
        last = ns;
        switch (r->kind) {
        case TRACE_FUNC_BEGIN:
            if (stack_push(t, SLICE_FUNC, ns) == 0) {
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
                last = ns = end_time(t, ns);
                t->depth--;
                fmt->slice_end(w, t, ns, r->kind == TRACE_FUNC_END ? SLICE_FUNC : SLICE_BLOCK, r);
            }
            break;
        case TRACE_BLOCK_NEXT:
            if (t->depth) {
                trace_record ended = *r;
                ended.offset = (int32_t)r->end_offset;
                last = ns = end_time(t, ns);
                t->depth--;
                fmt->slice_end(w, t, ns, SLICE_BLOCK, &ended);
            }
            block_begin(t, ns, r);
            break;
        case TRACE_INSN: {
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
    trace_buf *list = atomic_exchange_explicit(&g.queue, NULL, memory_order_acquire);
    if (!list)
        return 0;
    trace_buf *fifo = NULL;
    while (list) {
        trace_buf *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        trace_buf *next = fifo->next;
        transcribe(fifo);
        buf_evict(fifo);
        buf_push_free(fifo);
        fifo = next;
    }
    return 1;
}

#define WRITER_POLL_NS (1000 * 1000)

static void *writer_main(void *arg)
{
    (void)arg;
    for (;;) {
        if (drain_queue())
            continue;
        if (atomic_load_explicit(&g.stop, memory_order_acquire)) {
            drain_queue();   /* pushes that raced with the stop flag */
            break;
        }
        /* Idle: hand what is encoded to the kernel, so that a killed process
         * leaves a file that is as recent as possible. */
        out_flush();
        pthread_mutex_lock(&g.mu);
        if (!atomic_load(&g.queue) && !atomic_load(&g.stop)) {
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
    if (g.table) {
        size_t n = atomic_load(&g.allocated);
        for (size_t i = 0; i < n && i < g.cap_buffers; i++)
            free(g.table[i]);
    }
    free(g.table);
    g.table = NULL;
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
    free(g.zbuf);
    g.zbuf = NULL;
    if (g.gz)
        deflateEnd(&g.zs);
    g.gz = 0;
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.garbage_mu);
    g.open = 0;
}

/* A trace_open that got as far as opening the file fails: remove what it
 * created and release everything; returns -1 with errno = err. */
static int abandon_open(const char *path, int created, int err)
{
    close(g.fd);
    if (created)
        unlink(path);
    release_all();
    errno = err;
    return -1;
}

void trace_abandon(void)
{
    if (g.open && g.fd >= 0)
        close(g.fd); /* the child's copy of the descriptor only */
    /* Buffers and tables are left to the child's exit: freeing them would
     * need the locks a thread of the parent may have held at fork. */
    memset(&g, 0, sizeof g);
}

int trace_open(const char *path, size_t max_buffer_bytes, clock_converter conv)
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
    g.w.fmt = fmt;
    g.w.conv = conv;
    g.w.pid = (uint64_t)getpid();
    read_process_name(g.w.process_name, sizeof g.w.process_name);
    size_t limit = max_buffer_bytes ? max_buffer_bytes : DEFAULT_MAX_BUFFER_BYTES;
    g.cap_buffers = limit / TRACE_BUF_BYTES;
    if (g.cap_buffers < 1)
        g.cap_buffers = 1;
    if (g.cap_buffers > MAX_BUFFERS)
        g.cap_buffers = MAX_BUFFERS;
    g.fd = -1;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_mutex_init(&g.garbage_mu, NULL);
    g.open = 1;   /* for release_all's sake; trace_* calls are not made yet */
    g.table = calloc(g.cap_buffers, sizeof *g.table);
    g.w.out = malloc(OUT_CAP);
    g.w.out_cap = OUT_CAP;
    if (!g.table || !g.w.out)
        goto nomem;
    if (gz) {
        g.zbuf = malloc(ZBUF_CAP);
        /* 15 + 16: a gzip wrapper rather than zlib's, so the file is a .gz */
        if (!g.zbuf || deflateInit2(&g.zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            goto nomem;
        g.gz = 1;
    }
    /* Try to create the file exclusively first so that a failure later on
     * removes only a file this call created. */
    int created = 1;
    g.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (g.fd < 0 && errno == EEXIST) {
        created = 0;
        g.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    }
    if (g.fd < 0) {
        int saved = errno;
        release_all();
        errno = saved;
        return -1;
    }
    if (fmt->file_begin(&g.w) < 0)
        return abandon_open(path, created, errno ? errno : ENOMEM);
    int rc = pthread_create(&g.thread, NULL, writer_main, NULL);
    if (rc)
        return abandon_open(path, created, rc);
    return 0;
nomem:
    release_all();
    errno = ENOMEM;
    return -1;
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
    atomic_store(&g.closing, 1);
    for (trace_tt *t = atomic_load(&g.threads); t; t = t->next) {
        trace_buf *buf = t->buf;
        if (buf) {
            buf->count = (uint32_t)(t->pub.cur - buf->recs);
            t->buf = NULL;
            queue_push(buf);
        }
        t->pub.cur = t->pub.end = t->pub.start = NULL;
    }
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
        if (g.err)
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
    if (!g.err)
        g.w.fmt->file_end(&g.w, end_ns, dropped, 1);
    out_flush();
    if (g.gz && !g.err)
        deflate_some(NULL, 0, Z_FINISH);
    if (close(g.fd) < 0 && !g.err)
        sink_fail(errno, "closing the trace");

    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->events_written = g.events_written;
        stats->events_dropped = dropped;
        stats->bytes_written = g.bytes_written;
        stats->block_slices = g.block_slices;
        stats->function_slices = g.function_slices;
        stats->error_errno = g.err;
        snprintf(stats->error_message, sizeof stats->error_message, "%s", g.errmsg);
    }
    int err = g.err;
    release_all();
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}
