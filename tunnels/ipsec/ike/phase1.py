"""Main Mode (RFC 2409 §5, §5.4 pre-shared key, §5.1 signatures) for both roles: one class,
`MainMode`, which is also the ISAKMP SA once established (its keys, IV chain and NAT-T facts
serve the Quick Mode and Informational exchanges in phase2.py).

    Initiator                          Responder
    HDR, SA, VIDs                -->                         (MM1)
                                 <--   HDR, SA, VIDs         (MM2)
    HDR, KE, Ni, NAT-D, NAT-D    -->                         (MM3)
                                 <--   HDR, KE, Nr, NAT-D, NAT-D  (MM4)
    HDR*, IDii, HASH_I           -->                         (MM5, port 4500 behind NAT)
                                 <--   HDR*, IDir, HASH_R    (MM6)

Aggressive Mode (RFC 2409 §5.4's second figure: SA, KE, Ni, IDii --> / <-- SA, KE, Nr, IDir,
HASH_R / HASH_I -->) runs on the same object, off at a responder unless allowed.

The states are named after the last message sent; `_HANDLERS` maps (state, exchange type) to
what the next received message must be. Anything that ends the negotiation raises
`NegotiationFailed` with the Notify the RFC names (NO_PROPOSAL_CHOSEN, INVALID_HASH_INFORMATION,
...); malformed input raises `RemoteProtocolError` and leaves the state untouched, so a stray
datagram cannot kill a negotiation.
"""

from __future__ import annotations

import ipaddress
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from tunnels.errors import RemoteProtocolError
from tunnels.ipsec.ike import certs
from tunnels.ipsec.ike import crypto as c
from tunnels.ipsec.ike import payloads as p
from tunnels.ipsec.ike.config import HASH_IDS, IKEConfig, IKEProposal
from tunnels.ipsec.ike.constants import (
    IKE_PORT,
    KEY_IKE,
    NAT_T_PORT,
    NAT_T_VIDS,
    VID_DPD,
    AuthMethod,
    CertEncoding,
    EncryptionAlgorithm,
    ExchangeType,
    Flags,
    IDType,
    LifeType,
    NotifyType,
    P1Attr,
    ProtocolId,
)

Address = tuple[str, int]
ZERO_COOKIE = b"\x00" * 8
NONCE_BYTES = 32


class NegotiationFailed(RemoteProtocolError):
    """The exchange cannot go on; `wire_answer` is the Notify to send the peer."""

    def __init__(self, message: str, notify: NotifyType):
        super().__init__(message, p.notify_answer(notify))
        self.notify = notify


class MMState(Enum):
    I_START = "initiator-start"
    I_SENT_SA = "mm1-sent"
    I_SENT_KE = "mm3-sent"
    I_SENT_ID = "mm5-sent"
    R_START = "responder-start"
    R_SENT_SA = "mm2-sent"
    R_SENT_KE = "mm4-sent"
    I_SENT_AM1 = "am1-sent"  # Aggressive Mode (RFC 2409 §5.4, second figure)
    R_SENT_AM2 = "am2-sent"
    ESTABLISHED = "established"
    DELETED = "deleted"


# Phase-1 transform attributes <-> names (RFC 2409 Appendix A, RFC 3602 §5.1 Key Length).
_CIPHER_ATTRS = {
    "3des-cbc": (EncryptionAlgorithm.TRIPLE_DES_CBC, None),
    "aes-cbc-128": (EncryptionAlgorithm.AES_CBC, 128),
    "aes-cbc-256": (EncryptionAlgorithm.AES_CBC, 256),
}
_CIPHER_BY_ATTRS = {v: k for k, v in _CIPHER_ATTRS.items()}
_HASH_BY_ID = {v: k for k, v in HASH_IDS.items()}
_AUTH_IDS = {"psk": AuthMethod.PRE_SHARED_KEY, "rsa-sig": AuthMethod.RSA_SIG}
_AUTH_BY_ID = {v: k for k, v in _AUTH_IDS.items()}
_KNOWN_P1_ATTRS = frozenset(P1Attr)


