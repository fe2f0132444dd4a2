#!/usr/bin/env bash
# One-time (and idempotent) set-up of a Debian 12 machine for vpnlab, as root:
# the Debian packages the testbed drives, and a virtual environment in .venv with the project
# installed in editable mode. Re-running it is cheap: it skips what is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [ "$(id -u)" -ne 0 ]; then
  echo "vpnlab set-up: run as root (it installs Debian packages and creates network namespaces)" >&2
  exit 2
fi

apt_packages=(mininet iproute2 iptables tcpdump tshark dnsmasq-base iperf3 bridge-utils ethtool
              procps iputils-ping python3-venv python3-pip conntrack util-linux
              # the compiled data path (setup.py: tunnels/mppe/_fastmppe.c,
              # tunnels/ipsec/_fastesp.c over libcrypto)
              gcc python3-dev libssl-dev
              # reference peers (testbed/refpeer.py): user-mode Linux, kmod for its module
              # tree (depmod -b, modprobe -d), pppd with pptpd and pptp-linux, xl2tpd, and
              # strongSwan with the plugins its IKEv1 PSK set needs (openssl: modp, 3DES;
              # extra: cmac, curve25519; swanctl: vici)
              user-mode-linux kmod ppp pptpd pptp-linux xl2tpd strongswan
              freeradius  # tests/test_radius_freeradius.py, in a namespace only
              libcharon-extra-plugins libstrongswan-standard-plugins
              libstrongswan-extra-plugins strongswan-swanctl
              # SoftEther VPN Server (userspace L2TP/IPsec, run in a lab namespace by
              # topologies/interop_softether.py; the policy-rc.d below keeps it from starting)
              softether-vpnserver)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vpnlab set-up: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q >/dev/null
  # pptpd, xl2tpd, strongSwan and vpnserver must never run in the root namespace: a
  # policy-rc.d that forbids every service start while installing (kept if the machine
  # already has one)
  policy=/usr/sbin/policy-rc.d
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\n# vpnlab set-up: no service starts during install\nexit 101\n' > $policy
    chmod 755 $policy
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# ...nor at boot: softether-vpnserver's package enables its unit; labs run their own instance
if command -v systemctl >/dev/null && systemctl is-enabled softether-vpnserver >/dev/null 2>&1; then
  systemctl disable softether-vpnserver >/dev/null 2>&1 || true
fi
update-rc.d freeradius disable >/dev/null 2>&1 || true  # its package enables it for boot too

# Debian's python3 carries Debian's mininet module; the venv sees it through system site-packages.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import mininet.net' 2>/dev/null; then
  echo "vpnlab set-up: creating virtual environment .venv"
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.vpnlab-installed
# re-installed when the metadata or a C source of the compiled data path changed (an editable
# install builds the extensions in place, next to their Python modules)
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py -newer "$stamp")" ] || \
   [ -n "$(find tunnels -name '*.c' -newer "$stamp" | head -1)" ]; then
  echo "vpnlab set-up: installing Python dependencies"
  .venv/bin/pip install -q --disable-pip-version-check -e . ruff 2>&1 | { grep -v "is ignored: it is neither" || true; }
  touch "$stamp"
fi
