// upfirdn2d CUDA kernels: upsample (zero insertion), pad/crop, FIR filter (true convolution), downsample.
//
// Written from the op's definition (scipy.signal.upfirdn semantics) for this project.
//
// Index arithmetic, per axis. The definition computes, for output index j,
//     y[j] = sum_{t=0}^{k-1} xpad[j*down + t] * f[k-1-t]          (true convolution, valid mode)
// where xpad[q] = xup[q - pad0] and xup[u] = x[u / up] when u % up == 0 (0 <= u / up < in), else 0.
// With q0 = j*down - pad0 the window covers upsampled positions u = q0 + t, so only the input samples
//     i in [ceil(q0 / up), floor((q0 + k - 1) / up)]  (clipped to [0, in))
// contribute, each with tap t = i*up - q0. Nothing is spent on inserted zeros or on discarded outputs.
//
// Two kernels:
//  * a generic one (any up/down/pad/filter size, one thread per output pixel, grid-stride loop);
//  * a tiled shared-memory one for the common StyleGAN cases (4x4 filter with up=2, down=2, or 1/1), where a
//    block stages an input tile and the (oriented) filter in shared memory and every thread computes several
//    outputs with fully unrolled tap loops.
//
// The per-pixel / per-phase bodies are __host__ __device__ functions; compiling this file as C++ with
// -DDA_HOST_EMULATION replaces the launches by a serial CPU emulation (see the bottom of the file), which the
// tests use to validate the kernels' arithmetic without a GPU.

#include "ops.h"

#include <c10/util/Half.h>

#ifdef DA_HOST_EMULATION
#include <vector>
#define DA_HD inline
#define DA_UNROLL
#else
#include <cuda_runtime.h>
#define DA_HD __host__ __device__ __forceinline__
#define DA_UNROLL _Pragma("unroll")
#endif

