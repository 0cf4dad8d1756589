/*  sdx_gpu.c - NVML / CUDA driver probing through dlopen (see sdx_gpu.h).

    Only the handful of entry points we call are declared here, with the
    types of the public NVML and CUDA driver headers (they are stable ABI).
*/
#include "sdx_gpu.h"

#include "sdx_log.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- NVML */
typedef void *nvml_device_t;
typedef struct {
    unsigned long long total, free, used;
} nvml_memory_t;
typedef struct {
    unsigned int gpu, memory;
} nvml_util_t;

typedef int (*nvml_init_fn)(void);
typedef int (*nvml_shutdown_fn)(void);
typedef int (*nvml_count_fn)(unsigned int *);
typedef int (*nvml_handle_fn)(unsigned int, nvml_device_t *);
typedef int (*nvml_name_fn)(nvml_device_t, char *, unsigned int);
typedef int (*nvml_mem_fn)(nvml_device_t, nvml_memory_t *);
typedef int (*nvml_util_fn)(nvml_device_t, nvml_util_t *);
typedef int (*nvml_temp_fn)(nvml_device_t, int, unsigned int *);
typedef int (*nvml_power_fn)(nvml_device_t, unsigned int *);
typedef int (*nvml_cc_fn)(nvml_device_t, int *, int *);
typedef int (*nvml_driver_fn)(char *, unsigned int);

/* ---- CUDA driver */
typedef int (*cu_init_fn)(unsigned int);
typedef int (*cu_count_fn)(int *);
typedef int (*cu_get_fn)(int *, int);
typedef int (*cu_name_fn)(char *, int, int);
typedef int (*cu_mem_fn)(size_t *, int);
typedef int (*cu_attr_fn)(int *, int, int);
typedef int (*cu_version_fn)(int *);
typedef int (*cu_uuid_fn)(unsigned char *, int);

#define CU_ATTR_CC_MAJOR 75
#define CU_ATTR_CC_MINOR 76

struct sdx_gpu {
    pthread_mutex_t lock;
    void *lib;
    const char *backend;
    char driver[64];
    char error[256];
    int count;
    struct {
        nvml_shutdown_fn shutdown;
        nvml_handle_fn handle;
        nvml_name_fn name;
        nvml_name_fn uuid;
        nvml_mem_fn mem;
        nvml_util_fn util;
        nvml_temp_fn temp;
        nvml_power_fn power;
        nvml_cc_fn cc;
    } nv;
    struct {
        cu_get_fn get;
        cu_name_fn name;
        cu_mem_fn mem;
        cu_attr_fn attr;
        cu_uuid_fn uuid;
    } cu;
};

static void *s_sym(void *lib, const char *a, const char *b)
{
    void *p = dlsym(lib, a);
    if (!p && b)
        p = dlsym(lib, b);
    return p;
}

