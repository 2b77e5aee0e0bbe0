#include "core/accumulator.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <limits>
#include <string>

#include "core/errors.h"
#include "core/geometry.h"

namespace streamrecon {

namespace {

// Ids of chunk versions; shared by all accumulators so an id never names two contents.
std::atomic<uint64_t> next_chunk_id{1};

}  // namespace

// ---- CloudSnapshot -----------------------------------------------------------------------------

PointCloud CloudSnapshot::Collect(float conf_threshold) const {
  PointCloud cloud;
  cloud.xyz.reserve(points * 3);
  cloud.rgb.reserve(points * 3);
  for (const auto& chunk : chunks) {
    for (const CloudVertex& v : chunk->vertices) {
      if (!(v.conf > conf_threshold)) continue;
      cloud.xyz.insert(cloud.xyz.end(), {v.x, v.y, v.z});
      cloud.rgb.insert(cloud.rgb.end(), {v.r, v.g, v.b});
    }
  }
  return cloud;
}

size_t CloudSnapshot::Count(float conf_threshold) const {
  size_t n = 0;
  for (const auto& chunk : chunks) {
    for (const CloudVertex& v : chunk->vertices) n += v.conf > conf_threshold ? 1 : 0;
  }
  return n;
}

// ---- options -----------------------------------------------------------------------------------

void AccumulatorOptions::Check() const {
  frame.Check();
  if (!(voxel_size >= 0.0) || !std::isfinite(voxel_size)) {
    throw OptionError("voxel_size: expected 0 (off) or a positive length, found " +
                      std::to_string(voxel_size));
  }
  if (max_points < 0) {
    throw OptionError("max_points: expected 0 (no bound) or a positive count, found " +
                      std::to_string(max_points));
  }
}

// ---- PointCloudAccumulator ---------------------------------------------------------------------

size_t PointCloudAccumulator::VoxelKeyHash::operator()(const VoxelKey& k) const {
  uint64_t h = static_cast<uint64_t>(k[0]) * 0x9E3779B97F4A7C15ull;
  h ^= static_cast<uint64_t>(k[1]) * 0xC2B2AE3D27D4EB4Full + (h << 6) + (h >> 2);
  h ^= static_cast<uint64_t>(k[2]) * 0x165667B19E3779F9ull + (h << 6) + (h >> 2);
  return static_cast<size_t>(h);
}

PointCloudAccumulator::PointCloudAccumulator(const AccumulatorOptions& options)
    : options_(options), voxel_size_(options.voxel_size) {
  options_.Check();
}

std::vector<PointCloudAccumulator::Sample> PointCloudAccumulator::ExtractFrame(
    const FramePrediction& p) const {
  // CollectPoints' selection (ForEachFramePoint), keeping each point's confidence, which
  // CollectPoints drops: viewers filter on it later.
  std::vector<Sample> samples;
  std::unordered_map<VoxelKey, size_t, VoxelKeyHash> frame_slot;
  const double voxel = options_.frame.voxel_size;
  ForEachFramePoint(p, options_.frame, [&](const float* xyz, const uint8_t* rgb, float c) {
    Sample* s = nullptr;
    if (voxel > 0.0) {
      const VoxelKey key{static_cast<int64_t>(std::floor(xyz[0] / voxel)),
                         static_cast<int64_t>(std::floor(xyz[1] / voxel)),
                         static_cast<int64_t>(std::floor(xyz[2] / voxel))};
      const auto [it, inserted] = frame_slot.emplace(key, samples.size());
      if (inserted) samples.emplace_back();
      s = &samples[it->second];
    } else {
      s = &samples.emplace_back();
    }
    s->x += xyz[0];
    s->y += xyz[1];
    s->z += xyz[2];
    s->r += rgb[0];
    s->g += rgb[1];
    s->b += rgb[2];
    s->conf = s->count == 0 ? c : std::max(s->conf, c);
    ++s->count;
  });
  return samples;
}

CloudVertex& PointCloudAccumulator::MutableVertex(size_t slot) {
  const size_t c = slot / CloudChunk::kCapacity;
  const size_t offset = slot % CloudChunk::kCapacity;
  if (c == chunks_.size()) {
    chunks_.push_back(std::make_shared<CloudChunk>());
    chunks_.back()->vertices.reserve(CloudChunk::kCapacity);
    published_.push_back(false);
  }
  assert(c < chunks_.size());
  if (published_[c]) {
    auto copy = std::make_shared<CloudChunk>(*chunks_[c]);
    copy->vertices.reserve(CloudChunk::kCapacity);
    chunks_[c] = std::move(copy);
    published_[c] = false;
  }
  std::vector<CloudVertex>& vertices = chunks_[c]->vertices;
  if (offset == vertices.size()) vertices.emplace_back();
  assert(offset < vertices.size());
  return vertices[offset];
}

void PointCloudAccumulator::GrowBounds(const CloudVertex& v) {
  const float p[3] = {v.x, v.y, v.z};
  for (int k = 0; k < 3; ++k) {
    if (size_ == 1) {
      min_[k] = max_[k] = p[k];
    } else {
      min_[k] = std::min(min_[k], p[k]);
      max_[k] = std::max(max_[k], p[k]);
    }
  }
}

namespace {

void SetVertex(CloudVertex& v, double x, double y, double z, double r, double g, double b,
               uint32_t count, float conf) {
  // Rounded as CollectPoints' voxel downsampling rounds: float of the double mean, lround colour.
  v.x = static_cast<float>(x / count);
  v.y = static_cast<float>(y / count);
  v.z = static_cast<float>(z / count);
  v.r = static_cast<uint8_t>(std::lround(r / count));
  v.g = static_cast<uint8_t>(std::lround(g / count));
  v.b = static_cast<uint8_t>(std::lround(b / count));
  v.conf = conf;
}

}  // namespace

void PointCloudAccumulator::Insert(const Sample& s) {
  assert(s.count > 0);
  if (voxel_size_ <= 0.0) {
    CloudVertex& v = MutableVertex(size_++);
    SetVertex(v, s.x, s.y, s.z, s.r, s.g, s.b, s.count, s.conf);
    GrowBounds(v);
    return;
  }
  const VoxelKey key{static_cast<int64_t>(std::floor(s.x / s.count / voxel_size_)),
                     static_cast<int64_t>(std::floor(s.y / s.count / voxel_size_)),
                     static_cast<int64_t>(std::floor(s.z / s.count / voxel_size_))};
  const auto [it, inserted] = slot_of_.emplace(key, static_cast<uint32_t>(size_));
  const size_t slot = it->second;
  if (inserted) {
    ++size_;
    sums_.push_back(s);
  } else {
    Sample& sum = sums_[slot];
    sum.x += s.x;
    sum.y += s.y;
    sum.z += s.z;
    sum.r += s.r;
    sum.g += s.g;
    sum.b += s.b;
    sum.count += s.count;
    sum.conf = std::max(sum.conf, s.conf);
  }
  const Sample& sum = sums_[slot];
  CloudVertex& v = MutableVertex(slot);
  SetVertex(v, sum.x, sum.y, sum.z, sum.r, sum.g, sum.b, sum.count, sum.conf);
  GrowBounds(v);
}

void PointCloudAccumulator::Add(const FramePrediction& prediction) {
  if (!options_.enabled) return;
  for (const Sample& s : ExtractFrame(prediction)) Insert(s);
  EnforceMaxPoints();
}

void PointCloudAccumulator::Rebin(double voxel_size) {
  std::vector<Sample> samples;
  if (voxel_size_ > 0.0) {
    samples = std::move(sums_);
  } else {
    samples.reserve(size_);
    for (const auto& chunk : chunks_) {
      for (const CloudVertex& v : chunk->vertices) {
        samples.push_back(Sample{v.x, v.y, v.z, static_cast<double>(v.r),
                                 static_cast<double>(v.g), static_cast<double>(v.b), 1, v.conf});
      }
    }
  }
  Clear();
  voxel_size_ = voxel_size;
  for (const Sample& s : samples) Insert(s);
}

void PointCloudAccumulator::SetVoxelSize(double voxel_size) {
  if (!(voxel_size >= 0.0) || !std::isfinite(voxel_size)) {
    throw OptionError("voxel_size: expected 0 (off) or a positive length, found " +
                      std::to_string(voxel_size));
  }
  options_.voxel_size = voxel_size;
  if (voxel_size == voxel_size_) return;
  Rebin(voxel_size);
  EnforceMaxPoints();
}

void PointCloudAccumulator::EnforceMaxPoints() {
  if (options_.max_points <= 0) return;
  while (size_ > static_cast<size_t>(options_.max_points)) {
    double next = voxel_size_ * 2.0;
    if (next <= 0.0) {
      const double dx = max_[0] - min_[0], dy = max_[1] - min_[1], dz = max_[2] - min_[2];
      next = std::max(std::sqrt(dx * dx + dy * dy + dz * dz) / 1024.0, 1e-6);
    }
    Rebin(next);
  }
}

void PointCloudAccumulator::Clear() {
  chunks_.clear();
  published_.clear();
  sums_.clear();
  slot_of_.clear();
  size_ = 0;
  min_ = max_ = {0, 0, 0};
}

CloudSnapshot PointCloudAccumulator::Snapshot() {
  CloudSnapshot snapshot;
  snapshot.chunks.reserve(chunks_.size());
  for (size_t c = 0; c < chunks_.size(); ++c) {
    if (!published_[c]) {
      chunks_[c]->id = next_chunk_id.fetch_add(1, std::memory_order_relaxed);
      published_[c] = true;
    }
    snapshot.chunks.push_back(chunks_[c]);
  }
  snapshot.points = size_;
  snapshot.voxel_size = voxel_size_;
  snapshot.min = min_;
  snapshot.max = max_;
  return snapshot;
}

}  // namespace streamrecon
