#!/usr/bin/env bash
#! vendor/rebuild.sh: rebuild Sextant's patched copies of published crates.
#!
#! For each crate in CRATES below it gets the published .crate (through
#! cargo, from the crates.io registry cargo is configured with, or from
#! $SEXTANT_CRATES, a folder of .crate files, for offline use), checks its
#! sha256 against vendor/patches/<crate>-<version>/SHA256, unpacks it into
#! a temporary folder, deletes the paths listed in
#! vendor/patches/<crate>-<version>/REMOVE, applies
#! vendor/patches/<crate>-<version>/NN-*.diff in order with
#! `patch -p1 --no-backup-if-mismatch` (any reject, fuzz or offset is an
#! error), and compares the result with vendor/<crate>: if they differ
#! (content, a file present on one side only, or the executable bit), it
#! replaces vendor/<crate> with the result; if they are the same it leaves
#! vendor/<crate> alone (so unchanged files keep their mtimes and cargo does
#! not rebuild the crate).
#!
#! Usage:
#!   vendor/rebuild.sh                 rebuild every copy that differs
#!   vendor/rebuild.sh --check         rebuild in a temporary folder only and
#!                                     exit 1 (printing the differences) if
#!                                     any copy in vendor/ is not what the
#!                                     crate and its diffs make
#!   vendor/rebuild.sh --pristine DIR  write each crate unpacked, with REMOVE
#!                                     applied but no diff, to
#!                                     DIR/<crate>-<version> (to write a new
#!                                     diff against)
#!   ... [CRATE ...]                   only these crates (names as in CRATES)
#!
#! Needs bash, cargo (unless $SEXTANT_CRATES has the files), tar, gzip,
#! sha256sum, GNU patch >= 2.7 and diff. It does not build anything: `cargo
#! fetch` only downloads (the .crate, plus any of its dependencies cargo has
#! not cached yet; Sextant's Cargo.lock is copied into the throwaway project
#! so that those are the versions Sextant already uses).
#! See vendor/README.md for what each diff fixes.
set -euo pipefail

# name:version of each vendored crate; vendor/<name> holds the copy and
# vendor/patches/<name>-<version>/ its SHA256, REMOVE and diffs.
CRATES=(
    pgwire:0.41.1
    arrow-pg:0.16.0
    datafusion-pg-catalog:0.19.0
)

VENDOR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$VENDOR")
CARGO=${CARGO:-cargo}

die() {
    echo "rebuild.sh: $*" >&2
    exit 1
}

mode=rebuild
pristine_dir=
selected=()
while [ $# -gt 0 ]; do
    case $1 in
        --check) mode=check ;;
        --pristine)
            [ $# -ge 2 ] || die "--pristine needs a folder"
            mode=pristine
            pristine_dir=$2
            shift
            ;;
        -h | --help)
            sed -n -E 's/^#!( |$)//p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) selected+=("$1") ;;
    esac
    shift
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sextant-vendor.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# sha256 of a file.
sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# fetch_crate NAME VERSION SHA256 DEST: put the verified .crate at DEST.
fetch_crate() {
    local name=$1 ver=$2 want=$3 dest=$4 f
    local file=$name-$ver.crate
    local cache=${CARGO_HOME:-$HOME/.cargo}/registry/cache
    if [ -n "${SEXTANT_CRATES:-}" ]; then
        f=$SEXTANT_CRATES/$file
        [ -f "$f" ] || die "$f: no such file (SEXTANT_CRATES is set)"
        [ "$(sha256_of "$f")" = "$want" ] || die "$f: sha256 is not $want"
        cp "$f" "$dest"
        return
    fi
    # cargo keeps every .crate it downloads in its registry cache.
    for f in "$cache"/*/"$file"; do
        if [ -f "$f" ] && [ "$(sha256_of "$f")" = "$want" ]; then
            cp "$f" "$dest"
            return
        fi
    done
    # A throwaway project that depends on exactly NAME VERSION; `cargo
    # fetch` downloads it into the cache. Run from inside the project so
    # that no .cargo/config.toml of this repository applies.
    local proj=$TMP/fetch-$name
    mkdir -p "$proj"
    cat >"$proj/Cargo.toml" <<EOF
[package]
name = "sextant-vendor-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "lib.rs"

[dependencies]
$name = { version = "=$ver", default-features = false }

[workspace]
EOF
    : >"$proj/lib.rs"
    if [ -f "$ROOT/Cargo.lock" ]; then
        cp "$ROOT/Cargo.lock" "$proj/Cargo.lock"
    fi
    local host
    host=$("${RUSTC:-rustc}" -vV | sed -n 's/^host: //p')
    (cd "$proj" && "$CARGO" fetch --quiet --target "$host") ||
        die "cargo fetch of $name $ver failed"
    for f in "$cache"/*/"$file"; do
        if [ -f "$f" ] && [ "$(sha256_of "$f")" = "$want" ]; then
            cp "$f" "$dest"
            return
        fi
    done
    die "$file: cargo fetched no file with sha256 $want (looked in $cache/*/)"
}