namespace {

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

DA_HD int imin(int a, int b) { return a < b ? a : b; }
DA_HD int imax(int a, int b) { return a > b ? a : b; }
// Floor / ceil division for b > 0 and any sign of a.
DA_HD int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
DA_HD int ceil_div(int a, int b) { return -floor_div(-a, b); }

// --------------------------------------------------------------------------------------------------------
// Generic kernel body: one output pixel.

template <typename T, typename A>
DA_HD A upfirdn2d_pixel(const Upfirdn2dParams& p, const T* xplane, const A* f, int oy, int ox) {
    const int q0y = oy * p.down_y - p.pad_y0;
    const int q0x = ox * p.down_x - p.pad_x0;
    const int iy0 = imax(ceil_div(q0y, p.up_y), 0);
    const int iy1 = imin(floor_div(q0y + p.kh - 1, p.up_y), p.in_h - 1);
    const int ix0 = imax(ceil_div(q0x, p.up_x), 0);
    const int ix1 = imin(floor_div(q0x + p.kw - 1, p.up_x), p.in_w - 1);
    A acc = 0;
    for (int iy = iy0; iy <= iy1; ++iy) {
        const int ty = iy * p.up_y - q0y;  // tap index in [0, kh)
        const A* frow = f + (int64_t)(p.flip ? ty : p.kh - 1 - ty) * p.kw;
        const T* xrow = xplane + (int64_t)iy * p.in_w;
        for (int ix = ix0; ix <= ix1; ++ix) {
            const int tx = ix * p.up_x - q0x;
            acc += static_cast<A>(xrow[ix]) * frow[p.flip ? tx : p.kw - 1 - tx];
        }
    }
    return acc;
}

template <typename T, typename A>
DA_HD void upfirdn2d_generic_elem(const Upfirdn2dParams& p, int64_t i) {
    const int ox = (int)(i % p.out_w);
    const int64_t r = i / p.out_w;
    const int oy = (int)(r % p.out_h);
    const int64_t m = r / p.out_h;
    const T* xplane = static_cast<const T*>(p.x) + m * p.in_h * p.in_w;
    const A v = upfirdn2d_pixel<T, A>(p, xplane, static_cast<const A*>(p.f), oy, ox);
    static_cast<T*>(p.y)[i] = static_cast<T>(v);
}

// --------------------------------------------------------------------------------------------------------
// Tiled kernel: compile-time up/down/filter size and output tile.

constexpr int kTiledThreads = 256;

template <int UX_, int UY_, int DX_, int DY_, int KH_, int KW_, int TOH_, int TOW_>
struct TileCfg {
    static constexpr int UX = UX_, UY = UY_, DX = DX_, DY = DY_, KH = KH_, KW = KW_, TOH = TOH_, TOW = TOW_;
    // Input samples a TOH x TOW output tile can touch: a window of (TO-1)*D + K upsampled positions holds at
    // most ((TO-1)*D + K - 1) / U + 1 multiples of U.
    static constexpr int TIH = ((TOH - 1) * DY + KH - 1) / UY + 1;
    static constexpr int TIW = ((TOW - 1) * DX + KW - 1) / UX + 1;
    static constexpr int TAPS_Y = (KH + UY - 1) / UY;  // input rows per output pixel (at most)
    static constexpr int TAPS_X = (KW + UX - 1) / UX;
};

// First input row / column of the tile starting at output o0.
template <class C>
DA_HD int tile_iy_lo(const Upfirdn2dParams& p, int oy0) { return ceil_div(oy0 * C::DY - p.pad_y0, C::UY); }
template <class C>
DA_HD int tile_ix_lo(const Upfirdn2dParams& p, int ox0) { return ceil_div(ox0 * C::DX - p.pad_x0, C::UX); }

// sf[ty * KW + tx] = coefficient of window tap (ty, tx), i.e. the filter flipped unless p.flip.
template <typename A, class C>
DA_HD void tile_load_filter(const Upfirdn2dParams& p, A* sf, int tid, int nthreads) {
    const A* f = static_cast<const A*>(p.f);
    for (int idx = tid; idx < C::KH * C::KW; idx += nthreads) {
        const int ty = idx / C::KW, tx = idx - ty * C::KW;
        const int fy = p.flip ? ty : C::KH - 1 - ty;
        const int fx = p.flip ? tx : C::KW - 1 - tx;
        sf[idx] = f[fy * C::KW + fx];
    }
}

// Stage the TIH x TIW input tile (zeros outside the image) in sx.
template <typename T, typename A, class C>
DA_HD void tile_load_input(const Upfirdn2dParams& p, const T* xplane, A* sx, int iy_lo, int ix_lo, int tid,
                           int nthreads) {
    for (int idx = tid; idx < C::TIH * C::TIW; idx += nthreads) {
        const int r = idx / C::TIW, c = idx - r * C::TIW;
        const int iy = iy_lo + r, ix = ix_lo + c;
        A v = 0;
        if (iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w) v = static_cast<A>(xplane[(int64_t)iy * p.in_w + ix]);
        sx[idx] = v;
    }
}

template <typename T, typename A, class C>
DA_HD void tile_compute(const Upfirdn2dParams& p, const A* sx, const A* sf, T* yplane, int oy0, int ox0,
                        int iy_lo, int ix_lo, int tid, int nthreads) {
    for (int idx = tid; idx < C::TOH * C::TOW; idx += nthreads) {
        const int r = idx / C::TOW, c = idx - r * C::TOW;
        const int oy = oy0 + r, ox = ox0 + c;
        if (oy >= p.out_h || ox >= p.out_w) continue;
        const int q0y = oy * C::DY - p.pad_y0, q0x = ox * C::DX - p.pad_x0;
        const int iyf = ceil_div(q0y, C::UY), ixf = ceil_div(q0x, C::UX);  // first input sample in the window
        const int ty0 = iyf * C::UY - q0y, tx0 = ixf * C::UX - q0x;        // its tap index, in [0, U)
        const A* s = sx + (iyf - iy_lo) * C::TIW + (ixf - ix_lo);
        A acc = 0;
        DA_UNROLL
        for (int ky = 0; ky < C::TAPS_Y; ++ky) {
            const int ty = ty0 + ky * C::UY;
            if (ty < C::KH) {
                DA_UNROLL
                for (int kx = 0; kx < C::TAPS_X; ++kx) {
                    const int tx = tx0 + kx * C::UX;
                    if (tx < C::KW) acc += s[ky * C::TIW + kx] * sf[ty * C::KW + tx];
                }
            }
        }
        yplane[(int64_t)oy * p.out_w + ox] = static_cast<T>(acc);
    }
}

// The tiled configurations (dispatch key: kh, kw, up_x, up_y, down_x, down_y).
using CfgUp2 = TileCfg<2, 2, 1, 1, 4, 4, 32, 64>;
using CfgDown2 = TileCfg<1, 1, 2, 2, 4, 4, 16, 32>;
using CfgFilter = TileCfg<1, 1, 1, 1, 4, 4, 32, 32>;

template <class C>
bool cfg_matches(const Upfirdn2dParams& p) {
    return p.kh == C::KH && p.kw == C::KW && p.up_x == C::UX && p.up_y == C::UY && p.down_x == C::DX &&
           p.down_y == C::DY;
}

template <class C>
void tile_grid(const Upfirdn2dParams& p, int& gx, int& gy, int& gz) {
    gx = (p.out_w + C::TOW - 1) / C::TOW;
    gy = (p.out_h + C::TOH - 1) / C::TOH;
    gz = imin(p.major, 65535);
}

// Returns 0 (no tiled config), 1 (up2), 2 (down2), 3 (filter only).
int tiled_cfg_index(const Upfirdn2dParams& p) {
    int id = 0;
    if (cfg_matches<CfgUp2>(p)) id = 1;
    else if (cfg_matches<CfgDown2>(p)) id = 2;
    else if (cfg_matches<CfgFilter>(p)) id = 3;
    if (id == 0) return 0;
    // Grid y is limited to 65535 blocks.
    const int toh = id == 1 ? CfgUp2::TOH : id == 2 ? CfgDown2::TOH : CfgFilter::TOH;
    if ((p.out_h + toh - 1) / toh > 65535) return 0;
    return id;
}

}  // namespace

