// Torch glue for the project's CUDA ops: one extension module (domain_adapt_ops) exporting
//   upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter=False, impl=0)
//   bias_act(x, b, act, alpha, gain, clamp)
//   bias_act_grad(dy, y, act, alpha, gain, clamp)
//   upfirdn2d_has_tiled(kh, kw, up_x, up_y, down_x, down_y)
// All argument checking, contiguity and allocation happens here; the kernels (upfirdn2d.cu, bias_act.cu) see
// raw pointers and the plain structs of ops.h only. Autograd lives in Python (ops/_cuda.py).

#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>
#include <cstdlib>
#include <optional>
#include <string>

#include "ops.h"

namespace {

int dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return DA_FLOAT32;
        case at::kDouble: return DA_FLOAT64;
        case at::kHalf: return DA_FLOAT16;
        default: return -1;
    }
}

void check_cuda_float(const torch::Tensor& t, const char* op, const char* name) {
    TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got a tensor on ", t.device());
    TORCH_CHECK(dtype_code(t.scalar_type()) >= 0, op, ": ", name,
                " must be float32, float64 or float16, got ", t.scalar_type());
}

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

int parse_act(const std::string& act) {
    if (act == "linear") return DA_ACT_LINEAR;
    if (act == "relu") return DA_ACT_RELU;
    if (act == "lrelu") return DA_ACT_LRELU;
    TORCH_CHECK(false, "bias_act: unsupported activation '", act, "' (CUDA kernel supports linear, relu, lrelu)");
    return -1;
}

// ---------------------------------------------------------------------------------------------------------

torch::Tensor upfirdn2d(const torch::Tensor& x, const torch::Tensor& f, int64_t up_x, int64_t up_y, int64_t down_x,
                        int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
                        bool flip_filter, int64_t impl) {
    check_cuda_float(x, "upfirdn2d", "x");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must have shape [N, C, H, W], got ", x.sizes());
    TORCH_CHECK(f.dim() == 2, "upfirdn2d: the filter must be 2-D [kh, kw], got ", f.sizes());
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: the filter must be on the same device as x (", x.device(),
                "), got ", f.device());
    TORCH_CHECK(f.scalar_type() == x.scalar_type() || f.scalar_type() == at::kFloat,
                "upfirdn2d: the filter must be float32 or have x's dtype (", x.scalar_type(), "), got ",
                f.scalar_type());
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
                "upfirdn2d: up and down factors must be >= 1, got up=(", up_x, ", ", up_y, "), down=(", down_x,
                ", ", down_y, ")");
    TORCH_CHECK(impl >= DA_UPFIRDN2D_AUTO && impl <= DA_UPFIRDN2D_TILED,
                "upfirdn2d: impl must be 0 (auto), 1 (generic) or 2 (tiled), got ", impl);
    const int64_t n = x.size(0), c = x.size(1), in_h = x.size(2), in_w = x.size(3);
    const int64_t kh = f.size(0), kw = f.size(1);
    TORCH_CHECK(kh >= 1 && kw >= 1, "upfirdn2d: the filter must not be empty, got ", f.sizes());
    const int64_t out_h = floor_div(in_h * up_y + pad_y0 + pad_y1 - kh + down_y, down_y);
    const int64_t out_w = floor_div(in_w * up_x + pad_x0 + pad_x1 - kw + down_x, down_x);
    TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: empty output (", out_h, "x", out_w, ") for input ", x.sizes(),
                ", filter ", f.sizes(), ", up=(", up_x, ", ", up_y, "), down=(", down_x, ", ", down_y, "), pad=(",
                pad_x0, ", ", pad_x1, ", ", pad_y0, ", ", pad_y1, ")");
    // The kernels index within a plane with 32-bit ints.
    const int64_t big = INT_MAX / 16;
    TORCH_CHECK(n * c <= INT_MAX && in_h * up_y + kh <= big && in_w * up_x + kw <= big && out_h * down_y <= big &&
                    out_w * down_x <= big && std::abs(pad_x0) <= big && std::abs(pad_y0) <= big,
                "upfirdn2d: tensor or parameters too large for the CUDA kernel: x ", x.sizes());
    if (impl == DA_UPFIRDN2D_TILED) {
        Upfirdn2dParams q{};
        q.kh = (int)kh; q.kw = (int)kw; q.up_x = (int)up_x; q.up_y = (int)up_y;
        q.down_x = (int)down_x; q.down_y = (int)down_y; q.out_h = (int)out_h; q.out_w = (int)out_w;
        TORCH_CHECK(da_upfirdn2d_has_tiled(q), "upfirdn2d: no tiled kernel for filter ", f.sizes(), ", up=(", up_x,
                    ", ", up_y, "), down=(", down_x, ", ", down_y, ")");
    }

    const c10::cuda::CUDAGuard guard(x.device());
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const torch::Tensor xc = x.contiguous();
    const torch::Tensor fc = f.to(acc).contiguous();
    torch::Tensor y = torch::empty({n, c, out_h, out_w}, x.options().memory_format(at::MemoryFormat::Contiguous));
    if (y.numel() == 0) return y;

    Upfirdn2dParams p;
    p.x = xc.data_ptr();
    p.f = fc.data_ptr();
    p.y = y.data_ptr();
    p.major = (int)(n * c);
    p.in_h = (int)in_h; p.in_w = (int)in_w; p.out_h = (int)out_h; p.out_w = (int)out_w;
    p.kh = (int)kh; p.kw = (int)kw;
    p.up_x = (int)up_x; p.up_y = (int)up_y; p.down_x = (int)down_x; p.down_y = (int)down_y;
    p.pad_x0 = (int)pad_x0; p.pad_y0 = (int)pad_y0;
    p.flip = flip_filter ? 1 : 0;
    const cudaError_t err =
        da_upfirdn2d_launch(p, dtype_code(x.scalar_type()), (int)impl, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "upfirdn2d: CUDA kernel launch failed: ", cudaGetErrorString(err));
    return y;
}

