/* The OTLP encoder's native part (see otlp.py): what the batch thread does for every traced
 * request, in one C call (`Tree.append`) — its spans' ids, times, attributes, status and flags
 * beside what its span form fixes. Byte for byte what the Python encoder makes of the same
 * request (tests/tracing/test_otlp_native.py compares the two); a request with a value this
 * part does not encode (not a str, bool, int, float, tuple or list; values that are not a
 * tuple) is left to it.
 *
 * Protobuf wire format (opentelemetry-proto's trace.proto): a span is ScopeSpans.spans = 2, a
 * length-delimited field; inside it trace_id = 1, span_id = 2, parent_span_id = 4 (bytes),
 * start_time_unix_nano = 7, end_time_unix_nano = 8 (fixed64), then what otlp.py gives as the
 * span's tail (name, kind, attributes, status, flags).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* ---- a growing byte buffer ------------------------------------------------------------------- */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int
reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline Py_ssize_t
varint_size(uint64_t n)
{
    Py_ssize_t size = 1;
    while (n > 0x7F) {
        n >>= 7;
        size++;
    }
    return size;
}

/* Callers reserve first: these never grow the buffer. */
static inline void
put_varint(Buf *b, uint64_t n)
{
    while (n > 0x7F) {
        b->p[b->len++] = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    b->p[b->len++] = (char)n;
}

static inline void
put(Buf *b, const void *data, Py_ssize_t n)
{
    memcpy(b->p + b->len, data, (size_t)n);
    b->len += n;
}

static inline void
put_byte(Buf *b, uint8_t byte)
{
    b->p[b->len++] = (char)byte;
}

static inline void
put_fixed64(Buf *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b->p[b->len++] = (char)(v >> (8 * i));
}

/* ---- attributes ------------------------------------------------------------------------------ */

/* A string as OTLP carries it: UTF-8, a lone surrogate as `?` (spans.utf8). A new reference
 * to a bytes object or NULL with an exception set; `*data`, `*n` point into it, or into the
 * string's own UTF-8 (then the reference is to the string). */
static PyObject *
utf8_of(PyObject *text, const char **data, Py_ssize_t *n)
{
    const char *own = PyUnicode_AsUTF8AndSize(text, n);
    if (own != NULL) {
        *data = own;
        Py_INCREF(text);
        return text;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return NULL;
    PyErr_Clear();
    PyObject *bytes = PyUnicode_AsEncodedString(text, "utf-8", "replace");
    if (bytes == NULL)
        return NULL;
    *data = PyBytes_AS_STRING(bytes);
    *n = PyBytes_GET_SIZE(bytes);
    return bytes;
}

enum { DONE = 0, FAILED = -1, NOT_MINE = -2 };

/* A length-delimited field whose length is not known yet: its tag, then room for the largest
 * length prefix (payloads stay under 2^35 bytes); `close_field` moves the payload back to its
 * real prefix's length. Returns where the payload starts, or -1 (no memory). */
static Py_ssize_t
open_field(Buf *b, uint8_t tag)
{
    if (reserve(b, 6) < 0)
        return -1;
    put_byte(b, tag);
    b->len += 5;
    return b->len;
}

static void
close_field(Buf *b, Py_ssize_t at)
{
    Py_ssize_t size = b->len - at, prefix = varint_size((uint64_t)size);
    memmove(b->p + at - 5 + prefix, b->p + at, (size_t)size);
    b->len = at - 5;
    put_varint(b, (uint64_t)size);
    b->len += size;
}

static int any_value(Buf *b, PyObject *value);

/* An AnyValue's fields, as otlp._value encodes them. */
static int
any_value(Buf *b, PyObject *value)
{
    if (PyUnicode_Check(value)) { /* string_value = 1 */
        const char *data;
        Py_ssize_t n;
        PyObject *held = utf8_of(value, &data, &n);
        if (held == NULL)
            return FAILED;
        int rc = reserve(b, 11 + n);
        if (rc == 0) {
            put_byte(b, 0x0A);
            put_varint(b, (uint64_t)n);
            put(b, data, n);
        }
        Py_DECREF(held);
        return rc < 0 ? FAILED : DONE;
    }
    if (PyBool_Check(value)) { /* bool_value = 2 */
        if (reserve(b, 2) < 0)
            return FAILED;
        put_byte(b, 0x10);
        put_byte(b, value == Py_True);
        return DONE;
    }
    if (PyLong_Check(value)) { /* int_value = 3: an int64, two's complement */
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) { /* beyond int64: its digits, as a string_value */
            PyObject *digits = PyObject_Str(value);
            if (digits == NULL)
                return FAILED;
            int rc = any_value(b, digits);
            Py_DECREF(digits);
            return rc;
        }
        if (v == -1 && PyErr_Occurred())
            return FAILED;
        if (reserve(b, 11) < 0)
            return FAILED;
        put_byte(b, 0x18);
        put_varint(b, (uint64_t)v);
        return DONE;
    }
    if (PyFloat_Check(value)) { /* double_value = 4 */
        double d = PyFloat_AS_DOUBLE(value);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        if (reserve(b, 9) < 0)
            return FAILED;
        put_byte(b, 0x21);
        put_fixed64(b, bits);
        return DONE;
    }
    if (PyTuple_Check(value) || PyList_Check(value)) { /* array_value = 5 */
        Py_ssize_t array = open_field(b, 0x2A);
        if (array < 0)
            return FAILED;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
        PyObject **items = PySequence_Fast_ITEMS(value);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t item = open_field(b, 0x0A); /* ArrayValue.values = 1 */
            if (item < 0)
                return FAILED;
            int rc = any_value(b, items[i]);
            if (rc != DONE)
                return rc;
            close_field(b, item);
        }
        close_field(b, array);
        return DONE;
    }
    return NOT_MINE;
}

