/*
 * Native functions: C functions of shared libraries, called through libffi
 * with the signatures that pyproc.h documents beside pyproc_add_native().
 *
 * load_native() dlopen()s a library, resolves each declared function and
 * prepares its libffi call once; hub.add_native() mounts the functions it
 * returns on the hub, so the host's "m.cos" and Python's hub.m.cos reach
 * them through the ordinary resolution and the hot path has nothing to do
 * with them.  A call checks every argument before any native code runs.
 *
 * A library is never closed once a function of it exists, as with ctypes:
 * a NativeFunction may outlive the sub that mounted it (a cached reference,
 * a Python global), and code that may still be called must stay mapped.
 */
#include "native.h"

#include <dlfcn.h>
#include <ffi.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <structmember.h>

#include "../shm/native_sig.h"
#include "pyproc.h"

/* Entries read from a library's own table at most: a table that lacks its
 * {NULL, NULL} end stops here instead of running through memory. */
#define MAX_EXPORTS 4096

#define FFI_TYPE_SIZE_T (sizeof(size_t) == 8 ? &ffi_type_uint64 : &ffi_type_uint32)

typedef struct {
    PyObject_HEAD
    void (*fn)(void);
    PyObject *name;      /* str: the symbol */
    PyObject *signature; /* str */
    PyObject *library;   /* str: as load_native() got it */
    struct shm_native_sig sig;
    ffi_cif cif;
    ffi_type *atypes[SHM_NATIVE_SIG_MAX_CARGS]; /* the cif points here */
} NativeFunction;

/* One C argument during a call; libffi reads it from offset 0. */
union cval {
    int8_t b;
    uint8_t B;
    int16_t h;
    uint16_t H;
    int32_t i;
    uint32_t I;
    int64_t q;
    uint64_t Q;
    float f;
    double d;
    const void *p;
    size_t z;
};

/* A return value.  libffi widens integers narrower than ffi_arg to a whole
 * ffi_arg, so those are read through a and sa. */
union rval {
    ffi_arg a;
    ffi_sarg sa;
    int64_t q;
    uint64_t Q;
    float f;
    double d;
    const char *s;
};

/* What a call holds until the function has returned. */
struct call {
    union cval vals[SHM_NATIVE_SIG_MAX_CARGS];
    void *ptrs[SHM_NATIVE_SIG_MAX_CARGS];
    Py_buffer views[SHM_NATIVE_SIG_MAX_PARAMS]; /* y arguments, until released */
    unsigned nviews;
    PyObject *outs[SHM_NATIVE_SIG_MAX_PARAMS]; /* w: new refs to the bytes being filled */
    size_t caps[SHM_NATIVE_SIG_MAX_PARAMS];
    size_t lens[SHM_NATIVE_SIG_MAX_PARAMS]; /* w: what the function says it wrote */
    unsigned nouts;
};

static const struct int_type {
    char code;
    const char *cname;
    int64_t min;
    uint64_t max;
} int_types[] = {
    {'b', "int8_t", INT8_MIN, INT8_MAX},    {'B', "uint8_t", 0, UINT8_MAX},
    {'h', "int16_t", INT16_MIN, INT16_MAX}, {'H', "uint16_t", 0, UINT16_MAX},
    {'i', "int32_t", INT32_MIN, INT32_MAX}, {'I', "uint32_t", 0, UINT32_MAX},
    {'q', "int64_t", INT64_MIN, INT64_MAX}, {'Q', "uint64_t", 0, UINT64_MAX},
};

static const struct int_type *int_type_of(char code)
{
    for (size_t i = 0; i < sizeof int_types / sizeof int_types[0]; i++)
        if (int_types[i].code == code)
            return &int_types[i];
    return NULL;
}

static ffi_type *ffi_type_of(char code)
{
    switch (code) {
    case 'v':
        return &ffi_type_void;
    case 'b':
        return &ffi_type_sint8;
    case 'B':
        return &ffi_type_uint8;
    case 'h':
        return &ffi_type_sint16;
    case 'H':
        return &ffi_type_uint16;
    case 'i':
        return &ffi_type_sint32;
    case 'I':
        return &ffi_type_uint32;
    case 'q':
        return &ffi_type_sint64;
    case 'Q':
        return &ffi_type_uint64;
    case 'f':
        return &ffi_type_float;
    case 'd':
        return &ffi_type_double;
    default:
        return &ffi_type_pointer; /* s */
    }
}

/* ---- arguments ---- */