def ike_transform(number: int, proposal: IKEProposal, lifetime: int) -> p.Transform:
    enc, key_length = _CIPHER_ATTRS[proposal.cipher]
    attrs = [p.Attribute(P1Attr.ENCRYPTION_ALGORITHM, enc)]
    if key_length:
        attrs.append(p.Attribute(P1Attr.KEY_LENGTH, key_length))
    attrs += [p.Attribute(P1Attr.HASH_ALGORITHM, HASH_IDS[proposal.hash]),
              p.Attribute(P1Attr.AUTHENTICATION_METHOD, _AUTH_IDS[proposal.auth]),
              p.Attribute(P1Attr.GROUP_DESCRIPTION, proposal.group),
              p.Attribute(P1Attr.LIFE_TYPE, LifeType.SECONDS),
              p.Attribute.long(P1Attr.LIFE_DURATION, lifetime)]
    return p.Transform(number, KEY_IKE, tuple(attrs))


def parse_ike_transform(t: p.Transform) -> tuple[IKEProposal, int | None] | None:
    """(proposal, lifetime in seconds or None), or None for a transform we cannot do: an
    unknown attribute class means we do not know what we would agree to (RFC 2409 §5)."""
    if t.transform_id != KEY_IKE or any(a.type not in _KNOWN_P1_ATTRS for a in t.attributes):
        return None
    a = p.attributes_dict(t.attributes)
    enc = a.get(P1Attr.ENCRYPTION_ALGORITHM)
    key_length = a.get(P1Attr.KEY_LENGTH)
    if enc == EncryptionAlgorithm.AES_CBC and key_length is None:
        key_length = 128  # RFC 3602 §5.1 requires it; racoon omitted it for 128
    cipher = _CIPHER_BY_ATTRS.get((enc, key_length))
    hash_name = _HASH_BY_ID.get(a.get(P1Attr.HASH_ALGORITHM, 0))
    auth = _AUTH_BY_ID.get(a.get(P1Attr.AUTHENTICATION_METHOD, 0))
    group = a.get(P1Attr.GROUP_DESCRIPTION)
    if None in (cipher, hash_name, auth, group) or P1Attr.PRF in a:
        return None
    return (IKEProposal(cipher, hash_name, group, auth),  # type: ignore[arg-type]
            life_value(t.attributes, P1Attr.LIFE_TYPE))


def life_value(attrs: tuple[p.Attribute, ...], life_type_attr: int,
               unit: LifeType = LifeType.SECONDS) -> int | None:
    """Life Type / Life Duration come in pairs, the duration right after its type (RFC 2409
    Appendix A, RFC 2407 §4.5); the duration given for `unit`, or None."""
    value, current = None, None
    for a in attrs:
        if a.type == life_type_attr:
            current = a.value
        elif a.type == life_type_attr + 1 and current == unit:
            value = a.value
    return value


