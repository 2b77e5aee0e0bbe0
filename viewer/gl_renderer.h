// OpenGL 3.3 drawing for the viewer: the point cloud in one vertex buffer updated chunk by chunk
// (only chunks whose id changed are uploaded), coloured lines (frusta, trajectory), RGB textures
// for the thumbnails, and reading the framebuffer back for screenshots. Needs a current context.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/accumulator.h"
#include "core/types.h"
#include "viewer/view_camera.h"

namespace streamrecon::viewer {

// The points, drawn as GL_POINTS with the confidence filter in the vertex shader, so moving the
// threshold costs nothing.
class PointBuffer {
 public:
  PointBuffer();  // throws Error when a shader does not compile
  ~PointBuffer();
  PointBuffer(const PointBuffer&) = delete;
  PointBuffer& operator=(const PointBuffer&) = delete;

  // Brings the GPU copy up to date with cloud; returns the bytes uploaded.
  size_t Sync(const CloudSnapshot& cloud);
  void Draw(const Mat4& mvp, float point_size, float conf_threshold) const;
  // Forgets what was uploaded (the next Sync uploads everything).
  void Clear();
  size_t count() const { return count_; }

 private:
  unsigned program_ = 0, vao_ = 0, vbo_ = 0;
  int mvp_location_ = -1, size_location_ = -1, conf_location_ = -1;
  size_t capacity_ = 0;            // vertices the buffer can hold
  std::vector<uint64_t> uploaded_; // chunk ids on the GPU, by chunk index
  size_t count_ = 0;               // vertices to draw
};

// A coloured line segment end.
struct LineVertex {
  float x, y, z;
  float r, g, b;
};

// Line segments (pairs of vertices), replaced wholesale when they change.
class LineBuffer {
 public:
  LineBuffer();
  ~LineBuffer();
  LineBuffer(const LineBuffer&) = delete;
  LineBuffer& operator=(const LineBuffer&) = delete;

  void Set(const std::vector<LineVertex>& segments);
  void Draw(const Mat4& mvp) const;

 private:
  unsigned program_ = 0, vao_ = 0, vbo_ = 0;
  int mvp_location_ = -1;
  size_t count_ = 0;
};

// An RGB8 texture for ImGui::Image.
class Texture {
 public:
  Texture();
  ~Texture();
  Texture(const Texture&) = delete;
  Texture& operator=(const Texture&) = delete;

  void Update(const RgbImage& image);
  unsigned id() const { return id_; }
  int width() const { return width_; }
  int height() const { return height_; }

 private:
  unsigned id_ = 0;
  int width_ = 0, height_ = 0;
};

// The current framebuffer (what was just drawn), top row first.
RgbImage ReadFramebuffer(int width, int height);

// depth [H, W] -> RGB, near blue to far red between the 2nd and 98th percentiles of the finite
// depths; non-finite depths black.
RgbImage ColorizeDepth(const std::vector<float>& depth, int width, int height);

}  // namespace streamrecon::viewer
