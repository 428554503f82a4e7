// DCNv3 CPU kernels for m3i_mm (the "cpu" backend), registered as torch.ops.m3i_mm_dcnv3_cpu.*
//
// Layouts (channels-last): input (N, H, W, G*C), offset (N, Ho, Wo, G*P*2) as [g][k][(dx,dy)],
// mask (N, Ho, Wo, G*P) as [g][k]; sampling points x-major; zero padding outside the image.
// Arithmetic in float (double for double inputs); float16/bfloat16 are converted on load.
//
// The geometry of a sampling point (location, corners, bilinear weights times the mask) is
// computed once per (output pixel, group, point) and applied to the group's C contiguous
// channels in loops the compiler vectorises (C = 16 and 32 are compiled as constants).
//
// With softmax_mask the mask holds logits and the softmax over the points of each group
// (InternImage's normalisation) is computed here too, forward and backward.
//
// Forward: parallel over output pixels; no shared writes.
// Backward, in one pass per point: four dot products <corner row, grad_out row> give the
// offset and mask gradients, and the weighted grad_out row is scattered to the four corners
// of grad_input. Each task owns whole (image, group) slices of grad_input, so no two threads
// write the same value. When there are too few (image, group) pairs to keep the threads busy
// (e.g. batch 1), each pair is cut into bands of output rows; a band scatters into a private
// buffer covering only the input rows it touches, and the buffers are summed into grad_input
// afterwards, in band order (the result does not depend on thread timing).
//
// Non-finite values (the rule of every m3i_mm backend): a NaN sampling location makes the
// point's contribution NaN (so the output of that pixel and group, and the point's offset and
// mask gradients, are NaN; it adds nothing to grad_input); an infinite location lies outside
// the map (contributes 0, zero gradients); a contribution is mask * sample with sample = 0
// outside the map, so a non-finite mask on an outside point gives NaN; NaN/Inf inputs
// propagate through every corner inside the map, weight 0 included. The corners of a location
// are floor(loc) and floor(loc) + 1 on each axis: a location in [-1, size) has one inside, so
// a location exactly at -1 reads the corner at 0 with weight 0 (its offset has no slope: the
// offset gradient is 0 outside the open range (-1, size)).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

struct Geometry {
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t group, channels, points;  // channels: per group
  double offset_scale;
  bool remove_center;
};

// Sizes of one call plus the fixed grid of the kernel points.
template <typename acc_t>
struct Layout {
  int64_t batch, height, width, out_h, out_w, row_stride;  // row_stride = G * C
  int64_t origin_y, origin_x;  // kernel centre of output pixel (0, 0), input pixels
  acc_t scale;
  // displacement of point j % P from the kernel centre, times offset_scale, for j < G * P
  std::vector<acc_t> grid_x, grid_y;

  Layout(const Geometry& geo, const at::Tensor& input, const at::Tensor& offset) {
    batch = input.size(0);
    height = input.size(1);
    width = input.size(2);
    row_stride = input.size(3);
    out_h = offset.size(1);
    out_w = offset.size(2);
    origin_y = (geo.dilation_h * (geo.kernel_h - 1)) / 2 - geo.pad_h;
    origin_x = (geo.dilation_w * (geo.kernel_w - 1)) / 2 - geo.pad_w;
    scale = static_cast<acc_t>(geo.offset_scale);
    const int64_t centre = (geo.kernel_w / 2) * geo.kernel_h + geo.kernel_h / 2;
    for (int64_t g = 0; g < geo.group; ++g) {
      for (int64_t k = 0; k < geo.kernel_w * geo.kernel_h; ++k) {
        if (geo.remove_center && k == centre) continue;
        const int64_t i = k / geo.kernel_h, j = k % geo.kernel_h;  // x-major
        grid_x.push_back(static_cast<acc_t>(i * geo.dilation_w - (geo.dilation_w * (geo.kernel_w - 1)) / 2) * scale);
        grid_y.push_back(static_cast<acc_t>(j * geo.dilation_h - (geo.dilation_h * (geo.kernel_h - 1)) / 2) * scale);
      }
    }
  }
};

// e^x for x <= 0 in float, vectorisable (Cody-Waite reduction and the Cephes polynomial,
// about 1 ulp; glibc's expf is not vectorised without -ffast-math): NaN gives NaN, x below
// -87.3 (where e^x leaves the normal floats) gives 0.
inline float exp_nonpositive(float x) {
  const bool nan = x != x, zero = x < -87.33654f;
  const float xs = (nan || zero) ? 0.0f : x;
  const float n = std::floor(xs * 1.44269504088896341f + 0.5f);
  const float r = (xs - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);  // (std::bit_cast needs GCC 11)
  return nan ? x : (zero ? 0.0f : p * scale);
}
inline double exp_nonpositive(double x) { return std::exp(x); }

