/* pftrace.c - the native Perfetto protobuf encoder, hand-written.
 *
 * A trace file is a bare sequence of `Trace.packet` records (tag 0x0A, length,
 * TracePacket), so it can be appended to forever and a truncated file is
 * readable up to its last complete packet. Field numbers and tag bytes are
 * those of perfetto_trace.proto (see the reference notes, section 2.3).
 *
 * Layout:
 *  - sequence 1: a ClockSnapshot that makes CLOCK_MONOTONIC the trace clock
 *    (the writer's ns are clock_to_ns's, i.e. MONOTONIC), the process
 *    TrackDescriptor and, at close, a process instant with the drop count.
 *  - per traced thread, sequence 2*index: the thread's track. Its first packet
 *    sets SEQ_INCREMENTAL_STATE_CLEARED (without it trace_processor ignores
 *    the sequence's interned data), track_event defaults (track_uuid) and an
 *    incremental sequence clock 64 anchored to MONOTONIC, so every later
 *    timestamp is the ns delta from the previous packet of the sequence.
 *  - per thread, sequence 2*index+1: its instructions, on a child track of the
 *    thread track. A sequence of its own keeps each sequence's timestamps
 *    monotonic (an instruction's END would otherwise have to interleave with
 *    the thread's later BEGIN/ENDs) and its nesting independent.
 *
 * Size: a block slice is BEGIN (~12 B) + END with its cycles (~16 B). The
 * cycles are a TrackEvent extension field (`ocular.cycles`, described once by
 * an ExtensionDescriptor at the start of the file): trace_processor turns it
 * into a slice argument "cycles" as it would a debug annotation, for 5 bytes
 * instead of 7. To stay under 30 B the hot packets also omit
 * SEQ_NEEDS_INCREMENTAL_STATE:
 * trace_processor looks interned data and defaults up by sequence whatever the
 * flag says; the flag only makes it skip packets of a sequence whose state was
 * lost, which cannot happen in a file we write start to end (each sequence
 * begins with CLEARED and is never reset). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "writer_internal.h"

#define CLOCK_MONOTONIC_ID 3
#define CLOCK_BOOTTIME_ID 6
#define CLOCK_SEQ_INCREMENTAL 64
#define ANN_EVENTS_DROPPED 1         /* debug_annotation_names iid */
/* TrackEvent's extension range is 1000-9999. Chrome's own extensions take
 * numbers from 1000 up, and a number trace_processor already knows with
 * another type makes it reject the whole descriptor; the Perfetto docs use
 * 9900 and up for others' extensions. (Any number above 2047 costs a 3-byte
 * tag, so nothing shorter was safe.) */
#define CYCLES_FIELD 9950
#define CYCLES_TAG "\xF0\xED\x04"     /* CYCLES_FIELD << 3 | varint, as a varint */

typedef struct {                     /* open addressing, value 0 = empty */
    uint64_t *keys;
    uint32_t *values;
    uint32_t cap, used;
} iid_map;

typedef struct {
    uint64_t last;                   /* timestamp of the previous packet, ns */
    uint32_t seq;
    uint32_t next_iid;
    iid_map names;                   /* block/instruction name -> iid */
    int started;
} sequence;

typedef struct {
    sequence main, insn;
    iid_map funcs;                   /* code id -> name iid = source location iid */
    uint64_t uuid;
} pf_thread;

static uint64_t process_uuid(const trace_writer *w)
{
    /* Distinct per process so that traces of several processes can be merged. */
    return 0x4F63756C00000000ull ^ (w->pid << 20);
}

/* ---- wire format -------------------------------------------------------------- */

static inline uint8_t *varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Nested messages: write the tag, leave one byte for the length, write the
 * body, then fix the length, moving the body when it needs a longer varint.
 * Hot packets are far below 128 bytes, so the move happens only for interned
 * strings and metadata. */
#define OPEN(p, tag) open_msg((p), (const uint8_t *)(tag), sizeof(tag) - 1)

