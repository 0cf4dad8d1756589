/*  fake_nvml.c - a stand-in libnvidia-ml.so.1 for tests on hosts without a
    GPU: it exercises the worker's dlopen/NVML path (workers/sdx_gpu.c),
    --gpu selection and the device domain's GPU reporting. FAKE_NVML_COUNT
    sets the number of GPUs (default 2). Only the entry points sdx_gpu.c
    uses, with NVML's signatures; 0 is NVML_SUCCESS. Not a real driver. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned long long total, free, used;
} fake_memory_t;
typedef struct {
    unsigned int gpu, memory;
} fake_util_t;

static unsigned s_count(void)
{
    const char *c = getenv("FAKE_NVML_COUNT");
    return c ? (unsigned)atoi(c) : 2u;
}

static int s_index(void *dev)
{
    return (int)((size_t)dev - 1);
}

int nvmlInit_v2(void)
{
    return 0;
}
int nvmlShutdown(void)
{
    return 0;
}
int nvmlDeviceGetCount_v2(unsigned int *n)
{
    *n = s_count();
    return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **dev)
{
    if (i >= s_count())
        return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    *dev = (void *)(size_t)(i + 1);
    return 0;
}
int nvmlDeviceGetName(void *dev, char *name, unsigned int len)
{
    snprintf(name, len, "Fake GPU %d", s_index(dev));
    return 0;
}
int nvmlDeviceGetUUID(void *dev, char *uuid, unsigned int len)
{
    snprintf(uuid, len, "GPU-fake0000-0000-0000-0000-%012d", s_index(dev));
    return 0;
}
int nvmlDeviceGetMemoryInfo(void *dev, fake_memory_t *m)
{
    m->total = 80ULL << 30;
    m->used = (1ULL + (unsigned)s_index(dev)) << 30;
    m->free = m->total - m->used;
    return 0;
}
int nvmlDeviceGetUtilizationRates(void *dev, fake_util_t *u)
{
    u->gpu = 5;
    u->memory = 1;
    return 0;
}
int nvmlDeviceGetTemperature(void *dev, int sensor, unsigned int *t)
{
    *t = 40;
    return 0;
}
int nvmlDeviceGetPowerUsage(void *dev, unsigned int *mw)
{
    *mw = 70000;
    return 0;
}
int nvmlDeviceGetCudaComputeCapability(void *dev, int *major, int *minor)
{
    *major = 9;
    *minor = 0;
    return 0;
}
int nvmlSystemGetDriverVersion(char *v, unsigned int len)
{
    snprintf(v, len, "550.00-fake");
    return 0;
}
