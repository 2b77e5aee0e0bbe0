// Kernel benchmark on the GPU: torch's scaled_dot_product_attention (bf16) and our attention for
// each cache format at q = 1041 queries, 16 heads, d = 64 and T kept tokens, in one run; and the
// append kernel's achieved bandwidth against a device-to-device copy of the same bytes; the
// blocks' matrix products in bf16 and FP8.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/kv/paged_kv.h"
#include "kernels/block_ops.h"
#include "kernels/kv_kernels.h"
#include "kernels/kv_ops.h"

namespace {

using streamrecon::PagedKv;
using streamrecon::PageLayout;

// Median milliseconds of `fn` over `reps` timed runs (CUDA events), after warm-up.
double TimeMs(const std::function<void()>& fn, int reps = 15) {
  for (int i = 0; i < 3; ++i) fn();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<double> times;
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a, stream);
    fn();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    times.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Milliseconds per call of `fn` over `calls` calls back to back (the median of TimeMs over all of
// them / calls): the device's time per call once the host runs ahead of it, without the host's
// lead before a lone call's first kernel that TimeMs of one call includes.
double BackToBackMs(const std::function<void()>& fn, int calls = 50) {
  return TimeMs([&] {
           for (int i = 0; i < calls; ++i) fn();
         }) /
         calls;
}

// Microseconds per call of `fn` as the model's step runs it: `calls` calls captured in one CUDA
// graph (no launch gaps of the host's), the graph replayed `reps` times; the median replay / calls.
double GraphUsPerCall(const std::function<void()>& fn, int calls = 24, int reps = 15) {
  const at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
  at::cuda::getCurrentCUDAStream().synchronize();  // (the inputs, written on the caller's stream)
  at::cuda::CUDAGraph graph;
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    fn();  // (warm-up outside the capture: plans, workspaces)
    side.synchronize();
    graph.capture_begin();
    for (int i = 0; i < calls; ++i) fn();
    graph.capture_end();
  }
  return TimeMs([&] { graph.replay(); }, reps) * 1000.0 / calls;
}

// The ragged path's query tail at T kept tokens: the 17 (queries - 1024) rows over every row, by
// flash attention over bf16 rows (the path before session 23) and by the fused kernel over packed
// pages (PagesAttentionCuda) at several splits and resident blocks; microseconds per layer.
nlohmann::json TimeQueryTail(const std::vector<int64_t>& kept, int64_t queries, int64_t heads, const at::TensorOptions& dev) {
  nlohmann::json rows = nlohmann::json::array();
  const int64_t first = queries / 128 * 128;
  std::printf("\nquery tail: %lld rows over T + %lld rows, us per layer (CUDA graph of 24)\n", static_cast<long long>(queries - first),
              static_cast<long long>(queries));
  for (int64_t T : kept) {
    at::manual_seed(T);
    const at::Tensor q = at::randn({heads, queries, 64}, dev);
    const at::Tensor k_all = at::randn({heads, T + queries, 64}, dev), v_all = at::randn({heads, T + queries, 64}, dev);
    const at::Tensor k_cur = k_all.narrow(1, T, queries).contiguous(), v_cur = v_all.narrow(1, T, queries).contiguous();
    const at::Tensor qt = q.narrow(1, first, queries - first);
    auto report = [&](const std::string& name, double us) {
      std::printf("  T %-7lld %-16s %8.1f\n", static_cast<long long>(T), name.c_str(), us);
      rows.push_back({{"tokens", T}, {"variant", name}, {"us", us}});
    };
    report("flash-bf16-rows", GraphUsPerCall([&] {
             at::_scaled_dot_product_flash_attention(qt.unsqueeze(0), k_all.unsqueeze(0), v_all.unsqueeze(0), 0.0, false, false, 0.125);
           }));
    for (int bits : {4, 2}) {
      PageLayout L{static_cast<int>(heads), 64, 32, bits, 64, true};
      PagedKv pages = streamrecon::AllocatePages(L, (T + 31) / 32, at::kCUDA);
      streamrecon::kernels::AppendPagesCuda(k_all.narrow(1, 0, T).contiguous(), v_all.narrow(1, 0, T).contiguous(), true, false, 0, pages, 0);
      for (int splits : {0, 4, 8, 16, 25, 33, 66}) {
        const std::string name = "pages" + std::to_string(bits) + (splits ? "/s" + std::to_string(splits) : "/auto");
        report(name, GraphUsPerCall([&] { streamrecon::kernels::PagesAttentionCuda(qt, pages, pages.pages(), k_cur, v_cur, splits); }));
      }
    }
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark of the KV-cache CUDA kernels against torch SDPA"};
  std::vector<int64_t> kept = {4096, 16384, 65536, 262144};
  int64_t queries = 1041, heads = 16;
  std::string json_path, append_format;
  std::vector<int64_t> append_tokens;
  bool append_only = false, tail_only = false, once = false;
  int append_hpb = -1;
  std::vector<int> int8_splits = {1};
  app.add_option("--tokens", kept, "Kept tokens T (repeatable)");
  app.add_flag("--append-only", append_only, "Skip the attention timings");
  app.add_flag("--tail-only", tail_only, "Only the query tail's timings (the rows past the last 128-row tile)");
  app.add_flag("--once", once,
               "Run cuDNN SDPA and the 8-bit path from kivi4 pages (the one pass, the default kernel) once per --tokens and stop: "
               "a short run for a profiler (ncu)");
  app.add_option("--append-tokens", append_tokens, "Tokens per append (repeatable; default: one frame and 65536)");
  app.add_option("--append-format", append_format, "Only this append format (kivi4, kivi2, oscar4, oscar2)");
  app.add_option("--append-hpb", append_hpb, "Only variant 2 with this many heads per block (1, 2, 4)");
  app.add_option("--int8-splits", int8_splits, "8-bit attention: split counts over the keys to time beside the automatic one (repeatable)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--queries", queries, "Queries per frame");
  app.add_option("--heads", heads, "Heads");
  app.add_option("--json", json_path, "Write the results as JSON");
  CLI11_PARSE(app, argc, argv);
  if (!at::cuda::is_available()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  const auto dev = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  std::printf("device: %s, %d SMs\n", prop->name, prop->multiProcessorCount);
  nlohmann::json results = {{"device", prop->name}, {"queries", queries}, {"heads", heads}};
  if (once) {
    for (int64_t T : kept) {
      const at::Tensor q = at::randn({heads, queries, 64}, dev), k_cur = at::randn({heads, queries, 64}, dev),
                       v_cur = at::randn({heads, queries, 64}, dev);
      const at::Tensor k_all = at::randn({heads, T + queries, 64}, dev), v_all = at::randn({heads, T + queries, 64}, dev);
      PagedKv pages = streamrecon::AllocatePages(PageLayout{static_cast<int>(heads), 64, 32, 4, 64, false}, (T + 31) / 32, at::kCUDA);
      streamrecon::kernels::AppendPagesCuda(k_all.narrow(1, 0, T).contiguous(), v_all.narrow(1, 0, T).contiguous(), false, false, 0, pages, 0);
      at::scaled_dot_product_attention(q.unsqueeze(0), k_all.unsqueeze(0), v_all.unsqueeze(0));
      streamrecon::kernels::Int8AttentionCuda(q, streamrecon::kernels::ExpandPagesInt8Cuda(pages, pages.pages(), k_cur, v_cur));
    }
    at::cuda::getCurrentCUDAStream().synchronize();
    return 0;
  }
  if (tail_only) {
    results["query_tail"] = TimeQueryTail(kept, queries, heads, dev);
    if (!json_path.empty()) std::ofstream(json_path) << results.dump(2) << "\n";
    return 0;
  }

  // Attention: T cached tokens + the current frame (queries tokens) per head.
  std::printf("\n%-9s %-16s %10s %10s %8s\n", "T", "format", "ms", "TFLOP/s", "vs SDPA");
  nlohmann::json attention = nlohmann::json::array();
  for (int64_t T : append_only ? std::vector<int64_t>{} : kept) {
    at::manual_seed(T);
    const at::Tensor q = at::randn({heads, queries, 64}, dev);
    const at::Tensor k_cur = at::randn({heads, queries, 64}, dev), v_cur = at::randn({heads, queries, 64}, dev);
    const at::Tensor k_all = at::randn({heads, T + queries, 64}, dev), v_all = at::randn({heads, T + queries, 64}, dev);
    const double flops = 4.0 * heads * queries * static_cast<double>(T + queries) * 64;
    const double sdpa = TimeMs([&] { at::scaled_dot_product_attention(q.unsqueeze(0), k_all.unsqueeze(0), v_all.unsqueeze(0)); });
    auto report = [&](const char* name, double ms) {
      std::printf("%-9lld %-16s %10.3f %10.1f %8.2fx\n", static_cast<long long>(T), name, ms, flops / ms / 1e9, ms / sdpa);
      attention.push_back({{"tokens", T}, {"format", name}, {"ms", ms}, {"tflops", flops / ms / 1e9}, {"vs_sdpa", ms / sdpa}});
    };
    report("sdpa", sdpa);
    // The same back to back (BackToBackMs; "/b2b" rows): device time without the host's lead.
    const double sdpa_b2b = BackToBackMs([&] { at::scaled_dot_product_attention(q.unsqueeze(0), k_all.unsqueeze(0), v_all.unsqueeze(0)); }, 20);
    auto report_b2b = [&](const std::string& name, double ms) {
      std::printf("%-9lld %-16s %10.3f %10.1f %8.2fx (of sdpa/b2b)\n", static_cast<long long>(T), name.c_str(), ms, flops / ms / 1e9,
                  ms / sdpa_b2b);
      attention.push_back({{"tokens", T}, {"format", name}, {"ms", ms}, {"tflops", flops / ms / 1e9}, {"vs_sdpa", ms / sdpa_b2b}});
    };
    report_b2b("sdpa/b2b", sdpa_b2b);
    const at::Tensor k_cache = k_all.narrow(1, 0, T).contiguous(), v_cache = v_all.narrow(1, 0, T).contiguous();
    using streamrecon::AttentionPath;
    const std::vector<int32_t> no_pages;
    for (auto [suffix, path] : {std::pair<const char*, AttentionPath>{"", AttentionPath::kFused}, {"+dq", AttentionPath::kDequantSdpa},
                                {"+dqb", AttentionPath::kDequantSdpaBucketed}}) {
      const std::string name = std::string("bf16") + suffix;
      report(name.c_str(), TimeMs([&] { streamrecon::kernels::AttentionCuda(q, k_cache, v_cache, T, nullptr, 0, k_cur, v_cur, 0, path); }));
    }
    // The 8-bit attention (INT8 Q K^T, bf16 P V) over the same T + queries rows: the kernel alone
    // (variants by resident blocks and splits over the keys), its operand pass alone, and both (what
    // a layer pays when its operands come from bf16 rows).
    {
      namespace k8 = streamrecon::kernels;
      const k8::Int8Rows rows8 = k8::QuantizeInt8RowsCuda(k_cache, v_cache, T, k_cur, v_cur);
      std::vector<int> split_counts = {0};  // 0: the automatic choice (ChooseInt8AttentionSplits)
      split_counts.insert(split_counts.end(), int8_splits.begin(), int8_splits.end());
      // The automatic choice's count, for its label (i8/v0a12).
      auto auto_splits = [&](int variant) {
        k8::Int8AttentionParams shape;
        shape.queries = static_cast<int>(queries), shape.heads = static_cast<int>(heads), shape.variant = variant;
        shape.tiles = static_cast<int>((T + queries + k8::kInt8AttentionTile - 1) / k8::kInt8AttentionTile);
        return k8::ChooseInt8AttentionSplits(shape, prop->multiProcessorCount);
      };
      for (int variant = 0; variant < streamrecon::kernels::Int8AttentionVariants(); ++variant)
        for (int splits : split_counts) {
          if (!k8::Int8AttentionVariantAvailable(variant)) continue;
          const std::string label =
              "i8/v" + std::to_string(variant) + (splits > 0 ? "s" + std::to_string(splits) : "a" + std::to_string(auto_splits(variant)));
          report(label.c_str(), TimeMs([&] { k8::Int8AttentionCuda(q, rows8, splits, variant); }));
          if (splits == 0) report_b2b(label + "/b2b", BackToBackMs([&] { k8::Int8AttentionCuda(q, rows8, splits, variant); }, 20));
        }
      // (over rows that already hold the current frame, as the dense cache's: no copy of V)
      report("i8-q-only", TimeMs([&] { k8::QuantizeInt8RowsCuda(k_all, v_all, T + queries); }));
      const std::string with_q = "i8+q/v" + std::to_string(k8::DefaultInt8AttentionVariant());  // (the default variant)
      report(with_q.c_str(), TimeMs([&] { k8::Int8AttentionCuda(q, k8::QuantizeInt8RowsCuda(k_all, v_all, T + queries)); }));
    }
    // Valid counts of T tokens in full pages of 32 (the last partial), known on the host as the
    // layer cache keeps them (no read back per call).
    auto full_pages = [T](int64_t pages) {
      std::vector<int32_t> valid(pages, 32);
      if (T % 32) valid.back() = static_cast<int32_t>(T % 32);
      return valid;
    };
    for (const streamrecon::CacheFormatInfo& format : streamrecon::kCacheFormats) {  // the quantized formats
      if (!streamrecon::IsQuantized(format.format)) continue;
      const char* name = format.name;
      const bool oscar = streamrecon::IsOscar(format.format);
      PageLayout L{static_cast<int>(heads), 64, 32, format.bits, 64, oscar};
      PagedKv pages = streamrecon::AllocatePages(L, (T + 31) / 32, at::kCUDA);
      streamrecon::kernels::AppendPagesCuda(k_cache, v_cache, oscar, false, 0, pages, 0);
      const std::vector<int32_t> valid = full_pages(pages.pages());
      report(name, TimeMs([&] { streamrecon::kernels::AttentionCuda(q, {}, {}, 0, &pages, pages.pages(), k_cur, v_cur, 0, AttentionPath::kFused); }));
      // (+i8: the 8-bit attention with its operands from the pages in one pass, ExpandPagesInt8Cuda)
      for (auto [suffix, path] : {std::pair<const char*, AttentionPath>{"+dq", AttentionPath::kDequantSdpa},
                                  {"+dqb", AttentionPath::kDequantSdpaBucketed}, {"+i8", AttentionPath::kInt8}}) {
        const std::string label = std::string(name) + suffix;
        report(label.c_str(), TimeMs([&] {
                 streamrecon::kernels::AttentionCuda(q, {}, {}, 0, &pages, pages.pages(), k_cur, v_cur, 0, path, &valid);
               }));
        if (path != AttentionPath::kDequantSdpaBucketed)
          report_b2b(label + "/b2b", BackToBackMs([&] {
                       streamrecon::kernels::AttentionCuda(q, {}, {}, 0, &pages, pages.pages(), k_cur, v_cur, 0, path, &valid);
                     }, 20));
      }
    }
    // The expansion alone (the part of "+dq" that is not SDPA), for the 4-bit pages, and the 8-bit
    // path's one pass (the part of "+i8" that is not the kernel: the current frame included).
    {
      PageLayout L{static_cast<int>(heads), 64, 32, 4, 64, false};
      PagedKv pages = streamrecon::AllocatePages(L, (T + 31) / 32, at::kCUDA);
      streamrecon::kernels::AppendPagesCuda(k_cache, v_cache, false, false, 0, pages, 0);
      report("dq4-only", TimeMs([&] { streamrecon::kernels::DequantizePagesCuda(pages, pages.pages(), 0, pages.pages(), T); }));
      report("x8-4-only", TimeMs([&] { streamrecon::kernels::ExpandPagesInt8Cuda(pages, pages.pages(), k_cur, v_cur); }));
      report_b2b("x8-4-only/b2b", BackToBackMs([&] { streamrecon::kernels::ExpandPagesInt8Cuda(pages, pages.pages(), k_cur, v_cur); }, 20));
      {  // the host's time per call of the same (enqueueing only, no wait), microseconds
        at::cuda::getCurrentCUDAStream().synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 20; ++i) streamrecon::kernels::ExpandPagesInt8Cuda(pages, pages.pages(), k_cur, v_cur);
        const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 20;
        at::cuda::getCurrentCUDAStream().synchronize();
        std::printf("%-9lld %-16s %10.1f us of host time per call\n", static_cast<long long>(T), "x8-4-only/host", us);
        attention.push_back({{"tokens", T}, {"format", "x8-4-only/host"}, {"host_us", us}});
      }
    }
  }
  results["attention"] = attention;

  // The blocks' matrix products at M = queries rows (the 1B model's C = 1024, hidden 4096): bf16
  // (at::linear), FP8 alone (at::_scaled_mm with row scales, operands quantized beforehand), FP8
  // with the activations' quantization (what --fp8-gemms pays per product), and FP8 with one scale
  // per tensor (cuBLASLt's FP8 path; not what --fp8-gemms runs). Each time is the mean of 50
  // back-to-back calls (a single call of ~10 us would mostly time its launch).
  const auto per_call = [](const std::function<void()>& fn) { return BackToBackMs(fn); };
  std::printf("\n%-6s %-14s %9s %9s %9s %9s %9s %11s\n", "gemm", "M x K x N", "bf16 ms", "fp8 ms", "+quant ms", "tensor ms", "fp8 TF/s",
              "+quant/bf16");
  nlohmann::json gemms = nlohmann::json::array();
  for (const auto& [name, k, n] : std::vector<std::tuple<const char*, int64_t, int64_t>>{
           {"qkv", 1024, 3072}, {"proj", 1024, 1024}, {"fc1", 1024, 4096}, {"fc2", 4096, 1024}}) {
    if (append_only) break;
    const at::Tensor x = at::randn({queries, k}, dev), w = at::randn({n, k}, dev) / 32, bias = at::randn({n}, dev);
    const auto [x8, xs] = streamrecon::kernels::QuantizeFp8RowsCuda(x);
    const at::Tensor w8 = w.to(at::kFloat8_e4m3fn), ws = at::ones({1, n}, dev.dtype(at::kFloat));
    const at::Tensor one = at::ones({}, dev.dtype(at::kFloat));
    const double bf16 = per_call([&] { at::linear(x, w, bias); });
    const double fp8 = per_call([&] { at::_scaled_mm(x8, w8.t(), xs, ws, bias, {}, at::kBFloat16); });
    const double both = per_call([&] {
      const auto [codes, scales] = streamrecon::kernels::QuantizeFp8RowsCuda(x);
      at::_scaled_mm(codes, w8.t(), scales, ws, bias, {}, at::kBFloat16);
    });
    const double tensor = per_call([&] { at::_scaled_mm(x8, w8.t(), one, one, bias, {}, at::kBFloat16); });
    const double flops = 2.0 * queries * k * n;
    const std::string shape = std::to_string(queries) + "x" + std::to_string(k) + "x" + std::to_string(n);
    std::printf("%-6s %-14s %9.4f %9.4f %9.4f %9.4f %9.0f %10.2fx\n", name, shape.c_str(), bf16, fp8, both, tensor, flops / fp8 / 1e9,
                both / bf16);
    gemms.push_back({{"gemm", name},    {"m", queries},          {"k", k},
                     {"n", n},          {"bf16_ms", bf16},       {"fp8_ms", fp8},
                     {"fp8_with_quant_ms", both}, {"fp8_tensorwise_ms", tensor}});
  }
  results["gemms"] = gemms;

  // Append bandwidth: one frame (1041 tokens) and a large batch of tokens in one launch.
  std::printf("\n%-8s %-9s %10s %10s %10s %8s\n", "tokens", "format", "us", "GB/s", "copy GB/s", "of copy");
  nlohmann::json append = nlohmann::json::array();
  if (append_tokens.empty()) append_tokens = {queries, 65536};
  for (int64_t n : append_tokens) {
    const at::Tensor k = at::randn({heads, n, 64}, dev), v = at::randn({heads, n, 64}, dev);
    for (const streamrecon::CacheFormatInfo& format : streamrecon::kCacheFormats) {
      if (!streamrecon::IsQuantized(format.format)) continue;
      const char* name = format.name;
      const bool oscar = streamrecon::IsOscar(format.format);
      if (!append_format.empty() && append_format != name) continue;
      PageLayout L{static_cast<int>(heads), 64, 32, format.bits, 64, oscar};
      PagedKv pages = streamrecon::AllocatePages(L, (n + 31) / 32, at::kCUDA);
      const double bytes = 2.0 * k.numel() * 2 + static_cast<double>(pages.pages()) * L.page_bytes();
      // A device copy moving the same bytes (read + write).
      const at::Tensor src = at::empty({static_cast<int64_t>(bytes / 2)}, dev.dtype(at::kByte)), dst = at::empty_like(src);
      const double copy_ms = TimeMs([&] { dst.copy_(src); });
      // kv_append.cu's two kernels; variant 2 with 1, 2 and 4 heads per block (OScaR: clusters of
      // 16, 8 and 4 blocks at 16 heads).
      for (auto [variant, hpb] : {std::pair<int, int>{1, 0}, {2, 1}, {2, 2}, {2, 4}}) {
        if (append_hpb >= 0 && hpb != append_hpb) continue;
        streamrecon::KernelOptions ko;
        ko.append_variant = variant;
        ko.append_heads_per_block = hpb;
        const double ms = TimeMs([&] { streamrecon::kernels::AppendPagesCuda(k, v, oscar, false, 0, pages, 0, ko); });
        const double gbs = bytes / ms / 1e6, copy_gbs = bytes / copy_ms / 1e6;
        const std::string label = std::string(name) + (variant == 2 ? "/v2h" + std::to_string(hpb) : "");
        std::printf("%-8lld %-9s %10.1f %10.0f %10.0f %7.0f%%\n", static_cast<long long>(n), label.c_str(), ms * 1e3, gbs, copy_gbs,
                    100 * gbs / copy_gbs);
        append.push_back({{"tokens", n}, {"format", label}, {"us", ms * 1e3}, {"gb_per_s", gbs}, {"copy_gb_per_s", copy_gbs}});
      }
    }
  }
  results["append"] = append;
  if (!json_path.empty()) std::ofstream(json_path) << results.dump(2) << "\n";
  return 0;
}
