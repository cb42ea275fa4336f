/* Building a finished request's spans (see spans.py): `request_spans` without the interpreter —
 * the instants its spans start and end at and the values of the spans its form leaves open,
 * read from the receipt and its frozen scheduling record where the record's plan says. The
 * same lists as the Python builder, which stays the reference (tests/tracing/test_spans_native.py
 * compares the two over every kind of receipt); the room rule that held the request is still
 * the receipt's own `held_by()`.
 *
 * build(receipt, flat, profiles) -> (instants, values, dispatched, responded)
 *   profiles: per profile of the record's plan (`_ProfilePlan.native`), a tuple
 *     (durations: positions of the profile's and each scorer's and picker's duration,
 *      filters: positions of the filters' durations (their chain is one span),
 *      picks: per picker (names_at, count, picked_start, picked_stop, totals_at))
 * same(flat, positions, expected) -> bool: flat's values at `positions` equal `expected`
 *   (a record of the plan's layout; as tuple equality: identity, then ==)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The receipt's attributes, interned once. */
static PyObject *s_queued_at, *s_finished_at, *s_released_at, *s_dispatched_at, *s_endpoint,
    *s_request_id, *s_model, *s_objective, *s_priority, *s_fairness_id, *s_outcome, *s_held_by,
    *s_ttft_s, *s_fallbacks, *s_prefix_match_tokens, *s_prompt_tokens, *s_completion_tokens,
    *s_comma;

/* A float attribute, or `fallback` when it is None; -1 with an exception set on error. */
static int
time_of(PyObject *receipt, PyObject *name, double fallback, double *out, int *present)
{
    PyObject *v = PyObject_GetAttr(receipt, name);
    if (v == NULL)
        return -1;
    if (v == Py_None) {
        *out = fallback;
        if (present != NULL)
            *present = 0;
    } else {
        *out = PyFloat_AsDouble(v);
        if (present != NULL)
            *present = 1;
    }
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static inline double
later(double a, double b)
{
    return b > a ? b : a; /* Python's max(a, b): the first unless the second is larger */
}

/* A float at flat[i] (a duration or a total). */
static int
flat_float(PyObject *flat, Py_ssize_t i, double *out)
{
    if (i < 0 || i >= PyTuple_GET_SIZE(flat)) {
        PyErr_SetString(PyExc_IndexError, "a plan position past the record's end");
        return -1;
    }
    *out = PyFloat_AsDouble(PyTuple_GET_ITEM(flat, i));
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int
append_float(PyObject *list, double v)
{
    PyObject *f = PyFloat_FromDouble(v);
    if (f == NULL)
        return -1;
    int rc = PyList_Append(list, f);
    Py_DECREF(f);
    return rc;
}

/* One profile's instants (where each child starts, the last one's end, the profile's end) and
 * its picks' values, as `_ProfilePlan.place`; `*at` becomes where the profile ended. */
static int
place(PyObject *flat, PyObject *profile, double *at, PyObject *instants, PyObject *values)
{
    if (!PyTuple_Check(profile) || PyTuple_GET_SIZE(profile) != 3) {
        PyErr_SetString(PyExc_TypeError, "a profile plan is (durations, filters, picks)");
        return -1;
    }
    PyObject *durations = PyTuple_GET_ITEM(profile, 0);
    PyObject *filters = PyTuple_GET_ITEM(profile, 1);
    PyObject *picks = PyTuple_GET_ITEM(profile, 2);
    if (!PyTuple_Check(durations) || PyTuple_GET_SIZE(durations) < 1 || !PyTuple_Check(filters)
        || !PyTuple_Check(picks)) {
        PyErr_SetString(PyExc_TypeError, "a profile plan's parts are tuples");
        return -1;
    }
    double took, t = *at, step;
    if (flat_float(flat, PyLong_AsSsize_t(PyTuple_GET_ITEM(durations, 0)), &took) < 0)
        return -1;
    if (append_float(instants, t) < 0)
        return -1;
    if (PyTuple_GET_SIZE(filters) > 0) {
        double chain = 0.0; /* summed in order, as the chain ran */
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(filters); i++) {
            if (flat_float(flat, PyLong_AsSsize_t(PyTuple_GET_ITEM(filters, i)), &step) < 0)
                return -1;
            chain += step;
        }
        t += chain;
        if (append_float(instants, t) < 0)
            return -1;
    }
    for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(durations); i++) {
        if (flat_float(flat, PyLong_AsSsize_t(PyTuple_GET_ITEM(durations, i)), &step) < 0)
            return -1;
        t += step;
        if (append_float(instants, t) < 0)
            return -1;
    }
    double end = later(*at + took, t);
    if (append_float(instants, end) < 0)
        return -1;
    *at = end;
    for (Py_ssize_t p = 0; p < PyTuple_GET_SIZE(picks); p++) {
        PyObject *pick = PyTuple_GET_ITEM(picks, p);
        if (!PyTuple_Check(pick) || PyTuple_GET_SIZE(pick) != 5) {
            PyErr_SetString(PyExc_TypeError, "a pick's plan is 5 ints");
            return -1;
        }
        Py_ssize_t names_at = PyLong_AsSsize_t(PyTuple_GET_ITEM(pick, 0));
        PyObject *count = PyTuple_GET_ITEM(pick, 1);
        Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(pick, 2));
        Py_ssize_t stop = PyLong_AsSsize_t(PyTuple_GET_ITEM(pick, 3));
        Py_ssize_t totals_at = PyLong_AsSsize_t(PyTuple_GET_ITEM(pick, 4));
        if (PyErr_Occurred())
            return -1;
        Py_ssize_t size = PyTuple_GET_SIZE(flat);
        if (start < 0 || stop > size || stop < start) {
            PyErr_SetString(PyExc_IndexError, "a pick's indices past the record's end");
            return -1;
        }
        PyObject *top = PyTuple_New(stop - start);
        PyObject *scores = PyTuple_New(stop - start);
        if (top == NULL || scores == NULL)
            goto pick_failed;
        for (Py_ssize_t k = start; k < stop; k++) {
            Py_ssize_t chosen = PyLong_AsSsize_t(PyTuple_GET_ITEM(flat, k));
            if (chosen == -1 && PyErr_Occurred())
                goto pick_failed;
            if (names_at + chosen < 0 || names_at + chosen >= size) {
                PyErr_SetString(PyExc_IndexError, "a picked name past the record's end");
                goto pick_failed;
            }
            PyObject *name = PyTuple_GET_ITEM(flat, names_at + chosen);
            Py_INCREF(name);
            PyTuple_SET_ITEM(top, k - start, name);
            double score;
            if (flat_float(flat, totals_at + chosen, &score) < 0)
                goto pick_failed;
            PyObject *f = PyFloat_FromDouble(score);
            if (f == NULL)
                goto pick_failed;
            PyTuple_SET_ITEM(scores, k - start, f);
        }
        PyObject *value = PyTuple_Pack(3, count, top, scores);
        Py_DECREF(top);
        Py_DECREF(scores);
        if (value == NULL)
            return -1;
        int rc = PyList_Append(values, value);
        Py_DECREF(value);
        if (rc < 0)
            return -1;
        continue;
    pick_failed:
        Py_XDECREF(top);
        Py_XDECREF(scores);
        return -1;
    }
    return 0;
}

