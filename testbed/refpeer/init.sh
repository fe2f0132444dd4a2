#!/bin/sh
# PID 1 of a vpnlab reference peer: a user-mode Linux instance booted with the host's root
# filesystem read-only (rootfstype=hostfs rootflags=/ ro). The kernel passes vpnlab_state=DIR
# (the instance's state directory on the host) in the environment; everything else comes from
# DIR/boot.env, written by testbed/refpeer.py. Inside, DIR is mounted read-write at /run/vpnlab.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=666 devpts /dev/pts
mount -t tmpfs shm /dev/shm
mount -t tmpfs run /run
mkdir -p /run/vpnlab && mount -t hostfs -o "$vpnlab_state" none /run/vpnlab
S=/run/vpnlab
exec >>$S/console.log 2>&1
echo "init: start at uptime $(cut -d' ' -f1 /proc/uptime)"
for d in /tmp /var/log /var/lib /var/cache /root; do mount -t tmpfs tmp $d; done
mkdir -p /run/lock /run/pptpd /run/pptp /run/xl2tpd /var/lib/misc /var/log/xl2tpd
. $S/boot.env
# per-instance configuration: each entry of $S/etc is bind-mounted over /etc/<entry>
for f in $S/etc/*; do
  [ -e "$f" ] && { mount --bind "$f" "/etc/${f##*/}" || echo "init: bind failed: $f"; }
done
# the kernel's module helper, so automatic module loading finds the packaged UML modules
echo "$S/modprobe.sh" > /proc/sys/kernel/modprobe
[ -n "$VPNLAB_MODULES" ] && { sh $S/modprobe.sh -a $VPNLAB_MODULES || echo "init: modprobe failed"; }
hostname "$VPNLAB_NAME"
ip link set lo up
# IPv6 off on the NIC only (off by `default` breaks IPV6CP on ppp0)
v6=/proc/sys/net/ipv6/conf/$VPNLAB_IF/disable_ipv6
[ -e $v6 ] && echo 1 > $v6
ip link set "$VPNLAB_IF" up
[ -n "$VPNLAB_ADDRESS" ] && ip addr add "$VPNLAB_ADDRESS" dev "$VPNLAB_IF"
for r in $VPNLAB_ROUTES; do ip route replace "${r%@*}" via "${r#*@}" || echo "init: route $r failed"; done
echo "init: network up at uptime $(cut -d' ' -f1 /proc/uptime)"
# the agent becomes PID 1: it reaps orphans, collects syslog, runs the role and host commands
exec python3 -S -I "$VPNLAB_AGENT" "$S"
