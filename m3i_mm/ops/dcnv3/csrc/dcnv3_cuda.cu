// DCNv3 CUDA kernels for m3i_mm: one thread per (output pixel, group, channel).
//
// Layouts (channels-last): input (N, H, W, G*C), offset (N, Ho, Wo, G*P*2) as [g][k][(dx,dy)],
// mask (N, Ho, Wo, G*P) as [g][k]; sampling points x-major; zero padding outside the image.
// Accumulation is in float (double for double inputs); input gradients use atomics on a float
// buffer, offset/mask gradients are reduced over the channels of a group with warp shuffles
// when the group width is a power of two <= 32, with atomics otherwise.
// Non-finite values follow the rule of every backend (tests/ops/dcnv3/
// test_dcnv3_nan_semantics.py): a NaN location makes the point's contribution and its offset
// and mask gradients NaN and sends nothing to grad_input; an infinite location is outside;
// mask and input values enter plain IEEE arithmetic. Indices are never computed from NaN.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

namespace {

struct Geometry {
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int group, group_channels, points;
  float offset_scale;
  bool remove_center;
};

template <typename acc_t>
struct Point {
  acc_t frac_x, frac_y, mask;
  int x0, y0;
  bool inside_x, inside_y, nan;
};

template <typename acc_t>
__device__ __forceinline__ acc_t quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fffffff); }
template <>
__device__ __forceinline__ double quiet_nan<double>() {
  return __longlong_as_double(0x7ff8000000000000ULL);
}

// Geometry of sampling point k of output pixel (ho, wo) in group g.
template <typename scalar_t, typename offset_t, typename mask_t, typename acc_t>
__device__ __forceinline__ Point<acc_t> locate(const offset_t* offset, const mask_t* mask,
                                               int64_t point, int ho, int wo, int k,
                                               int height, int width, const Geometry& geo) {
  const int centre = (geo.kernel_w / 2) * geo.kernel_h + geo.kernel_h / 2;
  const int full_k = (geo.remove_center && k >= centre) ? k + 1 : k;
  const int grid_x = (full_k / geo.kernel_h) * geo.dilation_w - (geo.dilation_w * (geo.kernel_w - 1)) / 2;
  const int grid_y = (full_k % geo.kernel_h) * geo.dilation_h - (geo.dilation_h * (geo.kernel_h - 1)) / 2;
  const acc_t centre_x = static_cast<acc_t>(wo * geo.stride_w + (geo.dilation_w * (geo.kernel_w - 1)) / 2 - geo.pad_w);
  const acc_t centre_y = static_cast<acc_t>(ho * geo.stride_h + (geo.dilation_h * (geo.kernel_h - 1)) / 2 - geo.pad_h);
  const acc_t scale = static_cast<acc_t>(geo.offset_scale);
  acc_t loc_x = centre_x + (grid_x + static_cast<acc_t>(offset[point * 2])) * scale;
  acc_t loc_y = centre_y + (grid_y + static_cast<acc_t>(offset[point * 2 + 1])) * scale;
  Point<acc_t> p;
  p.nan = isnan(loc_x) || isnan(loc_y);
  p.inside_x = loc_x > acc_t(-1) && loc_x < acc_t(width);
  p.inside_y = loc_y > acc_t(-1) && loc_y < acc_t(height);
  // beyond (-1, size) every corner is outside; clamping keeps the int conversion safe (and a
  // NaN location, which min/max would silently turn into a bound, is moved outside too)
  loc_x = p.nan ? acc_t(-2) : min(max(loc_x, acc_t(-2)), acc_t(width + 1));
  loc_y = p.nan ? acc_t(-2) : min(max(loc_y, acc_t(-2)), acc_t(height + 1));
  const acc_t fx0 = floor(loc_x), fy0 = floor(loc_y);
  p.frac_x = loc_x - fx0;
  p.frac_y = loc_y - fy0;
  p.x0 = static_cast<int>(fx0);
  p.y0 = static_cast<int>(fy0);
  p.mask = static_cast<acc_t>(mask[point]);
  return p;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t corner(const scalar_t* plane, int y, int x, int height,
                                        int width, int64_t row_stride) {
  if (y < 0 || y >= height || x < 0 || x >= width) return acc_t(0);
  return static_cast<acc_t>(plane[(static_cast<int64_t>(y) * width + x) * row_stride]);
}

template <typename scalar_t, typename offset_t, typename mask_t, typename acc_t>
__global__ void dcnv3_forward_kernel(const scalar_t* __restrict__ input,
                                     const offset_t* __restrict__ offset,
                                     const mask_t* __restrict__ mask, scalar_t* __restrict__ out,
                                     int64_t total, int height, int width, int out_h, int out_w,
                                     Geometry geo) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int c = idx % geo.group_channels;
  const int64_t qg = idx / geo.group_channels;
  const int g = qg % geo.group;
  const int64_t q = qg / geo.group;
  const int wo = q % out_w;
  const int ho = (q / out_w) % out_h;
  const int64_t n = q / (static_cast<int64_t>(out_w) * out_h);
  const int64_t row_stride = static_cast<int64_t>(geo.group) * geo.group_channels;
  const scalar_t* plane = input + n * height * width * row_stride + g * geo.group_channels + c;
  acc_t acc = 0;
  for (int k = 0; k < geo.points; ++k) {
    const int64_t point = qg * geo.points + k;
    const Point<acc_t> p = locate<scalar_t, offset_t, mask_t, acc_t>(offset, mask, point, ho, wo, k, height, width, geo);
    if (p.nan) {
      acc = quiet_nan<acc_t>();
      break;
    }
    const acc_t v00 = corner<scalar_t, acc_t>(plane, p.y0, p.x0, height, width, row_stride);
    const acc_t v01 = corner<scalar_t, acc_t>(plane, p.y0, p.x0 + 1, height, width, row_stride);
    const acc_t v10 = corner<scalar_t, acc_t>(plane, p.y0 + 1, p.x0, height, width, row_stride);
    const acc_t v11 = corner<scalar_t, acc_t>(plane, p.y0 + 1, p.x0 + 1, height, width, row_stride);
    const acc_t top = v00 + (v01 - v00) * p.frac_x;
    const acc_t bottom = v10 + (v11 - v10) * p.frac_x;
    acc += (top + (bottom - top) * p.frac_y) * p.mask;
  }
  out[idx] = static_cast<scalar_t>(acc);
}

