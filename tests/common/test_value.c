/*  test_value.c - the owned message tree: construction, maps (order,
    replace, take, loose and dotted lookup), typed reads, clone/equal. */
#include "sdx_value.h"
#include "tcheck.h"

#include <stdint.h>

int main(void)
{
    sdx_value_t *m = sdx_value_map_new();
    CHECK(sdx_map_set_str(m, "guidance_scale", "x") == 0);
    CHECK(sdx_map_set_float(m, "guidance_scale", 7.5) == 0); /* replace in place */
    CHECK(sdx_map_len(m) == 1 && sdx_map_num(m, "guidance_scale", 0) == 7.5);
    sdx_map_set_int(m, "seed", 42);
    sdx_map_set_bool(m, "flag", true);
    sdx_value_t *inner = sdx_value_map_new();
    sdx_map_set_int(inner, "width", 1024);
    sdx_map_set(m, "dimensions", inner);
    CHECK(m->u.map.items[0].key[0] == 'g' && strcmp(m->u.map.items[3].key, "dimensions") == 0);
    CHECK(sdx_map_get_loose(m, "GuidanceScale") == sdx_map_get(m, "guidance_scale"));
    CHECK(sdx_map_get_loose(m, "guidanceScale") != NULL &&
          sdx_map_get_loose(m, "guidance") == NULL);
    CHECK(sdx_key_equal_loose("RequestId", "request_id") &&
          sdx_key_equal_loose("request-id", "REQUEST_ID") && sdx_key_equal_loose("", "_-"));
    CHECK(!sdx_key_equal_loose("request", "request_id") && !sdx_key_equal_loose("a b", "ab"));
    CHECK(sdx_map_int(sdx_map_get_path(m, "dimensions"), "width", 0) == 1024);
    CHECK(sdx_map_get_path(m, "dimensions.width")->u.i == 1024);
    CHECK(sdx_map_get_path(m, "dimensions.height") == NULL &&
          sdx_map_get_path(m, "seed.x") == NULL);
    CHECK(sdx_map_int(m, "seed", 0) == 42 && sdx_map_int(m, "missing", -1) == -1);
    CHECK(sdx_map_int(m, "guidance_scale", -1) == -1); /* 7.5 is not integral */
    CHECK(sdx_map_bool(m, "flag", false) && sdx_map_str(m, "seed", "d")[0] == 'd');
    sdx_value_t *c = sdx_value_clone(m);
    CHECK(sdx_value_equal(m, c));
    sdx_map_set_int(sdx_map_get(c, "dimensions"), "width", 512);
    CHECK(!sdx_value_equal(m, c));
    sdx_value_t *t = sdx_map_take(m, "seed");
    CHECK(t && t->u.i == 42 && sdx_map_get(m, "seed") == NULL && sdx_map_len(m) == 3);
    sdx_value_destroy(&t);
    CHECK(t == NULL);
    CHECK(sdx_map_del(m, "flag") && !sdx_map_del(m, "flag"));
    sdx_value_t *a = sdx_value_array_new();
    for (int i = 0; i < 100; i++)
        CHECK(sdx_array_push(a, sdx_value_int_new(i)) == 0);
    CHECK(sdx_array_len(a) == 100 && sdx_array_at(a, 99)->u.i == 99 &&
          sdx_array_at(a, 100) == NULL);
    /* setters on the wrong type fail and free their argument */
    CHECK(sdx_map_set(a, "k", sdx_value_nil_new()) == -1);
    CHECK(sdx_array_push(m, sdx_value_nil_new()) == -1);
    /* equality: int vs float differ, maps unordered */
    sdx_value_t *i3 = sdx_value_int_new(3), *f3 = sdx_value_float_new(3.0);
    CHECK(!sdx_value_equal(i3, f3));
    sdx_value_t *x = sdx_value_map_new(), *y = sdx_value_map_new();
    sdx_map_set_int(x, "a", 1);
    sdx_map_set_int(x, "b", 2);
    sdx_map_set_int(y, "b", 2);
    sdx_map_set_int(y, "a", 1);
    CHECK(sdx_value_equal(x, y));
    sdx_value_t *bin = sdx_value_bin_new("\0\1\2", 3), *ext = sdx_value_ext_new(-1, "abcd", 4);
    sdx_value_t *bc = sdx_value_clone(bin), *ec = sdx_value_clone(ext);
    CHECK(sdx_value_equal(bin, bc) && sdx_value_equal(ext, ec) && bc->u.bin.ptr[2] == 2);
    sdx_value_t *s = sdx_value_strn_new("a\0b", 3);
    CHECK(s->u.str.len == 3 && s->u.str.ptr[3] == '\0');
    CHECK_STR(sdx_vtype_name(SDX_BIN), "binary");
    sdx_value_t *vals[] = {m, c, a, i3, f3, x, y, bin, ext, bc, ec, s};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++)
        sdx_value_destroy(&vals[i]);
    sdx_value_destroy(&vals[0]); /* NULL: no-op */
    return t_done();
}
