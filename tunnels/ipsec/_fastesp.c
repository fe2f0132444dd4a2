/* ESP's per-packet work in one call each way (RFC 4303 transport mode, RFC 3602/2451 CBC,
 * RFC 2404/2403/4868 HMAC), for tunnels/ipsec/esp.py.
 *
 * Why C: the Python path pays for a wrapper call per primitive (CBC, two hash copies and
 * updates, the IV, the big-integer checksum) and for each intermediate buffer; here the
 * plaintext is built in the output buffer, encrypted in place and authenticated there.
 * What stays in Python (esp.py, sa.py, replay.py): sequence numbers, the replay window,
 * lifetimes and counters; they are handed in as ints and the outcome is handed back.
 *
 * Context(cipher, enc_key, integrity, auth_key), keyed once per SA:
 *   seal(spi, seq, iv, next_header, payload) -> SPI|seq|IV|ciphertext|ICV
 *   seal_udp(spi, seq, iv, sport, dport, addresses, payload[, prefix]) -> the same, the
 *       payload being a UDP header (checksum over RFC 768's pseudo-header, `addresses` = its
 *       address part) followed by `prefix` and `payload` (the L2TP data path hands its
 *       header as `prefix`: no concatenation in Python); iv None (both) draws one block
 *       from RAND_bytes (see draw_iv)
 *   open(packet) -> (next_header, payload) or an int status (MALFORMED, AUTH, PADDING): the
 *       ICV is verified (CRYPTO_memcmp) before anything is decrypted
 * checksum(data) -> the one's-complement sum of `data` as 16-bit words (ipv4.ones_sum).
 *
 * The cipher context is keyed once; a packet only sets its IV. HMAC's inner and outer hash
 * states (RFC 2104) are computed once and copied per packet as plain structs: cheaper than
 * EVP_MD_CTX_copy or EVP_MAC_CTX_dup, which allocate. The GIL is kept: a call is a few
 * microseconds. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

enum { ST_MALFORMED = 1, ST_AUTH = 2, ST_PADDING = 3 };
enum { MAC_SHA1 = 1, MAC_MD5 = 2, MAC_SHA256 = 3 };
#define HASH_BLOCK 64   /* SHA-1, MD5 and SHA-256 all compress 64-octet blocks */
#define MAX_DIGEST 32
#define MAX_BLOCK 16
#define PROTO_UDP 17

/* -- one's-complement sum (RFC 1071) ------------------------------------------------------ */

/* Summed in native byte order, 32 bits at a time into 64 (no carry is lost before 2^32
 * words), folded, then swapped back to network order: RFC 1071 §2(B), the sum is
 * independent of byte order. */
static uint32_t ones_sum_native(const uint8_t *p, size_t n, uint64_t acc)
{
    while (n >= 16) {
        uint32_t w[4];
        memcpy(w, p, 16);
        acc += (uint64_t)w[0] + w[1] + w[2] + w[3];
        p += 16;
        n -= 16;
    }
    while (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        acc += w;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t h;
        memcpy(&h, p, 2);
        acc += h;
        p += 2;
        n -= 2;
    }
    if (n) { /* an odd last octet is the high half of a word padded with zero */
        uint16_t h = 0;
        memcpy(&h, p, 1);
        acc += h;
    }
    while (acc >> 16)
        acc = (acc & 0xFFFF) + (acc >> 16);
    return (uint32_t)acc;
}

static uint32_t to_network16(uint32_t native)
{
    uint16_t v = (uint16_t)native;
    uint8_t b[2];
    memcpy(b, &v, 2);
    return ((uint32_t)b[0] << 8) | b[1];
}

static uint32_t from_network16(uint32_t value) /* the inverse, for partial sums handed in */
{
    uint8_t b[2] = {(uint8_t)(value >> 8), (uint8_t)value};
    uint16_t v;
    memcpy(&v, b, 2);
    return v;
}

static uint32_t ones_sum(const uint8_t *p, size_t n)
{
    return to_network16(ones_sum_native(p, n, 0));
}

/* -- IVs ------------------------------------------------------------------------------- */