/* A tuple of the receipt's attributes, in order. */
static PyObject *
attributes(PyObject *receipt, PyObject **names, Py_ssize_t n)
{
    PyObject *out = PyTuple_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyObject_GetAttr(receipt, names[i]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, v);
    }
    return out;
}

static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *
build(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "build(receipt, flat, profiles)");
        return NULL;
    }
    PyObject *receipt = args[0], *flat = args[1], *profiles = args[2];
    if ((flat != Py_None && !PyTuple_Check(flat)) || !PyTuple_Check(profiles)) {
        PyErr_SetString(PyExc_TypeError, "flat is a tuple or None, profiles a tuple");
        return NULL;
    }
    if (flat == Py_None && PyTuple_GET_SIZE(profiles) > 0) {
        PyErr_SetString(PyExc_TypeError, "profiles without a record");
        return NULL;
    }
    double start, end, released, dispatched = 0.0, ttft = 0.0;
    int was_dispatched = 0, responded = 0;
    if (time_of(receipt, s_queued_at, 0.0, &start, NULL) < 0
        || time_of(receipt, s_finished_at, start, &end, NULL) < 0
        || time_of(receipt, s_released_at, end, &released, NULL) < 0
        || time_of(receipt, s_dispatched_at, 0.0, &dispatched, &was_dispatched) < 0)
        return NULL;
    PyObject *instants = PyList_New(0), *values = PyList_New(0);
    PyObject *result = NULL, *root_names[] = {s_request_id, s_model,       s_objective, s_priority,
                                              s_fairness_id, s_outcome, s_endpoint};
    if (instants == NULL || values == NULL)
        goto done;
    /* the root's and the orchestration's ends (1, 2) are placed once their children are */
    if (append_float(instants, start) < 0 || append_float(instants, end) < 0
        || append_float(instants, end) < 0 || append_float(instants, released) < 0)
        goto done;
    if (append_new(values, attributes(receipt, root_names, 7)) < 0)
        goto done;
    PyObject *held = PyObject_CallMethodNoArgs(receipt, s_held_by);
    if (held == NULL)
        goto done;
    if (append_new(values, PyTuple_Pack(1, held)) < 0) {
        Py_DECREF(held);
        goto done;
    }
    Py_DECREF(held);
    double at = released;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(profiles); i++)
        if (place(flat, PyTuple_GET_ITEM(profiles, i), &at, instants, values) < 0)
            goto done;
    /* The director's `now` is the same for the release and the dispatch; the measured plugin
     * durations come on top, so a parent is stretched to cover its children. */
    double orchestration_end = later(was_dispatched ? dispatched : end, at);
    double root_end = later(end, orchestration_end);
    if (was_dispatched) {
        PyObject *ttft_s = PyObject_GetAttr(receipt, s_ttft_s);
        if (ttft_s == NULL)
            goto done;
        responded = ttft_s != Py_None;
        if (responded)
            ttft = PyFloat_AsDouble(ttft_s);
        if (responded && ttft == -1.0 && PyErr_Occurred()) {
            Py_DECREF(ttft_s);
            goto done;
        }
        double dispatch_end = responded ? dispatched + ttft : end;
        PyObject *fallbacks = PyObject_GetAttr(receipt, s_fallbacks);
        PyObject *joined = fallbacks == NULL ? NULL : PyUnicode_Join(s_comma, fallbacks);
        Py_XDECREF(fallbacks);
        PyObject *endpoint = PyObject_GetAttr(receipt, s_endpoint);
        PyObject *prefix = PyObject_GetAttr(receipt, s_prefix_match_tokens);
        PyObject *dispatch = NULL;
        if (joined != NULL && endpoint != NULL && prefix != NULL)
            dispatch = PyTuple_Pack(3, endpoint, PyUnicode_GET_LENGTH(joined) ? joined : Py_None,
                                    prefix);
        Py_XDECREF(joined);
        Py_XDECREF(endpoint);
        Py_XDECREF(prefix);
        if (append_new(values, dispatch) < 0 || append_float(instants, dispatched) < 0
            || append_float(instants, dispatch_end) < 0) {
            Py_DECREF(ttft_s);
            goto done;
        }
        root_end = later(root_end, dispatch_end);
        if (responded) {
            PyObject *prompt = PyObject_GetAttr(receipt, s_prompt_tokens);
            PyObject *completion = PyObject_GetAttr(receipt, s_completion_tokens);
            PyObject *response = NULL;
            if (prompt != NULL && completion != NULL)
                response = PyTuple_Pack(3, prompt, completion, ttft_s);
            Py_XDECREF(prompt);
            Py_XDECREF(completion);
            if (append_new(values, response) < 0 || append_float(instants, end) < 0) {
                Py_DECREF(ttft_s);
                goto done;
            }
        }
        Py_DECREF(ttft_s);
    }
    PyObject *root_end_f = PyFloat_FromDouble(root_end);
    PyObject *orchestration_end_f = PyFloat_FromDouble(orchestration_end);
    if (root_end_f == NULL || orchestration_end_f == NULL) {
        Py_XDECREF(root_end_f);
        Py_XDECREF(orchestration_end_f);
        goto done;
    }
    PyList_SetItem(instants, 1, root_end_f); /* steals the references */
    PyList_SetItem(instants, 2, orchestration_end_f);
    result = Py_BuildValue("(OOOO)", instants, values, was_dispatched ? Py_True : Py_False,
                           responded ? Py_True : Py_False);
