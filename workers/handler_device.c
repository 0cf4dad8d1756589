/*  handler_device.c - the device domain, real in this issue: device.list,
    device.status and device.memory report the host's GPUs through NVML or the
    CUDA driver (sdx_gpu.h, dlopen'd at run time) and the CPU and RAM from
    /proc. A host without a GPU answers gpus: [] with its CPU and memory.
    Not for: choosing the device of other workers (the runtime does that for
    --gpu in every domain). */
#include "sdx_gpu.h"
#include "sdx_log.h"
#include "sdx_worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

typedef struct {
    sdx_gpu_t *gpu;
} s_state_t;

/* ---- /proc readers */

static void s_cpu_to(sdx_value_t *out)
{
    char model[256] = "";
    int logical = 0;
    /* physical cores = distinct (physical id, core id) pairs */
    long pairs[1024];
    int npairs = 0;
    long phys = 0;
    int sockets_seen[256] = {0};
    int sockets = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        char *val = colon + 1;
        while (*val == ' ' || *val == '\t')
            val++;
        val[strcspn(val, "\n")] = '\0';
        if (strncmp(line, "processor", 9) == 0) {
            logical++;
        } else if (!model[0] &&
                   (strncmp(line, "model name", 10) == 0 || strncmp(line, "Hardware", 8) == 0 ||
                    strncmp(line, "cpu model", 9) == 0)) {
            snprintf(model, sizeof model, "%s", val);
        } else if (strncmp(line, "physical id", 11) == 0) {
            phys = atol(val);
            if (phys >= 0 && phys < 256 && !sockets_seen[phys]) {
                sockets_seen[phys] = 1;
                sockets++;
            }
        } else if (strncmp(line, "core id", 7) == 0) {
            long key = phys * 65536 + atol(val);
            bool seen = false;
            for (int i = 0; i < npairs && !seen; i++)
                seen = pairs[i] == key;
            if (!seen && npairs < 1024)
                pairs[npairs++] = key;
        }
    }
    if (f)
        fclose(f);
    if (!model[0]) {
        struct utsname u;
        if (uname(&u) == 0)
            snprintf(model, sizeof model, "%s", u.machine);
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    sdx_map_set_str(out, "model", model);
    sdx_map_set_int(out, "logical_cores", logical ? logical : online);
    sdx_map_set_int(out, "physical_cores", npairs ? npairs : (logical ? logical : online));
    sdx_map_set_int(out, "sockets", sockets ? sockets : 1);
    sdx_map_set_int(out, "online", online);
    double l1 = 0, l5 = 0, l15 = 0;
    f = fopen("/proc/loadavg", "r");
    if (f && fscanf(f, "%lf %lf %lf", &l1, &l5, &l15) == 3) {
        sdx_value_t *load = sdx_value_array_new();
        sdx_array_push(load, sdx_value_float_new(l1));
        sdx_array_push(load, sdx_value_float_new(l5));
        sdx_array_push(load, sdx_value_float_new(l15));
        sdx_map_set(out, "load_avg", load);
        if (online > 0)
            sdx_map_set_float(out, "load_per_core", l1 / (double)online);
    }
    if (f)
        fclose(f);
}

/* /proc/meminfo in bytes: total, free, available, used, buffers, cached,
   swap_total, swap_free. Returns 0, or -1 if unreadable. */
static int s_mem_to(sdx_value_t *out, bool detailed)
{
    static const struct {
        const char *tag;
        const char *key;
        bool basic;
    } rows[] = {
        {"MemTotal:", "total", true},         {"MemFree:", "free", false},
        {"MemAvailable:", "available", true}, {"Buffers:", "buffers", false},
        {"Cached:", "cached", false},         {"SwapTotal:", "swap_total", false},
        {"SwapFree:", "swap_free", false},
    };
    long long vals[7];
    for (int i = 0; i < 7; i++)
        vals[i] = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        for (int i = 0; i < 7; i++) {
            size_t tl = strlen(rows[i].tag);
            if (strncmp(line, rows[i].tag, tl) == 0)
                vals[i] = atoll(line + tl) * 1024LL;
        }
    }
    fclose(f);
    for (int i = 0; i < 7; i++)
        if (vals[i] >= 0 && (detailed || rows[i].basic))
            sdx_map_set_int(out, rows[i].key, vals[i]);
    if (vals[0] >= 0 && vals[2] >= 0)
        sdx_map_set_int(out, "used", vals[0] - vals[2]);
    return 0;
}

