/*  sdx_gpu.h - GPU discovery without a build-time CUDA dependency.

    NVML (libnvidia-ml.so.1) is loaded with dlopen at run time; when it is
    missing the CUDA driver API (libcuda.so.1) is tried; when both are missing
    the host simply has no GPU (count 0), which is not an error. Indices are
    the host's (NVML / nvidia-smi order, PCI bus order); with the CUDA
    fallback they are the CUDA driver's order.

    Not for: allocating or computing on a GPU (the engine does that).
*/
#ifndef SDX_GPU_H
#define SDX_GPU_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sdx_gpu sdx_gpu_t;

typedef struct {
    int index;
    char name[128];
    char uuid[96];          /* "GPU-..." ("" if unknown) */
    int64_t mem_total;      /* bytes */
    int64_t mem_free;       /* bytes, -1 if unknown */
    int64_t mem_used;       /* bytes, -1 if unknown */
    int util_gpu;           /* percent, -1 if unknown */
    int util_mem;           /* percent, -1 if unknown */
    int temp_c;             /* -1 if unknown */
    double power_w;         /* < 0 if unknown */
    int cc_major, cc_minor; /* compute capability, -1 if unknown */
} sdx_gpu_info_t;

/* Probe the GPUs. allow_cuda: the CUDA driver fallback may call cuInit() in
   this process (after which CUDA_VISIBLE_DEVICES no longer takes effect);
   pass false to probe NVML only. Returns NULL only on OOM; caller destroys. */
sdx_gpu_t *sdx_gpu_new(bool allow_cuda);
void sdx_gpu_destroy(sdx_gpu_t **self_p);

/* "nvml", "cuda" or "none" */
const char *sdx_gpu_backend(const sdx_gpu_t *self);
/* Driver version text ("" if unknown); borrowed. */
const char *sdx_gpu_driver_version(const sdx_gpu_t *self);
/* Why no backend loaded ("" when one did); borrowed. */
const char *sdx_gpu_error(const sdx_gpu_t *self);
int sdx_gpu_count(const sdx_gpu_t *self);
/* Fresh figures for GPU `index`. 0, or -1 if there is no such GPU. Thread-safe. */
int sdx_gpu_query(sdx_gpu_t *self, int index, sdx_gpu_info_t *out);

/* Count CUDA devices in a child process (so this process's CUDA state stays
   untouched); -1 if the driver is missing or fails. */
int sdx_gpu_cuda_count_isolated(void);

#endif
