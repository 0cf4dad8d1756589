/*  sdx_torch.cpp - the C shim over libtorch's ATen (the project's only C++).

    What it is for: turn each sdx_* call of sdx_torch.h into one or a few ATen
    calls, keeping C++ exceptions, at::Tensor and every other C++ type on this
    side of the boundary. What it is not for: any knowledge of SDXL; network
    code lives in C above this file.

    Every extern "C" function follows the same shape: the body runs inside
    SDX_GUARD, which catches every exception, stores a readable message in the
    thread-local last-error string and returns -1. Outputs are created last and
    written only when everything else succeeded.

    BLAS: Debian's libtorch-dev (1.13, CPU) does not bundle MKL; its matmuls go
    through the system's libblas.so.3 alternative. With libopenblas0-pthread
    installed that alternative is OpenBLAS (check with
    `update-alternatives --display libblas.so.3-x86_64-linux-gnu`); with the
    reference BLAS every linear/matmul is much slower. at::set_num_threads() sets
    ATen's intra-op pool (OpenMP) size; OpenBLAS' own pool follows
    OPENBLAS_NUM_THREADS / its default, so sdx_set_num_threads() also asks
    OpenBLAS when its symbol is present (looked up weakly, so nothing breaks
    with another BLAS). */
#include "sdx_torch.h"

/* Per-operator headers instead of <ATen/Functions.h> (or <ATen/ATen.h>):
   measured on the 2-core build machine, the translation unit preprocesses to
   165k lines instead of 220k and parses in 2.7 s instead of 3.3 s; most of
   the remaining ~9 s is code generation at -O2 -g. A new op needs its
   <ATen/ops/NAME.h> line here. */
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/add.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/avg_pool2d.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/div.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/flip.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/group_norm.h>
#include <ATen/ops/gt.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/leaky_relu.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/log.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/neg.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/pixel_shuffle.h>
#include <ATen/ops/pixel_unshuffle.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sqrt.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/std.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/upsample_bilinear2d.h>
#include <ATen/ops/upsample_nearest2d.h>
#include <ATen/ops/var.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>

#if defined(__has_include)
#if __has_include(<torch/version.h>)
#include <torch/version.h>
#elif __has_include(<torch/csrc/api/include/torch/version.h>)
#include <torch/csrc/api/include/torch/version.h>
#endif
#endif
#ifndef TORCH_VERSION_MAJOR
#warning "torch/version.h not found: version reported as 0.0.0, fused attention disabled"
#define TORCH_VERSION_MAJOR 0
#define TORCH_VERSION_MINOR 0
#define TORCH_VERSION_PATCH 0
#endif

#if TORCH_VERSION_MAJOR >= 2
#include <ATen/ops/scaled_dot_product_attention.h>
#endif

#ifdef SDX_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

/* OpenBLAS' thread-count setter, if the process has OpenBLAS (weak: NULL
   otherwise). */
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

/* ================================================================ objects */

static std::atomic<int64_t> s_live{0};

struct sdx_tensor {
    at::Tensor t;
    explicit sdx_tensor(at::Tensor x) : t(std::move(x))
    {
        s_live.fetch_add(1, std::memory_order_relaxed);
    }
    ~sdx_tensor()
    {
        s_live.fetch_sub(1, std::memory_order_relaxed);
    }
    sdx_tensor(const sdx_tensor &) = delete;
    sdx_tensor &operator=(const sdx_tensor &) = delete;
};

struct sdx_scope {
    std::vector<sdx_tensor *> owned;
};

struct sdx_generator {
    at::Generator gen;
};

struct sdx_inference_guard {
    c10::InferenceMode *mode;
};

/* ================================================================ errors */

static thread_local std::string s_error;

/* Called from catch blocks: must not throw itself (an exception escaping an
   extern "C" function would terminate the process). */
static void s_set_error(const char *func, const char *msg) noexcept
{
    /* c10 messages can run to many lines (a C++ backtrace, "Exception raised
       from ...", the dispatcher's table of backends); the first line says
       what went wrong. */
    const char *m = msg ? msg : "unknown error";
    size_t n = strcspn(m, "\n");
    while (n > 0 && (m[n - 1] == ' ' || m[n - 1] == '\r'))
        n--;
    try {
        s_error.assign(func);
        s_error.append(": ");
        s_error.append(m, n);
    } catch (...) {
        s_error.clear(); /* out of memory: an empty message, still -1 */
    }
}

/* Body wrapper: any exception becomes -1 + last error. */
#define SDX_GUARD(...)                                                                             \
    try {                                                                                          \
        __VA_ARGS__                                                                                \
    } catch (const c10::Error &e) {                                                                \
        s_set_error(__func__, e.what_without_backtrace());                                         \
        return -1;                                                                                 \
    } catch (const std::exception &e) {                                                            \
        s_set_error(__func__, e.what());                                                           \
        return -1;                                                                                 \
    } catch (...) {                                                                                \
        s_set_error(__func__, "unknown C++ exception");                                            \
        return -1;                                                                                 \
    }