static inline uint8_t *open_msg(uint8_t *p, const uint8_t *tag, size_t tag_len)
{
    memcpy(p, tag, tag_len);
    return p + tag_len + 1;
}

static inline uint8_t *close_msg(uint8_t *body, uint8_t *end)
{
    size_t len = (size_t)(end - body);
    if (len < 0x80) {
        body[-1] = (uint8_t)len;
        return end;
    }
    uint8_t tmp[10];
    size_t n = (size_t)(varint(tmp, len) - tmp);
    memmove(body - 1 + n, body, len);
    memcpy(body - 1, tmp, n);
    return body - 1 + n + len;
}

static uint8_t *str_field(uint8_t *p, const uint8_t *tag, size_t tag_len, const char *s,
                          size_t len)
{
    memcpy(p, tag, tag_len);
    p = varint(p + tag_len, len);
    memcpy(p, s, len);
    return p + len;
}
#define STR(p, tag, s, len) str_field((p), (const uint8_t *)(tag), sizeof(tag) - 1, (s), (len))

#define RAW(p, bytes) ((uint8_t *)memcpy((p), (bytes), sizeof(bytes) - 1) + sizeof(bytes) - 1)

static inline uint8_t *uint_field(uint8_t *p, uint8_t tag, uint64_t v)
{
    *p++ = tag;
    return varint(p, v);
}

/* ---- interning ----------------------------------------------------------------- */

static uint32_t map_get(const iid_map *m, uint64_t key)
{
    if (!m->cap)
        return 0;
    for (uint32_t i = (uint32_t)(key * 0x9E3779B97F4A7C15ull >> 32) & (m->cap - 1);;
         i = (i + 1) & (m->cap - 1)) {
        if (!m->values[i] || m->keys[i] == key)
            return m->values[i];
    }
}

/* Returns 0 (so the caller writes the name inline) if memory runs out. */
static uint32_t map_put(iid_map *m, uint64_t key, uint32_t value)
{
    if (2 * (m->used + 1) > m->cap) {
        iid_map grown = {0};
        grown.cap = m->cap ? 2 * m->cap : 256;
        grown.keys = malloc(grown.cap * sizeof *grown.keys);
        grown.values = calloc(grown.cap, sizeof *grown.values);
        if (!grown.keys || !grown.values) {
            free(grown.keys);
            free(grown.values);
            return 0;
        }
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->values[i])
                map_put(&grown, m->keys[i], m->values[i]);
        free(m->keys);
        free(m->values);
        *m = grown;
    }
    uint32_t i = (uint32_t)(key * 0x9E3779B97F4A7C15ull >> 32) & (m->cap - 1);
    while (m->values[i])
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->values[i] = value;
    m->used++;
    return value;
}

/* ---- packets --------------------------------------------------------------------- */

static uint8_t *packet_head(uint8_t *p, sequence *s, uint64_t ns)
{
    if (ns < s->last)
        ns = s->last;                /* deltas are unsigned */
    p = uint_field(p, 0x40, ns - s->last);   /* timestamp, on clock 64 */
    s->last = ns;
    return uint_field(p, 0x50, s->seq);      /* trusted_packet_sequence_id */
}

static uint8_t *clock_entry(uint8_t *p, uint32_t id, uint64_t ns, int incremental)
{
    uint8_t *c = OPEN(p, "\x0A");
    p = uint_field(c, 0x08, id);
    p = uint_field(p, 0x10, ns);
    if (incremental)
        p = uint_field(p, 0x18, 1);
    return close_msg(c, p);
}

