/*  test_model_catalog.c - the model catalogue (workers/model_catalog.c) on
    a temporary tree of small safetensors files this test writes itself (no
    golden data): kinds and names, a diffusers folder, headers read (tensor
    count, dtype, metadata), a broken file listed with its error, symlinks
    out of a root and pickles left out, SHA-256 against sha256sum(1), the
    SQLite hash cache hit after a "restart", a rescan after adding and
    removing files, near matches in errors, traversal refused. */
#include "model_catalog.h"

#include "../common/tcheck.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char s_tmp[256];

/* A safetensors file: tensors "name:DTYPE:d0xd1..." (zeros), metadata pairs. */
static void s_write_st(const char *rel, const char *const *tensors, const char *const *meta)
{
    char path[512], hdr[4096];
    snprintf(path, sizeof path, "%s/%s", s_tmp, rel);
    size_t used = (size_t)snprintf(hdr, sizeof hdr, "{");
    uint64_t off = 0;
    for (int i = 0; tensors[i]; i++) {
        char name[128], dt[16], dims[64];
        if (sscanf(tensors[i], "%127[^:]:%15[^:]:%63s", name, dt, dims) != 3)
            abort();
        uint64_t numel = 1, esz = strcmp(dt, "F32") == 0 ? 4 : strcmp(dt, "F16") == 0 ? 2 : 1;
        char shape[96] = "";
        size_t su = 0;
        for (char *tok = strtok(dims, "x"); tok; tok = strtok(NULL, "x")) {
            numel *= strtoull(tok, NULL, 10);
            su += (size_t)snprintf(shape + su, sizeof shape - su, "%s%s", su ? "," : "", tok);
        }
        used += (size_t)snprintf(hdr + used, sizeof hdr - used,
                                 "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%llu,"
                                 "%llu]}",
                                 i ? "," : "", name, dt, shape, (unsigned long long)off,
                                 (unsigned long long)(off + numel * esz));
        off += numel * esz;
    }
    if (meta && meta[0]) {
        used += (size_t)snprintf(hdr + used, sizeof hdr - used, ",\"__metadata__\":{");
        for (int i = 0; meta[i]; i += 2)
            used += (size_t)snprintf(hdr + used, sizeof hdr - used, "%s\"%s\":\"%s\"", i ? "," : "",
                                     meta[i], meta[i + 1]);
        used += (size_t)snprintf(hdr + used, sizeof hdr - used, "}");
    }
    used += (size_t)snprintf(hdr + used, sizeof hdr - used, "}");
    while (used % 8)
        hdr[used++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        abort();
    }
    uint64_t n = used;
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)(n >> (8 * i));
    fwrite(lenb, 1, 8, f);
    fwrite(hdr, 1, used, f);
    for (uint64_t i = 0; i < off; i++)
        fputc((int)(i * 31 % 251), f); /* not zeros: the hash sees content */
    fclose(f);
}

static void s_mkdir(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", s_tmp, rel);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        perror(p);
        abort();
    }
}

static void s_write_text(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", s_tmp, rel);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static void s_write_raw(const char *rel, const char *bytes, size_t len)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", s_tmp, rel);
    FILE *f = fopen(p, "wb");
    fwrite(bytes, 1, len, f);
    fclose(f);
}

/* sha256sum's hex of a file under the tree */
static void s_sha256sum(const char *rel, char hex[65])
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sha256sum '%s/%s'", s_tmp, rel);
    FILE *p = popen(cmd, "r");
    hex[0] = '\0';
    if (!p || fscanf(p, "%64s", hex) != 1)
        hex[0] = '\0';
    if (p)
        pclose(p);
}

static int s_detect_calls;

/* a stand-in detector: the engine's is tested in tests/load */
static const char *s_detect(const char *path, char *why, size_t why_len)
{
    s_detect_calls++;
    if (strstr(path, "lora")) {
        snprintf(why, why_len, "test detector: lora by path");
        return "lora";
    }
    snprintf(why, why_len, "test detector: cannot tell");
    return NULL;
}

static const model_entry_t *s_get(const model_entry_t *v, size_t n, model_kind_t k,
                                  const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].kind == k && strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

static bool s_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