// probs = softmax over each group's `points` logits (InternImage's mask normalisation), for
// `groups` consecutive groups. A NaN logit makes its group NaN, as torch.softmax does.
template <typename scalar_t, typename acc_t>
void softmax_points(const scalar_t* __restrict__ logits, acc_t* __restrict__ probs,
                    acc_t* __restrict__ group_max, int64_t groups, int64_t points) {
  const int64_t count = groups * points;
  for (int64_t g = 0; g < groups; ++g) {
    acc_t top = -std::numeric_limits<acc_t>::infinity();
    for (int64_t k = 0; k < points; ++k) {
      const acc_t v = static_cast<acc_t>(logits[g * points + k]);
      top = v > top ? v : top;
    }
    for (int64_t k = 0; k < points; ++k) group_max[g * points + k] = top;
  }
#pragma omp simd
  for (int64_t j = 0; j < count; ++j)
    probs[j] = exp_nonpositive(static_cast<acc_t>(logits[j]) - group_max[j]);
  for (int64_t g = 0; g < groups; ++g) {
    acc_t sum = 0;
    for (int64_t k = 0; k < points; ++k) sum += probs[g * points + k];
    for (int64_t k = 0; k < points; ++k) group_max[g * points + k] = acc_t(1) / sum;
  }
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) probs[j] *= group_max[j];
}

enum PointKind : int32_t { kAllCorners = 0, kSomeCorners = 1, kOutside = 2, kNaN = 3 };

// Geometry of consecutive sampling points of one output pixel (all G * P of them, or the P of
// one group), computed together in one vectorised loop and then read by the channel loops.
template <typename acc_t>
struct Points {
  std::vector<acc_t> frac_x, frac_y, mask, w00, w01, w10, w11;  // w: bilinear weight * mask
  std::vector<int32_t> x0, y0;
  std::vector<int32_t> kind;
  std::vector<int32_t> edge;  // bit 0: x exactly -1, bit 1: y exactly -1 (no offset slope)

  explicit Points(int64_t count)
      : frac_x(count), frac_y(count), mask(count), w00(count), w01(count), w10(count),
        w11(count), x0(count), y0(count), kind(count), edge(count) {}

  template <typename scalar_t, typename mask_t>
  void locate(const scalar_t* __restrict__ offset, const mask_t* __restrict__ mask_in,
              const acc_t* __restrict__ grid_x, const acc_t* __restrict__ grid_y,
              acc_t centre_x, acc_t centre_y, acc_t scale, int64_t height, int64_t width,
              int64_t count) {
    const acc_t h = static_cast<acc_t>(height), w = static_cast<acc_t>(width);
    const int32_t h_int = static_cast<int32_t>(height), w_int = static_cast<int32_t>(width);
    acc_t* __restrict__ fx_out = frac_x.data();
    acc_t* __restrict__ fy_out = frac_y.data();
    acc_t* __restrict__ m_out = mask.data();
    acc_t* __restrict__ w00_out = w00.data();
    acc_t* __restrict__ w01_out = w01.data();
    acc_t* __restrict__ w10_out = w10.data();
    acc_t* __restrict__ w11_out = w11.data();
    int32_t* __restrict__ x0_out = x0.data();
    int32_t* __restrict__ y0_out = y0.data();
    int32_t* __restrict__ kind_out = kind.data();
    int32_t* __restrict__ edge_out = edge.data();
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) {
      const acc_t lx = centre_x + grid_x[j] + static_cast<acc_t>(offset[2 * j]) * scale;
      const acc_t ly = centre_y + grid_y[j] + static_cast<acc_t>(offset[2 * j + 1]) * scale;
      // some corner inside the map: [-1, size) on both axes (at -1, the corner at 0)
      const bool inside = lx >= acc_t(-1) && lx < w && ly >= acc_t(-1) && ly < h;
      // outside points get harmless coordinates (their corners are never read)
      const acc_t sx = inside ? lx : acc_t(0), sy = inside ? ly : acc_t(0);
      const acc_t floor_x = std::floor(sx), floor_y = std::floor(sy);
      const int32_t ix = static_cast<int32_t>(floor_x), iy = static_cast<int32_t>(floor_y);
      const acc_t fx = sx - floor_x, fy = sy - floor_y, m = static_cast<acc_t>(mask_in[j]);
      fx_out[j] = fx;
      fy_out[j] = fy;
      m_out[j] = m;
      w00_out[j] = (acc_t(1) - fy) * (acc_t(1) - fx) * m;
      w01_out[j] = (acc_t(1) - fy) * fx * m;
      w10_out[j] = fy * (acc_t(1) - fx) * m;
      w11_out[j] = fy * fx * m;
      x0_out[j] = ix;
      y0_out[j] = iy;
      const bool all = ix >= 0 && ix + 1 < w_int && iy >= 0 && iy + 1 < h_int;
      const bool nan = lx != lx || ly != ly;
      kind_out[j] = nan ? kNaN : (!inside ? kOutside : (all ? kAllCorners : kSomeCorners));
      edge_out[j] = (lx == acc_t(-1) ? 1 : 0) | (ly == acc_t(-1) ? 2 : 0);
    }
  }
};

// Per-group scratch of C values: a fixed array when C is a compile-time constant.
template <int kC, typename acc_t>
struct Scratch {
  alignas(64) acc_t values[kC];
  explicit Scratch(int64_t) {}
  acc_t* data() { return values; }
};
template <typename acc_t>
struct Scratch<0, acc_t> {
  std::vector<acc_t> values;
  explicit Scratch(int64_t channels) : values(channels) {}
  acc_t* data() { return values.data(); }
};

template <typename scalar_t, typename acc_t>
inline acc_t load_as(const scalar_t& v) { return static_cast<acc_t>(v); }

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// {sum(a), sum(b), sum(c), sum(d)}: four horizontal sums sharing their shuffles.
inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}
constexpr int kLanes = 16;
#elif defined(__AVX2__) && defined(__FMA__)
inline __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}
constexpr int kLanes = 8;
#else
constexpr int kLanes = 0;
#endif

