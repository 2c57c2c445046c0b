#!/usr/bin/env bash
# Prepare the WMT data of the full-size recipes (recipes/<name>/transformer-base.yaml).
#
# This is the only step that downloads anything; `seqkd` itself reads local files only. It writes
# line-aligned plain-text files data/<name>/{train,valid,test}.{<source>,<target>}:
#
#   wmt16-en-ro  train: Europarl v8 + SETimes2 (in that order)                  -> train.{en,ro}
#                valid: newsdev2016, test: newstest2016 (via sacreBLEU)         -> {valid,test}.{en,ro}
#   wmt14-en-de  train: Europarl v7 + Common Crawl + News Commentary v9 (in that order)
#                                                                               -> train.{en,de}
#                valid: newstest2013, test: newstest2014, all 3003 sentences (via sacreBLEU)
#                                                                               -> {valid,test}.{en,de}
#
# Sources: the WMT16 and WMT14 translation-task pages on statmt.org (Europarl, Common Crawl, News
# Commentary); SETimes2 is the OPUS release the WMT16 page points to.
#
# The training archives are fetched with curl into data/<name>/raw/ (kept, so a second run does not
# download again). With --from DIR they are taken from DIR instead, which must hold the archives
# under the names below; if DIR/sacrebleu exists it is used as sacreBLEU's cache (a copy of
# ~/.sacrebleu), so the whole preparation can run offline.
#
# Cleaning is limited to what seqkd needs: carriage returns become spaces and pairs with an empty
# side are dropped (seqkd refuses empty lines). Length filtering happens in seqkd (max_seq_len).

set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/prepare-wmt.sh [--from DIR] {wmt16-en-ro|wmt14-en-de}

  wmt16-en-ro   Europarl v8 + SETimes2; newsdev2016 / newstest2016
  wmt14-en-de   Europarl v7 + Common Crawl + News Commentary v9; newstest2013 / newstest2014
  --from DIR    use archives already downloaded to DIR instead of fetching them
EOF
}

die() { echo "prepare-wmt: error: $*" >&2; exit 1; }
say() { echo "prepare-wmt: $*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FROM=""
NAME=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --from) [[ $# -ge 2 ]] || { usage >&2; die "--from needs a directory"; }; FROM="$2"; shift 2 ;;
        --from=*) FROM="${1#--from=}"; shift ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) [[ -z "$NAME" ]] || { usage >&2; die "give one data set"; }; NAME="$1"; shift ;;
    esac
done
[[ -n "$NAME" ]] || { usage >&2; exit 2; }

# Each data set: language pair; training archives in concatenation order, each as
# "file-name URL source-file target-file" (the file names inside the archive; * matches anything);
# and the sacreBLEU test sets used for validation and test.
case "$NAME" in
    wmt16-en-ro)
        SRC=en; TGT=ro
        ARCHIVES=(
            "training-parallel-ep-v8.tgz https://data.statmt.org/wmt16/translation-task/training-parallel-ep-v8.tgz europarl-v8.ro-en.en europarl-v8.ro-en.ro"
            "en-ro.txt.zip https://object.pouta.csc.fi/OPUS-SETIMES/v2/moses/en-ro.txt.zip SETIMES*.en-ro.en SETIMES*.en-ro.ro"
        )
        VALID_SET=wmt16/dev; TEST_SET=wmt16
        ;;
    wmt14-en-de)
        SRC=en; TGT=de
        ARCHIVES=(
            "training-parallel-europarl-v7.tgz https://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz europarl-v7.de-en.en europarl-v7.de-en.de"
            "training-parallel-commoncrawl.tgz https://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz commoncrawl.de-en.en commoncrawl.de-en.de"
            "training-parallel-nc-v9.tgz https://www.statmt.org/wmt14/training-parallel-nc-v9.tgz news-commentary-v9.de-en.en news-commentary-v9.de-en.de"
        )
        VALID_SET=wmt13; TEST_SET=wmt14/full
        ;;
    *) usage >&2; die "unknown data set '$NAME' (choose wmt16-en-ro or wmt14-en-de)" ;;
esac

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
SACREBLEU_BIN="$(dirname "$PYTHON")/sacrebleu"
[[ -x "$SACREBLEU_BIN" ]] || SACREBLEU_BIN=sacrebleu
command -v "$SACREBLEU_BIN" >/dev/null || die "sacrebleu not found (install seqkd's environment: scripts/venv.sh)"
command -v tar >/dev/null || die "tar not found"

[[ -z "$FROM" || -d "$FROM" ]] || die "--from $FROM: no such directory"
OUT="$ROOT/data/$NAME"
RAW="${FROM:-$OUT/raw}"
WORK="$OUT/tmp"
mkdir -p "$OUT" "$RAW"
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
if [[ -n "$FROM" && -d "$FROM/sacrebleu" ]]; then
    export SACREBLEU="$(cd "$FROM/sacrebleu" && pwd)"
    say "sacreBLEU cache: $SACREBLEU"