static int wrong_type(NativeFunction *f, unsigned pos, const char *want, PyObject *o)
{
    PyErr_Format(PyExc_TypeError, "%U() argument %u must be %s, not %.100s", f->name, pos, want,
                 Py_TYPE(o)->tp_name);
    return -1;
}

/* Any int (or __index__) that fits the C type; nothing is truncated. */
static int arg_int(NativeFunction *f, unsigned pos, PyObject *o, char code, union cval *v)
{
    const struct int_type *t = int_type_of(code);
    unsigned long long u = 0;
    long long s;
    int over = 0;
    bool fits;

    if (!PyIndex_Check(o))
        return wrong_type(f, pos, "int", o);
    PyObject *n = PyNumber_Index(o); /* new ref */
    if (!n)
        return -1;
    s = PyLong_AsLongLongAndOverflow(n, &over);
    if (s == -1 && PyErr_Occurred()) {
        Py_DECREF(n);
        return -1;
    }
    if (over > 0) {
        u = PyLong_AsUnsignedLongLong(n);
        fits = !PyErr_Occurred() && u <= t->max;
        PyErr_Clear();
    } else {
        fits = over == 0 && s >= t->min && (s < 0 || (uint64_t)s <= t->max);
        u = (unsigned long long)s;
    }
    Py_DECREF(n);
    if (!fits) {
        PyErr_Format(PyExc_OverflowError, "%U() argument %u: %R does not fit in %s", f->name, pos,
                     o, t->cname);
        return -1;
    }
    switch (code) {
    case 'b':
        v->b = (int8_t)s;
        break;
    case 'B':
        v->B = (uint8_t)u;
        break;
    case 'h':
        v->h = (int16_t)s;
        break;
    case 'H':
        v->H = (uint16_t)u;
        break;
    case 'i':
        v->i = (int32_t)s;
        break;
    case 'I':
        v->I = (uint32_t)u;
        break;
    case 'q':
        v->q = s;
        break;
    default:
        v->Q = u;
        break;
    }
    return 0;
}

/* A float or an int; for f, nothing beyond float's range. */
static int arg_float(NativeFunction *f, unsigned pos, PyObject *o, char code, union cval *v)
{
    double d;

    if (!PyFloat_Check(o) && !PyIndex_Check(o))
        return wrong_type(f, pos, "float", o);
    d = PyFloat_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    if (code == 'd') {
        v->d = d;
        return 0;
    }
    if (isfinite(d) && fabs(d) > FLT_MAX) {
        PyErr_Format(PyExc_OverflowError, "%U() argument %u: %R is too large for float", f->name,
                     pos, o);
        return -1;
    }
    v->f = (float)d;
    return 0;
}

/* str as UTF-8, bytes as they are, None as NULL.  The pointer lives in the
 * argument, which the argument tuple keeps alive for the whole call. */
static int arg_str(NativeFunction *f, unsigned pos, PyObject *o, union cval *v)
{
    const char *s;
    Py_ssize_t n;

    if (o == Py_None) {
        v->p = NULL;
        return 0;
    }
    if (PyUnicode_Check(o)) {
        s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s)
            return -1;
    } else if (PyBytes_Check(o)) {
        s = PyBytes_AS_STRING(o);
        n = PyBytes_GET_SIZE(o);
    } else {
        return wrong_type(f, pos, "str", o);
    }
    if (strlen(s) != (size_t)n) {
        PyErr_Format(PyExc_ValueError, "%U() argument %u: embedded null character", f->name, pos);
        return -1;
    }
    v->p = s;
    return 0;
}

/* Any contiguous buffer but str, as a pointer and a length. */
static int arg_bytes(NativeFunction *f, unsigned pos, PyObject *o, struct call *c, union cval *v)
{
    Py_buffer *view = &c->views[c->nviews];

    if (PyUnicode_Check(o) || !PyObject_CheckBuffer(o))
        return wrong_type(f, pos, "bytes", o);
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) < 0)
        return -1;
    c->nviews++;
    /* Never NULL, even when empty: the callee may not check. */
    v[0].p = view->buf ? view->buf : "";
    v[1].z = (size_t)view->len;
    return 0;
}

/* A fresh bytes object of cap bytes for the function to fill. */
static int arg_out(uint32_t cap, struct call *c, union cval *v)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, cap); /* new ref */

    if (!out)
        return -1;
    c->outs[c->nouts] = out;
    c->caps[c->nouts] = cap;
    c->lens[c->nouts] = 0;
    v[0].p = PyBytes_AS_STRING(out);
    v[1].z = cap;
    v[2].p = &c->lens[c->nouts];
    c->nouts++;
    return 0;
}

