/* json.c - the Chrome Trace Event JSON encoder (array form).
 *
 * File layout: "[" + the process_name event on the first line, then one
 * event per line, each line starting with ",". A file cut anywhere (SIGKILL,
 * a full disk) is therefore a valid array prefix up to its last complete
 * line: Perfetto accepts a missing "]" and drops a partial last event, and a
 * line-based reader can do the same. "]" is written only by a clean close.
 *
 * Timestamps are integer ns printed as microseconds with exactly three
 * decimals; going through a double would lose ns digits and could make a
 * child end after its parent once rounded.
 *
 * Slices are B/E rather than X because the writer sees a slice's end only
 * later; E events carry no name (Perfetto matches an E to the innermost open
 * slice whose name and category match, and a missing name matches anything),
 * and block E events carry the args only known at the end (cycles,
 * end_offset), which Perfetto merges into the slice's args.
 *
 * Instructions (TRACE_INSN) are complete X events on a lane of their own:
 * JSON has no tracks, only (pid, tid) threads, so each traced thread gets a
 * synthetic tid INSN_TID_BASE + tid named "<name> instructions". Linux tids
 * stay below 2^22 (pid_max), so the synthetic ones never collide with real
 * ones and stay below 2^32 (Perfetto coerces larger tids to 0). Keeping
 * instructions off the thread's own track keeps its nesting depth (limit 512)
 * and avoids X events that partially overlap B/E slices. */
#include <stdlib.h>
#include <string.h>

#include "writer_internal.h"

#define INSN_TID_BASE 1000000000u

typedef struct {
    char pidtid[64];       /* "pid":P,"tid":T,        */
    size_t pidtid_len;
    char insn_pidtid[64];  /* "pid":P,"tid":INSN_TID, */
    size_t insn_pidtid_len;
    int insn_named;
} json_thread;

#define LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

/* Escape already-valid UTF-8 for a JSON string body: quote, backslash and
 * control characters only; everything else stays raw UTF-8 (a \u escape of
 * a surrogate pair would abort Perfetto's JSON import). Needs 6 * len. */
static char *escape(char *p, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20) {
            *p++ = '\\';
            switch (c) {
            case '\n': *p++ = 'n'; break;
            case '\t': *p++ = 't'; break;
            case '\r': *p++ = 'r'; break;
            default:
                p = LIT(p, "u00");
                *p++ = hex[c >> 4];
                *p++ = hex[c & 15];
            }
        } else {
            *p++ = (char)c;
        }
    }
    return p;
}

static char *fmt_ts(char *p, uint64_t ns)
{
    p = trace_fmt_u64(p, ns / 1000);
    unsigned frac = (unsigned)(ns % 1000);
    p[0] = '.';
    p[1] = (char)('0' + frac / 100);
    p[2] = (char)('0' + frac / 10 % 10);
    p[3] = (char)('0' + frac % 10);
    return p + 4;
}

/* Pre-render `"name":"<qualname>","args":{"file":"<file>","line":N}` once per
 * code object: function slices are the most name-heavy events. */
static const char *code_fragment(code_entry *code, size_t *len)
{
    if (!code->json) {
        size_t qn = strlen(code->qualname), fn = strlen(code->filename);
        char *buf = malloc(6 * (qn + fn) + 64);
        if (!buf) {
            *len = sizeof("\"name\":\"?\"") - 1;
            return "\"name\":\"?\"";
        }
        char *p = LIT(buf, "\"name\":\"");
        p = escape(p, code->qualname, qn);
        p = LIT(p, "\",\"args\":{\"file\":\"");
        p = escape(p, code->filename, fn);
        p = LIT(p, "\",\"line\":");
        p = trace_fmt_i64(p, code->firstlineno);
        *p++ = '}';
        code->json_len = (size_t)(p - buf);
        code->json = buf;
    }
    *len = code->json_len;
    return code->json;
}

static char *event_head(char *p, const char *ph, const json_thread *jt, uint64_t ns)
{
    p = LIT(p, ",\n{\"ph\":\"");
    *p++ = ph[0];
    p = LIT(p, "\",");
    memcpy(p, jt->pidtid, jt->pidtid_len);
    p += jt->pidtid_len;
    p = LIT(p, "\"ts\":");
    return fmt_ts(p, ns);
}

static char *block_name(char *p, const trace_record *r)
{
    p = LIT(p, "\"name\":\"");
    if (r->line >= 0) {
        *p++ = 'L';
        p = trace_fmt_i64(p, r->line);
        *p++ = ' ';
    }
    *p++ = '@';
    p = trace_fmt_i64(p, r->offset);
    *p++ = '"';
    return p;
}