static void start_sequence(trace_writer *w, sequence *s, uint32_t seq, uint64_t track_uuid,
                           uint64_t ns)
{
    s->seq = seq;
    s->last = ns;
    s->next_iid = 1;
    s->started = 1;
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, 256), "\x0A");
    uint8_t *p = uint_field(pk, 0x50, seq);
    p = uint_field(p, 0x68, 1);                          /* SEQ_INCREMENTAL_STATE_CLEARED */
    uint8_t *defaults = OPEN(p, "\xDA\x03");             /* trace_packet_defaults */
    uint8_t *q = RAW(defaults, "\xD0\x03\x40");        /* timestamp_clock_id = 64 */
    uint8_t *ted = OPEN(q, "\x5A");                      /* track_event_defaults */
    q = close_msg(ted, uint_field(ted, 0x58, track_uuid));
    p = close_msg(defaults, q);
    uint8_t *interned = OPEN(p, "\x62");
    uint8_t *entry = OPEN(interned, "\x1A");             /* debug_annotation_names */
    q = close_msg(entry, STR(uint_field(entry, 0x08, ANN_EVENTS_DROPPED), "\x12",
                             "events_dropped", 14));
    p = close_msg(interned, q);
    uint8_t *snap = OPEN(p, "\x32");                     /* clock_snapshot */
    q = clock_entry(snap, CLOCK_MONOTONIC_ID, ns, 0);
    q = clock_entry(q, CLOCK_SEQ_INCREMENTAL, ns, 1);
    p = close_msg(snap, q);
    trace_out_commit(w, (char *)close_msg(pk, p));
}

/* A thread track (suffix NULL) or its named child track. */
static void track_descriptor(trace_writer *w, uint64_t uuid, uint64_t parent, const trace_tt *t,
                             const char *name, const char *suffix)
{
    char fallback[48];
    if (!name) {
        char *f = memcpy(fallback, "Thread ", 7);
        *trace_fmt_u64(f + 7, t->tid) = '\0';
        name = suffix ? fallback : NULL;
    }
    size_t n = name ? strlen(name) : 0, sn = suffix ? strlen(suffix) : 0;
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, n + sn + 128), "\x0A");
    uint8_t *td = OPEN(pk, "\xE2\x03");
    uint8_t *q = uint_field(td, 0x08, uuid);
    q = uint_field(q, 0x28, parent);                      /* parent_uuid */
    if (!suffix) {
        uint8_t *thread = OPEN(q, "\x22");
        q = uint_field(thread, 0x08, w->pid);
        q = uint_field(q, 0x10, t->tid);
        if (name)
            q = STR(q, "\x2A", name, n);
        q = close_msg(thread, q);
    } else {
        /* Parented to the thread track, a plain track inherits the thread and
         * is drawn right next to it. */
        *q++ = 0x12;
        q = varint(q, n + sn);
        memcpy(q, name, n);
        memcpy(q + n, suffix, sn);
        q += n + sn;
    }
    trace_out_commit(w, (char *)close_msg(pk, close_msg(td, q)));
}

static int pf_file_begin(trace_writer *w)
{
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, 1024), "\x0A");
    uint8_t *p = uint_field(pk, 0x50, 1);
    p = uint_field(p, 0x68, 1);      /* every sequence starts CLEARED, this one too */
    uint8_t *snap = OPEN(p, "\x32");
    uint8_t *q = clock_entry(snap, CLOCK_MONOTONIC_ID, w->conv.mono0, 0);
#ifdef CLOCK_BOOTTIME
    /* BOOTTIME too, so that the trace can be merged with system traces. */
    struct timespec mono, boot;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    int64_t offset = ((int64_t)boot.tv_sec - mono.tv_sec) * 1000000000 + (boot.tv_nsec - mono.tv_nsec);
    q = clock_entry(q, CLOCK_BOOTTIME_ID, w->conv.mono0 + (uint64_t)offset, 0);
