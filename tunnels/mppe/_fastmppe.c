/* MPPE's per-packet work in one call per packet (RFC 3078), over libcrypto's SHA1 and RC4.
 *
 * Why C: stateless MPPE changes key before every packet (§8.1), so a packet costs a SHA-1, two
 * RC4 key schedules and the RC4 of its data; from Python that is five or six calls through
 * ctypes and hashlib plus the bytes glue, more than the cryptography itself. Here it is one
 * call that writes the 2-octet header and the ciphertext straight into the result.
 *
 * What stays in Python (tunnels/mppe/cipher.py): everything but the in-order case. State is a
 * drop-in for the cipher's RC4 stream (rekey/update/crypt) and exposes count, session_key,
 * key_changes and flush_next for reading and writing, so the Python slow path (gaps, the
 * reorder window, stateful resynchronisation, malformed headers) works on the same state.
 * decrypt_next() returns None for anything it does not handle and then has changed nothing.
 *
 * The GIL is held throughout: a call is a few microseconds, less than releasing it costs.
 * Low-level SHA1/RC4 are deprecated in OpenSSL 3.0 but present, and measured faster here than
 * EVP, whose per-key context set-up is the very cost stateless MPPE pays per packet.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/rc4.h>
#include <openssl/sha.h>

#define PAD 40
#define COUNT_MASK 0x0FFF
#define FLUSHED 0x8000
#define ENCRYPTED 0x1000

typedef struct {
    PyObject_HEAD
    RC4_KEY rc4;                 /* the packet stream: re-keyed per packet when stateless */
    /* start key | pad1 | session key | pad2: the §7.3 SHA-1 input, only the session key
     * part changes (at sha_in + length + PAD) */
    unsigned char sha_in[16 + PAD + 16 + PAD];
    unsigned char session[16];
    int length;                  /* key octets: 8 (40/56-bit) or 16 (128-bit) */
    int key_bits;
    int stateless;
    int flush_next;              /* stateful sender: a Reset-Request asked for a flushed packet */
    unsigned int count;          /* the last coherency count sent or accepted */
    unsigned long long key_changes;
} State;

/* A readable buffer: bytes without the buffer protocol's cost, anything else through it. */
typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    Py_buffer view;
    int has_view;
} In;

static int in_get(PyObject *obj, In *in) {
    in->has_view = 0;
    if (PyBytes_CheckExact(obj)) {
        in->p = (const unsigned char *)PyBytes_AS_STRING(obj);
        in->n = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &in->view, PyBUF_SIMPLE) < 0)
        return -1;
    in->has_view = 1;
    in->p = in->view.buf;
    in->n = in->view.len;
    return 0;
}

static void in_release(In *in) {
    if (in->has_view)
        PyBuffer_Release(&in->view);
}

static unsigned char *session_slot(State *s) {
    return s->sha_in + s->length + PAD;
}

/* RFC 3078 §7.3 / RFC 3079: 40-bit keys start D1 26 9E, 56-bit keys start D1. */
static void reduce(State *s) {
    if (s->key_bits == 40) {
        s->session[0] = 0xd1; s->session[1] = 0x26; s->session[2] = 0x9e;
    } else if (s->key_bits == 56) {
        s->session[0] = 0xd1;
    }
}

/* SHA-1 of the §7.3 input. SHA1_Init/Update/Final, not the one-shot SHA1(): in OpenSSL 3
 * that one fetches an EVP digest per call, 0.67 us against 0.15 us here. */
static void sha_of_input(State *s, unsigned char digest[SHA_DIGEST_LENGTH]) {
    SHA_CTX c;
    SHA1_Init(&c);
    SHA1_Update(&c, s->sha_in, 2 * (s->length + PAD));
    SHA1_Final(digest, &c);
}

/* §7.3 key change: interim key from SHA-1 of start key|pad1|session key|pad2, RC4-encrypted
 * under itself, then reduced. A local RC4 state: the stateful stream is not disturbed. */
static void next_key(State *s) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    RC4_KEY k;
    int L = s->length;
    memcpy(session_slot(s), s->session, L);
    sha_of_input(s, digest);
    RC4_set_key(&k, L, digest);
    RC4(&k, L, digest, s->session);
    reduce(s);
    s->key_changes++;
}

/* A State whose __init__ never ran (or failed) has no key length: refuse it rather than
 * run a key schedule over zero octets. */
static int ready(State *s) {
    if (s->length)
        return 1;
    PyErr_SetString(PyExc_ValueError, "State not initialised");
    return 0;
}