static model_catalog_t *s_open(const char *db, char *err, size_t err_len)
{
    static char roots[MODEL_KIND_COUNT][300];
    static const char *const subs[MODEL_KIND_COUNT] = {
        "", "/vae", "/lora", "/controlnet", "/embeddings", "/upscalers"};
    model_catalog_config_t cfg = {0};
    for (int k = 0; k < MODEL_KIND_COUNT; k++) {
        snprintf(roots[k], sizeof roots[k], "%s/models%s", s_tmp, subs[k]);
        cfg.roots[k] = roots[k];
    }
    cfg.db_path = db;
    cfg.detect = s_detect;
    return model_catalog_new(&cfg, err, err_len);
}

int main(void)
{
    snprintf(s_tmp, sizeof s_tmp, "%s/sdxl-catalog-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(s_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    const char *ckpt[] = {"model.diffusion_model.input_blocks.0.0.weight:F16:8x4x3x3",
                          "model.diffusion_model.input_blocks.0.0.bias:F16:8",
                          "conditioner.embedders.0.transformer.x:F32:4", NULL};
    const char *meta[] = {"modelspec.title", "Tiny XL", "ss_base_model_version", "sdxl_base_v1-0",
                          NULL};
    const char *lora[] = {"lora_unet_a.lora_down.weight:F16:4x8",
                          "lora_unet_a.lora_up.weight:F16:8x4", NULL};
    const char *unet[] = {"conv_in.weight:F32:8x4x3x3", "conv_in.bias:F32:8", NULL};
    const char *vae[] = {"decoder.conv_in.weight:F16:4x4x3x3", NULL};
    const char *ti[] = {"clip_l:F32:2x16", "clip_g:F32:2x24", NULL};
    const char *rrdb[] = {"conv_first.weight:F32:8x3x3x3", "body.0.rdb1.conv1.weight:F32:4x8x3x3",
                          NULL};
    s_mkdir("models");
    s_mkdir("models/sub");
    s_mkdir("models/pipe");
    s_mkdir("models/pipe/unet");
    s_mkdir("models/pipe/vae");
    s_mkdir("models/tiny.config");
    s_mkdir("models/lora");
    s_mkdir("models/vae");
    s_mkdir("models/embeddings");
    s_mkdir("models/upscalers");
    s_mkdir("models/controlnet");
    s_mkdir("models/controlnet/cn-canny");
    s_mkdir("models/vae/custom");
    s_mkdir("models/vae/custom/vae-model");
    s_mkdir("models/lora/styles");
    s_mkdir("outside");
    s_write_st("models/tiny.safetensors", ckpt, meta);
    s_write_st("models/sub/deep.safetensors", ckpt, NULL);
    s_write_text("models/pipe/model_index.json",
                 "{\"_class_name\": \"StableDiffusionXLPipeline\"}");
    s_write_st("models/pipe/unet/diffusion_pytorch_model.safetensors", unet, NULL);
    s_write_st("models/pipe/vae/diffusion_pytorch_model.safetensors", vae, NULL);
    s_write_st("models/lora/styleA.safetensors", lora, NULL);
    s_write_st("models/lora/styleB.safetensors", lora, NULL);
    s_write_st("models/vae/sdxl_vae.safetensors", vae, NULL);
    /* sorted into subfolders, as the seeds' "custom/vae-model" */
    s_write_st("models/vae/custom/vae-model/diffusion_pytorch_model.safetensors", vae, NULL);
    s_write_text("models/vae/custom/vae-model/config.json", "{}");
    s_write_st("models/lora/styles/styleC.safetensors", lora, NULL);
    s_write_st("models/embeddings/tiny_ti.safetensors", ti, NULL);
    s_write_st("models/upscalers/RealESRGAN_x4plus.safetensors", rrdb, NULL);
    s_write_st("models/controlnet/cn-canny/diffusion_pytorch_model.safetensors", unet, NULL);
    s_write_text("models/controlnet/cn-canny/config.json", "{}");
    s_write_text("models/broken.safetensors", "\xff\xff\xff\xff\xff\xff\xff\x7fnot json");
    s_write_text("models/old.ckpt", "pickle");
    /* a pipeline whose UNet is in shards: listed, nothing single to hash */
    s_mkdir("models/shardpipe");
    s_mkdir("models/shardpipe/unet");
    s_write_text("models/shardpipe/model_index.json", "{}");
    s_write_st("models/shardpipe/unet/diffusion_pytorch_model-00001-of-00002.safetensors", unet,
               NULL);
    s_write_st("models/shardpipe/unet/diffusion_pytorch_model-00002-of-00002.safetensors", vae,
               NULL);
    /* a lone UNet folder: no checkpoint */
    s_mkdir("models/lone_unet");
    s_write_st("models/lone_unet/diffusion_pytorch_model.safetensors", unet, NULL);
    /* headers that are no safetensors: each listed with an error, none read past */
    s_write_raw("models/short.safetensors", "\x02\x00", 2);
    s_write_raw("models/array.safetensors", "\x02\x00\x00\x00\x00\x00\x00\x00[]", 10);
    s_write_raw("models/badshape.safetensors",
                "\x38\x00\x00\x00\x00\x00\x00\x00"
                "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
                64);
    s_write_raw("models/trunc.safetensors", "\xff\x00\x00\x00\x00\x00\x00\x00{\"a\":", 13);
    s_write_st("outside/secret.safetensors", ckpt, NULL);
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/outside/secret.safetensors", s_tmp);
    snprintf(p2, sizeof p2, "%s/models/escape.safetensors", s_tmp);
    CHECK(symlink(p1, p2) == 0);
    snprintf(p1, sizeof p1, "%s/models/tiny.safetensors", s_tmp);
    snprintf(p2, sizeof p2, "%s/models/alias.safetensors", s_tmp);
    CHECK(symlink(p1, p2) == 0); /* inside the root: listed */

    char db[300], err[2048];
    snprintf(db, sizeof db, "%s/cache.sqlite", s_tmp);
    model_catalog_t *c = s_open(db, err, sizeof err);
    CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "catalog: %s\n", err);
        return t_done();
    }

    /* entries */
    size_t n = 0;
    model_entry_t *v = model_catalog_list(c, -1, &n);
    CHECK(n == 18);
    CHECK(s_get(v, n, MODEL_VAE, "custom/vae-model") != NULL);
    CHECK(s_get(v, n, MODEL_LORA, "styles/styleC") != NULL);
    for (size_t i = 0; i < n; i++)
        printf("  %-11s %-22s %-12s %-11s %s %lld tensors %s\n", model_kind_name(v[i].kind),
               v[i].name, v[i].format, v[i].architecture, v[i].dtype, (long long)v[i].tensor_count,
               v[i].error);
    const model_entry_t *e = s_get(v, n, MODEL_CHECKPOINT, "tiny");
    CHECK(e && strcmp(e->format, "single_file") == 0 && e->tensor_count == 3 &&
          strcmp(e->dtype, "F16") == 0 && strcmp(e->path, "tiny.safetensors") == 0 &&
          e->params == 8 * 4 * 9 + 8 + 4 && !e->sha256[0] && !e->error[0]);
    CHECK(e && strcmp(e->architecture, "unknown") == 0 &&
          strstr(e->arch_detail, "cannot tell") != NULL);
    CHECK(s_get(v, n, MODEL_CHECKPOINT, "sub/deep") != NULL);
    CHECK(s_get(v, n, MODEL_CHECKPOINT, "alias") != NULL);
    e = s_get(v, n, MODEL_CHECKPOINT, "pipe");
    CHECK(e && strcmp(e->format, "diffusers") == 0 && e->tensor_count == 3 && e->files == 2 &&
          strcmp(e->hash_file, "pipe/unet/diffusion_pytorch_model.safetensors") == 0);
    e = s_get(v, n, MODEL_CHECKPOINT, "shardpipe");
    CHECK(e && e->files == 2 && e->tensor_count == 3 && !e->hash_file[0]);
    CHECK(!s_get(v, n, MODEL_CHECKPOINT, "lone_unet") &&
          !s_get(v, n, MODEL_CHECKPOINT, "lone_unet/diffusion_pytorch_model"));
    e = s_get(v, n, MODEL_CHECKPOINT, "broken");
    CHECK(e && e->error[0] && strstr(e->error, "safetensors") != NULL);
    const char *bads[] = {"short", "array", "badshape", "trunc"};
    for (size_t i = 0; i < 4; i++) {
        e = s_get(v, n, MODEL_CHECKPOINT, bads[i]);
        CHECK(e && e->error[0] && e->tensor_count == 0);
    }
    CHECK(!s_get(v, n, MODEL_CHECKPOINT, "escape"));      /* symlink out of the root */
    CHECK(!s_get(v, n, MODEL_CHECKPOINT, "old"));         /* a pickle */
    CHECK(!s_get(v, n, MODEL_CHECKPOINT, "lora/styleA")); /* the lora root is not checkpoints */
    CHECK(!s_get(v, n, MODEL_CHECKPOINT, "tiny.config"));
    e = s_get(v, n, MODEL_LORA, "styleA");
    CHECK(e && strcmp(e->architecture, "lora") == 0 && strcmp(e->dtype, "F16") == 0);
    CHECK(s_get(v, n, MODEL_VAE, "sdxl_vae") != NULL);
    CHECK(s_get(v, n, MODEL_EMBEDDING, "tiny_ti") != NULL);
    e = s_get(v, n, MODEL_UPSCALER, "RealESRGAN_x4plus");
    CHECK(e && strcmp(e->architecture, "rrdbnet") == 0 && strstr(e->arch_detail, "x4") != NULL);
    e = s_get(v, n, MODEL_CONTROLNET, "cn-canny");
    CHECK(e && strcmp(e->format, "component") == 0 &&
          strcmp(e->hash_file, "cn-canny/diffusion_pytorch_model.safetensors") == 0);
    free(v);
    CHECK(model_catalog_count(c, MODEL_LORA) == 3);
    v = model_catalog_list(c, MODEL_LORA, &n);
    CHECK(n == 3 && v && v[0].kind == MODEL_LORA && strcmp(v[0].name, "styleA") == 0);
    free(v);
    model_catalog_stats_t s;
    model_catalog_stats(c, &s);
    CHECK(s.skipped >= 3 && s.counts[MODEL_CHECKPOINT] == 10 && s.root_exists[MODEL_LORA]);

    /* find, near matches, traversal */
    model_entry_t one;
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiny", &one, err, sizeof err) == MODEL_OK &&
          strcmp(one.name, "tiny") == 0);
    CHECK(model_catalog_find(c, -1, "styleA", &one, err, sizeof err) == MODEL_OK &&
          one.kind == MODEL_LORA);
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiyn", &one, err, sizeof err) ==
              MODEL_NOT_FOUND &&
          strstr(err, "near: tiny") != NULL);
    printf("  near: %s\n", err);
    CHECK(model_catalog_find(c, MODEL_LORA, "style", &one, err, sizeof err) == MODEL_NOT_FOUND &&
          strstr(err, "styleA") && strstr(err, "styleB"));
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "styleA", &one, err, sizeof err) ==
              MODEL_NOT_FOUND &&
          strstr(err, "is a lora") != NULL);
    CHECK(model_catalog_find(c, MODEL_LORA, "zzzzqqqq", &one, err, sizeof err) == MODEL_NOT_FOUND &&
          strstr(err, "nothing near") != NULL);
    const char *bad[] = {"../outside/secret", "/etc/passwd", "sub/../tiny", "./tiny", "", "a\\b",
                         "sub//deep"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(model_catalog_find(c, -1, bad[i], &one, err, sizeof err) == MODEL_BAD_NAME);
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "escape", &one, err, sizeof err) ==
          MODEL_NOT_FOUND);

    /* hashes: computed once, then from the catalogue, the cache after a restart */
    char want[65];
    bool cached = true;
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiny", &one, err, sizeof err) == MODEL_OK);
    CHECK(model_catalog_hash(c, &one, NULL, NULL, &cached, err, sizeof err) == MODEL_OK);
    s_sha256sum("models/tiny.safetensors", want);
    CHECK(strlen(want) == 64);
    CHECK_STR(one.sha256, want);
    CHECK(strlen(one.autov2) == 10 && strncmp(one.autov2, want, 10) == 0);
    CHECK(!cached);
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiny", &one, err, sizeof err) == MODEL_OK &&
          strcmp(one.sha256, want) == 0); /* kept in the catalogue */
    CHECK(model_catalog_hash(c, &one, NULL, NULL, &cached, err, sizeof err) == MODEL_OK && cached);
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "pipe", &one, err, sizeof err) == MODEL_OK);
    CHECK(model_catalog_hash(c, &one, NULL, NULL, &cached, err, sizeof err) == MODEL_OK && !cached);
    s_sha256sum("models/pipe/unet/diffusion_pytorch_model.safetensors", want);
    CHECK_STR(one.sha256, want);
    /* alias is a symlink to tiny: same real file, so the cache answers */
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "alias", &one, err, sizeof err) == MODEL_OK);
    CHECK(model_catalog_hash(c, &one, NULL, NULL, &cached, err, sizeof err) == MODEL_OK && cached);
    model_catalog_stats(c, &s);
    CHECK(s.hashes_computed == 2 && s.hash_cache_hits >= 1);
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "shardpipe", &one, err, sizeof err) == MODEL_OK);
    CHECK(model_catalog_hash(c, &one, NULL, NULL, &cached, err, sizeof err) == MODEL_FAILED &&
          strstr(err, "shards") != NULL);

    char **kv = NULL;
    size_t nkv = 0;
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiny", &one, err, sizeof err) == MODEL_OK);
    CHECK(model_catalog_metadata(c, &one, 4, &kv, &nkv, err, sizeof err) == 0 && nkv == 2 &&
          strcmp(kv[0], "modelspec.title") == 0 && strcmp(kv[1], "Tiny") == 0); /* cut to 4 */
    model_kv_free(kv, nkv);

    model_catalog_destroy(&c);
    CHECK(c == NULL);
    s_detect_calls = 0;
    c = s_open(db, err, sizeof err);
    CHECK(c != NULL);
    if (!c)
        return t_done();
    CHECK(s_detect_calls == 13); /* not for the broken file */
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiny", &one, err, sizeof err) == MODEL_OK);
    s_sha256sum("models/tiny.safetensors", want);
    CHECK_STR(one.sha256, want); /* known from the cache at scan time */
    CHECK(model_catalog_hash(c, &one, NULL, NULL, &cached, err, sizeof err) == MODEL_OK && cached);
    model_catalog_stats(c, &s);
    CHECK(s.hashes_computed == 0 && s.hash_cache_hits >= 2);

    /* a changed file is hashed again */
    s_write_st("models/sub/deep.safetensors", lora, NULL);
    CHECK(model_catalog_rescan(c, NULL, err, sizeof err) == 0);
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "sub/deep", &one, err, sizeof err) == MODEL_OK);
    CHECK(model_catalog_hash(c, &one, NULL, NULL, &cached, err, sizeof err) == MODEL_OK && !cached);
    s_sha256sum("models/sub/deep.safetensors", want);
    CHECK_STR(one.sha256, want);

    /* rescan: one added, one removed */
    s_write_st("models/lora/styleC.safetensors", lora, NULL);
    snprintf(p1, sizeof p1, "%s/models/lora/styleB.safetensors", s_tmp);
    CHECK(unlink(p1) == 0);
    model_scan_report_t r;
    CHECK(model_catalog_rescan(c, &r, err, sizeof err) == 0);
    CHECK(r.n_added == 1 && s_has(r.added, r.n_added, "lora/styleC"));
    CHECK(r.n_removed == 1 && s_has(r.removed, r.n_removed, "lora/styleB"));
    CHECK(r.total == 18);
    model_scan_report_clear(&r);
    CHECK(r.added == NULL && r.n_added == 0);
    CHECK(model_catalog_find(c, MODEL_LORA, "styleB", &one, err, sizeof err) == MODEL_NOT_FOUND);
    CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiny", &one, err, sizeof err) == MODEL_OK &&
          one.sha256[0]); /* hashes survive a rescan */

    /* in memory: no file, still works */
    model_catalog_destroy(&c);
    c = s_open(NULL, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK(model_catalog_find(c, MODEL_CHECKPOINT, "tiny", &one, err, sizeof err) == MODEL_OK &&
              !one.sha256[0]);
        model_catalog_stats(c, &s);
        CHECK(strcmp(s.db_path, ":memory:") == 0);
        model_catalog_destroy(&c);
    }
    CHECK(model_kind_parse("lora") == MODEL_LORA && model_kind_parse("checkpoint") == 0 &&
          model_kind_parse("upscaler") == MODEL_UPSCALER && model_kind_parse("nope") == -1);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s_tmp);
    return t_done();
}