static int json_file_begin(trace_writer *w)
{
    char *p = trace_out_reserve(w, 512);
    p = LIT(p, "[{\"ph\":\"M\",\"pid\":");
    p = trace_fmt_u64(p, w->pid);
    p = LIT(p, ",\"name\":\"process_name\",\"args\":{\"name\":\"");
    p = escape(p, w->process_name, strlen(w->process_name));
    p = LIT(p, "\"}}");
    trace_out_commit(w, p);
    return 0;
}

static void sort_index(trace_writer *w, const char *pidtid, size_t len, uint64_t index)
{
    char *p = trace_out_reserve(w, 256);
    p = LIT(p, ",\n{\"ph\":\"M\",");
    memcpy(p, pidtid, len);
    p += len;
    p = LIT(p, "\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":");
    p = trace_fmt_u64(p, index);
    p = LIT(p, "}}");
    trace_out_commit(w, p);
}

static void name_event(trace_writer *w, const char *pidtid, size_t len, const char *name,
                       const char *suffix, uint64_t tid);

static void json_thread_begin(trace_writer *w, trace_tt *t, uint64_t ns)
{
    (void)ns;
    _Static_assert(sizeof(json_thread) <= sizeof t->fmt, "json_thread fits in trace_tt");
    json_thread *jt = (json_thread *)t->fmt.bytes;
    char *p = LIT(jt->pidtid, "\"pid\":");
    p = trace_fmt_u64(p, w->pid);
    p = LIT(p, ",\"tid\":");
    p = trace_fmt_u64(p, t->tid);
    *p++ = ',';
    jt->pidtid_len = (size_t)(p - jt->pidtid);
    p = LIT(jt->insn_pidtid, "\"pid\":");
    p = trace_fmt_u64(p, w->pid);
    p = LIT(p, ",\"tid\":");
    p = trace_fmt_u64(p, INSN_TID_BASE + t->tid);
    *p++ = ',';
    jt->insn_pidtid_len = (size_t)(p - jt->insn_pidtid);
    /* Keep each thread's instruction lane right below the thread. */
    sort_index(w, jt->pidtid, jt->pidtid_len, 2 * (uint64_t)t->index);
    if (t->name_shown)
        name_event(w, jt->pidtid, jt->pidtid_len, t->name_shown, "", t->tid);
}

static void name_event(trace_writer *w, const char *pidtid, size_t len, const char *name,
                       const char *suffix, uint64_t tid)
{
    size_t n = name ? strlen(name) : 0;
    char *p = trace_out_reserve(w, 6 * n + 256);
    p = LIT(p, ",\n{\"ph\":\"M\",");
    memcpy(p, pidtid, len);
    p += len;
    p = LIT(p, "\"name\":\"thread_name\",\"args\":{\"name\":\"");
    if (name) {
        p = escape(p, name, n);
    } else {
        p = LIT(p, "Thread ");
        p = trace_fmt_u64(p, tid);
    }
    memcpy(p, suffix, strlen(suffix));
    p += strlen(suffix);
    p = LIT(p, "\"}}");
    trace_out_commit(w, p);
}

static void name_insn_lane(trace_writer *w, trace_tt *t)
{
    json_thread *jt = (json_thread *)t->fmt.bytes;
    name_event(w, jt->insn_pidtid, jt->insn_pidtid_len, t->name_shown, " instructions", t->tid);
    jt->insn_named = 1;
}

static void json_thread_name(trace_writer *w, trace_tt *t, const char *name)
{
    json_thread *jt = (json_thread *)t->fmt.bytes;
    if (name)
        name_event(w, jt->pidtid, jt->pidtid_len, name, "", t->tid);
    if (jt->insn_named)
        name_insn_lane(w, t);
}

static void json_func_begin(trace_writer *w, trace_tt *t, uint64_t ns, uint32_t code_id,
                            code_entry *code)
{
    size_t len;
    char unknown[64];
    const char *frag;
    if (code) {
        frag = code_fragment(code, &len);
    } else {
        char *q = LIT(unknown, "\"name\":\"<code ");
        q = trace_fmt_u64(q, code_id);
        q = LIT(q, ">\"");
        frag = unknown;
        len = (size_t)(q - unknown);
    }
    char *p = trace_out_reserve(w, len + 128);
    p = event_head(p, "B", (json_thread *)t->fmt.bytes, ns);
    *p++ = ',';
    memcpy(p, frag, len);
    p += len;
    *p++ = '}';
    trace_out_commit(w, p);
}

/* The offset value, then ',"line":N' unless the instruction has no line. */
static char *offset_and_line(char *p, const trace_record *r)
{
    p = trace_fmt_i64(p, r->offset);
    if (r->line >= 0) {
        p = LIT(p, ",\"line\":");
        p = trace_fmt_i64(p, r->line);
    }
    return p;
}

static void json_block_begin(trace_writer *w, trace_tt *t, uint64_t ns, const trace_record *r)
{
    char *p = trace_out_reserve(w, 256);
    p = event_head(p, "B", (json_thread *)t->fmt.bytes, ns);
    *p++ = ',';
    p = block_name(p, r);
    p = LIT(p, ",\"args\":{\"start_offset\":");
    p = offset_and_line(p, r);
    p = LIT(p, "}}");
    trace_out_commit(w, p);
}

static void json_slice_end(trace_writer *w, trace_tt *t, uint64_t ns, int kind,
                           const trace_record *r)
{
    char *p = trace_out_reserve(w, 256);
    p = event_head(p, "E", (json_thread *)t->fmt.bytes, ns);
    if (kind == SLICE_BLOCK && r) {
        p = LIT(p, ",\"args\":{\"cycles\":");
        p = trace_fmt_i64(p, r->cycles);
        p = LIT(p, ",\"end_offset\":");
        p = trace_fmt_i64(p, r->offset);
        *p++ = '}';
    }
    *p++ = '}';
    trace_out_commit(w, p);
}

static void json_insn(trace_writer *w, trace_tt *t, uint64_t ns, uint64_t end_ns,
                      const trace_record *r)
{
    json_thread *jt = (json_thread *)t->fmt.bytes;
    if (!jt->insn_named) {
        sort_index(w, jt->insn_pidtid, jt->insn_pidtid_len, 2 * (uint64_t)t->index + 1);
        name_insn_lane(w, t);
    }
    char *p = trace_out_reserve(w, 320);
    p = LIT(p, ",\n{\"ph\":\"X\",");
    memcpy(p, jt->insn_pidtid, jt->insn_pidtid_len);
    p += jt->insn_pidtid_len;
    p = LIT(p, "\"ts\":");
    p = fmt_ts(p, ns);
    p = LIT(p, ",\"dur\":");
    p = fmt_ts(p, end_ns - ns);
    *p++ = ',';
    p = block_name(p, r);
    p = LIT(p, ",\"args\":{\"offset\":");
    p = offset_and_line(p, r);
    p = LIT(p, ",\"cycles\":");
    p = trace_fmt_i64(p, r->cycles);
    p = LIT(p, "}}");
    trace_out_commit(w, p);
}

static char *drop_name(char *p, uint64_t count, const char *tail)
{
    p = LIT(p, "\"name\":\"ocular: ");
    p = trace_fmt_u64(p, count);
    p = LIT(p, " events dropped");
    memcpy(p, tail, strlen(tail));
    p += strlen(tail);
    p = LIT(p, "\",\"args\":{\"events_dropped\":");
    p = trace_fmt_u64(p, count);
    p = LIT(p, "}}");
    return p;
}

static void json_drop_instant(trace_writer *w, trace_tt *t, uint64_t ns, uint64_t count)
{
    char *p = trace_out_reserve(w, 256);
    p = event_head(p, "i", (json_thread *)t->fmt.bytes, ns);
    p = LIT(p, ",\"s\":\"t\",");
    p = drop_name(p, count, " from here (buffer memory limit)");
    trace_out_commit(w, p);
}

static void json_file_end(trace_writer *w, uint64_t ns, uint64_t dropped, int clean)
{
    char *p = trace_out_reserve(w, 320);
    if (dropped) {
        /* The array form has no metadata object: the run's total goes on a
         * process-scoped instant, visible in the UI and queryable. */
        p = LIT(p, ",\n{\"ph\":\"i\",\"s\":\"p\",\"pid\":");
        p = trace_fmt_u64(p, w->pid);
        p = LIT(p, ",\"tid\":");
        p = trace_fmt_u64(p, w->pid);
        p = LIT(p, ",\"ts\":");
        p = fmt_ts(p, ns);
        *p++ = ',';
        p = drop_name(p, dropped, " in this run");
    }
    if (clean)
        p = LIT(p, "\n]\n");
    trace_out_commit(w, p);
}

const trace_format trace_json_format = {
    .file_begin = json_file_begin,
    .thread_begin = json_thread_begin,
    .func_begin = json_func_begin,
    .block_begin = json_block_begin,
    .slice_end = json_slice_end,
    .insn = json_insn,
    .thread_name = json_thread_name,
    .drop_instant = json_drop_instant,
    .file_end = json_file_end,
};
