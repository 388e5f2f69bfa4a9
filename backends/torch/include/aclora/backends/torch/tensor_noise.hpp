/// @file tensor_noise.hpp
/// @brief The contract's noise as tensor operations, on the device that holds the layers:
/// Philox-4x32-10 over int64 tensors and the core's Box-Muller transforms.
///
/// The words equal aclora::philox4x32_10 bit for bit (same counters and keys as
/// aclora::gaussian_block, so the same as the CUDA backend and the CPU routes). A 32 x 32
/// -> 64-bit product does not fit int64, so each product is formed from the multiplier
/// times the 16-bit halves of the word (each below 2^48). The float transform repeats
/// aclora::box_muller<float> operation by operation (each an IEEE single-precision
/// operation of its own, so no contraction): its draws equal gaussian_block<float>'s bit for
/// bit. The double transform uses the device's log, sqrt, cos and sin, within an ulp or two
/// of the C library's that gaussian_block<double> calls.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "aclora/noise.hpp"

namespace aclora::backends::libtorch {

/// Four tensors of 32-bit words (int64 values in [0, 2^32)), broadcastable to one shape.
using WordTensors = std::array<at::Tensor, 4>;

namespace detail {

inline constexpr std::int64_t kWordMask = 0xFFFFFFFF;

// (high, low) 32-bit halves of multiplier * word, for words in [0, 2^32).
inline std::pair<at::Tensor, at::Tensor> multiply_word(const at::Tensor& word,
                                                       std::int64_t multiplier) {
  const at::Tensor low_product = word.bitwise_and(0xFFFF).mul(multiplier);       // < 2^48
  const at::Tensor high_product = word.bitwise_right_shift(16).mul(multiplier);  // < 2^48
  // multiplier * word = low_product + 2^16 high_product = partial + 2^32 (high_product >> 16)
  const at::Tensor partial =
      low_product.add(high_product.bitwise_and(0xFFFF).bitwise_left_shift(16));  // < 2^49
  return {high_product.bitwise_right_shift(16).add(partial.bitwise_right_shift(32)),
          partial.bitwise_and(kWordMask)};
}

}  // namespace detail

/// Philox-4x32-10 (aclora::philox4x32_10) of the counters `counter` under the keys
/// (key0, key1), all int64 tensors of 32-bit words that broadcast together.
inline WordTensors philox_tensors(WordTensors counter, at::Tensor key0, at::Tensor key1) {
  constexpr std::int64_t multiplier0 = 0xD2511F53;
  constexpr std::int64_t multiplier1 = 0xCD9E8D57;
  constexpr std::int64_t weyl0 = 0x9E3779B9;
  constexpr std::int64_t weyl1 = 0xBB67AE85;
  for (int round = 0; round < 10; ++round) {
    auto [high0, low0] = detail::multiply_word(counter[0], multiplier0);
    auto [high1, low1] = detail::multiply_word(counter[2], multiplier1);
    counter = WordTensors{high1.bitwise_xor(counter[1]).bitwise_xor(key0), std::move(low1),
                          high0.bitwise_xor(counter[3]).bitwise_xor(key1), std::move(low0)};
    key0 = key0.add(weyl0).bitwise_and(detail::kWordMask);
    key1 = key1.add(weyl1).bitwise_and(detail::kWordMask);
  }
  return counter;
}

namespace detail {

// log of positive normal floats as aclora::detail::log_positive computes it.
inline at::Tensor log_positive(const at::Tensor& x) {
  constexpr double lg1 = 0.66666662693f, lg2 = 0.40000972152f, lg3 = 0.28498786688f,
                   lg4 = 0.24279078841f, ln2_high = 6.9313812256e-01f, ln2_low = 9.0580006145e-06f;
  const at::Tensor bits = x.view(at::kInt);
  const at::Tensor k = bits.sub(0x3f3504f3).bitwise_right_shift(23);  // arithmetic shift
  const at::Tensor f = bits.sub(k.mul(1 << 23)).view(at::kFloat).sub(1.0);
  const at::Tensor s = f.div(f.add(2.0));
  const at::Tensor z = s.mul(s);
  const at::Tensor w = z.mul(z);
  const at::Tensor r = z.mul(w.mul(lg3).add(lg1)).add(w.mul(w.mul(lg4).add(lg2)));
  const at::Tensor half_f_squared = f.mul(0.5).mul(f);
  const at::Tensor kf = k.to(at::kFloat);
  return s.mul(half_f_squared.add(r))
      .add(kf.mul(ln2_low))
      .sub(half_f_squared)
      .add(f)
      .add(kf.mul(ln2_high));
}

// sqrt of non-negative floats as aclora::detail::sqrt_nonnegative computes it.
inline at::Tensor sqrt_nonnegative(const at::Tensor& x) {
  at::Tensor y = at::rsub(x.view(at::kInt).bitwise_right_shift(1), 0x5f375a86).view(at::kFloat);
  const at::Tensor half_x = x.mul(0.5);
  for (int step = 0; step < 3; ++step)
    y = y.mul(at::rsub(half_x.mul(y).mul(y), 1.5));
  return x.mul(y);
}

// (sin 2 pi t, cos 2 pi t) for t in [0, 1] as aclora::detail::sincos_turns computes them.
inline std::pair<at::Tensor, at::Tensor> sincos_turns(const at::Tensor& t) {
  constexpr double a = 6.283185307179586476925286766559;  // 2 pi
  constexpr double s1 = static_cast<float>(a), s3 = static_cast<float>(-a * a * a / 6),
                   s5 = static_cast<float>(a * a * a * a * a / 120),
                   s7 = static_cast<float>(-a * a * a * a * a * a * a / 5040),
                   s9 = static_cast<float>(a * a * a * a * a * a * a * a * a / 362880);
  constexpr double c2 = static_cast<float>(-a * a / 2), c4 = static_cast<float>(a * a * a * a / 24),
                   c6 = static_cast<float>(-a * a * a * a * a * a / 720),
                   c8 = static_cast<float>(a * a * a * a * a * a * a * a / 40320),
                   c10 = static_cast<float>(-a * a * a * a * a * a * a * a * a * a / 3628800);
  const at::Tensor quarter = t.mul(4.0).add(0.5).to(at::kInt);  // truncation: 0..4
  const at::Tensor r = t.sub(quarter.to(at::kFloat).mul(0.25));
  const at::Tensor r2 = r.mul(r);
  const at::Tensor sin_r =
      r.mul(r2.mul(r2.mul(r2.mul(r2.mul(s9).add(s7)).add(s5)).add(s3)).add(s1));
  const at::Tensor cos_r =
      r2.mul(r2.mul(r2.mul(r2.mul(r2.mul(c10).add(c8)).add(c6)).add(c4)).add(c2)).add(1.0);
  const at::Tensor odd = quarter.bitwise_and(1).ne(0);
  const at::Tensor sine = at::where(odd, cos_r, sin_r);
  const at::Tensor cosine = at::where(odd, sin_r, cos_r);
  const at::Tensor negate_sine = quarter.bitwise_right_shift(1).bitwise_and(1).ne(0);
  const at::Tensor negate_cosine = quarter.add(1).bitwise_right_shift(1).bitwise_and(1).ne(0);
  return {at::where(negate_sine, sine.neg(), sine), at::where(negate_cosine, cosine.neg(), cosine)};
}

}  // namespace detail

/// aclora::box_muller of word tensors (int64, values in [0, 2^32)): (z0, z1) in `real`
/// (float: bit-equal to box_muller<float>; double: the device's libm functions).
inline std::pair<at::Tensor, at::Tensor> box_muller_tensors(const at::Tensor& first,
                                                            const at::Tensor& second,
                                                            c10::ScalarType real) {
  constexpr double two_pow_minus_32 = 2.3283064365386962890625e-10;
  if (real == at::kFloat) {
    const at::Tensor u1 = first.to(at::kFloat).add(1.0).mul(two_pow_minus_32);
    const at::Tensor u2 = second.to(at::kFloat).mul(two_pow_minus_32);
    // -2 log u1 >= 0; a -0 becomes +0 (the core clears the sign bit)
    const at::Tensor squared = detail::log_positive(u1).mul(-2.0);
    const at::Tensor squared_bits = squared.view(at::kInt);
    const at::Tensor radius =
        detail::sqrt_nonnegative(squared_bits.masked_fill(squared_bits.lt(0), 0).view(at::kFloat));
    auto [sine, cosine] = detail::sincos_turns(u2);
    return {radius.mul(cosine), radius.mul(sine)};
  }
  constexpr double two_pi = 6.283185307179586476925286766559;
  const at::Tensor u1 = first.to(at::kDouble).add(1.0).mul(two_pow_minus_32);
  const at::Tensor angle = second.to(at::kDouble).mul(two_pow_minus_32).mul(two_pi);
  const at::Tensor radius = u1.log().mul(-2.0).sqrt();
  return {radius.mul(angle.cos()), radius.mul(angle.sin())};
}

/// Draws [0, count) of each stream in `keys` (the numbering of aclora/noise.hpp) as a
/// keys.size() x count tensor of `real` (float or double) on `device`; the Philox words are
/// computed there in slices of at most 2^22 blocks (about 32 MiB per word tensor).
inline at::Tensor gaussian_tensor(std::span<const NoiseKey> keys, std::int64_t count,
                                  c10::ScalarType real, const at::Device& device) {
  const auto layers = static_cast<std::int64_t>(keys.size());
  const std::int64_t blocks = (count + 3) / 4;
  const auto int64 = at::TensorOptions().dtype(at::kLong);
  std::vector<std::int64_t> key_words(static_cast<std::size_t>(4 * layers));
  for (std::int64_t g = 0; g < layers; ++g) {
    const NoiseKey& key = keys[static_cast<std::size_t>(g)];
    key_words[4 * g] = static_cast<std::int64_t>(key.seed & 0xFFFFFFFFu);
    key_words[4 * g + 1] = static_cast<std::int64_t>(key.seed >> 32);
    key_words[4 * g + 2] = static_cast<std::int64_t>(key.stream & 0xFFFFFFFFu);
    key_words[4 * g + 3] = static_cast<std::int64_t>(key.stream >> 32);
  }
  const at::Tensor per_layer = at::from_blob(key_words.data(), {layers, 4}, int64)
                                   .to(device, at::kLong, /*non_blocking=*/false, /*copy=*/true);
  at::Tensor draws = at::empty({layers, 4 * blocks}, int64.dtype(real).device(device));
  const at::Tensor block = at::arange(blocks, int64.device(device)).unsqueeze(0);  // 1 x B
  const std::int64_t slice =
      std::max<std::int64_t>(1, (std::int64_t{1} << 22) / std::max<std::int64_t>(blocks, 1));
  for (std::int64_t g0 = 0; g0 < layers; g0 += slice) {
    const std::int64_t size = std::min(slice, layers - g0);
    const at::Tensor words = per_layer.narrow(0, g0, size);
    const WordTensors counter{block.bitwise_and(detail::kWordMask), block.bitwise_right_shift(32),
                              words.select(1, 2).unsqueeze(1), words.select(1, 3).unsqueeze(1)};
    const WordTensors bits =
        philox_tensors(counter, words.select(1, 0).unsqueeze(1), words.select(1, 1).unsqueeze(1));
    auto [z0, z1] = box_muller_tensors(bits[0], bits[1], real);
    auto [z2, z3] = box_muller_tensors(bits[2], bits[3], real);
    draws.narrow(0, g0, size).copy_(at::stack({z0, z1, z2, z3}, 2).view({size, 4 * blocks}));
  }
  return draws.narrow(1, 0, count);
}

}  // namespace aclora::backends::libtorch
