#!/usr/bin/env bash
# Gathers the libraries the GPU check scripts need beyond nvcc, a C++ compiler, CMake and a
# PyPI torch: GoogleTest, Google Benchmark, Eigen, CLI11 (device_check) and ICU, zlib, libpng,
# libjpeg, libwebp, toml++, cairo (sdxl_check), plus pkg-config itself, as the Debian 12
# packages of this machine unpacked into one folder, with every shared library they load. Run
# it here (Debian 12 with network; no root needed), copy the folder to the GPU machine, and
# give it to the scripts with --deps DIR.
#
#   bench/gpu/prepare_deps.sh DIR
#
# DIR/root mirrors the packages' files (DIR/root/usr/include, .../lib/x86_64-linux-gnu, ...),
# with pkg-config files made relocatable (prefix from their own location) and without
# documentation, manuals and the static libraries no CMake configuration refers to;
# DIR/packages.txt lists the packages and versions. Fails when DIR would exceed 64 MB.
set -euo pipefail

[[ $# -eq 1 ]] || {
  echo "usage: $0 DIR" >&2
  exit 2
}
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$out/root
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
limit_bytes=$((64 * 1024 * 1024))

# What the CMake configuration looks for (headers, CMake configs, pkg-config files), and the
# pkg-config program for machines without one.
packages=(
  libgtest-dev libgmock-dev libbenchmark-dev libeigen3-dev libcli11-dev
  libicu-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev libwebp-dev libtomlplusplus-dev
  libcairo2-dev pkgconf-bin
)
# Libraries every machine with a C++ compiler and Python has: not copied.
base_libraries='^(libc|libm|libdl|libpthread|librt|libresolv|ld-linux.*|libstdc\+\+|libgcc_s|libz)\.so'

work=$(mktemp -d)
chmod 777 "$work"  # apt-get download writes as the _apt user
trap 'rm -rf "$work"' EXIT
rm -rf "$root"
mkdir -p "$root"

declare -A fetched=()
fetch() {  # fetch PACKAGE...: downloads and unpacks the packages not fetched yet
  local wanted=()
  for package in "$@"; do
    [[ -n ${fetched[$package]:-} ]] && continue
    fetched[$package]=1
    wanted+=("$package")
  done
  [[ ${#wanted[@]} -gt 0 ]] || return 0
  (cd "$work" && apt-get download -q "${wanted[@]}" >/dev/null)
  for package in "${wanted[@]}"; do
    dpkg -x "$work/${package}"_*.deb "$root"
    dpkg-deb -f "$work/${package}"_*.deb Package Version | paste -sd' ' >>"$work/packages.txt"
  done
}

# The package of this machine that holds a library file name (e.g. libicuuc.so.72).
owner_of() {
  dpkg -S "/usr/lib/$arch/$1" "/lib/$arch/$1" 2>/dev/null | head -1 | cut -d: -f1 || true
}

fetch "${packages[@]}"
# cairo's GObject and script-interpreter libraries (and their GLib dependencies) are not used.
rm -f "$root/usr/lib/$arch"/libcairo-{gobject,script-interpreter}.so \
  "$root/usr/lib/$arch"/pkgconfig/cairo-{gobject,script-interpreter}.pc

# Until nothing is missing: the targets of dangling development symlinks (libfoo.so ->
# libfoo.so.N) and the DT_NEEDED entries of every shared library, from the packages of this
# machine that hold them.
for round in 1 2 3 4 5 6 7 8; do
  missing=()
  while IFS= read -r link; do
    missing+=("$(basename "$(readlink "$link")")")
  done < <(find "$root" -xtype l -name '*.so*')
  while IFS= read -r library; do
    while IFS= read -r needed; do
      [[ $needed =~ $base_libraries ]] && continue
      [[ -e $root/usr/lib/$arch/$needed || -e $root/lib/$arch/$needed ]] || missing+=("$needed")
    done < <(readelf -d "$library" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done < <(find "$root" -type f \( -name '*.so*' -o -path '*/bin/*' \))
  [[ ${#missing[@]} -eq 0 ]] && break
  owners=()
  for name in $(printf '%s\n' "${missing[@]}" | sort -u); do
    owner=$(owner_of "$name")
    [[ -n $owner ]] || {
      echo "prepare_deps: no installed package holds $name (install the -dev packages of" \
        "cmake/install-debian-deps.sh first)" >&2
      exit 1
    }
    owners+=("$owner")
  done
  fetch $(printf '%s\n' "${owners[@]}" | sort -u)
done

# Trim: documentation, manuals, and static libraries that no CMake configuration names.
rm -rf "$root"/usr/share/{doc,man,lintian,info,bug,locale} "$root"/etc
while IFS= read -r archive; do
  name=$(basename "$archive")
  grep -rqs --include='*.cmake' -F "$name" "$root" || rm -f "$archive"
done < <(find "$root" -name '*.a')
# pkg-config files relative to their own directory (the folder may move).
while IFS= read -r pc; do
  dir=$(dirname "$pc")
  up=${dir#"$root"/usr/}
  rel=$(echo "$up" | sed 's|[^/][^/]*|..|g')
  sed -i "s|^prefix=/usr\$|prefix=\${pcfiledir}/$rel|" "$pc"
  # Requires.private and Libs.private serve static linking only; dropping them spares the
  # X11, GLib and font packages that cairo's would pull in.
  sed -i '/^Requires.private:/d; /^Libs.private:/d' "$pc"
done < <(find "$root" -name '*.pc')
ln -sf pkgconf "$root/usr/bin/pkg-config"

sort -u "$work/packages.txt" >"$out/packages.txt"
bytes=$(du -sb "$out" | cut -f1)
echo "prepare_deps: $(wc -l <"$out/packages.txt") packages, $((bytes / 1024 / 1024)) MB in $out"
if [[ $bytes -gt $limit_bytes ]]; then
  echo "prepare_deps: more than 64 MB" >&2
  exit 1
fi