// dots[i] = <grad, row_i> over C channels for the four corner rows of a sampling point.
// (The generic loop's four separate horizontal sums cost as much as the rest of the
// backward; with float and C a multiple of the vector width they share their shuffles.)
template <typename scalar_t, typename acc_t, int kC>
inline void corner_dots(const acc_t* __restrict__ grad, const scalar_t* __restrict__ r00,
                        const scalar_t* __restrict__ r01, const scalar_t* __restrict__ r10,
                        const scalar_t* __restrict__ r11, int64_t C, acc_t* __restrict__ dots) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  if constexpr (std::is_same_v<scalar_t, float> && kC > 0 && kC % kLanes == 0) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), c = _mm512_setzero_ps(), d = _mm512_setzero_ps();
    for (int i = 0; i < kC; i += kLanes) {
      const __m512 g = _mm512_loadu_ps(grad + i);
      a = _mm512_fmadd_ps(g, _mm512_loadu_ps(r00 + i), a);
      b = _mm512_fmadd_ps(g, _mm512_loadu_ps(r01 + i), b);
      c = _mm512_fmadd_ps(g, _mm512_loadu_ps(r10 + i), c);
      d = _mm512_fmadd_ps(g, _mm512_loadu_ps(r11 + i), d);
    }
    _mm_storeu_ps(dots, sum4(a, b, c, d));
    return;
  }
#elif defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<scalar_t, float> && kC > 0 && kC % kLanes == 0) {
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps(), c = _mm256_setzero_ps(), d = _mm256_setzero_ps();
    for (int i = 0; i < kC; i += kLanes) {
      const __m256 g = _mm256_loadu_ps(grad + i);
      a = _mm256_fmadd_ps(g, _mm256_loadu_ps(r00 + i), a);
      b = _mm256_fmadd_ps(g, _mm256_loadu_ps(r01 + i), b);
      c = _mm256_fmadd_ps(g, _mm256_loadu_ps(r10 + i), c);
      d = _mm256_fmadd_ps(g, _mm256_loadu_ps(r11 + i), d);
    }
    _mm_storeu_ps(dots, sum4(a, b, c, d));
    return;
  }
#endif
  acc_t d00 = 0, d01 = 0, d10 = 0, d11 = 0;
#pragma omp simd reduction(+ : d00, d01, d10, d11)
  for (int64_t c = 0; c < C; ++c) {
    d00 += grad[c] * load_as<scalar_t, acc_t>(r00[c]);
    d01 += grad[c] * load_as<scalar_t, acc_t>(r01[c]);
    d10 += grad[c] * load_as<scalar_t, acc_t>(r10[c]);
    d11 += grad[c] * load_as<scalar_t, acc_t>(r11[c]);
  }
  dots[0] = d00; dots[1] = d01; dots[2] = d10; dots[3] = d11;
}

