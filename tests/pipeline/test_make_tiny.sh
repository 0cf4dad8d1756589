#!/usr/bin/env bash
# sdxl-gen make-tiny: the project's own model (the main job's default, with
# no ../shared). Checks: the folder is complete and byte-identical for a seed
# (another seed changes every weight file, no config); the engine loads it
# and generates deterministically; it refuses to overwrite a non-empty folder
# without --force, and leaves no temp folder behind; its tensor names and
# shapes are exactly the golden model's (diffusers-written) when
# ../shared/golden is present. Never skips: it needs no golden data.
set -u
gen="$1" bench="${2:-}"
g="${SDXL_GOLDEN_DIR:-${SDXL_GOLDEN_DIR_DEFAULT:-}}"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass+1)); else echo "FAIL $1"; fail=$((fail+1)); fi; }

"$gen" make-tiny "$tmp/a" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "make-tiny exits 0 and prints the folder" '[ $rc -eq 0 ] && [ "$(cat "$tmp/out")" = "$tmp/a" ]'
for f in model_index.json unet/config.json unet/diffusion_pytorch_model.safetensors \
         vae/config.json vae/diffusion_pytorch_model.safetensors text_encoder/config.json \
         text_encoder/model.safetensors text_encoder_2/config.json text_encoder_2/model.safetensors \
         tokenizer/vocab.json tokenizer/merges.txt tokenizer_2/vocab.json tokenizer_2/merges.txt \
         scheduler/scheduler_config.json; do
  [ -s "$tmp/a/$f" ] || { echo "  missing $f"; missing=1; }
done
check "diffusers layout complete" '[ -z "${missing:-}" ]'
check "no temp folder left behind" '[ -z "$(ls -d "$tmp"/a.tmp-* 2>/dev/null)" ]'
"$gen" make-tiny "$tmp/b" >/dev/null 2>&1
check "same seed: byte-identical folder" 'diff -r "$tmp/a" "$tmp/b" >/dev/null'
"$gen" make-tiny "$tmp/c" --seed 99 >/dev/null 2>&1
changed=$(diff -rq "$tmp/a" "$tmp/c" | grep -c safetensors)
check "another seed: all 4 weight files differ ($changed)" '[ "$changed" -eq 4 ]'
check "another seed: same configs" 'cmp -s "$tmp/a/unet/config.json" "$tmp/c/unet/config.json"'

"$gen" make-tiny "$tmp/a" >/dev/null 2>"$tmp/err"; rc=$?
check "non-empty folder refused, exit 2 ($(head -1 "$tmp/err"))" '[ $rc -eq 2 ] && grep -q -- "--force" "$tmp/err"'
"$gen" make-tiny "$tmp/a" --seed 99 --force >/dev/null 2>&1; rc=$?
check "--force replaces it" '[ $rc -eq 0 ] && diff -r "$tmp/a" "$tmp/c" >/dev/null'
touch "$tmp/file"
"$gen" make-tiny "$tmp/file" >/dev/null 2>"$tmp/err"; rc=$?
check "a file is refused, exit 2" '[ $rc -eq 2 ]'
"$gen" make-tiny "$tmp/x" --seed -1 >/dev/null 2>"$tmp/err"; rc=$?
check "bad --seed exits 2" '[ $rc -eq 2 ]'

args=(--prompt "a lighthouse at dusk" --seed 7 --steps 4 --width 128 --height 128 --quiet)
"$gen" generate --model "$tmp/b" "${args[@]}" --out "$tmp/1.png" >/dev/null 2>"$tmp/err"; rc=$?
check "the engine generates with it ($(head -1 "$tmp/err"))" '[ $rc -eq 0 ] && [ "$(head -c 8 "$tmp/1.png" | od -An -tx1 | tr -d " \n")" = "89504e470d0a1a0a" ]'
"$gen" generate --model "$tmp/b" "${args[@]}" --out "$tmp/2.png" >/dev/null 2>&1
check "deterministic: identical PNG again" 'cmp -s "$tmp/1.png" "$tmp/2.png"'
"$gen" generate --model "$tmp/c" "${args[@]}" --out "$tmp/3.png" >/dev/null 2>&1
check "another model seed, another image" '[ -s "$tmp/3.png" ] && ! cmp -s "$tmp/1.png" "$tmp/3.png"'

if [ -n "$bench" ]; then
  "$bench" check-shapes "$tmp/b" >"$tmp/shapes" 2>&1; rc=$?
  check "derived shapes match the written files" '[ $rc -eq 0 ]'
fi
if [ -n "$g" ] && [ -d "$g/model" ]; then
  /usr/bin/python3 - "$g/model" "$tmp/b" >"$tmp/cmp" 2>&1 <<'PY'; rc=$?
import json, struct, sys
def header(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in h.items()}
bad = 0
for sub, f in [("unet", "diffusion_pytorch_model.safetensors"),
               ("vae", "diffusion_pytorch_model.safetensors"),
               ("text_encoder", "model.safetensors"), ("text_encoder_2", "model.safetensors")]:
    a, b = header("%s/%s/%s" % (sys.argv[1], sub, f)), header("%s/%s/%s" % (sys.argv[2], sub, f))
    if a != b:
        bad += 1
        print(sub, "differs:", sorted(set(a) ^ set(b))[:5],
              [k for k in a if k in b and a[k] != b[k]][:5])
    else:
        print(sub, len(a), "tensors, same names, dtypes and shapes")
sys.exit(1 if bad else 0)
PY
  cat "$tmp/cmp"
  check "names, dtypes and shapes equal the golden (diffusers-written) model" '[ $rc -eq 0 ]'
else
  echo "note: no golden data: the comparison with the diffusers-written model is not run"
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