template <typename acc_t>
__device__ __forceinline__ void atomic_corner(acc_t* plane, int y, int x, int height, int width,
                                              int64_t row_stride, acc_t value) {
  if (y < 0 || y >= height || x < 0 || x >= width) return;
  atomicAdd(plane + (static_cast<int64_t>(y) * width + x) * row_stride, value);
}

// Sum over the `width` lanes of a segment (width: power of two <= 32, segments aligned).
template <typename acc_t>
__device__ __forceinline__ acc_t segment_sum(acc_t value, int width) {
  for (int delta = width / 2; delta > 0; delta /= 2)
    value += __shfl_xor_sync(0xffffffff, value, delta);
  return value;
}

template <typename scalar_t, typename offset_t, typename mask_t, typename acc_t>
__global__ void dcnv3_backward_kernel(const scalar_t* __restrict__ input,
                                      const offset_t* __restrict__ offset,
                                      const mask_t* __restrict__ mask,
                                      const scalar_t* __restrict__ grad_out,
                                      acc_t* __restrict__ grad_input, acc_t* __restrict__ grad_offset,
                                      acc_t* __restrict__ grad_mask, int64_t total, int height,
                                      int width, int out_h, int out_w, Geometry geo,
                                      bool need_input_grad, bool use_shuffle) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // Threads past the end stay alive for the shuffles, with zero contributions.
  const bool valid = idx < total;
  const int64_t safe_idx = valid ? idx : 0;
  const int c = safe_idx % geo.group_channels;
  const int64_t qg = safe_idx / geo.group_channels;
  const int g = qg % geo.group;
  const int64_t q = qg / geo.group;
  const int wo = q % out_w;
  const int ho = (q / out_w) % out_h;
  const int64_t n = q / (static_cast<int64_t>(out_w) * out_h);
  const int64_t row_stride = static_cast<int64_t>(geo.group) * geo.group_channels;
  const int64_t plane_offset = n * height * width * row_stride + g * geo.group_channels + c;
  const scalar_t* plane = input + plane_offset;
  acc_t* grad_plane = grad_input + plane_offset;
  const acc_t gout = valid ? static_cast<acc_t>(grad_out[safe_idx]) : acc_t(0);
  const acc_t scale = static_cast<acc_t>(geo.offset_scale);
  for (int k = 0; k < geo.points; ++k) {
    const int64_t point = qg * geo.points + k;
    const Point<acc_t> p = locate<scalar_t, offset_t, mask_t, acc_t>(offset, mask, point, ho, wo, k, height, width, geo);
    const acc_t d00 = gout * corner<scalar_t, acc_t>(plane, p.y0, p.x0, height, width, row_stride);
    const acc_t d01 = gout * corner<scalar_t, acc_t>(plane, p.y0, p.x0 + 1, height, width, row_stride);
    const acc_t d10 = gout * corner<scalar_t, acc_t>(plane, p.y0 + 1, p.x0, height, width, row_stride);
    const acc_t d11 = gout * corner<scalar_t, acc_t>(plane, p.y0 + 1, p.x0 + 1, height, width, row_stride);
    const acc_t gx = acc_t(1) - p.frac_x, gy = acc_t(1) - p.frac_y;
    acc_t g_mask = gy * (gx * d00 + p.frac_x * d01) + p.frac_y * (gx * d10 + p.frac_x * d11);
    acc_t g_x = p.inside_x ? p.mask * (gy * (d01 - d00) + p.frac_y * (d11 - d10)) * scale : acc_t(0);
    acc_t g_y = p.inside_y ? p.mask * (gx * (d10 - d00) + p.frac_x * (d11 - d01)) * scale : acc_t(0);
    if (p.nan) g_mask = g_x = g_y = quiet_nan<acc_t>();
    if (use_shuffle) {
      g_mask = segment_sum(g_mask, geo.group_channels);
      g_x = segment_sum(g_x, geo.group_channels);
      g_y = segment_sum(g_y, geo.group_channels);
      if (valid && c == 0) {
        grad_mask[point] = g_mask;
        grad_offset[point * 2] = g_x;
        grad_offset[point * 2 + 1] = g_y;
      }
    } else if (valid) {
      atomicAdd(grad_mask + point, g_mask);
      atomicAdd(grad_offset + point * 2, g_x);
      atomicAdd(grad_offset + point * 2 + 1, g_y);
    }
    if (need_input_grad && valid && !p.nan) {
      const acc_t w = gout * p.mask;
      atomic_corner(grad_plane, p.y0, p.x0, height, width, row_stride, w * gy * gx);
      atomic_corner(grad_plane, p.y0, p.x0 + 1, height, width, row_stride, w * gy * p.frac_x);
      atomic_corner(grad_plane, p.y0 + 1, p.x0, height, width, row_stride, w * p.frac_y * gx);
      atomic_corner(grad_plane, p.y0 + 1, p.x0 + 1, height, width, row_stride, w * p.frac_y * p.frac_x);
    }
  }
}