/* RFC 3602 §3: each IV unpredictable. RAND_bytes costs about 1.5 us a call (its DRBG's
 * locking and reseed checks) and would be the dearest part of a packet, so IVs are taken
 * from a pool it fills 4 KB at a time. The pool is emptied in a forked child, which must not
 * send the parent's next IVs. */
#define IV_POOL 4096
static uint8_t iv_pool[IV_POOL];
static size_t iv_left = 0;

static void iv_pool_forget(void)
{
    OPENSSL_cleanse(iv_pool, sizeof iv_pool);
    iv_left = 0;
}

static int draw_iv(uint8_t *iv, size_t n)
{
    if (iv_left < n) {
        if (RAND_bytes(iv_pool, IV_POOL) != 1)
            return 0;
        iv_left = IV_POOL;
    }
    uint8_t *from = iv_pool + IV_POOL - iv_left;
    memcpy(iv, from, n);
    memset(from, 0, n);
    iv_left -= n;
    return 1;
}

/* -- HMAC states ------------------------------------------------------------------------ */

typedef union {
    SHA_CTX sha1;
    MD5_CTX md5;
    SHA256_CTX sha256;
} HashState;

static void hash_init(int mac, HashState *s)
{
    if (mac == MAC_SHA1) SHA1_Init(&s->sha1);
    else if (mac == MAC_MD5) MD5_Init(&s->md5);
    else SHA256_Init(&s->sha256);
}

static void hash_update(int mac, HashState *s, const void *p, size_t n)
{
    if (mac == MAC_SHA1) SHA1_Update(&s->sha1, p, n);
    else if (mac == MAC_MD5) MD5_Update(&s->md5, p, n);
    else SHA256_Update(&s->sha256, p, n);
}

static void hash_final(int mac, HashState *s, uint8_t *out)
{
    if (mac == MAC_SHA1) SHA1_Final(out, &s->sha1);
    else if (mac == MAC_MD5) MD5_Final(out, &s->md5);
    else SHA256_Final(out, &s->sha256);
}

static size_t digest_size(int mac)
{
    return mac == MAC_SHA1 ? 20 : mac == MAC_MD5 ? 16 : 32;
}

/* -- the SA's context ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    int block;
    int mac;
    int icv_size;
    HashState inner; /* after one compression of K xor ipad */
    HashState outer; /* after one compression of K xor opad */
} Context;

static void hmac(const Context *c, const uint8_t *data, size_t n, uint8_t *out)
{
    uint8_t inner_digest[MAX_DIGEST];
    HashState s = c->inner;
    hash_update(c->mac, &s, data, n);
    hash_final(c->mac, &s, inner_digest);
    s = c->outer;
    hash_update(c->mac, &s, inner_digest, digest_size(c->mac));
    hash_final(c->mac, &s, out);
}

/* OpenSSL 3 keeps single DES in its legacy provider. It is loaded into a library context of
 * our own, so loading it changes nothing for the process's other libcrypto users (hashlib). */
static const EVP_CIPHER *legacy_des_cbc(void)
{
    static OSSL_LIB_CTX *legacy;
    static EVP_CIPHER *des;
    if (des != NULL)
        return des;
    if (legacy == NULL) {
        legacy = OSSL_LIB_CTX_new();
        if (legacy == NULL)
            return NULL;
        if (OSSL_PROVIDER_load(legacy, "legacy") == NULL
                || OSSL_PROVIDER_load(legacy, "default") == NULL) {
            ERR_clear_error();
            return NULL; /* no DES here: each later Context only retries the fetch */
        }
    }
    des = EVP_CIPHER_fetch(legacy, "DES-CBC", NULL);
    if (des == NULL)
        ERR_clear_error();
    return des;
}

static const EVP_CIPHER *cipher_by_name(const char *name)
{
    if (!strcmp(name, "aes-cbc-128")) return EVP_aes_128_cbc();
    if (!strcmp(name, "aes-cbc-192")) return EVP_aes_192_cbc();
    if (!strcmp(name, "aes-cbc-256")) return EVP_aes_256_cbc();
    if (!strcmp(name, "3des-cbc")) return EVP_des_ede3_cbc();
    return NULL;
}