static void rekey_session(State *s) {
    RC4_set_key(&s->rc4, s->length, s->session);
}

static int State_init(State *s, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"start_key", "key_bits", "stateless", NULL};
    Py_buffer start;
    int key_bits, stateless = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*i|p", kwlist, &start, &key_bits,
                                     &stateless))
        return -1;
    if (key_bits != 40 && key_bits != 56 && key_bits != 128) {
        PyBuffer_Release(&start);
        PyErr_Format(PyExc_ValueError, "MPPE key length %d: expected 40, 56 or 128", key_bits);
        return -1;
    }
    int L = key_bits == 128 ? 16 : 8;
    if (start.len < L) {
        PyBuffer_Release(&start);
        PyErr_Format(PyExc_ValueError, "%zd-octet start key for %d-bit MPPE", start.len,
                     key_bits);
        return -1;
    }
    s->length = L;
    s->key_bits = key_bits;
    s->stateless = stateless;
    s->flush_next = 0;
    s->count = COUNT_MASK;
    s->key_changes = 0;
    memcpy(s->sha_in, start.buf, L);
    memset(s->sha_in + L, 0x00, PAD);
    memcpy(s->sha_in + L + PAD, start.buf, L);
    memset(s->sha_in + 2 * L + PAD, 0xf2, PAD);
    PyBuffer_Release(&start);
    /* the initial session key: GetNewKeyFromSHA of the start key with itself, no RC4 step
     * (practice, as tunnels/mppe/keys.py says) */
    unsigned char digest[SHA_DIGEST_LENGTH];
    sha_of_input(s, digest);
    memcpy(s->session, digest, L);
    reduce(s);
    rekey_session(s);
    return 0;
}

/* -- the RC4 stream interface (tunnels/mppe/rc4.py's RekeyedStream) ------------------- */

static PyObject *crypt_into(RC4_KEY *k, const unsigned char *p, Py_ssize_t n) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out != NULL && n)
        RC4(k, (size_t)n, p, (unsigned char *)PyBytes_AS_STRING(out));
    return out;
}

static int set_key_from(RC4_KEY *k, PyObject *key) {
    In in;
    if (in_get(key, &in) < 0)
        return -1;
    if (in.n < 1 || in.n > 256) {
        in_release(&in);
        PyErr_SetString(PyExc_ValueError, "RC4 key of 1 to 256 octets");
        return -1;
    }
    RC4_set_key(k, (int)in.n, in.p);
    in_release(&in);
    return 0;
}

static PyObject *State_rekey(State *s, PyObject *key) {
    if (set_key_from(&s->rc4, key) < 0)
        return NULL;
    Py_INCREF(s);
    return (PyObject *)s;
}

static PyObject *State_update(State *s, PyObject *data) {
    In in;
    if (in_get(data, &in) < 0)
        return NULL;
    PyObject *out = crypt_into(&s->rc4, in.p, in.n);
    in_release(&in);
    return out;
}

static PyObject *State_crypt(State *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "crypt(key, data)");
        return NULL;
    }
    if (set_key_from(&s->rc4, args[0]) < 0)
        return NULL;
    return State_update(s, args[1]);
}

/* -- MPPE ----------------------------------------------------------------------------- */

static PyObject *State_next_key(State *s, PyObject *unused) {
    if (!ready(s))
        return NULL;
    next_key(s);
    return PyBytes_FromStringAndSize((const char *)s->session, s->length);
}

static PyObject *State_change_key(State *s, PyObject *unused) {
    if (!ready(s))
        return NULL;
    next_key(s);
    rekey_session(s);
    Py_RETURN_NONE;
}

/* The next header (count, key change, flushed bit) for a packet we send (§7.3, §8). */
static unsigned int next_header(State *s) {
    unsigned int count = s->count = (s->count + 1) & COUNT_MASK;
    int flushed = s->stateless || (count & 0xFF) == 0xFF || s->flush_next;
    if (flushed) {
        next_key(s);
        rekey_session(s);
        s->flush_next = 0;
    }
    return (flushed ? FLUSHED : 0) | ENCRYPTED | count;
}

/* `prefix` octets of plaintext go in before the data: MPPE encrypts the PPP protocol field
 * with the payload, and the caller need not concatenate them first. */
