#!/usr/bin/env bash
# System packages the full test suite talks to: oathtool (HOTP/TOTP peer), pskctool
# (oath-toolkit's PSKC schema check), radclient and pam_radius_auth through pamtester (RADIUS peers), curl (HTTPS peer), an MIT Kerberos KDC with the OTP
# preauth plugin, PostgreSQL 15 (the tests start their own throwaway cluster; no system
# cluster is created), libsodium (ristretto255 for the threshold PRF: optional for users, but CI
# builds and tests the fast path otpfast._ristretto, which needs libsodium-dev), privacyIDEA's own PAM and
# FreeRADIUS modules (run against `serve --http` as third-party clients of the privacyIDEA API)
# with what they run in (pam_python, FreeRADIUS with rlm_perl and the Perl libraries), and the
# build headers.
# Idempotent; re-runs itself through sudo when not root and something is missing.
set -euo pipefail
pkgs=(build-essential libssl-dev libgmp-dev libsodium-dev libsodium23 oathtool pskctool freeradius-utils curl libpam-radius-auth pamtester
      krb5-kdc krb5-admin-server krb5-otp krb5-user postgresql-15
      libpam-python python3-requests python3-passlib
      freeradius libconfig-inifiles-perl libwww-perl liblwp-protocol-https-perl libjson-perl libtry-tiny-perl
      libdata-dump-perl)
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

# privacyIDEA's PAM and FreeRADIUS modules (authmodules/pam_python/privacyidea_pam.py,
# authmodules/FreeRADIUS/privacyidea_radius.pm) as released on PyPI in privacyIDEA 2.23.5, the
# last release that bundles its plugins (later they moved to their own repositories);
# installed where privacyIDEA's setup.py puts its authmodules.
PI_VERSION=2.23.5
PI_DIR=/usr/local/lib/privacyidea/authmodules
PI_FILES=(pam_python/privacyidea_pam.py FreeRADIUS/privacyidea_radius.pm)
if [ ! -f "$PI_DIR/${PI_FILES[0]}" ] || [ ! -f "$PI_DIR/${PI_FILES[1]}" ]; then
  if [ "$(id -u)" != 0 ]; then
    exec sudo "$0" "$@"
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "privacyidea==$PI_VERSION"
  for f in "${PI_FILES[@]}"; do
    tar -xzf "$tmp/privacyIDEA-$PI_VERSION.tar.gz" -C "$tmp" "privacyIDEA-$PI_VERSION/authmodules/$f"
    install -D -m 0644 "$tmp/privacyIDEA-$PI_VERSION/authmodules/$f" "$PI_DIR/$f"
  done
fi
