#!/usr/bin/env bash
# System tools the tests use beyond Python: promtool (Debian's prometheus package) for the alert-rule tests.
# Installed only when missing and when we may (root with apt-get); otherwise those tests skip and say why.
set -u
# amtool (Debian's prometheus-alertmanager) checks the Alertmanager routes.
if ! command -v amtool >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
     prometheus-alertmanager) >/dev/null 2>&1 || echo "could not install amtool; its tests will be skipped"
  pkill -x prometheus-alertmanager >/dev/null 2>&1 || true
fi
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing promtool (apt-get install prometheus) ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1 \
      || echo "could not install prometheus; promtool tests will be skipped"
    # The package may start a Prometheus daemon on :9090; the suite does not need it running.
    pkill -x prometheus >/dev/null 2>&1 || true
  else
    echo "promtool not found: install Debian's 'prometheus' package to run the alert-rule tests"
  fi
fi
# `install-tools.sh bench`: nginx, so the gateway benchmark can compare against it.
if [ "${1:-}" = "bench" ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing nginx for the gateway comparison ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) >/dev/null 2>&1 \
      || echo "could not install nginx; the gateway benchmark will skip that comparison"
    pkill -x nginx >/dev/null 2>&1 || true
  fi
fi
exit 0
