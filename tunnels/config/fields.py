"""What the server's and the client's files share: reading TOML, checking each field with an
error that names the file, the table.key and what was expected (and the line, when found), and
the L2TP and IPsec settings both tables have."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tunnels.policy import MPPE_AUTH  # MPPE keys come from MS-CHAP (RFC 3079)
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel

PROTOCOLS = ("pptp", "l2tp", "l2tp-ipsec")
ESP_CIPHERS = ("des-cbc", "3des-cbc", "aes-cbc-128", "aes-cbc-256")
IPSEC_LEVELS = ("basic", "strong", "strongest")
CALL_MODES = ("incoming", "outgoing")

T = TypeVar("T")


class ConfigError(ValueError):
    pass


class Fields:
    """Reads one table's fields, naming `where: table.field` in every error."""

    def __init__(self, where: str, table: str, data: Mapping[str, Any], known: set[str]):
        self.where, self.table, self.data = where, table, data
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: {table}.{unknown[0]}: unknown field; expected one of "
                              f"{', '.join(sorted(known))}")

    def fail(self, name: str, expected: str) -> None:
        got = f"got {self.data[name]!r}; " if name in self.data else ""
        raise ConfigError(f"{self.where}: {self.table}.{name}: {got}expected {expected}")

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def required(self, name: str, expected: str) -> Any:
        if name not in self.data:
            raise ConfigError(f"{self.where}: {self.table}.{name}: missing; expected {expected}")
        return self.data[name]

    def address(self, name: str, default: Any = None) -> str:
        value = self.required(name, "an IPv4 address") if default is None else \
            self.get(name, default)
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            self.fail(name, "an IPv4 address like 203.0.113.2")
            raise AssertionError from None  # unreachable: fail() raises

    def addresses(self, name: str) -> tuple[str, ...]:
        values = self.get(name, [])
        if not isinstance(values, list) or len(values) > 2:
            self.fail(name, "a list of at most two IPv4 addresses (primary, secondary)")
        try:
            return tuple(str(ipaddress.IPv4Address(v)) for v in values)
        except ValueError:
            self.fail(name, "a list of at most two IPv4 addresses (primary, secondary)")
            raise AssertionError from None

    def prefixes(self, name: str) -> tuple[str, ...]:
        values = self.get(name, [])
        if not isinstance(values, list):
            self.fail(name, 'a list of prefixes like ["10.10.0.0/24"]')
        try:
            return tuple(str(ipaddress.IPv4Network(v, strict=False)) for v in values)
        except ValueError:
            self.fail(name, 'a list of prefixes like ["10.10.0.0/24"]')
            raise AssertionError from None

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if value not in choices:
            self.fail(name, f"one of {', '.join(choices)}")
        return str(value)

    def number(self, name: str, default: float, minimum: float, integer: bool = False,
               maximum: float | None = None) -> Any:
        value = self.get(name, default)
        kinds = (int,) if integer else (int, float)
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
            self.fail(name, f"{kind} >= {minimum}" if maximum is None
                      else f"{kind} from {minimum} to {maximum}")
        if maximum is not None and value > maximum:
            self.fail(name, f"{kind} from {minimum} to {maximum}")
        return value

    def string(self, name: str, default: str | None = None, max_len: int = 255) -> str:
        value = self.required(name, "a string") if default is None else self.get(name, default)
        if not isinstance(value, str) or not value or len(value) > max_len:
            self.fail(name, f"a non-empty string of at most {max_len} characters")
        return str(value)

    def optional_address(self, name: str) -> str | None:
        return self.address(name, self.data[name]) if name in self.data else None

    def names(self, name: str, allowed: tuple[str, ...] | None = None,
              example: str = '["VPN Users"]') -> tuple[str, ...]:
        """A list of non-empty strings (empty: any), among `allowed` when given."""
        values = self.get(name, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            self.fail(name, f"a list of strings like {example}")
        if allowed is not None and any(v not in allowed for v in values):
            self.fail(name, f"a list among {', '.join(allowed)}")
        return tuple(values)

    def auth(self, name: str, default: tuple[AuthMethod, ...]) -> tuple[AuthMethod, ...]:
        values = self.get(name, [m.value for m in default])
        if isinstance(values, str):
            values = [values]
        allowed = ", ".join(m.value for m in AuthMethod)
        if not isinstance(values, list) or not values:
            self.fail(name, f'a non-empty list of methods like ["mschapv2"] ({allowed})')
        try:
            return tuple(AuthMethod(v) for v in values)
        except ValueError:
            self.fail(name, f"methods among {allowed}")
            raise AssertionError from None

    def encryption(self, name: str, auth: tuple[AuthMethod, ...]) -> EncryptionLevel:
        value = EncryptionLevel(self.choice(name, "none", tuple(e.value for e in EncryptionLevel)))
        if value.key_bits and not set(auth) & set(MPPE_AUTH):
            self.fail(name, "none or optional with these auth methods: MPPE keys come from "
                            "MS-CHAP (RFC 3079), add mschap or mschapv2 to auth")
        return value


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def top_table(data: Mapping[str, Any], name: str, where: str,
              others: set[str]) -> Mapping[str, Any]:
    unknown = sorted(set(data) - {name} - others)
    if unknown:
        raise ConfigError(f"{where}: [{unknown[0]}]: unknown table; expected "
                          f"{', '.join(f'[{t}]' for t in sorted({name} | others))}")
    table = data.get(name)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: missing [{name}] table")
    return table


def sub_table(data: Any, name: str, where: str, known: set[str]) -> Fields:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {name}: expected a table")
    return Fields(where, name, data, known)


def load_file(path: Path, from_mapping: Callable[[Mapping[str, Any], str], T]) -> T:
    """`from_mapping(the file's TOML, its name)`, its errors ending with the line number."""
    text = read_text(path)
    try:
        return from_mapping(parse_toml(path, text), str(path))
    except ConfigError as exc:
        raise with_line(exc, str(path), text) from None


# -- line numbers ----------------------------------------------------------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def with_line(exc: ConfigError, where: str, text: str) -> ConfigError:
    """The error with " (line N)" of its table.key when the file has `key =` in that table."""
    match = re.match(re.escape(where) + r": ([\w\-\[\]\.\"]+)\.([\w\-]+): ", str(exc))
    if match is None:
        return exc
    line = _line_of(text, match[1], match[2])
    return ConfigError(f"{exc} (line {line})") if line else exc


def _line_of(text: str, table: str, key: str) -> int | None:
    arrays: dict[str, int] = {}
    current = ""
    key_re = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            path = header[2].replace('"', "").replace(" ", "")
            if header[1] == "[[":
                arrays[path] = arrays.get(path, 0) + 1
                current = f"{path}[{arrays[path]}]"
            else:
                parent = max((a for a in arrays if path.startswith(a + ".")), key=len, default="")
                current = f"{parent}[{arrays[parent]}]{path[len(parent):]}" if parent else path
        elif current == table and key_re.match(line):
            return number
    return None


def l2tp_fields(f: Fields, server: bool) -> dict[str, Any]:
    """The L2TP settings shared by [server] and [client]; hiding needs a secret (§4.3)."""
    out: dict[str, Any] = {}
    if server:
        protocols = f.get("protocols", ["pptp"])
        if not isinstance(protocols, list) or not protocols or \
                any(p not in PROTOCOLS for p in protocols) or len(set(protocols)) != len(protocols):
            f.fail("protocols", f'a non-empty list among {", ".join(PROTOCOLS)}, like ["pptp", '
                                '"l2tp"]')
        out["protocols"] = tuple(protocols)
        data_sequencing = f.get("data_sequencing", False)
        if not isinstance(data_sequencing, bool):
            f.fail("data_sequencing", "true or false")
        out["data_sequencing"] = data_sequencing
        if "l2tp" in protocols and "l2tp-ipsec" in protocols:
            f.fail("protocols", "l2tp or l2tp-ipsec, not both: both answer on UDP 1701, and "
                                "l2tp-ipsec drops L2TP that is not inside IPsec")
    out.update(_ipsec_fields(f, "l2tp-ipsec" in out.get("protocols", ()) or
                             f.get("protocol") == "l2tp-ipsec"))
    secret = f.get("tunnel_secret", "")
    if not isinstance(secret, str):
        f.fail("tunnel_secret", "a string")
    hide = f.get("hide_avps", False)
    if not isinstance(hide, bool):
        f.fail("hide_avps", "true or false")
    if hide and not secret:
        f.fail("hide_avps", "false, or a tunnel_secret to hide AVPs with (RFC 2661 §4.3)")
    out.update(tunnel_secret=secret, hide_avps=hide,
               hello_interval=float(f.number("hello_interval", 60, 0)))
    return out


def _ipsec_fields(f: Fields, used: bool) -> dict[str, Any]:
    """psk, nat_t and ipsec_ciphers; with L2TP/IPsec the PSK is required and the encryption
    level must name an ESP cipher (the chapter: L2TP/IPsec always encrypts)."""
    psk = f.get("psk", "")
    if not isinstance(psk, str):
        f.fail("psk", "a string")
    creds = _credentials(f)
    if used and not psk and not creds:
        raise ConfigError(f"{f.where}: {f.table}.psk: missing; expected the IKE pre-shared "
                          "key, or certificate + private_key + ca (L2TP/IPsec)")
    nat_t = f.get("nat_t", True)
    if not isinstance(nat_t, bool):
        f.fail("nat_t", "true or false")
    ciphers = f.get("ipsec_ciphers", [])
    if not isinstance(ciphers, list) or any(c not in ESP_CIPHERS for c in ciphers):
        f.fail("ipsec_ciphers", f"a list among {', '.join(ESP_CIPHERS)}")
    if used and not ciphers and f.get("encryption", "none") not in IPSEC_LEVELS:
        f.fail("encryption", "basic, strong or strongest with L2TP/IPsec (DES, DES, 3DES: the "
                             "chapter's levels), or ipsec_ciphers")
    keylog = f.get("keylog")
    if keylog is not None and (not isinstance(keylog, str) or not keylog):
        f.fail("keylog", "a file path")
    return {"psk": psk, "nat_t": nat_t, "ipsec_ciphers": tuple(ciphers),
            "keylog": Path(keylog) if keylog else None, **creds,
            "ipsec_lifetime": float(f.number("ipsec_lifetime", 3600, 60)),
            "ipsec_lifetime_kb": f.number("ipsec_lifetime_kb", 0, 0, integer=True)}


def load_der(path: Path, kind: str) -> bytes:
    """A certificate or private key file, PEM or DER, as DER; ValueError says what is wrong."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    pem = data.lstrip().startswith(b"-----BEGIN")
    if kind == "certificate":
        cert = x509.load_pem_x509_certificate(data) if pem else \
            x509.load_der_x509_certificate(data)
        return cert.public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(data, None) if pem else \
        serialization.load_der_private_key(data, None)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _credentials(f: Fields) -> dict[str, Any]:
    """certificate, private_key and ca (a path or a list of paths), all or none."""
    names = ("certificate", "private_key", "ca")
    given = [n for n in names if f.get(n)]
    if not given:
        return {}
    if len(given) != 3:
        missing = [n for n in names if n not in given][0]
        f.fail(missing, "a file path: certificate, private_key and ca go together")
    out: dict[str, Any] = {}
    for name, kind in (("certificate", "certificate"), ("private_key", "key")):
        value = f.get(name)
        if not isinstance(value, str):
            f.fail(name, "a file path")
        out[name] = _load(f, name, Path(value), kind)
    cas = f.get("ca")
    cas = [cas] if isinstance(cas, str) else cas
    if not isinstance(cas, list) or not all(isinstance(c, str) for c in cas):
        f.fail("ca", "a file path or a list of them")
    out["ca"] = tuple(_load(f, "ca", Path(c), "certificate") for c in cas)
    return out


def _load(f: Fields, name: str, path: Path, kind: str) -> bytes:
    try:
        return load_der(path, kind)
    except OSError as exc:
        raise ConfigError(f"{f.where}: {f.table}.{name}: cannot read {path}: "
                          f"{exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{f.where}: {f.table}.{name}: {path} is not a PEM or DER "
                          f"{'certificate' if kind == 'certificate' else 'private key'}: "
                          f"{exc}") from None