namespace
{

struct sdx_arg_error : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

[[noreturn]] void s_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void s_fail(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw sdx_arg_error(buf);
}

inline const at::Tensor &T(const sdx_tensor_t *x, const char *what = "tensor")
{
    if (!x)
        s_fail("%s is NULL", what);
    return x->t;
}

void s_check_out(const void *out)
{
    if (!out)
        s_fail("output pointer is NULL");
}

at::IntArrayRef s_shape(const int64_t *shape, int ndim)
{
    if (ndim < 0 || ndim > SDX_MAX_DIMS)
        s_fail("ndim %d out of range [0, %d]", ndim, SDX_MAX_DIMS);
    if (ndim > 0 && !shape)
        s_fail("shape is NULL");
    return at::IntArrayRef(shape, (size_t)ndim);
}

const at::ScalarType s_types[SDX_DTYPE_COUNT] = {
    at::kFloat, at::kHalf,  at::kBFloat16, at::kDouble, at::kLong,
    at::kInt,   at::kShort, at::kChar,     at::kByte,   at::kBool,
};

at::ScalarType s_dt(sdx_dtype_t dt)
{
    if ((int)dt < 0 || dt >= SDX_DTYPE_COUNT)
        s_fail("invalid dtype %d", (int)dt);
    return s_types[dt];
}

sdx_dtype_t s_from_dt(at::ScalarType st)
{
    for (int i = 0; i < SDX_DTYPE_COUNT; i++)
        if (s_types[i] == st)
            return (sdx_dtype_t)i;
    return SDX_DTYPE_COUNT;
}

/* CUDA device count, asked once (the answer does not change in a process). */
int s_cuda_count()
{
    static const int n = [] {
        try {
            if (!at::globalContext().hasCUDA())
                return 0;
            return (int)at::detail::getCUDAHooks().getNumGPUs();
        } catch (...) {
            return 0;
        }
    }();
    return n;
}

at::Device s_dev(sdx_device_t d)
{
    if (d.type == SDX_CPU)
        return at::Device(at::kCPU);
    if (d.type == SDX_CUDA) {
        /* Checked here so that the message is clear (ATen's is a page long). */
        int n = s_cuda_count();
        if (n == 0)
            s_fail("cuda:%d requested but this libtorch (%s) is CPU-only or no GPU is visible",
                   d.index, sdx_torch_version());
        if (d.index < 0 || d.index >= n)
            s_fail("cuda:%d out of range (%d device%s)", d.index, n, n == 1 ? "" : "s");
        return at::Device(at::kCUDA, (c10::DeviceIndex)d.index);
    }
    s_fail("invalid device type %d", (int)d.type);
}

at::TensorOptions s_opts(sdx_dtype_t dt, sdx_device_t dev)
{
    return at::TensorOptions().dtype(s_dt(dt)).device(s_dev(dev));
}

/* Hand a result to the caller or to S. Last step of every constructor. */
int s_put(sdx_scope_t *S, sdx_tensor_t **out, at::Tensor &&t)
{
    sdx_tensor *h = new sdx_tensor(std::move(t));
    if (S) {
        try {
            S->owned.push_back(h);
        } catch (...) {
            delete h;
            throw;
        }
    }
    *out = h;
    return 0;
}

std::vector<int64_t> s_dims(const int64_t *dims, int ndims)
{
    if (ndims < 0 || ndims > SDX_MAX_DIMS)
        s_fail("ndims %d out of range", ndims);
    if (ndims > 0 && !dims)
        s_fail("dims is NULL");
    return std::vector<int64_t>(dims, dims + ndims);
}

std::atomic<bool> s_force_manual_sdpa{false};

} // namespace

extern "C" {

/* ================================================================ errors */

const char *sdx_last_error(void)
{
    return s_error.c_str();
}

int sdx_set_error(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt ? fmt : "", ap);
    va_end(ap);
    try {
        s_error = buf;
    } catch (...) {
    }
    return -1;
}

/* ================================================================ runtime */

#define SDX_STR2(x) #x
#define SDX_STR(x) SDX_STR2(x)

const char *sdx_torch_version(void)
{
    return SDX_STR(TORCH_VERSION_MAJOR) "." SDX_STR(TORCH_VERSION_MINOR) "." SDX_STR(
        TORCH_VERSION_PATCH);
}

int sdx_set_num_threads(int n)
{
    SDX_GUARD({
        if (n < 1)
            s_fail("thread count %d < 1", n);
        at::set_num_threads(n);
        if (openblas_set_num_threads)
            openblas_set_num_threads(n);
        return 0;
    })
}

int sdx_get_num_threads(void)
{
    try {
        return at::get_num_threads();
    } catch (...) {
        return 1;
    }
}

int sdx_cuda_device_count(void)
{
    return s_cuda_count();
}

static void s_check_cuda_index(int index)
{
    int n = sdx_cuda_device_count();
    if (n == 0)
        s_fail("no CUDA device: this libtorch (%s) is CPU-only or no GPU is visible",
               sdx_torch_version());
    if (index < 0 || index >= n)
        s_fail("CUDA device %d out of range (%d device%s)", index, n, n == 1 ? "" : "s");
}

int sdx_cuda_set_device(int index)
{
    SDX_GUARD({
        s_check_cuda_index(index);
        c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)
            ->setDevice(c10::Device(c10::DeviceType::CUDA, (c10::DeviceIndex)index));
        return 0;
    })
}

