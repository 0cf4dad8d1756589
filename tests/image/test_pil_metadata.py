#!/usr/bin/python3
"""The metadata sdx_imgcodec writes, read back by an independent reader
(PIL, Debian's python3-pil) the way A1111 reads it: PNG text chunk
"parameters"; JPEG and WebP EXIF UserComment (0x9286 in the Exif IFD,
"UNICODE\\0" + UTF-16BE, as piexif.helper writes it). Also: lossless WebP
decodes to exactly the pixels PIL decodes from the PNG.
Usage: test_pil_metadata.py TEST_IMGCODEC   (exit 77 without PIL)"""
import os
import subprocess
import sys
import tempfile

try:
    from PIL import Image
except ImportError:
    print("SKIP: needs python3-pil")
    sys.exit(77)

WANT = ('a lighthouse, at dusk: (dramatic:1.2) "clouds"\nNegative prompt: blurry, low quality\n'
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 1234567, Size: 1024x768, "
        "Model hash: 31e35c80fc, Model: sd_xl_base_1.0")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("ok  ", what)
    else:
        failed += 1
        print("FAIL", what)


def user_comment(im):
    exif = im.getexif()
    raw = exif.get_ifd(0x8769).get(0x9286)
    if not isinstance(raw, bytes) or not raw.startswith(b"UNICODE\0"):
        return None
    return raw[8:].decode("utf-16-be")


with tempfile.TemporaryDirectory() as d:
    p = subprocess.run([sys.argv[1], d], capture_output=True, text=True)
    check(p.returncode == 0, "test_imgcodec wrote the samples (rc %d)" % p.returncode)
    if p.returncode != 0:
        print(p.stdout[-2000:])
    png = Image.open(os.path.join(d, "sample.png"))
    check(png.text.get("parameters") == WANT, "PNG: PIL reads the 'parameters' text chunk")
    jpg = Image.open(os.path.join(d, "sample.jpg"))
    check(jpg.format == "JPEG" and user_comment(jpg) == WANT,
          "JPEG: PIL reads the EXIF UserComment: %r" % (user_comment(jpg) or "")[:60])
    for name in ("sample.webp", "sample-lossless.webp"):
        w = Image.open(os.path.join(d, name))
        check(w.format == "WEBP" and user_comment(w) == WANT,
              "%s: PIL reads the EXIF UserComment" % name)
    lossless = Image.open(os.path.join(d, "sample-lossless.webp")).convert("RGB")
    check(list(lossless.getdata()) == list(png.convert("RGB").getdata()),
          "lossless WebP is bit-exact (PIL decodes the same pixels as from the PNG)")
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