static int convert_args(NativeFunction *f, PyObject *args, struct call *c)
{
    unsigned k = 0, pos = 0;

    for (unsigned i = 0; i < f->sig.nparams; i++) {
        char code = f->sig.params[i].code;
        PyObject *o = code == 'w' ? NULL : PyTuple_GET_ITEM(args, pos++); /* borrowed */
        union cval *v = &c->vals[k];
        int err;

        switch (code) {
        case 'f':
        case 'd':
            err = arg_float(f, pos, o, code, v);
            break;
        case 's':
            err = arg_str(f, pos, o, v);
            break;
        case 'y':
            err = arg_bytes(f, pos, o, c, v);
            break;
        case 'w':
            err = arg_out(f->sig.params[i].cap, c, v);
            break;
        default:
            err = arg_int(f, pos, o, code, v);
            break;
        }
        if (err < 0)
            return -1;
        k += code == 'y' ? 2 : code == 'w' ? 3 : 1;
    }
    for (k = 0; k < f->sig.ncargs; k++)
        c->ptrs[k] = &c->vals[k];
    return 0;
}

static void release(struct call *c)
{
    for (unsigned i = 0; i < c->nviews; i++)
        PyBuffer_Release(&c->views[i]);
    for (unsigned i = 0; i < c->nouts; i++)
        Py_XDECREF(c->outs[i]);
}

/* ---- results ---- */

static PyObject *return_value(char code, const union rval *rv)
{
    switch (code) {
    case 'b':
        return PyLong_FromLong((int8_t)rv->sa);
    case 'B':
        return PyLong_FromLong((uint8_t)rv->a);
    case 'h':
        return PyLong_FromLong((int16_t)rv->sa);
    case 'H':
        return PyLong_FromLong((uint16_t)rv->a);
    case 'i':
        return PyLong_FromLong((int32_t)rv->sa);
    case 'I':
        return PyLong_FromUnsignedLong((uint32_t)rv->a);
    case 'q':
        return PyLong_FromLongLong(rv->q);
    case 'Q':
        return PyLong_FromUnsignedLongLong(rv->Q);
    case 'f':
        return PyFloat_FromDouble(rv->f);
    case 'd':
        return PyFloat_FromDouble(rv->d);
    case 's':
        if (!rv->s)
            Py_RETURN_NONE;
        return PyUnicode_DecodeUTF8(rv->s, (Py_ssize_t)strlen(rv->s), NULL);
    default:
        Py_RETURN_NONE;
    }
}

/* The return value unless void, then each output buffer: none gives None,
 * one gives itself, several a list. */
static PyObject *results(NativeFunction *f, struct call *c, const union rval *rv)
{
    PyObject *ret = NULL, *list;
    Py_ssize_t n = 0;

    for (unsigned i = 0; i < c->nouts; i++) {
        if (c->lens[i] > c->caps[i]) {
            PyErr_Format(PyExc_RuntimeError, "%U() says it wrote %zu bytes into a buffer of %zu",
                         f->name, c->lens[i], c->caps[i]);
            return NULL;
        }
        if (_PyBytes_Resize(&c->outs[i], (Py_ssize_t)c->lens[i]) < 0)
            return NULL;
    }
    if (f->sig.ret != 'v' && !(ret = return_value(f->sig.ret, rv))) /* new ref */
        return NULL;
    if (f->sig.nouts <= 1)
        return ret ? ret : c->nouts ? Py_NewRef(c->outs[0]) : Py_NewRef(Py_None);
    list = PyList_New(f->sig.nouts); /* new ref */
    if (!list) {
        Py_XDECREF(ret);
        return NULL;
    }
    if (ret)
        PyList_SET_ITEM(list, n++, ret); /* steals ret */
    for (unsigned i = 0; i < c->nouts; i++)
        PyList_SET_ITEM(list, n++, Py_NewRef(c->outs[i])); /* steals */
    return list;
}

/* ---- the type ---- */

static PyObject *native_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    NativeFunction *f = (NativeFunction *)self;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    PyObject *res = NULL;
    struct call c;
    union rval rv;

    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_Format(PyExc_TypeError, "%U() takes no keyword arguments", f->name);
        return NULL;
    }
    if (nargs != (Py_ssize_t)f->sig.nargs) {
        PyErr_Format(PyExc_TypeError, "%U() takes %u argument%s (%zd given)", f->name, f->sig.nargs,
                     f->sig.nargs == 1 ? "" : "s", nargs);
        return NULL;
    }
    c.nviews = c.nouts = 0;
    if (convert_args(f, args, &c) == 0) {
        /* As ctypes.CDLL does: a long native call lets other threads run. */
        Py_BEGIN_ALLOW_THREADS ffi_call(&f->cif, f->fn, &rv, c.ptrs);
        Py_END_ALLOW_THREADS res = results(f, &c, &rv);
    }
    release(&c);
    return res;
}

