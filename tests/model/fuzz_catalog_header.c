/*  fuzz_catalog_header.c - the model catalogue's safetensors header reader
    (model_header_check: the length, the JSON, tensor shapes, __metadata__)
    on arbitrary bytes. libFuzzer entry; tests/model replays the safetensors
    seed corpus (tests/fuzz/corpus/safetensors) and regressions/catalog
    through it with any compiler, and tools/fuzz-run catalog fuzzes it. */
#include "model_catalog.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t tensors;
    size_t n_meta;
    char err[512];
    if (model_header_check(data, size, &tensors, &n_meta, err, sizeof err) != 0 && !err[0])
        __builtin_trap(); /* a refusal always says why */
    return 0;
}