def packed(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


@dataclass(frozen=True, slots=True)
class NATState:
    mode: str | None  # None: no NAT-T; "rfc": RFC 3947; "draft": draft-02/03 numbers
    local_behind_nat: bool = False
    remote_behind_nat: bool = False

    @property
    def detected(self) -> bool:
        return self.local_behind_nat or self.remote_behind_nat


class MainMode:
    """One ISAKMP SA and the Main Mode that makes it."""

    def __init__(self, config: IKEConfig, initiator: bool, local: Address, remote: Address,
                 random: Callable[[int], bytes], floated: bool = False):
        self.config, self.initiator, self.random = config, initiator, random
        self.local, self.remote = local, remote
        self.icookie = random(8) if initiator else ZERO_COOKIE
        self.rcookie = ZERO_COOKIE if initiator else random(8)
        self.state = MMState.I_START if initiator else MMState.R_START
        self.floated = floated  # RFC 3947 §4: MM5 on, or every message of a rekey after one
        self.nat = NATState(None)
        self.peer_dpd = False
        self.proposal: IKEProposal | None = None
        self.lifetime = config.lifetime_phase1
        self.keys: c.Phase1Keys | None = None
        self.cipher: c.IKECipher | None = None
        self.iv = b""  # the running phase-1 IV (Appendix B)
        self.last_phase1_block = b""  # the IV seed of every phase-2 exchange
        self.peer_id = ""
        self.initial_contact = False  # initiator: say INITIAL-CONTACT in MM5
        self.peer_initial_contact = False
        self.nat_without_nat_t = False  # the peer's ID address is not where it sends from
        self.peer_ke_unpadded = False  # its KE left out leading zeros (c.ke_unpadded)
        self._dh: c.DHKeyPair | None = None
        self._sai_b = b""
        self._ni = self._nr = self._gxi = self._gxr = b""
        self._peer_nat_vid: bytes | None = None
        self._am1: p.Message | None = None  # Aggressive Mode: AM1 holds IDii for HASH_I
        self._am1_src: Address = remote

    # -- helpers used by phase2.py and the session ------------------------------------------
    @property
    def hash_name(self) -> str:
        assert self.proposal is not None
        return self.proposal.hash

    def prf(self, key: bytes, data: bytes) -> bytes:
        return c.prf(self.hash_name, key, data)

    def seal(self, exchange: int, message_id: int, payloads: list[object], iv: bytes
             ) -> tuple[bytes, bytes]:
        """An encrypted message and its last cipher block (the next IV of its chain)."""
        assert self.cipher is not None and self.keys is not None
        first, body = p.encode_payloads(payloads)
        ct = self.cipher.encrypt(self.keys.enc_key, iv, body)
        header = p.Header(self.icookie, self.rcookie, first, exchange, Flags.E, message_id)
        return header.encode(len(ct)) + ct, ct[-self.cipher.block_size:]

    def unseal(self, header: p.Header, body: bytes, iv: bytes) -> tuple[p.Message, bytes]:
        """Decrypt and decode; raises before any state changes if it does not parse."""
        if self.cipher is None or self.keys is None:
            raise RemoteProtocolError("encrypted message before the keys exist")
        if not header.flags & Flags.E:
            raise RemoteProtocolError("unencrypted message where RFC 2409 requires E")
        plain = self.cipher.decrypt(self.keys.enc_key, iv, body)
        payloads, raws = p.decode_payloads(header.next_payload, plain)
        return p.Message(header, payloads, raws), body[-self.cipher.block_size:]

    def plain(self, exchange: int, payloads: list[object], message_id: int = 0) -> bytes:
        return p.encode_plain(self.icookie, self.rcookie, exchange, message_id, payloads)

    def nat_d_payload(self, data: bytes) -> object:
        return p.NAT_D(data) if self.nat.mode == "rfc" else p.NAT_D_DRAFT(data)

    # -- the exchange -----------------------------------------------------------------------
    def start(self) -> bytes:
        """MM1: one ISAKMP proposal whose transforms are our list in order of preference."""
        sa, vids = self._offer(self.config.ike_proposals())
        self.state = MMState.I_SENT_SA
        return self.plain(ExchangeType.IDENTITY_PROTECTION, [sa, *vids])

    def _offer(self, offers: list[IKEProposal]) -> tuple[p.SA, list[object]]:
        """One ISAKMP proposal with our transforms in order of preference, and our VIDs."""
        transforms = tuple(ike_transform(i + 1, prop, self.config.lifetime_phase1)
                           for i, prop in enumerate(offers))
        sa = p.SA((p.Proposal(1, ProtocolId.ISAKMP, b"", transforms),))
        self._sai_b = sa.encode_body()
        vids: list[object] = [p.VID(VID_DPD)]
        if self.config.nat_t:
            vids += [p.VID(NAT_T_VIDS[v]) for v in self.config.nat_t_versions]
        return sa, vids

    def handle(self, header: p.Header, body: bytes, src: Address) -> bytes | None:
        """The next Main Mode message: returns our answer (None when none is due)."""
        handler = _HANDLERS.get((self.state, header.exchange))
        if handler is None:
            raise RemoteProtocolError(f"phase-1 exchange {header.exchange} message in state "
                                      f"{self.state.value}")
        return handler(self, header, body, src)

    def _plain_message(self, header: p.Header, body: bytes) -> p.Message:
        if header.flags & Flags.E:
            raise RemoteProtocolError(f"encrypted message in state {self.state.value}")
        payloads, raws = p.decode_payloads(header.next_payload, body)
        return p.Message(header, payloads, raws)

    def _on_mm1(self, header: p.Header, body: bytes, src: Address) -> bytes:
        """Responder: pick the initiator's first transform we accept (RFC 2408 §4.2)."""
        msg = self._plain_message(header, body)
        sa = msg.first(p.SA)
        if sa is None:
            raise NegotiationFailed("Main Mode message 1 without an SA payload",
                                    NotifyType.PAYLOAD_MALFORMED)
        answer = self._accept_offer(msg, sa)
        self.state = MMState.R_SENT_SA
        return self.plain(ExchangeType.IDENTITY_PROTECTION, answer)

    def _accept_offer(self, msg: p.Message, sa: p.SA) -> list[object]:
        """Responder, first message: choose, remember SAi_b, and answer with the chosen
        transform unchanged plus our VIDs (DPD, and the NAT-T version we share)."""
        proposal, transform, lifetime = self._choose(sa)
        self._sai_b = msg.raw_of(p.SA)[4:]
        self._note_vids(msg)
        self.proposal = parse_ike_transform(transform)[0]  # type: ignore[index]
        self.lifetime = min(lifetime or self.config.lifetime_phase1, self.config.lifetime_phase1)
        reply_sa = p.SA((p.Proposal(proposal.number, proposal.protocol_id, proposal.spi,
                                    (transform,)),))
        vids: list[object] = [p.VID(VID_DPD)]
        if self._peer_nat_vid is not None:
            vids.append(p.VID(self._peer_nat_vid))
        return [reply_sa, *vids]

    def _choose(self, sa: p.SA) -> tuple[p.Proposal, p.Transform, int | None]:
        ours = set(self.config.ike_proposals())
        for proposal in sa.proposals:
            if proposal.protocol_id != ProtocolId.ISAKMP:
                continue
            for t in proposal.transforms:
                parsed = parse_ike_transform(t)
                if parsed is not None and parsed[0] in ours:
                    return proposal, t, parsed[1]
        raise NegotiationFailed("none of the initiator's phase-1 transforms is acceptable",
                                NotifyType.NO_PROPOSAL_CHOSEN)

    def _note_vids(self, msg: p.Message) -> None:
        vids = [v.data for v in msg.find(p.VID)]
        self.peer_dpd = VID_DPD in vids
        if not self.config.nat_t:
            return
        # RFC 3947 over the drafts, then the newest draft (NAT_T_VIDS is in that order)
        common = [name for name, vid in NAT_T_VIDS.items()
                  if name in self.config.nat_t_versions and vid in vids]
        if not common:
            self._peer_nat_vid, mode = None, None
        else:
            self._peer_nat_vid = NAT_T_VIDS[common[0]]
            mode = "rfc" if common[0] == "rfc3947" else "draft"
        self.nat = NATState(mode)

    def _on_mm2(self, header: p.Header, body: bytes, src: Address) -> bytes:
        """Initiator: the responder must return exactly one of the transforms we offered."""
        msg = self._plain_message(header, body)
        self._accept_choice(msg, self.config.ike_proposals())
        self._dh = c.DHKeyPair.generate(self.proposal.group, self.random)
        self._ni = self.random(NONCE_BYTES)
        self._gxi = self._dh.public
        payloads: list[object] = [p.KE(self._gxi), p.NONCE(self._ni), *self._cert_request(),
                                  *self._nat_d(self.remote)]
        self.state = MMState.I_SENT_KE
        return self.plain(ExchangeType.IDENTITY_PROTECTION, payloads)

    def _accept_choice(self, msg: p.Message, offered: list[IKEProposal]) -> None:
        """Initiator, first answer: exactly one of the transforms we offered."""
        sa = msg.first(p.SA)
        if sa is None or len(sa.proposals) != 1 or len(sa.proposals[0].transforms) != 1:
            raise NegotiationFailed("the responder's SA must carry one proposal with one "
                                    "transform", NotifyType.BAD_PROPOSAL_SYNTAX)
        parsed = parse_ike_transform(sa.proposals[0].transforms[0])
        if parsed is None or parsed[0] not in offered:
            raise NegotiationFailed("the responder chose a phase-1 transform we did not offer",
                                    NotifyType.NO_PROPOSAL_CHOSEN)
        self.proposal, lifetime = parsed
        self.lifetime = min(lifetime or self.lifetime, self.lifetime)
        self.rcookie = msg.header.rcookie
        self._note_vids(msg)

    def _cert_request(self) -> list[object]:
        """RFC 2408 §3.10: ask for an X.509 signature certificate (any CA) with signatures."""
        assert self.proposal is not None
        return [p.CR(CertEncoding.X509_SIGNATURE, b"")] if self.proposal.auth == "rsa-sig" \
            else []

    def _nat_d(self, peer_as_seen: Address) -> list[object]:
        """RFC 3947 §3.2: first the hash of the other end's address and port as we see (or
        send to) it, then ours."""
        if self.nat.mode is None:
            return []
        h = self.hash_name
        return [self.nat_d_payload(c.nat_d_hash(h, self.icookie, self.rcookie,
                                                packed(a), port))
                for a, port in (peer_as_seen, self.local)]

    def _check_nat_d(self, msg: p.Message, src: Address) -> None:
        """RFC 3947 §3.2: the first hash names us as the peer saw us; the others the peer."""
        if self.nat.mode is None:
            return
        hashes = [x.data for x in msg.payloads if isinstance(x, p.NAT_D | p.NAT_D_DRAFT)]
        if not hashes:
            self.nat = NATState(None)  # a peer that says NAT-T but sends no NAT-D: no NAT-T
            return

        def h(addr: Address) -> bytes:
            return c.nat_d_hash(self.hash_name, self.icookie, self.rcookie, packed(addr[0]),
                                addr[1])
        local_nat = hashes[0] != h(self.local)
        remote_nat = h(src) not in hashes[1:]
        self.nat = NATState(self.nat.mode, local_nat, remote_nat)

    def _ke_nonce(self, msg: p.Message) -> tuple[bytes, bytes]:
        ke, nonce = msg.first(p.KE), msg.first(p.NONCE)
        if ke is None or nonce is None:
            raise NegotiationFailed("Main Mode key exchange without KE or Nonce",
                                    NotifyType.PAYLOAD_MALFORMED)
        assert self.proposal is not None
        size = c.group_size(self.proposal.group)
        if not ke.data or len(ke.data) > size:
            raise NegotiationFailed(f"KE of {len(ke.data)} bytes for group "
                                    f"{self.proposal.group} (expected {size})",
                                    NotifyType.INVALID_KEY_INFORMATION)
        # Kept as sent: the HASHes and the IV are over the KE data on the wire.
        self.peer_ke_unpadded = c.ke_unpadded(self.proposal.group, ke.data)
        return ke.data, nonce.data

    def _on_mm3(self, header: p.Header, body: bytes, src: Address) -> bytes:
        msg = self._plain_message(header, body)
        self._gxi, self._ni = self._ke_nonce(msg)
        assert self.proposal is not None
        self._dh = c.DHKeyPair.generate(self.proposal.group, self.random)
        self._gxr, self._nr = self._dh.public, self.random(NONCE_BYTES)
        self._derive(self._gxi)
        self._check_nat_d(msg, src)
        payloads = [p.KE(self._gxr), p.NONCE(self._nr), *self._cert_request(),
                    *self._nat_d(src)]
        self.state = MMState.R_SENT_KE
        if self.nat.detected:  # MM4 still leaves from 500; the initiator floats for MM5
            self.floated = True
            self.local = (self.local[0], NAT_T_PORT)
        return self.plain(ExchangeType.IDENTITY_PROTECTION, payloads)

    def _on_mm4(self, header: p.Header, body: bytes, src: Address) -> bytes:
        msg = self._plain_message(header, body)
        self._gxr, self._nr = self._ke_nonce(msg)
        self._derive(self._gxr)
        self._check_nat_d(msg, src)
        if self.nat.detected:
            self.floated = True
            self.remote = (self.remote[0], NAT_T_PORT)
            self.local = (self.local[0], NAT_T_PORT)
        payloads = self._identity(self._hash_i)
        if self.initial_contact:  # RFC 2407 §4.6.3.3, as Windows sends it in MM5
            payloads.append(p.N(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP,
                                self.icookie + self.rcookie))
        datagram, self.iv = self.seal(ExchangeType.IDENTITY_PROTECTION, 0, payloads, self.iv)
        self.state = MMState.I_SENT_ID
        return datagram

    def _identity(self, auth_hash: Callable[[bytes], bytes]) -> list[object]:
        """MM5/MM6 payloads: IDii, HASH_I (pre-shared key, RFC 2409 §5.4) or IDii, CERT,
        SIG_I (signatures, §5.1); the ID names the certificate's subject with signatures."""
        assert self.proposal is not None
        if self.proposal.auth == "psk":
            id_ = self._id_payload()
            return [id_, p.HASH(auth_hash(id_.encode_body()))]
        creds = self._credentials()
        id_ = p.ID(IDType.ID_DER_ASN1_DN, creds.subject_der(), 17, IKE_PORT)
        return [id_, p.CERT(CertEncoding.X509_SIGNATURE, creds.certificate),
                p.SIG(creds.sign(auth_hash(id_.encode_body())))]

    def _credentials(self) -> certs.Credentials:
        assert self.config.certificate is not None and self.config.private_key is not None
        return certs.Credentials(self.config.certificate, self.config.private_key)

    def _derive(self, peer_public: bytes) -> None:
        assert self._dh is not None and self.proposal is not None
        try:
            gxy = self._dh.shared_secret(peer_public)
        except RemoteProtocolError as exc:
            raise NegotiationFailed(str(exc), NotifyType.INVALID_KEY_INFORMATION) from exc
        h = self.proposal.hash
        skeyid = (c.skeyid_psk(h, self.config.psk, self._ni, self._nr)
                  if self.proposal.auth == "psk" else c.skeyid_sig(h, self._ni, self._nr, gxy))
        self.cipher = c.IKE_CIPHERS[self.proposal.cipher]
        self.keys = c.derive_phase1(h, skeyid, gxy, self.icookie, self.rcookie,
                                    self.cipher.key_length)
        self.iv = c.phase1_iv(h, self._gxi, self._gxr, self.cipher.block_size)

    def _id_payload(self) -> p.ID:
        """RFC 2407 §4.6.2: in phase 1 the protocol and port are 0 or UDP 500."""
        return p.ID(IDType.ID_IPV4_ADDR, packed(self.local[0]), 17, IKE_PORT)

    def _hash_i(self, idii_b: bytes) -> bytes:
        assert self.keys is not None
        return c.hash_i(self.hash_name, self.keys.skeyid, self._gxi, self._gxr, self.icookie,
                        self.rcookie, self._sai_b, idii_b)

    def _hash_r(self, idir_b: bytes) -> bytes:
        assert self.keys is not None
        return c.hash_r(self.hash_name, self.keys.skeyid, self._gxi, self._gxr, self.icookie,
                        self.rcookie, self._sai_b, idir_b)

    def _verify_identity(self, header: p.Header, body: bytes, expected: Callable[[bytes], bytes],
                         who: str, src: Address) -> bytes:
        """Decrypt MM5/MM6 and check HASH_I/HASH_R or SIG_I/SIG_R. With different pre-shared
        keys the decrypted bytes are noise: that is reported as the hash failure it is."""
        try:
            msg, last_block = self.unseal(header, body, self.iv)
        except RemoteProtocolError as exc:
            raise NegotiationFailed(f"{who}'s identity message does not decrypt to payloads "
                                    f"({exc}): the pre-shared keys differ?",
                                    NotifyType.INVALID_HASH_INFORMATION) from exc
        self._check_identity(msg, msg, expected, who, src)
        return last_block

    def _check_identity(self, auth_msg: p.Message, id_msg: p.Message,
                        expected: Callable[[bytes], bytes], who: str, src: Address) -> None:
        """HASH_I/HASH_R (or SIG_I/SIG_R) in `auth_msg` over the ID payload of `id_msg` (the
        same message in Main Mode; Aggressive Mode sends IDii in message 1, HASH_I in 3)."""
        id_ = id_msg.first(p.ID)
        if id_ is None:
            raise NegotiationFailed(f"{who}'s identity message without ID: the pre-shared "
                                    "keys differ?", NotifyType.INVALID_HASH_INFORMATION)
        digest = expected(id_msg.raw_of(p.ID)[4:])
        if self.proposal is not None and self.proposal.auth == "rsa-sig":
            self.peer_id = self._verify_signature(auth_msg, id_, digest, who)
        else:
            auth = auth_msg.first(p.HASH)
            if auth is None or not hmac.compare_digest(auth.data, digest):
                raise NegotiationFailed(f"{who}'s HASH does not verify: the pre-shared keys "
                                        "differ", NotifyType.INVALID_HASH_INFORMATION)
            self.peer_id = _id_text(id_)
        if (id_.protocol, id_.port) not in ((0, 0), (17, 0), (17, IKE_PORT), (17, NAT_T_PORT)):
            raise NegotiationFailed(f"{who}'s phase-1 ID has protocol {id_.protocol} port "
                                    f"{id_.port} (RFC 2407 §4.6.2: 0/0 or UDP 500)",
                                    NotifyType.INVALID_ID_INFORMATION)
        self.peer_initial_contact = any(n.notify_type == NotifyType.INITIAL_CONTACT
                                        for m in (auth_msg, id_msg) for n in m.find(p.N))
        if (self.nat.mode is None and id_.id_type == IDType.ID_IPV4_ADDR
                and id_.data != packed(src[0])):
            # Without NAT-T nothing detects a NAT, but an address ID that is not the source
            # address says one rewrote it: ESP (IP protocol 50) will not get through it.
            self.nat_without_nat_t = True

    def _verify_signature(self, msg: p.Message, id_: p.ID, digest: bytes, who: str) -> str:
        cert, sig = msg.first(p.CERT), msg.first(p.SIG)
        if cert is None or sig is None or cert.encoding != CertEncoding.X509_SIGNATURE:
            raise NegotiationFailed(f"{who} sent no X.509 certificate and signature",
                                    NotifyType.CERTIFICATE_UNAVAILABLE)
        id_der = id_.data if id_.id_type == IDType.ID_DER_ASN1_DN else None
        try:
            return certs.verify(cert.data, id_der, digest, sig.data,
                                self.config.trusted_certificates)
        except certs.CertificateError as exc:
            raise NegotiationFailed(f"{who}'s certificate authentication failed: {exc}",
                                    exc.notify) from exc

    def _on_mm5(self, header: p.Header, body: bytes, src: Address) -> bytes:
        self.iv = self._verify_identity(header, body, self._hash_i, "initiator", src)
        datagram, self.iv = self.seal(ExchangeType.IDENTITY_PROTECTION, 0,
                                      self._identity(self._hash_r), self.iv)
        self.last_phase1_block = self.iv
        self.state = MMState.ESTABLISHED
        return datagram

    def _on_mm6(self, header: p.Header, body: bytes, src: Address) -> None:
        self.iv = self.last_phase1_block = self._verify_identity(header, body, self._hash_r,
                                                                 "responder", src)
        self.state = MMState.ESTABLISHED
        return None

    # -- Aggressive Mode (RFC 2409 §5.4, second figure) --------------------------------------
    # Three messages carry what Main Mode's six do; the identities go in the clear and a
    # passive listener can test guesses of the pre-shared key offline against HASH_R (that is
    # what ike-scan's psk-crack does), so a responder accepts it only with allow_aggressive.
    def start_aggressive(self) -> bytes:
        """AM1: SA, KE, Ni, IDii. KE is already in it, so every transform names the same
        group: the first of dh_groups."""
        sa, vids = self._offer(self._aggressive_offers())
        self._dh = c.DHKeyPair.generate(self.config.dh_groups[0], self.random)
        self._gxi, self._ni = self._dh.public, self.random(NONCE_BYTES)
        self.state = MMState.I_SENT_AM1
        return self.plain(ExchangeType.AGGRESSIVE, [sa, p.KE(self._gxi), p.NONCE(self._ni),
                                                    self._aggressive_id(), *vids])

    def _aggressive_offers(self) -> list[IKEProposal]:
        return [x for x in self.config.ike_proposals() if x.group == self.config.dh_groups[0]]

    def _aggressive_id(self) -> p.ID:
        if self.config.auth == "rsa-sig":
            return p.ID(IDType.ID_DER_ASN1_DN, self._credentials().subject_der(), 17, IKE_PORT)
        return self._id_payload()

    def _on_am1(self, header: p.Header, body: bytes, src: Address) -> bytes:
        if not self.config.allow_aggressive:
            raise NegotiationFailed("Aggressive Mode refused (allow_aggressive is off: it "
                                    "exposes the pre-shared key to offline guessing)",
                                    NotifyType.INVALID_EXCHANGE_TYPE)
        msg = self._plain_message(header, body)
        sa = msg.first(p.SA)
        if sa is None or msg.first(p.ID) is None:
            raise NegotiationFailed("Aggressive Mode message 1 without SA or ID",
                                    NotifyType.PAYLOAD_MALFORMED)
        reply_sa, *vids = self._accept_offer(msg, sa)
        self._am1, self._am1_src = msg, src
        self._gxi, self._ni = self._ke_nonce(msg)
        assert self.proposal is not None
        self._dh = c.DHKeyPair.generate(self.proposal.group, self.random)
        self._gxr, self._nr = self._dh.public, self.random(NONCE_BYTES)
        self._derive(self._gxi)
        self.state = MMState.R_SENT_AM2
        return self.plain(ExchangeType.AGGRESSIVE, [
            reply_sa, p.KE(self._gxr), p.NONCE(self._nr), *self._identity(self._hash_r),
            *vids, *self._nat_d(src)])

    def _on_am2(self, header: p.Header, body: bytes, src: Address) -> bytes:
        """Initiator: check the choice and HASH_R, answer HASH_I (encrypted, as racoon and
        Cisco send it; RFC 2409 leaves AM3's encryption optional) with NAT-D (RFC 3947)."""
        msg = self._plain_message(header, body)
        self._accept_choice(msg, self._aggressive_offers())
        self._gxr, self._nr = self._ke_nonce(msg)
        self._derive(self._gxr)
        self._check_identity(msg, msg, self._hash_r, "responder", src)
        self._check_nat_d(msg, src)
        nat_d = self._nat_d(self.remote)  # the addresses of AM1/AM2, before any float
        if self.nat.detected:
            self.floated = True
            self.remote, self.local = (self.remote[0], NAT_T_PORT), (self.local[0], NAT_T_PORT)
        am3 = [x for x in self._identity(self._hash_i) if not isinstance(x, p.ID)]
        datagram, self.iv = self.seal(ExchangeType.AGGRESSIVE, 0, [*am3, *nat_d], self.iv)
        self.last_phase1_block = self.iv
        self.state = MMState.ESTABLISHED
        return datagram

    def _on_am3(self, header: p.Header, body: bytes, src: Address) -> None:
        if header.flags & Flags.E:
            try:
                msg, last_block = self.unseal(header, body, self.iv)
            except RemoteProtocolError as exc:
                raise NegotiationFailed(f"initiator's AM3 does not decrypt ({exc}): the "
                                        "pre-shared keys differ?",
                                        NotifyType.INVALID_HASH_INFORMATION) from exc
        else:
            msg, last_block = self._plain_message(header, body), self.iv
        self._check_identity(msg, self._am1, self._hash_i, "initiator", self._am1_src)
        self._check_nat_d(msg, self._am1_src)
        if self.nat.detected:
            self.floated = True
            self.local = (self.local[0], NAT_T_PORT)
        self.iv = self.last_phase1_block = last_block
        self.state = MMState.ESTABLISHED
        return None

    # -- facts for tests and status ---------------------------------------------------------
    @property
    def nonces(self) -> tuple[bytes, bytes]:
        return self._ni, self._nr


def _id_text(id_: p.ID) -> str:
    if id_.id_type == IDType.ID_IPV4_ADDR and len(id_.data) == 4:
        return str(ipaddress.IPv4Address(id_.data))
    if id_.id_type in (IDType.ID_FQDN, IDType.ID_USER_FQDN):
        return id_.data.decode("ascii", "replace")
    return id_.data.hex()


_Handler = Callable[[MainMode, p.Header, bytes, Address], bytes | None]
S, MM, AM = MMState, ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE
_HANDLERS: dict[tuple[MMState, int], _Handler] = {
    (S.R_START, MM): MainMode._on_mm1,  # RFC 2409 §5.4: HDR, SA -->
    (S.I_SENT_SA, MM): MainMode._on_mm2,  # <-- HDR, SA
    (S.R_SENT_SA, MM): MainMode._on_mm3,  # HDR, KE, Ni --> (RFC 3947 §3: NAT-D, NAT-D)
    (S.I_SENT_KE, MM): MainMode._on_mm4,  # <-- HDR, KE, Nr
    (S.R_SENT_KE, MM): MainMode._on_mm5,  # HDR*, IDii, HASH_I -->
    (S.I_SENT_ID, MM): MainMode._on_mm6,  # <-- HDR*, IDir, HASH_R
    (S.R_START, AM): MainMode._on_am1,  # HDR, SA, KE, Ni, IDii -->
    (S.I_SENT_AM1, AM): MainMode._on_am2,  # <-- HDR, SA, KE, Nr, IDir, HASH_R
    (S.R_SENT_AM2, AM): MainMode._on_am3,  # HDR[*], HASH_I -->
}