/* Span.attributes = 9, one KeyValue (key = 1, value = 2) for each of `values` from `from` on
 * that is not None, beside its key in `keys` (the keys' encoded fields, b"\x0a" + length +
 * key; as zip, the shorter decides). */
static int
put_attributes(Buf *b, PyObject *keys, PyObject *values, Py_ssize_t from)
{
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    if (PyTuple_GET_SIZE(values) - from < n)
        n = PyTuple_GET_SIZE(values) - from;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyTuple_GET_ITEM(keys, i), *value = PyTuple_GET_ITEM(values, from + i);
        if (value == Py_None) /* keys were checked to be bytes when the Tree was made */
            continue;
        Py_ssize_t key_len = PyBytes_GET_SIZE(key), pair = open_field(b, 0x4A);
        if (pair < 0 || reserve(b, key_len) < 0)
            return FAILED;
        put(b, PyBytes_AS_STRING(key), key_len);
        Py_ssize_t any = open_field(b, 0x12);
        if (any < 0)
            return FAILED;
        int rc = any_value(b, value);
        if (rc != DONE)
            return rc;
        close_field(b, any);
        close_field(b, pair);
    }
    return DONE;
}

/* ---- a span tree ----------------------------------------------------------------------------- */

/* What one span form fixes, as otlp._FormCode keeps it (spans.Form): for each span its
 * parent's index, the indices of its start and end in the request's instants, whether the
 * request's common attributes come first; for a span the form fixes, its tail (name, kind,
 * attributes, flags: all but ids, times and common attributes); for one it leaves open (the
 * root among them), its head (name and kind) and its attributes' keys. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t spans, open; /* all of them; those the form leaves open (the root among them) */
    Py_ssize_t *parents; /* per span; the root's unused */
    Py_ssize_t *bounds;  /* start, end per span */
    Py_ssize_t last;     /* the largest bound */
    char *shared;        /* per span */
    PyObject **tails;    /* per span: bytes, or NULL (an open span) */
    PyObject **heads;    /* per open span: bytes */
    PyObject **keys;     /* per open span: a tuple of bytes */
    PyObject *common;    /* the common attributes' keys: a tuple of bytes */
    /* scratch, kept from call to call (the batch thread's alone: it holds the GIL
     * throughout): a request's start and end per span in Unix ns, its spans, its common
     * attributes, a span's tail */
    uint64_t *ns;
    Buf spans_buf, common_buf, tail_buf;
} Tree;

