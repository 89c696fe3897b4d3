#!/usr/bin/env bash
# Debian packages the local stack and the tests need. Installs only what is missing (root), or says
# what to install (non-root). Idempotent and quiet when everything is there.
set -euo pipefail
packages=(postgresql-15 docker-registry apache2-utils chromium fish util-linux ca-certificates
  containerd runc containernetworking-plugins buildah skopeo debootstrap iptables ipset conntrack gcc libc6-dev)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "ERROR: missing Debian packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]} (log: /tmp/mlstack-apt.log)"
start=$(date +%s)
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
  >/tmp/mlstack-apt.log 2>&1 || { tail -n 30 /tmp/mlstack-apt.log >&2; echo "Retry with: make up" >&2; exit 1; }
# Debian starts some daemons on install; the stack runs its own, on its own ports.
for svc in postgresql docker-registry; do
  if service "$svc" status >/dev/null 2>&1; then service "$svc" stop >/dev/null; fi
done
echo "Installed in $(( $(date +%s) - start ))s"
