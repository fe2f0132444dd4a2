"""Quick Mode (RFC 2409 §5.5) for the one SA L2TP/IPsec needs, and Informational exchanges
(RFC 2409 §5.7), both protected by an established ISAKMP SA (`MainMode`).

    Initiator                                    Responder
    HDR*, HASH(1), SA, Ni [, KE], IDci, IDcr  -->
                                              <-- HDR*, HASH(2), SA, Nr [, KE], IDci, IDcr
    HDR*, HASH(3)                             -->

The SA is ESP in transport mode (RFC 2407 §4.5 Encapsulation Mode 2), or UDP-encapsulated
transport when phase 1 found a NAT (RFC 3947 §5.1: 4; draft-ietf-ipsec-nat-t-ike: 61444),
protecting UDP port 1701 between the two addresses (IDci/IDcr: ID_IPV4_ADDR, protocol 17,
port 1701). Each Quick Mode has its own IV chain seeded from the last phase-1 block and its
Message ID (Appendix B).
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from tunnels.errors import RemoteProtocolError
from tunnels.ipsec.ike import crypto as c
from tunnels.ipsec.ike import payloads as p
from tunnels.ipsec.ike.config import (
    ESP_CIPHER_IDS,
    ESP_KEY_BYTES,
    INTEGRITY_IDS,
    INTEGRITY_KEY_BYTES,
    ESPProposal,
    IKEConfig,
)
from tunnels.ipsec.ike.constants import (
    EncapsulationMode,
    ExchangeType,
    IDType,
    IPsecAttr,
    LifeType,
    NotifyType,
    ProtocolId,
)
from tunnels.ipsec.ike.events import ChildSAEstablished
from tunnels.ipsec.ike.phase1 import MainMode, NegotiationFailed, life_value, packed

_ESP_BY_IDS = {v: k for k, v in ESP_CIPHER_IDS.items()}
_INTEGRITY_BY_ID = {v: k for k, v in INTEGRITY_IDS.items()}
_KNOWN_IPSEC_ATTRS = frozenset(IPsecAttr)
UDP = 17


class QMState(Enum):
    I_SENT_1 = "qm1-sent"
    R_SENT_2 = "qm2-sent"
    I_DONE = "qm3-sent"
    R_DONE = "done"


def expected_encapsulation(sa: MainMode) -> int:
    if not sa.nat.detected:
        return EncapsulationMode.TRANSPORT
    if sa.nat.mode == "rfc":
        return EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT
    return EncapsulationMode.UDP_TRANSPORT_DRAFT


@dataclass(frozen=True, slots=True)
class ESPOffer:
    proposal: ESPProposal
    encapsulation: int
    lifetime: int | None
    lifetime_kb: int | None
    group: int | None


def esp_transform(number: int, offer: ESPOffer) -> p.Transform:
    tid, key_length = ESP_CIPHER_IDS[offer.proposal.cipher]
    attrs = [p.Attribute(IPsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
             p.Attribute.long(IPsecAttr.SA_LIFE_DURATION, offer.lifetime or 3600)]
    if offer.lifetime_kb:
        attrs += [p.Attribute(IPsecAttr.SA_LIFE_TYPE, LifeType.KILOBYTES),
                  p.Attribute.long(IPsecAttr.SA_LIFE_DURATION, offer.lifetime_kb)]
    if offer.group:
        attrs.append(p.Attribute(IPsecAttr.GROUP_DESCRIPTION, offer.group))
    attrs += [p.Attribute(IPsecAttr.ENCAPSULATION_MODE, offer.encapsulation),
              p.Attribute(IPsecAttr.AUTHENTICATION_ALGORITHM,
                          INTEGRITY_IDS[offer.proposal.integrity])]
    if key_length:
        attrs.append(p.Attribute(IPsecAttr.KEY_LENGTH, key_length))
    return p.Transform(number, tid, tuple(attrs))


def parse_esp_transform(t: p.Transform) -> ESPOffer | None:
    if any(a.type not in _KNOWN_IPSEC_ATTRS for a in t.attributes):
        return None
    a = p.attributes_dict(t.attributes)
    key_length = a.get(IPsecAttr.KEY_LENGTH)
    cipher = _ESP_BY_IDS.get((t.transform_id, key_length))
    integrity = _INTEGRITY_BY_ID.get(a.get(IPsecAttr.AUTHENTICATION_ALGORITHM, 0))
    if cipher is None or integrity is None or IPsecAttr.KEY_ROUNDS in a:
        return None
    return ESPOffer(ESPProposal(cipher, integrity),
                    a.get(IPsecAttr.ENCAPSULATION_MODE, EncapsulationMode.TUNNEL),
                    life_value(t.attributes, IPsecAttr.SA_LIFE_TYPE),
                    life_value(t.attributes, IPsecAttr.SA_LIFE_TYPE, LifeType.KILOBYTES),
                    a.get(IPsecAttr.GROUP_DESCRIPTION))


def _spi_bytes(spi: int) -> bytes:
    return spi.to_bytes(4, "big")


def _answers_our_ids(returned: list[p.ID], ours: list[object], nat: bool) -> bool:
    """The responder's IDci/IDcr name what we asked for. Through a NAT in transport mode the
    responder may name the translated address instead of ours (strongSwan answers with the
    NAT's outside address in IDci; RFC 3947 §5.2: NAT-OA carries the originals), so there
    only the ID types, protocol and ports must be ours."""
    if not nat:
        return returned == ours
    return len(returned) == len(ours) and all(
        (a.id_type, a.protocol, a.port) == (b.id_type, b.protocol, b.port)  # type: ignore[attr-defined]
        for a, b in zip(returned, ours, strict=True))


class QuickMode:
    """One Quick Mode exchange, initiator or responder; `result` once keys exist."""

    def __init__(self, sa: MainMode, config: IKEConfig, initiator: bool, message_id: int,
                 new_spi: Callable[[], int], random: Callable[[int], bytes]):
        self.sa, self.config, self.initiator = sa, config, initiator
        self.message_id, self.random = message_id, random
        self._new_spi = new_spi  # called once the exchange is authenticated: no SPI spent
        self.spi_in = 0  # on forged or garbled requests
        self.spi_out = 0
        self.state = QMState.I_SENT_1 if initiator else QMState.R_SENT_2
        self.iv = c.phase2_iv(sa.hash_name, sa.last_phase1_block, message_id,
                              sa.cipher.block_size)  # type: ignore[union-attr]
        self.result: ChildSAEstablished | None = None
        self._ni = self._nr = b""
        self._dh: c.DHKeyPair | None = None
        self._gqm = b""
        self.peer_ke_unpadded = False  # its PFS KE left out leading zeros (c.ke_unpadded)
        self._offer: ESPOffer | None = None
        self._lifetime = config.lifetime_phase2

    # -- initiator ----------------------------------------------------------------------
    def start(self) -> bytes:
        cfg, encap = self.config, expected_encapsulation(self.sa)
        transforms = tuple(
            esp_transform(i + 1, ESPOffer(prop, encap, cfg.lifetime_phase2,
                                          cfg.lifetime_phase2_kb, cfg.pfs_group))
            for i, prop in enumerate(cfg.esp_proposals()))
        self.spi_in = self._new_spi()
        sa = p.SA((p.Proposal(1, ProtocolId.IPSEC_ESP, _spi_bytes(self.spi_in), transforms),))
        self._ni = self.random(32)
        body: list[object] = [sa, p.NONCE(self._ni)]
        if cfg.pfs_group:
            self._dh = c.DHKeyPair.generate(cfg.pfs_group, self.random)
            body.append(p.KE(self._dh.public))
        body += [*self._ids(), *self._nat_oa()]
        return self._send(self._with_hash(lambda rest: self._mid() + rest, body))

    def _ids(self) -> list[object]:
        """IDci / IDcr: each end's own address, UDP port 1701 (the initiator's view)."""
        port = self.config.l2tp_port
        local, remote = (self.sa.local[0], self.sa.remote[0])
        if not self.initiator:
            local, remote = remote, local
        return [p.ID(IDType.ID_IPV4_ADDR, packed(local), UDP, port),
                p.ID(IDType.ID_IPV4_ADDR, packed(remote), UDP, port)]

    def _nat_oa(self) -> list[object]:
        """RFC 3947 §5.2: in transport mode each end sends the original addresses (the
        initiator's first), so the peer can fix the inner UDP checksum."""
        if not self.sa.nat.detected:
            return []
        cls = p.NAT_OA if self.sa.nat.mode == "rfc" else p.NAT_OA_DRAFT
        i, r = (self.sa.local[0], self.sa.remote[0])
        if not self.initiator:
            i, r = r, i
        return [cls(IDType.ID_IPV4_ADDR, packed(i)), cls(IDType.ID_IPV4_ADDR, packed(r))]

    def _mid(self) -> bytes:
        return self.message_id.to_bytes(4, "big")

    def _with_hash(self, covered: Callable[[bytes], bytes], body: list[object]) -> list[object]:
        """HASH(n) first (RFC 2409 §5.5: it MUST follow the header), computed over what
        `covered` makes of the bytes of the payloads after it."""
        _, rest = p.encode_payloads(body)
        assert self.sa.keys is not None
        return [p.HASH(self.sa.prf(self.sa.keys.skeyid_a, covered(rest))), *body]

    def _send(self, payloads: list[object]) -> bytes:
        datagram, self.iv = self.sa.seal(ExchangeType.QUICK_MODE, self.message_id, payloads,
                                         self.iv)
        return datagram

    def _open(self, header: p.Header, body: bytes, covered: Callable[[bytes], bytes]
              ) -> tuple[p.Message, bytes]:
        msg, last_block = self.sa.unseal(header, body, self.iv)
        if not msg.payloads or not isinstance(msg.payloads[0], p.HASH):
            raise RemoteProtocolError("Quick Mode message does not start with HASH "
                                      "(RFC 2409 §5.5)")
        assert self.sa.keys is not None
        want = self.sa.prf(self.sa.keys.skeyid_a, covered(b"".join(msg.raws[1:])))
        if not hmac.compare_digest(msg.payloads[0].data, want):
            # RFC 2409 §5.5 / RFC 2408 §5.4: an unauthenticated message is dropped, not
            # answered: anyone could have sent it.
            raise RemoteProtocolError("Quick Mode HASH does not verify")
        return msg, last_block

    def handle(self, header: p.Header, body: bytes) -> bytes | None:
        handler = _HANDLERS.get(self.state)
        if handler is None:
            raise RemoteProtocolError(f"Quick Mode message in state {self.state.value}")
        return handler(self, header, body)

    def _on_qm2(self, header: p.Header, body: bytes) -> bytes:
        msg, last_block = self._open(header, body, lambda rest: self._mid() + self._ni + rest)
        sa, nonce = msg.first(p.SA), msg.first(p.NONCE)
        if sa is None or nonce is None or len(sa.proposals) != 1 \
                or len(sa.proposals[0].transforms) != 1:
            raise NegotiationFailed("Quick Mode message 2 must carry one proposal, one "
                                    "transform and a nonce", NotifyType.BAD_PROPOSAL_SYNTAX)
        proposal = sa.proposals[0]
        offer = parse_esp_transform(proposal.transforms[0])
        if (proposal.protocol_id != ProtocolId.IPSEC_ESP or len(proposal.spi) != 4 or offer
                is None or offer.proposal not in self.config.esp_proposals()
                or offer.encapsulation != expected_encapsulation(self.sa)
                or offer.group != self.config.pfs_group):
            raise NegotiationFailed("the responder chose an ESP transform we did not offer",
                                    NotifyType.NO_PROPOSAL_CHOSEN)
        returned = msg.find(p.ID)
        if returned and not _answers_our_ids(returned, self._ids(), self.sa.nat.detected):
            # RFC 2409 §5.5: the responder answers for the identities asked; other selectors
            # would protect something other than L2TP between these two addresses.
            raise NegotiationFailed("the responder returned other Quick Mode IDs than ours",
                                    NotifyType.INVALID_ID_INFORMATION)
        self._pfs(msg, offer)
        self.iv = last_block
        self._nr, self.spi_out, self._offer = nonce.data, int.from_bytes(proposal.spi, "big"), offer
        self._lifetime = min(offer.lifetime or self._lifetime, self._lifetime,
                             self._responder_lifetime(msg) or self._lifetime)
        datagram = self._send([p.HASH(self.sa.prf(
            self.sa.keys.skeyid_a,  # type: ignore[union-attr]
            b"\x00" + self._mid() + self._ni + self._nr))])
        self.state = QMState.I_DONE
        self._establish()
        return datagram

    def _responder_lifetime(self, msg: p.Message) -> int | None:
        """RFC 2407 §4.6.3.1: the responder may lower the lifetime with RESPONDER-LIFETIME."""
        for n in msg.find(p.N):
            if n.notify_type == NotifyType.RESPONDER_LIFETIME:
                try:
                    attrs = p.decode_attributes(n.data)
                except RemoteProtocolError:
                    return None
                return life_value(attrs, IPsecAttr.SA_LIFE_TYPE)
        return None

    def _pfs(self, msg: p.Message, offer: ESPOffer) -> None:
        """RFC 2409 §5.5: with PFS both ends send KE in the group the SA names."""
        ke = msg.first(p.KE)
        if offer.group is None:
            if ke is not None or (self.initiator and self.config.pfs_group):
                raise NegotiationFailed("PFS offered on one side only",
                                        NotifyType.NO_PROPOSAL_CHOSEN)
            return
        if ke is None:
            raise NegotiationFailed("PFS group without a KE payload",
                                    NotifyType.INVALID_KEY_INFORMATION)
        if self._dh is None:
            self._dh = c.DHKeyPair.generate(offer.group, self.random)
        try:
            self._gqm = self._dh.shared_secret(ke.data)
            self.peer_ke_unpadded = c.ke_unpadded(offer.group, ke.data)
        except RemoteProtocolError as exc:
            raise NegotiationFailed(str(exc), NotifyType.INVALID_KEY_INFORMATION) from exc

    # -- responder ----------------------------------------------------------------------
    def respond(self, header: p.Header, body: bytes) -> bytes:
        """QM1 -> QM2. Raises NegotiationFailed with NO_PROPOSAL_CHOSEN or
        INVALID_ID_INFORMATION for what we will not do."""
        msg, last_block = self._open(header, body, lambda rest: self._mid() + rest)
        sa, nonce = msg.first(p.SA), msg.first(p.NONCE)
        if sa is None or nonce is None:
            raise NegotiationFailed("Quick Mode message 1 without SA or nonce",
                                    NotifyType.PAYLOAD_MALFORMED)
        ids = msg.find(p.ID)
        self._check_ids(ids)
        proposal, transform, offer = self._choose(sa)
        if self.config.pfs_group and offer.group != self.config.pfs_group:
            raise NegotiationFailed(f"PFS group {self.config.pfs_group} required, offer has "
                                    f"{offer.group}", NotifyType.NO_PROPOSAL_CHOSEN)
        self._pfs(msg, offer)
        self.iv = last_block
        self._ni, self._nr = nonce.data, self.random(32)
        self.spi_out, self._offer = int.from_bytes(proposal.spi, "big"), offer
        self._lifetime = min(offer.lifetime or self._lifetime, self._lifetime)
        self.spi_in = self._new_spi()
        reply_sa = p.SA((p.Proposal(proposal.number, ProtocolId.IPSEC_ESP,
                                    _spi_bytes(self.spi_in), (transform,)),))
        body_out: list[object] = [reply_sa, p.NONCE(self._nr)]
        if self._dh is not None and offer.group:
            body_out.append(p.KE(self._dh.public))
        body_out += list(ids) + self._nat_oa()
        if offer.lifetime and offer.lifetime > self._lifetime:
            attrs = p.Writer()
            p.Attribute(IPsecAttr.SA_LIFE_TYPE, LifeType.SECONDS).encode(attrs)
            p.Attribute.long(IPsecAttr.SA_LIFE_DURATION, self._lifetime).encode(attrs)
            body_out.append(p.N(NotifyType.RESPONDER_LIFETIME, ProtocolId.IPSEC_ESP,
                                proposal.spi, attrs.getvalue()))
        return self._send(self._with_hash(lambda rest: self._mid() + self._ni + rest, body_out))

    def _check_ids(self, ids: list[p.ID]) -> None:
        """The client IDs must describe UDP 1701 (port 0 = any is accepted, as Windows sends
        for the server side in some policies) between IPv4 addresses."""
        if not ids:
            return  # RFC 2409 §5.5: absent IDs mean the phase-1 addresses
        if len(ids) != 2:
            raise NegotiationFailed(f"{len(ids)} ID payloads in Quick Mode (0 or 2)",
                                    NotifyType.INVALID_ID_INFORMATION)
        for id_ in ids:
            if (id_.id_type != IDType.ID_IPV4_ADDR or id_.protocol != UDP
                    or id_.port not in (self.config.l2tp_port, 0)):
                raise NegotiationFailed(
                    f"Quick Mode ID type {id_.id_type} protocol {id_.protocol} port "
                    f"{id_.port}: we protect UDP {self.config.l2tp_port} between two IPv4 "
                    "addresses only", NotifyType.INVALID_ID_INFORMATION)

    def _choose(self, sa: p.SA) -> tuple[p.Proposal, p.Transform, ESPOffer]:
        ours = set(self.config.esp_proposals())
        encap = expected_encapsulation(self.sa)
        numbers = Counter(proposal.number for proposal in sa.proposals)
        for proposal in sa.proposals:
            if proposal.protocol_id != ProtocolId.IPSEC_ESP or len(proposal.spi) != 4:
                continue
            if numbers[proposal.number] > 1:
                continue  # RFC 2408 §4.2: same number = an AND bundle (AH+ESP); not half of it
            for t in proposal.transforms:
                offer = parse_esp_transform(t)
                if (offer is not None and offer.proposal in ours
                        and offer.encapsulation == encap
                        and offer.group in (None, *self.config.dh_groups)):
                    return proposal, t, offer
        raise NegotiationFailed("none of the initiator's ESP transforms is acceptable "
                                f"(we need {EncapsulationMode(encap).name})",
                                NotifyType.NO_PROPOSAL_CHOSEN)

    def _on_qm3(self, header: p.Header, body: bytes) -> None:
        _, self.iv = self._open(header, body,
                                lambda rest: b"\x00" + self._mid() + self._ni + self._nr)
        self.state = QMState.R_DONE
        self._establish()
        return None

    # -- keys ---------------------------------------------------------------------------
    def _establish(self) -> None:
        assert self._offer is not None and self.sa.keys is not None
        cipher, integrity = self._offer.proposal.cipher, self._offer.proposal.integrity
        enc_len, auth_len = ESP_KEY_BYTES[cipher], INTEGRITY_KEY_BYTES[integrity]

        def km(spi: int) -> bytes:
            return c.keymat(self.sa.hash_name, self.sa.keys.skeyid_d,  # type: ignore[union-attr]
                            ProtocolId.IPSEC_ESP, _spi_bytes(spi), self._ni, self._nr,
                            enc_len + auth_len, self._gqm)
        k_in, k_out = km(self.spi_in), km(self.spi_out)
        udp = self.sa.nat.detected
        self.result = ChildSAEstablished(
            self.spi_in, self.spi_out, cipher, k_in[:enc_len], k_out[:enc_len], integrity,
            k_in[enc_len:], k_out[enc_len:], self._lifetime,
            self._offer.lifetime_kb * 1024 if self._offer.lifetime_kb else None,
            "udp-transport" if udp else "transport",
            self.sa.local, self.sa.remote)


# -- Informational (RFC 2409 §5.7) ----------------------------------------------------------
def build_informational(sa: MainMode, message_id: int, payloads: list[object]) -> bytes:
    """HDR*, HASH(1), N/D with HASH(1) = prf(SKEYID_a, M-ID | N/D)."""
    assert sa.keys is not None and sa.cipher is not None
    _, rest = p.encode_payloads(payloads)
    digest = sa.prf(sa.keys.skeyid_a, message_id.to_bytes(4, "big") + rest)
    iv = c.phase2_iv(sa.hash_name, sa.last_phase1_block, message_id, sa.cipher.block_size)
    return sa.seal(ExchangeType.INFORMATIONAL, message_id, [p.HASH(digest), *payloads], iv)[0]


def open_informational(sa: MainMode, header: p.Header, body: bytes) -> p.Message:
    assert sa.keys is not None and sa.cipher is not None
    iv = c.phase2_iv(sa.hash_name, sa.last_phase1_block, header.message_id,
                     sa.cipher.block_size)
    msg, _ = sa.unseal(header, body, iv)
    if not msg.payloads or not isinstance(msg.payloads[0], p.HASH):
        raise RemoteProtocolError("Informational without HASH(1) (RFC 2409 §5.7)")
    want = sa.prf(sa.keys.skeyid_a, header.message_id.to_bytes(4, "big")
                  + b"".join(msg.raws[1:]))
    if not hmac.compare_digest(msg.payloads[0].data, want):
        raise RemoteProtocolError("Informational HASH(1) does not verify")
    return msg


_Handler = Callable[[QuickMode, p.Header, bytes], bytes | None]
_HANDLERS: dict[QMState, _Handler] = {
    QMState.I_SENT_1: QuickMode._on_qm2,  # <-- HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr]
    QMState.R_SENT_2: QuickMode._on_qm3,  # HDR*, HASH(3) -->
}
