"""goldenref - the golden references (../shared/golden, SDXL_GOLDEN_DIR) as
fleet tests compare against them: a pipeline reference's float image and
the share of an 8-bit PNG's values within one level of it (the engine's
pipeline tests' image rule: >= 99.9% within 1/255). Standard library only.
"""
import array
import json
import os
import struct

import pngutil

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")


def tensor(rel_path, key):
    """A float32 tensor of a golden safetensors file, flat."""
    with open(os.path.join(GOLDEN, rel_path), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        body = f.read()
    a, b = h[key]["data_offsets"]
    v = array.array("f")
    v.frombytes(body[a:b])
    return v


def ref_image(case):
    """image_np [1, H, W, 3] in [0, 1] of ref/pipeline/<case>.safetensors."""
    return tensor(os.path.join("ref", "pipeline", case + ".safetensors"), "image_np")


def close_to(png, ref):
    """Share of the PNG's 8-bit RGB values within one level of ref x 255
    (0 when the sizes differ)."""
    _, _, bpp, px = pngutil.pixels(png)
    if bpp != 3 or len(px) != len(ref):
        return 0.0
    return sum(1 for p, r in zip(px, ref) if abs(p - r * 255.0) <= 1.0) / len(ref)
