// Parameter structs and launcher declarations shared by ops.cpp (torch glue) and the CUDA kernels.
//
// The kernels are deliberately header-light: they see raw pointers and these plain structs only, so the .cu
// files include nothing from torch except <c10/util/Half.h> and compile in seconds. All tensor checks,
// contiguity, dtype handling and output allocation live in ops.cpp.
//
// Defining DA_HOST_EMULATION compiles the kernel sources as plain C++ (g++ -x c++) with a serial CPU
// emulation of the launches instead of the CUDA kernels; the tests use it to check the kernels' index
// arithmetic on machines without a GPU.
#pragma once

#include <cstdint>

#ifndef DA_HOST_EMULATION
#include <cuda_runtime.h>
#endif

// Element types understood by the launchers (the accumulation type is float, or double for float64).
enum DaDtype : int { DA_FLOAT32 = 0, DA_FLOAT64 = 1, DA_FLOAT16 = 2 };

// upfirdn2d kernel choice: automatic, the generic kernel, or the tiled shared-memory kernel.
enum DaUpfirdn2dImpl : int { DA_UPFIRDN2D_AUTO = 0, DA_UPFIRDN2D_GENERIC = 1, DA_UPFIRDN2D_TILED = 2 };

// bias_act activations and clamp convention.
enum DaAct : int { DA_ACT_LINEAR = 0, DA_ACT_RELU = 1, DA_ACT_LRELU = 2 };

struct Upfirdn2dParams {
    const void* x;   // [major, in_h, in_w], contiguous, element type = dtype
    const void* f;   // [kh, kw], contiguous, accumulation type (float, or double for DA_FLOAT64)
    void* y;         // [major, out_h, out_w], contiguous, element type = dtype
    int major;       // N * C
    int in_h, in_w;
    int out_h, out_w;
    int kh, kw;
    int up_x, up_y;
    int down_x, down_y;
    int pad_x0, pad_y0;  // leading padding (negative crops); trailing padding only shows in out_h / out_w
    int flip;            // 0: true convolution with f (the op's definition); 1: correlation (f pre-flipped)
};

struct BiasActParams {
    const void* x;    // forward: input x;           grad: incoming gradient dy
    const void* b;    // forward: bias [C] or null;  grad: unused
    const void* ref;  // forward: unused;            grad: the forward output y
    void* out;        // forward: y;                 grad: dx
    int64_t numel;    // elements of x (== out)
    int64_t step;     // product of dims >= 2 (elements per channel per sample)
    int channels;     // size of dim 1
    int act;          // DaAct
    int grad;         // 0: forward, 1: first derivative (dx = dy * act'(from y) * gain, zero where clamped)
    double alpha;     // lrelu negative slope (relu: 0)
    double gain;
    double clamp;     // < 0: no clamping
};

#ifndef DA_HOST_EMULATION
// Both return cudaSuccess or the launch error; they never synchronise.
cudaError_t da_upfirdn2d_launch(const Upfirdn2dParams& p, int dtype, int impl, cudaStream_t stream);
cudaError_t da_bias_act_launch(const BiasActParams& p, int dtype, cudaStream_t stream);
// Whether the tiled upfirdn2d kernel handles this parameter set (filter size, up/down factors).
bool da_upfirdn2d_has_tiled(const Upfirdn2dParams& p);
#endif