static sdx_value_t *s_gpu_value(const sdx_gpu_info_t *g, int selected, bool detailed)
{
    sdx_value_t *v = sdx_value_map_new();
    if (!v)
        return NULL;
    sdx_map_set_int(v, "index", g->index);
    if (!detailed) {
        sdx_map_set_int(v, "total", g->mem_total);
        if (g->mem_free >= 0) {
            sdx_map_set_int(v, "free", g->mem_free);
            sdx_map_set_int(v, "used", g->mem_used);
        }
        return v;
    }
    sdx_map_set_str(v, "name", g->name);
    if (g->uuid[0])
        sdx_map_set_str(v, "uuid", g->uuid);
    sdx_map_set_int(v, "memory_total", g->mem_total);
    if (g->mem_free >= 0) {
        sdx_map_set_int(v, "memory_free", g->mem_free);
        sdx_map_set_int(v, "memory_used", g->mem_used);
    }
    if (g->util_gpu >= 0) {
        sdx_map_set_int(v, "utilization_gpu", g->util_gpu);
        sdx_map_set_int(v, "utilization_memory", g->util_mem);
    }
    if (g->temp_c >= 0)
        sdx_map_set_int(v, "temperature_c", g->temp_c);
    if (g->power_w >= 0)
        sdx_map_set_float(v, "power_w", g->power_w);
    if (g->cc_major >= 0) {
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", g->cc_major, g->cc_minor);
        sdx_map_set_str(v, "compute_capability", cc);
    }
    sdx_map_set_bool(v, "selected", g->index == selected);
    return v;
}

static void s_gpus_to(sdx_worker_t *w, sdx_value_t *reply, bool detailed)
{
    s_state_t *st = sdx_worker_domain_state(w);
    sdx_value_t *arr = sdx_value_array_new();
    if (!arr)
        return;
    int n = sdx_gpu_count(st->gpu);
    for (int i = 0; i < n; i++) {
        sdx_gpu_info_t info;
        if (sdx_gpu_query(st->gpu, i, &info) == 0)
            sdx_array_push(arr, s_gpu_value(&info, sdx_worker_gpu(w), detailed));
    }
    sdx_map_set(reply, "gpus", arr);
    sdx_map_set_int(reply, "gpu_count", n);
    sdx_map_set_str(reply, "gpu_backend", sdx_gpu_backend(st->gpu));
    if (sdx_gpu_driver_version(st->gpu)[0])
        sdx_map_set_str(reply, "driver_version", sdx_gpu_driver_version(st->gpu));
    if (n == 0 && sdx_gpu_error(st->gpu)[0])
        sdx_map_set_str(reply, "gpu_note", sdx_gpu_error(st->gpu));
    sdx_map_set_int(reply, "selected_gpu", sdx_worker_gpu(w));
}

static void s_host_to(sdx_worker_t *w, sdx_value_t *reply)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    sdx_map_set_str(reply, "host", host);
    sdx_map_set_str(reply, "worker_id", sdx_worker_id(w));
}

/* ---- handlers */

static int s_list(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    sdx_worker_t *w = sdx_job_worker(job);
    s_host_to(w, reply);
    s_gpus_to(w, reply, true);
    sdx_value_t *cpu = sdx_value_map_new();
    if (cpu) {
        s_cpu_to(cpu);
        sdx_map_set(reply, "cpu", cpu);
    }
    sdx_value_t *mem = sdx_value_map_new();
    if (mem) {
        s_mem_to(mem, false);
        sdx_map_set(reply, "memory", mem);
    }
    return 0;
}

