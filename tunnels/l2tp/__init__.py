"""L2TPv2 (RFC 2661): the wire codec (`avp`, `messages`), sans-I/O like every core here."""

from tunnels.l2tp.avp import (
    AVP,
    AVPType,
    CDNResult,
    GeneralError,
    ResultCode,
    StopCCNResult,
    decode_avps,
    encode_avps,
)
from tunnels.l2tp.messages import (
    REQUIRED_AVPS,
    TUNNEL_MESSAGES,
    ControlMessage,
    ControlPacket,
    DataPacket,
    MessageType,
    decode_packet,
    peek_tunnel_id,
)

__all__ = [
    "AVP", "AVPType", "CDNResult", "GeneralError", "ResultCode", "StopCCNResult",
    "decode_avps", "encode_avps", "REQUIRED_AVPS", "TUNNEL_MESSAGES", "ControlMessage",
    "ControlPacket", "DataPacket", "MessageType", "decode_packet", "peek_tunnel_id",
]
