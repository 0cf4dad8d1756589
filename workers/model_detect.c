/*  model_detect.c - the engine's architecture detector (sdx_detect_arch,
    safetensors headers only) behind the model catalogue's hook. Built only
    with the engine; kept apart so that model_catalog.c and handler_model.c
    never include the engine's headers. */
#include "model_catalog.h"

#include "sdx_model.h"

const char *model_detect_engine(const char *path, char *why, size_t why_len);

const char *model_detect_engine(const char *path, char *why, size_t why_len)
{
    sdx_arch_t a = sdx_detect_arch(path, why, why_len);
    return a == SDX_ARCH_UNKNOWN ? NULL : sdx_arch_name(a);
}