// ---------------------------------------------------------------------------------------------
// Forward over the output pixels [begin, end) (flattened N * Ho * Wo).
template <typename scalar_t, typename acc_t, int kC>
void forward_pixels(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                    const scalar_t* __restrict__ mask, scalar_t* __restrict__ out,
                    const Geometry& geo, const Layout<acc_t>& lay, bool softmax_mask,
                    int64_t begin, int64_t end) {
  const int64_t C = kC > 0 ? kC : geo.channels;
  const int64_t P = geo.points, G = geo.group;
  const int64_t H = lay.height, W = lay.width, S = lay.row_stride;
  Scratch<kC, acc_t> scratch(C);
  acc_t* __restrict__ acc = scratch.data();
  Points<acc_t> pts(G * P);
  std::vector<acc_t> probs(softmax_mask ? G * P : 0), work(softmax_mask ? G * P : 0);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t wo = q % lay.out_w;
    const int64_t ho = (q / lay.out_w) % lay.out_h;
    const int64_t n = q / (lay.out_w * lay.out_h);
    const acc_t centre_x = static_cast<acc_t>(lay.origin_x + wo * geo.stride_w);
    const acc_t centre_y = static_cast<acc_t>(lay.origin_y + ho * geo.stride_h);
    if (softmax_mask) {
      softmax_points(mask + q * G * P, probs.data(), work.data(), G, P);
      pts.locate(offset + q * G * P * 2, probs.data(), lay.grid_x.data(), lay.grid_y.data(),
                 centre_x, centre_y, lay.scale, H, W, G * P);
    } else {
      pts.locate(offset + q * G * P * 2, mask + q * G * P, lay.grid_x.data(), lay.grid_y.data(),
                 centre_x, centre_y, lay.scale, H, W, G * P);
    }
    const scalar_t* image = input + n * H * W * S;
    for (int64_t g = 0; g < G; ++g) {
      const scalar_t* plane = image + g * C;
      for (int64_t c = 0; c < C; ++c) acc[c] = acc_t(0);
      bool poisoned = false;
      for (int64_t j = g * P; j < (g + 1) * P; ++j) {
        const int32_t kind = pts.kind[j];
        if (kind >= kOutside) {
          poisoned |= kind == kNaN || !std::isfinite(pts.mask[j]);
          continue;
        }
        const int64_t base = static_cast<int64_t>(pts.y0[j]) * W + pts.x0[j];
        if (kind == kAllCorners) {
          const acc_t w00 = pts.w00[j], w01 = pts.w01[j], w10 = pts.w10[j], w11 = pts.w11[j];
          const scalar_t* __restrict__ r00 = plane + base * S;
          const scalar_t* __restrict__ r01 = r00 + S;
          const scalar_t* __restrict__ r10 = r00 + W * S;
          const scalar_t* __restrict__ r11 = r10 + S;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c)
            acc[c] += w00 * load_as<scalar_t, acc_t>(r00[c]) + w01 * load_as<scalar_t, acc_t>(r01[c]) +
                      w10 * load_as<scalar_t, acc_t>(r10[c]) + w11 * load_as<scalar_t, acc_t>(r11[c]);
          continue;
        }
        const int32_t x0 = pts.x0[j], y0 = pts.y0[j];
        const bool ok[4] = {y0 >= 0 && x0 >= 0, y0 >= 0 && x0 + 1 < W, y0 + 1 < H && x0 >= 0,
                            y0 + 1 < H && x0 + 1 < W};
        const int64_t step[4] = {0, 1, W, W + 1};
        const acc_t weight[4] = {pts.w00[j], pts.w01[j], pts.w10[j], pts.w11[j]};
        for (int corner = 0; corner < 4; ++corner) {
          if (!ok[corner]) continue;
          const scalar_t* __restrict__ row = plane + (base + step[corner]) * S;
          const acc_t w = weight[corner];
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] += w * load_as<scalar_t, acc_t>(row[c]);
        }
      }
      scalar_t* dst = out + q * S + g * C;
      if (poisoned) {
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(std::numeric_limits<acc_t>::quiet_NaN());
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(acc[c]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward of output rows [row_begin, row_end) of image n, group g.
// grad_plane: where grad_input of input row `grad_row0` of this (n, g) starts, pixels
// `grad_pixel_stride` apart (nullptr: no input gradient wanted).
template <typename scalar_t, typename acc_t, int kC>
void backward_rows(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                   const scalar_t* __restrict__ mask, const scalar_t* __restrict__ grad_out,
                   scalar_t* __restrict__ grad_offset, scalar_t* __restrict__ grad_mask,
                   acc_t* grad_plane, int64_t grad_row0, int64_t grad_pixel_stride,
                   const Geometry& geo, const Layout<acc_t>& lay, bool softmax_mask, int64_t n,
                   int64_t g, int64_t row_begin, int64_t row_end) {
  const int64_t C = kC > 0 ? kC : geo.channels;
  const int64_t P = geo.points, G = geo.group;
  const int64_t H = lay.height, W = lay.width, S = lay.row_stride, GS = grad_pixel_stride;
  const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
  const scalar_t* plane = input + n * H * W * S + g * C;
  Scratch<kC, acc_t> scratch(C);
  acc_t* __restrict__ gout = scratch.data();
  Points<acc_t> pts(P);
  std::vector<acc_t> dots(4 * P);  // <corner row, grad_out row> per point, corners in order
  std::vector<acc_t> probs(softmax_mask ? P : 0), work(softmax_mask ? P : 0), grad_probs(P);
  for (int64_t ho = row_begin; ho < row_end; ++ho) {
    for (int64_t wo = 0; wo < lay.out_w; ++wo) {
      const int64_t q = (n * lay.out_h + ho) * lay.out_w + wo;
      const acc_t centre_x = static_cast<acc_t>(lay.origin_x + wo * geo.stride_w);
      const acc_t centre_y = static_cast<acc_t>(lay.origin_y + ho * geo.stride_h);
      if (softmax_mask) {
        softmax_points(mask + (q * G + g) * P, probs.data(), work.data(), 1, P);
        pts.locate(offset + (q * G + g) * P * 2, probs.data(), lay.grid_x.data(),
                   lay.grid_y.data(), centre_x, centre_y, lay.scale, H, W, P);
      } else {
        pts.locate(offset + (q * G + g) * P * 2, mask + (q * G + g) * P, lay.grid_x.data(),
                   lay.grid_y.data(), centre_x, centre_y, lay.scale, H, W, P);
      }
      const scalar_t* go = grad_out + q * S + g * C;
      for (int64_t c = 0; c < C; ++c) gout[c] = load_as<scalar_t, acc_t>(go[c]);
      for (int64_t k = 0; k < P; ++k) {
        const int32_t kind = pts.kind[k];
        acc_t* point_dots = dots.data() + 4 * k;
        point_dots[0] = point_dots[1] = point_dots[2] = point_dots[3] = acc_t(0);
        if (kind == kAllCorners) {
          const int64_t base = static_cast<int64_t>(pts.y0[k]) * W + pts.x0[k];
          const scalar_t* __restrict__ r00 = plane + base * S;
          const scalar_t* __restrict__ r01 = r00 + S;
          const scalar_t* __restrict__ r10 = r00 + W * S;
          const scalar_t* __restrict__ r11 = r10 + S;
          corner_dots<scalar_t, acc_t, kC>(gout, r00, r01, r10, r11, C, point_dots);
          if (grad_plane != nullptr) {
            const acc_t w00 = pts.w00[k], w01 = pts.w01[k], w10 = pts.w10[k], w11 = pts.w11[k];
            acc_t* __restrict__ g00 = grad_plane + (base - grad_row0 * W) * GS;
            acc_t* __restrict__ g01 = g00 + GS;
            acc_t* __restrict__ g10 = g00 + W * GS;
            acc_t* __restrict__ g11 = g10 + GS;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              g00[c] += w00 * gout[c];
              g01[c] += w01 * gout[c];
              g10[c] += w10 * gout[c];
              g11[c] += w11 * gout[c];
            }
          }
        } else if (kind == kSomeCorners) {
          const int64_t base = static_cast<int64_t>(pts.y0[k]) * W + pts.x0[k];
          const int32_t x0 = pts.x0[k], y0 = pts.y0[k];
          const bool ok[4] = {y0 >= 0 && x0 >= 0, y0 >= 0 && x0 + 1 < W, y0 + 1 < H && x0 >= 0,
                              y0 + 1 < H && x0 + 1 < W};
          const int64_t step[4] = {0, 1, W, W + 1};
          const acc_t weight[4] = {pts.w00[k], pts.w01[k], pts.w10[k], pts.w11[k]};
          for (int corner = 0; corner < 4; ++corner) {
            if (!ok[corner]) continue;
            const scalar_t* __restrict__ row = plane + (base + step[corner]) * S;
            acc_t dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < C; ++c) dot += gout[c] * load_as<scalar_t, acc_t>(row[c]);
            point_dots[corner] = dot;
            if (grad_plane != nullptr) {
              acc_t* __restrict__ dst = grad_plane + (base + step[corner] - grad_row0 * W) * GS;
              const acc_t w = weight[corner];
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) dst[c] += w * gout[c];
            }
          }
        }
      }
      // offset and mask gradients from the dot products (outside points: zero, NaN: NaN)
      scalar_t* goff = grad_offset + (q * G + g) * P * 2;
      for (int64_t k = 0; k < P; ++k) {
        const int32_t kind = pts.kind[k];
        if (kind >= kOutside) {
          const acc_t value = kind == kNaN ? nan : acc_t(0);
          goff[2 * k] = goff[2 * k + 1] = static_cast<scalar_t>(value);
          grad_probs[k] = value;
          continue;
        }
        const acc_t d00 = dots[4 * k], d01 = dots[4 * k + 1], d10 = dots[4 * k + 2], d11 = dots[4 * k + 3];
        const acc_t fx = pts.frac_x[k], fy = pts.frac_y[k], m = pts.mask[k];
        const acc_t gx = acc_t(1) - fx, gy = acc_t(1) - fy;
        grad_probs[k] = gy * (gx * d00 + fx * d01) + fy * (gx * d10 + fx * d11);
        const int32_t edge = pts.edge[k];
        goff[2 * k] = static_cast<scalar_t>(
            (edge & 1) ? acc_t(0) : m * (gy * (d01 - d00) + fy * (d11 - d10)) * lay.scale);
        goff[2 * k + 1] = static_cast<scalar_t>(
            (edge & 2) ? acc_t(0) : m * (gx * (d10 - d00) + fx * (d11 - d01)) * lay.scale);
      }
      // through the softmax: d logit_k = p_k * (d p_k - sum_j p_j d p_j)
      scalar_t* gmsk = grad_mask + (q * G + g) * P;
      if (softmax_mask) {
        acc_t weighted = 0;
        for (int64_t k = 0; k < P; ++k) weighted += pts.mask[k] * grad_probs[k];
        for (int64_t k = 0; k < P; ++k)
          gmsk[k] = static_cast<scalar_t>(pts.mask[k] * (grad_probs[k] - weighted));
      } else {
        for (int64_t k = 0; k < P; ++k) gmsk[k] = static_cast<scalar_t>(grad_probs[k]);
      }
    }
  }
}