static void native_dealloc(PyObject *self)
{
    NativeFunction *f = (NativeFunction *)self;

    Py_XDECREF(f->name);
    Py_XDECREF(f->signature);
    Py_XDECREF(f->library);
    PyObject_Free(self);
}

static PyObject *native_repr(PyObject *self)
{
    NativeFunction *f = (NativeFunction *)self;
    return PyUnicode_FromFormat("<native function %U %U from %U>", f->name, f->signature,
                                f->library);
}

static PyMemberDef native_members[] = {
    {"__name__", T_OBJECT, offsetof(NativeFunction, name), READONLY, "the symbol"},
    {"signature", T_OBJECT, offsetof(NativeFunction, signature), READONLY, NULL},
    {"library", T_OBJECT, offsetof(NativeFunction, library), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject NativeFunction_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_pyproc.NativeFunction",
    .tp_basicsize = sizeof(NativeFunction),
    .tp_dealloc = native_dealloc,
    .tp_repr = native_repr,
    .tp_call = native_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .tp_doc = "A C function of a shared library, called through libffi.",
    .tp_members = native_members,
};

/* Point the cif at the C arguments the parameters expand to. */
static int prepare(NativeFunction *f)
{
    unsigned n = 0;

    for (unsigned i = 0; i < f->sig.nparams; i++) {
        char code = f->sig.params[i].code;
        if (code == 'y' || code == 'w') {
            f->atypes[n++] = &ffi_type_pointer;
            f->atypes[n++] = FFI_TYPE_SIZE_T;
            if (code == 'w')
                f->atypes[n++] = &ffi_type_pointer;
        } else {
            f->atypes[n++] = ffi_type_of(code);
        }
    }
    if (ffi_prep_cif(&f->cif, FFI_DEFAULT_ABI, n, ffi_type_of(f->sig.ret), f->atypes) != FFI_OK) {
        PyErr_Format(PyExc_ValueError, "libffi cannot prepare a call to %R with signature %R",
                     f->name, f->signature);
        return -1;
    }
    return 0;
}

/* ---- loading ---- */

/* Resolve one declaration and add it to funcs as name -> NativeFunction. */
static int add_function(PyObject *funcs, void *handle, PyObject *library, PyObject *name,
                        PyObject *signature)
{
    struct shm_native_sig sig;
    const char *cname, *csig, *why = "";
    Py_ssize_t nlen, slen;
    size_t at = 0;
    void *sym;

    if (!PyUnicode_Check(name) || !PyUnicode_Check(signature)) {
        PyErr_SetString(PyExc_TypeError, "declarations are [name, signature] pairs of str");
        return -1;
    }
    if (!(cname = PyUnicode_AsUTF8AndSize(name, &nlen)) ||
        !(csig = PyUnicode_AsUTF8AndSize(signature, &slen)))
        return -1;
    if (strlen(cname) != (size_t)nlen || !shm_native_name_ok(cname)) {
        PyErr_Format(PyExc_ValueError, "bad function name %R: expected a C identifier", name);
        return -1;
    }
    if (strlen(csig) != (size_t)slen || shm_native_sig_parse(csig, &sig, &why, &at) < 0) {
        PyErr_Format(PyExc_ValueError, "bad signature %R of function %R: %s (at offset %zu)",
                     signature, name, strlen(csig) != (size_t)slen ? "NUL inside" : why, at);
        return -1;
    }
    int has = PyDict_Contains(funcs, name);
    if (has) {
        if (has > 0)
            PyErr_Format(PyExc_ValueError, "function %R is declared twice", name);
        return -1;
    }
    dlerror();
    sym = dlsym(handle, cname);
    if (!sym) {
        const char *e = dlerror();
        PyErr_Format(PyExc_AttributeError, "native library %R has no function %R: %s", library,
                     name, e ? e : "its address is NULL");
        return -1;
    }
    NativeFunction *f = PyObject_New(NativeFunction, &NativeFunction_Type); /* new ref */
    if (!f)
        return -1;
    f->fn = FFI_FN(sym);
    f->name = Py_NewRef(name);
    f->signature = Py_NewRef(signature);
    f->library = Py_NewRef(library);
    f->sig = sig;
    int err = prepare(f) < 0 ? -1 : PyDict_SetItem(funcs, name, (PyObject *)f);
    Py_DECREF(f);
    return err;
}

/* decls: a list of [name, signature] pairs. */
static PyObject *from_decls(void *handle, PyObject *library, PyObject *decls)
{
    static const char pairs[] = "declarations must be a list of [name, signature] pairs";
    PyObject *seq = PySequence_Fast(decls, pairs); /* new ref */
    PyObject *funcs = seq ? PyDict_New() : NULL;   /* new ref */

    if (!funcs)
        goto fail;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i); /* borrowed */
        PyObject *pair = PySequence_Fast(item, pairs);     /* new ref */
        int err = -1;
        if (pair && PySequence_Fast_GET_SIZE(pair) == 2)
            err = add_function(funcs, handle, library, PySequence_Fast_GET_ITEM(pair, 0),
                               PySequence_Fast_GET_ITEM(pair, 1));
        else if (pair)
            PyErr_SetString(PyExc_TypeError, pairs);
        Py_XDECREF(pair);
        if (err < 0)
            goto fail;
    }
    Py_DECREF(seq);
    return funcs;
