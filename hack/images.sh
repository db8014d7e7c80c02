#!/usr/bin/env bash
# make images: OCI image archives of what the project ships, built without a daemon or a
# registry pull, into target/images/<name>-<tag>.oci.tar (import: ctr -n k8s.io images import).
#
#   miniautoml/operator, miniautoml/predictor, miniautoml/intent-classification  (VERSION)
#   miniautoml/operator:VERSION-next  the same operator binary as a distinct image (its own
#                                     version label and digest): the e2e suite's helm upgrade
#   miniautoml/seaweedfs              the Helm chart's bundled object store (hack/versions.env's
#                                     SeaweedFS, tagged <commit date>-<commit>)
#   miniautoml/kueue                  Kueue's manager (hack/versions.env's KUEUE_VERSION), for
#                                     `hack/cluster.sh kueue`: tests of queued TrainingJobs
#   miniautoml/pause                  the node's sandbox image (a static C program)
#   miniautoml/test-tools, test-exit, test-env, test-oom   images the tests run (busybox)
#   miniautoml/test-client            busybox and grpcurl: the e2e suite's in-cluster client
#
# The runtime base holds what gcr.io/distroless/cc-debian12:nonroot holds, from Debian 12's
# packages (libc6, libgcc-s1, ca-certificates, tzdata, netbase) and a nonroot user 65532, so the
# binaries behave as in the Dockerfiles' images: same paths, user, entrypoint and ports. umoci
# (hack/versions.env) writes the layouts. Every timestamp is the commit's time and every file
# sorted and owned numerically, so unchanged inputs give the same digests.
#
#   hack/images.sh            build the release binaries, then every image
#   IMAGES_SKIP_CARGO=1 ...   use the release binaries already in target/release
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
require_tools umoci weed grpcurl kueue
# The pause program's static build, objcopy, jq; dpkg-deb and apt-get come with Debian.
ensure_debian_packages gcc libc6-dev binutils jq
umoci() { "$TOOLS_BIN/umoci" "$@"; }

