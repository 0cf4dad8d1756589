#!/usr/bin/env python3
"""gen_catalog_c.py CATALOG_JSON OUT_C - proto/catalog.json as a C table for
the worker runtime (workers/sdx_worker_catalog.h): every message type with
its domain, whether it is planned, and its description. Run by meson at
build time, so the workers' planned lists and summaries are the catalogue's
and cannot drift from it."""
import json
import sys


def c_str(s):
    out = []
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append("\\%03o" % ch)
    return '"' + "".join(out) + '"'


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        cat = json.load(f)
    rows = []
    for dom, d in cat["domains"].items():
        for mt, m in d.get("messages", {}).items():
            rows.append("    {%s, %s, %s, %s}," % (c_str(mt), c_str(dom),
                                                  "true" if m.get("status") == "planned" else "false",
                                                  c_str(m.get("description", ""))))
    with open(dst, "w", encoding="utf-8") as f:
        f.write("/* generated from %s by tools/gen_catalog_c.py: do not edit */\n"
                "#include \"sdx_worker_catalog.h\"\n\n"
                "const sdx_catalog_row_t sdx_worker_catalog[] = {\n%s\n"
                "    {NULL, NULL, false, NULL},\n};\n" % ("proto/catalog.json", "\n".join(rows)))


if __name__ == "__main__":
    main()