// Input rows [first, last] that the output rows [row_begin, row_end) of (n, g) scatter into
// (first > last when none), with a row of margin either side: backward_rows locates the
// points with the same code, but the compiler may contract it into FMAs differently there.
template <typename scalar_t, typename acc_t>
std::pair<int64_t, int64_t> touched_rows(const scalar_t* offset, const scalar_t* mask,
                                         const Geometry& geo, const Layout<acc_t>& lay,
                                         int64_t n, int64_t g, int64_t row_begin, int64_t row_end) {
  const int64_t P = geo.points, G = geo.group;
  int64_t first = lay.height, last = -1;
  Points<acc_t> pts(P);
  for (int64_t ho = row_begin; ho < row_end; ++ho) {
    for (int64_t wo = 0; wo < lay.out_w; ++wo) {
      const int64_t q = (n * lay.out_h + ho) * lay.out_w + wo;
      pts.locate(offset + (q * G + g) * P * 2, mask + (q * G + g) * P, lay.grid_x.data(),
                 lay.grid_y.data(), static_cast<acc_t>(lay.origin_x + wo * geo.stride_w),
                 static_cast<acc_t>(lay.origin_y + ho * geo.stride_h), lay.scale, lay.height,
                 lay.width, P);
      for (int64_t k = 0; k < P; ++k) {
        if (pts.kind[k] >= kOutside) continue;
        first = std::min<int64_t>(first, pts.y0[k]);
        last = std::max<int64_t>(last, pts.y0[k] + 1);
      }
    }
  }
  return {std::max<int64_t>(first - 1, 0), std::min<int64_t>(last + 1, lay.height - 1)};
}

// dst[x * dst_stride + c] += src[x * C + c] for the W pixels of a row.
template <typename acc_t>
void add_row(acc_t* dst, int64_t dst_stride, const acc_t* src, int64_t W, int64_t C) {
  for (int64_t x = 0; x < W; ++x) {
    acc_t* __restrict__ d = dst + x * dst_stride;
    const acc_t* __restrict__ s = src + x * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) d[c] += s[c];
  }
}

