#!/usr/bin/env bash
# System packages for CI on Debian 12 (run as root). Idempotent: a fast no-op when all is present.
# Java 17 + Maven are expected to be preinstalled; they are only installed here if missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

pkgs=()
command -v redis-server >/dev/null || pkgs+=(redis-server)
command -v java >/dev/null && command -v keytool >/dev/null || pkgs+=(openjdk-17-jre-headless)  # keytool: Kafka's TLS listener
command -v mvn >/dev/null || pkgs+=(maven)
command -v chromium >/dev/null || pkgs+=(chromium)  # the dashboard's browser test (headless)
command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
command -v openssl >/dev/null || pkgs+=(openssl)   # self-signed certificates of the HTTPS tests
command -v wrk >/dev/null || pkgs+=(wrk)           # the HTTP load generator of bench/http_load.py
if (( ${#pkgs[@]} == 0 )); then echo "[install-system] all present, nothing to do" >&2; exit 0; fi

echo "[install-system] installing: ${pkgs[*]}" >&2
# Stop apt from starting the redis service: tests run their own redis-server processes.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "[install-system] done" >&2