#ifndef DA_HOST_EMULATION
// ==========================================================================================================
// CUDA kernels and launchers

namespace {

template <typename T, typename A>
__global__ void upfirdn2d_generic_kernel(Upfirdn2dParams p, int64_t total) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
        upfirdn2d_generic_elem<T, A>(p, i);
}

template <typename T, typename A, class C>
__global__ void __launch_bounds__(kTiledThreads) upfirdn2d_tiled_kernel(Upfirdn2dParams p) {
    __shared__ A sf[C::KH * C::KW];
    __shared__ A sx[C::TIH * C::TIW];
    const int tid = threadIdx.x, nt = blockDim.x;
    tile_load_filter<A, C>(p, sf, tid, nt);
    const int oy0 = blockIdx.y * C::TOH, ox0 = blockIdx.x * C::TOW;
    const int iy_lo = tile_iy_lo<C>(p, oy0), ix_lo = tile_ix_lo<C>(p, ox0);
    const int64_t in_plane = (int64_t)p.in_h * p.in_w, out_plane = (int64_t)p.out_h * p.out_w;
    for (int m = blockIdx.z; m < p.major; m += gridDim.z) {
        __syncthreads();  // filter staged / previous plane consumed
        tile_load_input<T, A, C>(p, static_cast<const T*>(p.x) + m * in_plane, sx, iy_lo, ix_lo, tid, nt);
        __syncthreads();
        tile_compute<T, A, C>(p, sx, sf, static_cast<T*>(p.y) + m * out_plane, oy0, ox0, iy_lo, ix_lo, tid, nt);
    }
}

template <typename T, class C>
cudaError_t launch_tiled(const Upfirdn2dParams& p, cudaStream_t stream) {
    using A = typename AccOf<T>::type;
    int gx, gy, gz;
    tile_grid<C>(p, gx, gy, gz);
    upfirdn2d_tiled_kernel<T, A, C><<<dim3(gx, gy, gz), kTiledThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const Upfirdn2dParams& p, int impl, cudaStream_t stream) {
    using A = typename AccOf<T>::type;
    if (impl != DA_UPFIRDN2D_GENERIC) {
        switch (tiled_cfg_index(p)) {
            case 1: return launch_tiled<T, CfgUp2>(p, stream);
            case 2: return launch_tiled<T, CfgDown2>(p, stream);
            case 3: return launch_tiled<T, CfgFilter>(p, stream);
            default:
                if (impl == DA_UPFIRDN2D_TILED) return cudaErrorInvalidValue;
        }
    }
    const int64_t total = (int64_t)p.major * p.out_h * p.out_w;
    const int threads = 256;
    int64_t blocks = (total + threads - 1) / threads;
    if (blocks > (int64_t)1 << 20) blocks = (int64_t)1 << 20;  // grid-stride loop covers the rest
    upfirdn2d_generic_kernel<T, A><<<(unsigned)blocks, threads, 0, stream>>>(p, total);
    return cudaGetLastError();
}

}  // namespace

bool da_upfirdn2d_has_tiled(const Upfirdn2dParams& p) { return tiled_cfg_index(p) != 0; }

cudaError_t da_upfirdn2d_launch(const Upfirdn2dParams& p, int dtype, int impl, cudaStream_t stream) {
    if ((int64_t)p.major * p.out_h * p.out_w == 0) return cudaSuccess;
    switch (dtype) {
        case DA_FLOAT32: return launch_typed<float>(p, impl, stream);
        case DA_FLOAT64: return launch_typed<double>(p, impl, stream);
        case DA_FLOAT16: return launch_typed<c10::Half>(p, impl, stream);
        default: return cudaErrorInvalidValue;
    }
}

