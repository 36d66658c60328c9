// Float64 text forward from MODEL.md §3 and §4, written without the engine's code (its own YaRN table, RoPE,
// attention, routing). Slow and simple on purpose.
#include "reference_forward.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace quatre::model::test {
namespace {

using io::WeightKind;
using Vec = std::vector<double>;

struct Mat {
  int64_t rows = 0, cols = 0;
  Vec v;
  const double* row(int64_t r) const { return v.data() + r * cols; }
};

class Ref {
 public:
  Ref(const io::Checkpoint& c, SoftmaxScale convention) : ckpt_(c), t_(c.config().text), convention_(convention) {}

  Mat weight(WeightKind kind, int layer = -1, int expert = -1) const {
    const io::WeightView& w = ckpt_.weight({kind, layer, expert});
    Mat m;
    m.rows = w.shape.size() == 1 ? 1 : w.shape[0];
    m.cols = w.shape.back();
    m.v.resize(static_cast<size_t>(m.rows * m.cols));
    for (size_t i = 0; i < m.v.size(); ++i) m.v[i] = w.at(i);  // float(w) * weight_scale
    return m;
  }

  // y = W x
  static Vec linear(const Mat& w, const Vec& x) {
    Vec y(static_cast<size_t>(w.rows), 0.0);
    for (int64_t r = 0; r < w.rows; ++r) {
      for (int64_t i = 0; i < w.cols; ++i) y[static_cast<size_t>(r)] += w.row(r)[i] * x[static_cast<size_t>(i)];
    }
    return y;
  }