static PyObject *seal(State *s, const unsigned char *head, Py_ssize_t head_n,
                      const unsigned char *prefix, Py_ssize_t prefix_n,
                      const unsigned char *p, Py_ssize_t n) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, head_n + 2 + prefix_n + n);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    if (head_n)
        memcpy(o, head, head_n);
    o += head_n;
    unsigned int header = next_header(s);
    o[0] = header >> 8;
    o[1] = header & 0xFF;
    if (prefix_n)
        RC4(&s->rc4, (size_t)prefix_n, prefix, o + 2);
    if (n)
        RC4(&s->rc4, (size_t)n, p, o + 2 + prefix_n);
    return out;
}

/* encrypt(data[, prefix[, head]]): head | MPPE header | RC4(prefix | data). The PPP engine
 * passes the protocol field as prefix and address/control/0x00FD as head, so the frame it
 * sends is built here in one buffer rather than by two concatenations of the packet. */
static PyObject *State_encrypt(State *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "encrypt(data[, prefix[, head]])");
        return NULL;
    }
    if (!ready(s))
        return NULL;
    In in[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};  /* absent: empty */
    int got = 0;
    PyObject *out = NULL;
    for (; got < nargs; got++)
        if (in_get(args[got], &in[got]) < 0)
            goto done;
    out = seal(s, in[2].p, in[2].n, in[1].p, in[1].n, in[0].p, in[0].n);
done:
    while (got-- > 0)
        in_release(&in[got]);
    return out;
}

/* Decrypt n >= 1 octets, undoing PFC (a protocol field whose first octet is odd was
 * compressed to one octet): the plaintext with its two-octet protocol field. */
static PyObject *open_into(State *s, const unsigned char *p, Py_ssize_t n) {
    unsigned char first;
    RC4(&s->rc4, 1, p, &first);
    int pad = first & 1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + pad);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    o[0] = 0;
    o[pad] = first;
    if (n > 1)
        RC4(&s->rc4, (size_t)(n - 1), p + 1, o + pad + 1);
    return out;
}

/* The in-order case, at `p` (n octets): what the Python slow path would do for it, or 0
 * (returned before anything changed) for the rest. Stateless: A and D set, B and C clear,
 * the next count (§8.1). Stateful: D set, B and C clear, the next count, a flag packet
 * flushed (§8.2); the caller checks that it is not discarding. */
static int accept_next(State *s, const unsigned char *p, Py_ssize_t n) {
    if (n < 3)
        return 0;
    unsigned int header = ((unsigned int)p[0] << 8) | p[1];
    unsigned int count = header & COUNT_MASK;
    if (count != ((s->count + 1) & COUNT_MASK))
        return 0;
    if (s->stateless) {
        if ((header & 0xF000) != (FLUSHED | ENCRYPTED))
            return 0;
        s->count = count;
        next_key(s);
        rekey_session(s);
        return 1;
    }
    if ((header & 0x7000) != ENCRYPTED)
        return 0;
    int flushed = (header & FLUSHED) != 0;
    if ((count & 0xFF) == 0xFF && !flushed)
        return 0;
    s->count = count;
    if (flushed) {
        next_key(s);
        rekey_session(s);
    }
    return 1;
}

/* decrypt_next(info[, offset]): the MPPE packet at info[offset:], so the PPTP data path hands
 * the whole GRE packet over without slicing its payload out first. */
static PyObject *State_decrypt_next(State *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "decrypt_next(info[, offset])");
        return NULL;
    }
    Py_ssize_t offset = 0;
    if (nargs == 2) {
        offset = PyLong_AsSsize_t(args[1]);
        if (offset == -1 && PyErr_Occurred())
            return NULL;
    }
    if (!ready(s))
        return NULL;
    In in;
    if (in_get(args[0], &in) < 0)
        return NULL;
    PyObject *out;
    if (offset < 0 || offset > in.n) {
        PyErr_SetString(PyExc_ValueError, "decrypt_next: offset outside info");
        out = NULL;
    } else if (accept_next(s, in.p + offset, in.n - offset)) {
        out = open_into(s, in.p + offset + 2, in.n - offset - 2);
    } else {
        out = Py_None;
        Py_INCREF(out);
    }
    in_release(&in);
    return out;
}

/* -- attributes the Python slow path reads and writes -------------------------------- */

static PyObject *get_count(State *s, void *c) { return PyLong_FromUnsignedLong(s->count); }

static int set_count(State *s, PyObject *v, void *c) {
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "count cannot be deleted");
        return -1;
    }
    unsigned long value = PyLong_AsUnsignedLong(v);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (value > COUNT_MASK) {
        PyErr_SetString(PyExc_ValueError, "count is 0 to 4095");
        return -1;
    }
    s->count = (unsigned int)value;
    return 0;
}