/* (mac, key size, ICV size) of an ESP integrity name */
static int integrity_by_name(const char *name, int *key_size, int *icv_size)
{
    if (!strcmp(name, "hmac-sha1-96")) { *key_size = 20; *icv_size = 12; return MAC_SHA1; }
    if (!strcmp(name, "hmac-md5-96")) { *key_size = 16; *icv_size = 12; return MAC_MD5; }
    if (!strcmp(name, "hmac-sha256-128")) { *key_size = 32; *icv_size = 16; return MAC_SHA256; }
    return 0;
}

static EVP_CIPHER_CTX *keyed(const EVP_CIPHER *cipher, const uint8_t *key, int encrypt)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (EVP_CipherInit_ex(ctx, cipher, NULL, key, NULL, encrypt) != 1
            || EVP_CIPHER_CTX_set_padding(ctx, 0) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int Context_init(Context *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"cipher", "enc_key", "integrity", "auth_key", NULL};
    const char *cipher_name, *integrity_name;
    Py_buffer ekey, akey;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sy*sy*", kwlist, &cipher_name, &ekey,
                                     &integrity_name, &akey))
        return -1;
    int rc = -1, key_size = 0, icv_size = 0;
    const EVP_CIPHER *cipher = cipher_by_name(cipher_name);
    if (cipher == NULL && !strcmp(cipher_name, "des-cbc"))
        cipher = legacy_des_cbc();
    int mac = integrity_by_name(integrity_name, &key_size, &icv_size);
    if (cipher == NULL || mac == 0) {
        PyErr_Format(PyExc_NotImplementedError, "no compiled ESP for %s/%s", cipher_name,
                     integrity_name);
        goto done;
    }
    if (ekey.len != EVP_CIPHER_key_length(cipher) || akey.len != key_size) {
        PyErr_Format(PyExc_ValueError, "%s/%s: keys of %d and %d octets expected",
                     cipher_name, integrity_name, EVP_CIPHER_key_length(cipher), key_size);
        goto done;
    }
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    self->enc = keyed(cipher, ekey.buf, 1);
    self->dec = keyed(cipher, ekey.buf, 0);
    if (self->enc == NULL || self->dec == NULL) {
        ERR_clear_error(); /* the caller falls back to the pure-Python path */
        EVP_CIPHER_CTX_free(self->enc);
        EVP_CIPHER_CTX_free(self->dec);
        self->enc = self->dec = NULL;
        PyErr_Format(PyExc_NotImplementedError, "libcrypto cannot run %s", cipher_name);
        goto done;
    }
    self->block = EVP_CIPHER_block_size(cipher);
    self->mac = mac;
    self->icv_size = icv_size;
    uint8_t pad[HASH_BLOCK]; /* RFC 2104 §2: K padded with zeros to the block, xor ipad/opad */
    memset(pad, 0, sizeof pad);
    memcpy(pad, akey.buf, (size_t)akey.len); /* key_size <= 32 < HASH_BLOCK: never hashed */
    for (int i = 0; i < HASH_BLOCK; i++) pad[i] ^= 0x36;
    hash_init(mac, &self->inner);
    hash_update(mac, &self->inner, pad, HASH_BLOCK);
    for (int i = 0; i < HASH_BLOCK; i++) pad[i] ^= 0x36 ^ 0x5C;
    hash_init(mac, &self->outer);
    hash_update(mac, &self->outer, pad, HASH_BLOCK);
    OPENSSL_cleanse(pad, sizeof pad);
    rc = 0;
done:
    PyBuffer_Release(&ekey);
    PyBuffer_Release(&akey);
    return rc;
}