int sdx_cuda_memory(int index, sdx_cuda_memory_t *out)
{
    SDX_GUARD({
        s_check_out(out);
        sdx_cuda_memory_t m = {0, 0, 0, 0};
#ifdef SDX_WITH_CUDA
        if (sdx_cuda_device_count() > 0) {
            s_check_cuda_index(index);
            auto st = c10::cuda::CUDACachingAllocator::getDeviceStats((c10::DeviceIndex)index);
            /* StatType::AGGREGATE is 0 in every version; the enum moved
               between namespaces across 2.x releases, so use the index. */
            const size_t agg = 0;
            m.allocated = (uint64_t)st.allocated_bytes[agg].current;
            m.reserved = (uint64_t)st.reserved_bytes[agg].current;
            m.peak_allocated = (uint64_t)st.allocated_bytes[agg].peak;
            m.peak_reserved = (uint64_t)st.reserved_bytes[agg].peak;
        }
#endif
        *out = m;
        return 0;
    })
}

int sdx_cuda_reset_peak(int index)
{
    SDX_GUARD({
#ifdef SDX_WITH_CUDA
        if (sdx_cuda_device_count() > 0) {
            s_check_cuda_index(index);
            c10::cuda::CUDACachingAllocator::resetPeakStats((c10::DeviceIndex)index);
        }
#endif
        return 0;
    })
}

int sdx_cuda_empty_cache(void)
{
    SDX_GUARD({
#ifdef SDX_WITH_CUDA
        if (sdx_cuda_device_count() > 0)
            c10::cuda::CUDACachingAllocator::emptyCache();
#endif
        return 0;
    })
}

int sdx_cuda_synchronize(int index)
{
    SDX_GUARD({
        s_check_cuda_index(index);
#ifdef SDX_WITH_CUDA
        c10::cuda::CUDAGuard g((c10::DeviceIndex)index);
        c10::cuda::device_synchronize();
#else
        at::detail::getCUDAHooks().deviceSynchronize((int64_t)index);
#endif
        return 0;
    })
}

int sdx_device_parse(const char *text, sdx_device_t *out)
{
    SDX_GUARD({
        s_check_out(out);
        if (!text)
            s_fail("device text is NULL");
        sdx_device_t d;
        if (strcmp(text, "cpu") == 0) {
            d.type = SDX_CPU;
            d.index = 0;
        } else if (strcmp(text, "cuda") == 0) {
            d.type = SDX_CUDA;
            d.index = 0;
        } else if (strncmp(text, "cuda:", 5) == 0) {
            const char *p = text + 5;
            if (*p < '0' || *p > '9')
                s_fail("bad device \"%s\" (expected cpu, cuda or cuda:N)", text);
            char *end = nullptr;
            long v = strtol(p, &end, 10);
            if (*end != '\0' || v < 0 || v > 127)
                s_fail("bad device \"%s\" (expected cpu, cuda or cuda:N)", text);
            d.type = SDX_CUDA;
            d.index = (int)v;
        } else {
            s_fail("bad device \"%s\" (expected cpu, cuda or cuda:N)", text);
        }
        *out = d;
        return 0;
    })
}

const char *sdx_dtype_name(sdx_dtype_t dt)
{
    static const char *const names[SDX_DTYPE_COUNT] = {"f32", "f16", "bf16", "f64", "i64",
                                                       "i32", "i16", "i8",   "u8",  "bool"};
    if ((int)dt < 0 || dt >= SDX_DTYPE_COUNT)
        return "?";
    return names[dt];
}

size_t sdx_dtype_size(sdx_dtype_t dt)
{
    static const size_t sizes[SDX_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
    if ((int)dt < 0 || dt >= SDX_DTYPE_COUNT)
        return 0;
    return sizes[dt];
}

sdx_inference_guard_t *sdx_inference_guard_new(void)
{
    try {
        auto *g = new sdx_inference_guard{nullptr};
        try {
            g->mode = new c10::InferenceMode(true);
        } catch (...) {
            delete g;
            throw;
        }
        return g;
    } catch (const std::exception &e) {
        s_set_error(__func__, e.what());
        return nullptr;
    } catch (...) {
        s_set_error(__func__, "unknown C++ exception");
        return nullptr;
    }
}

void sdx_inference_guard_free(sdx_inference_guard_t **g)
{
    if (!g || !*g)
        return;
    delete (*g)->mode;
    delete *g;
    *g = nullptr;
}

/* ================================================================ scope */

sdx_scope_t *sdx_scope_new(void)
{
    try {
        return new sdx_scope();
    } catch (...) {
        s_set_error(__func__, "out of memory");
        return nullptr;
    }
}

void sdx_scope_free(sdx_scope_t **S)
{
    if (!S || !*S)
        return;
    /* Free in reverse creation order (views before their bases; it does not
       matter for correctness, storage is refcounted). */
    for (auto it = (*S)->owned.rbegin(); it != (*S)->owned.rend(); ++it)
        delete *it;
    delete *S;
    *S = nullptr;
}

int sdx_scope_keep(sdx_scope_t *S, sdx_tensor_t *t)
{
    SDX_GUARD({
        if (!S)
            s_fail("scope is NULL");
        if (!t)
            s_fail("tensor is NULL");
        auto &v = S->owned;
        /* Usually the most recent tensor: search from the end. */
        for (size_t i = v.size(); i-- > 0;) {
            if (v[i] == t) {
                v.erase(v.begin() + (ptrdiff_t)i);
                return 0;
            }
        }
        s_fail("tensor %p is not owned by this scope", (void *)t);
    })
}

int sdx_scope_adopt(sdx_scope_t *S, sdx_tensor_t *t){SDX_GUARD({
    if (!S)
        s_fail("scope is NULL");
    if (!t)
        s_fail("tensor is NULL");
    /* Adopting twice would free twice. */
    for (const sdx_tensor *o : S->owned)
        if (o == t)
            s_fail("tensor %p is already owned by this scope", (void *)t);
    S->owned.push_back(t);
    return 0;
})}

size_t sdx_scope_size(const sdx_scope_t *S)
{
    return S ? S->owned.size() : 0;
}

/* ================================================================ tensors */

void sdx_tensor_free(sdx_tensor_t **t)
{
    if (!t || !*t)
        return;
    delete *t;
    *t = nullptr;
}

int64_t sdx_tensor_live_count(void)
{
    return s_live.load();
}

int sdx_tensor_ndim(const sdx_tensor_t *t)
{
    return t ? (int)t->t.dim() : 0;
}

int64_t sdx_tensor_size(const sdx_tensor_t *t, int dim)
{
    if (!t)
        return -1;
    int64_t nd = t->t.dim();
    int64_t d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= nd)
        return -1;
    return t->t.sizes()[(size_t)d];
}