fail:
    Py_XDECREF(funcs);
    Py_XDECREF(seq);
    return NULL;
}

/* The library's own pyproc_native_exports table (see pyproc.h). */
static PyObject *from_exports(void *handle, PyObject *library)
{
    const pyproc_native_decl *t;
    PyObject *funcs;

    dlerror();
    t = dlsym(handle, "pyproc_native_exports");
    if (!t) {
        const char *e = dlerror();
        return PyErr_Format(PyExc_AttributeError,
                            "native library %R exports no pyproc_native_exports table, so its "
                            "functions must be declared (%s)",
                            library, e ? e : "its address is NULL");
    }
    if (!(funcs = PyDict_New())) /* new ref */
        return NULL;
    for (size_t i = 0; t[i].name; i++) {
        if (i == MAX_EXPORTS) {
            PyErr_Format(PyExc_ValueError,
                         "the pyproc_native_exports table of %R has more than "
                         "%d entries or lacks its {NULL, NULL} end",
                         library, MAX_EXPORTS);
            goto fail;
        }
        if (!t[i].signature) {
            PyErr_Format(PyExc_ValueError,
                         "function %s of the pyproc_native_exports table "
                         "of %R has no signature",
                         t[i].name, library);
            goto fail;
        }
        PyObject *name = PyUnicode_FromString(t[i].name);     /* new ref */
        PyObject *sig = PyUnicode_FromString(t[i].signature); /* new ref */
        int err = name && sig ? add_function(funcs, handle, library, name, sig) : -1;
        Py_XDECREF(name);
        Py_XDECREF(sig);
        if (err < 0)
            goto fail;
    }
    return funcs;
fail:
    Py_DECREF(funcs);
    return NULL;
}

/* load_native(library, decls) -> {name: NativeFunction}; decls None reads
 * the library's own table. */
static PyObject *py_load_native(PyObject *self, PyObject *args)
{
    PyObject *library, *decls, *funcs;
    const char *path;
    Py_ssize_t len;
    void *handle;

    (void)self;
    if (!PyArg_ParseTuple(args, "UO:load_native", &library, &decls))
        return NULL;
    if (!(path = PyUnicode_AsUTF8AndSize(library, &len)))
        return NULL;
    if (strlen(path) != (size_t)len)
        return PyErr_Format(PyExc_ValueError, "native library %R: NUL inside its name", library);
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle)
        return PyErr_Format(PyExc_OSError, "cannot load native library %R: %s", library, dlerror());
    funcs = decls == Py_None ? from_exports(handle, library)
                             : from_decls(handle, library, decls); /* new ref */
    /* No function of it exists now, so nothing can call into it. */
    if (!funcs)
        dlclose(handle);
    return funcs;
}

static PyMethodDef native_methods[] = {
    {"load_native", py_load_native, METH_VARARGS,
     "load_native(library, decls) -> {name: NativeFunction}"},
    {NULL, NULL, 0, NULL},
};

int native_register(PyObject *module)
{
    if (PyType_Ready(&NativeFunction_Type) < 0 ||
        PyModule_AddObjectRef(module, "NativeFunction", (PyObject *)&NativeFunction_Type) < 0)
        return -1;
    return PyModule_AddFunctions(module, native_methods);
}