Geometry make_geometry(int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                       int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                       int64_t group, int64_t group_channels, double offset_scale,
                       bool remove_center) {
  Geometry geo;
  geo.kernel_h = kernel_h; geo.kernel_w = kernel_w;
  geo.stride_h = stride_h; geo.stride_w = stride_w;
  geo.pad_h = pad_h; geo.pad_w = pad_w;
  geo.dilation_h = dilation_h; geo.dilation_w = dilation_w;
  geo.group = group; geo.group_channels = group_channels;
  geo.points = kernel_h * kernel_w - (remove_center ? 1 : 0);
  geo.offset_scale = static_cast<float>(offset_scale);
  geo.remove_center = remove_center;
  return geo;
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "dcnv3 (cuda): ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.dim() == 4, "dcnv3 (cuda): ", name, " must be 4-D");
}

constexpr int kThreads = 256;

// Runs `body` with offset_t and mask_t bound to the offset's and mask's dtypes.
#define DCNV3_DISPATCH_PAIR(OFFSET, MASK, ...)                                           \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, OFFSET.scalar_type(),       \
      "dcnv3_offset", [&] {                                                             \
        using offset_t = scalar_t;                                                      \
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, MASK.scalar_type(),   \
            "dcnv3_mask", [&] {                                                         \
              using mask_t = scalar_t;                                                  \
              __VA_ARGS__();                                                            \
            });                                                                         \
      })

}  // namespace