Geometry make_geometry(int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                       int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                       int64_t group, int64_t group_channels, double offset_scale,
                       bool remove_center) {
  TORCH_CHECK(kernel_h > 0 && kernel_w > 0 && stride_h > 0 && stride_w > 0 && dilation_h > 0 &&
                  dilation_w > 0 && pad_h >= 0 && pad_w >= 0 && group > 0 && group_channels > 0,
              "dcnv3 (cpu): kernel, stride, dilation, group and group_channels must be positive "
              "and padding non-negative");
  TORCH_CHECK(!remove_center || kernel_h * kernel_w > 1,
              "dcnv3 (cpu): remove_center needs a kernel of more than one point");
  Geometry geo{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
               group, group_channels, kernel_h * kernel_w - (remove_center ? 1 : 0),
               offset_scale, remove_center};
  return geo;
}

// The kernels index offset, mask (and grad_out) by these sizes: a call with other shapes
// (e.g. torch.ops.m3i_mm_dcnv3_cpu.* directly, bypassing the Python checks) must not read
// out of bounds.
void check_shapes(const Geometry& geo, const at::Tensor& input, const at::Tensor& offset,
                  const at::Tensor& mask, const at::Tensor* grad_out) {
  TORCH_CHECK(input.size(3) == geo.group * geo.channels, "dcnv3 (cpu): input has ", input.size(3),
              " channels, expected group x group_channels = ", geo.group * geo.channels);
  TORCH_CHECK(offset.size(3) == geo.group * geo.points * 2, "dcnv3 (cpu): offset has ",
              offset.size(3), " channels, expected group x points x 2 = ",
              geo.group * geo.points * 2);
  TORCH_CHECK(mask.size(3) == geo.group * geo.points, "dcnv3 (cpu): mask has ", mask.size(3),
              " channels, expected group x points = ", geo.group * geo.points);
  TORCH_CHECK(mask.size(1) == offset.size(1) && mask.size(2) == offset.size(2),
              "dcnv3 (cpu): mask is ", mask.size(1), "x", mask.size(2), " but offset is ",
              offset.size(1), "x", offset.size(2));
  if (grad_out != nullptr)
    TORCH_CHECK(grad_out->size(1) == offset.size(1) && grad_out->size(2) == offset.size(2) &&
                    grad_out->size(3) == input.size(3),
                "dcnv3 (cpu): grad_out has shape ", grad_out->sizes(), ", expected (N, ",
                offset.size(1), ", ", offset.size(2), ", ", input.size(3), ")");
}

void check(const at::Tensor& t, const char* name, const at::Tensor& input) {
  TORCH_CHECK(t.device().is_cpu(), "dcnv3 (cpu): ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 4, "dcnv3 (cpu): ", name, " must be 4-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.size(0) == input.size(0), "dcnv3 (cpu): ", name, " has batch ", t.size(0),
              " but input has ", input.size(0));
}

// Calls body.template operator()<kC>() with kC = C for the channel counts compiled as
// constants (float only, the dtype that matters for speed), 0 otherwise.
template <typename scalar_t, typename Body>
void with_channels(int64_t channels, const Body& body) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (channels == 16) return body.template operator()<16>();
    if (channels == 32) return body.template operator()<32>();
  }
  body.template operator()<0>();
}

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

at::Tensor dcnv3_forward(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& mask_,
                         int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                         int64_t group, int64_t group_channels, double offset_scale,
                         bool remove_center, bool softmax_mask) {
  check(input_, "input", input_); check(offset_, "offset", input_); check(mask_, "mask", input_);
  const Geometry geo = make_geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                     dilation_h, dilation_w, group, group_channels,
                                     offset_scale, remove_center);
  check_shapes(geo, input_, offset_, mask_, nullptr);
  const auto input = input_.contiguous();
  const auto offset = offset_.to(input.scalar_type()).contiguous();
  const auto mask = mask_.to(input.scalar_type()).contiguous();
  auto out = at::empty({input.size(0), offset.size(1), offset.size(2), input.size(3)}, input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_forward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const Layout<acc_t> lay(geo, input, offset);
    const int64_t pixels = lay.batch * lay.out_h * lay.out_w;
    // about 32k channel-point products per chunk
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, geo.group * geo.points * geo.channels));
    with_channels<scalar_t>(geo.channels, [&]<int kC>() {
      at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
        forward_pixels<scalar_t, acc_t, kC>(input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                                            mask.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                            geo, lay, softmax_mask, begin, end);
      });
    });
  });
  return out;
}