int sdx_tensor_shape(const sdx_tensor_t *t, int64_t *shape)
{
    if (!t)
        return 0;
    int nd = (int)t->t.dim();
    for (int i = 0; i < nd && i < SDX_MAX_DIMS; i++)
        shape[i] = t->t.sizes()[(size_t)i];
    return nd;
}

int64_t sdx_tensor_numel(const sdx_tensor_t *t)
{
    return t ? t->t.numel() : 0;
}

sdx_dtype_t sdx_tensor_dtype(const sdx_tensor_t *t)
{
    return t ? s_from_dt(t->t.scalar_type()) : SDX_DTYPE_COUNT;
}

sdx_device_t sdx_tensor_device(const sdx_tensor_t *t)
{
    sdx_device_t d = {SDX_CPU, 0};
    if (t && t->t.is_cuda()) {
        d.type = SDX_CUDA;
        d.index = t->t.device().index();
    }
    return d;
}

bool sdx_tensor_is_contiguous(const sdx_tensor_t *t)
{
    return t && t->t.is_contiguous();
}

int sdx_alias(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t)
{
    SDX_GUARD({
        s_check_out(out);
        at::Tensor r = T(t);
        return s_put(S, out, std::move(r));
    })
}

int sdx_from_host(sdx_scope_t *S, sdx_tensor_t **out, const void *data, sdx_dtype_t dt,
                  const int64_t *shape, int ndim)
{
    SDX_GUARD({
        s_check_out(out);
        auto sz = s_shape(shape, ndim);
        at::Tensor r = at::empty(sz, at::TensorOptions().dtype(s_dt(dt)));
        size_t nb = r.nbytes();
        if (nb > 0) {
            if (!data)
                s_fail("data is NULL");
            memcpy(r.data_ptr(), data, nb);
        }
        return s_put(S, out, std::move(r));
    })
}

int sdx_from_blob(sdx_scope_t *S, sdx_tensor_t **out, void *data, sdx_dtype_t dt,
                  const int64_t *shape, int ndim, void (*release)(void *ctx), void *ctx)
{
    SDX_GUARD({
        s_check_out(out);
        auto sz = s_shape(shape, ndim);
        for (int64_t s : sz)
            if (s < 0)
                s_fail("negative size in shape");
        if (!data)
            s_fail("data is NULL");
        auto opts = at::TensorOptions().dtype(s_dt(dt)).device(at::kCPU);
        /* Reserve the handle first so that nothing can fail once the
           storage (and its release callback) exists: on failure the
           callback is never called and the caller keeps its memory. */
        std::unique_ptr<sdx_tensor> h(new sdx_tensor(at::Tensor()));
        if (S)
            S->owned.reserve(S->owned.size() + 1);
        at::Tensor r;
        if (release) {
            r = at::from_blob(
                data, sz, [release, ctx](void *) { release(ctx); }, opts);
        } else {
            r = at::from_blob(data, sz, opts);
        }
        h->t = std::move(r);
        if (S)
            S->owned.push_back(h.get());
        *out = h.release();
        return 0;
    })
}

int sdx_to_host(const sdx_tensor_t *t, sdx_dtype_t dt, void *dst, size_t dst_bytes)
{
    SDX_GUARD({
        const at::Tensor &x = T(t);
        at::Tensor c = x.to(at::kCPU, s_dt(dt)).contiguous();
        size_t nb = c.nbytes();
        if (nb > dst_bytes)
            s_fail("destination too small: need %zu bytes, have %zu", nb, dst_bytes);
        if (nb > 0) {
            if (!dst)
                s_fail("dst is NULL");
            memcpy(dst, c.data_ptr(), nb);
        }
        return 0;
    })
}

int sdx_item(const sdx_tensor_t *t, double *out)
{
    SDX_GUARD({
        s_check_out(out);
        const at::Tensor &x = T(t);
        if (x.numel() != 1)
            s_fail("item of a tensor with %lld elements", (long long)x.numel());
        double v = x.item().toDouble();
        *out = v;
        return 0;
    })
}

int sdx_zeros(sdx_scope_t *S, sdx_tensor_t **out, const int64_t *shape, int ndim, sdx_dtype_t dt,
              sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::zeros(s_shape(shape, ndim), s_opts(dt, dev)));
    })
}

int sdx_ones(sdx_scope_t *S, sdx_tensor_t **out, const int64_t *shape, int ndim, sdx_dtype_t dt,
             sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::ones(s_shape(shape, ndim), s_opts(dt, dev)));
    })
}