#endif
    /* primary_trace_clock: our timestamps are MONOTONIC; without this the
     * trace clock would default to BOOTTIME. */
    q = uint_field(q, 0x10, CLOCK_MONOTONIC_ID);
    p = close_msg(pk, close_msg(snap, q));

    pk = OPEN(p, "\x0A");
    uint8_t *td = OPEN(pk, "\xE2\x03");
    q = uint_field(td, 0x08, process_uuid(w));
    uint8_t *proc = OPEN(q, "\x1A");
    q = uint_field(proc, 0x08, w->pid);
    q = STR(q, "\x32", w->process_name, strlen(w->process_name));
    q = close_msg(td, close_msg(proc, q));
    p = close_msg(pk, q);

    /* ExtensionDescriptor{extension_set: FileDescriptorSet{file:
     * FileDescriptorProto}} declaring `optional sint64 ocular.cycles = 9950`
     * on TrackEvent. trace_processor adds it to its descriptor pool while it
     * reads the file, before any event is parsed. */
    static const char ext_file[] = "ocular/ocular_extensions.proto", ext_package[] = "ocular",
                      ext_dependency[] = "protos/perfetto/trace/perfetto_trace.proto",
                      extendee[] = ".perfetto.protos.TrackEvent";
    pk = OPEN(p, "\x0A");
    uint8_t *ext = OPEN(pk, "\xC2\x04");                /* extension_descriptor */
    uint8_t *set = OPEN(ext, "\x0A");                    /* extension_set */
    uint8_t *file = OPEN(set, "\x0A");                   /* file */
    q = STR(file, "\x0A", ext_file, sizeof ext_file - 1);
    q = STR(q, "\x12", ext_package, sizeof ext_package - 1);
    q = STR(q, "\x1A", ext_dependency, sizeof ext_dependency - 1);
    uint8_t *field = OPEN(q, "\x3A");                    /* extension: FieldDescriptorProto */
    q = STR(field, "\x0A", "cycles", 6);
    q = STR(q, "\x12", extendee, sizeof extendee - 1);
    q = uint_field(q, 0x18, CYCLES_FIELD);              /* number */
    q = uint_field(q, 0x20, 1);                         /* label: optional */
    q = uint_field(q, 0x28, 18);                        /* type: sint64 */
    q = close_msg(set, close_msg(file, close_msg(field, q)));
    trace_out_commit(w, (char *)close_msg(pk, close_msg(ext, q)));
    return 0;
}

static pf_thread *pft(trace_tt *t)
{
    return (pf_thread *)t->fmt.bytes;
}

static void pf_thread_begin(trace_writer *w, trace_tt *t, uint64_t ns)
{
    _Static_assert(sizeof(pf_thread) <= sizeof t->fmt, "pf_thread fits in trace_tt");
    pf_thread *pt = pft(t);
    memset(pt, 0, sizeof *pt);
    pt->uuid = process_uuid(w) + 2 * (uint64_t)t->index;
    start_sequence(w, &pt->main, 2 * t->index, pt->uuid, ns);
    track_descriptor(w, pt->uuid, process_uuid(w), t, t->name_shown, NULL);
}

static void pf_thread_name(trace_writer *w, trace_tt *t, const char *name)
{
    pf_thread *pt = pft(t);
    /* Re-emitting a descriptor with the same uuid is how the Perfetto SDK
     * itself renames tracks; descriptors are read before any event. */
    track_descriptor(w, pt->uuid, process_uuid(w), t, name, NULL);
    if (pt->insn.started)
        track_descriptor(w, pt->uuid + 1, pt->uuid, t, name, " instructions");
}

/* The name of a block or instruction, "L<line> @<offset>" as in JSON. */
static size_t block_name(char *dst, const trace_record *r)
{
    char *p = dst;
    if (r->line >= 0) {
        *p++ = 'L';
        p = trace_fmt_i64(p, r->line);
        *p++ = ' ';
    }
    *p++ = '@';
    p = trace_fmt_i64(p, r->offset);
    return (size_t)(p - dst);
}

static uint8_t *name_ref(uint8_t *p, uint32_t iid, const char *name, size_t len)
{
    if (iid)
        return uint_field(p, 0x50, iid);      /* name_iid */
    return STR(p, "\xBA\x01", name, len);     /* name, when interning ran out of memory */
}