// Bands of output rows per (image, group): 1 when the pairs alone balance the threads.
int64_t choose_bands(int64_t pairs, int64_t out_h) {
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || pairs % threads == 0 || pairs >= 4 * threads) return 1;
  const int64_t wanted = (4 * threads + pairs - 1) / pairs;
  return std::max<int64_t>(1, std::min<int64_t>(wanted, out_h / 8));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& offset_,
    const at::Tensor& mask_, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t group, int64_t group_channels, double offset_scale, bool remove_center,
    bool softmax_mask, bool need_input_grad, int64_t bands) {
  check(grad_out_, "grad_out", input_); check(input_, "input", input_);
  check(offset_, "offset", input_); check(mask_, "mask", input_);
  const Geometry geo = make_geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                     dilation_h, dilation_w, group, group_channels,
                                     offset_scale, remove_center);
  check_shapes(geo, input_, offset_, mask_, &grad_out_);
  const auto input = input_.contiguous();
  const auto offset = offset_.to(input.scalar_type()).contiguous();
  const auto mask = mask_.to(input.scalar_type()).contiguous();
  const auto grad_out = grad_out_.to(input.scalar_type()).contiguous();
  auto grad_offset = at::empty(offset.sizes(), input.options());
  auto grad_mask = at::empty(mask.sizes(), input.options());
  // float and double accumulate in place; float16/bfloat16 in a float buffer
  const bool reduced = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  at::Tensor grad_acc;
  if (need_input_grad)
    grad_acc = at::zeros(input.sizes(), input.options().dtype(reduced ? at::kFloat : input.scalar_type()));
  if (grad_out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_backward_cpu", [&] {
      using acc_t = acc_type<scalar_t>;
      const Layout<acc_t> lay(geo, input, offset);
      const int64_t G = geo.group, C = geo.channels, H = lay.height, W = lay.width, S = lay.row_stride;
      const int64_t pairs = lay.batch * G;
      const int64_t nbands = std::max<int64_t>(1, std::min<int64_t>(
          bands > 0 ? bands : choose_bands(pairs, lay.out_h), lay.out_h));
      const scalar_t* in = input.const_data_ptr<scalar_t>();
      const scalar_t* off = offset.const_data_ptr<scalar_t>();
      const scalar_t* msk = mask.const_data_ptr<scalar_t>();
      const scalar_t* gout = grad_out.const_data_ptr<scalar_t>();
      scalar_t* goff = grad_offset.mutable_data_ptr<scalar_t>();
      scalar_t* gmsk = grad_mask.mutable_data_ptr<scalar_t>();
      acc_t* gin = need_input_grad ? grad_acc.mutable_data_ptr<acc_t>() : nullptr;
      auto band_rows = [&](int64_t band) {
        return std::make_pair(lay.out_h * band / nbands, lay.out_h * (band + 1) / nbands);
      };
      with_channels<scalar_t>(C, [&]<int kC>() {
        if (nbands == 1 || gin == nullptr) {
          // a task per (image, group, band) owns its slices of every output
          at::parallel_for(0, pairs * nbands, 1, [&](int64_t begin, int64_t end) {
            for (int64_t task = begin; task < end; ++task) {
              const int64_t pair = task / nbands, n = pair / G, g = pair % G;
              const auto rows = band_rows(task % nbands);
              acc_t* plane = gin == nullptr ? nullptr : gin + n * H * W * S + g * C;
              backward_rows<scalar_t, acc_t, kC>(in, off, msk, gout, goff, gmsk, plane, 0, S, geo,
                                                 lay, softmax_mask, n, g, rows.first, rows.second);
            }
          });
          return;
        }
        // bands scatter into private buffers over the input rows they touch ...
        std::vector<std::vector<acc_t>> buffers(pairs * nbands);
        std::vector<int64_t> first_row(pairs * nbands), last_row(pairs * nbands);
        at::parallel_for(0, pairs * nbands, 1, [&](int64_t begin, int64_t end) {
          for (int64_t task = begin; task < end; ++task) {
            const int64_t pair = task / nbands, n = pair / G, g = pair % G;
            const auto rows = band_rows(task % nbands);
            const auto touched = touched_rows<scalar_t, acc_t>(off, msk, geo, lay, n, g, rows.first, rows.second);
            first_row[task] = touched.first;
            last_row[task] = touched.second;
            const int64_t count = std::max<int64_t>(0, touched.second - touched.first + 1);
            buffers[task].assign(count * W * C, acc_t(0));
            backward_rows<scalar_t, acc_t, kC>(in, off, msk, gout, goff, gmsk, buffers[task].data(),
                                               touched.first, C, geo, lay, softmax_mask, n, g,
                                               rows.first, rows.second);
          }
        });
        // ... summed into grad_input row by row, in band order
        at::parallel_for(0, pairs * H, 1, [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t pair = item / H, y = item % H, n = pair / G, g = pair % G;
            acc_t* dst_row = gin + (n * H + y) * W * S + g * C;
            for (int64_t band = 0; band < nbands; ++band) {
              const int64_t task = pair * nbands + band;
              if (y < first_row[task] || y > last_row[task]) continue;
              add_row(dst_row, S, buffers[task].data() + (y - first_row[task]) * W * C, W, C);
            }
          }
        });
      });
    });
  }
  at::Tensor grad_input;
  if (need_input_grad) grad_input = reduced ? grad_acc.to(input.scalar_type()) : grad_acc;
  else grad_input = at::zeros(input.sizes(), input.options());  // the custom op's schema shape
  return {grad_input, grad_offset.to(offset_.scalar_type()), grad_mask.to(mask_.scalar_type())};
}

// ---------------------------------------------------------------------------------------------
// The offset/mask branch of the DCNv3 module for eager inference: depth-wise k x k conv (zero
// padding (k - 1) / 2, stride 1) + bias, LayerNorm over the channels, exact GELU, in one pass
// over channels-last maps (three aten ops and two intermediate tensors otherwise).

// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, the formula of aten's
// vectorised CPU erf), vectorisable; double goes to std::erf.
inline float erf_approx(float x) {
  const float a = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  const float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
                      0.254829592f) * t;
  const float y = 1.0f - poly * exp_nonpositive(-a * a);
  return x < 0.0f ? -y : (x != x ? x : y);
}
inline double erf_approx(double x) { return std::erf(x); }