#else  // DA_HOST_EMULATION
// ==========================================================================================================
// Serial CPU emulation of the launches above (same bodies, same tiling, threads run phase by phase).

namespace {

template <typename T, class C>
void emulate_tiled(const Upfirdn2dParams& p) {
    using A = typename AccOf<T>::type;
    int gx, gy, gz;
    tile_grid<C>(p, gx, gy, gz);
    if (gz > 3) gz = 3;  // exercise the plane loop of a block
    std::vector<A> sf(C::KH * C::KW), sx(C::TIH * C::TIW);
    const int64_t in_plane = (int64_t)p.in_h * p.in_w, out_plane = (int64_t)p.out_h * p.out_w;
    for (int bz = 0; bz < gz; ++bz)
        for (int by = 0; by < gy; ++by)
            for (int bx = 0; bx < gx; ++bx) {
                for (int t = 0; t < kTiledThreads; ++t) tile_load_filter<A, C>(p, sf.data(), t, kTiledThreads);
                const int oy0 = by * C::TOH, ox0 = bx * C::TOW;
                const int iy_lo = tile_iy_lo<C>(p, oy0), ix_lo = tile_ix_lo<C>(p, ox0);
                for (int m = bz; m < p.major; m += gz) {
                    for (int t = 0; t < kTiledThreads; ++t)
                        tile_load_input<T, A, C>(p, static_cast<const T*>(p.x) + m * in_plane, sx.data(), iy_lo,
                                                 ix_lo, t, kTiledThreads);
                    for (int t = 0; t < kTiledThreads; ++t)
                        tile_compute<T, A, C>(p, sx.data(), sf.data(), static_cast<T*>(p.y) + m * out_plane, oy0,
                                              ox0, iy_lo, ix_lo, t, kTiledThreads);
                }
            }
}

template <typename T>
int emulate_typed(const Upfirdn2dParams& p, int impl) {
    using A = typename AccOf<T>::type;
    if (impl != DA_UPFIRDN2D_GENERIC) {
        switch (tiled_cfg_index(p)) {
            case 1: emulate_tiled<T, CfgUp2>(p); return 0;
            case 2: emulate_tiled<T, CfgDown2>(p); return 0;
            case 3: emulate_tiled<T, CfgFilter>(p); return 0;
            default:
                if (impl == DA_UPFIRDN2D_TILED) return 1;
        }
    }
    const int64_t total = (int64_t)p.major * p.out_h * p.out_w;
    for (int64_t i = 0; i < total; ++i) upfirdn2d_generic_elem<T, A>(p, i);
    return 0;
}

}  // namespace

// iparams: major, in_h, in_w, out_h, out_w, kh, kw, up_x, up_y, down_x, down_y, pad_x0, pad_y0, flip.
// Returns 0 on success, 1 when impl asks for the tiled kernel and it does not apply, 2 for a bad dtype.
extern "C" int da_emu_upfirdn2d(const void* x, const void* f, void* y, int dtype, int impl, const int* ip) {
    Upfirdn2dParams p;
    p.x = x; p.f = f; p.y = y;
    p.major = ip[0]; p.in_h = ip[1]; p.in_w = ip[2]; p.out_h = ip[3]; p.out_w = ip[4]; p.kh = ip[5]; p.kw = ip[6];
    p.up_x = ip[7]; p.up_y = ip[8]; p.down_x = ip[9]; p.down_y = ip[10]; p.pad_x0 = ip[11]; p.pad_y0 = ip[12];
    p.flip = ip[13];
    switch (dtype) {
        case DA_FLOAT32: return emulate_typed<float>(p, impl);
        case DA_FLOAT64: return emulate_typed<double>(p, impl);
        case DA_FLOAT16: return emulate_typed<c10::Half>(p, impl);
        default: return 2;
    }
}

extern "C" int da_emu_upfirdn2d_has_tiled(const int* ip) {
    Upfirdn2dParams p{};
    p.major = ip[0]; p.in_h = ip[1]; p.in_w = ip[2]; p.out_h = ip[3]; p.out_w = ip[4]; p.kh = ip[5]; p.kw = ip[6];
    p.up_x = ip[7]; p.up_y = ip[8]; p.down_x = ip[9]; p.down_y = ip[10]; p.pad_x0 = ip[11]; p.pad_y0 = ip[12];
    return tiled_cfg_index(p) != 0;
}

#endif  // DA_HOST_EMULATION
