#!/usr/bin/env bash
# sdxl-gen generate end to end: a PNG and latents are written, the summary
# line printed; bad input exits 2 with one clear line.
set -u
gen="$1"
g="${SDXL_GOLDEN_DIR:-}"
[ -d "$g/model" ] || { echo "SKIP: golden data not found"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass+1)); else echo "FAIL $1"; fail=$((fail+1)); fi; }

out=$("$gen" generate --model "$g/model" --prompt "a red cube" --negative "blurry" --seed 7 \
      --steps 3 --width 64 --height 96 --scheduler "DPM++ 2M Karras" --out "$tmp/a.png" \
      --latents-out "$tmp/a.safetensors" --quiet 2>"$tmp/err"); rc=$?
echo "$out"
check "generate exits 0" '[ $rc -eq 0 ]'
check "summary line" '[[ "$out" == generated\ 1\ image*64x96* ]]'
check "PNG written" '[ "$(head -c 8 "$tmp/a.png" | od -An -tx1 | tr -d " \n")" = "89504e470d0a1a0a" ]'
check "latents written" '[ -s "$tmp/a.safetensors" ]'

"$gen" generate --model "$g/model" --prompt "a blue sphere" --negative "blurry" --seed 7 --steps 3 \
   --width 64 --height 96 --scheduler "DPM++ 2M Karras" --out "$tmp/b.png" --quiet >/dev/null 2>&1
check "another prompt gives another image" '! cmp -s "$tmp/a.png" "$tmp/b.png"'
"$gen" generate --model "$g/model" --prompt "a red cube" --negative "blurry" --seed 7 --steps 3 \
   --width 64 --height 96 --scheduler "DPM++ 2M Karras" --out "$tmp/c.png" --quiet >/dev/null 2>&1
check "deterministic: identical run gives identical PNG" 'cmp -s "$tmp/a.png" "$tmp/c.png"'

"$gen" generate --model "$tmp/missing" --prompt x >/dev/null 2>"$tmp/err"; rc=$?
check "missing model exits 2 ($(head -1 "$tmp/err"))" '[ $rc -eq 2 ] && [ $(wc -l <"$tmp/err") -eq 1 ]'
"$gen" generate --model "$g/model" --prompt x --width 100 >/dev/null 2>"$tmp/err"; rc=$?
check "bad size exits 2 ($(head -1 "$tmp/err"))" '[ $rc -eq 2 ] && grep -q "multiple of 8" "$tmp/err"'
"$gen" generate --model "$g/model/vae/diffusion_pytorch_model.safetensors" --prompt x >/dev/null 2>"$tmp/err"; rc=$?
check "wrong architecture exits 2 ($(head -1 "$tmp/err"))" '[ $rc -eq 2 ] && grep -qi "vae" "$tmp/err" && [ $(wc -l <"$tmp/err") -eq 1 ]'
"$gen" generate --model "$g/model" --prompt x --scheduler Bogus --steps 1 --width 64 --height 64 >/dev/null 2>"$tmp/err"; rc=$?
check "unknown scheduler exits 2" '[ $rc -eq 2 ]'

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