template <typename scalar_t>
void dwconv_norm_gelu_rows(const scalar_t* __restrict__ input, const scalar_t* __restrict__ taps,
                           const scalar_t* __restrict__ conv_bias, const scalar_t* __restrict__ norm_weight,
                           const scalar_t* __restrict__ norm_bias, scalar_t* __restrict__ out,
                           int64_t height, int64_t width, int64_t channels, int64_t kernel,
                           double eps, int64_t begin, int64_t end) {
  const int64_t C = channels, pad = (kernel - 1) / 2;
  std::vector<scalar_t> acc_buffer(C);
  scalar_t* __restrict__ acc = acc_buffer.data();
  const scalar_t inv_c = scalar_t(1) / static_cast<scalar_t>(C);
  for (int64_t row = begin; row < end; ++row) {  // row = n * height + y
    const int64_t n = row / height, y = row % height;
    for (int64_t x = 0; x < width; ++x) {
      for (int64_t c = 0; c < C; ++c) acc[c] = conv_bias != nullptr ? conv_bias[c] : scalar_t(0);
      for (int64_t dy = 0; dy < kernel; ++dy) {
        const int64_t iy = y + dy - pad;
        if (iy < 0 || iy >= height) continue;
        for (int64_t dx = 0; dx < kernel; ++dx) {
          const int64_t ix = x + dx - pad;
          if (ix < 0 || ix >= width) continue;
          const scalar_t* __restrict__ src = input + ((n * height + iy) * width + ix) * C;
          const scalar_t* __restrict__ w = taps + (dy * kernel + dx) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] += w[c] * src[c];
        }
      }
      scalar_t mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
      for (int64_t c = 0; c < C; ++c) mean += acc[c];
      mean *= inv_c;
#pragma omp simd reduction(+ : var)
      for (int64_t c = 0; c < C; ++c) var += (acc[c] - mean) * (acc[c] - mean);
      const scalar_t rstd = scalar_t(1) / std::sqrt(var * inv_c + static_cast<scalar_t>(eps));
      scalar_t* __restrict__ dst = out + (row * width + x) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t v = (acc[c] - mean) * rstd * norm_weight[c] + norm_bias[c];
        dst[c] = scalar_t(0.5) * v * (scalar_t(1) + erf_approx(v * scalar_t(0.70710678118654752440)));
      }
    }
  }
}

at::Tensor dwconv_norm_gelu(const at::Tensor& input_, const at::Tensor& weight,
                            const std::optional<at::Tensor>& conv_bias, const at::Tensor& norm_weight,
                            const at::Tensor& norm_bias, double eps) {
  TORCH_CHECK(input_.dim() == 4 && input_.device().is_cpu(),
              "dwconv_norm_gelu: input must be a 4-D CPU tensor (N, H, W, C)");
  const int64_t C = input_.size(3), kernel = weight.size(-1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == kernel &&
                  kernel % 2 == 1,
              "dwconv_norm_gelu: weight must be (C, 1, k, k) with odd k, got ", weight.sizes());
  TORCH_CHECK(input_.scalar_type() == at::kFloat || input_.scalar_type() == at::kDouble,
              "dwconv_norm_gelu: float32 or float64 only");
  const auto input = input_.contiguous();
  const auto dtype = input.scalar_type();
  // taps laid out (k * k, C): each tap's channel row is contiguous
  const auto taps = weight.to(dtype).reshape({C, kernel * kernel}).t().contiguous();
  const auto bias = conv_bias.has_value() && conv_bias->defined() ? conv_bias->to(dtype).contiguous() : at::Tensor();
  const auto nw = norm_weight.to(dtype).contiguous(), nb = norm_bias.to(dtype).contiguous();
  auto out = at::empty(input.sizes(), input.options());
  const int64_t rows = input.size(0) * input.size(1);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(dtype, "dwconv_norm_gelu", [&] {
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, input.size(2) * C));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      dwconv_norm_gelu_rows<scalar_t>(input.const_data_ptr<scalar_t>(), taps.const_data_ptr<scalar_t>(),
                                      bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                                      nw.const_data_ptr<scalar_t>(), nb.const_data_ptr<scalar_t>(),
                                      out.mutable_data_ptr<scalar_t>(), input.size(1), input.size(2), C,
                                      kernel, eps, begin, end);
    });
  });
  return out;
}

}  // namespace

// Schemas here, CPU kernels below; autograd and fake (meta) kernels are registered from
// Python (m3i_mm/ops/dcnv3/cpu_ext.py).
TORCH_LIBRARY(m3i_mm_dcnv3_cpu, m) {
  m.def("forward(Tensor input, Tensor offset, Tensor mask, int kernel_h, int kernel_w, "
        "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, "
        "int group, int group_channels, float offset_scale, bool remove_center, "
        "bool softmax_mask) -> Tensor");
  m.def("backward(Tensor grad_out, Tensor input, Tensor offset, Tensor mask, int kernel_h, "
        "int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, "
        "int dilation_w, int group, int group_channels, float offset_scale, bool remove_center, "
        "bool softmax_mask, bool need_input_grad, int bands) -> (Tensor, Tensor, Tensor)");
  m.def("dwconv_norm_gelu(Tensor input, Tensor weight, Tensor? conv_bias, Tensor norm_weight, "
        "Tensor norm_bias, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(m3i_mm_dcnv3_cpu, CPU, m) {
  m.impl("forward", &dcnv3_forward);
  m.impl("backward", &dcnv3_backward);
  m.impl("dwconv_norm_gelu", &dwconv_norm_gelu);
}
