"""IPsec for L2TP/IPsec in userspace: ESP transport mode (RFC 4303) with its transforms, SAs and
anti-replay window, UDP encapsulation for NAT traversal (RFC 3948), the host policy that keeps
UDP 1701 inside the SAs, and (in ike/) IKEv1 negotiating them. All sans-I/O."""