# unpack NAME VERSION PATCHDIR OUT: OUT becomes the crate with REMOVE applied.
unpack() {
    local name=$1 ver=$2 patches=$3 out=$4
    local want
    want=$(awk -v f="$name-$ver.crate" '$2 == f { print $1 }' "$patches/SHA256")
    [ -n "$want" ] || die "$patches/SHA256 has no line for $name-$ver.crate"
    fetch_crate "$name" "$ver" "$want" "$TMP/$name-$ver.crate"
    local x=$TMP/unpack-$name
    mkdir -p "$x"
    # -m: files get the current time, not the archive's, so that cargo sees
    # them as changed; --no-same-*: umask and owner of whoever runs this.
    tar -xzmf "$TMP/$name-$ver.crate" -C "$x" --no-same-owner --no-same-permissions
    [ -d "$x/$name-$ver" ] || die "$name-$ver.crate does not hold $name-$ver/"
    if ! grep -Fqx "name = \"$name\"" "$x/$name-$ver/Cargo.toml" ||
        ! grep -Fqx "version = \"$ver\"" "$x/$name-$ver/Cargo.toml"; then
        die "$name-$ver.crate: its Cargo.toml is not $name $ver"
    fi
    local p
    while IFS= read -r p || [ -n "$p" ]; do
        case $p in '' | '#'*) continue ;; esac
        case $p in /* | *..*) die "$patches/REMOVE: bad path $p" ;; esac
        [ -e "$x/$name-$ver/$p" ] || die "$patches/REMOVE: $p is not in $name-$ver.crate"
        rm -rf -- "${x:?}/$name-$ver/$p"
    done <"$patches/REMOVE"
    mv "$x/$name-$ver" "$out"
    rmdir "$x"
}

# apply_diffs DIR PATCHDIR: apply PATCHDIR/NN-*.diff in order, exactly.
apply_diffs() {
    local dir=$1 patches=$2 d out
    for d in "$patches"/[0-9][0-9]-*.diff; do
        [ -f "$d" ] || continue
        if ! out=$(cd "$dir" && patch -p1 --batch --forward --fuzz=0 \
            --no-backup-if-mismatch --reject-file=- <"$d" 2>&1); then
            printf '%s\n' "$out" >&2
            die "$(basename "$d") does not apply"
        fi
        # Exactly: patch says nothing but "patching file ..." (an offset,
        # fuzz or anything else it reports is an error).
        if grep -qv '^patching file ' <<<"$out"; then
            printf '%s\n' "$out" >&2
            die "$(basename "$d") did not apply exactly"
        fi
    done
}

# listing DIR: every file and symlink, with its executable bit.
listing() {
    (cd "$1" && find . \( -type f -o -type l \) \
        \( -perm -u+x -printf 'x %P\n' -o -printf '- %P\n' \) | LC_ALL=C sort)
}

# same DIR1 DIR2: true if both hold the same files, contents and x bits.
same() {
    [ -d "$2" ] || return 1
    diff -r -q "$1" "$2" >/dev/null 2>&1 || return 1
    [ "$(listing "$1")" = "$(listing "$2")" ]
}

status=0
for entry in "${CRATES[@]}"; do
    name=${entry%%:*}
    ver=${entry#*:}
    if [ ${#selected[@]} -gt 0 ]; then
        keep=0
        for s in "${selected[@]}"; do [ "$s" = "$name" ] && keep=1; done
        [ $keep = 1 ] || continue
    fi
    patches=$VENDOR/patches/$name-$ver
    [ -d "$patches" ] || die "no $patches"

    if [ $mode = pristine ]; then
        mkdir -p "$pristine_dir"
        [ ! -e "$pristine_dir/$name-$ver" ] || die "$pristine_dir/$name-$ver exists"
        unpack "$name" "$ver" "$patches" "$pristine_dir/$name-$ver"
        echo "$name $ver: unpatched in $pristine_dir/$name-$ver"
        continue
    fi

    built=$TMP/$name
    unpack "$name" "$ver" "$patches" "$built"
    apply_diffs "$built" "$patches"
    target=$VENDOR/$name

    if same "$built" "$target"; then
        echo "$name $ver: vendor/$name is up to date"
        continue
    fi
    if [ $mode = check ]; then
        echo "$name $ver: vendor/$name differs from the crate with its diffs:"
        if [ -d "$target" ]; then
            (cd "$TMP" && diff -ru "$name" "$target" | sed "s#$VENDOR/#vendor/#g") || true
            diff <(listing "$built") <(listing "$target") || true
        else
            echo "  vendor/$name is missing"
        fi
        status=1
        continue
    fi
    # Replace: move the new tree next to the old one first, then swap.
    staged=$VENDOR/.$name.new
    rm -rf "$staged"
    mv "$built" "$staged" 2>/dev/null || { cp -a "$built" "$staged" && rm -rf "$built"; }
    rm -rf "$target"
    mv "$staged" "$target"
    echo "$name $ver: vendor/$name rebuilt"
done
exit $status
