// Fused bias + activation (+ gain, + clamp) CUDA kernel and its first-derivative mode.
//
// Written from the op's definition for this project:
//   forward: y  = clamp(gain * act(x + b[c]), -clamp, clamp)            act in {linear, relu, lrelu(alpha)}
//   grad:    dx = dy * gain * (act is linear or y > 0 ? 1 : alpha)      relu: alpha = 0
//                 and dx = 0 where the clamp is active (|y| >= clamp).
// The derivative is evaluated from the forward OUTPUT y (valid for gain > 0, alpha >= 0, which the Python glue
// ensures). The second derivative of these piecewise-linear activations is zero, so the grad mode is all the
// autograd glue needs for any order of differentiation.
//
// Compiling this file as C++ with -DDA_HOST_EMULATION replaces the launch by a serial CPU loop over the same
// element function (used by the tests on machines without a GPU).

#include "ops.h"

#include <c10/util/Half.h>

#ifdef DA_HOST_EMULATION
#define DA_HD inline
#else
#include <cuda_runtime.h>
#define DA_HD __host__ __device__ __forceinline__
#endif

namespace {

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

// I: index type (32-bit when the tensor allows it: 64-bit division is slow on GPUs).
template <typename T, typename A, typename I>
DA_HD void bias_act_elem(const BiasActParams& p, I i) {
    const A gain = static_cast<A>(p.gain);
    const A clamp = static_cast<A>(p.clamp);
    const bool clamped = p.clamp >= 0;
    if (!p.grad) {
        A v = static_cast<A>(static_cast<const T*>(p.x)[i]);
        if (p.b) {
            const I c = (i / static_cast<I>(p.step)) % static_cast<I>(p.channels);
            v += static_cast<A>(static_cast<const T*>(p.b)[c]);
        }
        if (p.act == DA_ACT_RELU) v = v > 0 ? v : A(0);
        else if (p.act == DA_ACT_LRELU) v = v > 0 ? v : v * static_cast<A>(p.alpha);
        v *= gain;
        if (clamped) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
        static_cast<T*>(p.out)[i] = static_cast<T>(v);
    } else {
        A g = static_cast<A>(static_cast<const T*>(p.x)[i]) * gain;
        if (p.act != DA_ACT_LINEAR || clamped) {
            const A y = static_cast<A>(static_cast<const T*>(p.ref)[i]);
            if (p.act == DA_ACT_RELU && !(y > 0)) g = 0;
            else if (p.act == DA_ACT_LRELU && !(y > 0)) g *= static_cast<A>(p.alpha);
            // Compare with the clamp as stored in T (the forward wrote T(clamp) where it clamped; for float16
            // that differs from the clamp itself, e.g. 0.8 -> 0.7998).
            const A clamp_t = static_cast<A>(static_cast<T>(clamp));
            if (clamped && (y >= clamp_t || y <= -clamp_t)) g = 0;
        }
        static_cast<T*>(p.out)[i] = static_cast<T>(g);
    }
}

}  // namespace

#ifndef DA_HOST_EMULATION

namespace {

template <typename T, typename A, typename I>
__global__ void bias_act_kernel(BiasActParams p) {
    const I n = static_cast<I>(p.numel);
    const I stride = static_cast<I>(gridDim.x) * blockDim.x;
    for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
        bias_act_elem<T, A, I>(p, i);
}

template <typename T>
cudaError_t launch_typed(const BiasActParams& p, cudaStream_t stream) {
    using A = typename AccOf<T>::type;
    const int threads = 256;
    int64_t blocks = (p.numel + threads - 1) / threads;
    if (blocks > (int64_t)1 << 20) blocks = (int64_t)1 << 20;  // grid-stride loop covers the rest
    // 32-bit indexing when i + stride cannot overflow.
    if (p.numel + blocks * threads < ((int64_t)1 << 32))
        bias_act_kernel<T, A, uint32_t><<<(unsigned)blocks, threads, 0, stream>>>(p);
    else
        bias_act_kernel<T, A, int64_t><<<(unsigned)blocks, threads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t da_bias_act_launch(const BiasActParams& p, int dtype, cudaStream_t stream) {
    if (p.numel == 0) return cudaSuccess;
    switch (dtype) {
        case DA_FLOAT32: return launch_typed<float>(p, stream);
        case DA_FLOAT64: return launch_typed<double>(p, stream);
        case DA_FLOAT16: return launch_typed<c10::Half>(p, stream);
        default: return cudaErrorInvalidValue;
    }
}

#else  // DA_HOST_EMULATION

namespace {
template <typename T>
void emulate_typed(const BiasActParams& p) {
    using A = typename AccOf<T>::type;
    if (p.numel < ((int64_t)1 << 32))
        for (uint32_t i = 0; i < (uint32_t)p.numel; ++i) bias_act_elem<T, A, uint32_t>(p, i);
    else
        for (int64_t i = 0; i < p.numel; ++i) bias_act_elem<T, A, int64_t>(p, i);
}
}  // namespace

// Returns 0 on success, 2 for a bad dtype.
extern "C" int da_emu_bias_act(const void* x, const void* b, const void* ref, void* out, int dtype, int64_t numel,
                               int64_t step, int channels, int act, int grad, double alpha, double gain,
                               double clamp) {
    BiasActParams p;
    p.x = x; p.b = b; p.ref = ref; p.out = out;
    p.numel = numel; p.step = step; p.channels = channels;
    p.act = act; p.grad = grad; p.alpha = alpha; p.gain = gain; p.clamp = clamp;
    switch (dtype) {
        case DA_FLOAT32: emulate_typed<float>(p); return 0;
        case DA_FLOAT64: emulate_typed<double>(p); return 0;
        case DA_FLOAT16: emulate_typed<c10::Half>(p); return 0;
        default: return 2;
    }
}

#endif  // DA_HOST_EMULATION