static void
tree_dealloc(Tree *t)
{
    for (Py_ssize_t i = 0; i < t->spans; i++) {
        if (t->tails)
            Py_XDECREF(t->tails[i]);
        if (t->heads)
            Py_XDECREF(t->heads[i]);
        if (t->keys)
            Py_XDECREF(t->keys[i]);
    }
    Py_XDECREF(t->common);
    PyMem_Free(t->parents);
    PyMem_Free(t->bounds);
    PyMem_Free(t->shared);
    PyMem_Free(t->tails);
    PyMem_Free(t->heads);
    PyMem_Free(t->keys);
    PyMem_Free(t->ns);
    PyMem_Free(t->spans_buf.p);
    PyMem_Free(t->common_buf.p);
    PyMem_Free(t->tail_buf.p);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static Py_ssize_t
index_at(PyObject *seq, Py_ssize_t i, Py_ssize_t below)
{
    Py_ssize_t v = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v >= below) {
        PyErr_Format(PyExc_ValueError, "Tree: index %zd is outside 0..%zd", v, below - 1);
        return -1;
    }
    return v;
}

static int
all_bytes(PyObject *tuple)
{
    if (!PyTuple_Check(tuple))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(tuple, i)))
            return 0;
    return 1;
}

/* Tree(parents, bounds, shared, tails, heads, keys, common): per span, as spans.Form has them
 * (the root's parent and shared flag are not read); `tails[i]` None for an open span, whose
 * `heads[i]` and `keys[i]` are its own (else unread); `common`: the common attributes' keys. */