static void Context_dealloc(Context *self)
{
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    OPENSSL_cleanse(&self->inner, sizeof self->inner);
    OPENSSL_cleanse(&self->outer, sizeof self->outer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(const Context *self)
{
    if (self->enc == NULL || self->dec == NULL) {
        PyErr_SetString(PyExc_ValueError, "Context not initialised");
        return 0;
    }
    return 1;
}

/* -- argument helpers ------------------------------------------------------------------- */

static int arg_u32(PyObject *o, uint32_t *out, const char *what)
{
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return 0;
    if (v > 0xFFFFFFFFUL) {
        PyErr_Format(PyExc_OverflowError, "%s out of range", what);
        return 0;
    }
    *out = (uint32_t)v;
    return 1;
}

static int arg_u16(PyObject *o, uint32_t *out, const char *what)
{
    if (!arg_u32(o, out, what))
        return 0;
    if (*out > 0xFFFF) {
        PyErr_Format(PyExc_OverflowError, "%s out of range", what);
        return 0;
    }
    return 1;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v;
}

/* -- seal ------------------------------------------------------------------------------- */

/* The ESP packet for a plaintext of a head of `head_len` octets (written by `write_head` at
 * the start of the plaintext, once `prefix` and `payload` are in place after it: it may sum
 * them), `prefix` (`prefix_len` octets, possibly none) and `payload`; `iv` NULL draws one. */
typedef void (*HeadWriter)(uint8_t *plain, size_t body_len, const uint32_t *extra);

static PyObject *seal(Context *self, uint32_t spi, uint32_t seq, PyObject *iv_obj,
                      uint32_t next_header, size_t head_len, HeadWriter write_head,
                      const uint32_t *extra, const uint8_t *prefix, size_t prefix_len,
                      const uint8_t *payload, size_t payload_len)
{
    const size_t block = (size_t)self->block;
    if (payload_len > (size_t)INT_MAX / 4 || prefix_len > (size_t)INT_MAX / 4) {
        PyErr_SetString(PyExc_OverflowError, "payload too long"); /* EVP takes int lengths */
        return NULL;
    }
    const size_t inner = head_len + prefix_len + payload_len;
    const size_t pad_len = (block - (inner + 2) % block) % block;
    const size_t ct_len = inner + pad_len + 2;
    const size_t total = 8 + block + ct_len + (size_t)self->icv_size;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    uint8_t *iv = p + 8, *plain = iv + block;
    put32(p, spi);
    put32(p + 4, seq);
    if (iv_obj == Py_None) {
        if (!draw_iv(iv, block)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "RAND_bytes failed");
            return NULL;
        }
    } else {
        Py_buffer ivb;
        if (PyObject_GetBuffer(iv_obj, &ivb, PyBUF_SIMPLE) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if ((size_t)ivb.len != block) {
            PyBuffer_Release(&ivb);
            Py_DECREF(out);
            PyErr_Format(PyExc_ValueError, "a %zu-octet IV is needed", block);
            return NULL;
        }
        memcpy(iv, ivb.buf, block);
        PyBuffer_Release(&ivb);
    }
    if (prefix_len)
        memcpy(plain + head_len, prefix, prefix_len);
    memcpy(plain + head_len + prefix_len, payload, payload_len);
    if (write_head != NULL)
        write_head(plain, prefix_len + payload_len, extra);
    uint8_t *trailer = plain + inner;
    for (size_t i = 0; i < pad_len; i++) /* RFC 4303 §2.4: 1, 2, 3, ... */
        trailer[i] = (uint8_t)(i + 1);
    trailer[pad_len] = (uint8_t)pad_len;
    trailer[pad_len + 1] = (uint8_t)next_header;
    int outl = 0;
    if (EVP_EncryptInit_ex(self->enc, NULL, NULL, NULL, iv) != 1
            || EVP_EncryptUpdate(self->enc, plain, &outl, plain, (int)ct_len) != 1
            || (size_t)outl != ct_len) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "EVP encryption failed");
        return NULL;
    }
    uint8_t digest[MAX_DIGEST];
    hmac(self, p, 8 + block + ct_len, digest); /* §3.3.4: integrity over the ciphertext */
    memcpy(plain + ct_len, digest, (size_t)self->icv_size);
    return out;
}