bool upfirdn2d_has_tiled(int64_t kh, int64_t kw, int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y) {
    Upfirdn2dParams q{};
    q.kh = (int)kh; q.kw = (int)kw; q.up_x = (int)up_x; q.up_y = (int)up_y;
    q.down_x = (int)down_x; q.down_y = (int)down_y; q.out_h = 1; q.out_w = 1;
    return da_upfirdn2d_has_tiled(q);
}

// ---------------------------------------------------------------------------------------------------------

torch::Tensor bias_act_common(const torch::Tensor& x, const std::optional<torch::Tensor>& b,
                              const std::optional<torch::Tensor>& ref, const std::string& act, double alpha,
                              double gain, double clamp, bool grad) {
    const char* op = grad ? "bias_act_grad" : "bias_act";
    check_cuda_float(x, op, grad ? "dy" : "x");
    TORCH_CHECK(x.dim() >= 2, op, ": x must have at least 2 dims [N, C, ...], got ", x.sizes());
    const int a = parse_act(act);
    TORCH_CHECK(x.size(1) <= INT_MAX, op, ": too many channels: ", x.size(1));
    torch::Tensor bc, rc;
    if (b.has_value() && b->defined()) {
        TORCH_CHECK(b->device() == x.device(), op, ": bias must be on ", x.device(), ", got ", b->device());
        TORCH_CHECK(b->scalar_type() == x.scalar_type(), op, ": bias dtype ", b->scalar_type(),
                    " does not match x dtype ", x.scalar_type());
        TORCH_CHECK(b->dim() == 1 && b->size(0) == x.size(1), op, ": bias must have shape [", x.size(1),
                    "] (dim 1 of x), got ", b->sizes());
        bc = b->contiguous();
    }
    if (grad) {
        TORCH_CHECK(ref.has_value() && ref->defined(), op, ": the forward output y is required");
        TORCH_CHECK(ref->device() == x.device(), op, ": y must be on ", x.device(), ", got ", ref->device());
        TORCH_CHECK(ref->scalar_type() == x.scalar_type(), op, ": y dtype ", ref->scalar_type(),
                    " does not match dy dtype ", x.scalar_type());
        TORCH_CHECK(ref->sizes() == x.sizes(), op, ": y shape ", ref->sizes(), " does not match dy shape ",
                    x.sizes());
        rc = ref->contiguous();
    }

    const c10::cuda::CUDAGuard guard(x.device());
    const torch::Tensor xc = x.contiguous();
    torch::Tensor out = torch::empty(xc.sizes(), xc.options().memory_format(at::MemoryFormat::Contiguous));
    if (out.numel() == 0) return out;

    BiasActParams p;
    p.x = xc.data_ptr();
    p.b = bc.defined() ? bc.data_ptr() : nullptr;
    p.ref = rc.defined() ? rc.data_ptr() : nullptr;
    p.out = out.data_ptr();
    p.numel = xc.numel();
    p.channels = (int)xc.size(1);
    p.step = xc.numel() / (xc.size(0) * xc.size(1));
    p.act = a;
    p.grad = grad ? 1 : 0;
    p.alpha = a == DA_ACT_RELU ? 0.0 : alpha;
    p.gain = gain;
    p.clamp = clamp;
    const cudaError_t err =
        da_bias_act_launch(p, dtype_code(x.scalar_type()), c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
    return out;
}

torch::Tensor bias_act(const torch::Tensor& x, const std::optional<torch::Tensor>& b, const std::string& act,
                       double alpha, double gain, double clamp) {
    return bias_act_common(x, b, std::nullopt, act, alpha, gain, clamp, false);
}

torch::Tensor bias_act_grad(const torch::Tensor& dy, const torch::Tensor& y, const std::string& act, double alpha,
                            double gain, double clamp) {
    return bias_act_common(dy, std::nullopt, y, act, alpha, gain, clamp, true);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "domain_adapt CUDA ops: upfirdn2d and fused bias + activation";
    m.def("upfirdn2d", &upfirdn2d,
          "upsample (zero insertion), pad (negative crops), FIR filter (true convolution), downsample; "
          "flip_filter=True correlates instead; impl 0=auto, 1=generic kernel, 2=tiled kernel",
          py::arg("x"), py::arg("f"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"),
          py::arg("pad_x0"), py::arg("pad_x1"), py::arg("pad_y0"), py::arg("pad_y1"),
          py::arg("flip_filter") = false, py::arg("impl") = 0);
    m.def("upfirdn2d_has_tiled", &upfirdn2d_has_tiled,
          "whether the tiled shared-memory kernel handles this filter size and up/down factors", py::arg("kh"),
          py::arg("kw"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"));
    m.def("bias_act", &bias_act, "y = clamp(gain * act(x + b[dim 1]), -clamp, clamp); clamp < 0 disables it",
          py::arg("x"), py::arg("b"), py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("clamp"));
    m.def("bias_act_grad", &bias_act_grad,
          "dx = dy * gain * act'(from the forward output y), zero where |y| >= clamp (clamp >= 0)",
          py::arg("dy"), py::arg("y"), py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("clamp"));
}
