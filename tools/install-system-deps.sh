#!/usr/bin/env bash
# System packages the full test suite talks to: oathtool (HOTP/TOTP peer), pskctool
# (oath-toolkit's PSKC schema check), radclient and pam_radius_auth through pamtester (RADIUS peers), curl (HTTPS peer), an MIT Kerberos KDC with the OTP
# preauth plugin, PostgreSQL 15 (the tests start their own throwaway cluster; no system
# cluster is created), libsodium (ristretto255 for the threshold PRF), and the build headers.
# Idempotent; re-runs itself through sudo when not root and something is missing.
set -euo pipefail
pkgs=(build-essential libssl-dev libgmp-dev libsodium-dev libsodium23 oathtool pskctool freeradius-utils curl libpam-radius-auth pamtester
      krb5-kdc krb5-admin-server krb5-otp krb5-user postgresql-15)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" != 0 ]; then
  exec sudo "$0" "$@"
fi
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # the tests run their own PostgreSQL cluster: don't create or start the system one
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] ||
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