static int s_load_nvml(sdx_gpu_t *self)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(self->error, sizeof self->error, "nvml: %s", dlerror());
        return -1;
    }
    nvml_init_fn init = (nvml_init_fn)s_sym(lib, "nvmlInit_v2", "nvmlInit");
    nvml_count_fn count = (nvml_count_fn)s_sym(lib, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
    self->nv.handle =
        (nvml_handle_fn)s_sym(lib, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
    self->nv.shutdown = (nvml_shutdown_fn)s_sym(lib, "nvmlShutdown", NULL);
    self->nv.name = (nvml_name_fn)s_sym(lib, "nvmlDeviceGetName", NULL);
    self->nv.uuid = (nvml_name_fn)s_sym(lib, "nvmlDeviceGetUUID", NULL);
    self->nv.mem = (nvml_mem_fn)s_sym(lib, "nvmlDeviceGetMemoryInfo", NULL);
    self->nv.util = (nvml_util_fn)s_sym(lib, "nvmlDeviceGetUtilizationRates", NULL);
    self->nv.temp = (nvml_temp_fn)s_sym(lib, "nvmlDeviceGetTemperature", NULL);
    self->nv.power = (nvml_power_fn)s_sym(lib, "nvmlDeviceGetPowerUsage", NULL);
    self->nv.cc = (nvml_cc_fn)s_sym(lib, "nvmlDeviceGetCudaComputeCapability", NULL);
    nvml_driver_fn driver = (nvml_driver_fn)s_sym(lib, "nvmlSystemGetDriverVersion", NULL);
    if (!init || !count || !self->nv.handle) {
        snprintf(self->error, sizeof self->error,
                 "nvml: library lacks nvmlInit/GetCount/GetHandle");
        dlclose(lib);
        return -1;
    }
    int rc = init();
    if (rc != 0) {
        snprintf(self->error, sizeof self->error, "nvml: nvmlInit failed (nvmlReturn %d)", rc);
        dlclose(lib);
        return -1;
    }
    unsigned int n = 0;
    rc = count(&n);
    if (rc != 0) {
        snprintf(self->error, sizeof self->error, "nvml: nvmlDeviceGetCount failed (%d)", rc);
        if (self->nv.shutdown)
            self->nv.shutdown();
        dlclose(lib);
        return -1;
    }
    if (driver)
        driver(self->driver, sizeof self->driver);
    self->lib = lib;
    self->count = (int)n;
    self->backend = "nvml";
    return 0;
}

static int s_load_cuda(sdx_gpu_t *self)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        size_t l = strlen(self->error);
        snprintf(self->error + l, sizeof self->error - l, "%scuda: %s", l ? "; " : "", dlerror());
        return -1;
    }
    cu_init_fn init = (cu_init_fn)s_sym(lib, "cuInit", NULL);
    cu_count_fn count = (cu_count_fn)s_sym(lib, "cuDeviceGetCount", NULL);
    cu_version_fn version = (cu_version_fn)s_sym(lib, "cuDriverGetVersion", NULL);
    self->cu.get = (cu_get_fn)s_sym(lib, "cuDeviceGet", NULL);
    self->cu.name = (cu_name_fn)s_sym(lib, "cuDeviceGetName", NULL);
    self->cu.mem = (cu_mem_fn)s_sym(lib, "cuDeviceTotalMem_v2", "cuDeviceTotalMem");
    self->cu.attr = (cu_attr_fn)s_sym(lib, "cuDeviceGetAttribute", NULL);
    self->cu.uuid = (cu_uuid_fn)s_sym(lib, "cuDeviceGetUuid", NULL);
    int n = 0;
    int rc = (init && count && self->cu.get) ? init(0) : -1;
    if (rc == 0)
        rc = count(&n);
    if (rc != 0) {
        size_t l = strlen(self->error);
        snprintf(self->error + l, sizeof self->error - l,
                 "%scuda: cuInit/cuDeviceGetCount failed (%d)", l ? "; " : "", rc);
        dlclose(lib);
        return -1;
    }
    int v = 0;
    if (version && version(&v) == 0)
        snprintf(self->driver, sizeof self->driver, "cuda %d.%d", v / 1000, (v % 1000) / 10);
    self->lib = lib;
    self->count = n;
    self->backend = "cuda";
    return 0;
}

sdx_gpu_t *sdx_gpu_new(bool allow_cuda)
{
    sdx_gpu_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    self->backend = "none";
    if (s_load_nvml(self) == 0 || (allow_cuda && s_load_cuda(self) == 0))
        self->error[0] = '\0';
    return self;
}

