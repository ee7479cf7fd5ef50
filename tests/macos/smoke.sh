#!/bin/sh
# The macOS smoke test: what Linux CI cannot run. On a Mac with Apple silicon (macOS 14 or
# later), from the checkout, with the arm64 guest assets as a bundle (a Mac cannot build them):
# on a Linux host with the same checkout, `./shuru init --arch arm64 --export
# shuru-assets-arm64.tar.gz` writes one and prints its digest; copy it over (or serve it over
# http), then:
#
#   tests/macos/smoke.sh shuru-assets-arm64.tar.gz sha256:DIGEST   # or a URL, docker://REF
#
# It runs shuru through the ./shuru launcher with the VZ backend and prints one line per step:
# `ok   STEP (Ns)` or `FAIL STEP: why`, then a summary. Each step's full output is kept in the
# log folder it names at the end. Please paste the lines into issue 17 (or a new issue): no Mac
# has run shuru's VZ backend for this project yet, so every line is news.
#
# Steps: environment, init --bundle (signs Deno, installs the guest assets from the bundle), init
# again (the installed bundle is current), --version shows the vz backend,
# run -- uname -m (aarch64), a checkpoint round trip (create, run --from, delete), a read-only
# mount (read a host file; guest writes do not reach the host), and --allow-net to a server on
# the host's loopback reached by a name from --add-host.
set -u
root=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)
shuru="$root/shuru"
logs=$(mktemp -d "${TMPDIR:-/tmp}/shuru-smoke.XXXXXX")
failures=0
name="smoke-$$"

# step NAME EXPECT -- COMMAND...: runs COMMAND, passes when it exits 0 and its stdout contains
# EXPECT (empty EXPECT: exit 0 is enough).
step() {
  label=$1
  expect=$2
  shift 3
  log="$logs/$(printf '%s' "$label" | tr -c 'A-Za-z0-9' '_').log"
  start=$(date +%s)
  "$@" >"$log.out" 2>"$log.err"
  rc=$?
  secs=$(($(date +%s) - start))
  if [ "$rc" -eq 0 ] && { [ -z "$expect" ] || grep -q -- "$expect" "$log.out"; }; then
    printf 'ok   %s (%ss)\n' "$label" "$secs"
    return 0
  fi
  failures=$((failures + 1))
  why=$(tail -n 3 "$log.err" "$log.out" 2>/dev/null | grep -v '^==>' | grep -v '^$' | tail -n 2 |
    tr '\n' ' ')
  printf 'FAIL %s: exit %s, expected "%s"; %s\n' "$label" "$rc" "$expect" "$why"
  return 1
}

bundle=${1:-}
digest=${2:-}
if [ -z "$bundle" ]; then
  echo "usage: tests/macos/smoke.sh BUNDLE [sha256:DIGEST]  (make BUNDLE on Linux: ./shuru init --arch arm64 --export FILE)"
  exit 2
fi

if [ "$(uname -s)" != Darwin ] || [ "$(uname -m)" != arm64 ]; then
  echo "FAIL environment: this script is for macOS on Apple silicon ($(uname -s) $(uname -m) here)"
  exit 1
fi
echo "ok   environment: macOS $(sw_vers -productVersion) $(uname -m), $(sysctl -n hw.ncpu) CPUs, logs in $logs"

if [ -n "$digest" ]; then
  step "init --bundle" "installed" -- "$shuru" init --bundle "$bundle" --bundle-digest "$digest"
else
  step "init --bundle" "installed" -- "$shuru" init --bundle "$bundle"
fi || {
  echo "FAIL stopping: nothing else can run without the guest assets"
  exit 1
}
step "init again: the installed bundle is used" "guest assets current" -- "$shuru" init
step "version shows the vz backend" "vz backend" -- "$shuru" --version
step "run -- uname -m" "aarch64" -- "$shuru" run -- uname -m

step "checkpoint create" "" -- "$shuru" checkpoint create "$name" -- \
  sh -c 'echo "checkpoint-$$" > /root/smoke.txt'
step "run --from the checkpoint" "checkpoint-" -- "$shuru" run --from "$name" -- cat /root/smoke.txt
step "checkpoint delete" "" -- "$shuru" checkpoint delete "$name"

share=$(mktemp -d "${TMPDIR:-/tmp}/shuru-smoke-share.XXXXXX")
echo "from-the-host" >"$share/hello.txt"
step "mount: read a host file" "from-the-host" -- "$shuru" run --mount "$share:/mnt/host" -- \
  cat /mnt/host/hello.txt
step "mount: guest writes stay in the guest" "written" -- "$shuru" run --mount "$share:/mnt/host" \
  -- sh -c 'echo x > /mnt/host/new.txt && echo written'
if [ -e "$share/new.txt" ]; then
  failures=$((failures + 1))
  echo "FAIL mount: a read-only mount let the guest write $share/new.txt on the host"
else
  echo "ok   mount: the host folder is unchanged"
fi
rm -rf "$share"

# A server on the host's loopback (Deno itself, so nothing else is needed).
deno="$root/node_modules/.bin/deno"
portfile="$logs/port"
"$deno" eval 'Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) =>
  Deno.writeTextFileSync(Deno.args[0], String(port)) }, () => new Response("smoke-net-ok\n"))' \
  "$portfile" >"$logs/server.log" 2>&1 &
server=$!
i=0
while [ ! -s "$portfile" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ -s "$portfile" ]; then
  port=$(cat "$portfile")
  step "--allow-net --add-host to the host's loopback" "smoke-net-ok" -- "$shuru" run --allow-net \
    --add-host "smoke.test:127.0.0.1" -- curl -sS --max-time 30 "http://smoke.test:$port/"
else
  failures=$((failures + 1))
  echo "FAIL --allow-net: the loopback test server did not start (see $logs/server.log)"
fi
kill "$server" 2>/dev/null

if [ "$failures" -eq 0 ]; then
  echo "ok   all steps passed ($("$shuru" --version))"
else
  echo "FAIL $failures step(s) failed; full output in $logs"
fi
exit "$failures"