static PyObject *Context_seal(Context *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t spi, seq, nh;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "seal(spi, seq, iv, next_header, payload)");
        return NULL;
    }
    if (!ready(self) || !arg_u32(args[0], &spi, "spi") || !arg_u32(args[1], &seq, "seq")
            || !arg_u16(args[3], &nh, "next header"))
        return NULL;
    if (nh > 0xFF) {
        PyErr_SetString(PyExc_OverflowError, "next header out of range");
        return NULL;
    }
    Py_buffer pb;
    if (PyObject_GetBuffer(args[4], &pb, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = seal(self, spi, seq, args[2], nh, 0, NULL, NULL, NULL, 0, pb.buf,
                       (size_t)pb.len);
    PyBuffer_Release(&pb);
    return r;
}

/* extra = {sport, dport, address sum}: the UDP header and its checksum (RFC 768) over the
 * `body_len` octets already after it */
static void write_udp(uint8_t *plain, size_t body_len, const uint32_t *extra)
{
    const uint8_t *payload = plain + 8;
    const size_t payload_len = body_len;
    const uint32_t length = (uint32_t)(8 + payload_len);
    put16(plain, extra[0]);
    put16(plain + 2, extra[1]);
    put16(plain + 4, length);
    /* pseudo-header (addresses, zero + protocol, length), the header, the payload:
     * summed natively, the network-order terms converted once */
    uint64_t acc = (uint64_t)from_network16(extra[2]) + from_network16(PROTO_UDP)
        + from_network16(length) + from_network16(extra[0]) + from_network16(extra[1]) + from_network16(length);
    uint32_t sum = to_network16(ones_sum_native(payload, payload_len, acc));
    uint32_t check = ~sum & 0xFFFF;
    put16(plain + 6, check ? check : 0xFFFF); /* RFC 768: 0 is sent as all ones */
}

static PyObject *Context_seal_udp(Context *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t spi, seq, extra[3];
    if (nargs != 7 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "seal_udp(spi, seq, iv, sport, dport, addresses, payload[, prefix])");
        return NULL;
    }
    if (!ready(self) || !arg_u32(args[0], &spi, "spi") || !arg_u32(args[1], &seq, "seq")
            || !arg_u16(args[3], &extra[0], "sport") || !arg_u16(args[4], &extra[1], "dport")
            || !arg_u16(args[5], &extra[2], "addresses"))
        return NULL;
    Py_buffer pb, xb = {0};
    if (PyObject_GetBuffer(args[6], &pb, PyBUF_SIMPLE) < 0)
        return NULL;
    if (nargs == 8 && args[7] != Py_None
            && PyObject_GetBuffer(args[7], &xb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&pb);
        return NULL;
    }
    PyObject *r = NULL;
    if (pb.len > 0xFFFF - 8 || xb.len > 0xFFFF - 8 - pb.len)
        PyErr_SetString(PyExc_OverflowError, "UDP payload too long");
    else
        r = seal(self, spi, seq, args[2], PROTO_UDP, 8, write_udp, extra,
                 (const uint8_t *)xb.buf, (size_t)xb.len, pb.buf, (size_t)pb.len);
    if (xb.obj != NULL)
        PyBuffer_Release(&xb);
    PyBuffer_Release(&pb);
    return r;
}

/* -- open ------------------------------------------------------------------------------- */

static PyObject *status(int code)
{
    return PyLong_FromLong(code);
}

