/*  sdx_imgcodec.c - PNG/JPEG/WebP with A1111 metadata. See sdx_imgcodec.h.
    The EXIF block is written here (a TIFF header, IFD0 with one
    ExifIFDPointer, an Exif IFD with one UserComment): twenty lines of fixed
    layout, where a general EXIF library (libexif) would add a dependency to
    write one tag. */
#include "sdx_imgcodec.h"

#include "sdx_torch.h"

#include <ctype.h>
#include <strings.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SDX_WITH_JPEG
#include <jpeglib.h>
#endif
#ifdef SDX_WITH_WEBP
#include <webp/decode.h>
#include <webp/encode.h>
#include <webp/mux.h>
#endif

/* ---------------------------------------------------------------- infotext */

void sdx_infotext_init(sdx_infotext_t *it)
{
    memset(it, 0, sizeof *it);
    it->denoising_strength = -1;
}

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} s_sb_t;

static void s_put(s_sb_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void s_puts(s_sb_t *b, const char *s)
{
    s_put(b, s, strlen(s));
}

/* A1111's quote(): JSON string form when the value holds , : or a newline. */
static void s_quoted(s_sb_t *b, const char *v)
{
    if (!strpbrk(v, ",:\n")) {
        s_puts(b, v);
        return;
    }
    s_put(b, "\"", 1);
    for (const char *p = v; *p; p++) {
        char esc[8];
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            s_put(b, esc, 2);
        } else if (c == '\n') {
            s_put(b, "\\n", 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            s_puts(b, esc);
        } else {
            s_put(b, p, 1);
        }
    }
    s_put(b, "\"", 1);
}

static void s_param(s_sb_t *b, bool *first, const char *key, const char *val)
{
    if (!*first)
        s_puts(b, ", ");
    *first = false;
    s_puts(b, key);
    s_puts(b, ": ");
    s_quoted(b, val);
}

/* %g as Python's str() prints these numbers: 7.0 -> "7.0", 6.5 -> "6.5" */
static void s_num(char *buf, size_t len, double v)
{
    snprintf(buf, len, "%.10g", v);
    if (!strpbrk(buf, ".eEn"))
        snprintf(buf + strlen(buf), len - strlen(buf), ".0");
}

char *sdx_infotext_format(const sdx_infotext_t *it)
{
    s_sb_t b = {0};
    char t[64];
    s_puts(&b, it->prompt ? it->prompt : "");
    if (it->negative_prompt && *it->negative_prompt) {
        s_puts(&b, "\nNegative prompt: ");
        s_puts(&b, it->negative_prompt);
    }
    s_puts(&b, "\n");
    bool first = true;
    snprintf(t, sizeof t, "%d", it->steps);
    s_param(&b, &first, "Steps", t);
    if (it->sampler && *it->sampler)
        s_param(&b, &first, "Sampler", it->sampler);
    s_num(t, sizeof t, it->cfg_scale);
    s_param(&b, &first, "CFG scale", t);
    snprintf(t, sizeof t, "%lld", (long long)it->seed);
    s_param(&b, &first, "Seed", t);
    snprintf(t, sizeof t, "%dx%d", it->width, it->height);
    s_param(&b, &first, "Size", t);
    if (it->model_hash && *it->model_hash)
        s_param(&b, &first, "Model hash", it->model_hash);
    if (it->model_name && *it->model_name)
        s_param(&b, &first, "Model", it->model_name);
    if (it->denoising_strength >= 0) {
        s_num(t, sizeof t, it->denoising_strength);
        s_param(&b, &first, "Denoising strength", t);
    }
    if (it->clip_skip > 1) {
        snprintf(t, sizeof t, "%d", it->clip_skip);
        s_param(&b, &first, "Clip skip", t);
    }
    if (it->extra && *it->extra) {
        s_puts(&b, ", ");
        s_puts(&b, it->extra);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static const struct {
    const char *cls, *name;
} s_samplers[] = {
    {"DDIMScheduler", "DDIM"},
    {"DDPMScheduler", "DDPM"},
    {"PNDMScheduler", "PLMS"},
    {"LMSDiscreteScheduler", "LMS"},
    {"EulerDiscreteScheduler", "Euler"},
    {"EulerAncestralDiscreteScheduler", "Euler a"},
    {"HeunDiscreteScheduler", "Heun"},
    {"KDPM2DiscreteScheduler", "DPM2"},
    {"KDPM2AncestralDiscreteScheduler", "DPM2 a"},
    {"DPMSolverMultistepScheduler", "DPM++ 2M"},
    {"DPMSolverSinglestepScheduler", "DPM++ SDE"},
    {"DPMSolverSDEScheduler", "DPM++ SDE"},
    {"UniPCMultistepScheduler", "UniPC"},
    {"LCMScheduler", "LCM"},
    {"DEISMultistepScheduler", "DEIS"},
    {"EDMEulerScheduler", "Euler EDM"},
};

const char *sdx_a1111_sampler(const char *cls, bool karras, char *buf, size_t len)
{
    const char *name = cls ? cls : "";
    for (size_t i = 0; i < sizeof s_samplers / sizeof s_samplers[0]; i++)
        if (cls && strcmp(cls, s_samplers[i].cls) == 0)
            name = s_samplers[i].name;
    snprintf(buf, len, "%s%s", name, karras ? " Karras" : "");
    return buf;
}

/* ---------------------------------------------------------------- formats */

sdx_img_format_t sdx_img_format_parse(const char *name)
{
    if (!name)
        return SDX_FMT_UNKNOWN;
    if (strcasecmp(name, "png") == 0)
        return SDX_FMT_PNG;
    if (strcasecmp(name, "jpeg") == 0 || strcasecmp(name, "jpg") == 0)
        return SDX_FMT_JPEG;
    if (strcasecmp(name, "webp") == 0)
        return SDX_FMT_WEBP;
    return SDX_FMT_UNKNOWN;
}

const char *sdx_img_format_name(sdx_img_format_t f)
{
    static const char *const n[] = {"png", "jpeg", "webp", "unknown"};
    return n[f <= SDX_FMT_UNKNOWN ? f : SDX_FMT_UNKNOWN];
}

const char *sdx_img_format_mime(sdx_img_format_t f)
{
    static const char *const n[] = {"image/png", "image/jpeg", "image/webp",
                                    "application/octet-stream"};
    return n[f <= SDX_FMT_UNKNOWN ? f : SDX_FMT_UNKNOWN];
}

sdx_img_format_t sdx_img_format_sniff(const void *data, size_t len)
{
    const uint8_t *d = data;
    if (len >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0)
        return SDX_FMT_PNG;
    if (len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return SDX_FMT_JPEG;
    if (len >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0)
        return SDX_FMT_WEBP;
    return SDX_FMT_UNKNOWN;
}

bool sdx_img_format_available(sdx_img_format_t f)
{
    switch (f) {
    case SDX_FMT_PNG:
        return true;
#ifdef SDX_WITH_JPEG
    case SDX_FMT_JPEG:
        return true;
#endif
#ifdef SDX_WITH_WEBP
    case SDX_FMT_WEBP:
        return true;
#endif
    default:
        return false;
    }
}

int sdx_img_format_max_side(sdx_img_format_t f)
{
    switch (f) {
    case SDX_FMT_JPEG:
        return 65500; /* libjpeg's JPEG_MAX_DIMENSION */
    case SDX_FMT_WEBP:
        return 16383; /* WEBP_MAX_DIMENSION */
    default:
        return 65535; /* what this engine makes at most */
    }
}

void sdx_encode_opts_init(sdx_encode_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->format = SDX_FMT_PNG;
    o->quality = 95;
}

/* ---------------------------------------------------------------- EXIF */

static void s_le16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

static void s_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int sdx_exif_usercomment(const char *text, size_t max_len, uint8_t **out, size_t *out_len)
{
    /* UTF-8 -> UTF-16BE, cut at a character boundary to fit max_len */
    const size_t head = 8 + 2 + 12 + 4 + 2 + 12 + 4; /* TIFF hdr, IFD0(1), Exif IFD(1) */
    size_t n = strlen(text ? text : "");
    uint8_t *u = malloc(8 + 4 * n + 4);
    if (!u)
        return sdx_set_error("exif: out of memory");
    memcpy(u, "UNICODE\0", 8);
    size_t ul = 8;
    const unsigned char *s = (const unsigned char *)(text ? text : "");
    for (size_t i = 0; i < n;) {
        uint32_t cp = s[i];
        int k = cp < 0x80 ? 1 : cp < 0xE0 ? 2 : cp < 0xF0 ? 3 : 4;
        if (i + (size_t)k > n)
            k = 1;
        if (k > 1) {
            cp &= (uint32_t)(0xFF >> (k + 1));
            for (int j = 1; j < k; j++)
                cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        i += (size_t)k;
        size_t need = cp >= 0x10000 ? 4 : 2;
        if (max_len && head + ul + need > max_len)
            break;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            unsigned hi = 0xD800 + (cp >> 10), lo = 0xDC00 + (cp & 0x3FF);
            u[ul++] = (uint8_t)(hi >> 8), u[ul++] = (uint8_t)hi;
            u[ul++] = (uint8_t)(lo >> 8), u[ul++] = (uint8_t)lo;
        } else {
            u[ul++] = (uint8_t)(cp >> 8), u[ul++] = (uint8_t)cp;
        }
    }
    size_t total = head + ul;
    uint8_t *b = calloc(1, total);
    if (!b) {
        free(u);
        return sdx_set_error("exif: out of memory");
    }
    memcpy(b, "II*\0", 4);
    s_le32(b + 4, 8);               /* IFD0 at 8 */
    s_le16(b + 8, 1);               /* one entry */
    s_le16(b + 10, 0x8769);         /* ExifIFDPointer */
    s_le16(b + 12, 4);              /* LONG */
    s_le32(b + 14, 1);
    s_le32(b + 18, 8 + 2 + 12 + 4); /* Exif IFD right after IFD0 */
    s_le32(b + 22, 0);              /* no next IFD */
    uint8_t *e = b + 26;
    s_le16(e, 1);
    s_le16(e + 2, 0x9286); /* UserComment */
    s_le16(e + 4, 7);      /* UNDEFINED */
    s_le32(e + 6, (uint32_t)ul);
    s_le32(e + 10, (uint32_t)head);
    s_le32(e + 14, 0);
    memcpy(b + head, u, ul);
    free(u);
    *out = b;
    *out_len = total;
    return 0;
}

/* ---------------------------------------------------------------- encode */

#ifdef SDX_WITH_JPEG
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} s_jerr_t;

static void s_jpeg_error(j_common_ptr c)
{
    s_jerr_t *e = (s_jerr_t *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

typedef struct {
    unsigned char *mem; /* libjpeg's malloc'd output */
    unsigned long len;
} s_jdst_t;

/* The libjpeg part, alone in its function: nothing it reads is written after
   setjmp, so longjmp clobbers nothing. */
static int s_jpeg_compress(const sdx_image_t *img, int quality, const uint8_t *app, size_t app_len,
                           uint8_t *row, s_jdst_t *dst)
{
    struct jpeg_compress_struct c;
    s_jerr_t je;
    c.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = s_jpeg_error;
    if (setjmp(je.jb)) {
        jpeg_destroy_compress(&c);
        return sdx_set_error("jpeg: %s", je.msg);
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &dst->mem, &dst->len);
    c.image_width = (JDIMENSION)img->width;
    c.image_height = (JDIMENSION)img->height;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (app)
        jpeg_write_marker(&c, JPEG_APP0 + 1, app, (unsigned)app_len);
    while (c.next_scanline < c.image_height) {
        const uint8_t *src = img->pixels + (size_t)c.next_scanline * img->width * img->channels;
        JSAMPROW rp = (JSAMPROW)src;
        if (img->channels == 4) {
            for (int x = 0; x < img->width; x++)
                memcpy(row + 3 * x, src + 4 * x, 3);
            rp = row;
        }
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return 0;
}

static int s_jpeg_encode(const sdx_image_t *img, const sdx_encode_opts_t *o, uint8_t **out,
                         size_t *out_len)
{
    uint8_t *row = malloc((size_t)img->width * 3), *app = NULL;
    size_t app_len = 0;
    s_jdst_t dst = {0};
    int rc = row ? 0 : sdx_set_error("jpeg: out of memory");
    if (rc == 0 && o->text) {
        uint8_t *exif = NULL;
        size_t exif_len = 0;
        /* APP1: "Exif\0\0" + TIFF, at most 65533 bytes */
        rc = sdx_exif_usercomment(o->text, 65533 - 6, &exif, &exif_len);
        if (rc == 0 && (app = malloc(exif_len + 6))) {
            memcpy(app, "Exif\0\0", 6);
            memcpy(app + 6, exif, exif_len);
            app_len = exif_len + 6;
        } else if (rc == 0) {
            rc = sdx_set_error("jpeg: out of memory");
        }
        free(exif);
    }
    int q = o->quality < 1 ? 1 : o->quality > 100 ? 100 : o->quality;
    if (rc == 0)
        rc = s_jpeg_compress(img, q, app, app_len, row, &dst);
    free(row);
    free(app);
    if (rc != 0) {
        free(dst.mem);
        return -1;
    }
    *out = dst.mem; /* libjpeg's malloc'd buffer, handed over as it is */
    *out_len = dst.len;
    return 0;
}
#endif

#ifdef SDX_WITH_WEBP
static int s_webp_encode(const sdx_image_t *img, const sdx_encode_opts_t *o, uint8_t **out,
                         size_t *out_len)
{
    WebPConfig cfg;
    WebPPicture pic;
    WebPMemoryWriter wr;
    if (!WebPConfigInit(&cfg) || !WebPPictureInit(&pic))
        return sdx_set_error("webp: library version mismatch");
    cfg.lossless = o->lossless ? 1 : 0;
    cfg.quality = (float)(o->quality < 1 ? 1 : o->quality > 100 ? 100 : o->quality);
    if (o->lossless) {
        cfg.exact = 1; /* keep RGB under transparent pixels too: bit-exact */
        cfg.quality = 75;
        cfg.method = 4;
    }
    pic.use_argb = o->lossless ? 1 : 0;
    pic.width = img->width;
    pic.height = img->height;
    int ok = img->channels == 4 ? WebPPictureImportRGBA(&pic, img->pixels, img->width * 4)
                                : WebPPictureImportRGB(&pic, img->pixels, img->width * 3);
    if (!ok) {
        WebPPictureFree(&pic);
        return sdx_set_error("webp: out of memory");
    }
    WebPMemoryWriterInit(&wr);
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &wr;
    ok = WebPEncode(&cfg, &pic);
    int code = pic.error_code;
    WebPPictureFree(&pic);
    if (!ok) {
        WebPMemoryWriterClear(&wr);
        return sdx_set_error("webp: encoding failed (error %d)", code);
    }
    if (!o->text) {
        *out = malloc(wr.size);
        if (!*out) {
            WebPMemoryWriterClear(&wr);
            return sdx_set_error("webp: out of memory");
        }
        memcpy(*out, wr.mem, wr.size);
        *out_len = wr.size;
        WebPMemoryWriterClear(&wr);
        return 0;
    }
    uint8_t *exif = NULL;
    size_t exif_len = 0;
    if (sdx_exif_usercomment(o->text, 0, &exif, &exif_len) != 0) {
        WebPMemoryWriterClear(&wr);
        return -1;
    }
    WebPData bits = {wr.mem, wr.size}, ex = {exif, exif_len}, res = {0};
    WebPMux *mux = WebPMuxCreate(&bits, 1);
    int rc = -1;
    if (mux && WebPMuxSetChunk(mux, "EXIF", &ex, 1) == WEBP_MUX_OK &&
        WebPMuxAssemble(mux, &res) == WEBP_MUX_OK && (*out = malloc(res.size))) {
        memcpy(*out, res.bytes, res.size);
        *out_len = res.size;
        rc = 0;
    } else {
        sdx_set_error("webp: cannot add the EXIF chunk");
    }
    WebPDataClear(&res);
    WebPMuxDelete(mux);
    WebPMemoryWriterClear(&wr);
    free(exif);
    return rc;
}
#endif

int sdx_image_encode(const sdx_image_t *img, const sdx_encode_opts_t *o, uint8_t **out,
                     size_t *out_len)
{
    sdx_encode_opts_t d;
    if (!o) {
        sdx_encode_opts_init(&d);
        o = &d;
    }
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 4))
        return sdx_set_error("encode: needs an RGB or RGBA image");
    int side = sdx_img_format_max_side(o->format);
    if (img->width > side || img->height > side)
        return sdx_set_error("%s holds at most %d pixels a side; the image is %dx%d",
                             sdx_img_format_name(o->format), side, img->width, img->height);
    switch (o->format) {
    case SDX_FMT_PNG: {
        const char *kv[34];
        size_t n = 0;
        if (o->text) {
            kv[n++] = "parameters";
            kv[n++] = o->text;
        }
        for (size_t i = 0; o->png_extra && o->png_extra[i] && o->png_extra[i + 1] && n < 32;
             i += 2) {
            kv[n++] = o->png_extra[i];
            kv[n++] = o->png_extra[i + 1];
        }
        kv[n] = NULL;
        return sdx_png_encode(img, n ? kv : NULL, out, out_len);
    }
    case SDX_FMT_JPEG:
#ifdef SDX_WITH_JPEG
        return s_jpeg_encode(img, o, out, out_len);
#else
        return sdx_set_error("this build has no JPEG encoder (libjpeg-turbo)");
#endif
    case SDX_FMT_WEBP:
#ifdef SDX_WITH_WEBP
        return s_webp_encode(img, o, out, out_len);
#else
        return sdx_set_error("this build has no WebP encoder (libwebp)");
#endif
    default:
        return sdx_set_error("encode: unknown format");
    }
}

/* ---------------------------------------------------------------- decode */

#ifdef SDX_WITH_JPEG
static int s_jpeg_decode(const void *data, size_t len, const uint64_t max_pixels,
                     sdx_image_t *img)
{
    struct jpeg_decompress_struct c;
    s_jerr_t je;
    c.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = s_jpeg_error;
    if (setjmp(je.jb)) {
        jpeg_destroy_decompress(&c);
        sdx_image_clear(img);
        return sdx_set_error("jpeg: %s", je.msg);
    }
    jpeg_create_decompress(&c);
    jpeg_mem_src(&c, data, (unsigned long)len);
    jpeg_read_header(&c, TRUE);
    if ((uint64_t)c.image_width * c.image_height > max_pixels) {
        jpeg_destroy_decompress(&c);
        return sdx_set_error("image: larger than %llu pixels", (unsigned long long)max_pixels);
    }
    if (c.image_width > SDX_IMAGE_MAX_SIDE || c.image_height > SDX_IMAGE_MAX_SIDE) {
        unsigned w = c.image_width, h = c.image_height;
        jpeg_destroy_decompress(&c);
        return sdx_set_error("image: %ux%u has a side over %d pixels", w, h, SDX_IMAGE_MAX_SIDE);
    }
    c.out_color_space = JCS_RGB;
    jpeg_start_decompress(&c);
    img->width = (int)c.output_width;
    img->height = (int)c.output_height;
    img->channels = 3;
    img->pixels = malloc((size_t)img->width * img->height * 3);
    if (!img->pixels) {
        jpeg_destroy_decompress(&c);
        return sdx_set_error("jpeg: out of memory");
    }
    while (c.output_scanline < c.output_height) {
        JSAMPROW r = img->pixels + (size_t)c.output_scanline * img->width * 3;
        jpeg_read_scanlines(&c, &r, 1);
    }
    jpeg_finish_decompress(&c);
    jpeg_destroy_decompress(&c);
    return 0;
}
#endif

int sdx_image_decode(const void *data, size_t len, uint64_t max_pixels, sdx_image_t *img)
{
    memset(img, 0, sizeof *img);
    if (!max_pixels)
        max_pixels = 64u << 20;
    sdx_img_format_t f = sdx_img_format_sniff(data, len);
    switch (f) {
    case SDX_FMT_PNG: {
        /* the size from IHDR (bytes 16..23, big-endian) before anything is
           inflated: a small file must not make the decoder allocate 800 MB */
        const uint8_t *d = data;
        if (len >= 24 && memcmp(d + 12, "IHDR", 4) == 0) {
            uint64_t w = (uint64_t)d[16] << 24 | (uint64_t)d[17] << 16 | d[18] << 8 | d[19];
            uint64_t h = (uint64_t)d[20] << 24 | (uint64_t)d[21] << 16 | d[22] << 8 | d[23];
            if (w * h > max_pixels)
                return sdx_set_error("image: %llux%llu is larger than %llu pixels",
                                     (unsigned long long)w, (unsigned long long)h,
                                     (unsigned long long)max_pixels);
            if (w > SDX_IMAGE_MAX_SIDE || h > SDX_IMAGE_MAX_SIDE)
                return sdx_set_error("image: %llux%llu has a side over %d pixels",
                                     (unsigned long long)w, (unsigned long long)h,
                                     SDX_IMAGE_MAX_SIDE);
        }
        return sdx_png_decode(data, len, img);
    }
#ifdef SDX_WITH_JPEG
    case SDX_FMT_JPEG:
        return s_jpeg_decode(data, len, max_pixels, img);
#endif
#ifdef SDX_WITH_WEBP
    case SDX_FMT_WEBP: {
        int w = 0, h = 0;
        if (!WebPGetInfo(data, len, &w, &h))
            return sdx_set_error("webp: not a valid WebP image");
        if ((uint64_t)w * (uint64_t)h > max_pixels)
            return sdx_set_error("image: larger than %llu pixels", (unsigned long long)max_pixels);
        uint8_t *px = WebPDecodeRGB(data, len, &w, &h);
        if (!px)
            return sdx_set_error("webp: cannot decode");
        img->pixels = malloc((size_t)w * h * 3);
        if (img->pixels)
            memcpy(img->pixels, px, (size_t)w * h * 3);
        WebPFree(px);
        if (!img->pixels)
            return sdx_set_error("webp: out of memory");
        img->width = w, img->height = h, img->channels = 3;
        return 0;
    }
#endif
    default:
        return sdx_set_error(f == SDX_FMT_UNKNOWN
                                 ? "image: not a PNG, JPEG or WebP file"
                                 : "image: this build cannot decode %s",
                             sdx_img_format_name(f));
    }
}