/* InternedData.event_names entry {iid, name}, written at p. */
static uint8_t *intern_event_name(uint8_t *p, uint32_t iid, const char *name, size_t len)
{
    uint8_t *entry = OPEN(p, "\x12");
    return close_msg(entry, STR(uint_field(entry, 0x08, iid), "\x12", name, len));
}

/* BEGIN of a block or an instruction on sequence s. */
static void begin_named(trace_writer *w, sequence *s, uint64_t ns, const trace_record *r)
{
    char name[32];
    size_t len = block_name(name, r);
    uint64_t key = (uint64_t)(uint32_t)r->line << 32 | (uint32_t)r->offset;
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, 128), "\x0A");
    uint8_t *p = pk;
    uint32_t iid = map_get(&s->names, key);
    if (!iid && (iid = map_put(&s->names, key, s->next_iid))) {
        s->next_iid++;
        uint8_t *interned = OPEN(p, "\x62");
        p = close_msg(interned, intern_event_name(interned, iid, name, len));
    }
    p = packet_head(p, s, ns);
    uint8_t *ev = OPEN(p, "\x5A");
    p = uint_field(ev, 0x48, 1);                  /* TYPE_SLICE_BEGIN */
    p = name_ref(p, iid, name, len);
    trace_out_commit(w, (char *)close_msg(pk, close_msg(ev, p)));
}

static void end_slice(trace_writer *w, sequence *s, uint64_t ns, const int64_t *cycles)
{
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, 64), "\x0A");
    uint8_t *p = packet_head(pk, s, ns);
    uint8_t *ev = OPEN(p, "\x5A");
    p = uint_field(ev, 0x48, 2);                  /* TYPE_SLICE_END */
    if (cycles) {
        /* ocular.cycles, sint64: zigzag, so that a negative count (a tiny
         * block after the overhead is taken off) stays short. Given at the
         * END, it joins the slice's arguments. */
        uint64_t zigzag = (uint64_t)*cycles << 1 ^ (uint64_t)(*cycles >> 63);
        p = varint(RAW(p, CYCLES_TAG), zigzag);
    }
    trace_out_commit(w, (char *)close_msg(pk, close_msg(ev, p)));
}

static void pf_func_begin(trace_writer *w, trace_tt *t, uint64_t ns, uint32_t code_id,
                          code_entry *code)
{
    pf_thread *pt = pft(t);
    sequence *s = &pt->main;
    char unknown[32];
    const char *name = code ? code->qualname : unknown;
    if (!code) {
        char *u = trace_fmt_u64(memcpy(unknown, "<code ", 6) + 6, code_id);
        memcpy(u, ">", 2);
    }
    size_t len = strlen(name);
    size_t flen = code ? strlen(code->filename) : 0;
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, 2 * len + flen + 128), "\x0A");
    uint8_t *p = pk;
    uint32_t iid = map_get(&pt->funcs, code_id);
    if (!iid && (iid = map_put(&pt->funcs, code_id, s->next_iid))) {
        s->next_iid++;
        uint8_t *interned = OPEN(p, "\x62");
        p = intern_event_name(interned, iid, name, len);
        if (code) {
            /* The function's location as an interned SourceLocation, sharing
             * the name's iid: 3 bytes per call instead of a file string. */
            uint8_t *entry = OPEN(p, "\x22");                       /* source_locations */
            p = uint_field(entry, 0x08, iid);
            p = STR(p, "\x12", code->filename, flen);
            p = STR(p, "\x1A", name, len);
            p = close_msg(entry, uint_field(p, 0x20, (uint64_t)(int64_t)code->firstlineno));
        }
        p = close_msg(interned, p);
    }
    p = packet_head(p, s, ns);
    uint8_t *ev = OPEN(p, "\x5A");
    p = uint_field(ev, 0x48, 1);
    p = name_ref(p, iid, name, len);
    if (iid && code)
        p = varint(RAW(p, "\x90\x02"), iid);    /* source_location_iid */
    trace_out_commit(w, (char *)close_msg(pk, close_msg(ev, p)));
}