static int s_status(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    sdx_worker_t *w = sdx_job_worker(job);
    if (s_list(job, data, reply) != 0)
        return -1;
    struct utsname u;
    if (uname(&u) == 0) {
        char k[400];
        snprintf(k, sizeof k, "%s %s %s", u.sysname, u.release, u.machine);
        sdx_map_set_str(reply, "kernel", k);
    }
    double up = 0;
    FILE *f = fopen("/proc/uptime", "r");
    if (f && fscanf(f, "%lf", &up) == 1)
        sdx_map_set_float(reply, "host_uptime_s", up);
    if (f)
        fclose(f);
    sdx_map_set_str(reply, "status", "ok");
    sdx_value_t *ws = sdx_value_map_new();
    if (ws) {
        sdx_worker_status_to(w, ws);
        sdx_map_set(reply, "worker", ws);
    }
    return 0;
}

static int s_memory(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    sdx_worker_t *w = sdx_job_worker(job);
    s_host_to(w, reply);
    sdx_value_t *sys = sdx_value_map_new();
    if (!sys)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
    if (s_mem_to(sys, true) != 0) {
        sdx_value_destroy(&sys);
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "cannot read /proc/meminfo");
    }
    sdx_map_set(reply, "system", sys);
    s_gpus_to(w, reply, false);
    return 0;
}

/* HEARTBEAT: {gpus: [{index, total, free, used}], memory {total, available,
   used}} in bytes, so that the broker's system.status and the orchestrator's
   memory checks (workflow requirements, batch sizing) answer from state it
   holds instead of asking. NVML reads and /proc/meminfo: microseconds. */
static void s_heartbeat(sdx_worker_t *w, sdx_value_t *out)
{
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st)
        return;
    sdx_value_t *arr = sdx_value_array_new();
    int n = arr ? sdx_gpu_count(st->gpu) : 0;
    for (int i = 0; i < n; i++) {
        sdx_gpu_info_t info;
        if (sdx_gpu_query(st->gpu, i, &info) == 0)
            sdx_array_push(arr, s_gpu_value(&info, sdx_worker_gpu(w), false));
    }
    if (arr)
        sdx_map_set(out, "gpus", arr);
    sdx_value_t *mem = sdx_value_map_new();
    if (mem && s_mem_to(mem, false) == 0)
        sdx_map_set(out, "memory", mem);
    else
        sdx_value_destroy(&mem);
}

static int s_init(sdx_worker_t *w, char *err, size_t err_len)
{
    s_state_t *st = calloc(1, sizeof *st);
    if (!st || !(st->gpu = sdx_gpu_new(true))) {
        free(st);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int n = sdx_gpu_count(st->gpu);
    if (n == 0)
        log_info("no GPU (%s): reporting CPU and RAM only",
                 sdx_gpu_error(st->gpu)[0] ? sdx_gpu_error(st->gpu) : "no devices");
    else
        log_info("%d GPU(s) through %s", n, sdx_gpu_backend(st->gpu));
    sdx_worker_set_domain_state(w, st);
    return 0;
}

static void s_fini(sdx_worker_t *w)
{
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st)
        return;
    sdx_gpu_destroy(&st->gpu);
    free(st);
    sdx_worker_set_domain_state(w, NULL);
}

/* C# names (get_device_status, device.get_info, ...) are mapped to these by
   the broker through proto/actions.json. */
static const sdx_handler_t s_handlers[] = {
    {"device.list", s_list, 0, "GPUs (NVML/CUDA), CPU and RAM of this host"},
    {"device.info", s_list, 0, "same as device.list"},
    {"device.status", s_status, 0, "device.list plus kernel, uptime and this worker's status"},
    {"device.memory", s_memory, 0, "system RAM and per-GPU memory in bytes"},
    {NULL, NULL, 0, NULL},
};

const sdx_domain_t sdx_domain_device = {
    .name = "device",
    .capacity = 32, /* device queries are cheap (no GPU work) */
    .handlers = s_handlers,
    .planned_issue = "the engine does not switch or tune CUDA devices on request yet (a worker is pinned "
                     "to its --gpu at start)",
    .init = s_init,
    .fini = s_fini,
    .heartbeat = s_heartbeat,
};