  // eps: rms_norm_eps, except the q_a / kv_a norms, which transformers builds with the default 1e-6.
  Vec rms(const Vec& x, const Mat& g, double eps = -1) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + (eps < 0 ? t_.rms_norm_eps : eps));
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = g.v[i] * (x[i] * r);
    return y;
  }

  // MODEL.md §4.1 in float64.
  Vec inv_freq() const {
    const double dim = static_cast<double>(t_.qk_rope_head_dim), theta = t_.rope.theta;
    Vec f(static_cast<size_t>(t_.qk_rope_head_dim / 2));
    auto corr = [&](double r) {
      return dim * std::log(static_cast<double>(t_.rope.original_max_position_embeddings) / (2 * std::numbers::pi * r)) /
             (2 * std::log(theta));
    };
    const double low = std::max(std::floor(corr(t_.rope.beta_fast)), 0.0);
    double high = std::min(std::ceil(corr(t_.rope.beta_slow)), dim - 1);
    if (low == high) high += 0.001;
    for (size_t i = 0; i < f.size(); ++i) {
      const double extrap = 1.0 / std::pow(theta, 2.0 * static_cast<double>(i) / dim);
      if (!t_.rope.is_yarn) {
        f[i] = extrap;
        continue;
      }
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      f[i] = extrap / t_.rope.factor * ramp + extrap * (1 - ramp);
    }
    return f;
  }

  // Interleaved pairs (2i, 2i+1) rotated by pos * inv_freq[i] (MODEL.md §3.4).
  static void rope(double* x, const Vec& freq, int32_t pos) {
    for (size_t i = 0; i < freq.size(); ++i) {
      const double a = pos * freq[i], c = std::cos(a), s = std::sin(a), x0 = x[2 * i], x1 = x[2 * i + 1];
      x[2 * i] = x0 * c - x1 * s;
      x[2 * i + 1] = x1 * c + x0 * s;
    }
  }

  double scale() const {
    double s = 1.0 / std::sqrt(static_cast<double>(t_.qk_nope_head_dim + t_.qk_rope_head_dim));
    if (convention_ == SoftmaxScale::kTransformers && t_.rope.is_yarn) {
      const double m = 0.1 * t_.rope.mscale_all_dim * std::log(t_.rope.factor) + 1.0;
      s *= m * m;
    }
    return s;
  }

  Vec ffn(int layer, int expert, WeightKind g, WeightKind u, WeightKind d, const Vec& x) const {
    Vec a = linear(weight(g, layer, expert), x);
    const Vec b = linear(weight(u, layer, expert), x);
    for (size_t i = 0; i < a.size(); ++i) a[i] = a[i] / (1 + std::exp(-a[i])) * b[i];
    return linear(weight(d, layer, expert), a);
  }

  // x [T][D] <- x + Attn(rms(x)) for one layer.
  void attention(int l, std::vector<Vec>& x, const std::vector<int32_t>& pos) const {
    const int64_t T = static_cast<int64_t>(x.size()), H = t_.n_heads, Dn = t_.qk_nope_head_dim,
                  Dr = t_.qk_rope_head_dim, Dv = t_.v_head_dim, R = t_.kv_lora_rank, Dh = Dn + Dr;
    const Mat attn_norm = weight(WeightKind::kAttnNorm, l), q_a = weight(WeightKind::kQA, l),
              q_a_norm = weight(WeightKind::kQANorm, l), q_b = weight(WeightKind::kQB, l),
              kv_a = weight(WeightKind::kKvA, l), kv_a_norm = weight(WeightKind::kKvANorm, l),
              kv_b = weight(WeightKind::kKvB, l), o_proj = weight(WeightKind::kO, l);
    const Vec freq = inv_freq();
    std::vector<Vec> q(T), k(T), v(T);  // q [H*Dh], k [H*Dh], v [H*Dv] per token
    for (int64_t t = 0; t < T; ++t) {
      const Vec h = rms(x[t], attn_norm);
      q[t] = linear(q_b, rms(linear(q_a, h), q_a_norm, 1e-6));
      const Vec ckv = linear(kv_a, h);
      const Vec c = rms(Vec(ckv.begin(), ckv.begin() + R), kv_a_norm, 1e-6);
      Vec k_rope(ckv.begin() + R, ckv.end());
      rope(k_rope.data(), freq, pos[t]);
      const double temperature = 1 + t_.rope.llama_4_scaling_beta *
                                         std::log(1 + std::floor(static_cast<double>(pos[t]) /
                                                                 t_.rope.llama_4_original_max_position_embeddings));
      const Vec kvb = linear(kv_b, c);  // [H*(Dn+Dv)]
      k[t].resize(static_cast<size_t>(H * Dh));
      v[t].resize(static_cast<size_t>(H * Dv));
      for (int64_t hd = 0; hd < H; ++hd) {
        rope(q[t].data() + hd * Dh + Dn, freq, pos[t]);
        for (int64_t i = 0; i < Dh; ++i) q[t][hd * Dh + i] *= temperature;
        for (int64_t i = 0; i < Dn; ++i) k[t][hd * Dh + i] = kvb[hd * (Dn + Dv) + i];
        for (int64_t i = 0; i < Dr; ++i) k[t][hd * Dh + Dn + i] = k_rope[i];
        for (int64_t i = 0; i < Dv; ++i) v[t][hd * Dv + i] = kvb[hd * (Dn + Dv) + Dn + i];
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec o(static_cast<size_t>(H * Dv), 0.0);
      for (int64_t hd = 0; hd < H; ++hd) {
        Vec s(static_cast<size_t>(t + 1));
        double m = -1e300, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < Dh; ++i) dot += q[t][hd * Dh + i] * k[j][hd * Dh + i];
          s[j] = dot * scale();
          m = std::max(m, s[j]);
        }
        for (double& e : s) sum += (e = std::exp(e - m));
        for (int64_t j = 0; j <= t; ++j) {
          for (int64_t i = 0; i < Dv; ++i) o[hd * Dv + i] += s[j] / sum * v[j][hd * Dv + i];
        }
      }
      const Vec y = linear(o_proj, o);
      for (size_t i = 0; i < y.size(); ++i) x[t][i] += y[i];
    }
  }

  // x <- x + FFN(rms(x)), MoE (§3.10) or dense.
  void ffn_block(int l, Vec& x) const {
    const Vec u = rms(x, weight(WeightKind::kFfnNorm, l));
    Vec y(u.size(), 0.0);
    if (!t_.is_moe_layer(l)) {
      y = ffn(l, -1, WeightKind::kDenseGate, WeightKind::kDenseUp, WeightKind::kDenseDown, u);
    } else {
      Vec p = linear(weight(WeightKind::kRouter, l), u);
      const double m = *std::max_element(p.begin(), p.end());
      double sum = 0;
      for (double& e : p) sum += (e = std::exp(e - m));
      for (double& e : p) e /= sum;
      std::vector<int> order(p.size());
      for (size_t e = 0; e < order.size(); ++e) order[e] = static_cast<int>(e);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
      double chosen = 0;
      for (int64_t j = 0; j < t_.n_experts_per_tok; ++j) chosen += p[order[j]];
      for (int64_t j = 0; j < t_.n_experts_per_tok; ++j) {
        const int e = order[j];
        const Vec ye = ffn(l, e, WeightKind::kExpertGate, WeightKind::kExpertUp, WeightKind::kExpertDown, u);
        const double gate = p[e] / (chosen + 1e-20) * t_.routed_scaling_factor;
        for (size_t i = 0; i < y.size(); ++i) y[i] += gate * ye[i];
      }
      if (t_.n_shared_experts > 0) {
        const Vec ys = ffn(l, -1, WeightKind::kSharedGate, WeightKind::kSharedUp, WeightKind::kSharedDown, u);
        for (size_t i = 0; i < y.size(); ++i) y[i] += ys[i];
      }
    }
    for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
  }

  ReferenceOutput run(const std::vector<int32_t>& ids, const std::vector<int32_t>& pos) const {
    const Mat embed = weight(WeightKind::kEmbed);
    std::vector<Vec> x;
    for (int32_t id : ids) x.emplace_back(embed.row(id), embed.row(id) + embed.cols);
    ReferenceOutput out;
    auto record = [&] {
      std::vector<float>& h = out.hidden.emplace_back();
      for (const Vec& row : x) h.insert(h.end(), row.begin(), row.end());
    };
    record();
    for (int l = 0; l < static_cast<int>(t_.n_layers); ++l) {
      attention(l, x, pos);
      for (Vec& row : x) ffn_block(l, row);
      record();
    }
    const Mat norm = weight(WeightKind::kFinalNorm);
    const Mat head = weight(t_.tie_word_embeddings ? WeightKind::kEmbed : WeightKind::kLmHead);
    for (const Vec& row : x) {
      const Vec logits = linear(head, rms(row, norm));
      out.logits.insert(out.logits.end(), logits.begin(), logits.end());
    }
    return out;
  }

 private:
  const io::Checkpoint& ckpt_;
  const io::TextConfig& t_;
  SoftmaxScale convention_;
};

}  // namespace

ReferenceOutput reference_forward(const io::Checkpoint& checkpoint, const std::vector<int32_t>& ids,
                                  const std::vector<int32_t>& positions, SoftmaxScale convention) {
  return Ref(checkpoint, convention).run(ids, positions);
}

}  // namespace quatre::model::test