static void pf_block_begin(trace_writer *w, trace_tt *t, uint64_t ns, const trace_record *r)
{
    begin_named(w, &pft(t)->main, ns, r);
}

static void pf_slice_end(trace_writer *w, trace_tt *t, uint64_t ns, int kind, const trace_record *r)
{
    end_slice(w, &pft(t)->main, ns, kind == SLICE_BLOCK && r ? &r->cycles : NULL);
}

static void pf_insn(trace_writer *w, trace_tt *t, uint64_t ns, uint64_t end_ns,
                    const trace_record *r)
{
    pf_thread *pt = pft(t);
    if (!pt->insn.started) {
        start_sequence(w, &pt->insn, 2 * t->index + 1, pt->uuid + 1, ns);
        track_descriptor(w, pt->uuid + 1, pt->uuid, t, t->name_shown, " instructions");
    }
    begin_named(w, &pt->insn, ns, r);
    end_slice(w, &pt->insn, end_ns, &r->cycles);
}

static uint8_t *drop_event(uint8_t *p, uint64_t count, const char *tail, int interned_name)
{
    char name[96];
    char *n = memcpy(name, "ocular: ", 8);
    n = trace_fmt_u64(n + 8, count);
    memcpy(n, " events dropped", 15);
    n += 15;
    memcpy(n, tail, strlen(tail));
    n += strlen(tail);
    p = uint_field(p, 0x48, 3);                   /* TYPE_INSTANT */
    p = STR(p, "\xBA\x01", name, (size_t)(n - name));
    uint8_t *ann = OPEN(p, "\x22");
    p = interned_name ? uint_field(ann, 0x08, ANN_EVENTS_DROPPED)
                      : STR(ann, "\x52", "events_dropped", 14);
    return close_msg(ann, uint_field(p, 0x20, count));
}

static void pf_drop_instant(trace_writer *w, trace_tt *t, uint64_t ns, uint64_t count)
{
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, 192), "\x0A");
    uint8_t *p = packet_head(pk, &pft(t)->main, ns);
    uint8_t *ev = OPEN(p, "\x5A");
    p = drop_event(ev, count, " from here (buffer memory limit)", 1);
    trace_out_commit(w, (char *)close_msg(pk, close_msg(ev, p)));
}

static void pf_file_end(trace_writer *w, uint64_t ns, uint64_t dropped, int clean)
{
    (void)clean;   /* nothing to terminate: the packet stream is complete */
    if (!dropped)
        return;
    /* The run's total, on the process track (sequence 1 has no incremental
     * state, so an absolute MONOTONIC timestamp and inline names). */
    uint8_t *pk = OPEN((uint8_t *)trace_out_reserve(w, 192), "\x0A");
    uint8_t *p = uint_field(pk, 0x40, ns);
    p = RAW(p, "\xD0\x03\x03");                  /* timestamp_clock_id = MONOTONIC */
    p = uint_field(p, 0x50, 1);
    uint8_t *ev = OPEN(p, "\x5A");
    p = uint_field(ev, 0x58, process_uuid(w));    /* track_uuid */
    p = drop_event(p, dropped, " in this run", 0);
    trace_out_commit(w, (char *)close_msg(pk, close_msg(ev, p)));
}

static void pf_thread_free(trace_tt *t)
{
    pf_thread *pt = pft(t);   /* all zero if the thread never started */
    free(pt->funcs.keys);
    free(pt->funcs.values);
    free(pt->main.names.keys);
    free(pt->main.names.values);
    free(pt->insn.names.keys);
    free(pt->insn.names.values);
}

const trace_format trace_pftrace_format = {
    .file_begin = pf_file_begin,
    .thread_begin = pf_thread_begin,
    .func_begin = pf_func_begin,
    .block_begin = pf_block_begin,
    .slice_end = pf_slice_end,
    .insn = pf_insn,
    .thread_name = pf_thread_name,
    .drop_instant = pf_drop_instant,
    .file_end = pf_file_end,
    .thread_free = pf_thread_free,
};
