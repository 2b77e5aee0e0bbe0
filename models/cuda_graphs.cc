// CUDA graphs of the streaming step (ModelOptions::cuda_graphs): the embedding, each segment
// between two cache attentions and the DPT heads are captured once per frame size and replayed;
// the cache attentions run eagerly between them while their lengths change. Once every global
// cache is steady (graph_ready: a full dense cache evicting as many rows as a frame adds, or a
// paged one keeping as many whole pages on the device as a frame adds), the
// whole aggregator with its cache attentions is captured as one graph and the DPT heads as
// another, and the step makes no per-layer host work at all. The DPT heads' graphs have two
// branches (the point head on a second stream). The camera head (4 iterations of the trunk over
// its slot caches) is captured as one more graph once its caches are full and replayed from then
// on, on a stream of its own while the main stream runs the DPT heads: neither reads what the
// other writes, the camera graph allocates from its own memory pool and has its own cuBLAS
// workspaces (its capture stream's), and the heads make no cuBLAS calls. The step waits for it at
// its end, or (Step's defer_pose) leaves it running beside the next frame's aggregator, whose only
// contact with it is the next camera input, written after a join.
// CUDA builds only; no_cuda_graphs.cc stands in elsewhere.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/cuda/CachingHostAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <string>

#include "models/model_impl.h"

namespace streamrecon::models {

// Captured graphs of one frame size, replayed in capture order.
struct StreamingModel::Impl::Graphs {
  int64_t H = -1, W = -1;
  Tensor img, x0;  // static input image and embed output
  HeadsOut heads_out;
  std::unique_ptr<at::cuda::CUDAGraph> embed, heads;
  std::vector<std::unique_ptr<at::cuda::CUDAGraph>> segments;  // depth + 1
  std::optional<at::cuda::CUDAStream> side;  // the capture stream (its library handles are warm)
  std::optional<at::cuda::CUDAStream> heads_side;  // the point head's branch in the heads' graphs (warm too)
  // The camera head's capture and replay stream: its replays may run beside the next frame's
  // aggregator graph, so its cuBLAS workspaces (per stream) must not be the capture stream's.
  std::optional<at::cuda::CUDAStream> camera_stream;
  std::unique_ptr<at::cuda::CUDAGraph> camera;  // once the trunk caches are full
  Tensor camera_in, camera_out;                 // its static input token [1, 2C] and pose encoding
  // Its last replay's end on camera_stream (one event per replay: a deferred pose keeps its own),
  // which the main stream has not waited for while camera_pending.
  std::shared_ptr<c10::Event> camera_done;
  bool camera_pending = false;
  // Once the global caches are steady (then no segments): the aggregator with its cache
  // attentions, and the DPT heads as a second graph (the camera head runs beside them).
  std::unique_ptr<at::cuda::CUDAGraph> step, step_heads_graph;
  HeadsOut step_heads;

  // The main stream waits for the camera head's replay (after the DPT heads were queued).
  void JoinCamera() {
    if (!camera_pending) return;
    camera_done->block(at::cuda::getCurrentCUDAStream());
    camera_pending = false;
  }
  // (a deferred pose, or a step that threw between the replay and the join: the graph and its
  // pool outlive the replay)
  ~Graphs() {
    if (camera_pending) camera_done->synchronize();
  }
};

namespace {

// Captures body() into graph on `stream` with its own memory pool. Returns what went wrong, or
// "" when the graph is ready. A failed capture leaves the allocators out of capture mode and
// the error state clear, so the caller can run the same work eagerly.
std::string TryCapture(at::cuda::CUDAGraph& graph, const at::cuda::CUDAStream& stream, const std::function<void()>& body) {
  const at::cuda::MempoolId_t pool = at::cuda::graph_pool_handle();
  try {
    c10::cuda::device_synchronize();
    c10::cuda::CUDAStreamGuard guard(stream);
    // Thread-local capture: other threads of the pipeline (reader, accumulator, viewer) may keep
    // making CUDA calls while this one captures.
    graph.capture_begin(pool, cudaStreamCaptureModeThreadLocal);
    try {
      body();
      graph.capture_end();
    } catch (...) {
      // End the stream's capture (capture_end does it first; it then fails on an invalidated
      // capture before it takes the allocators out of capture mode, which is done below).
      try {
        graph.capture_end();
      } catch (...) {
      }
      throw;
    }
    c10::cuda::device_synchronize();
    return "";
  } catch (const std::exception& e) {
    // The allocators must stop routing to the failed capture's pool (each call is refused,
    // harmlessly, where capture_end got that far). The pool itself is left to LibTorch.
    const c10::DeviceIndex device = c10::cuda::current_device();
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(device, pool);
    } catch (...) {
    }
    try {
      at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(pool);
    } catch (...) {
    }
    (void)cudaGetLastError();
    return e.what();
  }
}

}  // namespace