int sdx_full(sdx_scope_t *S, sdx_tensor_t **out, const int64_t *shape, int ndim, double value,
             sdx_dtype_t dt, sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::full(s_shape(shape, ndim), value, s_opts(dt, dev)));
    })
}

int sdx_zeros_like(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::zeros_like(T(t)));
    })
}

int sdx_arange(sdx_scope_t *S, sdx_tensor_t **out, double start, double end, double step,
               sdx_dtype_t dt, sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::arange(start, end, step, s_opts(dt, dev)));
    })
}

int sdx_scalar_tensor(sdx_scope_t *S, sdx_tensor_t **out, double value, sdx_dtype_t dt,
                      sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::scalar_tensor(value, s_opts(dt, dev)));
    })
}

int sdx_to(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_dtype_t dt,
           sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        /* at::Tensor::to returns self (an alias) when nothing changes. */
        return s_put(S, out, T(t).to(s_dev(dev), s_dt(dt)));
    })
}

int sdx_to_dtype(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_dtype_t dt)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).to(s_dt(dt)));
    })
}

int sdx_to_device(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).to(s_dev(dev)));
    })
}

int sdx_contiguous(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).contiguous());
    })
}

int sdx_channels_last(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t)
{
    SDX_GUARD({
        s_check_out(out);
        const at::Tensor &x = T(t);
        if (x.dim() != 4)
            s_fail("channels_last needs a 4-D tensor, got %d-D", (int)x.dim());
        return s_put(S, out, x.contiguous(at::MemoryFormat::ChannelsLast));
    })
}

int sdx_clone(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).clone());
    })
}

int sdx_copy_(sdx_tensor_t *dst, const sdx_tensor_t *src){SDX_GUARD({
    at::Tensor d = T(dst, "dst");
    const at::Tensor &s = T(src, "src");
    if (d.sizes() != s.sizes())
        s_fail("copy_: shape mismatch (dst %s, src %s)", c10::str(d.sizes()).c_str(),
               c10::str(s.sizes()).c_str());
    d.copy_(s);
    return 0;
})}

/* ================================================================ random */

sdx_generator_t *sdx_generator_new(uint64_t seed)
{
    try {
        auto *g = new sdx_generator{at::make_generator<at::CPUGeneratorImpl>(seed)};
        return g;
    } catch (const std::exception &e) {
        s_set_error(__func__, e.what());
        return nullptr;
    } catch (...) {
        s_set_error(__func__, "unknown C++ exception");
        return nullptr;
    }
}

void sdx_generator_free(sdx_generator_t **g)
{
    if (!g || !*g)
        return;
    delete *g;
    *g = nullptr;
}

int sdx_randn(sdx_scope_t *S, sdx_tensor_t **out, sdx_generator_t *g, const int64_t *shape,
              int ndim, sdx_dtype_t dt, sdx_device_t dev)
{
    SDX_GUARD({
        s_check_out(out);
        if (!g)
            s_fail("generator is NULL");
        /* Drawn on the CPU in the requested floating dtype, exactly like
           diffusers' randn_tensor: torch.randn(shape, generator=cpu_gen,
           dtype=dtype) then .to(device). For >= 16 elements ATen's f16/bf16
           (and f64) draws are not the f32 draw rounded: they take their
           uniforms at that dtype's precision. Other dtypes (integers, bool)
           are drawn in f32 and converted. Same values on every device. */
        at::ScalarType st = s_dt(dt);
        bool direct =
            st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble;
        at::Tensor r =
            at::randn(s_shape(shape, ndim), c10::optional<at::Generator>(g->gen),
                      at::TensorOptions().dtype(direct ? st : at::kFloat).device(at::kCPU));
        r = r.to(s_dev(dev), st);
        return s_put(S, out, std::move(r));
    })
}

/* ================================================================ shape ops */

int sdx_reshape(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *shape,
                int ndim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).reshape(s_shape(shape, ndim)));
    })
}

int sdx_view(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *shape,
             int ndim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).view(s_shape(shape, ndim)));
    })
}

int sdx_permute(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *dims,
                int ndim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).permute(s_shape(dims, ndim)));
    })
}

int sdx_transpose(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int d0, int d1)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).transpose(d0, d1));
    })
}

int sdx_unsqueeze(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).unsqueeze(dim));
    })
}

int sdx_squeeze(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).squeeze(dim));
    })
}

int sdx_flatten(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int start, int end)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).flatten(start, end));
    })
}

int sdx_expand(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *shape,
               int ndim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).expand(s_shape(shape, ndim)));
    })
}

int sdx_repeat(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *reps,
               int ndim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).repeat(s_shape(reps, ndim)));
    })
}

int sdx_repeat_interleave(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t,
                          int64_t repeats, int dim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::repeat_interleave(T(t), repeats, (int64_t)dim));
    })
}

int sdx_narrow(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim, int64_t start,
               int64_t length)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).narrow(dim, start, length));
    })
}

int sdx_select(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim, int64_t index)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, T(t).select(dim, index));
    })
}

static std::vector<at::Tensor> s_list(sdx_tensor_t *const *ts, int n)
{
    if (n < 1)
        s_fail("need at least one tensor, got %d", n);
    if (!ts)
        s_fail("tensor list is NULL");
    std::vector<at::Tensor> v;
    v.reserve((size_t)n);
    for (int i = 0; i < n; i++) {
        if (!ts[i])
            s_fail("tensor %d of the list is NULL", i);
        v.push_back(ts[i]->t);
    }
    return v;
}