void sdx_gpu_destroy(sdx_gpu_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sdx_gpu_t *self = *self_p;
    if (self->lib && strcmp(self->backend, "nvml") == 0 && self->nv.shutdown)
        self->nv.shutdown();
    /* The CUDA driver is never dlclose'd: its atexit handlers may still run. */
    if (self->lib && strcmp(self->backend, "nvml") == 0)
        dlclose(self->lib);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

const char *sdx_gpu_backend(const sdx_gpu_t *self)
{
    return self->backend;
}

const char *sdx_gpu_driver_version(const sdx_gpu_t *self)
{
    return self->driver;
}

const char *sdx_gpu_error(const sdx_gpu_t *self)
{
    return self->error;
}

int sdx_gpu_count(const sdx_gpu_t *self)
{
    return self->count;
}

static void s_query_nvml(sdx_gpu_t *self, int index, sdx_gpu_info_t *out)
{
    nvml_device_t dev = NULL;
    if (self->nv.handle((unsigned)index, &dev) != 0)
        return;
    if (self->nv.name)
        self->nv.name(dev, out->name, sizeof out->name);
    if (self->nv.uuid)
        self->nv.uuid(dev, out->uuid, sizeof out->uuid);
    nvml_memory_t mem;
    if (self->nv.mem && self->nv.mem(dev, &mem) == 0) {
        out->mem_total = (int64_t)mem.total;
        out->mem_free = (int64_t)mem.free;
        out->mem_used = (int64_t)mem.used;
    }
    nvml_util_t util;
    if (self->nv.util && self->nv.util(dev, &util) == 0) {
        out->util_gpu = (int)util.gpu;
        out->util_mem = (int)util.memory;
    }
    unsigned int t = 0;
    if (self->nv.temp && self->nv.temp(dev, 0 /* NVML_TEMPERATURE_GPU */, &t) == 0)
        out->temp_c = (int)t;
    unsigned int mw = 0;
    if (self->nv.power && self->nv.power(dev, &mw) == 0)
        out->power_w = mw / 1000.0;
    int ma = -1, mi = -1;
    if (self->nv.cc && self->nv.cc(dev, &ma, &mi) == 0) {
        out->cc_major = ma;
        out->cc_minor = mi;
    }
}

static void s_query_cuda(sdx_gpu_t *self, int index, sdx_gpu_info_t *out)
{
    int dev = 0;
    if (self->cu.get(&dev, index) != 0)
        return;
    if (self->cu.name)
        self->cu.name(out->name, (int)sizeof out->name, dev);
    size_t total = 0;
    if (self->cu.mem && self->cu.mem(&total, dev) == 0)
        out->mem_total = (int64_t)total;
    if (self->cu.attr) {
        self->cu.attr(&out->cc_major, CU_ATTR_CC_MAJOR, dev);
        self->cu.attr(&out->cc_minor, CU_ATTR_CC_MINOR, dev);
    }
    unsigned char u[16];
    if (self->cu.uuid && self->cu.uuid(u, dev) == 0)
        snprintf(out->uuid, sizeof out->uuid,
                 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                 u[14], u[15]);
}

int sdx_gpu_query(sdx_gpu_t *self, int index, sdx_gpu_info_t *out)
{
    if (index < 0 || index >= self->count)
        return -1;
    memset(out, 0, sizeof *out);
    out->index = index;
    out->mem_free = out->mem_used = -1;
    out->util_gpu = out->util_mem = out->temp_c = -1;
    out->power_w = -1;
    out->cc_major = out->cc_minor = -1;
    pthread_mutex_lock(&self->lock);
    if (strcmp(self->backend, "nvml") == 0)
        s_query_nvml(self, index, out);
    else if (strcmp(self->backend, "cuda") == 0)
        s_query_cuda(self, index, out);
    pthread_mutex_unlock(&self->lock);
    return 0;
}

int sdx_gpu_cuda_count_isolated(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int n = -1;
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (lib) {
            cu_init_fn init = (cu_init_fn)dlsym(lib, "cuInit");
            cu_count_fn count = (cu_count_fn)dlsym(lib, "cuDeviceGetCount");
            int c = 0;
            if (init && count && init(0) == 0 && count(&c) == 0)
                n = c;
        }
        _exit(n < 0 ? 255 : (n > 250 ? 250 : n));
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 255)
        return -1;
    return WEXITSTATUS(st);
}