static PyObject *get_session_key(State *s, void *c) {
    return PyBytes_FromStringAndSize((const char *)s->session, s->length);
}

static int set_session_key(State *s, PyObject *v, void *c) {
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "session_key cannot be deleted");
        return -1;
    }
    In in;
    if (in_get(v, &in) < 0)
        return -1;
    if (in.n != s->length) {
        in_release(&in);
        PyErr_Format(PyExc_ValueError, "session key of %d octets", s->length);
        return -1;
    }
    memcpy(s->session, in.p, s->length);
    in_release(&in);
    return 0;
}

static PyObject *get_key_changes(State *s, void *c) {
    return PyLong_FromUnsignedLongLong(s->key_changes);
}

static int set_key_changes(State *s, PyObject *v, void *c) {
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "key_changes cannot be deleted");
        return -1;
    }
    unsigned long long value = PyLong_AsUnsignedLongLong(v);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    s->key_changes = value;
    return 0;
}

static PyObject *get_flush_next(State *s, void *c) { return PyBool_FromLong(s->flush_next); }

static int set_flush_next(State *s, PyObject *v, void *c) {
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "flush_next cannot be deleted");
        return -1;
    }
    int value = PyObject_IsTrue(v);
    if (value < 0)
        return -1;
    s->flush_next = value;
    return 0;
}

static PyObject *get_key_bits(State *s, void *c) { return PyLong_FromLong(s->key_bits); }
static PyObject *get_stateless(State *s, void *c) { return PyBool_FromLong(s->stateless); }

static PyGetSetDef State_getset[] = {
    {"count", (getter)get_count, (setter)set_count, "last coherency count", NULL},
    {"session_key", (getter)get_session_key, (setter)set_session_key, "current key", NULL},
    {"key_changes", (getter)get_key_changes, (setter)set_key_changes, "§7.3 changes", NULL},
    {"flush_next", (getter)get_flush_next, (setter)set_flush_next, "flush next sent", NULL},
    {"key_bits", (getter)get_key_bits, NULL, "40, 56 or 128", NULL},
    {"stateless", (getter)get_stateless, NULL, "stateless mode (RFC 3078 §8.1)", NULL},
    {NULL}
};

static PyMethodDef State_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))State_encrypt, METH_FASTCALL,
     "encrypt(data, prefix=b'', head=b'') -> head + MPPE header + RC4(prefix + data), "
     "at the next count with the key changes due"},
    {"decrypt_next", (PyCFunction)(void (*)(void))State_decrypt_next, METH_FASTCALL,
     "decrypt_next(info, offset=0) -> protocol field + payload of info[offset:], or None: "
     "not the in-order case"},
    {"next_key", (PyCFunction)State_next_key, METH_NOARGS,
     "one §7.3 key change of session_key (the packet stream is not re-keyed)"},
    {"change_key", (PyCFunction)State_change_key, METH_NOARGS,
     "next_key() and the packet stream re-keyed with it"},
    {"rekey", (PyCFunction)State_rekey, METH_O, "rekey(key) -> self: the stream re-keyed"},
    {"update", (PyCFunction)State_update, METH_O, "update(data) -> RC4 of data"},
    {"crypt", (PyCFunction)(void (*)(void))State_crypt, METH_FASTCALL,
     "crypt(key, data): rekey(key).update(data)"},
    {NULL}
};

static PyTypeObject StateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunnels.mppe._fastmppe.State",
    .tp_basicsize = sizeof(State),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "State(start_key, key_bits, stateless=True): one direction's MPPE keys and "
              "RC4 stream (RFC 3078)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)State_init,
    .tp_methods = State_methods,
    .tp_getset = State_getset,
};

static PyObject *mod_rc4(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "rc4(key, data)");
        return NULL;
    }
    RC4_KEY k;
    if (set_key_from(&k, args[0]) < 0)
        return NULL;
    In in;
    if (in_get(args[1], &in) < 0)
        return NULL;
    PyObject *out = crypt_into(&k, in.p, in.n);
    in_release(&in);
    return out;
}

static PyMethodDef module_methods[] = {
    {"rc4", (PyCFunction)(void (*)(void))mod_rc4, METH_FASTCALL,
     "rc4(key, data) -> RC4 of data under a fresh key"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tunnels.mppe._fastmppe",
    "MPPE (RFC 3078) per-packet work over libcrypto; see tunnels/mppe/cipher.py.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fastmppe(void) {
    if (PyType_Ready(&StateType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&StateType);
    if (PyModule_AddObject(m, "State", (PyObject *)&StateType) < 0) {
        Py_DECREF(&StateType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
