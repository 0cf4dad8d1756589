"""pngutil - decode the PNGs the engine writes (8-bit RGB/RGBA, not
interlaced) to raw pixel rows with the standard library only, so tests can
compare images by their pixels rather than by their bytes (text chunks such
as the request's parameters may differ where the pixels do not).
Not a general PNG reader: other bit depths and interlacing raise ValueError.
"""
import struct
import zlib


def chunks(data):
    """[(type, payload)] of a PNG; raises ValueError when malformed."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("no PNG signature")
    out, i = [], 8
    while i + 12 <= len(data):
        n, = struct.unpack(">I", data[i:i + 4])
        typ, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        crc, = struct.unpack(">I", data[i + 8 + n:i + 12 + n])
        if zlib.crc32(typ + body) & 0xffffffff != crc:
            raise ValueError("bad CRC in %r" % typ)
        out.append((typ, body))
        i += 12 + n
    return out


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def pixels(data):
    """(width, height, channels, bytes of the unfiltered rows)."""
    ch = chunks(data)
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", ch[0][1])
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError("only 8-bit RGB/RGBA, non-interlaced PNGs")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(b for t, b in ch if t == b"IDAT"))
    stride = w * bpp
    out, prev = bytearray(), bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xff
            elif f == 2:
                line[x] = (line[x] + b) & 0xff
            elif f == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 0xff
            elif f == 4:
                line[x] = (line[x] + _paeth(a, b, c)) & 0xff
            elif f != 0:
                raise ValueError("unknown PNG filter %d" % f)
        out += line
        prev = line
    return w, h, bpp, bytes(out)


def text(data):
    """The tEXt chunks as {keyword: text}."""
    out = {}
    for t, b in chunks(data):
        if t == b"tEXt" and b"\0" in b:
            k, v = b.split(b"\0", 1)
            out[k.decode("latin-1")] = v.decode("latin-1")
    return out