static PyObject *
tree_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"parents", "bounds", "shared", "tails", "heads", "keys", "common",
                            NULL};
    PyObject *in[6], *seq[6] = {NULL, NULL, NULL, NULL, NULL, NULL}, *common;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO!:Tree", names, &in[0], &in[1],
                                     &in[2], &in[3], &in[4], &in[5], &PyTuple_Type, &common))
        return NULL;
    Tree *t = NULL;
    for (int i = 0; i < 6; i++)
        if ((seq[i] = PySequence_Fast(in[i], "Tree: its arguments are sequences")) == NULL)
            goto done;
    PyObject *parents = seq[0], *bounds = seq[1], *shared = seq[2], *tails = seq[3];
    PyObject *heads = seq[4], *keys = seq[5];
    Py_ssize_t n = PySequence_Fast_GET_SIZE(parents);
    if (n < 1 || PySequence_Fast_GET_SIZE(bounds) != 2 * n ||
        PySequence_Fast_GET_SIZE(shared) != n || PySequence_Fast_GET_SIZE(tails) != n ||
        PySequence_Fast_GET_SIZE(heads) != n || PySequence_Fast_GET_SIZE(keys) != n) {
        PyErr_SetString(PyExc_ValueError, "Tree: one parent, two bounds, a shared flag, a tail, "
                                          "a head and keys per span");
        goto done;
    }
    if (!all_bytes(common)) {
        PyErr_SetString(PyExc_TypeError, "Tree: common is a tuple of bytes");
        goto done;
    }
    t = (Tree *)type->tp_alloc(type, 0);
    if (t == NULL)
        goto done;
    t->spans = n;
    Py_INCREF(common);
    t->common = common;
    t->parents = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    t->bounds = PyMem_Calloc((size_t)(2 * n), sizeof(Py_ssize_t));
    t->shared = PyMem_Calloc((size_t)n, 1);
    t->tails = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    t->heads = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    t->keys = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    t->ns = PyMem_Calloc((size_t)(2 * n), sizeof(uint64_t));
    if (!t->parents || !t->bounds || !t->shared || !t->tails || !t->heads || !t->keys ||
        !t->ns) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < 2 * n; i++) {
        if ((t->bounds[i] = index_at(bounds, i, PY_SSIZE_T_MAX)) < 0)
            goto fail;
        if (t->bounds[i] > t->last)
            t->last = t->bounds[i];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i > 0) {
            if ((t->parents[i] = index_at(parents, i, i)) < 0) /* parents come first */
                goto fail;
            int flag = PyObject_IsTrue(PySequence_Fast_GET_ITEM(shared, i));
            if (flag < 0)
                goto fail;
            t->shared[i] = (char)flag;
        }
        PyObject *tail = PySequence_Fast_GET_ITEM(tails, i);
        if (tail != Py_None) {
            if (!PyBytes_Check(tail) || i == 0) {
                PyErr_SetString(PyExc_TypeError,
                                "Tree: a tail is bytes, or None (an open span; the root is)");
                goto fail;
            }
            Py_INCREF(tail);
            t->tails[i] = tail;
            continue;
        }
        t->open++;
        PyObject *head = PySequence_Fast_GET_ITEM(heads, i), *own = PySequence_Fast_GET_ITEM(keys, i);
        if (!PyBytes_Check(head) || !all_bytes(own)) {
            PyErr_SetString(PyExc_TypeError,
                            "Tree: an open span's head is bytes, its keys a tuple of bytes");
            goto fail;
        }
        Py_INCREF(head);
        Py_INCREF(own);
        t->heads[i] = head;
        t->keys[i] = own;
    }
    goto done;
fail:
    Py_CLEAR(t);
done:
    for (int i = 0; i < 6; i++)
        Py_XDECREF(seq[i]);
    return (PyObject *)t;
}

static int
bytes_arg(PyObject *o, const char *what, Py_ssize_t size)
{
    if (!PyBytes_Check(o) || (size >= 0 && PyBytes_GET_SIZE(o) != size)) {
        if (size >= 0)
            PyErr_Format(PyExc_ValueError, "Tree.append: %s is %zd bytes", what, size);
        else
            PyErr_Format(PyExc_TypeError, "Tree.append: %s is bytes", what);
        return -1;
    }
    return 0;
}

/* flags = 16 (fixed32; its tag takes two bytes): the parent's is-remote bit is known
 * (SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, 0x100), and set for a remote one (0x200) */
static void
put_flags(Buf *b, int remote)
{
    const char *flags = remote ? "\x85\x01\x00\x03\x00\x00" : "\x85\x01\x00\x01\x00\x00";
    put(b, flags, 6);
}

/* A span's field, whose `rest` (after the ids and times) is already in `tail`, into `b`:
 * trace_id = 1, span_id = 2, parent_span_id = 4 (if any), start = 7, end = 8 (fixed64), then
 * `common` (if given) and `tail`. */
static int
put_span(Buf *b, const char *trace, const char *id, const char *up, int has_up, uint64_t start,
         uint64_t end, const Buf *common, const char *tail, Py_ssize_t tail_len)
{
    Py_ssize_t common_len = common ? common->len : 0;
    Py_ssize_t size = 2 + 16 + 2 + 8 + (has_up ? 10 : 0) + 18 + common_len + tail_len;
    if (reserve(b, 11 + size) < 0)
        return FAILED;
    put_byte(b, 0x12);
    put_varint(b, (uint64_t)size);
    put(b, "\x0a\x10", 2);
    put(b, trace, 16);
    put(b, "\x12\x08", 2);
    put(b, id, 8);
    if (has_up) {
        put(b, "\x22\x08", 2);
        put(b, up, 8);
    }
    put_byte(b, 0x39);
    put_fixed64(b, start);
    put_byte(b, 0x41);
    put_fixed64(b, end);
    if (common_len)
        put(b, common->p, common_len);
    put(b, tail, tail_len);
    return DONE;
}

