#!/usr/bin/env bash
# Install the Go tools the observability and grpcurl tests use, at pinned versions, with `go install`:
#
#   promtool  github.com/prometheus/prometheus/cmd/promtool  v0.316.0  (Prometheus 3.16.0; Prometheus 3.x
#             publishes its Go module as v0.3XX.Y for release 3.XX.Y)
#   grpcurl   github.com/fullstorydev/grpcurl/cmd/grpcurl     v1.9.4
#
# Usage: scripts/go-tools.sh [DIR]     (DIR defaults to `$(go env GOPATH)/bin`)
#
# Idempotent: a binary already in DIR that `go version -m` reports as built from the pinned module version
# is kept; anything else (missing, another version, not a Go binary) is (re)built. Builds with
# CGO_ENABLED=0 (static binaries, no C compiler needed) unless CGO_ENABLED is set.
#
# Needs the Go module proxy (GOPROXY) and Go >= 1.26.7, the go line of Prometheus's go.mod (an older go with
# the default GOTOOLCHAIN=auto fetches that toolchain first). A cold build (empty module and build caches)
# took 11m47s on a quiet 2-core machine (promtool 10.6 min, grpcurl 1.2 min) and 16 min on a busy one, and
# fills about 2 GB of module cache plus 2 GB of build cache (`go clean -cache -modcache` frees them; the
# binaries stay). A re-run with both binaries in place takes a few milliseconds.
#
# Prints one line per tool, `NAME PATH VERSION`, on stdout (progress goes to stderr); exits non-zero when
# go is missing or a build fails.
set -euo pipefail

PROMTOOL_MODULE=github.com/prometheus/prometheus
PROMTOOL_VERSION=v0.316.0
GRPCURL_MODULE=github.com/fullstorydev/grpcurl
GRPCURL_VERSION=v1.9.4

if ! command -v go >/dev/null 2>&1; then
    echo "go-tools.sh: go is not on PATH; install Go (https://go.dev/dl/) first" >&2
    exit 2
fi

dest=${1:-"$(go env GOPATH)/bin"}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# has_version BINARY MODULE VERSION: true when BINARY is a Go binary built from MODULE at VERSION.
has_version() {
    [[ -x $1 ]] || return 1
    go version -m "$1" 2>/dev/null | awk -v m="$2" -v v="$3" '$1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

# install NAME MODULE PACKAGE VERSION
install() {
    local name=$1 module=$2 package=$3 version=$4
    local bin="$dest/$name"
    if has_version "$bin" "$module" "$version"; then
        echo "go-tools.sh: $name $version already in $dest" >&2
    else
        echo "go-tools.sh: building $name $version into $dest ..." >&2
        local t0=$SECONDS
        CGO_ENABLED=${CGO_ENABLED:-0} GOBIN="$dest" go install "$package@$version"
        has_version "$bin" "$module" "$version" || {
            echo "go-tools.sh: $bin is not $module $version after go install" >&2
            exit 1
        }
        echo "go-tools.sh: built $name in $((SECONDS - t0)) s" >&2
    fi
    echo "$name $bin $version"
}

install promtool "$PROMTOOL_MODULE" "$PROMTOOL_MODULE/cmd/promtool" "$PROMTOOL_VERSION"
install grpcurl "$GRPCURL_MODULE" "$GRPCURL_MODULE/cmd/grpcurl" "$GRPCURL_VERSION"