static PyObject *open_packet(Context *self, const uint8_t *p, size_t size)
{
    const size_t block = (size_t)self->block, icv = (size_t)self->icv_size;
    /* SPI, sequence number, IV, at least one block of ciphertext, the ICV; whole blocks */
    if (size < 8 + icv || size - 8 - icv < 2 * block || (size - 8 - icv) % block
            || size > (size_t)INT_MAX / 2)
        return status(ST_MALFORMED);
    const size_t icv_at = size - icv, ct_len = icv_at - 8 - block;
    uint8_t digest[MAX_DIGEST];
    hmac(self, p, icv_at, digest);
    if (CRYPTO_memcmp(digest, p + icv_at, icv) != 0) /* §3.4.4.1: before decrypting */
        return status(ST_AUTH);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)ct_len);
    if (out == NULL)
        return NULL;
    uint8_t *plain = (uint8_t *)PyBytes_AS_STRING(out);
    int outl = 0;
    if (EVP_DecryptInit_ex(self->dec, NULL, NULL, NULL, p + 8) != 1
            || EVP_DecryptUpdate(self->dec, plain, &outl, p + 8 + block, (int)ct_len) != 1
            || (size_t)outl != ct_len) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "EVP decryption failed");
        return NULL;
    }
    const size_t pad_len = plain[ct_len - 2];
    const uint8_t next_header = plain[ct_len - 1];
    if (pad_len + 2 > ct_len) { /* the padding would reach into the IV */
        Py_DECREF(out);
        return status(ST_PADDING);
    }
    const size_t end = ct_len - 2 - pad_len;
    for (size_t i = 0; i < pad_len; i++) { /* §2.4: the receiver SHOULD check 1, 2, 3, ... */
        if (plain[end + i] != (uint8_t)(i + 1)) {
            Py_DECREF(out);
            return status(ST_PADDING);
        }
    }
    if (_PyBytes_Resize(&out, (Py_ssize_t)end) < 0)
        return NULL;
    PyObject *nh = PyLong_FromLong(next_header);
    if (nh == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *r = PyTuple_New(2);
    if (r == NULL) {
        Py_DECREF(nh);
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(r, 0, nh);
    PyTuple_SET_ITEM(r, 1, out);
    return r;
}

static PyObject *Context_open(Context *self, PyObject *data)
{
    if (!ready(self))
        return NULL;
    if (PyBytes_CheckExact(data))
        return open_packet(self, (const uint8_t *)PyBytes_AS_STRING(data),
                           (size_t)PyBytes_GET_SIZE(data));
    Py_buffer b;
    if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = open_packet(self, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return r;
}

static PyObject *Context_icv(Context *self, PyObject *data)
{
    Py_buffer b;
    if (!ready(self) || PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint8_t digest[MAX_DIGEST];
    hmac(self, b.buf, (size_t)b.len, digest);
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)digest, self->icv_size);
}

static PyObject *Context_get_block(Context *self, void *closure)
{
    return PyLong_FromLong(self->block);
}

static PyObject *Context_get_icv_size(Context *self, void *closure)
{
    return PyLong_FromLong(self->icv_size);
}

static PyMethodDef Context_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Context_seal, METH_FASTCALL,
     "seal(spi, seq, iv, next_header, payload) -> ESP packet (iv None: drawn here)"},
    {"seal_udp", (PyCFunction)(void (*)(void))Context_seal_udp, METH_FASTCALL,
     "seal_udp(spi, seq, iv, sport, dport, addresses, payload[, prefix]) -> ESP packet of "
     "a UDP datagram (prefix + payload) whose checksum covers the pseudo-header"},
    {"open", (PyCFunction)Context_open, METH_O,
     "open(packet) -> (next_header, payload) or a status int (1 malformed, 2 ICV "
     "mismatch, 3 bad padding)"},
    {"icv", (PyCFunction)Context_icv, METH_O, "icv(data) -> the truncated HMAC of data"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Context_getset[] = {
    {"block_size", (getter)Context_get_block, NULL, "cipher block (and IV) size", NULL},
    {"icv_size", (getter)Context_get_icv_size, NULL, "ICV size", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tunnels.ipsec._fastesp.Context",
    .tp_basicsize = sizeof(Context),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One SA's keyed cipher and HMAC contexts (both directions' code, one key).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Context_init,
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_methods = Context_methods,
    .tp_getset = Context_getset,
};

/* -- module ----------------------------------------------------------------------------- */

static PyObject *fast_checksum(PyObject *module, PyObject *data)
{
    if (PyBytes_CheckExact(data))
        return PyLong_FromUnsignedLong(ones_sum((const uint8_t *)PyBytes_AS_STRING(data),
                                                (size_t)PyBytes_GET_SIZE(data)));
    Py_buffer b;
    if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t sum = ones_sum(b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(sum);
}

static PyMethodDef module_methods[] = {
    {"checksum", (PyCFunction)fast_checksum, METH_O,
     "checksum(data) -> one's-complement sum of data as 16-bit words (RFC 1071)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastesp",
    "ESP seal/open and the Internet checksum over libcrypto (see tunnels/ipsec/esp.py).",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastesp(void)
{
    if (PyType_Ready(&ContextType) < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, iv_pool_forget) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ContextType);
    if (PyModule_AddObject(m, "Context", (PyObject *)&ContextType) < 0
            || PyModule_AddIntConstant(m, "MALFORMED", ST_MALFORMED) < 0
            || PyModule_AddIntConstant(m, "AUTH", ST_AUTH) < 0
            || PyModule_AddIntConstant(m, "PADDING", ST_PADDING) < 0) {
        Py_DECREF(&ContextType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