void StreamingModel::Impl::DropGraphsUnlessSize(int64_t H, int64_t W) {
  if (graphs && (graphs->H != H || graphs->W != W)) graphs.reset();
}

void StreamingModel::Impl::Capture(const Tensor& img, int64_t h, int64_t wd, int64_t H, int64_t W) {
  graphs.reset();
  auto g = std::make_shared<Graphs>();
  g->H = H;
  g->W = W;
  g->img = at::empty_like(img);
  g->img.copy_(img);
  const int64_t n = config.special_tokens() + h * wd;
  // The cache attentions' outputs [H, N, D], copied in between the segments, laid out tokens-major:
  // the copy transposes, and the next segment merges the heads as a view instead of another copy.
  for (int i = 0; i < config.depth; ++i) attn[i] = at::zeros({n, config.num_heads, config.head_dim()}, topts).transpose(0, 1);
  const auto pool = at::cuda::graph_pool_handle();
  c10::cuda::device_synchronize();
  const at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
  g->side = side;
  g->heads_side = at::cuda::getStreamFromPool();  // (the pool hands its streams out in turn: another one)
  g->camera_stream = at::cuda::getStreamFromPool();
  graphs = g;  // (ParallelDptHeads reads heads_side; a failure below drops the graphs)
  if (!trunk_blocks.empty()) {
    // The camera stream's cuBLAS workspaces, made before its capture.
    c10::cuda::CUDAStreamGuard guard(*g->camera_stream);
    const layers::BlockWeights& b = trunk_blocks[0];
    (void)at::linear(at::zeros({1, b.qkv_w.size(1)}, b.qkv_w.options()), b.qkv_w, b.qkv_b);
  }
  {
    c10::cuda::CUDAStreamGuard guard(side);
    // One eager pass on the capture streams first (library workspaces and plans for these streams).
    Tensor x = Embed(g->img, 1);
    for (int i = 0; i <= config.depth; ++i) Segment(i, x);
    Heads(h, wd, H, W, /*parallel=*/true);
    side.synchronize();
    auto capture = [&](std::unique_ptr<at::cuda::CUDAGraph>& graph, const std::function<void()>& body) {
      graph = std::make_unique<at::cuda::CUDAGraph>();
      // Thread-local capture: other threads of the pipeline (reader, accumulator, viewer) may
      // keep making CUDA calls while this one captures.
      graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
      body();
      graph->capture_end();
    };
    capture(g->embed, [&] { g->x0 = Embed(g->img, 1); });
    g->segments.resize(config.depth + 1);
    for (int i = 0; i <= config.depth; ++i) capture(g->segments[i], [&] { Segment(i, g->x0); });
    capture(g->heads, [&] { g->heads_out = Heads(h, wd, H, W, /*parallel=*/true); });
  }
  c10::cuda::device_synchronize();
}