at::Tensor dcnv3_forward(const at::Tensor& input_, const at::Tensor& offset_,
                         const at::Tensor& mask_, int64_t kernel_h, int64_t kernel_w,
                         int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                         int64_t dilation_h, int64_t dilation_w, int64_t group,
                         int64_t group_channels, double offset_scale, bool remove_center) {
  check(input_, "input"); check(offset_, "offset"); check(mask_, "mask");
  const at::cuda::CUDAGuard guard(input_.device());
  const auto input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const Geometry geo = make_geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                     dilation_h, dilation_w, group, group_channels,
                                     offset_scale, remove_center);
  const int height = input.size(1), width = input.size(2);
  const int out_h = offset.size(1), out_w = offset.size(2);
  auto out = at::empty({input.size(0), out_h, out_w, input.size(3)}, input.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const int blocks = static_cast<int>((total + kThreads - 1) / kThreads);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_forward", [&] {
    using input_t = scalar_t;
    using acc_t = std::conditional_t<std::is_same<input_t, double>::value, double, float>;
    DCNV3_DISPATCH_PAIR(offset, mask, [&] {
      dcnv3_forward_kernel<input_t, offset_t, mask_t, acc_t><<<blocks, kThreads, 0, stream>>>(
          input.data_ptr<input_t>(), offset.data_ptr<offset_t>(), mask.data_ptr<mask_t>(),
          out.data_ptr<input_t>(), total, height, width, out_h, out_w, geo);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> dcnv3_backward(const at::Tensor& grad_out_, const at::Tensor& input_,
                                       const at::Tensor& offset_, const at::Tensor& mask_,
                                       int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                                       int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                       int64_t dilation_h, int64_t dilation_w, int64_t group,
                                       int64_t group_channels, double offset_scale,
                                       bool remove_center, bool need_input_grad) {
  check(grad_out_, "grad_out"); check(input_, "input"); check(offset_, "offset"); check(mask_, "mask");
  const at::cuda::CUDAGuard guard(input_.device());
  const auto input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const auto grad_out = grad_out_.contiguous();
  const Geometry geo = make_geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                     dilation_h, dilation_w, group, group_channels,
                                     offset_scale, remove_center);
  const bool is_double = input.scalar_type() == at::kDouble;
  const auto acc_options = input.options().dtype(is_double ? at::kDouble : at::kFloat);
  const bool use_shuffle = group_channels <= 32 && (group_channels & (group_channels - 1)) == 0;
  auto grad_input = at::zeros(input.sizes(), acc_options);
  auto grad_offset = use_shuffle ? at::empty(offset.sizes(), acc_options) : at::zeros(offset.sizes(), acc_options);
  auto grad_mask = use_shuffle ? at::empty(mask.sizes(), acc_options) : at::zeros(mask.sizes(), acc_options);
  const int height = input.size(1), width = input.size(2);
  const int out_h = offset.size(1), out_w = offset.size(2);
  const int64_t total = grad_out.numel();
  if (total > 0) {
    const int blocks = static_cast<int>((total + kThreads - 1) / kThreads);
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_backward", [&] {
      using input_t = scalar_t;
      using acc_t = std::conditional_t<std::is_same<input_t, double>::value, double, float>;
      DCNV3_DISPATCH_PAIR(offset, mask, [&] {
        dcnv3_backward_kernel<input_t, offset_t, mask_t, acc_t><<<blocks, kThreads, 0, stream>>>(
            input.data_ptr<input_t>(), offset.data_ptr<offset_t>(), mask.data_ptr<mask_t>(),
            grad_out.data_ptr<input_t>(), grad_input.data_ptr<acc_t>(),
            grad_offset.data_ptr<acc_t>(), grad_mask.data_ptr<acc_t>(), total, height, width,
            out_h, out_w, geo, need_input_grad, use_shuffle);
      });
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {grad_input.to(input.scalar_type()), grad_offset.to(offset.scalar_type()),
          grad_mask.to(mask.scalar_type())};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "m3i_mm DCNv3 CUDA kernels";
  m.def("forward", &dcnv3_forward, "DCNv3 forward (CUDA)");
  m.def("backward", &dcnv3_backward, "DCNv3 backward (CUDA)");
}