int sdx_cat(sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *const *ts, int n, int dim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::cat(s_list(ts, n), dim));
    })
}

int sdx_stack(sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *const *ts, int n, int dim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::stack(s_list(ts, n), dim));
    })
}

int sdx_chunk(sdx_scope_t *S, sdx_tensor_t **outs, const sdx_tensor_t *t, int n, int dim)
{
    SDX_GUARD({
        s_check_out(outs);
        const at::Tensor &x = T(t);
        if (n < 1)
            s_fail("chunk count %d < 1", n);
        int64_t nd = x.dim();
        int64_t d = dim < 0 ? dim + nd : dim;
        if (d < 0 || d >= nd)
            s_fail("dim %d out of range for a %lld-D tensor", dim, (long long)nd);
        if (x.size(d) % n != 0)
            s_fail("size %lld of dim %d is not divisible into %d chunks", (long long)x.size(d), dim,
                   n);
        std::vector<at::Tensor> parts = x.chunk(n, d);
        if ((int)parts.size() != n)
            s_fail("chunk produced %d parts, expected %d", (int)parts.size(), n);
        /* Build every handle before publishing any. */
        std::vector<std::unique_ptr<sdx_tensor>> hs;
        hs.reserve((size_t)n);
        for (auto &p : parts)
            hs.emplace_back(new sdx_tensor(std::move(p)));
        if (S)
            S->owned.reserve(S->owned.size() + (size_t)n);
        for (int i = 0; i < n; i++) {
            outs[i] = hs[(size_t)i].release();
            if (S)
                S->owned.push_back(outs[i]);
        }
        return 0;
    })
}

int sdx_index_select(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim,
                     const sdx_tensor_t *index)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::index_select(T(t), dim, T(index, "index")));
    })
}

int sdx_embedding(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *weight,
                  const sdx_tensor_t *ids)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::embedding(T(weight, "weight"), T(ids, "ids")));
    })
}

int sdx_pad(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *pads,
            int npads, double value)
{
    SDX_GUARD({
        s_check_out(out);
        if (npads < 0 || npads % 2 != 0 || npads > 2 * SDX_MAX_DIMS)
            s_fail("pad count %d must be even and at most %d", npads, 2 * SDX_MAX_DIMS);
        return s_put(S, out, at::constant_pad_nd(T(t), s_dims(pads, npads), value));
    })
}

int sdx_flip(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *dims,
             int ndims){SDX_GUARD({
    s_check_out(out);
    return s_put(S, out, at::flip(T(t), s_dims(dims, ndims)));
})}

/* ================================================================ elementwise */

#define SDX_BINARY(name, expr)                                                                     \
    int name(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b)     \
    {                                                                                              \
        SDX_GUARD({                                                                                \
            s_check_out(out);                                                                      \
            const at::Tensor &A = T(a, "a");                                                       \
            const at::Tensor &B = T(b, "b");                                                       \
            return s_put(S, out, expr);                                                            \
        })                                                                                         \
    }

SDX_BINARY(sdx_add, at::add(A, B)) SDX_BINARY(sdx_sub, at::sub(A, B))
    SDX_BINARY(sdx_mul, at::mul(A, B)) SDX_BINARY(sdx_div, at::div(A, B))
        SDX_BINARY(sdx_matmul, at::matmul(A, B)) SDX_BINARY(sdx_bmm, at::bmm(A, B))

            int sdx_add_scaled(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a,
                               const sdx_tensor_t *b, double alpha)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::add(T(a, "a"), T(b, "b"), alpha));
    })
}

int sdx_lincomb(sdx_scope_t *S, sdx_tensor_t **out, double alpha, const sdx_tensor_t *a,
                double beta, const sdx_tensor_t *b){SDX_GUARD({
    s_check_out(out);
    const at::Tensor &A = T(a, "a");
    const at::Tensor &B = T(b, "b");
    /* alpha*a computed once, then b added with its factor by add's alpha
       (two kernels; the second writes in place when shapes allow). */
    at::Tensor r = at::mul(A, alpha);
    if (r.sizes() == B.sizes() && r.scalar_type() == B.scalar_type())
        r.add_(B, beta);
    else
        r = at::add(r, B, beta);
    return s_put(S, out, std::move(r));
})}

#define SDX_SCALAR(name, expr)                                                                     \
    int name(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double s)                  \
    {                                                                                              \
        SDX_GUARD({                                                                                \
            s_check_out(out);                                                                      \
            const at::Tensor &A = T(a, "a");                                                       \
            return s_put(S, out, expr);                                                            \
        })                                                                                         \
    }

SDX_SCALAR(sdx_add_scalar, at::add(A, s)) SDX_SCALAR(sdx_mul_scalar, at::mul(A, s))
    SDX_SCALAR(sdx_div_scalar, at::div(A, s)) SDX_SCALAR(sdx_pow_scalar, at::pow(A, s))
        SDX_SCALAR(sdx_leaky_relu, at::leaky_relu(A, s)) SDX_SCALAR(sdx_gt_scalar, at::gt(A, s))

            int sdx_add_(sdx_tensor_t *a, const sdx_tensor_t *b, double alpha)
{
    SDX_GUARD({
        at::Tensor A = T(a, "a");
        A.add_(T(b, "b"), alpha);
        return 0;
    })
}