// The step with graphs (capturing them first when needed). Returns false to run eagerly instead.
bool StreamingModel::Impl::GraphStep(const Tensor& img, int64_t h, int64_t wd, int64_t H, int64_t W, bool defer_pose, StepOutput& out) {
  kv_into_caches = false;  // (the segment graphs; CaptureStep sets it for its capture)
  if (!options.cuda_graphs || graphs_failed || frames < 2) {
    graphs.reset();  // the eager step below replaces the buffers the graphs read
    return false;
  }
  // Steady caches repeat their last call for a frame of the last one's size (stage timing needs
  // the stages apart).
  bool steady = size_repeats && !options.stage_timing &&
               std::all_of(global_caches.begin(), global_caches.end(), [](const auto& c) { return c->graph_ready(); });
  // Caches that only need their next call's host choices made again (a paged cache whose count
  // drifted below the rows its attention took as certain): the step is captured anew, without the
  // segments' detour (three frames and about 300 ms, call 118). The choices change only once every
  // cache can be captured again (else the graphs are dropped, and nothing is gained by them).
  bool recapture = false;
  if (!steady && size_repeats && !options.stage_timing && graphs && graphs->step && !step_graph_failed &&
      std::all_of(global_caches.begin(), global_caches.end(), [](const auto& c) { return c->CanRecapture(); })) {
    recapture = true;
    for (auto& c : global_caches) recapture = c->PrepareCapture() && recapture;  // (every cache prepares)
    steady = recapture;
  }
  // A cache that left its steady state needs the segments again, whose buffers the step graph took over.
  if (graphs && graphs->step && !steady) graphs.reset();
  if (!graphs || graphs->H != H || graphs->W != W) {
    try {
      Capture(img, h, wd, H, W);
      spdlog::info("CUDA graphs captured for {}x{} frames ({} segments)", W, H, config.depth + 3);
    } catch (const std::exception& e) {
      graphs.reset();
      graphs_failed = true;
      spdlog::warn("CUDA graph capture failed, running eagerly: {}", e.what());
      (void)cudaGetLastError();
      return false;
    }
  }
  Graphs& g = *graphs;
  g.img.copy_(img);
  if (steady && !step_graph_failed) {
    // A capture runs the caches' host side for this frame and queues nothing: the replay is this
    // frame's step; later replays count themselves on the caches.
    if (recapture) {
      g.step.reset();
      g.step_heads_graph.reset();
    }
    const bool captured = !g.step && CaptureStep(h, wd, H, W);
    if (!graphs) return false;  // a failed capture: this frame runs eagerly (it rebinds every buffer)
    if (captured) {  // (the segments' buffers are the step graph's now)
      g.segments.clear();
      g.embed.reset();
      g.heads.reset();
    }
    out = RunStep([&] { g.step->replay(); }, [](int) {}, [&](const Tensor& token) { return GraphCamera(token); },
                  [&] {
                    g.step_heads_graph->replay();
                    return g.step_heads;
                  },
                  /*static_buffers=*/true, captured ? CacheCalls::kCaptured : CacheCalls::kReplayed);
  } else {
    out = RunStep([&] { g.embed->replay(); }, [&](int i) { g.segments[i]->replay(); },
                  [&](const Tensor& token) { return GraphCamera(token); },
                  [&] {
                    g.heads->replay();
                    return g.heads_out;
                  },
                  /*static_buffers=*/true);
  }
  // The camera head's replay ran beside the DPT heads; deferred, the main stream goes on without
  // it (the next GraphCamera joins it before its input changes).
  if (defer_pose && g.camera_pending) out.pose_ready = g.camera_done;
  else g.JoinCamera();
  return true;
}

// The point head on the heads' second stream, forked from and joined back into the current one,
// beside the depth head on it: captured, the heads' graph has two branches (the two heads share
// only their read-only inputs, and each branch allocates on its own stream).
StreamingModel::Impl::HeadsOut StreamingModel::Impl::ParallelDptHeads(const std::vector<Tensor>& taps, int64_t h, int64_t wd, int64_t H,
                                                                      int64_t W) {
  if (!graphs || !graphs->heads_side) return DptHeads(taps, h, wd, H, W);
  const at::cuda::CUDAStream main = at::cuda::getCurrentCUDAStream(), branch = *graphs->heads_side;
  // The position embeddings both heads read are cached per map size: computed here on the current
  // stream (once per layout), so that neither branch reads what the other is still writing.
  PrepareUvEmbeddings(depth_head, h, wd, H, W);
  PrepareUvEmbeddings(point_head, h, wd, H, W);
  HeadsOut out;
  at::cuda::CUDAEvent forked, joined;
  forked.record(main);
  {
    c10::cuda::CUDAStreamGuard guard(branch);
    forked.block(branch);
    PointMaps(taps, h, wd, H, W, out);
    joined.record(branch);
  }
  DepthMaps(taps, h, wd, H, W, out);
  joined.block(main);
  for (Tensor* t : {&out.world_points, &out.world_points_conf}) t->record_stream(main);
  return out;
}