done:
    Py_XDECREF(instants);
    Py_XDECREF(values);
    return result;
}

static PyObject *
same(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1])
        || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[1]) != PyTuple_GET_SIZE(args[2])) {
        PyErr_SetString(PyExc_TypeError, "same(flat, positions, expected): three tuples, the "
                                         "last two of one length");
        return NULL;
    }
    PyObject *flat = args[0], *positions = args[1], *expected = args[2];
    Py_ssize_t size = PyTuple_GET_SIZE(flat);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(positions); i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(positions, i));
        if (at == -1 && PyErr_Occurred())
            return NULL;
        if (at < 0 || at >= size)
            Py_RETURN_FALSE;
        PyObject *a = PyTuple_GET_ITEM(flat, at), *b = PyTuple_GET_ITEM(expected, i);
        if (a == b)
            continue;
        int eq = PyObject_RichCompareBool(a, b, Py_EQ);
        if (eq < 0)
            return NULL;
        if (!eq)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL,
     "build(receipt, flat, profiles) -> (instants, values, dispatched, responded)"},
    {"same", (PyCFunction)(void (*)(void))same, METH_FASTCALL,
     "same(flat, positions, expected) -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sluice.tracing._spans",
    .m_doc = "The span builder's native part",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__spans(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_queued_at, "queued_at"},
        {&s_finished_at, "finished_at"},
        {&s_released_at, "released_at"},
        {&s_dispatched_at, "dispatched_at"},
        {&s_endpoint, "endpoint"},
        {&s_request_id, "request_id"},
        {&s_model, "model"},
        {&s_objective, "objective"},
        {&s_priority, "priority"},
        {&s_fairness_id, "fairness_id"},
        {&s_outcome, "outcome"},
        {&s_held_by, "held_by"},
        {&s_ttft_s, "ttft_s"},
        {&s_fallbacks, "fallbacks"},
        {&s_prefix_match_tokens, "prefix_match_tokens"},
        {&s_prompt_tokens, "prompt_tokens"},
        {&s_completion_tokens, "completion_tokens"},
        {&s_comma, ","},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
