#!/usr/bin/env bash
# Reproduce src/web/static/vendor/: the chat page's three browser libraries, at pinned versions,
# fetched from the npm registry with `npm pack` (npm checks each tarball's registry integrity).
# Only the minified browser builds and the licence files are copied; nothing is built.
# Run it after changing a version below, then commit src/web/static/vendor/ (MANIFEST.txt lists
# what was copied and its sha256).
set -euo pipefail
cd "$(dirname "$0")/.."

MARKED=18.2.1           # markdown -> HTML
DOMPURIFY=3.4.18        # HTML sanitizer
HIGHLIGHT=11.12.0       # code highlighting (@highlightjs/cdn-assets holds the browser builds)

dest=src/web/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch PACKAGE VERSION DIR: unpack the package tarball into $work/DIR
    local tarball
    tarball=$(cd "$work" && npm pack --silent "$1@$2")
    mkdir -p "$work/$3"
    tar -xzf "$work/$tarball" -C "$work/$3" --strip-components=1
}

fetch marked "$MARKED" marked
fetch dompurify "$DOMPURIFY" dompurify
fetch @highlightjs/cdn-assets "$HIGHLIGHT" highlight

rm -rf "$dest"
mkdir -p "$dest/marked-$MARKED" "$dest/dompurify-$DOMPURIFY" "$dest/highlight-$HIGHLIGHT"

# marked's ES module build is already minified.
cp "$work/marked/lib/marked.esm.js" "$work/marked/LICENSE" "$dest/marked-$MARKED/"
# DOMPurify (Apache-2.0 or MPL-2.0) ships its minified build as UMD: loaded as a classic
# script, it sets window.DOMPurify.
cp "$work/dompurify/dist/purify.min.js" "$work/dompurify/LICENSE" "$work/dompurify/LICENSE-MPL" \
    "$dest/dompurify-$DOMPURIFY/"
# highlight.js: the ES module build with its common languages, and the GitHub light/dark themes.
cp "$work/highlight/es/highlight.min.js" "$work/highlight/LICENSE" "$dest/highlight-$HIGHLIGHT/"
cp "$work/highlight/styles/github.min.css" "$dest/highlight-$HIGHLIGHT/github.min.css"
cp "$work/highlight/styles/github-dark.min.css" "$dest/highlight-$HIGHLIGHT/github-dark.min.css"

# Source maps are not shipped: drop the comments that point at them.
sed -i '/^\/\/# sourceMappingURL=/d' "$dest/marked-$MARKED/marked.esm.js" "$dest/dompurify-$DOMPURIFY/purify.min.js"

{
    echo "# Written by scripts/vendor-frontend.sh; do not edit by hand."
    echo "marked@$MARKED dompurify@$DOMPURIFY @highlightjs/cdn-assets@$HIGHLIGHT"
    (cd "$dest" && find . -type f ! -name MANIFEST.txt | LC_ALL=C sort | xargs sha256sum)
} > "$dest/MANIFEST.txt"

echo "vendored into $dest:"
cat "$dest/MANIFEST.txt"