Tensor StreamingModel::Impl::GraphCamera(const Tensor& camera_token) {
  Graphs& g = *graphs;
  // (normally done by the last step; after a step that threw, neither camera_in nor the graph may
  // change under a running replay)
  g.JoinCamera();
  const bool ready = std::all_of(trunk_caches.begin(), trunk_caches.end(), [](const auto& c) { return c->graph_ready(); });
  if (!ready) {
    g.camera.reset();
    return CameraHead(camera_token);
  }
  if (!g.camera) {
    // Capturing runs the head's host side once (the caches count the call) and queues nothing:
    // the replay below is this frame's camera head.
    g.camera_in = camera_token.clone();
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    const std::string failure = TryCapture(*graph, *g.camera_stream, [&] { g.camera_out = CameraHead(g.camera_in); });
    if (!failure.empty()) {
      graphs_failed = true;  // the next steps run eagerly, as after a failed capture of the step's graphs
      spdlog::warn("CUDA graph capture of the camera head failed, running eagerly: {}", failure);
      // Nothing ran on the device, and full slot caches do the same host work on every call (the
      // capture moved only their call counts, which deterministic policies do not read): the eager
      // head is this frame's exact camera head.
      return CameraHead(camera_token);
    }
    g.camera = std::move(graph);
    spdlog::info("CUDA graph captured for the camera head ({} trunk caches full)", trunk_caches.size());
  } else {
    g.camera_in.copy_(camera_token);
    for (int it = 0; it < config.camera_head.iterations; ++it)
      for (auto& c : trunk_caches) c->Replayed();
  }
  // The replay on the camera stream once the main stream has the token in place; the DPT heads,
  // which the step queues next on the main stream, run beside it, and JoinCamera orders the rest
  // of the step (or, with a deferred pose, the next camera input) after it.
  const at::cuda::CUDAStream main = at::cuda::getCurrentCUDAStream(), camera = *g.camera_stream;
  at::cuda::CUDAEvent token_ready;
  token_ready.record(main);
  Tensor pose;
  {
    c10::cuda::CUDAStreamGuard guard(camera);
    token_ready.block(camera);
    g.camera->replay();
    pose = g.camera_out.clone();
    g.camera_done = std::make_shared<c10::Event>(c10::DeviceType::CUDA);
    g.camera_done->record(camera);
  }
  g.camera_pending = true;
  pose.record_stream(main);  // (allocated on the camera stream, read on the main one)
  camera_replayed = true;
  return pose;
}

bool StreamingModel::Impl::CaptureStep(int64_t h, int64_t wd, int64_t H, int64_t W) {
  Graphs& g = *graphs;
  auto graph = std::make_unique<at::cuda::CUDAGraph>(), heads_graph = std::make_unique<at::cuda::CUDAGraph>();
  // (steady caches keep their rows where they are while the graph lives: k and v go straight there)
  kv_into_caches = true;
  std::string failure = TryCapture(*graph, *g.side, [&] {
    const Tensor x = Embed(g.img, 1);
    for (int i = 0; i <= config.depth; ++i) {
      Segment(i, x);
      if (i < config.depth) attn[i] = global_caches[i]->Forward(q[i], k[i], v[i]);
    }
    JoinCaches();  // (the maintenance streams' work joins the graph)
  });
  kv_into_caches = false;
  if (failure.empty()) failure = TryCapture(*heads_graph, *g.side, [&] { g.step_heads = Heads(h, wd, H, W, /*parallel=*/true); });
  if (!failure.empty()) {
    for (auto& c : global_caches) c->DiscardPending();  // (their maintenance was the capture's)
    // The capture queued nothing and left the caches as they were (the device-side policies do
    // not read the frame counts it moved), so the eager step computes this frame exactly. The
    // buffers the graphs read were rebound: every graph is dropped and the segment and camera
    // graphs are captured again from the next frame on, the whole step no more.
    graphs.reset();
    step_graph_failed = true;
    spdlog::warn("CUDA graph capture of the whole step failed, running this frame eagerly and the next ones with segment graphs: {}",
                 failure);
    return false;
  }
  g.step = std::move(graph);
  g.step_heads_graph = std::move(heads_graph);
  spdlog::info("CUDA graph captured for the whole step ({} global caches steady)", global_caches.size());
  return true;
}

}  // namespace streamrecon::models