/* Tree.append(out, ids, instants, offset_ns, trace_id, values, error, parent_id, remote) ->
 * bool: the request's spans onto the bytearray `out`, as otlp.Encoder encodes them. `ids`:
 * eight bytes a span; `instants`: the director's monotonic seconds (-> Unix ns with
 * `offset_ns`); `trace_id`: 16 bytes; `values`: the open spans' values, in span order (the
 * root's first: the common ones, then its own); `error`: the root's status message, or None;
 * `parent_id`: the incoming parent's span id (8 bytes, `remote` if it came from the client),
 * or b"". False, and nothing appended: a value this part does not encode. */
static PyObject *
tree_append(Tree *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "Tree.append takes 9 arguments");
        return NULL;
    }
    PyObject *out = args[0], *ids = args[1], *instants = args[2], *trace = args[4];
    PyObject *values = args[5], *error = args[6], *up = args[7];
    long long offset = PyLong_AsLongLong(args[3]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    int remote = PyObject_IsTrue(args[8]);
    if (remote < 0)
        return NULL;
    if (!PyByteArray_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "Tree.append: out is a bytearray");
        return NULL;
    }
    if (bytes_arg(ids, "ids", 8 * t->spans) < 0 || bytes_arg(trace, "trace_id", 16) < 0 ||
        bytes_arg(up, "parent_id", -1) < 0)
        return NULL;
    Py_ssize_t up_len = PyBytes_GET_SIZE(up);
    if (up_len != 0 && up_len != 8) {
        PyErr_SetString(PyExc_ValueError, "Tree.append: parent_id is 8 bytes, or none");
        return NULL;
    }
    if (error != Py_None && !PyUnicode_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "Tree.append: error is a str, or None");
        return NULL;
    }
    if (!PyList_Check(instants) || PyList_GET_SIZE(instants) <= t->last) {
        PyErr_SetString(PyExc_ValueError,
                        "Tree.append: instants is a list, with as many as the form has");
        return NULL;
    }
    Py_ssize_t open = t->open;
    if (!PyList_Check(values) || PyList_GET_SIZE(values) != open) {
        PyErr_Format(PyExc_ValueError, "Tree.append: values is a list of the %zd open spans'",
                     open);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < open; i++)
        if (!PyTuple_Check(PyList_GET_ITEM(values, i)))
            Py_RETURN_FALSE; /* the Python encoder takes any sequence */
    PyObject *root_values = PyList_GET_ITEM(values, 0);
    if (PyTuple_GET_SIZE(root_values) < 2)
        Py_RETURN_FALSE;

    uint64_t *ns = t->ns;
    for (Py_ssize_t i = 0; i < 2 * t->spans; i++) {
        double s = PyFloat_AsDouble(PyList_GET_ITEM(instants, t->bounds[i]));
        if (s == -1.0 && PyErr_Occurred())
            return NULL;
        ns[i] = (uint64_t)((long long)(s * 1e9) + offset); /* as int(t * 1e9) + offset */
    }

    const char *id = PyBytes_AS_STRING(ids), *trace_at = PyBytes_AS_STRING(trace);
    const char *up_at = PyBytes_AS_STRING(up);
    Buf b = t->spans_buf, common = t->common_buf, tail = t->tail_buf;
    b.len = common.len = tail.len = 0;
    PyObject *result = NULL;
    int rc = put_attributes(&common, t->common, root_values, 0);
    /* the root: name, kind, the common attributes and its own, status, flags */
    PyObject *head = t->heads[0];
    if (rc == DONE && reserve(&tail, PyBytes_GET_SIZE(head) + common.len) < 0)
        rc = FAILED;
    if (rc == DONE) {
        put(&tail, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
        put(&tail, common.p, common.len);
        rc = put_attributes(&tail, t->keys[0], root_values, 2);
    }
    if (rc == DONE && error != Py_None) { /* status = 15: message = 2, code = 3 (ERROR) */
        const char *text;
        Py_ssize_t text_len;
        PyObject *held = utf8_of(error, &text, &text_len);
        Py_ssize_t status = held ? open_field(&tail, 0x7A) : -1;
        Py_ssize_t message = status >= 0 ? open_field(&tail, 0x12) : -1;
        if (message < 0 || reserve(&tail, text_len + 2) < 0) {
            rc = FAILED;
        } else {
            put(&tail, text, text_len);
            close_field(&tail, message);
            put(&tail, "\x18\x02", 2);
            close_field(&tail, status);
        }
        Py_XDECREF(held);
    }
    if (rc == DONE && reserve(&tail, 6) < 0)
        rc = FAILED;
    if (rc == DONE) {
        put_flags(&tail, up_len && remote);
        rc = put_span(&b, trace_at, id, up_at, up_len != 0, ns[0], ns[1], NULL, tail.p, tail.len);
    }
    Py_ssize_t next = 1;
    for (Py_ssize_t i = 1; i < t->spans && rc == DONE; i++) {
        const char *own;
        Py_ssize_t own_len;
        if (t->tails[i] != NULL) {
            own = PyBytes_AS_STRING(t->tails[i]);
            own_len = PyBytes_GET_SIZE(t->tails[i]);
        } else { /* name, kind, its attributes, flags (a local parent) */
            head = t->heads[i];
            tail.len = 0;
            if (reserve(&tail, PyBytes_GET_SIZE(head)) < 0) {
                rc = FAILED;
                break;
            }
            put(&tail, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
            rc = put_attributes(&tail, t->keys[i], PyList_GET_ITEM(values, next++), 0);
            if (rc == DONE && reserve(&tail, 6) < 0)
                rc = FAILED;
            if (rc != DONE)
                break;
            put_flags(&tail, 0);
            own = tail.p;
            own_len = tail.len;
        }
        rc = put_span(&b, trace_at, id + 8 * i, id + 8 * t->parents[i], 1, ns[2 * i],
                      ns[2 * i + 1], t->shared[i] ? &common : NULL, own, own_len);
    }
    if (rc == DONE) {
        Py_ssize_t before = PyByteArray_GET_SIZE(out);
        if (PyByteArray_Resize(out, before + b.len) == 0) {
            memcpy(PyByteArray_AS_STRING(out) + before, b.p, (size_t)b.len);
            result = Py_True;
            Py_INCREF(result);
        }
    } else if (rc == NOT_MINE) {
        result = Py_False;
        Py_INCREF(result);
    }
    t->spans_buf = b; /* what they grew to, for the next request */
    t->common_buf = common;
    t->tail_buf = tail;
    return result;
}

static PyMethodDef tree_methods[] = {
    {"append", (PyCFunction)(void (*)(void))tree_append, METH_FASTCALL,
     "append(out, ids, instants, offset_ns, trace_id, values, error, parent_id, remote) -> "
     "bool: the request's spans onto `out` (False: a value left to the Python encoder)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TreeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sluice.tracing._otlp.Tree",
    .tp_basicsize = sizeof(Tree),
    .tp_dealloc = (destructor)tree_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What one span form fixes, to encode a request's spans in one call",
    .tp_methods = tree_methods,
    .tp_new = tree_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sluice.tracing._otlp",
    .m_doc = "The OTLP encoder's native part",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__otlp(void)
{
    if (PyType_Ready(&TreeType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TreeType);
    if (PyModule_AddObject(m, "Tree", (PyObject *)&TreeType) < 0) {
        Py_DECREF(&TreeType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