fi

# clean OUT_SRC OUT_TGT SRC1 TGT1 [SRC2 TGT2 ...]: concatenate line-aligned pairs of files,
# refusing files of different lengths, turning \r into spaces and dropping pairs with an empty side.
clean() {
    "$PYTHON" - "$@" <<'PY'
import os
import sys
from itertools import zip_longest

out_src, out_tgt, *inputs = sys.argv[1:]
kept = dropped = 0
with open(out_src + ".part", "w", encoding="utf-8") as fs, open(out_tgt + ".part", "w", encoding="utf-8") as ft:
    for src_path, tgt_path in zip(inputs[::2], inputs[1::2]):
        # newline="\n": a stray \r must not split a line, or the two sides would drift apart
        with open(src_path, encoding="utf-8", errors="replace", newline="\n") as a, \
             open(tgt_path, encoding="utf-8", errors="replace", newline="\n") as b:
            for n, (s, t) in enumerate(zip_longest(a, b), start=1):
                if s is None or t is None:
                    os.remove(out_src + ".part"); os.remove(out_tgt + ".part")
                    sys.exit(f"prepare-wmt: error: {src_path} and {tgt_path} differ in length (line {n})")
                s, t = s.replace("\r", " ").strip(), t.replace("\r", " ").strip()
                if s and t:
                    fs.write(s + "\n"); ft.write(t + "\n"); kept += 1
                else:
                    dropped += 1
os.replace(out_src + ".part", out_src)
os.replace(out_tgt + ".part", out_tgt)
print(f"prepare-wmt: {out_src.rsplit('/', 1)[-1]} / {out_tgt.rsplit('/', 1)[-1]}: "
      f"{kept} pairs ({dropped} with an empty side dropped)", file=sys.stderr)
PY
}

# find_one DIR PATTERN: the single file under DIR whose name matches PATTERN.
find_one() {
    local hits
    mapfile -t hits < <(find "$1" -type f -name "$2")
    [[ ${#hits[@]} -eq 1 ]] || die "expected one file named $2 in the archive, found ${#hits[@]}"
    echo "${hits[0]}"
}

# 1. Training archives: fetch (or take from --from DIR), extract the two sides, concatenate.
if [[ -n "$FROM" ]]; then
    for entry in "${ARCHIVES[@]}"; do
        read -r file url _ <<<"$entry"
        [[ -s "$FROM/$file" ]] || die "$FROM/$file not found (expected the archive from $url)"
    done
fi
PAIRS=()
i=0
for entry in "${ARCHIVES[@]}"; do
    read -r file url src_name tgt_name <<<"$entry"
    if [[ ! -s "$RAW/$file" ]]; then
        command -v curl >/dev/null || die "curl not found"
        say "downloading $url"
        curl -fL --retry 3 --retry-delay 5 -o "$RAW/$file.part" "$url" || die "download failed: $url"
        mv "$RAW/$file.part" "$RAW/$file"
    fi
    say "extracting $file"
    i=$((i + 1)); dir="$WORK/x$i"; mkdir -p "$dir"
    case "$file" in
        *.tgz) tar -xzf "$RAW/$file" -C "$dir" --wildcards "*$src_name" "*$tgt_name" ;;
        *.zip) "$PYTHON" -m zipfile -e "$RAW/$file" "$dir" ;;
        *) die "do not know how to extract $file" ;;
    esac
    src_file="$(find_one "$dir" "$src_name")"
    tgt_file="$(find_one "$dir" "$tgt_name")"
    PAIRS+=("$src_file" "$tgt_file")
done
say "building train.$SRC / train.$TGT"
clean "$OUT/train.$SRC" "$OUT/train.$TGT" "${PAIRS[@]}"

# 2. Validation and test sets from sacreBLEU (source and reference of the same set).
for split in valid test; do
    set_name="$VALID_SET"; [[ "$split" == test ]] && set_name="$TEST_SET"
    say "fetching $split set: sacrebleu -t $set_name -l $SRC-$TGT"
    for side in src ref; do
        file="$WORK/$split.$SRC"; [[ "$side" == ref ]] && file="$WORK/$split.$TGT"
        "$SACREBLEU_BIN" -t "$set_name" -l "$SRC-$TGT" --echo "$side" >"$file" \
            || die "sacrebleu could not provide $set_name $SRC-$TGT ($side); it needs the internet or its cache (\$SACREBLEU, default ~/.sacrebleu)"
    done
    clean "$OUT/$split.$SRC" "$OUT/$split.$TGT" "$WORK/$split.$SRC" "$WORK/$split.$TGT"
done

say "done: $OUT/{train,valid,test}.{$SRC,$TGT}"
say "next: seqkd run recipes/$NAME/transformer-base.yaml"
