"""MPPE (RFC 3078 cipher, RFC 3079 keys); CCP option bits in `options`."""

from tunnels.mppe.cipher import MPPEDecryptor, MPPEEncryptor
from tunnels.mppe.keys import derive_start_keys

__all__ = ["MPPEDecryptor", "MPPEEncryptor", "derive_start_keys"]
