# vafs — every entry point. Run with `npx -y rust-just <recipe>`
# (`npx -y rust-just --list` shows them all).

set shell := ["bash", "-euo", "pipefail", "-c"]

root := justfile_directory()
vafs := root / "bin/vafs"

# List the recipes.
default:
    @{{ just_executable() }} --justfile "{{ justfile() }}" --list

# Install what is missing (Debian 12: apt) and download Go modules. A no-op for apt when every tool is there.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    # tool -> Debian 12 package that ships it. qemu-storage-daemon is in
    # qemu-system-common (`dpkg -S /usr/bin/qemu-storage-daemon`), which
    # qemu-system-x86 depends on; we ask for the smaller one. The file,
    # raw and qcow2 block drivers are built in, so qemu-block-extra is not
    # needed. gcc is for `go test -race` (cgo).
    declare -A pkg=(
        [fusermount3]=fuse3
        [qemu-img]=qemu-utils
        [qemu-io]=qemu-utils
        [qemu-storage-daemon]=qemu-system-common
        [fio]=fio
        [mkfs.ext4]=e2fsprogs
        [getfattr]=attr
        [setfattr]=attr
        [mkfs.xfs]=xfsprogs
        [losetup]=util-linux
        [fallocate]=util-linux
        [gcc]=gcc
    )
    missing=()
    for tool in "${!pkg[@]}"; do
        # sbin is not on every PATH; look there too.
        if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null; then
            missing+=("${pkg[$tool]}")
        fi
    done
    # gcc only recommends libc6-dev (installed without recommends above),
    # but cgo (go test -race) and TestTreeCopy need its headers.
    if [[ ! -e /usr/include/stdio.h ]]; then
        missing+=(libc6-dev)
    fi
    if ((${#missing[@]})); then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        echo "setup: installing ${missing[*]}"
        sudo=()
        if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
        # Wait for another apt/dpkg instead of failing on its lock.
        apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
        "${apt[@]}" update
        "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
    fi
    if [[ ! -e /dev/fuse ]]; then
        echo "setup: warning: /dev/fuse is missing (modprobe fuse?); mounts and the integration suite will not work" >&2
    fi
    go mod download

# Build the two binaries into bin/: vafs (the command line) and vafsd (the engine it runs for mount, fsck and debug).
# urfave_cli_no_docs drops urfave/cli's man-page generator (blackfriday, md2man), which vafs never uses and which
# would add its start-up to every `vafs clone`.
build:
    go build -tags urfave_cli_no_docs -o bin/ ./cmd/vafs ./cmd/vafsd

# The whole suite: vet, unit tests with the race detector, then the integration suite against bin/vafs (and bin/vafsd).
test: setup build
    #!/usr/bin/env bash
    set -euo pipefail
    go vet ./...
    # Unit packages: everything but integration/. The integration tests
    # spawn bin/vafs; the race detector on the test process would only
    # slow them down, so they run without it.
    mapfile -t unit < <(go list ./... | grep -v '/integration\(/\|$\)' || true)
    if ((${#unit[@]})); then
        # A hung test fails after 15 minutes with every goroutine's stack,
        # instead of eating the whole CI budget.
        go test -race -count=1 -timeout 15m "${unit[@]}"
    fi
    if [[ -n "$(go list ./integration/... 2>/dev/null || true)" ]]; then
        VAFS_BIN="{{ vafs }}" go test -count=1 -timeout 30m -v ./integration/...
    fi

# What CI runs: fail if `go mod tidy` would change go.mod or go.sum, then the whole suite.
ci: tidy-check test

# Fail (and leave go.mod/go.sum as they were) if `go mod tidy` changes them.
[private]
tidy-check:
    #!/usr/bin/env bash
    set -euo pipefail
    saved=$(mktemp -d)
    trap 'rm -rf "$saved"' EXIT
    cp go.mod "$saved/go.mod"
    had_sum=0
    if [[ -f go.sum ]]; then cp go.sum "$saved/go.sum"; had_sum=1; fi
    go mod tidy
    changed=0
    diff -u "$saved/go.mod" go.mod || changed=1
    if ((had_sum)); then
        diff -u "$saved/go.sum" go.sum || changed=1
    elif [[ -f go.sum ]]; then
        echo "go mod tidy created go.sum:"; cat go.sum; changed=1
    fi
    cp "$saved/go.mod" go.mod
    if ((had_sum)); then cp "$saved/go.sum" go.sum; else rm -f go.sum; fi
    if ((changed)); then
        echo "ci: go mod tidy changes go.mod/go.sum (diff above); run it and commit the result" >&2
        exit 1
    fi

# Benchmark vafs against a plain file, a qemu-storage-daemon qcow2 FUSE export and a go-fuse loopback (fio), plus clone time, reads against snapshot depth and metadata size; writes docs/bench.md. -quick for a smoke run, -sections fio,clone,depth,meta,isolation for a subset (-rows for part of the fio table).
bench *ARGS: build
    go run ./integration/bench -vafs "{{ vafs }}" {{ ARGS }}

# Fuzz every decoder: each fuzz target for TIME, one after another (not part of ci or test, which run the seeds only); ARGS go to go test, e.g. -parallel 1.
fuzz TIME="2m" *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    # The targets are in the packages below (`go test -list` finds them).
    # A failing input is left in the package's testdata/fuzz/<FuzzName>/:
    # commit it with the fix, and it is a regression test from then on.
    # The recipe goes on with the next target and fails at the end.
    #
    # A decoder that allocates what its input claims should fail its
    # target, not take the machine: 8 GiB of address space per process.
    ulimit -v 8388608
    out=$(mktemp)
    trap 'rm -f "$out"' EXIT
    failed=()
    for pkg in ./meta ./blocks ./fs/control/wire ./fs/control; do
        for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
            echo "== $target ($pkg, {{ TIME }})"
            if go test -run '^$' -fuzz "^$target\$" -fuzztime "{{ TIME }}" {{ ARGS }} "$pkg" 2>&1 | tee "$out"; then
                continue
            fi
            # Go 1.26's coordinator can fail a target with a bare "context
            # deadline exceeded" as -fuzztime runs out (go.dev/issue/75804,
            # fixed in 1.27): no input failed, so that is not a finding.
            if grep -q '^    context deadline exceeded$' "$out" && ! grep -q 'Failing input written' "$out"; then
                echo "fuzz: $target: Go's end-of-fuzztime race (go.dev/issue/75804), not a finding"
                continue
            fi
            failed+=("$target ($pkg)")
        done
    done
    if ((${#failed[@]})); then
        printf 'fuzz: failed: %s\n' "${failed[@]}" >&2
        exit 1
    fi

# Mount vafs on the embedded defaults (/srv/vafs, data in /var/lib/vafs), show it working on a 20G raw image, unmount.
demo: setup build
    #!/usr/bin/env bash
    set -euo pipefail
    mnt=/srv/vafs
    img=$mnt/demo.raw
    show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
    if mountpoint -q "$mnt"; then
        echo "demo: $mnt is already mounted; unmount it first (bin/vafs umount $mnt)" >&2
        exit 1
    fi
    mkdir -p "$mnt"
    show "{{ vafs }}" mount --background "$mnt"
    # Whatever happens below, do not leave the mount behind.
    trap 'echo; echo "\$ bin/vafs umount $mnt"; "{{ vafs }}" umount "$mnt" || umount "$mnt"' EXIT
    show qemu-img create -f raw "$img" 20G
    show qemu-img info "$img"
    show qemu-io -t none -f raw -c 'write -P 0xab 0 4M' -c 'read -P 0xab 0 4M' "$img"
    echo; echo "# 20G apparent size, 4M actually stored: a volume is sparse"
    show du -h --apparent-size "$img"
    show du -h "$img"
    show df -h "$mnt"
    echo; echo "# an instant clone and a snapshot: O(1) whatever the size; the clone shares every block"
    rm -f "$mnt/demo-clone.raw"
    show "{{ vafs }}" clone "$img" "$mnt/demo-clone.raw"
    snap=demo-$(date +%Y%m%d-%H%M%S)
    show "{{ vafs }}" snapshot create "$img" "$snap"
    show qemu-io -t none -f raw -c 'write -P 0xcd 0 1M' "$img"
    echo; echo "# the snapshot is a read-only file and still holds the old bytes"
    show qemu-io -r -f raw -c 'read -P 0xab 0 4M' "$mnt/.snapshots/demo.raw/$snap"
    show "{{ vafs }}" snapshot list "$img"
    show "{{ vafs }}" describe "$img"
    show "{{ vafs }}" df "$mnt"
    echo; echo "# $img stays in the volume store ($mnt on /var/lib/vafs) until you remove it."

# Mount vafs in the foreground on MNT (Ctrl-C unmounts).
run MNT="/srv/vafs": build
    mkdir -p "{{ MNT }}"
    "{{ vafs }}" mount "{{ MNT }}"