int sdx_mul_scalar_(sdx_tensor_t *a, double s){SDX_GUARD({
    at::Tensor A = T(a, "a");
    A.mul_(s);
    return 0;
})}

#define SDX_UNARY(name, expr)                                                                      \
    int name(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a)                            \
    {                                                                                              \
        SDX_GUARD({                                                                                \
            s_check_out(out);                                                                      \
            const at::Tensor &A = T(a, "a");                                                       \
            return s_put(S, out, expr);                                                            \
        })                                                                                         \
    }

SDX_UNARY(sdx_neg, at::neg(A)) SDX_UNARY(sdx_exp, at::exp(A)) SDX_UNARY(sdx_ln, at::log(A))
    SDX_UNARY(sdx_sqrt, at::sqrt(A)) SDX_UNARY(sdx_rsqrt, at::rsqrt(A))
        SDX_UNARY(sdx_abs, at::abs(A)) SDX_UNARY(sdx_sin, at::sin(A)) SDX_UNARY(sdx_cos, at::cos(A))
            SDX_UNARY(sdx_tanh, at::tanh(A)) SDX_UNARY(sdx_sigmoid, at::sigmoid(A))
                SDX_UNARY(sdx_silu, at::silu(A)) SDX_UNARY(sdx_relu, at::relu(A))
                    SDX_UNARY(sdx_quick_gelu, at::mul(A, at::sigmoid(at::mul(A, 1.702))))

                        int sdx_gelu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a,
                                     bool tanh_approx)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::gelu(T(a, "a"), tanh_approx ? "tanh" : "none"));
    })
}

int sdx_clamp(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double lo, double hi)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::clamp(T(a, "a"), at::Scalar(lo), at::Scalar(hi)));
    })
}

int sdx_where(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *cond, const sdx_tensor_t *a,
              const sdx_tensor_t *b)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::where(T(cond, "cond"), T(a, "a"), T(b, "b")));
    })
}

int sdx_isfinite_all(const sdx_tensor_t *a, bool *out)
{
    SDX_GUARD({
        s_check_out(out);
        bool v = at::isfinite(T(a, "a")).all().item<bool>();
        *out = v;
        return 0;
    })
}

/* ================================================================ reductions */

static at::OptionalIntArrayRef s_odims(const std::vector<int64_t> &d)
{
    if (d.empty())
        return c10::nullopt;
    return at::IntArrayRef(d);
}

int sdx_sum(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
            int ndims, bool keepdim)
{
    SDX_GUARD({
        s_check_out(out);
        auto d = s_dims(dims, ndims);
        return s_put(S, out, at::sum(T(a, "a"), s_odims(d), keepdim));
    })
}

int sdx_mean(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
             int ndims, bool keepdim)
{
    SDX_GUARD({
        s_check_out(out);
        auto d = s_dims(dims, ndims);
        return s_put(S, out, at::mean(T(a, "a"), s_odims(d), keepdim));
    })
}

int sdx_var(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
            int ndims, bool unbiased, bool keepdim)
{
    SDX_GUARD({
        s_check_out(out);
        auto d = s_dims(dims, ndims);
        return s_put(S, out, at::var(T(a, "a"), s_odims(d), unbiased, keepdim));
    })
}

int sdx_std(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
            int ndims, bool unbiased, bool keepdim)
{
    SDX_GUARD({
        s_check_out(out);
        auto d = s_dims(dims, ndims);
        return s_put(S, out, at::std(T(a, "a"), s_odims(d), unbiased, keepdim));
    })
}

int sdx_amax(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
             int ndims, bool keepdim)
{
    SDX_GUARD({
        s_check_out(out);
        auto d = s_dims(dims, ndims);
        /* amax with an empty dim list reduces over every dim. */
        return s_put(S, out, at::amax(T(a, "a"), d, keepdim));
    })
}

int sdx_argmax(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, int dim, bool keepdim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::argmax(T(a, "a"), (int64_t)dim, keepdim));
    })
}

int sdx_softmax(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, int dim)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::softmax(T(a, "a"), dim));
    })
}

/* ================================================================ nn */

static c10::optional<at::Tensor> s_opt(const sdx_tensor_t *t)
{
    if (!t)
        return c10::nullopt;
    return t->t;
}

int sdx_linear(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, const sdx_tensor_t *w,
               const sdx_tensor_t *b)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::linear(T(x, "x"), T(w, "w"), s_opt(b)));
    })
}

int sdx_conv2d(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, const sdx_tensor_t *w,
               const sdx_tensor_t *b, int stride_h, int stride_w, int pad_h, int pad_w, int groups)
{
    SDX_GUARD({
        s_check_out(out);
        int64_t stride[2] = {stride_h, stride_w};
        int64_t pad[2] = {pad_h, pad_w};
        int64_t dil[2] = {1, 1};
        return s_put(S, out, at::conv2d(T(x, "x"), T(w, "w"), s_opt(b), stride, pad, dil, groups));
    })
}

int sdx_group_norm(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int groups,
                   const sdx_tensor_t *w, const sdx_tensor_t *b, double eps)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::group_norm(T(x, "x"), groups, s_opt(w), s_opt(b), eps));
    })
}

int sdx_layer_norm(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, const sdx_tensor_t *w,
                   const sdx_tensor_t *b, double eps)
{
    SDX_GUARD({
        s_check_out(out);
        const at::Tensor &X = T(x, "x");
        if (X.dim() < 1)
            s_fail("layer_norm of a 0-D tensor");
        int64_t last = X.size(-1);
        return s_put(S, out, at::layer_norm(X, at::IntArrayRef(&last, 1), s_opt(w), s_opt(b), eps));
    })
}