OUT=${IMAGES_DIR:-$REPO_ROOT/target/images}
WORK=$OUT/.work
DEBS=$MINIAUTOML_CACHE/debs
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n1)
REVISION=$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
SOURCE=$(sed -n 's/^repository = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n1)
BASE_PACKAGES=(libc6 libgcc-s1 ca-certificates tzdata netbase)
TEST_PACKAGES=(busybox-static)
log() { printf '[images] %s\n' "$*" >&2; }

if [ -z "${IMAGES_SKIP_CARGO:-}" ]; then
  log "release binaries"
  (cd "$REPO_ROOT" && MINIAUTOML_CODE_VERSION="intent-classification $REVISION" \
    cargo build --release --locked --quiet -p miniautoml-operator -p miniautoml-predictor \
    -p miniautoml-intent-classification --bin miniautoml-operator --bin miniautoml-predictor \
    --bin intent-classification)
fi
RELEASE=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release

# Debian packages, downloaded once into the cache (apt's current bookworm versions).
debs() {
  mkdir -p "$DEBS"
  local missing=() package
  for package in "$@"; do
    compgen -G "$DEBS/${package}_*.deb" >/dev/null || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "downloading ${missing[*]}"
    (cd "$DEBS" && apt-get download "${missing[@]}" >/dev/null 2>&1) ||
      (apt-get update >/dev/null && cd "$DEBS" && apt-get download "${missing[@]}" >/dev/null)
  fi
}

# layer DIR TAR: a reproducible tar of DIR (sorted, commit-time mtimes, numeric owners).
layer() {
  find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tar --sort=name --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$1" -cf "$2" .
}

# The runtime base: the packages' files (no maintainer scripts run), the CA bundle
# update-ca-certificates would write, the users distroless has, /tmp and nonroot's home.
base_rootfs() {
  local root=$1 deb
  debs "${BASE_PACKAGES[@]}"
  mkdir -p "$root"
  for package in "${BASE_PACKAGES[@]}"; do
    deb=$(compgen -G "$DEBS/${package}_*.deb" | sort | tail -n1)
    dpkg-deb -x "$deb" "$root"
    mkdir -p "$root/var/lib/dpkg/status.d"
    dpkg-deb -f "$deb" >"$root/var/lib/dpkg/status.d/$package"
  done
  runtime_files "$root"
}

# What a runtime root needs beside its packages' files: no documentation, the CA bundle
# update-ca-certificates would write, the users distroless has, /tmp and nonroot's home.
runtime_files() {
  local root=$1
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" "$root/usr/share/locale" \
    "$root/usr/share/info"
  mkdir -p "$root/etc/ssl/certs"
  find "$root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat >"$root/etc/ssl/certs/ca-certificates.crt"
  cat >"$root/etc/passwd" <<'EOT'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOT
  cat >"$root/etc/group" <<'EOT'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOT
  printf 'NAME="MiniAutoML runtime (Debian GNU/Linux 12 packages)"\nID=debian\nVERSION_ID="12"\n' >"$root/etc/os-release"
  mkdir -p "$root/tmp" "$root/home/nonroot" "$root/root" "$root/usr/local/bin"
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root" "$root/home/nonroot"
  chown -R 0:0 "$root"
  chown 65532:65532 "$root/home/nonroot"
}

# image NAME CONFIG-FLAGS... : a layout holding base + the layers in $LAYERS, tagged VERSION
# (or $TAG), with the OCI labels and the given umoci config flags; archived as
# $OUT/<name with / as ->-<tag>.oci.tar.
image() {
  local name=$1 tag=${TAG:-$VERSION}
  shift
  local layout=$WORK/layout-${name//\//-} archive=$OUT/${name//\//-}-$tag.oci.tar
  rm -rf "$layout"
  if [ -n "${FROM_LAYOUT:-}" ]; then
    # A cached layout whose tag "base" holds the big layers, compressed once.
    # Blobs are immutable and named by digest: linked, not copied; the index is copied.
    mkdir -p "$layout"
    cp -al "$FROM_LAYOUT/blobs" "$layout/"
    cp "$FROM_LAYOUT/index.json" "$FROM_LAYOUT/oci-layout" "$layout/"
    umoci tag --image "$layout:base" "$tag"
    umoci rm --image "$layout:base"
  else
    umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
  fi
  local part
  for part in $LAYERS; do
    umoci raw add-layer --image "$layout:$tag" --history.created "$CREATED" \
      --history.created_by "hack/images.sh: $part layer" "$WORK/$part.tar"
  done
  umoci config --no-history --image "$layout:$tag" --created "$CREATED" \
    --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.label "org.opencontainers.image.source=$SOURCE" \
    --config.label "org.opencontainers.image.revision=$REVISION" \
    --config.label "org.opencontainers.image.version=$tag" \
    --config.label "org.opencontainers.image.created=$CREATED" \
    --config.label "org.opencontainers.image.title=$name" \
    "$@"
  umoci gc --layout "$layout"
  # containerd names an imported image after this annotation (else after the bare tag); the
  # second, digest-named entry gives it the repo digest a registry pull records, which the
  # kubelet reports as the container's imageID (name@sha256:...).
  jq -c --arg name "docker.io/$name" --arg tag "$tag" \
    '.manifests[0] as $m | .manifests = [
       ($m | .annotations["io.containerd.image.name"] = "\($name):\($tag)"),
       ($m | .annotations = {"io.containerd.image.name": "\($name)@\($m.digest)"})]' \
    "$layout/index.json" >"$layout/index.json.new"
  mv "$layout/index.json.new" "$layout/index.json"
  rm -f "$layout/oci-layout.lock"
  layer "$layout" "$archive"
  printf '%s\t%s\n' "docker.io/$name:$tag" "$(jq -r '.manifests[0].digest' "$layout/index.json")" >>"$OUT/digests.tsv"
}

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
: >"$OUT/digests.tsv"

log "runtime base (${BASE_PACKAGES[*]})"
base_rootfs "$WORK/base"
layer "$WORK/base" "$WORK/base.tar"

# app NAME BINARY: a layer with target/release/BINARY as /usr/local/bin/BINARY, its DWARF line
# tables stripped (symbols stay, so backtraces still name functions), as the Dockerfiles do.
app() {
  mkdir -p "$WORK/$1/usr/local/bin"
  objcopy --strip-debug "$RELEASE/$2" "$WORK/$1/usr/local/bin/$2"
  chmod 0755 "$WORK/$1/usr/local/bin/$2"
  layer "$WORK/$1" "$WORK/$1.tar"
}
app operator miniautoml-operator
app predictor miniautoml-predictor
app trainer intent-classification

# What each Dockerfile declares (a test compares them with these archives).
LAYERS="base operator" image miniautoml/operator --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/miniautoml-operator \
  --config.exposedports 8080/tcp --config.exposedports 51001/tcp --config.workingdir /home/nonroot
TAG=$VERSION-next LAYERS="base operator" image miniautoml/operator --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/miniautoml-operator \
  --config.exposedports 8080/tcp --config.exposedports 51001/tcp --config.workingdir /home/nonroot
LAYERS="base predictor" image miniautoml/predictor --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/miniautoml-predictor \
  --config.exposedports 8081/tcp --config.exposedports 8080/tcp --config.workingdir /home/nonroot
LAYERS="base trainer" image miniautoml/intent-classification --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/intent-classification --config.workingdir /home/nonroot

# The PyTorch runtime: Debian 12's python3-torch and what the training helper needs, exactly the
# .deb files hack/images/pytorch.lock pins (sha256 checked), the shared libraries nothing loads
# pruned (hack/images/prune-libraries.py), bytecode compiled in place. Its layer is compressed
# once per lock and recipe and kept in the cache; the images add our Python code on top.
pytorch_rootfs() {
  local root=$1 name version sha deb
  mkdir -p "$root" "$DEBS"
  while read -r name version sha; do
    deb=$DEBS/${name}_${version//:/%3a}_amd64.deb
    [ -f "$deb" ] || deb=$DEBS/${name}_${version//:/%3a}_all.deb
    if [ ! -f "$deb" ] || [ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$sha" ]; then
      if (cd "$DEBS" && apt-get download -q "$name=$version" >/dev/null 2>&1) ||
        (apt-get update -q >/dev/null && cd "$DEBS" && apt-get download -q "$name=$version" >/dev/null 2>&1); then
        deb=$(compgen -G "$DEBS/${name}_${version//:/%3a}_*.deb" | head -n1)
        [ "$(sha256sum "$deb" | cut -d' ' -f1)" = "$sha" ] ||
          { log "$deb does not have the sha256 hack/images/pytorch.lock pins ($sha)"; return 1; }
      else
        # Debian serves only the newest build of a release (a security update replaces the
        # pinned one): take the version apt serves now (apt checks it against the archive's
        # signed index), say so, and keep the layer out of the cache until the lock names it.
        local served
        served=$(apt-cache policy "$name" | awk '/Candidate:/ {print $2}')
        { [ -n "$served" ] && [ "$served" != "(none)" ] && (cd "$DEBS" && apt-get download -q "$name=$served" >/dev/null 2>&1); } ||
          { log "apt serves neither $name $version (hack/images/pytorch.lock) nor another version"; return 1; }
        log "WARNING: apt no longer serves $name $version (hack/images/pytorch.lock); using $served: run hack/pytorch-lock.sh"
        echo "$name $version -> $served" >>"$WORK/pytorch-substitutions"
        deb=$(compgen -G "$DEBS/${name}_${served//:/%3a}_*.deb" | head -n1)
      fi
    fi
    dpkg-deb -x "$deb" "$root" || { log "cannot unpack $deb"; return 1; }
    mkdir -p "$root/var/lib/dpkg/status.d"
    dpkg-deb -f "$deb" >"$root/var/lib/dpkg/status.d/$name"
  done < <(grep -v '^#' "$HACK_DIR/images/pytorch.lock")
  # What update-alternatives would link: BLAS and LAPACK are OpenBLAS's.
  local lib=$root/usr/lib/x86_64-linux-gnu
  ln -sf openblas-pthread/libblas.so.3 "$lib/libblas.so.3"
  ln -sf openblas-pthread/liblapack.so.3 "$lib/liblapack.so.3"
  ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
  # torch 1.13 with Python 3.11: `for s in Std` no longer yields Std.NONE and Std.ALL (3.11's
  # Flag iteration skips zero and multi-bit members), so torchrun's default "--redirects 0"
  # parses to None and every launch dies in to_map(). Iterate the members by name instead
  # (what later torch releases do).
  local std=$root/usr/lib/python3/dist-packages/torch/distributed/elastic/multiprocessing/api.py
  sed -i 's/^            for s in Std:$/            for s in Std.__members__.values():/' "$std"
  grep -q 'for s in Std.__members__.values():' "$std" || { log "$std: torchrun's Std fix did not apply"; return 1; }
  # libtorch-test is a dependency of python3-torch, never loaded by it.
  rm -rf "$root/usr/lib/libtorch-test" "$root/usr/share/proj" "$root/usr/share/gdcm-3.0"
  python3 "$HACK_DIR/images/prune-libraries.py" "$root" usr/lib/python3/dist-packages usr/lib/python3.11 \
    usr/bin/python3.11 usr/lib/x86_64-linux-gnu/openblas-pthread >&2 ||
    log "(torch's own test extensions name test libraries Debian does not ship: harmless)"
  runtime_files "$root"
  ldconfig -r "$root"
  # Bytecode next to the sources (nonroot cannot write it there at run time); hash-based, so
  # the files do not depend on when they were compiled.
  chroot "$root" /usr/bin/python3 -m compileall -q --invalidation-mode unchecked-hash \
    /usr/lib/python3/dist-packages /usr/lib/python3.11 >/dev/null ||
    { log "the PyTorch runtime's python3 does not run"; return 1; }
}

pytorch_base() {
  local key cache epoch
  key=$( (cat "$HACK_DIR/images/pytorch.lock" "$HACK_DIR/images/prune-libraries.py"; declare -f pytorch_rootfs runtime_files layer) |
    sha256sum | cut -c1-16)
  cache=$MINIAUTOML_CACHE/images/pytorch-$key
  if [ ! -d "$cache" ]; then
    log "PyTorch runtime ($(grep -vc '^#' "$HACK_DIR/images/pytorch.lock") Debian packages; once per hack/images/pytorch.lock)"
    # Older runtimes are not needed again.
    rm -rf "$WORK/pytorch" "$WORK/pytorch-substitutions" "$MINIAUTOML_CACHE"/images/pytorch-*
    # A runtime that did not build whole is never cached (nor used).
    pytorch_rootfs "$WORK/pytorch" || return 1
    # Its time is the lock's last commit, so the layer's digest outlives other commits.
    epoch=$(git -C "$REPO_ROOT" log -1 --format=%ct -- hack/images/pytorch.lock 2>/dev/null || true)
    SOURCE_DATE_EPOCH=${epoch:-$SOURCE_DATE_EPOCH} layer "$WORK/pytorch" "$WORK/pytorch.tar" || return 1
    rm -rf "$WORK/pytorch"
    # Built with packages the lock does not name: this run's only, not the cache's.
    [ -s "$WORK/pytorch-substitutions" ] && cache=$WORK/pytorch-layout
    mkdir -p "$(dirname "$cache")"
    umoci init --layout "$cache.new"
    umoci new --image "$cache.new:base"
    umoci raw add-layer --image "$cache.new:base" --history.created "$CREATED" \
      --history.created_by "hack/images.sh: Debian packages of hack/images/pytorch.lock" "$WORK/pytorch.tar"
    rm -f "$WORK/pytorch.tar" "$cache.new/oci-layout.lock"
    mv "$cache.new" "$cache"
  fi
  echo "$cache"
}

log "pytorch-intent (training-code/pytorch-intent, training-code/miniautoml-training)"
PYTORCH_BASE=$(pytorch_base)
python_app() {
  local dir=$WORK/python-app site=$WORK/python-app/usr/local/lib/python3.11/dist-packages
  rm -rf "$dir"
  mkdir -p "$site" "$dir/opt/pytorch-intent"
  cp -r "$REPO_ROOT/training-code/miniautoml-training/miniautoml_training" "$site/"
  cp "$REPO_ROOT"/training-code/pytorch-intent/*.py "$dir/opt/pytorch-intent/"
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  find "$dir" -type d -exec chmod 0755 {} + && find "$dir" -type f -exec chmod 0644 {} +
  layer "$dir" "$WORK/python-app.tar"
}
python_app
PYTHON_ENV=(--config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1
  --config.env "MINIAUTOML_CODE_VERSION=pytorch-intent $REVISION")
FROM_LAYOUT=$PYTORCH_BASE LAYERS=python-app image miniautoml/pytorch-intent --config.user 65532:65532 \
  "${PYTHON_ENV[@]}" --config.entrypoint /usr/bin/python3 --config.entrypoint /opt/pytorch-intent/train.py \
  --config.workingdir /opt/pytorch-intent
# Its predictor: the same model.py, served over gRPC (prediction.Predictor) and OIP v2 REST.
FROM_LAYOUT=$PYTORCH_BASE LAYERS=python-app image miniautoml/pytorch-intent-predictor --config.user 65532:65532 \
  "${PYTHON_ENV[@]}" --config.entrypoint /usr/bin/python3 --config.entrypoint /opt/pytorch-intent/serve.py \
  --config.workingdir /opt/pytorch-intent --config.exposedports 8080/tcp --config.exposedports 8081/tcp
# The same code launched by a bare torchrun (the tests' "torchrun works unchanged").
TAG=1 FROM_LAYOUT=$PYTORCH_BASE LAYERS=python-app image miniautoml/test-torchrun --config.user 65532:65532 \
  "${PYTHON_ENV[@]}" --config.entrypoint /usr/bin/torchrun --config.entrypoint /opt/pytorch-intent/train.py \
  --config.workingdir /opt/pytorch-intent
# A test image that follows the original MiniAutoML's contract to the letter (no token, plain
# text, the four files): hack/images/original-contract/train.py, with the API's descriptor set.
original_contract() {
  local dir=$WORK/original-contract
  rm -rf "$dir"
  mkdir -p "$dir/opt/original-contract"
  cp "$HACK_DIR/images/original-contract/train.py" "$HACK_DIR/images/original-contract/predict.py" \
    "$REPO_ROOT/training-code/miniautoml-training/miniautoml_training/descriptor.bin" "$dir/opt/original-contract/"
  find "$dir" -type d -exec chmod 0755 {} + && find "$dir" -type f -exec chmod 0644 {} +
  layer "$dir" "$WORK/original-contract.tar"
}
original_contract
TAG=1 FROM_LAYOUT=$PYTORCH_BASE LAYERS=original-contract image miniautoml/test-original --config.user 65532:65532 \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 --config.entrypoint /usr/bin/python3 --config.entrypoint /opt/original-contract/train.py \
  --config.workingdir /opt/original-contract
# ... and its predictor, after the original predictor's contract (gRPC on 51001, MODEL_DIR/<runId>/).
TAG=1 FROM_LAYOUT=$PYTORCH_BASE LAYERS=original-contract image miniautoml/test-original-predictor \
  --config.user 65532:65532 --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
  --config.entrypoint /usr/bin/python3 --config.entrypoint /opt/original-contract/predict.py \
  --config.workingdir /opt/original-contract --config.exposedports 51001/tcp

# The chart's bundled object store: SeaweedFS's one binary (master, volume server, filer and S3
# gateway), built by hack/tools.sh from the pinned module.
log "seaweedfs"
mkdir -p "$WORK/seaweedfs/usr/local/bin"
cp "$TOOLS_BIN/weed" "$WORK/seaweedfs/usr/local/bin/weed"
chmod 0755 "$WORK/seaweedfs/usr/local/bin/weed"
layer "$WORK/seaweedfs" "$WORK/seaweedfs.tar"
TAG=$(seaweedfs_image_tag) LAYERS="base seaweedfs" image miniautoml/seaweedfs --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/weed --config.workingdir /home/nonroot \
  --config.exposedports 8333/tcp --config.exposedports 9333/tcp --config.exposedports 8888/tcp

# Kueue's manager, built by hack/tools.sh from the pinned module, where its release image has it
# (/manager), run as its manifests run it (hack/cluster.sh kueue).
log "kueue"
mkdir -p "$WORK/kueue"
cp "$TOOLS_BIN/kueue" "$WORK/kueue/manager"
chmod 0755 "$WORK/kueue/manager"
layer "$WORK/kueue" "$WORK/kueue.tar"
TAG=$KUEUE_VERSION LAYERS="base kueue" image miniautoml/kueue --config.user 65532:65532 \
  --config.entrypoint /manager --config.exposedports 9443/tcp --config.exposedports 8082/tcp

# The sandbox ("pause") image: holds a pod's namespaces, reaps orphans, exits on SIGTERM/SIGINT.
log "pause"
mkdir -p "$WORK/pause"
gcc -static -Os -s -o "$WORK/pause/pause" "$HACK_DIR/images/pause.c"
layer "$WORK/pause" "$WORK/pause.tar"
TAG=1 LAYERS=pause image miniautoml/pause --config.user 65535:65535 --config.entrypoint /pause

# Test images: busybox (static) on the runtime base.
log "test images (${TEST_PACKAGES[*]})"
debs "${TEST_PACKAGES[@]}"
mkdir -p "$WORK/busybox/bin"
dpkg-deb --fsys-tarfile "$(compgen -G "$DEBS/busybox-static_*.deb" | sort | tail -n1)" |
  tar -xO ./bin/busybox >"$WORK/busybox/bin/busybox"
chmod 0755 "$WORK/busybox/bin/busybox"
for applet in sh env id cat ls mkdir rm chmod sleep timeout wget nc nslookup httpd ip hostname head tail sort echo test grep date expr seq; do
  ln -s busybox "$WORK/busybox/bin/$applet"
done
layer "$WORK/busybox" "$WORK/busybox.tar"
TAG=1 LAYERS="base busybox" image miniautoml/test-tools --config.user 65532:65532 --config.cmd /bin/sh
# The e2e suite's client inside the cluster (gRPC through Services, as an in-cluster app calls).
mkdir -p "$WORK/grpcurl/usr/local/bin"
cp "$TOOLS_BIN/grpcurl" "$WORK/grpcurl/usr/local/bin/grpcurl"
chmod 0755 "$WORK/grpcurl/usr/local/bin/grpcurl"
layer "$WORK/grpcurl" "$WORK/grpcurl.tar"
TAG=1 LAYERS="base busybox grpcurl" image miniautoml/test-client --config.user 65532:65532 --config.cmd /bin/sh
# A training image that fails on purpose, and one that exits 0 without reporting.
TAG=1 LAYERS="base busybox" image miniautoml/test-exit --config.user 65532:65532 \
  --config.entrypoint /bin/sh --config.entrypoint -c --config.entrypoint 'echo failing on purpose >&2; exit 3'
TAG=1 LAYERS="base busybox" image miniautoml/test-env --config.user 65532:65532 --config.entrypoint /bin/env
# A training image that holds ever more memory (busybox sort keeps its one endless line).
TAG=1 LAYERS="base busybox" image miniautoml/test-oom --config.user 65532:65532 \
  --config.entrypoint /bin/sh --config.entrypoint -c \
  --config.entrypoint 'echo allocating; head -c 2000000000 /dev/zero | sort >/dev/null'

rm -rf "$WORK"
log "built $(wc -l <"$OUT/digests.tsv") images in $OUT"
column -t "$OUT/digests.tsv" >&2
echo "$OUT"