/* softmax(q k^T * scale + mask) v without fused kernels. matmul, not
   baddbmm(beta=0): Debian's 1.13 CPU baddbmm may read the uninitialised
   input and produce NaN. Half inputs take the softmax in float32. */
static at::Tensor s_sdpa_manual(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                                const c10::optional<at::Tensor> &mask, bool is_causal, double scale)
{
    at::Tensor scores = at::matmul(q, k.transpose(-2, -1));
    const bool upcast = scores.scalar_type() == at::kHalf || scores.scalar_type() == at::kBFloat16;
    if (upcast)
        scores = scores.to(at::kFloat);
    scores = scores.mul(scale);
    if (mask && mask->defined()) {
        /* A bool mask means "may attend" (as in the fused op). */
        if (mask->scalar_type() == at::kBool)
            scores =
                scores.masked_fill(mask->logical_not(), -std::numeric_limits<double>::infinity());
        else
            scores = scores.add(*mask);
    }
    if (is_causal) {
        int64_t lq = q.size(-2), lk = k.size(-2);
        at::Tensor upper =
            at::ones({lq, lk}, at::TensorOptions().dtype(at::kBool).device(q.device())).triu(1);
        scores = scores.masked_fill(upper, -std::numeric_limits<double>::infinity());
    }
    at::Tensor p = at::softmax(scores, -1);
    if (upcast)
        p = p.to(q.scalar_type());
    return at::matmul(p, v);
}

void sdx_sdpa_force_manual(bool manual)
{
    s_force_manual_sdpa = manual;
}

int sdx_sdpa(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *q, const sdx_tensor_t *k,
             const sdx_tensor_t *v, const sdx_tensor_t *mask, bool is_causal, double scale)
{
    SDX_GUARD({
        s_check_out(out);
        const at::Tensor &Q = T(q, "q");
        const at::Tensor &K = T(k, "k");
        const at::Tensor &V = T(v, "v");
        if (Q.dim() < 2 || K.dim() < 2 || V.dim() < 2)
            s_fail("q, k, v must be at least 2-D");
        if (Q.size(-1) != K.size(-1))
            s_fail("q and k head dims differ (%lld vs %lld)", (long long)Q.size(-1),
                   (long long)K.size(-1));
        if (K.size(-2) != V.size(-2))
            s_fail("k and v lengths differ (%lld vs %lld)", (long long)K.size(-2),
                   (long long)V.size(-2));
        const double def_scale = 1.0 / std::sqrt((double)Q.size(-1));
        const double sc = scale > 0 ? scale : def_scale;
        c10::optional<at::Tensor> M = s_opt(mask);
        at::Tensor r;
        bool fused = !s_force_manual_sdpa;
#if TORCH_VERSION_MAJOR >= 2
        /* The fused op refuses mask + is_causal together; 2.0 has no scale
           argument. */
        if (M && is_causal)
            fused = false;
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 1
        if (std::fabs(sc - def_scale) > 1e-12 * def_scale)
            fused = false;
#endif
        if (fused) {
            if (M && M->scalar_type() != Q.scalar_type() && M->scalar_type() != at::kBool)
                M = M->to(Q.scalar_type());
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 1
            r = at::scaled_dot_product_attention(Q, K, V, M, 0.0, is_causal);
#else
            r = at::scaled_dot_product_attention(Q, K, V, M, 0.0, is_causal, sc);
#endif
        }
#else
        fused = false;
#endif
        if (!fused)
            r = s_sdpa_manual(Q, K, V, M, is_causal, sc);
        return s_put(S, out, std::move(r));
    })
}

int sdx_interpolate_nearest(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x,
                            int64_t out_h, int64_t out_w)
{
    SDX_GUARD({
        s_check_out(out);
        const at::Tensor &X = T(x, "x");
        if (X.dim() != 4)
            s_fail("interpolate needs a 4-D tensor, got %d-D", (int)X.dim());
        int64_t sz[2] = {out_h, out_w};
        return s_put(S, out, at::upsample_nearest2d(X, sz, c10::nullopt, c10::nullopt));
    })
}

int sdx_interpolate_bilinear(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x,
                             int64_t out_h, int64_t out_w)
{
    SDX_GUARD({
        s_check_out(out);
        const at::Tensor &X = T(x, "x");
        if (X.dim() != 4)
            s_fail("interpolate needs a 4-D tensor, got %d-D", (int)X.dim());
        int64_t sz[2] = {out_h, out_w};
        return s_put(S, out, at::upsample_bilinear2d(X, sz, false, c10::nullopt, c10::nullopt));
    })
}

int sdx_avg_pool2d(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int kernel,
                   int stride)
{
    SDX_GUARD({
        s_check_out(out);
        int64_t k[2] = {kernel, kernel};
        int64_t s[2] = {stride, stride};
        return s_put(S, out, at::avg_pool2d(T(x, "x"), k, s));
    })
}

int sdx_pixel_unshuffle(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int factor)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::pixel_unshuffle(T(x, "x"), factor));
    })
}

int sdx_pixel_shuffle(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int factor)
{
    SDX_GUARD({
        s_check_out(out);
        return s_put(S, out, at::pixel_shuffle(T(x, "x"), factor));
    })
}

} /* extern "C" */
